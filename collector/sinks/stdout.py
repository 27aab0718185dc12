"""`stdout` sink: JSON Lines on standard output, for pipes (`| jq`, `| vector`) and quick looks."""

from __future__ import annotations

import asyncio
import sys
from typing import Any

from collector.jsonl import dumps_batch
from collector.schema import FlowBatch
from collector.sinks import SinkFatal, register


@register("stdout")
class StdoutSink:
    def __init__(self, config: Any) -> None:
        self.name: str = config.name
        self._written = 0

    async def open(self) -> None:
        return None

    async def write(self, batch: FlowBatch) -> None:
        if batch.num_rows:
            data = await asyncio.to_thread(dumps_batch, batch)
            await asyncio.to_thread(self._out, self._write_all, data)
        self._written += 1

    async def flush(self, force: bool = False) -> int:
        # A pipe's reader has the data once it is flushed out of our buffer: that is all stdout can promise.
        await asyncio.to_thread(self._out, sys.stdout.buffer.flush)
        return self._written

    @staticmethod
    def _write_all(data: memoryview) -> None:
        # A buffered write into a pipe whose reader left returns a short count instead of raising; write the rest,
        # which raises BrokenPipeError, rather than lose it silently.
        view = memoryview(data)
        while view:
            view = view[sys.stdout.buffer.write(view) :]

    @staticmethod
    def _out(op: Any, *args: Any) -> None:
        try:
            op(*args)
        except (BrokenPipeError, ValueError) as exc:  # the reader left, or stdout is closed: retrying cannot help
            raise SinkFatal(f"stdout: {exc}") from exc

    async def close(self) -> int:
        return await self.flush(True)
