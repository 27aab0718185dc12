"""SIGHUP reloads the sources of a running daemon from its config file: added ones start, removed ones stop,
a bad file is refused with its line, and nothing already delivered is delivered again."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import orjson
import pytest

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
