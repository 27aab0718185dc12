"""Reading one unit (a file, an S3 object) into the pipeline: what every object-store source does the same way.

A unit is parsed in a worker thread (the parser is a pure generator, see collector/parsing.py) and each batch is
handed to the pipeline with the position that makes it resumable. Where the unit came from only changes how it is
opened: the caller passes `open_results(resume)`. Failures are reported with the unit's name and counted; the unit
is retried later with backoff (`RetryBook`), and the source goes on with the others.
"""

from __future__ import annotations

import asyncio
import enum
import logging
import time
from collections.abc import Callable, Iterator
from concurrent.futures import Executor
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc

from collector.checkpoints import CheckpointStore
from collector.metrics import SourceCounters
from collector.parsing import ParseResult
from collector.pipeline import Delivery, Pipeline, PipelineFailed

MAX_ERRORS_LOGGED = 10  # per unit; the rest are counted and summarized


class Outcome(enum.Enum):
    DONE = "done"  # every batch emitted (the checkpoint lands when every sink has acked)
    STOPPED = "stopped"  # the daemon is stopping: what was emitted is checkpointed, the rest comes next run
    FAILED = "failed"  # could not be read: reported, counted; retry later
    DEFERRED = "deferred"  # batches of an earlier read are still in flight: not read now (try again later)


class RetryBook:
    """When a failed unit may be tried again: 60 s, doubling to an hour, or at once if its version changes."""

    def __init__(self, first: float = 60.0, cap: float = 3600.0) -> None:
        self.first = first
        self.cap = cap
        self._due: dict[str, tuple[str, float, float]] = {}  # unit -> (version, when, delay)

    def waiting(self, unit: str, version: str, now: float | None = None) -> bool:
        entry = self._due.get(unit)
        return entry is not None and entry[0] == version and (now or time.time()) < entry[1]

    def failed_before(self, unit: str) -> bool:
        return unit in self._due

    def failed(self, unit: str, version: str) -> float:
        previous = self._due.get(unit)
        delay = min(previous[2] * 2, self.cap) if previous and previous[0] == version else self.first
        self._due[unit] = (version, time.time() + delay, delay)
        return delay

    def succeeded(self, unit: str) -> None:
        self._due.pop(unit, None)

    def attempts_pending(self) -> int:
        return len(self._due)


_STATUS_VALUES = pa.array(["nodata", "skipdata"])


def status_rows(result: ParseResult) -> int:
    statuses = result.batch.column("log_status")
    if statuses.null_count == len(statuses):
        return 0
    return int(pc.sum(pc.is_in(statuses.cast(pa.string()), value_set=_STATUS_VALUES)).as_py() or 0)


def progress_of(position: dict[str, Any]) -> int:
    """How far into its unit a position is (collector/parsing.py): decompressed bytes for text and JSON, rows for
    columnar files; both grow within a unit."""
    return int(position.get("offset", position.get("rows", 0)))


def describe_position(position: dict[str, Any]) -> str:
    return ", ".join(f"{k}={v}" for k, v in position.items() if k != "fields")


async def deliver_unit(
    pipeline: Pipeline,
    *,
    source: str,
    unit: str,
    version: str,
    label: str,
    open_results: Callable[[dict[str, Any] | None], Iterator[ParseResult]],
    store: CheckpointStore,
    counters: SourceCounters,
    executor: Executor | None,
    stop: asyncio.Event,
    log: logging.Logger,
    bytes_read: list[int] | None = None,
    read_errors: tuple[type[BaseException], ...] = (),
) -> Outcome:
    """Parse `unit` from its checkpoint on and emit every batch; never raises for a bad unit.

    `label` is how logs name the unit (a path, `s3://bucket/key`). `bytes_read[0]` is added to the source's byte
    counter at the end (the opener counts into it). `read_errors` are the opener's I/O exceptions besides OSError
    and Arrow's, reported as "cannot be read" rather than as a bug.

    The one guard against reading a unit twice at once: while batches of the unit are in flight (an attempt that
    failed or was stopped half-way, a source that was reloaded or restarted after a crash, a queue message handed
    out again), it is not read. Re-read from its checkpoint, those batches would reach a sink that has not acked
    them yet (a Parquet file still open) a second time. The caller tries again later (`Pipeline.settled`). The check
    is not atomic with the read (tickets appear at the first emit): it relies on each source running at most one
    reader of a unit at a time (the partitioned poller's `_active`, SQS `_reading`, a reload awaiting the old source's
    task)."""
    if pipeline.has_pending(source, unit):
        log.info("source=%s unit=%s: an earlier read is still in flight; deferred", source, label)
        return Outcome.DEFERRED
    loop = asyncio.get_running_loop()
    pipeline.begin_unit(source, unit)
    ckpt = await loop.run_in_executor(executor, store.get, source, unit)
    resume = None
    records = 0
    start = 0  # where the next batch starts in the unit: its identity (BatchId) is (unit, version, start, end)
    if ckpt is not None and ckpt.version == version and ckpt.position and not ckpt.done:
        resume, records, start = ckpt.position, ckpt.records, progress_of(ckpt.position)
        log.info("source=%s unit=%s resuming at %s", source, label, describe_position(resume))
    counter = bytes_read if bytes_read is not None else [0]
    logged = 0
    errors = 0
    results: Iterator[ParseResult] | None = None
    pending: asyncio.Future[ParseResult | None] | None = None
    try:
        results = open_results(resume)
        while True:
            pending = loop.run_in_executor(executor, next, results, None)
            result = await pending
            if result is None:
                break
            for err in result.errors:
                if logged < MAX_ERRORS_LOGGED:
                    log.warning("source=%s %s", source, err)
                    logged += 1
            errors += len(result.errors)
            counters.errors += len(result.errors)
            n = result.batch.num_rows
            records += n
            counters.records += n
            if n:
                counters.status_rows += status_rows(result)
            progress = progress_of(result.position)
            await pipeline.emit(
                Delivery(source, unit, version, result.batch, result.position, result.final, records, progress, start)
            )
            start = progress
            if result.final:
                break
            if stop.is_set():
                return Outcome.STOPPED  # the checkpoint of what was emitted still lands; the rest next run
    except PipelineFailed:
        raise
    except (OSError, pa.ArrowException, *read_errors) as exc:
        counters.units_failed += 1
        log.error("source=%s unit=%s cannot be read: %s", source, label, exc)
        return Outcome.FAILED
    except Exception:  # a parser bug must not take the daemon down: report it with where it happened
        counters.units_failed += 1
        log.exception("source=%s unit=%s failed unexpectedly", source, label)
        return Outcome.FAILED
    finally:
        counters.bytes_read += counter[0]
        if results is not None and hasattr(results, "close"):
            # Cancelled while the parser runs in its thread: let that step finish first (closing a running
            # generator raises), then close it in a thread too (closing an S3 stream waits on this loop).
            if pending is not None and not pending.done():
                await asyncio.wait([pending])
            await loop.run_in_executor(executor, results.close)
    if errors > logged:
        log.warning("source=%s unit=%s %d more errors not shown", source, label, errors - logged)
    log.info("source=%s unit=%s records=%d errors=%d", source, label, records, errors)
    return Outcome.DONE
