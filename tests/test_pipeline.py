"""Pipeline and checkpoints: a unit's position is committed only once every sink has acked it."""

from __future__ import annotations

import asyncio
import contextlib
from pathlib import Path

from adapters.aws.parse import parse_text
from collector.checkpoints import CheckpointStore, Commit
from collector.metrics import Metrics
from collector.pipeline import Delivery, Pipeline
from collector.schema import empty_batch

LINE = b"2 123456789010 eni-1 10.0.0.1 10.0.0.2 1 2 6 1 1 1418530010 1418530070 ACCEPT OK\n"


class ManualSink:
    """A sink whose acks the test controls: it is the pipeline being tested here, not a sink."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.written = 0
        self.ackable = 0
        self.closed = False

    async def open(self) -> None:
        pass

    async def write(self, batch, ident=None) -> None:
        self.written += 1

    async def flush(self, force: bool = False) -> int:
        return self.written if force else min(self.ackable, self.written)

    async def close(self) -> int:
        self.closed = True
        return self.written


def test_checkpoint_store_roundtrip(tmp_path: Path) -> None:
    store = CheckpointStore(tmp_path)
    assert store.get("s", "u") is None
    store.commit([Commit("s", "u", "v1", {"offset": 10, "line": 2}, False, 5)])
    cp = store.get("s", "u")
    assert (cp.version, cp.position, cp.done, cp.records) == ("v1", {"offset": 10, "line": 2}, False, 5)
    store.commit([Commit("s", "u", "v1", {"offset": 20}, True, 9), Commit("s", "w", "v2", None, True, 0)])
    assert store.done_versions("s") == {"u": "v1", "w": "v2"}
    store.close()
    # Durable across a reopen (a new process).
    again = CheckpointStore(tmp_path)
    assert again.get("s", "u").records == 9
    assert again.forget_before("s", 1e12) == 2
    assert again.done_versions("s") == {}


async def _wait_for(cond, timeout: float = 5.0) -> None:
    async with asyncio.timeout(timeout):
        while not cond():
            await asyncio.sleep(0.01)


async def test_commit_waits_for_the_slowest_sink(tmp_path: Path) -> None:
    store = CheckpointStore(tmp_path)
    fast, slow = ManualSink("fast"), ManualSink("slow")
    fast.ackable = 10**9
    pipe = Pipeline([fast, slow], store, Metrics(), queue_batches=4, flush_intervals={"fast": 0.01, "slow": 0.01})
    await pipe.start()
    batch = next(parse_text([LINE], unit="u", source="s")).batch
    for k in range(3):
        await pipe.emit(Delivery("s", "u", "v", batch, {"offset": k}, k == 2, k + 1, k))
    await _wait_for(lambda: fast.written == 3 and slow.written == 3)
    await asyncio.sleep(0.1)
    assert store.get("s", "u") is None  # the slow sink has acked nothing
    slow.ackable = 2
    await _wait_for(lambda: store.get("s", "u") is not None)
    cp = store.get("s", "u")
    assert (cp.position, cp.done, cp.records) == ({"offset": 1}, False, 2)
    await pipe.close()
    assert slow.closed and fast.closed
    cp = store.get("s", "u")
    assert (cp.position, cp.done, cp.records) == ({"offset": 2}, True, 3)


async def test_backpressure_blocks_emit_when_a_sink_queue_is_full(tmp_path: Path) -> None:
    store = CheckpointStore(tmp_path)
    sink = ManualSink("stuck")
    pipe = Pipeline([sink], store, Metrics(), queue_batches=2)

    async def never_write(batch) -> None:
        await asyncio.Event().wait()

    sink.write = never_write  # type: ignore[method-assign]
    await pipe.start()
    emitted = 0

    async def producer() -> None:
        nonlocal emitted
        for k in range(10):
            await pipe.emit(Delivery("s", "u", "v", empty_batch(), {"offset": k}, False, 0, k))
            emitted += 1

    task = asyncio.create_task(producer())
    await asyncio.sleep(0.2)
    # One batch held by the worker, two in the queue: the producer waits for the fourth.
    assert emitted == 3
    task.cancel()
    await pipe.abort()


async def test_replay_skips_what_a_sink_already_holds(tmp_path: Path) -> None:
    """After a crash a unit is replayed from the global checkpoint; a sink that had acked further gets only the
    rest, a sink that had acked less gets it all again."""
    store = CheckpointStore(tmp_path)
    store.commit_sink("ahead", [("s", "u", "v", 1)])  # 'ahead' durably holds the unit up to progress 1
    store.commit_sink("other-version", [("s", "u", "old", 5)])  # progress of an older version does not count
    ahead, behind, other = ManualSink("ahead"), ManualSink("behind"), ManualSink("other-version")
    for s in (ahead, behind, other):
        s.ackable = 10**9
    pipe = Pipeline([ahead, behind, other], store, Metrics(), flush_intervals={"ahead": 0.01, "behind": 0.01})
    await pipe.start()
    batch = next(parse_text([LINE], unit="u", source="s")).batch
    for k in range(3):
        await pipe.emit(Delivery("s", "u", "v", batch, {"offset": k}, k == 2, k + 1, k))
    await pipe.close()
    assert (ahead.written, behind.written, other.written) == (1, 3, 3)
    cp = store.get("s", "u")
    assert (cp.position, cp.done, cp.records) == ({"offset": 2}, True, 3)
    assert store.sink_progress("s", "u") == {}  # done for every sink: per-sink rows are dropped


async def test_a_failed_checkpoint_commit_is_retried_with_the_same_tickets(tmp_path: Path, monkeypatch) -> None:
    """The store failing once (disk full, a lock) must not let the checkpoint skip tickets a sink never acked."""
    store = CheckpointStore(tmp_path)
    real_commit = store.commit
    calls = []

    def flaky(items):
        calls.append(list(items))
        if len(calls) == 1:
            raise OSError("disk full")
        real_commit(calls[-1])

    monkeypatch.setattr(store, "commit", flaky)
    monkeypatch.setattr("collector.pipeline.random.random", lambda: 0.0)  # shortest backoff
    sink = ManualSink("a")
    sink.ackable = 1
    pipe = Pipeline([sink], store, Metrics(), flush_intervals={"a": 0.01})
    await pipe.start()
    batch = next(parse_text([LINE], unit="u", source="s")).batch
    for k in range(3):
        await pipe.emit(Delivery("s", "u", "v", batch, {"offset": k}, False, k + 1, k))
    await _wait_for(lambda: store.get("s", "u") is not None)
    assert store.get("s", "u").position == {"offset": 0}  # only what the sink acked, after the retry
    assert calls[0] == calls[1]
    sink.ackable = 3
    await pipe.close()
    assert store.get("s", "u").position == {"offset": 2}


async def test_a_fatal_sink_stops_the_pipeline_without_committing_past_it(tmp_path: Path) -> None:
    from collector.pipeline import PipelineFailed
    from collector.sinks import SinkFatal

    store = CheckpointStore(tmp_path)
    good, bad = ManualSink("good"), ManualSink("bad")
    good.ackable = 10**9

    async def broken(batch, ident=None) -> None:
        raise SinkFatal("reader went away")

    bad.write = broken  # type: ignore[method-assign]
    failures = []
    pipe = Pipeline([good, bad], store, Metrics(), flush_intervals={"good": 0.01, "bad": 0.01})
    pipe.on_failure = failures.append
    await pipe.start()
    batch = next(parse_text([LINE], unit="u", source="s")).batch
    await pipe.emit(Delivery("s", "u", "v", batch, {"offset": 0}, True, 1, 0))
    await _wait_for(lambda: failures)
    try:
        for k in range(1, 20):
            await pipe.emit(Delivery("s", "u", "v", batch, {"offset": k}, False, 1, k))
        raise AssertionError("emit must fail once a sink has failed for good")
    except PipelineFailed:
        pass
    await pipe.close(timeout=5)
    assert store.get("s", "u") is None  # the failed sink never acked: nothing committed


async def test_when_committed_resolves_after_every_sink_has_the_whole_unit(tmp_path: Path) -> None:
    """What an SQS source waits on before deleting its message: the unit's last batch acked by every sink."""
    store = CheckpointStore(tmp_path)
    fast, slow = ManualSink("fast"), ManualSink("slow")
    fast.ackable = 10**9
    pipe = Pipeline([fast, slow], store, Metrics(), queue_batches=4, flush_intervals={"fast": 0.01, "slow": 0.01})
    await pipe.start()
    done_u, done_w = pipe.when_committed("s", "u"), pipe.when_committed("s", "w")
    batch = next(parse_text([LINE], unit="u", source="s")).batch
    await pipe.emit(Delivery("s", "u", "v", batch, {"offset": 0}, False, 1, 0))
    await pipe.emit(Delivery("s", "u", "v", batch, {"offset": 1}, True, 2, 1))
    await pipe.emit(Delivery("s", "w", "v", batch, {"offset": 0}, True, 1, 0))
    slow.ackable = 1  # the first batch only: the unit is not done for the slow sink
    await _wait_for(lambda: store.get("s", "u") is not None)
    await asyncio.sleep(0.05)
    assert not done_u.done() and not done_w.done()
    slow.ackable = 2
    await asyncio.wait_for(done_u, 5)
    assert store.get("s", "u").done and not done_w.done()
    # A sink that fails for good fails the watchers: the message must not be deleted.
    pipe.workers[1].sink.flush = _raise_fatal  # type: ignore[method-assign]
    await pipe.emit(Delivery("s", "x", "v", batch, {"offset": 0}, False, 1, 0))
    try:
        await asyncio.wait_for(done_w, 5)
    except Exception as exc:  # noqa: BLE001
        assert type(exc).__name__ == "PipelineFailed"
    else:
        raise AssertionError("the watcher of an uncommitted unit must fail with the pipeline")
    await pipe.abort()


