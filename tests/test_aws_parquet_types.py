"""Hostile Parquet input (issue #10, class 6 and the Parquet part of class 4): column types checked against the
documented ones, invalid UTF-8, enumerated fields; the same enumerated-field rule on the text path.

Every fixture is built here with pyarrow, a few rows in AWS's Parquet layout (FORMATS.md: ports, protocol,
tcp-flags, traffic-path and version INT32, packets/bytes/start/end INT64, the rest STRING; `_` for `-` in
names), with one column changed to the case of the issue it reproduces. Rows are numbered from 1, as errors are.
"""

from __future__ import annotations

import os
import subprocess
import sys
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path

import orjson
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from adapters.aws.parse import parse_parquet, parse_text
from collector.jsonl import dumps_batch

ROOT = Path(__file__).resolve().parent.parent


def _table(n: int, **override: pa.Array) -> pa.Table:
    """n records in AWS's Parquet layout; record i (from 0) has source port 1000 + i and interface eni-i.
    `override` replaces columns (or adds them, at the end)."""
    cols: dict[str, pa.Array] = {
        "version": pa.array([5] * n, pa.int32()),
        "account_id": pa.array(["123456789010"] * n),
        "interface_id": pa.array([f"eni-{i}" for i in range(n)]),
        "srcaddr": pa.array(["10.0.0.1"] * n),
        "dstaddr": pa.array(["10.0.0.2"] * n),
        "srcport": pa.array([1000 + i for i in range(n)], pa.int32()),
        "dstport": pa.array([443] * n, pa.int32()),
        "protocol": pa.array([6] * n, pa.int32()),
        "packets": pa.array([2] * n, pa.int64()),
        "bytes": pa.array([100] * n, pa.int64()),
        "start": pa.array([1418530010] * n, pa.int64()),
        "end": pa.array([1418530070] * n, pa.int64()),
        "type": pa.array(["IPv4"] * n),
        "action": pa.array(["ACCEPT"] * n),
        "log_status": pa.array(["OK"] * n),
        "flow_direction": pa.array(["ingress"] * n),
    }
    cols.update(override)
    return pa.table(cols)


def _not_utf8(values: list[bytes | None]) -> pa.Array:
    """A string column holding the bytes as given: pyarrow validates nothing when viewing binary as string, nor
    when writing or reading Parquet, so such objects exist (issue #8 met one)."""
    return pa.array(values, pa.binary()).view(pa.string())


def _parse(tmp_path: Path, table: pa.Table, name: str = "t.parquet") -> tuple[list[dict], list[tuple[int, str]]]:
    path = tmp_path / name
    pq.write_table(table, path)
    results = list(parse_parquet(str(path), unit=name, source="s"))
    assert results[-1].final and results[-1].position == {"rows": table.num_rows}
    for r in results:
        r.batch.validate(full=True)  # every string valid UTF-8
        dumps_batch(r.batch)  # and every row encodable for a JSON sink
    rows = [row for r in results for row in r.batch.to_pylist()]
    errors = [(e.line, e.reason) for r in results for e in r.errors]
    assert all(e.unit == name for r in results for e in r.errors)
    return rows, errors


def test_one_float_in_a_2000_row_srcport_column_rejects_its_row_only(tmp_path: Path) -> None:
    # Issue #10 class 6: "one float 80.5 in a 2,000-row srcport column rejects all 2,000 rows". The others are
    # whole numbers in a float64 column (what pandas writes for an integer column with nulls): their values.
    ports = [float(1000 + i) for i in range(2000)]
    ports[1234] = 80.5
    rows, errors = _parse(tmp_path, _table(2000, srcport=pa.array(ports, pa.float64())))
    assert errors == [(1235, "row srcport: invalid value 80.5")]
    assert len(rows) == 1999
    assert [r["src_port"] for r in rows] == [1000 + i for i in range(2000) if i != 1234]
    assert [r["interface"] for r in rows] == [f"eni-{i}" for i in range(2000) if i != 1234]


