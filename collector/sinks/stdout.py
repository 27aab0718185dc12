"""`stdout` sink: JSON Lines on standard output, for pipes (`| jq`, `| vector`) and quick looks.

The sink contract (collector/sinks/__init__.py) for a stream that cannot take anything back: `write` only renders
into memory; `_drain` writes with `os.write` on the file descriptor, which says exactly how many bytes went out, and
keeps the rest. A failed write (a full disk behind `> file`) is retried from the first byte that did not go out:
never a line twice, never half a line lost. A pipe whose reader left cannot be cured by retrying: `SinkFatal`.
"""

from __future__ import annotations

import asyncio
import os
import sys
from dataclasses import dataclass
from typing import Any

from collector.jsonl import dumps_chunks
from collector.registry import register_sink
from collector.schema import FlowBatch
from collector.sinks import BatchId, SinkFatal, SinkOptions, encode_or_reject

_BUFFER = 4 << 20  # bytes rendered and not yet written before `write` drains first


@dataclass(frozen=True, slots=True, kw_only=True)
class StdoutSinkConfig(SinkOptions):
    """`type: stdout`: JSON Lines on standard output."""

    type: str = "stdout"


class StdoutSink:
    def __init__(self, config: Any) -> None:
        self.name: str = config.name
        self._written = 0
        self._pending: list[memoryview] = []
        self._pending_size = 0

    async def open(self) -> None:
        return None

    async def write(self, batch: FlowBatch, ident: BatchId | None = None) -> None:
        if batch.num_rows:
            if self._pending_size >= _BUFFER:
                await asyncio.to_thread(self._drain)  # may fail: then nothing of this batch is taken
            chunks = await asyncio.to_thread(encode_or_reject, batch, dumps_chunks)
            self._pending.extend(memoryview(c) for c in chunks)
            self._pending_size += sum(len(c) for c in chunks)
        self._written += 1

    async def flush(self, force: bool = False) -> int:
        # A pipe's reader has the data once it is written out of our buffer: that is all stdout can promise.
        written = self._written
        await asyncio.to_thread(self._drain)
        return written

    def _drain(self) -> None:
        fd = sys.stdout.fileno() if sys.stdout is not None else -1
        while self._pending:
            view = self._pending[0]
            try:
                n = os.write(fd, view)
            except (BrokenPipeError, ValueError) as exc:  # the reader left, or stdout is closed: retrying is futile
                raise SinkFatal(f"stdout: {exc}") from exc
            except OSError as exc:
                if exc.errno == 9:  # EBADF: no standard output at all
                    raise SinkFatal(f"stdout: {exc}") from exc
                raise
            self._pending_size -= n
            if n == len(view):
                self._pending.pop(0)
            else:
                self._pending[0] = view[n:]

    async def close(self) -> int:
        return await self.flush(True)


register_sink("stdout", StdoutSinkConfig, StdoutSink)
