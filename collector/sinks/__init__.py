"""Sinks deliver FlowBatches somewhere and say when the data is durable there.

The contract every sink keeps (the pipeline relies on it for "nothing lost, nothing doubled"):
- `write(batch)` takes the *whole* batch or raises having taken *nothing*: the pipeline retries a failed write
  with the same batch, so a write that kept part of it would double that part. It may only buffer the batch; I/O
  that can fail half-way (writing a file, sending) belongs where a retry is harmless: in `flush`, or in `write`
  *before* the batch is taken (draining earlier buffers), never after.
- Two kinds of failure. An outage (disk full, read-only, connection refused) is any exception: the pipeline
  retries it with backoff, the same way for every sink, and reports it (log line, `sink_failures_total`). A batch
  the sink cannot encode is a data error: `write` raises `RejectedRows` with the offending rows (having taken
  nothing), and the pipeline writes the rest without them, logged with their unit and counted.
- `flush(force)` makes what it can durable and returns how many `write` calls, counted from the start, are now
  durable (a cumulative count of the sink's *own* writes: acks are always a prefix of what it was given, and the
  pipeline maps them back to the batches). A file sink fsyncs; a Parquet file is durable only once closed, so it
  acks when it rotates (or when `force` is set). A failed flush is retried and must be harmless to retry.
- `close()` makes everything durable and releases resources; after it, every write is acked.
- `SinkFatal` is for what retrying cannot cure (the reader of a pipe went away): the pipeline stops.
Sinks register themselves by `type:` name in `SINKS`, like the drivers of goflow2's registries.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, Protocol

from collector.schema import FlowBatch

_SEARCH_ENCODES = 512  # encodes spent finding bad rows in one batch, at most


class SinkFatal(Exception):
    """A failure retrying cannot cure (the reader of a pipe went away, data the sink can no longer vouch for):
    the pipeline stops, and what this sink had not acked is delivered again on the next run."""


class RejectedRows(Exception):
    """Rows of a batch this sink cannot encode (a data error, not an outage). Raised by `write` having taken
    nothing of the batch; the pipeline drops those rows for this sink and writes the others."""

    def __init__(self, rows: Sequence[int], reason: str) -> None:
        super().__init__(f"{len(rows)} rows rejected: {reason}")
        self.rows = list(rows)
        self.reason = reason


class Sink(Protocol):
    name: str

    async def open(self) -> None: ...

    async def write(self, batch: FlowBatch) -> None: ...

    async def flush(self, force: bool = False) -> int: ...

    async def close(self) -> int: ...


def encode_or_reject(batch: FlowBatch, encode: Callable[[FlowBatch], Any]) -> Any:
    """`encode(batch)`, or `RejectedRows` naming the rows that make it fail.

    Encoders are pure (no I/O), so an exception from one is a fact about the data. The failing rows are found by
    halving: a few extra encodes of the failing parts, paid only when a batch is bad."""
    try:
        return encode(batch)
    except Exception as exc:  # noqa: BLE001 (any encoder error is a data error, see above)
        first = exc
    bad: list[int] = []
    budget = [_SEARCH_ENCODES]

    def search(offset: int, part: FlowBatch) -> None:
        if budget[0] <= 0:  # very many bad rows: what is left unsearched is rejected as a whole
            bad.extend(range(offset, offset + part.num_rows))
            return
        budget[0] -= 1
        try:
            encode(part)
        except Exception:  # noqa: BLE001
            if part.num_rows == 1:
                bad.append(offset)
                return
            half = part.num_rows // 2
            search(offset, part.slice(0, half))
            search(offset + half, part.slice(half))

    search(0, batch)
    # No single row fails alone (the batch as a whole is too large, say): the whole batch is rejected.
    raise RejectedRows(bad or range(batch.num_rows), f"{type(first).__name__}: {first}")


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