def test_float_values_that_are_no_integer_of_the_field_reject_their_rows(tmp_path: Path) -> None:
    # Issue #10 class 6, per value: NaN, infinity, a fraction and a value beyond int64 are no integer; -1.0 and
    # 65536.0 are integers out of the port's range (the same rule as "-1" and "65536" on the text path); a null
    # float is a null port, like "-" in text; 0.0 and 65535.0 are the ends of the range.
    ports = [0.0, float("nan"), 65535.0, float("inf"), 1e20, -1.0, 65536.0, None, 0.5]
    rows, errors = _parse(tmp_path, _table(9, srcport=pa.array(ports, pa.float64())))
    assert errors == [
        (2, "row srcport: invalid value nan"),
        (4, "row srcport: invalid value inf"),
        (5, "row srcport: invalid value 1e+20"),
        (6, "row srcport: invalid value -1.0"),
        (7, "row srcport: invalid value 65536.0"),
        (9, "row srcport: invalid value 0.5"),
    ]
    assert [(r["interface"], r["src_port"]) for r in rows] == [("eni-0", 0), ("eni-2", 65535), ("eni-7", None)]


def test_float32_times_and_decimal_ports(tmp_path: Path) -> None:
    # Issue #10 class 6: other number types checkable per value. float32 start/end (whole seconds, exact in
    # float32 at this size only in steps of 128: 1418530048), decimal(6,1) ports: 443.0 is 443, 80.5 is not.
    start = pa.array([1418530048.0, 1418530048.0], pa.float32())
    ports = pa.array([Decimal("443.0"), Decimal("80.5")], pa.decimal128(6, 1))
    rows, errors = _parse(tmp_path, _table(2, start=start, srcport=ports))
    assert errors == [(2, "row srcport: invalid value Decimal('80.5')")]
    assert [(r["src_port"], r["time_start"]) for r in rows] == [(443, datetime(2014, 12, 14, 4, 7, 28, tzinfo=UTC))]


def test_integer_columns_may_widen_and_are_range_checked(tmp_path: Path) -> None:
    # FORMATS.md: AWS writes int32/int64; any integer type holds the same values. uint64 beyond int64 and a port
    # beyond 65535 are errors of their rows, as on the text path.
    table = _table(
        3,
        srcport=pa.array([0, 65535, 1], pa.uint16()),
        dstport=pa.array([443, 443, 70000], pa.int64()),
        protocol=pa.array([6, 17, 6], pa.uint8()),
        packets=pa.array([2**63 - 1, 2**64 - 1, 1], pa.uint64()),
        version=pa.array([5, 5, 5], pa.int8()),
    )
    rows, errors = _parse(tmp_path, table)
    assert errors == [(2, "row packets: invalid value 18446744073709551615"), (3, "row dstport: invalid value 70000")]
    assert [(r["src_port"], r["dst_port"], r["protocol"], r["packets"]) for r in rows] == [(0, 443, 6, 2**63 - 1)]
    assert rows[0]["extra"] == [("version", "5"), ("type", "IPv4")]


def test_string_integer_columns_follow_the_text_grammar(tmp_path: Path) -> None:
    # Issue #10 class 6 ("string of digits" is checkable per value): decimal digits only, leading zeros allowed.
    ports = pa.array(["443", "0080", "https", "-1", "1e3", None])
    rows, errors = _parse(tmp_path, _table(6, srcport=ports))
    assert errors == [
        (3, "row srcport: invalid value 'https'"),
        (4, "row srcport: invalid value '-1'"),
        (5, "row srcport: invalid value '1e3'"),
    ]
    assert [(r["interface"], r["src_port"]) for r in rows] == [("eni-0", 443), ("eni-1", 80), ("eni-5", None)]


