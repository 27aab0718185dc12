"""Reading one unit (a file, an S3 object) into the pipeline: what every object-store source does the same way.

A unit is parsed in a worker thread (the parser is a pure generator, see collector/parsing.py) and each batch is
handed to the pipeline with the position that makes it resumable. Where the unit came from only changes how it is
opened: the caller passes `open_results(resume)`. Failures are reported with the unit's name and counted; the unit
is retried later with backoff (`RetryBook`), and the source goes on with the others.

Growing units (objects appended to while they are read: a local file being written, an Azure PT1H.json blob whose
ETag changes every minute) are delivered by the same code, given a `Growth`: whether the object is final, and its
size now. Their version is the object's identity (what stays the same while it grows: creation time, inode), their
position the bytes consumed. "Caught up" is distinct from "done": a read of an object that is not final parses up
to the end of its last complete record (the parser option `complete=False`, collector/parsing.py), and its last
Delivery has done=False, so the checkpoint holds the position and the unit is not among the done versions; the
outcome is CAUGHT_UP. A later call with the same identity resumes there (its first batch starts at the checkpoint's
progress); the call with `final=True` reads the rest, a last line without line end included, and the unit is done.
An object found smaller than its checkpoint (truncated and rewritten in place) is a new version: its identity with
a generation, `IDENTITY#N` (`same_object` compares identities), read from the start, so no sink's progress on the
old content hides the new one. One whose identity changed (replaced) is read from the start too. Both are logged.
A read of a growing unit also hands the parser, as `cuts` in its resume position, the progress sinks recorded past
the checkpoint (a crash before it moved): batch boundaries there depend on how much existed at each earlier read,
and ending batches at those points keeps every sink from being sent again what it holds.
"""

from __future__ import annotations

import asyncio
import enum
import logging
import time
from collections.abc import Callable, Iterator
from concurrent.futures import Executor
from dataclasses import dataclass
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc

from collector.checkpoints import Checkpoint, CheckpointStore
from collector.metrics import SourceCounters
from collector.parsing import ParseResult
from collector.pipeline import Delivery, Pipeline, PipelineFailed

MAX_ERRORS_LOGGED = 10  # per unit; the rest are counted and summarized


class Outcome(enum.Enum):
    DONE = "done"  # every batch emitted (the checkpoint lands when every sink has acked)
    STOPPED = "stopped"  # the daemon is stopping: what was emitted is checkpointed, the rest comes next run
    FAILED = "failed"  # could not be read: reported, counted; retry later
    DEFERRED = "deferred"  # batches of an earlier read are still in flight: not read now (try again later)
    CAUGHT_UP = "caught-up"  # a growing unit, not final, emitted up to its end for now: read again when it grows


@dataclass(frozen=True, slots=True)
class Growth:
    """A growing unit's state when it is read: `final` once nothing more will be appended; `size` is how much of it
    exists now (bytes of the stream the parser sees), to tell an object that shrank below its checkpoint."""

    final: bool
    size: int


def object_identity(version: str) -> str:
    """The identity part of a growing unit's version (`IDENTITY` or `IDENTITY#N`, see the module docstring)."""
    base, sep, gen = version.rpartition("#")
    return base if sep and gen.isdigit() else version


def _generation(version: str) -> int:
    base, sep, gen = version.rpartition("#")
    return int(gen) if sep and gen.isdigit() else 0


def same_object(version: str | None, identity: str) -> bool:
    """Whether a stored version (a checkpoint's, a done version) is of the growing object with this identity."""
    return version is not None and object_identity(version) == identity


def growing_version(identity: str, ckpt: Checkpoint | None, size: int) -> tuple[str, str | None]:
    """The version to read a growing unit under, and why it starts anew (None: it does not, or it is new)."""
    if ckpt is None:
        return identity, None
    if not same_object(ckpt.version, identity):
        return identity, f"replaced (identity {object_identity(ckpt.version)} -> {identity})"
    if ckpt.position and not ckpt.done and progress_of(ckpt.position) > size:
        reason = f"shrank below its checkpoint ({size} < {progress_of(ckpt.position)} bytes)"
        return f"{identity}#{_generation(ckpt.version) + 1}", reason
    return ckpt.version, None


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
    return ", ".join(f"{k}={v}" for k, v in position.items() if k not in ("fields", "cuts"))


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
    growth: Growth | None = None,
) -> Outcome:
    """Parse `unit` from its checkpoint on and emit every batch; never raises for a bad unit.

    `growth` makes it a growing unit (module docstring): `version` is then the object's identity, and while
    `growth.final` is False the opener must parse with the option `complete=False`. DONE when the last batch was
    emitted as done; CAUGHT_UP when it was emitted up to the end for now (not final).

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
    if growth is not None:
        if ckpt is not None and ckpt.done and same_object(ckpt.version, version):
            return Outcome.DONE  # final and delivered: a growing unit is never read again from the start
        version, anew = growing_version(version, ckpt, growth.size)
        if anew is not None:
            log.warning("source=%s unit=%s %s: read from the start as version %s", source, label, anew, version)
    final = growth is None or growth.final
    resume = None
    records = 0
    start = 0  # where the next batch starts in the unit: its identity (BatchId) is (unit, version, start, end)
    if ckpt is not None and ckpt.version == version and ckpt.position and not ckpt.done:
        resume, records, start = ckpt.position, ckpt.records, progress_of(ckpt.position)
        log.info("source=%s unit=%s resuming at %s", source, label, describe_position(resume))
    if growth is not None:
        # Where sinks recorded more than the checkpoint (a crash before it moved), earlier reads ended batches: the
        # parse ends batches there too, so each sink skips exactly what it has (collector/parsing.py, "cuts").
        held = await loop.run_in_executor(executor, store.sink_progress, source, unit)
        if cuts := sorted({p for v, p in held.values() if v == version and p > start}):
            resume = {**(resume or {}), "cuts": cuts}
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
            done = result.final and final  # the end of what exists of a growing unit: caught up, not done
            await pipeline.emit(
                Delivery(source, unit, version, result.batch, result.position, done, records, progress, start)
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
    if not final:
        log.info("source=%s unit=%s caught up at %d: records=%d errors=%d", source, label, start, records, errors)
        return Outcome.CAUGHT_UP
    log.info("source=%s unit=%s records=%d errors=%d", source, label, records, errors)
    return Outcome.DONE
