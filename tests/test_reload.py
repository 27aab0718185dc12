"""SIGHUP reloads the sources of a running daemon from its config file: added ones start, removed ones stop,
a bad file is refused with its line, and nothing already delivered is delivered again."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path

import orjson
import pytest
from flowdata import gzip_flows, json_ids, jsonl_ids, parquet_ids, tally

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parent.parent
HEADER = (
    "version account-id interface-id srcaddr dstaddr srcport dstport protocol packets bytes start end action log-status"
)


def flow_file(path: Path, first_id: int, n: int) -> None:
    # The AWS user guide's accepted-SSH default-format record, with `bytes` as a record id.
    rows = [
        f"2 123456789010 eni-1235b8ca123456789 172.31.16.139 172.31.16.21 20641 22 6 20 {first_id + i} 1418530010"
        " 1418530070 ACCEPT OK"
        for i in range(n)
    ]
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name("." + path.name)
    tmp.write_text(HEADER + "\n" + "\n".join(rows) + "\n")
    tmp.rename(path)  # complete when it appears, as the local source expects


def config(tmp: Path, sources: list[str]) -> str:
    lines = [f"  - {{name: {s}, type: local, path: {tmp / s}, poll_interval: 200ms, settle: 0s}}" for s in sources]
    return (
        f"state_dir: {tmp}/state\nprogress_interval: 0\nsources:\n" + "\n".join(lines) + "\n"
        f"sinks:\n  - {{name: out, type: file, path: {tmp}/out, format: jsonl, flush_interval: 200ms,"
        " rotate_interval: 300ms}\n"
    )


def delivered(tmp: Path) -> list[int]:
    return sorted(orjson.loads(line)["bytes"] for f in (tmp / "out").glob("*.jsonl") for line in f.open("rb"))


def wait_for(cond: Callable[[], bool], what: str, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if cond():
            return
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}")


def test_sighup_adds_and_removes_sources_and_refuses_a_bad_file(tmp_path: Path) -> None:
    cfg = tmp_path / "c.yaml"
    cfg.write_text(config(tmp_path, ["a"]))
    flow_file(tmp_path / "a" / "1.log", 1_000, 5)
    flow_file(tmp_path / "b" / "1.log", 2_000, 5)  # not configured yet
    log_path = tmp_path / "log"
    with open(log_path, "w") as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", "collector.cli", "run", "-c", str(cfg)],
            cwd=ROOT, env=os.environ.copy(), stdout=subprocess.DEVNULL, stderr=log,
        )  # fmt: skip
    try:
        wait_for(lambda: delivered(tmp_path) == list(range(1_000, 1_005)), "source a")

        cfg.write_text(config(tmp_path, ["a", "b"]))  # add b
        proc.send_signal(signal.SIGHUP)
        wait_for(lambda: delivered(tmp_path) == [*range(1_000, 1_005), *range(2_000, 2_005)], "source b")
        assert "reloaded: sources added=b removed=- changed=- unchanged=1" in log_path.read_text()

        cfg.write_text(config(tmp_path, ["a", "b"]).replace("sources:", "sources: [", 1))  # broken YAML
        proc.send_signal(signal.SIGHUP)
        wait_for(lambda: "reload refused" in log_path.read_text(), "the refusal")
        assert f"{cfg}:4:3: invalid YAML" in log_path.read_text().split("reload refused", 1)[1]

        cfg.write_text(config(tmp_path, ["b"]))  # remove a: its new files are no longer read
        proc.send_signal(signal.SIGHUP)
        wait_for(lambda: "removed=a" in log_path.read_text(), "the removal")
        flow_file(tmp_path / "a" / "2.log", 3_000, 5)
        flow_file(tmp_path / "b" / "2.log", 4_000, 5)
        wait_for(lambda: 4_004 in delivered(tmp_path), "b's new file")
        time.sleep(1.0)
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(60)
    assert proc.returncode == 0, log_path.read_text()[-2000:]
    assert delivered(tmp_path) == [*range(1_000, 1_005), *range(2_000, 2_005), *range(4_000, 4_005)]


# --- a reload while a unit is in flight ------------------------------------------------------------------------------


class PipeGate:
    """Reads a process's stdout only while open: closed, the pipe fills and a `stdout` sink blocks on it, which
    (with `queue_batches: 1`) holds the source in the middle of a unit. Everything read is kept."""

    def __init__(self, pipe: int) -> None:
        self.pipe = pipe
        self.opened = threading.Event()
        self.data = bytearray()
        self.thread = threading.Thread(target=self._read, daemon=True)
        self.thread.start()

    def _read(self) -> None:
        self.opened.wait()
        while chunk := os.read(self.pipe, 1 << 20):
            self.data += chunk

    def open(self) -> None:
        self.opened.set()


def while_running(proc: subprocess.Popen[bytes], log: Path, cond: Callable[[], bool]) -> Callable[[], bool]:
    """`cond`, failing at once (with the log's end) if the daemon has exited."""

    def check() -> bool:
        if proc.poll() is not None:
            raise AssertionError(f"the daemon exited ({proc.returncode}): {log.read_text()[-3000:]}")
        return cond()

    return check


def inflight_config(tmp: Path, poll_interval: str) -> str:
    return f"""
state_dir: {tmp}/state
progress_interval: 0
log_level: debug
pipeline: {{queue_batches: 1}}
sources:
  - {{name: a, type: local, path: {tmp}/in, poll_interval: {poll_interval}, settle: 0s}}
sinks:
  - {{name: pq, type: file, path: {tmp}/parquet, format: parquet, rotate_interval: 30s, flush_interval: 200ms}}
  - {{name: js, type: file, path: {tmp}/jsonl, format: jsonl, rotate_interval: 500ms, flush_interval: 200ms}}
  - {{name: gate, type: stdout}}
"""


def test_sighup_changing_a_source_mid_unit_does_not_read_the_unit_again_while_it_is_in_flight(
    tmp_path: Path,
) -> None:
    """Issue #8: a SIGHUP that changes a source replaces its object on the same pipeline. The old object stops at a
    batch boundary in the middle of a large file; its batches are still in an open Parquet file (acked only at
    rotation, 30 s away). The new object must not read the file again from its checkpoint (there is none yet: the
    Parquet sink has acked nothing) until those batches are checkpointed: it defers on every poll. SIGTERM drains
    (the Parquet file closes, the stopped position is committed), and a `--once` run resumes there. Every record
    ends up exactly once in the Parquet files, the JSON Lines files and on stdout."""
    total = 400_000  # about 7 parse batches
    expected = range(1, total + 1)
    (tmp_path / "in").mkdir()
    (tmp_path / "in" / "big.log.gz").write_bytes(gzip_flows(1, total))
    cfg = tmp_path / "c.yaml"
    cfg.write_text(inflight_config(tmp_path, "200ms"))
    log_path = tmp_path / "log"
    with open(log_path, "w") as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", "collector.cli", "run", "-c", str(cfg)],
            cwd=ROOT, env=os.environ.copy(), stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=log,
        )  # fmt: skip
    assert proc.stdout is not None
    gate = PipeGate(proc.stdout.fileno())
    try:
        # Closed, the gate lets the source emit a few batches and then holds it: it cannot reach the end.
        wait_for(while_running(proc, log_path, lambda: len(jsonl_ids(tmp_path / "jsonl")) > 0), "the first batches")
        cfg.write_text(inflight_config(tmp_path, "300ms"))  # the same source, changed
        proc.send_signal(signal.SIGHUP)
        wait_for(while_running(proc, log_path, lambda: "SIGHUP received" in log_path.read_text()), "the reload")
        time.sleep(0.5)  # the reload has set the old source's stop by now; it ends at its next batch boundary
        gate.open()
        wait_for(while_running(proc, log_path, lambda: "changed=a" in log_path.read_text()), "the reload's end")
        after_reload = log_path.read_text().split("changed=a", 1)[0]
        assert "records=" not in after_reload, "the old source read the file to its end: make it larger"

        def new_source_acted() -> bool:
            tail = log_path.read_text().split("changed=a", 1)[1]
            return tail.count("deferred") >= 3 or " records=" in tail  # waiting, or (wrongly) reading it again

        wait_for(while_running(proc, log_path, new_source_acted), "the new source's polls")
    finally:
        gate.open()
        proc.send_signal(signal.SIGTERM)
        proc.wait(60)
        gate.thread.join(30)
    log_text = log_path.read_text()
    assert proc.returncode == 0, log_text[-2000:]
    stdout = bytes(gate.data)
    # The rest of the file, from the committed position of the stopped read.
    rest = subprocess.run(
        [sys.executable, "-m", "collector.cli", "run", "-c", str(cfg), "--once"],
        cwd=ROOT, env=os.environ.copy(), stdin=subprocess.DEVNULL, capture_output=True, timeout=120,
    )  # fmt: skip
    assert rest.returncode == 0, rest.stderr.decode()[-2000:]
    stdout += rest.stdout

    assert tally(parquet_ids(tmp_path / "parquet"), expected) == (total, 0, total)
    assert tally(jsonl_ids(tmp_path / "jsonl"), expected) == (total, 0, total)
    assert tally(json_ids(stdout), expected) == (total, 0, total)
    tail = log_text.split("changed=a", 1)[1]
    assert "unit=" in tail and "earlier read is still in flight; deferred" in tail
    assert " records=" not in tail  # the new source never read the unit while the old batches were in flight
    assert "resuming at offset=" in rest.stderr.decode()
