"""A unit is never read again while batches of an earlier read are in flight (ARCHITECTURE.md, "Delivery
semantics"): here the supervised restart of issue #8, in process, into a Parquet file sink that acks only when its
file rotates."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from flowdata import gzip_flows, parquet_ids, tally

import adapters.local
from adapters.local import LocalSource, LocalSourceConfig
from adapters.units import Outcome
from collector.checkpoints import CheckpointStore
from collector.metrics import Metrics
from collector.pipeline import Delivery, Pipeline
from collector.sinks.file import FileSink, FileSinkConfig


async def test_a_restarted_source_does_not_read_a_unit_whose_batches_are_in_flight(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A source is stopped after the first batch of a multi-batch file (deliver_unit returns STOPPED); that batch is
    in an open Parquet file. A new source object with the same config, store and pipeline (what the supervisor or a
    reload creates) polls at once: it must not read the file (re-read from its checkpoint, of which there is none,
    the first batch would reach the Parquet file twice). It polls on until the file is done, the Parquet sink
    rotating every second meanwhile: the first batch is committed, the new source resumes after it, and the file
    holds every record once."""
    total = 200_000  # 4 parse batches
    src = tmp_path / "in"
    src.mkdir()
    (src / "big.log.gz").write_bytes(gzip_flows(1, total))
    unit = "big.log.gz"

    opens: list[dict[str, Any] | None] = []  # the resume position of every read of the file
    real_open_unit = adapters.local.open_unit

    def counting_open_unit(path: Path, **kw: Any) -> Iterator[Any]:
        opens.append(kw.get("resume"))
        return real_open_unit(path, **kw)

    monkeypatch.setattr(adapters.local, "open_unit", counting_open_unit)
    outcomes: list[str] = []  # what every deliver_unit call of the sources returned
    real_deliver_unit = adapters.local.deliver_unit

    async def recording_deliver_unit(*args: Any, **kw: Any) -> Outcome:
        outcome = await real_deliver_unit(*args, **kw)
        outcomes.append(outcome.value)
        return outcome

    monkeypatch.setattr(adapters.local, "deliver_unit", recording_deliver_unit)
    config = LocalSourceConfig(name="s", path=src, poll_interval=0.1, settle=0.0)
    sink = FileSink(FileSinkConfig(name="pq", path=tmp_path / "out", format="parquet", rotate_interval=1.0))
    store = CheckpointStore(tmp_path / "state")
    metrics = Metrics()
    pipeline = Pipeline([sink], store, metrics, queue_batches=1, flush_intervals={"pq": 0.05})
    await pipeline.start()
    try:
        # The first source object: stopped once its first batch is emitted.
        stop_first = asyncio.Event()
        emitted: list[Delivery] = []
        real_emit = pipeline.emit

        async def emit_then_stop(delivery: Delivery) -> None:
            await real_emit(delivery)
            emitted.append(delivery)
            stop_first.set()

        monkeypatch.setattr(pipeline, "emit", emit_then_stop)
        await LocalSource(config, store, metrics).poll(pipeline, False, stop_first)
        monkeypatch.setattr(pipeline, "emit", real_emit)
        assert len(emitted) == 1 and not emitted[0].done
        first_rows = emitted[0].batch.num_rows
        assert 0 < first_rows < total

        # The new source object: polls at once, then on, until the file is checkpointed as done.
        restarted = LocalSource(config, store, metrics)
        stop = asyncio.Event()
        await restarted.poll(pipeline, False, stop)
        opens_after_first_poll = len(opens)
        records_after_first_poll = metrics.sources["s"].records
        async with asyncio.timeout(30):
            while store.done_versions("s").get(unit) is None:
                await asyncio.sleep(0.1)
                await restarted.poll(pipeline, False, stop)
    finally:
        await pipeline.close()
    ckpt = store.get("s", unit)
    store.close()

    assert tally(parquet_ids(tmp_path / "out"), range(1, total + 1)) == (total, 0, total)
    assert (ckpt.done, ckpt.records) == (True, total)
    # The first object was stopped half-way; the new one's first poll deferred the unit (no read, no records), as
    # did every poll until the Parquet file rotated; then one read, from after the first batch, to the end.
    assert (opens_after_first_poll, records_after_first_poll) == (1, first_rows)
    assert outcomes[:2] == ["stopped", "deferred"] and outcomes[-1] == "done"
    assert set(outcomes[2:-1]) <= {"deferred"}
    assert opens == [None, emitted[0].position]
    assert metrics.sources["s"].records == total