@pytest.mark.parametrize(
    ("column", "values", "reason"),
    [
        # Issue #10 class 6: "bool, null-typed and binary columns are accepted where integers are expected".
        ("srcport", pa.array([True, False, True]), "column 'srcport' is bool, not an integer"),
        ("srcport", pa.nulls(3), "column 'srcport' is null, not an integer"),
        ("srcport", pa.array([b"80", b"81", b"82"]), "column 'srcport' is binary, not an integer"),
        # Types no writer of flow logs should produce, refused by the same rule: a timestamp, a list, a struct.
        ("start", pa.array([datetime(2014, 12, 14, tzinfo=UTC)] * 3, pa.timestamp("s", "UTC")),
         "column 'start' is timestamp[ms, tz=UTC], not an integer"),  # Parquet stores seconds as milliseconds
        ("packets", pa.array([[1], [2], [3]]), "column 'packets' is list<element: int64>, not an integer"),
        ("protocol", pa.array([{"n": 6}] * 3), "column 'protocol' is struct<n: int64>, not an integer"),
    ],
)  # fmt: skip
def test_a_column_that_can_never_hold_an_integer_is_refused(tmp_path: Path, column, values, reason) -> None:
    rows, errors = _parse(tmp_path, _table(3, **{column: values}))
    assert rows == []
    assert errors == [(1, f"rows 1-3: {reason} (AWS writes int32/int64): rows rejected")]


@pytest.mark.parametrize(
    ("column", "values", "reason"),
    [
        # Issue #10 class 4: "a Parquet action of type int64 becomes '1'".
        ("action", pa.array([1, 1, 0], pa.int64()), "column 'action' is int64, not a string"),
        # An account id as a number would lose its leading zeros (account ids are 12 digits): the same rule.
        ("account_id", pa.array([12345678901] * 3, pa.int64()), "column 'account_id' is int64, not a string"),
        ("log_status", pa.array([True] * 3), "column 'log_status' is bool, not a string"),
    ],
)
def test_a_string_field_of_another_type_is_refused(tmp_path: Path, column, values, reason) -> None:
    rows, errors = _parse(tmp_path, _table(3, **{column: values}))
    assert rows == []
    assert errors == [(1, f"rows 1-3: {reason} (AWS writes string): rows rejected")]


def test_a_refused_column_rejects_its_batch_only(tmp_path: Path) -> None:
    # A column's type holds for the whole object, so a refused column refuses every batch (row groups of 2 here):
    # each batch is one error naming its rows, and the position moves on past them (the unit completes).
    path = tmp_path / "g.parquet"
    pq.write_table(_table(5, srcport=pa.array([True] * 5)), path, row_group_size=2)
    results = list(parse_parquet(str(path), unit="g", source="s", batch_rows=2))
    assert [(r.batch.num_rows, [e.reason for e in r.errors], r.position) for r in results] == [
        (0, ["rows 1-2: column 'srcport' is bool, not an integer (AWS writes int32/int64): rows rejected"], {"rows": 2}),
        (0, ["rows 3-4: column 'srcport' is bool, not an integer (AWS writes int32/int64): rows rejected"], {"rows": 4}),
        (0, ["rows 5-5: column 'srcport' is bool, not an integer (AWS writes int32/int64): rows rejected"], {"rows": 5}),
        (0, [], {"rows": 5}),
    ]  # fmt: skip


def test_invalid_utf8_in_string_columns(tmp_path: Path) -> None:
    # Issue #10 class 6: "a string column with invalid UTF-8 gives a traceback from parse". A value that does not
    # decode is an error of its row, as a non-ASCII byte makes its line an error on the text path; the message
    # shows it with U+FFFD. Row 1: interface id; 2: source address; 3: action; 4: an unknown column; 5: clean.
    interface = _not_utf8([b"eni-\xff\xfe", b"eni-1", b"eni-2", b"eni-3", b"eni-4"])
    srcaddr = _not_utf8([b"10.0.0.1", b"10.0.0.\xff", b"10.0.0.1", b"10.0.0.1", b"10.0.0.1"])
    action = _not_utf8([b"ACCEPT", b"ACCEPT", b"ACC\xc3PT", b"ACCEPT", b"REJECT"])
    custom = _not_utf8([None, None, None, b"caf\xe9", "café".encode()])
    table = _table(5, interface_id=interface, srcaddr=srcaddr, action=action, my_note=custom)
    rows, errors = _parse(tmp_path, table)
    assert errors == [
        (1, "row interface-id: invalid value 'eni-\ufffd\ufffd'"),
        (2, "row srcaddr: invalid value '10.0.0.\ufffd'"),
        (3, "row action: invalid value 'ACC\ufffdPT'"),
        (4, "row my-note: invalid value 'caf\ufffd'"),
    ]
    assert [(r["interface"], r["action"], r["extra"]) for r in rows] == [
        ("eni-4", "reject", [("version", "5"), ("type", "IPv4"), ("my-note", "café")]),
    ]