async def _raise_fatal(force: bool = False) -> int:
    from collector.sinks import SinkFatal

    raise SinkFatal("disk gone")


def test_done_commit_keeps_the_progress_of_a_sink_already_further() -> None:
    """A log stream is "done" after each complete read while a fast sink may already hold later reads: committing
    the slow sink's done must not erase the fast sink's progress, or a crash would send it those reads again."""
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        store = CheckpointStore(Path(tmp))
        store.commit_sink("fast", [("s", "stream", "v1", 300)])
        store.commit_sink("slow", [("s", "stream", "v1", 100)])
        store.commit_sink("other", [("s", "stream", "v0", 900)])  # an older version of the unit: obsolete
        store.commit([Commit("s", "stream", "v1", {"ts": 1}, True, 10, 100)])
        assert store.sink_progress("s", "stream") == {"fast": ("v1", 300)}
        store.commit([Commit("s", "stream", "v1", {"ts": 2}, True, 30)])  # no progress given: forget all
        assert store.sink_progress("s", "stream") == {}
        store.close()


async def test_has_pending_until_every_sink_acked(tmp_path: Path) -> None:
    """What a source retrying a half-read unit waits on: batches with the sinks but not yet checkpointed."""
    store = CheckpointStore(tmp_path)
    sink = ManualSink("slow")
    pipe = Pipeline([sink], store, Metrics(), queue_batches=4, flush_intervals={"slow": 0.01})
    await pipe.start()
    batch = next(parse_text([LINE], unit="u", source="s")).batch
    assert not pipe.has_pending("s", "u")
    await pipe.emit(Delivery("s", "u", "v", batch, {"offset": 0}, False, 1, 0))
    await _wait_for(lambda: sink.written == 1)
    assert pipe.has_pending("s", "u") and not pipe.has_pending("s", "other") and not pipe.has_pending("t", "u")
    sink.ackable = 1
    await _wait_for(lambda: not pipe.has_pending("s", "u"))
    assert store.get("s", "u").position == {"offset": 0}
    await pipe.close()


