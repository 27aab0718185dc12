"""The command line as a user meets it: real subprocesses, real files, exact output."""

from __future__ import annotations

import gzip
import os
import subprocess
import sys
from pathlib import Path

import orjson
import pyarrow.parquet as pq

from collector import __version__

ROOT = Path(__file__).resolve().parent.parent
# AWS documentation, "Flow log record examples": default-format records, and the "bogus!" line that
# flowlogs-reader's tests add (tests/fixtures/conformance).
V2 = (
    "2 123456789010 eni-1235b8ca123456789 172.31.16.139 172.31.16.21 20641 22 6 20 4249 1418530010 1418530070 ACCEPT OK\n"
    "2 123456789010 eni-1235b8ca123456789 - - - - - - - 1431280876 1431280934 - NODATA\n"
    "bogus!\n"
    "2 123456789010 eni-1235b8ca123456789 2001:db8:1234:a100:8d6e:3477:df66:f105 2001:db8:1234:a102:3304:8879:34cf:4071 "
    "34892 22 6 54 8855 1477913708 1477913820 ACCEPT OK\n"
)


def flowcollector(*args: str, cwd: Path = ROOT, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "collector.cli", *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, **(env or {})},
    )


def test_version_and_help() -> None:
    assert flowcollector("--version").stdout.strip() == f"flowcollector {__version__}"
    helptext = flowcollector("--help").stdout
    for word in ("run", "check", "parse", "examples:", "FLOWCOLLECTOR_CONFIG"):
        assert word in helptext
    parse_help = flowcollector("parse", "--help").stdout
    for option in ("--aws-format", "--projects", "--sampling-rate"):
        assert option in parse_help


def test_parse_prints_flows_errors_and_summary(tmp_path: Path) -> None:
    f = tmp_path / "v2.log.gz"
    f.write_bytes(gzip.compress(V2.encode()))
    res = flowcollector("parse", str(f))
    assert res.returncode == 0
    rows = [orjson.loads(line) for line in res.stdout.splitlines()]
    assert [r["log_status"] for r in rows] == ["ok", "nodata", "ok"]
    assert rows[0]["src_addr"] == "172.31.16.139" and rows[0]["time_end"] == "2014-12-14T04:07:50.000Z"
    assert rows[1]["src_addr"] is None and rows[1]["packets"] is None
    assert rows[2]["dst_addr"] == "2001:db8:1234:a102:3304:8879:34cf:4071"
    assert res.stderr.splitlines() == [
        f"{f}:3: expected 14 fields, found 1",
        "flowcollector parse: 1 files, 3 records, 1 errors",
    ]


def test_parse_custom_aws_format_and_unreadable_file(tmp_path: Path) -> None:
    f = tmp_path / "cw.txt"
    f.write_text("eni-1 10.0.0.1 443 ACCEPT\n")
    res = flowcollector(
        "parse", "--aws-format", "${interface-id} ${srcaddr} ${srcport} ${action}", str(f), str(tmp_path / "missing")
    )
    assert res.returncode == 1
    (row,) = [orjson.loads(line) for line in res.stdout.splitlines()]
    assert (row["interface"], row["src_addr"], row["src_port"], row["action"]) == ("eni-1", "10.0.0.1", 443, "accept")
    assert f"{tmp_path / 'missing'}: cannot read: No such file or directory" in res.stderr
    assert res.stderr.splitlines()[-1] == "flowcollector parse: 1 files, 1 records, 0 errors, 1 unreadable"


# Two GCP LogEntry lines (Google's VPC Flow Logs record format, int64 values as strings, as a log sink writes them):
# a DEST report in project shop-prod-1 and a SRC report in project shop-dev-2.
GCP = (
    '{"insertId":"a1","jsonPayload":{"bytes_sent":"491","connection":{"dest_ip":"10.128.0.11","dest_port":443,'
    '"protocol":6,"src_ip":"198.51.100.75","src_port":49444},"dest_instance":{"project_id":"shop-prod-1",'
    '"region":"europe-west1","vm_name":"web-1","zone":"europe-west1-b"},"dest_vpc":{"project_id":"shop-prod-1",'
    '"subnetwork_name":"web","vpc_name":"shop"},"end_time":"2026-11-22T06:00:01.999999999Z","packets_sent":"4",'
    '"reporter":"DEST","start_time":"2026-11-22T06:00:00.123456789Z"},'
    '"resource":{"labels":{"project_id":"shop-prod-1"},"type":"gce_subnetwork"}}\n'
    '{"insertId":"b2","jsonPayload":{"bytes_sent":"756","connection":{"dest_ip":"192.0.2.9","dest_port":443,'
    '"protocol":6,"src_ip":"10.132.0.5","src_port":50000},"end_time":"2026-11-22T06:00:03Z","packets_sent":"6",'
    '"reporter":"SRC","src_instance":{"project_id":"shop-dev-2","vm_name":"etl-1"}},'
    '"resource":{"labels":{"project_id":"shop-dev-2"},"type":"gce_subnetwork"}}\n'
)