def test_binary_string_fields_are_read_as_text(tmp_path: Path) -> None:
    # Parquet BYTE_ARRAY without the UTF8 annotation (older writers store strings so): read as UTF-8 text, a
    # value that does not decode rejecting its row as in a string column.
    interface = pa.array([b"eni-1", b"eni-\x80"], pa.binary())
    rows, errors = _parse(tmp_path, _table(2, interface_id=interface))
    assert errors == [(2, "row interface-id: invalid value 'eni-\ufffd'")]
    assert [r["interface"] for r in rows] == ["eni-1"]


def test_enumerated_fields_are_validated_in_parquet(tmp_path: Path) -> None:
    # Issue #10 class 4: "action, log-status, flow-direction accept any word (FOO, BAR)". FORMATS.md spells them
    # ACCEPT|REJECT, OK|NODATA|SKIPDATA, ingress|egress, IPv4|IPv6|EFA: another case is another word. The action
    # column is dictionary-encoded (pyarrow keeps that through Parquet), the others are plain strings.
    n = 8
    action = pa.array(["ACCEPT", "FOO", "accept", "REJECT", "ACCEPT", "ACCEPT", "ACCEPT", None]).dictionary_encode()
    status = pa.array(["OK", "OK", "OK", "BAR", "NODATA", "OK", "OK", "SKIPDATA"])
    direction = pa.array(["ingress", "egress", "ingress", "ingress", None, "INGRESS", "ingress", None])
    kind = pa.array(["IPv4", "IPv6", "IPv4", "IPv4", None, "IPv4", "ipv4", None])
    rows, errors = _parse(tmp_path, _table(n, action=action, log_status=status, flow_direction=direction, type=kind))
    assert errors == [
        (2, "row action: invalid value 'FOO'"),
        (3, "row action: invalid value 'accept'"),
        (4, "row log-status: invalid value 'BAR'"),
        (6, "row flow-direction: invalid value 'INGRESS'"),
        (7, "row type: invalid value 'ipv4'"),
    ]
    assert [(r["interface"], r["action"], r["log_status"], r["direction"]) for r in rows] == [
        ("eni-0", "accept", "ok", "ingress"),
        ("eni-4", "accept", "nodata", None),
        ("eni-7", None, "skipdata", None),
    ]


def test_unknown_columns_go_to_extra_as_text(tmp_path: Path) -> None:
    # FORMATS.md: an unknown field must not break parsing. Any scalar type is kept as text; a nested column
    # cannot be, and is left out with one error; the rows stay (nothing documented is missing from them).
    table = _table(
        2,
        my_count=pa.array([7, None], pa.int64()),
        my_flag=pa.array([True, False]),
        my_tags=pa.array([["a"], ["b"]]),
    )
    rows, errors = _parse(tmp_path, table)
    assert errors == [
        (1, "rows 1-2: column 'my_tags' is list<element: string>, which cannot be kept as text in extra: left out")
    ]
    assert [r["extra"] for r in rows] == [
        [("version", "5"), ("type", "IPv4"), ("my-count", "7"), ("my-flag", "true")],
        [("version", "5"), ("type", "IPv4"), ("my-flag", "false")],
    ]


