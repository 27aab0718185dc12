"""Sources -> bounded queues -> every sink; checkpoints move only behind the acks of all sinks.

Every batch a source emits becomes a *ticket* with a global sequence number; the batch goes into one bounded queue
per sink (a full queue blocks the source: backpressure, bounded memory). Each sink acks a prefix of what it was
given (its `flush` returns a cumulative count of writes), so the tickets acked by *every* sink are also a prefix:
the minimum over the sinks is a watermark. Tickets below it are committed to the checkpoint store, the newest
position per unit, in one transaction. Tickets hold no batch: a sink that acks late (Parquet, on file close) holds
back checkpoints, never memory.

Sinks ack at different paces, so each sink's own progress per unit is recorded too, as soon as it acks. After a
crash the source resumes at the global checkpoint, and every batch a sink already holds is skipped for that sink:
what a sink receives twice is only what *it* had in flight.

A sink error is retried with backoff (a sink that is down holds checkpoints back and never drops data), except a
`SinkFatal`, which stops the pipeline: nothing unacked was committed, so a restart delivers it again.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from itertools import islice
from typing import Any

from collector.checkpoints import CheckpointStore, Commit
from collector.metrics import Metrics
from collector.schema import FlowBatch
from collector.sinks import Sink, SinkFatal

log = logging.getLogger("flowcollector.pipeline")

_STOP = object()


class PipelineFailed(Exception):
    """A sink failed for good; sources stop, and the daemon exits without committing what that sink lacks."""


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


@dataclass(slots=True, frozen=True)
class _Ticket:
    """A Delivery without its batch: all the pipeline keeps once the sinks have the data."""

    source: str
    unit: str
    version: str
    position: dict[str, Any] | None
    done: bool
    records: int
    progress: int


async def _with_backoff(op: Callable[[], Awaitable[Any]], what: str, on_failure: Callable[[], None]) -> Any:
    delay = 0.5
    while True:
        try:
            return await op()
        except SinkFatal:
            raise
        except Exception as exc:  # any other failure is retried, and reported
            on_failure()
            log.error("%s failed: %s; retrying in %.1fs", what, exc, delay)
            await asyncio.sleep(delay * (0.5 + random.random()))
            delay = min(delay * 2, 30.0)


class _SinkWorker:
    """Feeds one sink, flushes it on its interval, and turns its cumulative write acks into acked tickets."""

    def __init__(
        self, sink: Sink, queue_size: int, flush_interval: float, metrics: Metrics, store: CheckpointStore
    ) -> None:
        self.sink = sink
        self.queue: asyncio.Queue[Any] = asyncio.Queue(queue_size)
        self.flush_interval = flush_interval
        self.store = store
        self.acked = 0  # tickets acked (written and durable, or skipped because the sink already had them)
        self._writes = 0  # sink.write calls so far
        self._acked_writes = 0  # of those, durable per the sink
        self._pending: deque[tuple[_Ticket, int | None]] = deque()  # (ticket, its write number, None if skipped)
        self.metrics = metrics.sinks[sink.name]

    def _failed(self) -> None:
        self.metrics.failures += 1

    async def run(self, on_ack: Callable[[], Awaitable[None]]) -> None:
        name = f"sink={self.sink.name}"
        last_flush = time.monotonic()
        while True:
            # Flush on the interval even when idle: a sink may have a file to rotate or data to make durable.
            timeout = max(0.0, last_flush + self.flush_interval - time.monotonic())
            try:
                item = await asyncio.wait_for(self.queue.get(), timeout) if timeout > 0 else None
            except TimeoutError:
                item = None
            if item is _STOP:
                acked = await _with_backoff(self.sink.close, f"{name} close", self._failed)
                await self._acked_up_to(acked, on_ack)
                return
            if item is not None:
                ticket, batch, skip = item
                if skip:
                    self._pending.append((ticket, None))
                    await self._acked_up_to(self._acked_writes, on_ack)
                else:
                    await _with_backoff(lambda b=batch: self.sink.write(b), f"{name} write", self._failed)
                    self._writes += 1
                    self._pending.append((ticket, self._writes))
                    self.metrics.batches += 1
                    self.metrics.records += batch.num_rows
            if time.monotonic() - last_flush >= self.flush_interval:
                acked = await _with_backoff(lambda: self.sink.flush(False), f"{name} flush", self._failed)
                self.metrics.flushes += 1
                last_flush = time.monotonic()
                await self._acked_up_to(acked, on_ack)

    async def _acked_up_to(self, acked_writes: int, on_ack: Callable[[], Awaitable[None]]) -> None:
        self._acked_writes = acked_writes
        count = 0
        held: dict[tuple[str, str], _Ticket] = {}
        for ticket, write_no in self._pending:
            if write_no is not None and write_no > acked_writes:
                break
            count += 1
            if write_no is not None:
                held[(ticket.source, ticket.unit)] = ticket
        journal = self.sink.journal() if hasattr(self.sink, "journal") else []
        sealed = self.sink.sealed() if hasattr(self.sink, "sealed") else []
        if not count and not sealed:
            return
        if held or journal:
            rows = [(t.source, t.unit, t.version, t.progress) for t in held.values()]
            await _with_backoff(
                lambda: asyncio.to_thread(self.store.commit_sink, self.sink.name, rows, journal),
                f"sink={self.sink.name} recording progress",
                self._failed,
            )
        if sealed:
            # Recorded: now the files may become visible (two-phase publish, see collector/sinks/file.py).
            await _with_backoff(self.sink.publish_sealed, f"sink={self.sink.name} publish", self._failed)
            await asyncio.to_thread(self.store.forget_journal, self.sink.name, sealed)
        for _ in range(count):
            self._pending.popleft()
        if count:
            self.acked += count
            await on_ack()


class Pipeline:
    def __init__(
        self,
        sinks: list[Sink],
        store: CheckpointStore,
        metrics: Metrics,
        queue_batches: int = 8,
        flush_intervals: dict[str, float] | None = None,
    ) -> None:
        intervals = flush_intervals or {}
        self.workers = [_SinkWorker(s, queue_batches, intervals.get(s.name, 1.0), metrics, store) for s in sinks]
        self.store = store
        self.metrics = metrics
        self._tickets: deque[_Ticket] = deque()
        self._base = 0  # sequence number of _tickets[0]
        self._next = 0
        self._commit_lock = asyncio.Lock()
        # (source, unit) -> {sink: (version, progress)} recorded before this unit started: what each sink holds.
        self._held: dict[tuple[str, str], dict[str, tuple[str, int]]] = {}
        self._tasks: list[asyncio.Task[None]] = []
        # (source, unit) -> futures resolved when the unit's last batch is committed (every sink has all of it).
        self._watchers: dict[tuple[str, str], list[asyncio.Future[None]]] = {}
        self.failed: BaseException | None = None
        self.on_failure: Callable[[BaseException], None] | None = None

    async def start(self) -> None:
        for w in self.workers:
            journal = {}
            if hasattr(w.sink, "journal_in_store"):
                journal = w.sink.journal_in_store = await asyncio.to_thread(self.store.sink_journal, w.sink.name)
            await w.sink.open()
            if journal:  # open() has settled every file the journal named
                await asyncio.to_thread(self.store.forget_journal, w.sink.name, list(journal))
        self._tasks = [asyncio.create_task(self._run_worker(w), name=f"sink:{w.sink.name}") for w in self.workers]

    async def _run_worker(self, worker: _SinkWorker) -> None:
        try:
            await worker.run(self._commit_acked)
        except asyncio.CancelledError:
            raise
        except BaseException as exc:
            log.error("sink=%s failed for good: %s", worker.sink.name, exc)
            self.failed = self.failed or exc
            self._fail_watchers(exc)
            if self.on_failure:
                self.on_failure(exc)

    def when_committed(self, source: str, unit: str) -> asyncio.Future[None]:
        """A future resolved once the unit is checkpointed as done: every sink has durably taken all of it. Sources
        that must acknowledge upstream (delete an SQS message) wait on it; it fails if the pipeline does."""
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        if self.failed is not None:
            future.set_exception(PipelineFailed(str(self.failed)))
        else:
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

    def begin_unit(self, source: str, unit: str) -> None:
        """A unit (re)starts: forget what we knew of the sinks' progress on it, the store has the latest."""
        self._held.pop((source, unit), None)

    async def emit(self, delivery: Delivery) -> None:
        """Hand a batch to every sink that does not have it yet; waits while any sink's queue is full."""
        if self.failed is not None:
            raise PipelineFailed(str(self.failed))
        key = (delivery.source, delivery.unit)
        held = self._held.get(key)
        if held is None:
            held = self._held[key] = await asyncio.to_thread(self.store.sink_progress, *key)
            while len(self._held) > 1024:
                self._held.pop(next(iter(self._held)))
        d = delivery
        ticket = _Ticket(d.source, d.unit, d.version, d.position, d.done, d.records, d.progress)
        self._tickets.append(ticket)
        self._next += 1
        for w in self.workers:
            version, progress = held.get(w.sink.name, ("", -1))
            skip = version == d.version and progress >= d.progress
            await self._put(w, (ticket, d.batch, skip))

    async def _put(self, worker: _SinkWorker, item: Any) -> None:
        # A dead worker never empties its queue: fail instead of waiting forever.
        while True:
            if self.failed is not None:
                raise PipelineFailed(str(self.failed))
            try:
                await asyncio.wait_for(worker.queue.put(item), 1.0)
                return
            except TimeoutError:
                continue

    def in_flight(self) -> int:
        return self._next - self._base

    def has_pending(self, source: str, unit: str) -> bool:
        """Whether batches of the unit are with the sinks but not yet checkpointed. A source retrying a unit that
        failed half-way waits for them: re-read from an older checkpoint, they would reach a sink that has not
        acked them yet (a Parquet file still open) a second time."""
        return any(t.unit == unit and t.source == source for t in self._tickets)

    async def _commit_acked(self) -> None:
        """Called by a sink worker after its acks moved; commits the tickets every sink now has."""
        async with self._commit_lock:
            watermark = min((w.acked for w in self.workers), default=self._next)
            if watermark <= self._base:
                return
            latest: dict[tuple[str, str], _Ticket] = {}
            for t in islice(self._tickets, watermark - self._base):
                latest[(t.source, t.unit)] = t
            commits = [
                Commit(t.source, t.unit, t.version, t.position, t.done, t.records, t.progress) for t in latest.values()
            ]
            await _with_backoff(
                lambda: asyncio.to_thread(self.store.commit, commits), "checkpoint commit", lambda: None
            )
            # Only now are the tickets gone: a failed commit is retried with the same tickets.
            for _ in range(watermark - self._base):
                self._tickets.popleft()
            self._base = watermark
            now = time.time()
            for t in latest.values():
                if t.done:
                    c = self.metrics.sources[t.source]
                    c.units += 1
                    c.newest_delivered = now
                    for future in self._watchers.pop((t.source, t.unit), ()):
                        if not future.done():
                            future.set_result(None)

    async def close(self, timeout: float | None = None) -> None:
        """Drain: every sink gets the rest, closes (everything durable), and the last checkpoints are committed.

        With a timeout, sinks still not drained by then are abandoned: what they lack was not committed, so the next
        run delivers it again."""
        try:
            async with asyncio.timeout(timeout):
                for w, task in zip(self.workers, self._tasks, strict=True):
                    if not task.done():
                        await self._put(w, _STOP)
                await asyncio.gather(*self._tasks)
        except (TimeoutError, PipelineFailed):
            log.error("sinks did not drain in time; stopping without them (undelivered data is delivered next run)")
            await self.abort()
        await self._commit_acked()  # the watermark is the minimum over all sinks, failed ones included

    async def abort(self) -> None:
        for t in self._tasks:
            t.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
