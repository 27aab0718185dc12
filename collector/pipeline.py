"""Sources -> bounded queues -> every sink; a unit's checkpoint moves only behind the acks of all sinks.

The invariant (ARCHITECTURE.md, "Delivery semantics"):

    A unit's checkpoint names a position only if every batch of that unit up to that position has been acked
    by every sink.

How it is kept, by identity rather than by counting:
- Every batch a source emits becomes a *ticket*: who it is (source, unit, version, position, progress) and the set
  of sinks that still owe it (`owed`). Tickets of one unit are kept in emission order (a unit is read by one reader
  at a time, so its batches are emitted one after the other).
- The batch goes into one bounded queue per owing sink (a full queue blocks the source: backpressure, bounded
  memory). Sinks see batches of *different* units in whatever order concurrent emitters reached their queues; no
  order across queues is assumed anywhere.
- A sink acks a prefix of its *own* writes (`flush` returns a cumulative count, see collector/sinks/__init__.py);
  its worker maps that count back to the tickets it wrote and removes the sink from each one's `owed`.
- A unit's committed position is the last ticket of its longest prefix of tickets nobody owes any more. Commits of
  several units go to the checkpoint store in one transaction; only then do the tickets leave memory. Tickets hold
  no batch: a sink that acks late (Parquet, on file close) holds back checkpoints, never memory.
- A drain that times out (SIGTERM with a stuck sink) commits exactly what was acked: nothing more is assumed.

Sinks ack at different paces, so each sink's own progress per unit is recorded too, as soon as it acks. After a
crash the source resumes at the unit's checkpoint, and every batch a sink already holds is skipped for that sink:
what a sink receives twice is only what *it* had in flight (written, not yet acked).

Corollaries the sources rely on:
- A unit with tickets in flight must not be read again (a reload, a supervised restart, a queue redelivery would
  hand a late-acking sink the same batches twice): `has_pending` / `settled` tell, and `adapters/units.py` defers.
- A sink's `write` takes the whole batch or raises having taken nothing, so a retried write never doubles it.

Failures: a sink error is retried with backoff (a sink that is down holds checkpoints back and never drops data),
the same way for every sink. `RejectedRows` (the sink cannot encode some rows: a data error, not an outage) drops
those rows for that sink, logged with their unit and counted, and the rest is written. `SinkFatal` stops the
pipeline, and so does a sink failing longer than `give_up_after` (set for `run --once`): nothing unacked was
committed, so a restart delivers it again.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections import deque
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc

from collector.checkpoints import CheckpointStore, Commit
from collector.metrics import Metrics
from collector.schema import FlowBatch
from collector.sinks import BatchId, JournaledSink, RejectedRows, Sink, SinkFatal

log = logging.getLogger("flowcollector.pipeline")

_STOP = object()
BACKOFF_FIRST = 0.5  # seconds before the first retry of a failed sink operation; doubling to BACKOFF_CAP
BACKOFF_CAP = 30.0
_Key = tuple[str, str]  # (source, unit)


class PipelineFailed(Exception):
    """A sink failed for good; sources stop, and the daemon exits without committing what that sink lacks."""


class SinkGaveUp(SinkFatal):
    """A sink kept failing for longer than the pipeline's `give_up_after` (a `--once` run must end)."""


@dataclass(slots=True)
class Delivery:
    """A batch of one unit and the checkpoint it makes true once every sink has it."""

    source: str
    unit: str
    version: str
    batch: FlowBatch
    position: dict[str, Any] | None
    done: bool
    records: int  # rows of the unit delivered up to and including this batch
    progress: int  # how far into the unit this batch ends, increasing within a unit version (bytes, rows, ...)
    start: int = 0  # how far into the unit this batch starts (the previous batch's progress, or the resume point)

    def ident(self) -> BatchId:
        return BatchId(self.source, self.unit, self.version, self.start, self.progress)


@dataclass(slots=True, eq=False)
class _Ticket:
    """A Delivery without its batch, and the sinks that have not acked it yet: all the pipeline keeps."""

    source: str
    unit: str
    version: str
    position: dict[str, Any] | None
    done: bool
    records: int
    progress: int
    owed: set[str] = field(default_factory=set)
    # The emit was interrupted before every owing sink had it: it can never be committed (a sink lacks it), and it
    # leaves the unit once the sinks that did get it have acked, so that the unit can be read again.
    abandoned: bool = False

    def commit(self) -> Commit:
        return Commit(self.source, self.unit, self.version, self.position, self.done, self.records, self.progress)


