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
- With each batch, `write` learns which batch it is (`BatchId`: source, unit, unit version, and the start and end
  of the batch within the unit). For objects (files, S3 objects: everything read through collector/parsing.py)
  batch boundaries depend only on (unit, version, resume point), so a batch delivered again after a crash has the
  same identity: a sink that can deduplicate (ClickHouse's insert token) derives its key from it. A CloudWatch
  log stream is cut where each query's pages end, so a re-read after a crash may cut its events differently:
  its identities are stable for retries within a run, not across re-reads.
- A sink whose durable state is partly in the checkpoint store (the file sink's journal of part files) says so by
  being a `JournaledSink`: the pipeline then hands it the journal before `open` and records it with every ack.
Sinks register by `type:` name with their config class (`collector.registry.register_sink`), beside their code.
A sink's config section extends `SinkOptions`, the keys every sink has.
"""

from __future__ import annotations

import abc
import hashlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Annotated, Any, Protocol

from collector.filters import Filter, FilterExpr
from collector.options import Duration, Name, Positive
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


@dataclass(frozen=True, slots=True, kw_only=True)
class SinkOptions:
    """The keys of every sink section. `flush_interval`: how often the pipeline asks the sink to make what it has
    durable (and so how soon checkpoints can move). `filter`: the flows this sink receives (collector/filters.py);
    the rows it leaves out count as delivered to this sink."""

    name: Name
    type: str = ""
    flush_interval: Annotated[float, Duration, Positive] = 1.0
    filter: Annotated[Filter | None, FilterExpr] = None


@dataclass(frozen=True, slots=True)
class BatchId:
    """Which batch a sink is writing: the same after a crash and a re-read (see the contract above).

    `start` and `end` are the batch's progress marks in the unit (decompressed bytes, rows, events: increasing
    within a unit version); a batch covers (start, end]."""

    source: str
    unit: str
    version: str
    start: int
    end: int

    def token(self, sink: str = "") -> str:
        """A stable key for idempotent writes (a ClickHouse insert deduplication token): hex SHA-256."""
        text = "\x1f".join((sink, self.source, self.unit, self.version, str(self.start), str(self.end)))
        return hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest()


class Sink(Protocol):
    name: str

    async def open(self) -> None: ...

    async def write(self, batch: FlowBatch, ident: BatchId | None = None) -> None: ...

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


class JournaledSink(abc.ABC):
    """A sink that keeps part of its recovery state in the checkpoint store, committed with its acks.

    The file sink is one: what it acked is a file name and size, and after a crash `open` settles its part files by
    the recorded journal. The protocol, as the pipeline drives it:
    - `restore(journal)` before `open()`: file name -> size as last recorded (empty on a first start). Once `open`
      returns, the pipeline drops those entries from the store (the sink has settled them).
    - at every ack, `journal()` is recorded in the same transaction as the sink's progress, so an ack and the
      state that makes it true land together or not at all;
    - then, if `sealed()` names anything, `publish_sealed()` makes it visible (retried until it succeeds) and the
      names leave the journal: a two-phase publish that a crash between the phases cannot tear."""

    @abc.abstractmethod
    def restore(self, journal: dict[str, int]) -> None: ...

    @abc.abstractmethod
    def journal(self) -> list[tuple[str, int]]: ...

    @abc.abstractmethod
    def sealed(self) -> list[str]: ...

    @abc.abstractmethod
    async def publish_sealed(self) -> None: ...