def test_enumerated_fields_are_validated_in_text() -> None:
    # Issue #10 class 4, text path: the v5 custom format of AWS's "traffic path" example (header and record 1,
    # tests/test_aws_parse.py), its record repeated with one enumerated value changed per line.
    header = (
        "version srcaddr dstaddr srcport dstport protocol start end type packets bytes account-id vpc-id subnet-id "
        "instance-id interface-id region az-id sublocation-type sublocation-id action tcp-flags pkt-srcaddr "
        "pkt-dstaddr pkt-src-aws-service pkt-dst-aws-service traffic-path flow-direction log-status"
    )
    record = (
        "5 52.95.128.179 10.0.0.71 80 34210 6 1616729292 1616729349 IPv4 14 15044 123456789012 "
        "vpc-abcdefab012345678 subnet-aaaaaaaa012345678 i-0c50d5961bcb2d47b ENI ap-southeast-2 "
        "apse2-az3 - - ACCEPT 19 52.95.128.179 10.0.0.71 S3 - - ingress OK"
    )
    changes = [
        ("ACCEPT", "ACCEPT"),  # line 2: as AWS wrote it
        ("ACCEPT", "FOO"),  # line 3
        ("OK", "BAR"),  # line 4
        ("ingress", "egress"),  # line 5: the other documented direction
        ("ingress", "in"),  # line 6
        ("ACCEPT", "accept"),  # line 7: case as AWS writes it
        (" IPv4 ", " EFA "),  # line 8
        (" IPv4 ", " IPV4 "),  # line 9
        ("ACCEPT 19", "- 19"),  # line 10: `-` (null) is allowed
    ]
    lines = [header] + [record.replace("ENI", f"eni-{k}").replace(a, b) for k, (a, b) in enumerate(changes, 2)]
    results = list(parse_text([("\n".join(lines) + "\n").encode()], unit="v5.log", source="s"))
    rows = [row for r in results for row in r.batch.to_pylist()]
    errors = [(e.line, e.reason) for r in results for e in r.errors]
    assert errors == [
        (3, "action: invalid value 'FOO'"),
        (4, "log-status: invalid value 'BAR'"),
        (6, "flow-direction: invalid value 'in'"),
        (7, "action: invalid value 'accept'"),
        (9, "type: invalid value 'IPV4'"),
    ]
    assert [(r["interface"], r["action"], r["direction"], dict(r["extra"])["type"]) for r in rows] == [
        ("eni-2", "accept", "ingress", "IPv4"),
        ("eni-5", "accept", "egress", "IPv4"),
        ("eni-8", "accept", "ingress", "EFA"),
        ("eni-10", None, "ingress", "IPv4"),
    ]


def test_cli_parse_reports_hostile_parquet_without_traceback(tmp_path: Path) -> None:
    # The reproducers through `flowcollector parse` (a subprocess, as a user runs it): every file is
    # read, every problem reported with file and row, and no traceback.
    ports = [float(1000 + i) for i in range(2000)]
    ports[1234] = 80.5
    fixtures = {
        "utf8.parquet": _table(2, interface_id=_not_utf8([b"eni-\xff", b"eni-1"]), my_note=_not_utf8([b"x", b"\xfe"])),
        "float.parquet": _table(2000, srcport=pa.array(ports, pa.float64())),
        "bool.parquet": _table(3, srcport=pa.array([True, False, True])),
        "action.parquet": _table(3, action=pa.array([1, 1, 0], pa.int64())),
    }
    for name, table in fixtures.items():
        pq.write_table(table, tmp_path / name)
    proc = subprocess.run(
        [sys.executable, "-m", "collector.cli", "parse", *fixtures],
        cwd=tmp_path,
        capture_output=True,
        timeout=120,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )
    stderr = proc.stderr.decode()
    assert "Traceback" not in stderr
    assert proc.returncode == 0
    assert stderr.splitlines() == [
        "utf8.parquet:1: row interface-id: invalid value 'eni-\ufffd'",
        "utf8.parquet:2: row my-note: invalid value '\ufffd'",
        "float.parquet:1235: row srcport: invalid value 80.5",
        "bool.parquet:1: rows 1-3: column 'srcport' is bool, not an integer (AWS writes int32/int64): rows rejected",
        "action.parquet:1: rows 1-3: column 'action' is int64, not a string (AWS writes string): rows rejected",
        "flowcollector parse: 4 files, 1999 records, 5 errors",
    ]
    out = [orjson.loads(line) for line in proc.stdout.splitlines()]
    assert [r["src_port"] for r in out] == [1000 + i for i in range(2000) if i != 1234]
