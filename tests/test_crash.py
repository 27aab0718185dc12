"""Kill -9 at any moment, restart: every flow arrives, exactly once in both file formats.

A real `flowcollector run` subprocess over generated gzip objects is killed with SIGKILL several times while it
works, then run to completion with --once. Every record carries a unique id (its `bytes` value), so loss and
duplication can be counted exactly: the Parquet sink (acks on file close) must hold every id exactly once, the JSON
Lines sink (acks on fsync, journaled size) too: after a crash each file is cut back to what was recorded.
"""

from __future__ import annotations

import collections
import gzip
import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import orjson
import pyarrow.parquet as pq
import pytest

from adapters.aws.fields import V2_FIELDS

pytestmark = pytest.mark.integration

FILES = 12
PER_FILE = 60_000  # ~6 MB of text per file: two parse blocks, so restarts also resume inside objects
QUEUE = 2


def _write_inputs(root: Path) -> set[int]:
    ids = set()
    header = " ".join(V2_FIELDS) + "\n"
    for f in range(FILES):
        lines = [header]
        for i in range(PER_FILE):
            rid = f * PER_FILE + i + 1
            ids.add(rid)
            lines.append(
                f"2 123456789012 eni-{f:08x} 10.0.{i % 250}.{i % 7 + 1} 198.51.100.{i % 200} "
                f"{1024 + i % 60000} 443 6 {i % 90 + 1} {rid} 1763791200 1763791260 ACCEPT OK\n"
            )
        sub = root / f"2026/11/22/{f:02d}"
        sub.mkdir(parents=True, exist_ok=True)
        (sub / f"obj{f:02d}.log.gz").write_bytes(gzip.compress("".join(lines).encode(), 1))
    return ids


def _config(tmp: Path) -> Path:
    cfg = tmp / "cfg.yaml"
    cfg.write_text(
        f"""
state_dir: {tmp}/state
progress_interval: 0
pipeline:
  queue_batches: {QUEUE}
  workers: 1
sources:
  - name: crashy
    type: local
    path: {tmp}/in
    poll_interval: 200ms
    settle: 0s
sinks:
  - name: j
    type: file
    path: {tmp}/out/jsonl
    format: jsonl
    flush_interval: 100ms
    rotate_interval: 1s
  - name: p
    type: file
    path: {tmp}/out/parquet
    format: parquet
    rotate_interval: 300ms
"""
    )
    return cfg


def _progress(tmp: Path) -> int:
    db = tmp / "state" / "checkpoints.sqlite"
    if not db.exists():
        return 0
    try:
        with sqlite3.connect(db, timeout=1) as c:
            return c.execute("SELECT COALESCE(SUM(records), 0) FROM units").fetchone()[0]
    except sqlite3.Error:
        return 0


def _run(cfg: Path, *extra: str) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [sys.executable, "-m", "collector.cli", "run", "-c", str(cfg), *extra],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )


def test_sigkill_loses_nothing(tmp_path: Path) -> None:
    ids = _write_inputs(tmp_path / "in")
    cfg = _config(tmp_path)
    kills = 0
    # Kill at increasing amounts of committed progress, so crashes land mid-object, between objects, mid-flush.
    for target in (1, PER_FILE * 3, PER_FILE * 6, PER_FILE * 9):
        proc = _run(cfg)
        deadline = time.monotonic() + 120
        while _progress(tmp_path) < target and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.02)
        if proc.poll() is None:
            os.kill(proc.pid, signal.SIGKILL)
            kills += 1
        proc.wait()
    final = _run(cfg, "--once")
    _, err = final.communicate(timeout=300)
    assert final.returncode == 0, err.decode()
    assert kills >= 2, "the collector finished before it could be killed: make the input larger"

    seen_p: collections.Counter[int] = collections.Counter()
    for f in sorted((tmp_path / "out/parquet").glob("*.parquet")):
        seen_p.update(pq.read_table(f, columns=["bytes"]).column("bytes").to_pylist())
    assert not list((tmp_path / "out/parquet").glob(".*.part")), "unfinished Parquet left behind"
    assert set(seen_p) == ids, f"parquet lost {len(ids - set(seen_p))} records"
    # Parquet files are sealed, recorded as acked, then published (two-phase): exactly once, whenever the kill came.
    dups_p = sum(seen_p.values()) - len(ids)
    assert dups_p == 0, dups_p

    seen_j: collections.Counter[int] = collections.Counter()
    for f in sorted((tmp_path / "out/jsonl").glob("*.jsonl")):
        for line in f.read_bytes().splitlines():
            seen_j[orjson.loads(line)["bytes"]] += 1
    assert set(seen_j) == ids, f"jsonl lost {len(ids - set(seen_j))} records"
    dups = sum(seen_j.values()) - len(ids)
    print(f"kills={kills} duplicates: jsonl={dups} parquet={dups_p}")
    # JSON Lines are journaled with their fsynced size at every ack and cut back to it after a crash: exactly once.
    assert dups == 0, dups

    # Checkpoints say every unit is done, with its exact record count.
    with sqlite3.connect(tmp_path / "state/checkpoints.sqlite") as c:
        rows = c.execute("SELECT done, records FROM units").fetchall()
    assert sorted(rows) == [(1, PER_FILE)] * FILES