def test_parse_gcp_with_projects_and_sampling_rate(tmp_path: Path) -> None:
    f = tmp_path / "06:00:00_06:59:59_S0.json"
    f.write_text(GCP)
    res = flowcollector("parse", str(f))
    assert res.returncode == 0, res.stderr
    rows = [orjson.loads(line) for line in res.stdout.splitlines()]
    assert [(r["provider"], r["account"], r["reporter"], r["direction"], r["sampling_rate"]) for r in rows] == [
        ("gcp", "shop-prod-1", "DEST", "ingress", None),
        ("gcp", "shop-dev-2", "SRC", "egress", None),
    ]
    res = flowcollector("parse", "--projects", "shop-prod-1, other-3", "--sampling-rate", "2", str(f))
    assert res.returncode == 0, res.stderr
    (row,) = [orjson.loads(line) for line in res.stdout.splitlines()]
    assert (row["account"], row["interface"], row["instance"], row["vpc"], row["subnet"], row["region"],
            row["zone"]) == ("shop-prod-1", "web-1", "web-1", "shop", "web", "europe-west1", "europe-west1-b")  # fmt: skip
    assert (row["src_addr"], row["src_port"], row["dst_addr"], row["dst_port"], row["protocol"]) == (
        "198.51.100.75", 49444, "10.128.0.11", 443, 6)  # fmt: skip
    assert (row["packets"], row["bytes"], row["sampling_rate"]) == (4, 491, 2)
    assert (row["time_start"], row["time_end"]) == ("2026-11-22T06:00:00.123Z", "2026-11-22T06:00:01.999Z")
    assert res.stderr.splitlines() == ["flowcollector parse: 1 files, 1 records, 0 errors"]  # dropped, not errors
    # The bundled example: an organisation sink's object, 13 of its 60 flows from the data project.
    example = ROOT / "examples/data/gcp/compute.googleapis.com/vpc_flows/2026/11/22/06:00:00_06:59:59_S0.json"
    res = flowcollector("parse", "--projects", "example-data-dev-1937", str(example))
    assert {orjson.loads(line)["account"] for line in res.stdout.splitlines()} == {"example-data-dev-1937"}
    assert res.stderr.splitlines()[-1] == "flowcollector parse: 1 files, 13 records, 3 errors"
    for bad, flag, message in (
        ("0", "--sampling-rate", "expected a whole number of at least 1, got '0'"),
        ("two", "--sampling-rate", "expected a whole number of at least 1, got 'two'"),
        (" , ", "--projects", "expected project ids separated by commas"),
    ):
        res = flowcollector("parse", flag, bad, str(f))
        assert (res.returncode, res.stdout, res.stderr) == (2, "", f"flowcollector: {flag}: {message}\n")


def test_parse_conformance_format(tmp_path: Path) -> None:
    f = tmp_path / "v2.log"
    f.write_text(V2)
    res = flowcollector("parse", "--format", "conformance", str(f))
    objs = [orjson.loads(line) for line in res.stdout.splitlines()]
    assert objs[0] == {
        "provider": "aws",
        "account": "123456789010",
        "interface": "eni-1235b8ca123456789",
        "src_addr": "172.31.16.139",
        "dst_addr": "172.31.16.21",
        "src_port": 20641,
        "dst_port": 22,
        "protocol": 6,
        "packets": 20,
        "bytes": 4249,
        "start": 1418530010,
        "end": 1418530070,
        "action": "accept",
        "direction": None,
        "tcp_flags": None,
        "log_status": "ok",
    }
    assert objs[-1] == {
        "provider": "aws",
        "_kind": "error",
        "error": "expected 14 fields, found 1",
        "_input": str(f),
        "_line": 3,
    }


def test_check_reports_file_line_and_key(tmp_path: Path) -> None:
    cfg = tmp_path / "bad.yaml"
    cfg.write_text(
        "sources:\n  - name: a\n    type: local\n    path: .\nsinks:\n  - name: b\n    type: file\n    formt: jsonl\n"
    )
    res = flowcollector("check", "-c", str(cfg))
    assert res.returncode == 1
    assert f"{cfg}:8:5: sinks[0].formt: unknown key (did you mean 'format'?)" in res.stderr
    ok = flowcollector("check", env={"FLOWCOLLECTOR_CONFIG": str(ROOT / "config.example.yaml")})
    assert ok.returncode == 0 and "source samples (local)" in ok.stdout


