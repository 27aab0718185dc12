"""Sources -> bounded queues -> every sink; checkpoints move only behind the acks of all sinks.

Every batch a source emits becomes a *ticket* with a global sequence number and goes into one bounded queue per
sink (a full queue blocks the source: backpressure, bounded memory). Each sink acks a prefix of what it was given
(its `flush` returns a cumulative count of writes), so the tickets acked by *every* sink are also a prefix: the
minimum over the sinks is a watermark. Tickets below it are committed to the checkpoint store, the newest position
per unit, in one transaction.

Sinks ack at different paces (a Parquet file only when it closes), so each sink's own progress per unit is
recorded too, as soon as it acks. After a crash the source resumes at the global checkpoint, and every batch a sink
already holds is skipped for that sink: what a sink receives twice is only what *it* had in flight.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from collector.checkpoints import CheckpointStore, Commit
from collector.metrics import Metrics
from collector.schema import FlowBatch
from collector.sinks import Sink

log = logging.getLogger("flowcollector.pipeline")

_STOP = object()


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
        self._pending: deque[tuple[Delivery, int | None]] = deque()  # (ticket, its write number or None if skipped)
        self.metrics = metrics.sinks[sink.name]

    async def run(self, on_ack: Callable[[], Awaitable[None]]) -> None:
        unflushed_since: float | None = None
        while True:
            timeout = None
            if unflushed_since is not None:
                timeout = max(0.0, unflushed_since + self.flush_interval - time.monotonic())
            try:
                item = await asyncio.wait_for(self.queue.get(), timeout) if timeout != 0.0 else None
            except TimeoutError:
                item = None
            if item is _STOP:
                await self._acked_up_to(await self._with_backoff(self.sink.close, "close"), on_ack)
                return
            if item is not None:
                delivery, skip = item
                if skip:
                    self._pending.append((delivery, None))
                    await self._acked_up_to(self._acked_writes, on_ack)
                else:
                    await self._with_backoff(lambda batch=delivery.batch: self.sink.write(batch), "write")
                    self._writes += 1
                    self._pending.append((delivery, self._writes))
                    self.metrics.batches += 1
                    self.metrics.records += delivery.batch.num_rows
                    if unflushed_since is None:
                        unflushed_since = time.monotonic()
            if unflushed_since is not None and time.monotonic() - unflushed_since >= self.flush_interval:
                await self._acked_up_to(await self._with_backoff(lambda: self.sink.flush(False), "flush"), on_ack)
                self.metrics.flushes += 1
                unflushed_since = None if self._acked_writes == self._writes else time.monotonic()

    async def _acked_up_to(self, acked_writes: int, on_ack: Callable[[], Awaitable[None]]) -> None:
        self._acked_writes = acked_writes
        done: dict[tuple[str, str], Delivery] = {}
        popped = 0
        while self._pending and (self._pending[0][1] is None or self._pending[0][1] <= acked_writes):
            delivery, write_no = self._pending.popleft()
            popped += 1
            if write_no is not None:
                done[(delivery.source, delivery.unit)] = delivery
        if not popped:
            return
        if done:
            rows = [(d.source, d.unit, d.version, d.progress) for d in done.values()]
            await asyncio.to_thread(self.store.commit_sink, self.sink.name, rows)
        self.acked += popped
        await on_ack()

    async def _with_backoff(self, op: Callable[[], Awaitable[Any]], what: str) -> Any:
        """A sink that fails holds the checkpoints back and is retried; it never drops data."""
        delay = 0.5
        while True:
            try:
                return await op()
            except Exception as exc:  # any sink failure is retried, and reported
                self.metrics.failures += 1
                log.error("sink=%s %s failed: %s; retrying in %.1fs", self.sink.name, what, exc, delay)
                await asyncio.sleep(delay * (0.5 + random.random()))
                delay = min(delay * 2, 30.0)


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
        self._tickets: deque[Delivery] = deque()
        self._base = 0  # sequence number of _tickets[0]
        self._next = 0
        self._commit_lock = asyncio.Lock()
        # (source, unit) -> {sink: (version, progress)} recorded before this run: what each sink already holds.
        self._held: dict[tuple[str, str], dict[str, tuple[str, int]]] = {}
        self._tasks: list[asyncio.Task[None]] = []

    async def start(self) -> None:
        for w in self.workers:
            await w.sink.open()
        self._tasks = [asyncio.create_task(w.run(self._commit_acked), name=f"sink:{w.sink.name}") for w in self.workers]

    async def emit(self, delivery: Delivery) -> None:
        """Hand a batch to every sink that does not have it yet; waits while any sink's queue is full."""
        key = (delivery.source, delivery.unit)
        held = self._held.get(key)
        if held is None:
            held = self._held[key] = await asyncio.to_thread(self.store.sink_progress, *key)
            if len(self._held) > 1024:
                self._held.pop(next(iter(self._held)))
        self._tickets.append(delivery)
        self._next += 1
        for w in self.workers:
            version, progress = held.get(w.sink.name, ("", -1))
            skip = version == delivery.version and progress >= delivery.progress
            await w.queue.put((delivery, skip))

    def in_flight(self) -> int:
        return self._next - self._base

    async def _commit_acked(self) -> None:
        """Called by a sink worker after its acks moved; commits the tickets every sink now has."""
        async with self._commit_lock:
            await self._commit_watermark()

    async def _commit_watermark(self) -> None:
        watermark = min((w.acked for w in self.workers), default=self._next)
        if watermark <= self._base:
            return
        latest: dict[tuple[str, str], Delivery] = {}
        for _ in range(watermark - self._base):
            d = self._tickets.popleft()
            latest[(d.source, d.unit)] = d
        commits = [Commit(d.source, d.unit, d.version, d.position, d.done, d.records) for d in latest.values()]
        await asyncio.to_thread(self.store.commit, commits)
        self._base = watermark
        now = time.time()
        for d in latest.values():
            if d.done:
                c = self.metrics.sources[d.source]
                c.units += 1
                c.newest_delivered = now

    async def close(self) -> None:
        """Drain: every sink gets the rest, closes (everything durable), and the last checkpoints are committed."""
        for w in self.workers:
            await w.queue.put(_STOP)
        await asyncio.gather(*self._tasks)
        await self._commit_acked()

    async def abort(self) -> None:
        for t in self._tasks:
            t.cancel()
