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

An identity can be reused (Linux hands a deleted file's inode to the next file created), and an object can be
rewritten in place and grow past its checkpoint before anyone sees it smaller (logrotate's copytruncate while the
collector is down). So each position of a growing unit also records the object's *head*: the length K and a
BLAKE2b digest of its first K bytes (K = the first HEAD_BYTES, or all of it while it is shorter), read by the
caller just before the read (`Growth.head`). Appending never changes those bytes; an object whose first K bytes
differ from the checkpoint's (or that is now shorter than K) is another object: a new generation, read from the
start. HEAD_BYTES reaches past a header line shared by every file of a format (AWS text) into its first records,
whose times, addresses and counters differ from one file to the next. What it cannot tell: new content whose
first K bytes are exactly the old ones (K is small while the object is: a file that held only its header line
when last read). A checkpoint without a head (written before heads were recorded) trusts the identity and records
the head at its next read.

A done growing unit that is found larger than where it was done (appended to after it went final) is read on from
there, under the same version, as a continuation: its batches start past every batch delivered before, so no
sink holds any of them, and the unit is caught up (not done) again until it is final again. Logged, since it
means `final_after` was too short for that writer.
A read of a growing unit also hands the parser, as `cuts` in its resume position, the progress sinks recorded past
the checkpoint (a crash before it moved): batch boundaries there depend on how much existed at each earlier read,
and ending batches at those points keeps every sink from being sent again what it holds.
"""

from __future__ import annotations

import asyncio
import enum
import hashlib
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


class RemoteReadError(Exception):
    """An object could not be read (network, timeout, a denied request), as opposed to its content being bad.

    Deliberately not an OSError: parsers report OSError and Arrow errors inside an object as damage to *that
    object* and finish it, and a network failure must instead fail the unit so it is read again later. Every
    remote store's reader (adapters/aws/s3io.py, adapters/gcp/gcsio.py) raises it, or a subclass."""


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
    # The object's first min(size, HEAD_BYTES) bytes, read just before this read (None: the caller cannot tell, and
    # the identity is trusted as it is; module docstring).
    head: bytes | None = None


HEAD_BYTES = 4096  # how much of a growing object's start tells it from another with the same identity


def head_of(head: bytes) -> list[Any]:
    """What a growing unit's position records of its object's first bytes: [K, BLAKE2b-128 of those K bytes]."""
    return [len(head), hashlib.blake2b(head, digest_size=16).hexdigest()]


def head_differs(recorded: Any, head: bytes) -> bool:
    """Whether an object whose first bytes are now `head` is not the one whose first bytes were `recorded`
    (`head_of`); an object shorter than the recorded length is not it (an object that grows never gets shorter)."""
    k = int(recorded[0])
    return len(head) < k or head_of(head[:k]) != [k, recorded[1]]


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


def growing_version(identity: str, ckpt: Checkpoint | None, growth: Growth) -> tuple[str, str | None]:
    """The version to read a growing unit under, and why it starts anew (None: it does not, or it is new)."""
    if ckpt is None:
        return identity, None
    if not same_object(ckpt.version, identity):
        return identity, f"replaced (identity {object_identity(ckpt.version)} -> {identity})"
    position = ckpt.position or {}
    if position and progress_of(position) > growth.size:
        reason = f"shrank below its checkpoint ({growth.size} < {progress_of(position)} bytes)"
        return f"{identity}#{_generation(ckpt.version) + 1}", reason
    recorded = position.get("head")
    if recorded and growth.head is not None and head_differs(recorded, growth.head):
        reason = f"rewritten (its first {recorded[0]} bytes are not those of identity {identity} any more)"
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
    return ", ".join(f"{k}={v}" for k, v in position.items() if k not in ("fields", "cuts", "head"))


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
    head: list[Any] | None = None  # what each position of a growing unit records of its object's first bytes
    if growth is not None:
        version, anew = growing_version(version, ckpt, growth)
        if anew is not None:
            log.warning("source=%s unit=%s %s: read from the start as version %s", source, label, anew, version)
        elif ckpt is not None and ckpt.done and ckpt.version == version:
            if not ckpt.position or growth.size <= progress_of(ckpt.position):
                return Outcome.DONE  # final and delivered, and nothing was added since
            log.warning(
                "source=%s unit=%s grew after it was final (done at %d, now %d bytes): read on from there",
                source,
                label,
                progress_of(ckpt.position),
                growth.size,
            )
        if growth.head is not None:
            head = head_of(growth.head)
    final = growth is None or growth.final
    resume = None
    records = 0
    start = 0  # where the next batch starts in the unit: its identity (BatchId) is (unit, version, start, end)
    # A done unit is read on only as a growing unit's continuation (above): anything else done was returned.
    if ckpt is not None and ckpt.version == version and ckpt.position and (not ckpt.done or growth is not None):
        resume = {k: v for k, v in ckpt.position.items() if k != "head"}
        records, start = ckpt.records, progress_of(ckpt.position)
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
            position = result.position if head is None else {**result.position, "head": head}
            await pipeline.emit(Delivery(source, unit, version, result.batch, position, done, records, progress, start))
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