def test_run_once_twice_delivers_once(tmp_path: Path) -> None:
    (tmp_path / "in").mkdir()
    (tmp_path / "in" / "a.log").write_text(V2)
    cfg = tmp_path / "c.yaml"
    cfg.write_text(
        "state_dir: state\nsources:\n  - {name: s, type: local, path: in}\n"
        "sinks:\n  - {name: j, type: file, path: out/j, format: jsonl}\n"
        "  - {name: p, type: file, path: out/p, format: parquet}\n"
    )
    first = flowcollector("run", "-c", str(cfg), "--once", cwd=tmp_path.parent)
    assert first.returncode == 0, first.stderr
    table = first.stderr.split("source ", 1)[1].splitlines()
    assert table[2].split() == ["s", "1", "0", "3", "1", "1", str(len(V2)), "B"]
    again = flowcollector("run", "-c", str(cfg), "--once")
    assert again.returncode == 0
    assert again.stderr.split("source ", 1)[1].splitlines()[2].split()[1:4] == ["0", "0", "0"]
    (jf,) = (tmp_path / "out/j").glob("*.jsonl")
    assert len(jf.read_text().splitlines()) == 3
    (pf,) = (tmp_path / "out/p").glob("*.parquet")
    assert pq.read_table(pf).column("packets").to_pylist() == [20, None, 54]


def test_daemon_picks_up_new_files_and_drains_on_sigterm(tmp_path: Path) -> None:
    import signal
    import time

    (tmp_path / "in").mkdir()
    cfg = tmp_path / "c.yaml"
    cfg.write_text(
        "state_dir: state\nprogress_interval: 200ms\nsources:\n"
        "  - {name: s, type: local, path: in, poll_interval: 100ms, settle: 0s}\n"
        "sinks:\n  - {name: p, type: file, path: out, format: parquet, rotate_interval: 1h}\n"
        "  - {name: j, type: file, path: outj, format: jsonl, flush_interval: 50ms}\n"
    )
    proc = subprocess.Popen(
        [sys.executable, "-m", "collector.cli", "run", "-c", str(cfg)],
        cwd=ROOT,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        time.sleep(1.0)
        (tmp_path / "in" / "late.log").write_text(V2)  # arrives while the daemon runs
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            parts = list((tmp_path / "outj").glob(".*.part"))
            if parts and parts[0].read_text().count("\n") == 3:
                break
            time.sleep(0.05)
        time.sleep(0.5)  # several polls: the file, delivered but not acked by the Parquet sink, is not read again
        # The Parquet file is still open (rotate_interval 1h): SIGTERM must close and publish it.
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=30)
    finally:
        proc.kill()
    assert proc.returncode == 0, err
    assert "SIGTERM received" in err and "progress records=" in err
    (pf,) = (tmp_path / "out").glob("*.parquet")
    assert pq.read_table(pf).column("dst_port").to_pylist() == [22, None, 22]