async def _with_backoff(
    op: Callable[[], Awaitable[Any]],
    what: str,
    on_failure: Callable[[BaseException], None],
    give_up_after: float | None = None,
) -> Any:
    """Retry `op` with exponential backoff and jitter, logging each failure (what failed, and the error: an
    OSError names its path and errno). `RejectedRows` and `SinkFatal` are not retried. With `give_up_after`, a
    failure that has lasted that long becomes `SinkGaveUp`."""
    delay = BACKOFF_FIRST
    first_failure: float | None = None
    while True:
        try:
            return await op()
        except (SinkFatal, RejectedRows):
            raise
        except Exception as exc:  # any other failure is an outage: retried, and reported
            on_failure(exc)
            now = time.monotonic()
            first_failure = now if first_failure is None else first_failure
            if give_up_after is not None and now - first_failure >= give_up_after:
                raise SinkGaveUp(f"{what} has failed for {now - first_failure:.0f}s, giving up: {exc}") from exc
            log.error("%s failed: %s; retrying in %.1fs", what, exc, delay)
            await asyncio.sleep(delay * (0.5 + random.random()))
            delay = min(delay * 2, BACKOFF_CAP)


class _SinkWorker:
    """Feeds one sink, flushes it on its interval, and turns its cumulative write acks into acked tickets."""

    def __init__(
        self,
        sink: Sink,
        queue_size: int,
        flush_interval: float,
        metrics: Metrics,
        store: CheckpointStore,
        give_up_after: float | None,
        select: Callable[[FlowBatch], FlowBatch] | None = None,
    ) -> None:
        self.sink = sink
        self.select = select  # the sink's `filter`: the rows it wants
        self.queue: asyncio.Queue[Any] = asyncio.Queue(queue_size)
        # A worker that never reads its queue would hang every source: an interval of 0 means "after every write".
        self.flush_interval = max(flush_interval, 0.0)
        self.store = store
        self.give_up_after = give_up_after
        self._writes = 0  # sink.write calls so far
        self._pending: deque[tuple[_Ticket, int]] = deque()  # (ticket, its write number), not yet acked
        self.metrics = metrics.sinks[sink.name]

    def _failed(self, exc: BaseException) -> None:
        self.metrics.failures += 1

    def _retrying(self, op: Callable[[], Awaitable[Any]], what: str) -> Awaitable[Any]:
        return _with_backoff(op, f"sink={self.sink.name} {what}", self._failed, self.give_up_after)

    async def run(self, on_ack: Callable[[Iterable[_Ticket]], Awaitable[None]]) -> None:
        last_flush = time.monotonic()
        while True:
            # Flush on the interval even when idle: a sink may have a file to rotate or data to make durable.
            timeout = last_flush + self.flush_interval - time.monotonic()
            item = None
            if timeout > 0 or self.queue.qsize():
                try:
                    item = await asyncio.wait_for(self.queue.get(), max(timeout, 0.0) or None)
                except TimeoutError:
                    item = None
            if item is _STOP:
                acked = await self._retrying(self.sink.close, "close")
                await self._acked_up_to(acked, on_ack)
                return
            if item is not None:
                ticket, batch, ident = item
                await self._write(ticket, batch, ident)
            if time.monotonic() - last_flush >= self.flush_interval:
                acked = await self._retrying(lambda: self.sink.flush(False), "flush")
                self.metrics.flushes += 1
                last_flush = time.monotonic()
                await self._acked_up_to(acked, on_ack)

    async def _write(self, ticket: _Ticket, batch: FlowBatch, ident: BatchId) -> None:
        """Write one batch (whole, or raising having taken nothing: retries cannot double it). Rows the sink cannot
        encode are dropped for this sink alone, reported with their unit, and the rest is written.

        Rows the sink's filter leaves out count as delivered to it. A batch it leaves out entirely is not written at
        all: its ticket is acked together with the writes before it (acks are a prefix of the sink's writes)."""
        if self.select is not None:
            kept = self.select(batch)
            self.metrics.filtered += batch.num_rows - kept.num_rows
            if kept.num_rows == 0 and batch.num_rows:
                self._pending.append((ticket, self._writes))
                return
            batch = kept
        while True:
            try:
                await self._retrying(lambda b=batch: self.sink.write(b, ident), "write")
                break
            except RejectedRows as rejected:
                rows = sorted(set(rejected.rows)) or list(range(batch.num_rows))
                self.metrics.rejected += len(rows)
                log.error(
                    "sink=%s source=%s unit=%s rejected %d of %d rows (first row %d): %s",
                    self.sink.name,
                    ticket.source,
                    ticket.unit,
                    len(rows),
                    batch.num_rows,
                    rows[0],
                    rejected.reason,
                )
                keep = pc.invert(pc.is_in(pa.array(range(batch.num_rows), pa.int64()), pa.array(rows, pa.int64())))
                smaller = batch.filter(keep)
                if smaller.num_rows == batch.num_rows:  # rows outside the batch: a sink bug, retrying would spin
                    raise SinkFatal(f"sink={self.sink.name} rejected rows it lacks: {rejected.reason}") from None
                batch = smaller
        self._writes += 1
        self._pending.append((ticket, self._writes))
        self.metrics.batches += 1
        self.metrics.records += batch.num_rows

    async def _acked_up_to(self, acked_writes: int, on_ack: Callable[[Iterable[_Ticket]], Awaitable[None]]) -> None:
        count = 0
        held: dict[_Key, _Ticket] = {}
        for ticket, write_no in self._pending:
            if write_no > acked_writes:
                break
            count += 1
            held[(ticket.source, ticket.unit)] = ticket  # a unit's tickets reach a sink in order: the last is newest
        journaled = self.sink if isinstance(self.sink, JournaledSink) else None
        journal = journaled.journal() if journaled else []
        sealed = journaled.sealed() if journaled else []
        if not count and not sealed:
            return
        if held or journal:
            rows = [(t.source, t.unit, t.version, t.progress) for t in held.values()]
            await self._retrying(
                lambda: asyncio.to_thread(self.store.commit_sink, self.sink.name, rows, journal), "recording progress"
            )
        if sealed and journaled:
            # Recorded: now the files may become visible (two-phase publish, see collector/sinks/file.py).
            await self._retrying(journaled.publish_sealed, "publish")
            await asyncio.to_thread(self.store.forget_journal, self.sink.name, sealed)
        acked = [self._pending.popleft()[0] for _ in range(count)]
        for ticket in acked:
            ticket.owed.discard(self.sink.name)
        if acked:
            await on_ack(acked)


