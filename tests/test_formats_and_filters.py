"""The parsing seam and per-sink filters as a user meets them: `flowcollector parse --provider auto` and `run --once`
on files of every registered shape, and two sinks of one run receiving different flows.

The subscription object is built the way Kinesis Data Firehose writes one to S3 (tests/fixtures/aws/subscription/
README.md): gzip members, one per CloudWatch Logs delivery, concatenated; a CONTROL_MESSAGE among them.
"""

from __future__ import annotations

import asyncio
import gzip
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import orjson
import pytest

from collector.config import ConfigError, parse_config
from collector.daemon import run

ROOT = Path(__file__).resolve().parent.parent
FIXTURES = Path(__file__).parent / "fixtures" / "aws" / "subscription"
# The seven records of the documented data message (data-message.json), as the text parser reads them.
TEXT = [e["message"] for e in orjson.loads(FIXTURES.joinpath("data-message.json").read_bytes())["logEvents"]]


def flowcollector(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "collector.cli", *args], cwd=ROOT, capture_output=True, text=True, timeout=120,
        env=dict(os.environ),
    )  # fmt: skip


def _firehose_object(path: Path) -> Path:
    data = FIXTURES.joinpath("data-message.json").read_bytes()
    control = FIXTURES.joinpath("control-message.json").read_bytes()
    doc = orjson.loads(data)
    broken = dict(doc, logEvents=[{"id": "e1", "timestamp": 1, "message": "2 123456789010 eni-1 bogus"}])
    members = [control, data, orjson.dumps(broken)]
    path.write_bytes(b"".join(gzip.compress(m) for m in members))
    return path


def test_parse_auto_reads_every_shape_to_the_same_flows(tmp_path: Path) -> None:
    text = tmp_path / "plain.log"
    text.write_text("\n".join(TEXT) + "\n")
    firehose = _firehose_object(tmp_path / "firehose-1-2026-12-02-10-00-00-abc")
    lines = tmp_path / "events.jsonl"
    lines.write_bytes(FIXTURES.joinpath("filter-log-events.jsonl").read_bytes())
    outputs = {}
    for f in (text, firehose, lines):
        res = flowcollector("parse", str(f))
        assert res.returncode == 0, res.stderr
        outputs[f.name] = ([orjson.loads(x) for x in res.stdout.splitlines()], res.stderr.splitlines())
    rows, errors = outputs[text.name]
    assert len(rows) == len(TEXT) == 7 and errors == ["flowcollector parse: 1 files, 7 records, 0 errors"]
    assert (rows[0]["src_addr"], rows[0]["dst_port"], rows[0]["bytes"], rows[0]["action"]) == (
        "172.31.16.139",
        22,
        4249,
        "accept",
    )
    f_rows, f_errors = outputs[firehose.name]
    assert f_rows == rows  # the control message adds nothing; the broken document's one event is an error
    assert f_errors == [
        f"{firehose}: document 3, event 1 (id e1): expected 14 fields, found 4",
        "flowcollector parse: 1 files, 7 records, 1 errors",
    ]
    l_rows, l_errors = outputs[lines.name]
    assert l_rows == rows
    assert l_errors == ["flowcollector parse: 1 files, 7 records, 0 errors"]


def test_a_local_source_reads_a_firehose_object_with_the_configured_field_order(tmp_path: Path) -> None:
    """Subscription messages are header-less records: `aws_fields` says their order, as for CloudWatch exports."""
    (tmp_path / "in").mkdir()
    doc = {
        "messageType": "DATA_MESSAGE",
        "owner": "123456789010",
        "logGroup": "g",
        "logStream": "s",
        "subscriptionFilters": ["f"],
        "logEvents": [{"id": "1", "timestamp": 1, "message": "eni-9 10.1.2.3 443 REJECT"}],
    }
    (tmp_path / "in" / "obj").write_bytes(gzip.compress(orjson.dumps(doc)) * 2)
    config = parse_config(
        textwrap.dedent(
            f"""\
            state_dir: {tmp_path / "state"}
            sources:
              - name: fh
                type: local
                path: {tmp_path / "in"}
                aws_fields: "${{interface-id}} ${{srcaddr}} ${{srcport}} ${{action}}"
            sinks:
              - {{name: out, type: file, path: {tmp_path / "out"}}}
            """
        ),
        tmp_path / "c.yaml",
    )
    metrics = asyncio.run(run(config, once=True))
    assert (metrics.sources["fh"].records, metrics.sources["fh"].errors) == (2, 0)
    (out,) = (tmp_path / "out").glob("*.jsonl")
    rows = [orjson.loads(x) for x in out.read_bytes().splitlines()]
    assert [(r["interface"], r["src_addr"], r["src_port"], r["action"]) for r in rows] == [
        ("eni-9", "10.1.2.3", 443, "reject")
    ] * 2


