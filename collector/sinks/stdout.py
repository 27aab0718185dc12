"""`stdout` sink: JSON Lines on standard output, for pipes (`| jq`, `| vector`) and quick looks."""

from __future__ import annotations

import asyncio
import sys
from typing import Any

from collector.jsonl import dumps_batch
from collector.schema import FlowBatch
from collector.sinks import register


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
            await asyncio.to_thread(sys.stdout.buffer.write, data)
        self._written += 1

    async def flush(self, force: bool = False) -> int:
        # A pipe's reader has the data once it is flushed out of our buffer: that is all stdout can promise.
        await asyncio.to_thread(sys.stdout.buffer.flush)
        return self._written

    async def close(self) -> int:
        return await self.flush(True)
