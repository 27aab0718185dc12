"""One collector per state directory (issue #8: two collectors on one state doubled and lost flows)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from collector.statelock import StateDirInUse, StateLock

ROOT = Path(__file__).resolve().parent.parent


def test_a_second_lock_names_the_holder(tmp_path: Path) -> None:
    first = StateLock(tmp_path / "state")
    first.acquire()
    with pytest.raises(StateDirInUse, match=rf"state directory {tmp_path}/state is in use by pid {os.getpid()}$"):
        StateLock(tmp_path / "state").acquire()
    first.release()
    again = StateLock(tmp_path / "state")
    again.acquire()  # released: free again
    again.release()


@pytest.mark.integration
def test_a_second_collector_on_the_same_state_exits_at_once(tmp_path: Path) -> None:
    (tmp_path / "in").mkdir()
    cfg = tmp_path / "cfg.yaml"
    cfg.write_text(
        "state_dir: state\nprogress_interval: 0\nsources:\n  - {name: in, type: local, path: in}\n"
        "sinks:\n  - {name: j, type: file, path: out}\n"
    )
    cmd = [sys.executable, "-m", "collector.cli", "run", "-c", str(cfg)]
    daemon = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        lock = tmp_path / "state" / "lock"
        deadline = time.monotonic() + 60
        while not (lock.exists() and lock.read_text().strip() == str(daemon.pid)):
            assert daemon.poll() is None and time.monotonic() < deadline, "the daemon did not start"
            time.sleep(0.05)
        second = subprocess.run([*cmd, "--once"], cwd=ROOT, capture_output=True, text=True, timeout=60)
        assert second.returncode == 1
        assert f"state directory {tmp_path}/state is in use by pid {daemon.pid}" in second.stderr
        assert "Traceback" not in second.stderr
        checked = subprocess.run(
            [sys.executable, "-m", "collector.cli", "check", "-c", str(cfg)], cwd=ROOT, capture_output=True, timeout=60
        )
        assert checked.returncode == 0  # check does not run anything: it takes no lock
    finally:
        daemon.send_signal(signal.SIGTERM)
        daemon.wait(60)
    after = subprocess.run([*cmd, "--once"], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert after.returncode == 0, after.stderr