# --- per-sink filters -------------------------------------------------------------------------------------------


def _two_sinks(tmp_path: Path, siem_filter: str) -> str:
    return textwrap.dedent(
        f"""\
        state_dir: {tmp_path / "state"}
        sources:
          - {{name: in, type: local, path: {tmp_path / "in"}}}
        sinks:
          - {{name: all, type: file, path: {tmp_path / "all"}}}
          - name: siem
            type: file
            path: {tmp_path / "siem"}
            filter: '{siem_filter}'
        """
    )


def test_each_sink_receives_what_its_filter_selects_and_checkpoints_complete(tmp_path: Path) -> None:
    (tmp_path / "in").mkdir()
    (tmp_path / "in" / "a.log").write_text("\n".join(TEXT) + "\n")
    config = parse_config(_two_sinks(tmp_path, 'action == "reject" or dst_addr in 2001:db8::/32'), tmp_path / "c.yaml")
    metrics = asyncio.run(run(config, once=True))
    every = [orjson.loads(x) for f in (tmp_path / "all").glob("*.jsonl") for x in f.read_bytes().splitlines()]
    siem = [orjson.loads(x) for f in (tmp_path / "siem").glob("*.jsonl") for x in f.read_bytes().splitlines()]
    assert len(every) == 7
    # By hand from data-message.json: records 2 (172.31.9.69 -> 3389 REJECT), 6 (ICMP to 203.0.113.12 REJECT) and
    # 7 (an IPv6 flow to 2001:db8:1234:a102::).
    expected = [r for r in every if r["action"] == "reject" or (r["dst_addr"] or "").startswith("2001:db8:")]
    assert siem == expected and [r["dst_port"] for r in siem] == [3389, 0, 22]
    assert (metrics.sinks["siem"].filtered, metrics.sinks["all"].filtered) == (4, 0)
    # The unit is done for both sinks: a second run reads nothing again.
    again = asyncio.run(run(config, once=True))
    assert again.sources["in"].records == 0


def test_a_filter_that_keeps_nothing_still_lets_checkpoints_move(tmp_path: Path) -> None:
    (tmp_path / "in").mkdir()
    (tmp_path / "in" / "a.log").write_text("\n".join(TEXT) + "\n")
    config = parse_config(_two_sinks(tmp_path, "protocol == 17"), tmp_path / "c.yaml")
    metrics = asyncio.run(run(config, once=True))
    assert metrics.sinks["siem"].filtered == 7 and metrics.sinks["siem"].records == 0
    assert list((tmp_path / "siem").glob("*.jsonl")) == []
    assert asyncio.run(run(config, once=True)).sources["in"].records == 0


def test_check_reports_a_bad_filter_with_file_line_and_column(tmp_path: Path) -> None:
    (tmp_path / "in").mkdir()
    with pytest.raises(ConfigError) as info:
        parse_config(_two_sinks(tmp_path, 'action == "reject" and dst_prot == 22'), tmp_path / "c.yaml")
    assert info.value.errors == [
        f"{tmp_path / 'c.yaml'}:9:37: sinks[1].filter: invalid filter: at column 24: unknown column 'dst_prot' "
        "(did you mean 'dst_port'?)"
    ]


def test_a_filter_error_in_an_escaped_string_points_at_the_value(tmp_path: Path) -> None:
    """With escapes the written text no longer maps onto the expression column by column: the error names the
    start of the value (and the column within the expression) rather than a wrong spot."""
    text = (
        "sources:\n  - {name: in, type: local, path: .}\nsinks:\n"
        '  - name: a\n    type: stdout\n    filter: "action == \\"reject\\" and dst_prot == 22"\n'
    )
    with pytest.raises(ConfigError) as info:
        parse_config(text, tmp_path / "c.yaml")
    assert info.value.errors == [
        f"{tmp_path / 'c.yaml'}:6:13: sinks[0].filter: invalid filter: at column 24: unknown column 'dst_prot' "
        "(did you mean 'dst_port'?)"
    ]
