"""Outages of the output disk, on a real filesystem: a small tmpfs this test mounts, filled up, remounted read-only.

Issue #8 measured, before the sink contract: a JSON Lines sink on a 2 MiB tmpfs that filled and was then enlarged
lost nothing but wrote 497,106 duplicates (a record once per retry); read-only then writable, 276,170; the Parquet
sink exited; `--once` with a read-only sink never ended. Now, during an outage the sink retries with backoff and
says so (path and errno in the log, `failures` counted), memory stays bounded, checkpoints wait; once the disk is
back every flow is there exactly once.

Mounting needs root (CI runs as root); where it is impossible the tests are skipped with the reason.
"""

from __future__ import annotations

import asyncio
import gzip
import logging
import os
import subprocess
import sys
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace

import orjson
import pyarrow.parquet as pq
import pytest

import collector.pipeline as pipeline_mod
from adapters.aws.fields import V2_FIELDS
from adapters.local import LocalSource
from collector.checkpoints import CheckpointStore
from collector.metrics import Metrics
from collector.pipeline import Pipeline
from collector.sinks.file import FileSink

ROOT = Path(__file__).resolve().parent.parent
RECORDS = 60_000


def _mount(path: Path, options: str) -> None:
    subprocess.run(["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(path)], check=True, capture_output=True)


def _remount(path: Path, options: str) -> None:
    subprocess.run(["mount", "-o", f"remount,{options}", str(path)], check=True, capture_output=True)


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    """A 1 MiB tmpfs: filled by the first megabyte of flows."""
    mnt = tmp_path / "disk"
    mnt.mkdir()
    try:
        _mount(mnt, "size=1m")
    except (OSError, subprocess.CalledProcessError) as exc:
        detail = exc.stderr.decode().strip() if isinstance(exc, subprocess.CalledProcessError) else exc
        pytest.skip(f"SKIPPED LOUDLY: cannot mount a tmpfs here (needs root): {detail}")
    try:
        yield mnt
    finally:
        subprocess.run(["umount", "-l", str(mnt)], check=False, capture_output=True)


def _inputs(root: Path) -> None:
    root.mkdir(parents=True, exist_ok=True)
    lines = [" ".join(V2_FIELDS) + "\n"]
    for i in range(RECORDS):  # every record's `bytes` is its id
        lines.append(
            f"2 123456789012 eni-0a1b2c3d 10.0.{i % 250}.{i % 7 + 1} 198.51.100.{i % 200} {1024 + i % 60000} 443 "
            f"6 {i % 90 + 1} {i + 1} 1763791200 1763791260 ACCEPT OK\n"
        )
    (root / "flows.log.gz").write_bytes(gzip.compress("".join(lines).encode(), 1))


def _ids(out: Path, fmt: str) -> Counter[int]:
    ids: Counter[int] = Counter()
    for f in sorted(out.glob("flows-*")):
        if fmt == "parquet":
            ids.update(pq.read_table(f, columns=["bytes"]).column("bytes").to_pylist())
        else:
            ids.update(orjson.loads(line)["bytes"] for line in f.read_bytes().splitlines())
    return ids


async def _wait(cond, timeout: float, what: str) -> None:
    async with asyncio.timeout(timeout):
        while not cond():
            await asyncio.sleep(0.05)


@pytest.mark.integration
@pytest.mark.parametrize("fmt", ["jsonl", "parquet"])
@pytest.mark.parametrize("outage", ["full", "read-only"])
async def test_an_output_disk_outage_retries_then_delivers_everything_exactly_once(
    tmp_path: Path, small_disk: Path, fmt: str, outage: str, monkeypatch, caplog
) -> None:
    monkeypatch.setattr(pipeline_mod, "BACKOFF_CAP", 1.0)  # the outage lasts seconds; do not wait 30 s after it
    caplog.set_level(logging.ERROR, logger="flowcollector.pipeline")
    _inputs(tmp_path / "in")
    out = small_disk / "out"
    if outage == "read-only":
        # Linux refuses a read-only remount while a file is open for writing: the disk is read-only from the start
        # (the sink's directory exists), and becomes writable while the collector runs.
        out.mkdir()
        _remount(small_disk, "ro")
    elif fmt == "parquet":
        _remount(small_disk, "size=128k")  # 60,000 flows are about 600 KB of Parquet
    store = CheckpointStore(tmp_path / "state")
    metrics = Metrics()
    sink_cfg = SimpleNamespace(
        name="archive", type="file", path=out, format=fmt, compression="none" if fmt == "jsonl" else "zstd",
        rotate_bytes=1 << 30, rotate_interval=0.5, fsync=True, flush_interval=0.05,
    )  # fmt: skip
    sink = FileSink(sink_cfg)
    pipe = Pipeline([sink], store, metrics, queue_batches=2, flush_intervals={"archive": 0.05})
    await pipe.start()
    source_cfg = SimpleNamespace(
        name="in", path=tmp_path / "in", recursive=True, glob="*", provider="auto", aws_fields=None,
        poll_interval=0.2, settle=0.0,
    )  # fmt: skip
    source = LocalSource(source_cfg, store, metrics)
    stop = asyncio.Event()
    task = asyncio.create_task(source.run(pipe, False, stop))
    counters = metrics.sinks["archive"]
    await _wait(lambda: counters.failures >= 3, 60, "the outage to be seen")
    # During the outage: nothing checkpointed past what is on disk, memory bounded by the queues and buffers.
    for _ in range(10):
        assert pipe.in_flight() <= 2 + 2 + 1  # queue_batches + the batch being written + the one being emitted
        assert sink._pending_size <= (8 << 20) + (64 << 20)
        await asyncio.sleep(0.1)
    assert store.get("in", "flows.log.gz") is None or not store.get("in", "flows.log.gz").done
    errno_text = "No space left on device" if outage == "full" else "Read-only file system"
    messages = [r.getMessage() for r in caplog.records]
    assert any("sink=archive" in m and errno_text in m and str(out) in m for m in messages), messages[:3]
    # The disk comes back.
    _remount(small_disk, "rw,size=200m")
    await _wait(lambda: (c := store.get("in", "flows.log.gz")) is not None and c.done, 120, "the file to be done")
    stop.set()
    await task
    await pipe.close()
    store.close()
    ids = _ids(out, fmt)
    assert len(ids) == RECORDS and set(ids) == set(range(1, RECORDS + 1))
    assert max(ids.values()) == 1, f"duplicated: {sum(v - 1 for v in ids.values())}"
    assert list(out.glob(".*.part")) == []


@pytest.mark.integration
def test_run_once_with_a_sink_that_keeps_failing_ends_with_an_error(tmp_path: Path, small_disk: Path) -> None:
    """`--once` must end: a read-only output directory fails the run after `give_up_after`, with the path."""
    _inputs(tmp_path / "in")
    (small_disk / "out").mkdir()
    _remount(small_disk, "ro")
    cfg = tmp_path / "cfg.yaml"
    cfg.write_text(
        f"state_dir: {tmp_path}/state\nprogress_interval: 0\npipeline:\n  give_up_after: 2s\n"
        f"sources:\n  - {{name: in, type: local, path: {tmp_path}/in}}\n"
        f"sinks:\n  - {{name: archive, type: file, path: {small_disk}/out}}\n"
    )
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    done = subprocess.run(
        [sys.executable, "-m", "collector.cli", "run", "-c", str(cfg), "--once"],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert done.returncode == 1, done.stderr[-2000:]
    assert "stopped early" in done.stderr and "giving up" in done.stderr, done.stderr[-2000:]
    assert "Read-only file system" in done.stderr and f"{small_disk}/out" in done.stderr
    assert "Traceback" not in done.stderr