def test_stdout_reader_going_away_stops_the_run(tmp_path: Path) -> None:
    """`flowcollector run --once | head -c 100` must end: a closed pipe is fatal for the stdout sink, not retried."""
    (tmp_path / "in").mkdir()
    (tmp_path / "in" / "a.log").write_text(V2 * 2000)
    cfg = tmp_path / "c.yaml"
    cfg.write_text(
        "state_dir: state\nsources:\n  - {name: s, type: local, path: in}\nsinks:\n  - {name: o, type: stdout}\n"
    )
    res = subprocess.run(
        f"{sys.executable} -m collector.cli run -c {cfg} --once | head -c 100 > /dev/null; echo ${{PIPESTATUS[0]}}",
        shell=True,
        executable="/bin/bash",
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert res.stdout.strip() == "1", res.stderr
    assert "stopped early" in res.stderr and "stdout" in res.stderr


def test_unusable_sink_directory_is_a_clear_error(tmp_path: Path) -> None:
    """A sink directory under a regular file: `run` used to fail at start with `cannot start: [Errno 17] File
    exists`; now `check` and `run` refuse the config alike, with the key (issue #10)."""
    (tmp_path / "blocker").write_text("a file where a directory should be")
    cfg = tmp_path / "c.yaml"
    cfg.write_text(
        "state_dir: state\nsources:\n  - {name: s, type: local, path: .}\n"
        "sinks:\n  - {name: f, type: file, path: blocker/out}\n"
    )
    expected = (
        f"flowcollector: invalid config {cfg}:\n"
        f"  {cfg}:5:33: sinks[0].path: {tmp_path}/blocker/out cannot be created: {tmp_path}/blocker is a regular "
        "file, not a directory\n"
    )
    for command in ("check", "run"):
        res = flowcollector(command, "-c", str(cfg), *(("--once",) if command == "run" else ()))
        assert (res.returncode, res.stdout, res.stderr) == (1, "", expected)
    assert not (tmp_path / "state").exists()  # refused before anything started


def test_a_state_dir_that_is_a_regular_file_is_refused_by_check_and_run(tmp_path: Path) -> None:
    """Issue #10: `check` passed, then `run` failed with `[Errno 17] File exists` and no file, line or key."""
    (tmp_path / "state").write_text("")
    cfg = tmp_path / "c.yaml"
    cfg.write_text("state_dir: state\nsources: [{name: s, type: local, path: .}]\nsinks: [{name: o, type: stdout}]\n")
    expected = (
        f"flowcollector: invalid config {cfg}:\n  {cfg}:1:12: state_dir: {tmp_path}/state is a regular file, "
        "not a directory\n"
    )
    for args in (("check",), ("run", "--once")):
        res = flowcollector(*args, "-c", str(cfg))
        assert (res.returncode, res.stdout, res.stderr) == (1, "", expected)


def test_check_refuses_a_merge_key_bomb(tmp_path: Path) -> None:
    """Issue #10: a 621-byte file of ten levels of `<<: [*x8, ...]` (nine aliases each) hung `check` and `run`.
    It is refused at the alias where the expanded config passes 100,000 nodes (tests/test_config.py counts it)."""
    lines = ["sources: [{name: in, type: local}]", "sinks: [{name: out, type: stdout}]", "x0: &x0 {a: 1}"]
    lines += [f"x{i}: &x{i} {{<<: [{', '.join([f'*x{i - 1}'] * 9)}]}}" for i in range(1, 10)]
    cfg = tmp_path / "bomb.yaml"
    cfg.write_text("\n".join(lines) + "\npipeline: {<<: *x9}\n")
    for args in (("check",), ("run", "--once")):
        res = flowcollector(*args, "-c", str(cfg))  # a generous timeout (120 s) is the only clock here
        assert (res.returncode, res.stdout, res.stderr) == (
            1,
            "",
            f"flowcollector: invalid config {cfg}:\n  {cfg}:8:30: alias *x4 expands the config to more than 100000 "
            "nodes (the limit; keys, values and list items, counted with every alias expanded)\n",
        )


def test_check_help_names_the_limits() -> None:
    from collector import options

    out = " ".join(flowcollector("check", "--help").stdout.split())
    assert (
        "The directories the collector writes in (state_dir, a file sink's path) must be directories, or creatable "
        "by this user. A config is refused if it is larger than 1 MiB, holds a value of more than 65,536 "
        "characters, nests values more than 64 levels deep or holds more than 100,000 nodes (keys, values and list "
        "items, each alias or merge key counted as a copy of what it names)."
    ) in out
    limits = (options.MAX_CONFIG_BYTES, options.MAX_VALUE_CHARS, options.MAX_DEPTH, options.MAX_NODES)
    assert limits == (2**20, 65536, 64, 100_000)  # the figures of the help text


def test_parse_reports_damaged_files_and_goes_on(tmp_path: Path) -> None:
    bad = tmp_path / "bad.parquet"
    bad.write_bytes(b"PAR1 not really")
    good = tmp_path / "good.log"
    good.write_text(V2)
    res = flowcollector("parse", str(bad), str(good))
    assert res.returncode == 0
    assert len(res.stdout.splitlines()) == 3
    assert f"{bad}: unreadable Parquet" in res.stderr


def test_a_local_path_that_does_not_exist_fails_the_run(tmp_path: Path) -> None:
    """Issue #8: a mistyped `path` looked like an empty directory and `--once` exited 0."""
    cfg = tmp_path / "c.yaml"
    cfg.write_text(
        "state_dir: state\nprogress_interval: 0\nsources:\n  - {name: s, type: local, path: no-such-dir}\n"
        "sinks:\n  - {name: f, type: file, path: out}\n"
    )
    res = flowcollector("run", "-c", str(cfg), "--once")
    assert res.returncode == 1
    assert f"source=s path {tmp_path}/no-such-dir does not exist" in res.stderr