async def test_an_emit_cancelled_after_its_put_keeps_the_unit_in_flight(tmp_path: Path) -> None:
    """Review of issue #8's fix: the batch reached the sink's queue but the emitter was cancelled before it resumed.
    The unit must stay in flight until that sink acks (else a re-read hands it the batch a second time)."""
    store = CheckpointStore(tmp_path)
    sink = ManualSink("a")
    pipe = Pipeline([sink], store, Metrics(), queue_batches=1)
    pipe._failed_future = asyncio.get_running_loop().create_future()  # no workers: the test takes from the queue
    worker = pipe.workers[0]
    batch = next(parse_text([LINE], unit="u", source="s")).batch
    await pipe.emit(Delivery("s", "other", "v", batch, {"offset": 0}, False, 1, 0))  # fills the queue
    task = asyncio.create_task(pipe.emit(Delivery("s", "u", "v", batch, {"offset": 0}, False, 1, 0)))
    await asyncio.sleep(0.01)
    worker.queue.get_nowait()
    while worker.queue.qsize() == 0:
        await asyncio.sleep(0)  # the put went through; the emitter has not resumed yet
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task
    assert pipe.has_pending("s", "u")
    ticket, _, _ = worker.queue.get_nowait()
    assert ticket.abandoned and ticket.owed == {"a"}
    ticket.owed.clear()
    await pipe._acked([ticket])
    assert not pipe.has_pending("s", "u") and store.get("s", "u") is None  # settled, never committed


async def test_a_cancelled_commit_is_taken_over(tmp_path: Path, monkeypatch) -> None:
    """A replay (every sink holds the batch) commits from the emitter; cancelled during the store's commit, the
    unit must not stay in flight forever (it would be deferred forever)."""
    import time as time_mod

    store = CheckpointStore(tmp_path)
    store.commit_sink("a", [("s", "u", "v", 10)])
    real = store.commit

    def slow(items):
        time_mod.sleep(0.2)
        real(items)

    monkeypatch.setattr(store, "commit", slow)
    sink = ManualSink("a")
    pipe = Pipeline([sink], store, Metrics(), flush_intervals={"a": 0.01})
    await pipe.start()
    batch = next(parse_text([LINE], unit="u", source="s")).batch
    task = asyncio.create_task(pipe.emit(Delivery("s", "u", "v", batch, {"offset": 5}, False, 1, 5)))
    await asyncio.sleep(0.05)
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task
    await asyncio.wait_for(pipe.settled("s", "u"), 5)
    assert store.get("s", "u").position == {"offset": 5} and sink.written == 0
    await pipe.close()