class Pipeline:
    def __init__(
        self,
        sinks: list[Sink],
        store: CheckpointStore,
        metrics: Metrics,
        queue_batches: int = 8,
        flush_intervals: dict[str, float] | None = None,
        give_up_after: float | None = None,
        filters: dict[str, Callable[[FlowBatch], FlowBatch]] | None = None,
    ) -> None:
        intervals, selects = flush_intervals or {}, filters or {}
        self.workers = [
            _SinkWorker(
                s, queue_batches, intervals.get(s.name, 1.0), metrics, store, give_up_after, selects.get(s.name)
            )
            for s in sinks
        ]
        self.store = store
        self.metrics = metrics
        # (source, unit) -> its tickets not yet committed, in emission order. A key is present only while non-empty.
        self._units: dict[_Key, deque[_Ticket]] = {}
        self._in_flight = 0
        self._dirty: set[_Key] = set()  # units whose first tickets may have become committable
        self._commit_lock = asyncio.Lock()
        self._later: asyncio.Task[None] | None = None  # a commit taken over from a cancelled caller
        # (source, unit) -> {sink: (version, progress)} recorded before this unit started: what each sink holds.
        self._held: dict[_Key, dict[str, tuple[str, int]]] = {}
        self._tasks: list[asyncio.Task[None]] = []
        # (source, unit) -> futures resolved when the unit's last batch is committed (every sink has all of it).
        self._watchers: dict[_Key, list[asyncio.Future[None]]] = {}
        # (source, unit) -> futures resolved when nothing of the unit is in flight any more.
        self._settle: dict[_Key, list[asyncio.Future[None]]] = {}
        self.failed: BaseException | None = None
        self._failed_future: asyncio.Future[None] | None = None
        self.on_failure: Callable[[BaseException], None] | None = None

    async def start(self) -> None:
        self._failed_future = asyncio.get_running_loop().create_future()
        for w in self.workers:
            journal = {}
            if isinstance(w.sink, JournaledSink):
                journal = await asyncio.to_thread(self.store.sink_journal, w.sink.name)
                w.sink.restore(journal)
            await w.sink.open()
            if journal:  # open() has settled every file the journal named
                await asyncio.to_thread(self.store.forget_journal, w.sink.name, list(journal))
        self._tasks = [asyncio.create_task(self._run_worker(w), name=f"sink:{w.sink.name}") for w in self.workers]

    async def _run_worker(self, worker: _SinkWorker) -> None:
        try:
            await worker.run(self._acked)
        except asyncio.CancelledError:
            raise
        except BaseException as exc:
            log.error("sink=%s failed for good: %s", worker.sink.name, exc)
            self._fail(exc)

    def _fail(self, exc: BaseException) -> None:
        self.failed = self.failed or exc
        if self._failed_future is not None and not self._failed_future.done():
            self._failed_future.set_result(None)
        self._fail_watchers(exc)
        # Whoever waits for a unit to settle goes on, and meets PipelineFailed at its next emit.
        for futures in self._settle.values():
            for future in futures:
                if not future.done():
                    future.set_result(None)
        self._settle.clear()
        if self.on_failure:
            self.on_failure(exc)

    # -- what sources ask

    def when_committed(self, source: str, unit: str, version: str | None = None) -> asyncio.Future[None]:
        """A future resolved once the unit is checkpointed as done: every sink has durably taken all of it. Sources
        that must acknowledge upstream (delete an SQS message) wait on it; it fails if the pipeline does."""
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        if self.failed is not None:
            future.set_exception(PipelineFailed(str(self.failed)))
        else:
            future.version = version  # type: ignore[attr-defined]  # resolved only by a done commit of it
            self._watchers.setdefault((source, unit), []).append(future)
        return future

    def forget_watch(self, source: str, unit: str, future: asyncio.Future[None]) -> None:
        futures = self._watchers.get((source, unit))
        if futures and future in futures:
            futures.remove(future)
            if not futures:
                del self._watchers[(source, unit)]

    def _fail_watchers(self, exc: BaseException) -> None:
        for futures in self._watchers.values():
            for future in futures:
                if not future.done():
                    future.set_exception(PipelineFailed(str(exc)))
        self._watchers.clear()

    def has_pending(self, source: str, unit: str) -> bool:
        """Whether batches of the unit are with the sinks but not yet checkpointed (or, abandoned, not yet acked by
        the sinks that got them). A unit must not be read again meanwhile: re-read from its checkpoint, those
        batches would reach a sink that has not acked them yet (a Parquet file still open) a second time."""
        return (source, unit) in self._units

    def settled(self, source: str, unit: str) -> asyncio.Future[None]:
        """A future resolved once nothing of the unit is in flight (at once if nothing is)."""
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        if (source, unit) not in self._units or self.failed is not None:
            future.set_result(None)
        else:
            waiting = self._settle.setdefault((source, unit), [])
            waiting[:] = [f for f in waiting if not f.done()]  # given up on (a stop): not kept until it settles
            waiting.append(future)
        return future

    def in_flight(self) -> int:
        return self._in_flight

    def begin_unit(self, source: str, unit: str) -> None:
        """A unit (re)starts: forget what we knew of the sinks' progress on it, the store has the latest."""
        self._held.pop((source, unit), None)

    # -- emitting

    async def emit(self, delivery: Delivery) -> None:
        """Hand a batch to every sink that does not have it yet; waits while any of their queues is full."""
        if self.failed is not None:
            raise PipelineFailed(str(self.failed))
        d = delivery
        key = (d.source, d.unit)
        held = self._held.get(key)
        if held is None:
            held = self._held[key] = await asyncio.to_thread(self.store.sink_progress, *key)
            while len(self._held) > 1024:
                self._held.pop(next(iter(self._held)))
        owing = []
        for w in self.workers:
            version, progress = held.get(w.sink.name, ("", -1))
            if not (version == d.version and progress >= d.progress):
                owing.append(w)
        ticket = _Ticket(d.source, d.unit, d.version, d.position, d.done, d.records, d.progress)
        ticket.owed = {w.sink.name for w in owing}
        self._units.setdefault(key, deque()).append(ticket)
        self._in_flight += 1
        given: set[str] = set()
        try:
            for w in owing:
                await self._put(w, (ticket, d.batch, d.ident()), given)
        except BaseException:
            # Cancelled, or the pipeline failed, with some sinks never given the batch: it can never be committed.
            ticket.abandoned = True
            ticket.owed &= given
            self._dirty.add(key)
            self._settle_abandoned(key)
            raise
        if not ticket.owed:  # every sink already holds it (a replay after a crash)
            self._dirty.add(key)
            await self._commit()

    async def _put(self, worker: _SinkWorker, item: Any, given: set[str] | None = None) -> None:
        """Put into a sink's queue, or fail with the pipeline (a dead worker never empties its queue). The sink's
        name goes into `given` once the item is in its queue, even when the caller is cancelled right after (the
        batch will be written: the ticket must stay owed by that sink)."""
        if self.failed is not None:
            raise PipelineFailed(str(self.failed))
        try:
            worker.queue.put_nowait(item)
        except asyncio.QueueFull:
            pass
        else:
            if given is not None:
                given.add(worker.sink.name)
            return
        assert self._failed_future is not None
        put = asyncio.ensure_future(worker.queue.put(item))
        try:
            await asyncio.wait([put, self._failed_future], return_when=asyncio.FIRST_COMPLETED)
        finally:
            delivered = put.done() and not put.cancelled()
            if not put.done():
                put.cancel()  # not done: the item was not put (Queue.put puts in the step that completes it)
            elif delivered and given is not None:
                given.add(worker.sink.name)
        if not delivered:
            raise PipelineFailed(str(self.failed))

    # -- acks and commits

    async def _acked(self, tickets: Iterable[_Ticket]) -> None:
        for t in tickets:
            if not t.owed:
                self._dirty.add((t.source, t.unit))
        await self._commit()

    def _settle_abandoned(self, key: _Key) -> None:
        """Drop abandoned tickets at the end of a unit once no sink owes them: the unit can then be read again."""
        tickets = self._units.get(key)
        while tickets and tickets[-1].abandoned and not tickets[-1].owed:
            tickets.pop()
            self._in_flight -= 1
        if tickets is not None and not tickets:
            self._unit_settled(key)

    def _unit_settled(self, key: _Key) -> None:
        del self._units[key]
        for future in self._settle.pop(key, ()):
            if not future.done():
                future.set_result(None)

    async def _commit(self) -> None:
        """Commit, per dirty unit, the last ticket of its longest fully acked prefix; all in one transaction."""
        async with self._commit_lock:
            while self._dirty:
                dirty, self._dirty = self._dirty, set()
                plan: list[tuple[_Key, int, _Ticket]] = []
                for key in dirty:
                    tickets = self._units.get(key)
                    if not tickets:
                        continue
                    n, last = 0, None
                    for t in tickets:
                        if t.owed or t.abandoned:
                            break
                        n, last = n + 1, t
                    if last is not None:
                        plan.append((key, n, last))
                    else:
                        self._settle_abandoned(key)
                if not plan:
                    continue
                commits = [last.commit() for _, _, last in plan]
                try:
                    await _with_backoff(
                        lambda c=commits: asyncio.to_thread(self.store.commit, c), "checkpoint commit", lambda _: None
                    )
                except BaseException:
                    # Cancelled (an emitter committing a replay) or failed: the units stay dirty, so the next
                    # commit takes them (the store's commit is idempotent), and none is left in flight forever.
                    self._dirty |= dirty
                    if self._later is None or self._later.done():
                        self._later = asyncio.get_running_loop().create_task(self._commit(), name="commit")
                    raise
                # Only now do the tickets go: a failed commit is retried with the same tickets.
                now = time.time()
                for key, n, last in plan:
                    tickets = self._units[key]
                    for _ in range(n):
                        tickets.popleft()
                    self._in_flight -= n
                    self._settle_abandoned(key)
                    if last.done:
                        c = self.metrics.sources[last.source]
                        c.units += 1
                        c.newest_delivered = now
                        waiting = self._watchers.pop(key, [])
                        for future in waiting:
                            if getattr(future, "version", None) in (None, last.version) and not future.done():
                                future.set_result(None)
                        if rest := [f for f in waiting if not f.done()]:
                            self._watchers[key] = rest  # watching another version (an overwritten object)

    async def close(self, timeout: float | None = None) -> None:
        """Drain: every sink gets the rest, closes (everything durable), and the last checkpoints are committed.

        With a timeout, sinks still not drained by then are abandoned: what they lack was not acked, so it is not
        committed, and the next run delivers it again."""
        try:
            async with asyncio.timeout(timeout):
                for w, task in zip(self.workers, self._tasks, strict=True):
                    if not task.done():
                        await self._put(w, _STOP)
                await asyncio.gather(*self._tasks)
        except (TimeoutError, PipelineFailed):
            log.error("sinks did not drain in time; stopping without them (undelivered data is delivered next run)")
            await self.abort()
        await self._commit()

    async def abort(self) -> None:
        for t in self._tasks:
            t.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
