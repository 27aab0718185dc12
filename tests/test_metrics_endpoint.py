"""The Prometheus endpoint of a running daemon: real HTTP, the numbers the `--once` summary shows."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest
from services import free_tcp_port

from collector.config import ConfigError, parse_config

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parent.parent


def scrape(port: int) -> dict[str, float]:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as response:
        text = response.read().decode()
    out = {}
    for line in text.splitlines():
        if line and not line.startswith("#"):
            name, value = line.rsplit(" ", 1)
            out[name] = float(value)
    return out


def _rejects(data: Path) -> int:
    """REJECT flows among the samples, counted by the parser itself (what the filtered sink must receive)."""
    from collector.parsing import open_unit

    n = 0
    for f in sorted(p for p in data.rglob("*") if p.is_file()):
        for r in open_unit(f, unit=f.name, source="x"):
            n += r.batch.column("action").to_pylist().count("reject")
    return n


def test_daemon_serves_source_and_sink_counters(tmp_path: Path) -> None:
    shutil.copytree(ROOT / "examples" / "data", tmp_path / "in")
    port = free_tcp_port()
    cfg = tmp_path / "c.yaml"
    cfg.write_text(
        f"state_dir: {tmp_path}/state\nprogress_interval: 0\nmetrics_listen: '127.0.0.1:{port}'\n"
        f"sources:\n  - {{name: samples, type: local, path: {tmp_path}/in, poll_interval: 1s, settle: 0s}}\n"
        f"sinks:\n  - {{name: archive, type: file, path: {tmp_path}/out, format: jsonl}}\n"
        f"  - {{name: rejects, type: file, path: {tmp_path}/rejects, filter: 'action == \"reject\"'}}\n"
    )
    proc = subprocess.Popen(
        [sys.executable, "-m", "collector.cli", "run", "-c", str(cfg)],
        cwd=ROOT, env=os.environ.copy(), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 60
        seen: dict[str, float] = {}
        while time.monotonic() < deadline:
            try:
                seen = scrape(port)
            except OSError:
                seen = {}
            if seen.get('flowcollector_source_units_total{source="samples"}') == 6:
                break
            time.sleep(0.2)
        # The bundled samples (examples/README.md): 4 AWS files (280 rows of which 5 status rows, 3 malformed lines)
        # and 2 GCP objects (60 + 24 rows, 3 malformed lines).
        assert seen['flowcollector_source_units_total{source="samples"}'] == 6
        assert seen['flowcollector_source_records_total{source="samples"}'] == 364
        assert seen['flowcollector_source_status_rows_total{source="samples"}'] == 5
        assert seen['flowcollector_source_errors_total{source="samples"}'] == 6
        assert seen['flowcollector_source_units_failed_total{source="samples"}'] == 0
        assert seen['flowcollector_sink_records_total{sink="archive"}'] == 364
        assert seen['flowcollector_sink_filtered_total{sink="archive"}'] == 0
        assert seen['flowcollector_sink_rejected_total{sink="archive"}'] == 0
        rejects = _rejects(tmp_path / "in")
        assert 0 < rejects < 364
        assert seen['flowcollector_sink_records_total{sink="rejects"}'] == rejects
        assert seen['flowcollector_sink_filtered_total{sink="rejects"}'] == 364 - rejects
        assert seen["flowcollector_in_flight_batches"] == 0
        assert seen["flowcollector_start_time_seconds"] > time.time() - 120
    finally:
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=60)
    assert proc.returncode == 0, err[-2000:]
    assert f"metrics on http://127.0.0.1:{port}/metrics" in err


def test_metrics_listen_is_validated(tmp_path: Path) -> None:
    base = "sources:\n  - {name: l, type: local}\nsinks:\n  - {name: o, type: stdout}\n"
    assert parse_config(f"metrics_listen: 9108\n{base}", tmp_path / "c.yaml").metrics_listen == "127.0.0.1:9108"
    assert parse_config(f"metrics_listen: '[::1]:0'\n{base}", tmp_path / "c.yaml").metrics_listen == "[::1]:0"
    with pytest.raises(ConfigError) as err:
        parse_config(f"metrics_listen: 'localhost'\n{base}", tmp_path / "c.yaml")
    assert "c.yaml:1:17: metrics_listen: invalid address 'localhost'" in str(err.value)
