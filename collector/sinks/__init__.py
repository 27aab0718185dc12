"""Sinks deliver FlowBatches somewhere and say when the data is durable there.

The contract every sink keeps (the pipeline relies on it for "nothing lost, nothing doubled"):
- `write(batch)` accepts a batch; it may only buffer it.
- `flush(force)` makes what it can durable and returns how many `write` calls, counted from the start, are now
  durable (a cumulative count: acks are always a prefix of what was written). A file sink fsyncs; a Parquet file
  is durable only once closed, so it acks when it rotates (or when `force` is set).
- `close()` makes everything durable and releases resources; after it, every write is acked.
Sinks register themselves by `type:` name in `SINKS`, like the drivers of goflow2's registries.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Protocol

from collector.schema import FlowBatch


class SinkFatal(Exception):
    """A failure retrying cannot cure (the reader of a pipe went away, data the sink can no longer vouch for):
    the pipeline stops, and what this sink had not acked is delivered again on the next run."""


class Sink(Protocol):
    name: str

    async def open(self) -> None: ...

    async def write(self, batch: FlowBatch) -> None: ...

    async def flush(self, force: bool = False) -> int: ...

    async def close(self) -> int: ...


SINKS: dict[str, Callable[[Any], Sink]] = {}


def register(type_name: str) -> Callable[[type], type]:
    def deco(cls: type) -> type:
        SINKS[type_name] = cls
        return cls

    return deco


def create_sink(config: Any) -> Sink:
    # Import the built-in sinks so they register; later sinks add themselves the same way.
    from collector.sinks import file, stdout  # noqa: F401
    from collector.sinks.netflow import sink  # noqa: F401

    return SINKS[config.type](config)
