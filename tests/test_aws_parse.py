"""AWS flow log parser (adapters/aws/parse.py): conformance corpus, hand-checked fields, streaming/resume, gzip,
Parquet and property-based garbage tests.

Inputs are either the copied conformance files (tests/fixtures/conformance, provenance in its README) or literal
lines written here, each with a comment saying where it comes from.
"""

from __future__ import annotations

import gzip
import importlib.util
import io
import ipaddress
import json
import sys
from collections.abc import Iterable, Iterator
from datetime import UTC, datetime
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from isal import igzip

from adapters.aws import fields as F
from adapters.aws.parse import ParseResult, parse_parquet, parse_text
from collector.conformance import error_record, records
from collector.jsonl import dumps_batch
from collector.schema import SCHEMA

CONF = Path(__file__).parent / "fixtures" / "conformance"
MANIFEST = json.loads((CONF / "MANIFEST.json").read_text())
CASES = [c for c in MANIFEST["cases"] if c["provider"] == "aws"]


def _load_check():
    spec = importlib.util.spec_from_file_location("conformance_check", CONF / "check.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


check = _load_check()

V2_HEADER = " ".join(F.V2_FIELDS)


def ts(*args: int, ms: int = 0) -> datetime:
    return datetime(*args, microsecond=ms * 1000, tzinfo=UTC)


def addr(hex16: str) -> bytes:
    return bytes.fromhex(hex16)


def parse_all(data: bytes | Iterable[bytes], **kw) -> tuple[list[ParseResult], pa.RecordBatch, list]:
    """Run parse_text to the end; return the results, all rows as one batch, and all errors."""
    chunks = [data] if isinstance(data, bytes) else data
    kw.setdefault("unit", "unit.log")
    kw.setdefault("source", "src")
    results = list(parse_text(chunks, **kw))
    batches = [r.batch for r in results if r.batch.num_rows]
    batch = pa.concat_batches(batches) if batches else results[-1].batch
    errors = [e for r in results for e in r.errors]
    return results, batch, errors


def one_row(data: bytes, **kw) -> dict:
    _, batch, errors = parse_all(data, **kw)
    assert errors == []
    assert batch.num_rows == 1
    return batch.to_pylist()[0]


def chunked(data: bytes, size: int) -> Iterator[bytes]:
    for i in range(0, len(data), size):
        yield data[i : i + size]


def err_lines(errors: list) -> list[int]:
    return [e.line for e in errors]


# ---------------------------------------------------------------------------------------------------------------
# Conformance corpus
# ---------------------------------------------------------------------------------------------------------------


def _match(expected: list[dict], actual: list[dict]) -> tuple[list[dict], list[dict]]:
    """check.py's one-to-one, order-insensitive matching (its `matches`, incl. _alt/_lenient/_alt_kinds); stricter
    than check.main: every expected flow/status must be matched (also optional ones: our parser produces them) and
    no actual flow may remain."""
    want = [e for e in expected if e["_kind"] in ("flow", "status")]
    used: set[int] = set()
    missing = []
    for e in want:
        hit = next((i for i, a in enumerate(actual) if i not in used and check.matches(e, a)), None)
        if hit is None:
            missing.append(e)
        else:
            used.add(hit)
    return missing, [a for i, a in enumerate(actual) if i not in used]


@pytest.mark.parametrize("case", CASES, ids=[c["id"] for c in CASES])
def test_conformance_case(case, tmp_path, monkeypatch, capsys):
    raw = (CONF / case["input"]).read_bytes()
    fields = case.get("aws_format")
    if isinstance(fields, str):
        fields = F.parse_field_list(fields)
    # Header-less cases use the v2 default (parse_text's default when `fields` is None).
    results, batch, errors = parse_all(raw, unit=case["input"], source="conformance", fields=fields)
    actual = list(records(batch))
    expected = [json.loads(line) for line in (CONF / case["expected"]).read_text().splitlines() if line.strip()]

    missing, extra = _match(expected, actual)
    assert missing == [] and extra == [], f"missing={missing}\nunexpected={extra}"

    # Errors: exactly the lines the expected file marks `_kind: error` (the tcp-flag-sequence double-space line is
    # a flow with `_alt_kinds: ["error"]`: our parser rescues it by splitting on whitespace runs, so no error).
    want_error_lines = sorted(e["_line"] for e in expected if e["_kind"] == "error")
    assert sorted(err_lines(errors)) == want_error_lines
    assert all(e.unit == case["input"] for e in errors)
    assert len(actual) + len(errors) == sum(1 for e in expected if e["_kind"] in ("flow", "status", "error"))
    assert results[-1].final and all(not r.final for r in results[:-1])

    # And the shared checker itself (check.main) agrees, fed our output as JSON Lines with error records.
    out = tmp_path / "actual.jsonl"
    out.write_text("".join(json.dumps(o) + "\n" for o in actual + [error_record(e, "aws") for e in errors]))
    monkeypatch.setattr(sys, "argv", ["check.py", case["id"], str(out)])
    with pytest.raises(SystemExit) as exc:
        check.main()
    assert exc.value.code == 0, capsys.readouterr().out


def test_conformance_double_space_line_is_rescued():
    # awsdocs-x__tcp-flag-sequence line 9 has two spaces between "43638" and "10.0.0.62".
    raw = (CONF / "raw/aws/awsdocs-x__tcp-flag-sequence.log").read_bytes()
    _, batch, errors = parse_all(raw)
    assert errors == []
    rows = [r for r in records(batch) if r["src_port"] == 5001 and r["dst_port"] == 43638]
    assert rows == [
        {
            "provider": "aws", "account": "123456789010", "interface": "eni-1235b8ca123456789",
            "src_addr": "10.0.0.62", "dst_addr": "52.213.180.42", "src_port": 5001, "dst_port": 43638,
            "protocol": 6, "packets": 14, "bytes": 967, "start": 1566933133, "end": 1566933193,
            "action": "accept", "direction": None, "tcp_flags": 19, "log_status": "ok",
        }
    ]  # fmt: skip


def test_conformance_check_detects_a_changed_value():
    """Guard against a vacuous comparison: one changed value must make _match fail."""
    case = CASES[0]
    _, batch, _ = parse_all((CONF / case["input"]).read_bytes())
    actual = list(records(batch))
    actual[0]["bytes"] += 1
    expected = [json.loads(line) for line in (CONF / case["expected"]).read_text().splitlines()]
    missing, extra = _match(expected, actual)
    assert len(missing) == 1 and len(extra) == 1


# ---------------------------------------------------------------------------------------------------------------
# Hand-checked fields
# ---------------------------------------------------------------------------------------------------------------

# AWS docs default-format example, record 1 (awsdocs-x__default-format-examples.log line 1).
DOCS_V2_LINE = (
    b"2 123456789010 eni-1235b8ca123456789 172.31.16.139 172.31.16.21 20641 22 6 20 4249 1418530010 1418530070 "
    b"ACCEPT OK\n"
)


def test_v2_default_line_every_column():
    results, batch, errors = parse_all(DOCS_V2_LINE, unit="obj/a.log", source="vpc-prod")
    assert errors == []
    assert batch.schema == SCHEMA
    assert batch.to_pylist() == [
        {
            "time_start": datetime(2014, 12, 14, 4, 6, 50, tzinfo=UTC),  # 1418530010 s
            "time_end": datetime(2014, 12, 14, 4, 7, 50, tzinfo=UTC),  # 1418530070 s
            "provider": "aws",
            "source": "vpc-prod",
            "account": "123456789010",
            "region": None,
            "zone": None,
            "vpc": None,
            "subnet": None,
            "interface": "eni-1235b8ca123456789",
            "instance": None,
            "src_addr": addr("00000000000000000000ffffac1f108b"),  # ::ffff:172.31.16.139
            "dst_addr": addr("00000000000000000000ffffac1f1015"),  # ::ffff:172.31.16.21
            "src_port": 20641,
            "dst_port": 22,
            "protocol": 6,
            "packets": 20,
            "bytes": 4249,
            "action": "accept",
            "direction": None,
            "tcp_flags": None,
            "log_status": "ok",
            "sampling_rate": 1,
            "flow_state": None,
            "reporter": None,
            "pkt_src_addr": None,
            "pkt_dst_addr": None,
            "traffic_path": None,
            "reject_reason": None,
            "extra": [("version", "2")],
        }
    ]
    # time columns are milliseconds
    assert batch.column("time_start").cast(pa.int64()).to_pylist() == [1418530010000]
    assert batch.column("time_end").cast(pa.int64()).to_pylist() == [1418530070000]
    assert len(results) == 1 and results[0].final
    assert results[0].lines == 1
    assert results[0].position == {"offset": len(DOCS_V2_LINE), "line": 1, "fields": list(F.V2_FIELDS)}


def test_ipv6_addresses():
    # AWS docs default-format example, IPv6 record (awsdocs-x__default-format-examples.log line 7).
    row = one_row(
        b"2 123456789010 eni-1235b8ca123456789 2001:db8:1234:a100:8d6e:3477:df66:f105 "
        b"2001:db8:1234:a102:3304:8879:34cf:4071 34892 22 6 54 8855 1477913708 1477913820 ACCEPT OK\n"
    )
    assert row["src_addr"] == addr("20010db81234a1008d6e3477df66f105")
    assert row["dst_addr"] == addr("20010db81234a1023304887934cf4071")
    assert (row["src_port"], row["dst_port"], row["protocol"], row["packets"], row["bytes"]) == (34892, 22, 6, 54, 8855)
    assert row["time_start"] == datetime(2016, 10, 31, 11, 35, 8, tzinfo=UTC)
    # Synthetic: compressed forms, loopback, IPv4-mapped written as IPv6 text.
    row = one_row(b"2 1 eni-x ::1 ::ffff:10.1.2.3 1 2 17 1 1 1 1 ACCEPT OK\n")
    assert row["src_addr"] == addr("00000000000000000000000000000001")
    assert row["dst_addr"] == addr("00000000000000000000ffff0a010203")


@pytest.mark.parametrize(
    ("raw", "ms"),
    [
        # FORMATS.md: "a value above 2^31 is milliseconds", otherwise seconds (-> * 1000). The conformance README
        # uses 10^11 instead (following flowlogs-reader); the project's documented choice is 2^31.
        (1418530010, 1418530010000),  # seconds (AWS docs example)
        (164000066, 164000066000),  # implausible 9-digit seconds value: kept as given (conformance README)
        (0, 0),
        (2147483647, 2147483647000),  # 2^31 - 1: seconds
        (2147483648, 2147483648000),  # 2^31 itself is not "above 2^31": seconds
        (2147483649, 2147483649),  # 2^31 + 1: milliseconds
        (1512564058000, 1512564058000),  # flowlogs-reader test_millisecond_timestamp value
        (1512564058123, 1512564058123),  # milliseconds with a fractional second
    ],
)
def test_timestamps_seconds_or_milliseconds(raw, ms):
    line = f"2 123456789010 eni-1 10.0.0.1 10.0.0.2 1 2 6 1 1 {raw} {raw} ACCEPT OK\n".encode()
    _, batch, errors = parse_all(line)
    assert errors == []
    assert batch.column("time_start").cast(pa.int64()).to_pylist() == [ms]
    assert batch.column("time_end").cast(pa.int64()).to_pylist() == [ms]


def test_millisecond_timestamp_as_datetime():
    # flowlogs-reader test_millisecond_timestamp record (conformance raw file), with .123 added to start.
    row = one_row(b"2 123456789010 eni-4b118871 - - - - - - - 1512564058123 1512564059000 - SKIPDATA\n")
    assert row["time_start"] == ts(2017, 12, 6, 12, 40, 58, ms=123)
    assert row["time_end"] == ts(2017, 12, 6, 12, 40, 59)


def test_nodata_and_skipdata_rows():
    # AWS docs default-format examples, NODATA and SKIPDATA records (lines 3 and 4).
    data = (
        b"2 123456789010 eni-1235b8ca123456789 - - - - - - - 1431280876 1431280934 - NODATA\n"
        b"2 123456789010 eni-11111111aaaaaaaaa - - - - - - - 1431280876 1431280934 - SKIPDATA\n"
    )
    _, batch, errors = parse_all(data)
    assert errors == []
    rows = batch.to_pylist()
    assert [r["log_status"] for r in rows] == ["nodata", "skipdata"]
    assert [r["interface"] for r in rows] == ["eni-1235b8ca123456789", "eni-11111111aaaaaaaaa"]
    for r in rows:
        assert r["account"] == "123456789010"
        assert r["time_start"] == datetime(2015, 5, 10, 18, 1, 16, tzinfo=UTC)  # 1431280876
        assert r["time_end"] == datetime(2015, 5, 10, 18, 2, 14, tzinfo=UTC)  # 1431280934
        for col in ("src_addr", "dst_addr", "src_port", "dst_port", "protocol", "packets", "bytes", "action"):
            assert r[col] is None, col
        assert r["extra"] == [("version", "2")]


def test_header_repeated_mid_stream_is_dropped():
    # Two S3 objects concatenated (FORMATS.md: S3 text files begin with a header line): header, record, header
    # again, record, then a bad record whose line number must count both header lines.
    data = (
        f"{V2_HEADER}\n".encode()
        + DOCS_V2_LINE
        + f"{V2_HEADER}\n".encode()
        + DOCS_V2_LINE.replace(b"20641", b"20642")
        + DOCS_V2_LINE.replace(b"20641", b"port")
    )
    results, batch, errors = parse_all(data, unit="two-objects.log")
    assert batch.column("src_port").to_pylist() == [20641, 20642]
    assert [(e.unit, e.line) for e in errors] == [("two-objects.log", 5)]
    assert "srcport" in errors[0].reason
    assert results[-1].position["line"] == 5


def test_header_changes_field_order_mid_stream():
    # A v2 object followed by an object with the v5 custom order of the AWS docs "traffic path" example
    # (awsdocs-x__traffic-path-v5.log: header and record 1), then a record with the wrong field count.
    v5_header = (
        b"version srcaddr dstaddr srcport dstport protocol start end type packets bytes account-id vpc-id subnet-id "
        b"instance-id interface-id region az-id sublocation-type sublocation-id action tcp-flags pkt-srcaddr "
        b"pkt-dstaddr pkt-src-aws-service pkt-dst-aws-service traffic-path flow-direction log-status\n"
    )
    v5_line = (
        b"5 52.95.128.179 10.0.0.71 80 34210 6 1616729292 1616729349 IPv4 14 15044 123456789012 "
        b"vpc-abcdefab012345678 subnet-aaaaaaaa012345678 i-0c50d5961bcb2d47b eni-1235b8ca123456789 ap-southeast-2 "
        b"apse2-az3 - - ACCEPT 19 52.95.128.179 10.0.0.71 S3 - - ingress OK\n"
    )
    data = f"{V2_HEADER}\n".encode() + DOCS_V2_LINE + v5_header + v5_line + DOCS_V2_LINE
    results, batch, errors = parse_all(data)
    rows = batch.to_pylist()
    assert len(rows) == 2
    assert rows[0]["src_port"] == 20641 and rows[0]["account"] == "123456789010"
    v5 = rows[1]
    assert v5["src_addr"] == addr("00000000000000000000ffff345f80b3")  # 52.95.128.179
    assert v5["dst_addr"] == addr("00000000000000000000ffff0a000047")  # 10.0.0.71
    assert (v5["src_port"], v5["dst_port"], v5["protocol"]) == (80, 34210, 6)
    assert (v5["packets"], v5["bytes"]) == (14, 15044)
    assert v5["time_start"] == datetime(2021, 3, 26, 3, 28, 12, tzinfo=UTC)  # 1616729292
    assert v5["time_end"] == datetime(2021, 3, 26, 3, 29, 9, tzinfo=UTC)  # 1616729349
    assert v5["account"] == "123456789012"
    assert v5["vpc"] == "vpc-abcdefab012345678"
    assert v5["subnet"] == "subnet-aaaaaaaa012345678"
    assert v5["instance"] == "i-0c50d5961bcb2d47b"
    assert v5["interface"] == "eni-1235b8ca123456789"
    assert v5["region"] == "ap-southeast-2"
    assert v5["zone"] == "apse2-az3"
    assert v5["action"] == "accept"
    assert v5["tcp_flags"] == 19
    assert v5["pkt_src_addr"] == addr("00000000000000000000ffff345f80b3")
    assert v5["pkt_dst_addr"] == addr("00000000000000000000ffff0a000047")
    assert v5["traffic_path"] is None
    assert v5["direction"] == "ingress"
    assert v5["log_status"] == "ok"
    assert dict(v5["extra"]) == {"version": "5", "type": "IPv4", "pkt-src-aws-service": "S3"}
    # the v2 line after the v5 header has 14 tokens for 29 fields: an error on line 5
    assert [(e.line, e.reason) for e in errors] == [(5, "expected 29 fields, found 14")]
    assert results[-1].position["fields"][:3] == ["version", "srcaddr", "dstaddr"]


def test_unknown_header_fields_kept_in_extra():
    # FORMATS.md: "An unknown field name in a header must not break parsing: keep it as an extra attribute."
    # Synthetic: the v2 header plus two unknown names and one known v7 name (ECS, no column of its own).
    data = (
        f"{V2_HEADER} x-custom ecs-cluster-name future-field\n".encode()
        + DOCS_V2_LINE.rstrip(b"\n")
        + b" hello my-cluster -\n"
    )
    row = one_row(data)
    assert row["extra"] == [("version", "2"), ("x-custom", "hello"), ("ecs-cluster-name", "my-cluster")]
    assert row["src_port"] == 20641 and row["interface"] == "eni-1235b8ca123456789"


def test_transit_gateway_default_format():
    # Synthetic record in the Transit Gateway default field order of FORMATS.md (36 fields, TGW_DEFAULT_FIELDS),
    # values shaped like the AWS TGW docs examples.
    tokens = [
        "6", "TransitGateway", "123456789010", "tgw-01234567890123456", "tgw-attach-01234567890123456",
        "123456789010", "210987654321", "vpc-abcdefab012345678", "vpc-12345678901234567",
        "subnet-11111111aaaaaaaaa", "subnet-22222222bbbbbbbbb", "eni-11111111111111111", "eni-22222222222222222",
        "use2-az1", "use2-az2", "tgw-attach-09876543210987654", "10.0.1.5", "10.0.2.10", "44562", "443", "6",
        "10", "1500", "1616729292", "1616729349", "OK", "IPv4", "0", "1", "0", "0", "3", "us-east-2", "egress",
        "-", "EC2",
    ]  # fmt: skip
    assert len(tokens) == len(F.TGW_DEFAULT_FIELDS) == 36
    row = one_row((" ".join(tokens) + "\n").encode(), fields=F.TGW_DEFAULT_FIELDS)
    assert row["account"] == "123456789010"
    assert row["interface"] is None  # no interface-id in the TGW format (tgw-src-eni / tgw-dst-eni go to extra)
    assert row["src_addr"] == addr("00000000000000000000ffff0a000105")
    assert row["dst_addr"] == addr("00000000000000000000ffff0a00020a")
    assert (row["src_port"], row["dst_port"], row["protocol"], row["packets"], row["bytes"]) == (
        44562,
        443,
        6,
        10,
        1500,
    )
    assert row["time_start"] == datetime(2021, 3, 26, 3, 28, 12, tzinfo=UTC)
    assert row["time_end"] == datetime(2021, 3, 26, 3, 29, 9, tzinfo=UTC)
    assert row["action"] is None  # the TGW default format has no action field
    assert row["log_status"] == "ok"
    assert row["tcp_flags"] == 3
    assert row["region"] == "us-east-2"
    assert row["direction"] == "egress"
    assert dict(row["extra"]) == {
        "version": "6",
        "resource-type": "TransitGateway",
        "tgw-id": "tgw-01234567890123456",
        "tgw-attachment-id": "tgw-attach-01234567890123456",
        "tgw-src-vpc-account-id": "123456789010",
        "tgw-dst-vpc-account-id": "210987654321",
        "tgw-src-vpc-id": "vpc-abcdefab012345678",
        "tgw-dst-vpc-id": "vpc-12345678901234567",
        "tgw-src-subnet-id": "subnet-11111111aaaaaaaaa",
        "tgw-dst-subnet-id": "subnet-22222222bbbbbbbbb",
        "tgw-src-eni": "eni-11111111111111111",
        "tgw-dst-eni": "eni-22222222222222222",
        "tgw-src-az-id": "use2-az1",
        "tgw-dst-az-id": "use2-az2",
        "tgw-pair-attachment-id": "tgw-attach-09876543210987654",
        "type": "IPv4",
        "packets-lost-no-route": "0",
        "packets-lost-blackhole": "1",
        "packets-lost-mtu-exceeded": "0",
        "packets-lost-ttl-expired": "0",
        "pkt-dst-aws-service": "EC2",
    }  # "pkt-src-aws-service" was "-": null, so absent from extra


def test_transit_gateway_packets_lost_must_be_integers():
    # packets-lost-* have no column but are documented numbers (fields.INT_FIELDS): a non-integer is an error.
    tokens = ["6", "TransitGateway", "123456789010"] + ["-"] * 24 + ["x", "0", "0", "0"] + ["-"] * 5
    assert len(tokens) == 36
    _, batch, errors = parse_all((" ".join(tokens) + "\n").encode(), fields=F.TGW_DEFAULT_FIELDS)
    assert batch.num_rows == 0
    assert [e.line for e in errors] == [1] and "packets-lost-no-route" in errors[0].reason


def test_v8_reject_reason():
    # FORMATS.md v8: reject-reason (e.g. BPA, block public access). Synthetic custom format: v2 + reject-reason.
    data = (
        f"{V2_HEADER} reject-reason\n".encode()
        + b"8 123456789010 eni-1235b8ca123456789 198.51.100.10 10.0.0.5 49152 22 6 1 60 1700000000 1700000060 "
        + b"REJECT OK BPA\n"
        + b"8 123456789010 eni-1235b8ca123456789 10.0.0.5 198.51.100.10 22 49152 6 1 60 1700000000 1700000060 "
        + b"ACCEPT OK -\n"
    )
    _, batch, errors = parse_all(data)
    assert errors == []
    rows = batch.to_pylist()
    assert [r["reject_reason"] for r in rows] == ["BPA", None]
    assert [r["action"] for r in rows] == ["reject", "accept"]
    assert [r["extra"] for r in rows] == [[("version", "8")], [("version", "8")]]


def _v2(srcport: str = "443", srcaddr: str = "198.51.100.1", proto: str = "6", dstaddr: str = "192.0.2.1") -> str:
    # flowlogs-reader V2_RECORDS record 1, with substitutable values.
    return f"2 123456789010 eni-102010ab {srcaddr} {dstaddr} {srcport} 49152 {proto} 10 840 1439387263 1439387264 ACCEPT OK"


@pytest.mark.parametrize(
    ("bad", "reason_has"),
    [
        (_v2(srcport="https"), "srcport"),  # non-integer port
        (_v2(srcport="70000"), "srcport"),  # port out of range
        (_v2(srcport="-1"), "srcport"),  # negative port
        (_v2(proto="300"), "protocol"),  # protocol out of range
        (_v2(srcaddr="10.0.0.256"), "srcaddr"),  # bad IPv4
        (_v2(dstaddr="2001:db8::g"), "dstaddr"),  # bad IPv6
        (_v2(srcaddr="010.1.1.1"), "srcaddr"),  # inet_aton-only form, rejected (schema.parse_addresses)
        (_v2(srcaddr="10.0.0.1\x00"), "control character 0x00"),  # embedded NUL: the line is not a record
        (_v2() + " extra", "fields"),  # 15 fields
        (_v2().rsplit(" ", 1)[0], "fields"),  # 13 fields
    ],
)
def test_bad_values_are_errors_and_other_lines_survive(bad, reason_has):
    lines = [_v2(srcport="1"), _v2(srcport="2"), bad, _v2(srcport="3")]
    results, batch, errors = parse_all(("\n".join(lines) + "\n").encode(), unit="s3://b/k.log.gz")
    assert batch.column("src_port").to_pylist() == [1, 2, 3]
    assert [(e.unit, e.line) for e in errors] == [("s3://b/k.log.gz", 3)]
    assert reason_has in errors[0].reason
    assert errors[0].raw.split()[:3] == bad.split()[:3]
    assert str(errors[0]).startswith("s3://b/k.log.gz:3: ")


def test_several_bad_values_in_one_object():
    lines = [
        _v2(srcport="1"),
        _v2(srcport="x"),
        _v2(srcport="70000"),
        _v2(proto="300"),
        _v2(srcaddr="10.0.0.256"),
        "1 2 3",
        _v2(srcport="2"),
    ]
    _, batch, errors = parse_all(("\n".join(lines) + "\n").encode(), unit="u")
    assert batch.column("src_port").to_pylist() == [1, 2]
    assert [(e.unit, e.line) for e in errors] == [("u", 2), ("u", 3), ("u", 4), ("u", 5), ("u", 6)]
    assert [e.reason for e in errors] == [
        "srcport: invalid value 'x'",
        "srcport: invalid value '70000'",
        "protocol: invalid value '300'",
        "srcaddr: invalid value '10.0.0.256'",
        "expected 14 fields, found 3",
    ]


def test_crlf_line_endings():
    raw = (CONF / "raw/aws/awsdocs-x__traffic-path-v5.log").read_bytes()
    crlf = raw.replace(b"\n", b"\r\n") + _v2(srcport="x").encode() + b"\r\n"
    _, plain, _ = parse_all(raw)
    results, batch, errors = parse_all(crlf)
    assert batch.to_pylist() == plain.to_pylist()
    assert batch.column("log_status").to_pylist() == ["ok", "ok"]  # no "ok\r"
    assert [e.line for e in errors] == [4]
    assert results[-1].position["fields"][-1] == "log-status"  # header field names without "\r"
    assert results[-1].position["offset"] == len(crlf)

    # header-less v2 (CloudWatch style) with CRLF and a bad value line
    data = (_v2(srcport="1") + "\r\n" + _v2(srcport="x") + "\r\n" + _v2(srcport="2") + "\r\n").encode()
    _, batch, errors = parse_all(data)
    assert batch.column("src_port").to_pylist() == [1, 2]
    assert batch.column("log_status").to_pylist() == ["ok", "ok"]
    assert [e.line for e in errors] == [2]


def test_no_trailing_newline():
    data = (_v2(srcport="1") + "\n" + _v2(srcport="2")).encode()
    results, batch, errors = parse_all(data)
    assert errors == []
    assert batch.column("src_port").to_pylist() == [1, 2]
    assert results[-1].position == {"offset": len(data), "line": 2, "fields": list(F.V2_FIELDS)}
    assert sum(r.lines for r in results) == 2
    # a bad last line without newline is reported on its line
    _, batch, errors = parse_all((_v2(srcport="1") + "\n" + _v2(srcport="x")).encode())
    assert batch.num_rows == 1 and [e.line for e in errors] == [2]


@pytest.mark.parametrize("chunks", [[], [b""], [b"", b""]])
def test_empty_input(chunks):
    results = list(parse_text(chunks, unit="u", source="s"))
    assert len(results) == 1
    (r,) = results
    assert r.final and r.batch.num_rows == 0 and r.errors == [] and r.lines == 0
    assert r.batch.schema == SCHEMA
    assert r.position == {"offset": 0, "line": 0, "fields": list(F.V2_FIELDS)}


def test_header_only_input():
    data = f"{V2_HEADER}\n".encode()
    results, batch, errors = parse_all(data)
    assert batch.num_rows == 0 and errors == []
    assert results[-1].position == {"offset": len(data), "line": 1, "fields": list(F.V2_FIELDS)}


def test_blank_line_between_objects():
    # FORMATS.md/README: a header may come after a blank line (concatenated objects).
    data = DOCS_V2_LINE + b"\n" + f"{V2_HEADER}\n".encode() + DOCS_V2_LINE + _v2(srcport="x").encode() + b"\n"
    _, batch, errors = parse_all(data)
    assert batch.num_rows == 2
    assert [e.line for e in errors] == [5]


@pytest.mark.parametrize(
    ("data", "lines", "nrows"),
    [
        # pyarrow's InvalidRow.number counts non-empty rows; line numbers must still count blank lines.
        # 1 blank, 2 'a b c', 3 bad port, 4 good -> errors on 2 and 3
        (b"\n" + b"a b c\n" + _v2(srcport="x").encode() + b"\n" + _v2().encode() + b"\n", [2, 3], 1),
        # 1 good, 2 blank, 3 good, 4 'a b' -> error on 4
        (_v2().encode() + b"\n\n" + _v2().encode() + b"\na b\n", [4], 2),
        # blank lines with CR, a line of spaces (nothing to deliver, not an error), then a bad line
        (b"\r\n\r\n" + _v2().encode() + b"\r\n   \r\n" + _v2(proto="256").encode() + b"\r\n", [5], 1),
    ],
)
def test_blank_lines_do_not_shift_error_line_numbers(data, lines, nrows):
    _, batch, errors = parse_all(data)
    assert [e.line for e in errors] == lines
    assert batch.num_rows == nrows


# ---------------------------------------------------------------------------------------------------------------
# Regressions: bugs found by these tests (and hypothesis), fixed in parse.py / schema.py / jsonl.py
# ---------------------------------------------------------------------------------------------------------------


def test_regression_invalid_utf8_garbage_line_raises():
    data = b"\xff\xfe garbage\n" + _v2().encode() + b"\n"
    _, batch, errors = parse_all(data)
    assert batch.num_rows == 1 and [e.line for e in errors] == [1]


def test_regression_invalid_utf8_in_accepted_row():
    data = _v2().replace("eni-102010ab", "eni-\udcff").encode("utf-8", "surrogateescape") + b"\n"
    data += _v2(srcport="1").encode() + b"\n"
    _, batch, errors = parse_all(data)
    batch.validate(full=True)  # either the line is an error or its text is valid UTF-8
    dumps_batch(batch)
    assert batch.num_rows + len(errors) == 2


def test_regression_lone_carriage_return_raises():
    data = b"junk\rmore junk\n" + _v2().encode() + b"\n" + _v2(srcport="x").encode() + b"\n"
    _, batch, errors = parse_all(data)
    assert batch.num_rows == 1
    assert 3 in [e.line for e in errors]


def test_regression_rescued_row_keeps_input_order():
    data = (_v2(srcport="1").replace(" 49152 ", "  49152 ") + "\n" + _v2(srcport="2") + "\n").encode()
    _, batch, errors = parse_all(data)
    assert errors == []
    assert batch.column("src_port").to_pylist() == [1, 2]


@pytest.mark.parametrize(
    "line",
    [
        _v2().replace("2 ", "-5 ", 1),  # version -5: row alone, error next to a bad line
        _v2().replace(" 10 840 ", " 1000000000000000000 840 "),  # 10^18 packets: row alone, error next to a bad line
    ],
)
def test_regression_integer_validation_depends_on_neighbours(line):
    _, alone, alone_errors = parse_all((line + "\n").encode())
    _, mixed, mixed_errors = parse_all((line + "\n" + _v2(srcport="x") + "\n").encode())
    assert (alone.num_rows, err_lines(alone_errors)) == (mixed.num_rows, err_lines(mixed_errors)[:-1])


def test_regression_int64_max_with_nulls_in_column():
    line = _v2().replace(" 10 840 ", " 9223372036854775807 840 ")
    nodata = "2 123456789010 eni-1a2b3c4d - - - - - - - 1431280876 1431280934 - NODATA"
    _, batch, errors = parse_all((line + "\n" + nodata + "\n").encode())
    assert errors == []
    assert batch.column("packets").to_pylist() == [9223372036854775807, None]


def test_regression_indented_header_depends_on_block_boundaries():
    line = _v2() + "\n"
    data = (line * 3 + " " + V2_HEADER + "\n" + line).encode()
    _, one, one_err = parse_all(data)
    _, small, small_err = parse_all(list(chunked(data, 7)), block_size=len(line) * 3)
    assert (one.num_rows, err_lines(one_err)) == (small.num_rows, err_lines(small_err))


# ---------------------------------------------------------------------------------------------------------------
# Streaming and resume
# ---------------------------------------------------------------------------------------------------------------


def _stream_input(repeat: int) -> bytes:
    """A few KiB mixing everything the block logic must carry across boundaries: header-less v2 lines (docs
    default-format examples incl. NODATA/SKIPDATA and IPv6), bad lines, a header that changes the field order to
    the docs v5 "traffic path" format, the flowlogs-reader V5 file (alphabetical v5 header + 'bogus line'),
    a switch back to v2 with the flowlogs-reader V2 records, and millisecond timestamps. No blank lines before
    bad lines and no double-space lines."""
    docs = (CONF / "raw/aws/awsdocs-x__default-format-examples.log").read_bytes()
    v5 = (CONF / "raw/aws/awsdocs-x__traffic-path-v5.log").read_bytes()
    fr5 = (CONF / "raw/aws/flowlogs-reader__V5_FILE.log").read_bytes()
    v2 = (CONF / "raw/aws/flowlogs-reader__V2_RECORDS_plus_bogus.log").read_bytes()
    ms = (CONF / "raw/aws/flowlogs-reader__millisecond_timestamp.log").read_bytes()
    parts = []
    for i in range(repeat):
        parts += [
            docs,
            (_v2(srcport=str(i)) + "\n").encode(),
            (_v2(srcport="x") + "\n").encode(),
            v5,
            fr5,
            f"{V2_HEADER}\n".encode(),
            v2,
            ms,
            (_v2(proto="300") + "\n").encode(),
        ]
    data = b"".join(parts)
    assert b"  " not in data
    return data


STREAM = _stream_input(12)
RESUME_STREAM = _stream_input(3)  # resuming from every position is quadratic: a shorter input


def _rows_and_errors(results: list[ParseResult]) -> tuple[list[dict], list[tuple]]:
    rows = [row for r in results for row in r.batch.to_pylist()]
    # The reason's wording may depend on the block's parse path ("invalid value 300" vs "'300'"), so compare the
    # location and the field the reason names.
    errors = [(e.unit, e.line, e.reason.split(":")[0]) for r in results for e in r.errors]
    return rows, errors


@pytest.fixture(scope="module")
def stream_reference():
    results = list(parse_text([STREAM], unit="u", source="s"))
    assert len(results) == 1  # smaller than the default block
    rows, errors = _rows_and_errors(results)
    assert len(rows) == 12 * (7 + 1 + 2 + 2 + 5 + 1) and len(errors) == 12 * 4
    return rows, errors


@pytest.mark.parametrize("chunk_size", [1, 7, 64 << 10])
@pytest.mark.parametrize("block_size", [200, 1000, 1 << 22])
def test_chunking_and_block_size_do_not_change_output(stream_reference, chunk_size, block_size):
    results = list(parse_text(chunked(STREAM, chunk_size), unit="u", source="s", block_size=block_size))
    assert _rows_and_errors(results) == stream_reference
    if block_size < len(STREAM) and chunk_size < len(STREAM):
        assert len(results) > 5
    assert results[-1].final and not any(r.final for r in results[:-1])
    offsets = [r.position["offset"] for r in results]
    lines = [r.position["line"] for r in results]
    assert offsets == sorted(offsets) and lines == sorted(lines)
    assert offsets[-1] == len(STREAM)
    assert lines[-1] == STREAM.count(b"\n") == sum(r.lines for r in results)
    for r in results:
        # every position is a line start: resuming there can never split a record
        assert (
            r.position["offset"] in (0, len(STREAM)) or STREAM[r.position["offset"] - 1 : r.position["offset"]] == b"\n"
        )
        assert r.position["line"] == STREAM.count(b"\n", 0, r.position["offset"])


@pytest.mark.parametrize("block_size", [200, 1000])
def test_resume_from_every_position(block_size):
    whole = _rows_and_errors(list(parse_text([RESUME_STREAM], unit="u", source="s")))
    results = list(parse_text(chunked(RESUME_STREAM, 7), unit="u", source="s", block_size=block_size))
    assert len(results) > 5
    per_result = [_rows_and_errors([r]) for r in results]
    assert ([x for p in per_result for x in p[0]], [x for p in per_result for x in p[1]]) == whole
    field_orders = set()
    before_rows: list[dict] = []
    before_errors: list[tuple] = []
    for r, (rows, errors) in zip(results, per_result, strict=True):
        before_rows += rows
        before_errors += errors
        resumed = list(
            parse_text(chunked(RESUME_STREAM, 7), unit="u", source="s", block_size=block_size, resume=r.position)
        )
        after_rows, after_errors = _rows_and_errors(resumed)
        assert before_rows + after_rows == whole[0], f"rows differ resuming at {r.position}"
        assert before_errors + after_errors == whole[1], f"errors differ resuming at {r.position}"
        assert resumed[-1].final and resumed[-1].position == results[-1].position
        field_orders.add(tuple(r.position["fields"]))
    # resume points were taken under all three field orders (v2 default, docs v5, flowlogs-reader V5)
    assert len(field_orders) == 3


def test_resume_position_restores_changed_header():
    # The header change happens before the resume point; the resumed parse must not see that header again.
    v5 = (CONF / "raw/aws/awsdocs-x__traffic-path-v5.log").read_bytes()
    header, line1, line2 = v5.splitlines(keepends=True)
    data = DOCS_V2_LINE + header + line1 + line2
    first = DOCS_V2_LINE + header + line1
    results = list(parse_text([first, line2], unit="u", source="s", block_size=1))
    assert len(results) >= 2
    # block_size=1: a block is one line (it ends at the first line end at or past block_size, whatever the chunks)
    mid = results[2].position
    assert mid == {"offset": len(first), "line": 3, "fields": header.decode().split()}
    resumed = list(parse_text([data], unit="u", source="s", resume=mid))
    (rest,) = [r for r in resumed if r.batch.num_rows]
    assert rest.batch.column("direction").to_pylist() == ["egress"]
    assert rest.batch.column("traffic_path").to_pylist() == [8]
    assert [e for r in resumed for e in r.errors] == []
    # resumed line numbers continue from the position's line
    bad = data + line2.replace(b" 80 6 ", b" http 6 ")
    resumed = list(parse_text([bad], unit="u", source="s", resume=mid))
    assert [e.line for r in resumed for e in r.errors] == [5]


def test_resume_at_end_gives_nothing():
    results = list(parse_text([STREAM], unit="u", source="s"))
    again = list(parse_text(chunked(STREAM, 4096), unit="u", source="s", resume=results[-1].position))
    assert len(again) == 1 and again[0].final and again[0].batch.num_rows == 0 and again[0].errors == []


# ---------------------------------------------------------------------------------------------------------------
# gzip (.log.gz S3 objects), decompressed as an adapter would: isal streaming reads
# ---------------------------------------------------------------------------------------------------------------


def _igzip_chunks(blob: bytes, size: int = 1000) -> Iterator[bytes]:
    with igzip.IGzipFile(fileobj=io.BytesIO(blob)) as f:
        while chunk := f.read(size):
            yield chunk


def test_gzip_streaming_equals_plain(stream_reference):
    blob = gzip.compress(STREAM)
    results = list(parse_text(_igzip_chunks(blob), unit="u", source="s", block_size=1000))
    assert _rows_and_errors(results) == stream_reference


def test_gzip_multi_member_concatenated_objects():
    # Two .log.gz objects concatenated byte-wise (each with its own header): a multi-member gzip stream.
    a = (CONF / "raw/aws/flowlogs-reader__V5_FILE.log").read_bytes()
    b = (CONF / "raw/aws/awsdocs-x__tcp-flag-sequence.log").read_bytes()
    blob = gzip.compress(a) + gzip.compress(b)
    _, plain, plain_errors = parse_all(a + b)
    results, batch, errors = parse_all(list(_igzip_chunks(blob, 64)))
    assert batch.to_pylist() == plain.to_pylist() and batch.num_rows == 2 + 8
    assert err_lines(errors) == err_lines(plain_errors) == [4]


# ---------------------------------------------------------------------------------------------------------------
# Parquet
# ---------------------------------------------------------------------------------------------------------------

PARQUET_TYPES = {
    # FORMATS.md: ports/protocol/tcp-flags/traffic-path/version INT32, packets/bytes/start/end INT64, the rest STRING;
    # column names use underscores.
    "version": pa.int32(),
    "account_id": pa.string(),
    "interface_id": pa.string(),
    "srcaddr": pa.string(),
    "dstaddr": pa.string(),
    "srcport": pa.int32(),
    "dstport": pa.int32(),
    "protocol": pa.int32(),
    "packets": pa.int64(),
    "bytes": pa.int64(),
    "start": pa.int64(),
    "end": pa.int64(),
    "action": pa.string(),
    "log_status": pa.string(),
    "tcp_flags": pa.int32(),
    "flow_direction": pa.string(),
}


def _parquet_table(rows: list[tuple]) -> pa.Table:
    cols = list(zip(*rows, strict=True)) or [()] * len(PARQUET_TYPES)
    return pa.table({name: pa.array(cols[i], t) for i, (name, t) in enumerate(PARQUET_TYPES.items())})


PARQUET_ROWS = [
    # AWS docs default-format record 1, plus tcp-flags and flow-direction
    (5, "123456789010", "eni-1235b8ca123456789", "172.31.16.139", "172.31.16.21", 20641, 22, 6, 20, 4249,
     1418530010, 1418530070, "ACCEPT", "OK", 2, "ingress"),
    # AWS docs IPv6 record
    (5, "123456789010", "eni-1235b8ca123456789", "2001:db8:1234:a100:8d6e:3477:df66:f105",
     "2001:db8:1234:a102:3304:8879:34cf:4071", 34892, 22, 6, 54, 8855, 1477913708, 1477913820, "REJECT", "OK", 18,
     "egress"),
    # AWS docs NODATA record: nulls where the text has "-"
    (5, "123456789010", "eni-1235b8ca123456789", None, None, None, None, None, None, None, 1431280876, 1431280934,
     None, "NODATA", None, None),
    # bad address
    (5, "123456789010", "eni-1235b8ca123456789", "172.31.16.999", "172.31.16.21", 1, 2, 6, 1, 1, 1418530010,
     1418530070, "ACCEPT", "OK", 0, "ingress"),
    # millisecond start/end
    (5, "123456789010", "eni-1", "10.0.0.1", "10.0.0.2", 3, 4, 17, 1, 100, 1512564058123, 1512564059000,
     "ACCEPT", "OK", None, "egress"),
]  # fmt: skip


def _write_parquet(path: Path, table: pa.Table, row_group_size: int | None = None) -> Path:
    pq.write_table(table, path, row_group_size=row_group_size)
    return path


def test_parquet_fields(tmp_path):
    path = _write_parquet(tmp_path / "flows.parquet", _parquet_table(PARQUET_ROWS))
    results = list(parse_parquet(str(path), unit="obj.parquet", source="pq"))
    assert results[-1].final and results[-1].batch.num_rows == 0
    assert results[-1].position == {"rows": 5}
    rows = [row for r in results for row in r.batch.to_pylist()]
    errors = [e for r in results for e in r.errors]
    assert [(e.unit, e.line) for e in errors] == [("obj.parquet", 4)]
    assert "srcaddr" in errors[0].reason and "172.31.16.999" in errors[0].reason
    assert len(rows) == 4
    a, b, c, d = rows
    assert a == {
        "time_start": datetime(2014, 12, 14, 4, 6, 50, tzinfo=UTC),
        "time_end": datetime(2014, 12, 14, 4, 7, 50, tzinfo=UTC),
        "provider": "aws",
        "source": "pq",
        "account": "123456789010",
        "region": None,
        "zone": None,
        "vpc": None,
        "subnet": None,
        "interface": "eni-1235b8ca123456789",
        "instance": None,
        "src_addr": addr("00000000000000000000ffffac1f108b"),
        "dst_addr": addr("00000000000000000000ffffac1f1015"),
        "src_port": 20641,
        "dst_port": 22,
        "protocol": 6,
        "packets": 20,
        "bytes": 4249,
        "action": "accept",
        "direction": "ingress",
        "tcp_flags": 2,
        "log_status": "ok",
        "sampling_rate": 1,
        "flow_state": None,
        "reporter": None,
        "pkt_src_addr": None,
        "pkt_dst_addr": None,
        "traffic_path": None,
        "reject_reason": None,
        "extra": [("version", "5")],
    }
    assert b["src_addr"] == addr("20010db81234a1008d6e3477df66f105")
    assert b["dst_addr"] == addr("20010db81234a1023304887934cf4071")
    assert (b["action"], b["direction"], b["tcp_flags"]) == ("reject", "egress", 18)
    assert b["time_start"] == datetime(2016, 10, 31, 11, 35, 8, tzinfo=UTC)
    assert c["log_status"] == "nodata"
    for col in ("src_addr", "dst_addr", "src_port", "dst_port", "protocol", "packets", "bytes", "action",
                "tcp_flags", "direction"):  # fmt: skip
        assert c[col] is None, col
    assert c["time_start"] == datetime(2015, 5, 10, 18, 1, 16, tzinfo=UTC)
    assert d["time_start"] == ts(2017, 12, 6, 12, 40, 58, ms=123)
    assert d["protocol"] == 17 and d["tcp_flags"] is None


def _numbered_rows(n: int, bad: set[int]) -> list[tuple]:
    out = []
    for i in range(n):
        src = "10.0.0.999" if i in bad else f"10.0.{i // 256}.{i % 256}"
        out.append((5, "123456789010", "eni-1", src, "10.1.0.1", 1000 + i, 443, 6, 1, 100, 1418530010,
                    1418530070, "ACCEPT", "OK", 2, "ingress"))  # fmt: skip
    return out


def _parquet_outcome(
    path: Path, resume: dict | None, batch_rows: int
) -> tuple[list[int], list[int], list[ParseResult]]:
    results = list(parse_parquet(str(path), unit="p", source="s", resume=resume, batch_rows=batch_rows))
    ports = [p for r in results for p in r.batch.column("src_port").to_pylist()]
    return ports, [e.line for r in results for e in r.errors], results


@pytest.mark.parametrize("batch_rows", [2, 3, 1000])
def test_parquet_resume_skips_exactly_k_rows(tmp_path, batch_rows):
    n, bad = 12, {1, 7}
    path = _write_parquet(tmp_path / "f.parquet", _parquet_table(_numbered_rows(n, bad)), row_group_size=3)
    assert pq.ParquetFile(path).num_row_groups == 4
    for k in range(n + 1):
        ports, lines, results = _parquet_outcome(path, {"rows": k} if k else None, batch_rows)
        assert ports == [1000 + i for i in range(k, n) if i not in bad], k
        assert lines == [i + 1 for i in sorted(bad) if i >= k], k
        assert results[-1].final and results[-1].position == {"rows": n}
        positions = [r.position["rows"] for r in results]
        assert positions == sorted(positions)
        assert k == n or positions[0] > k


def test_regression_parquet_resume_with_smaller_last_row_group(tmp_path):
    n = 10  # row groups 3, 3, 3, 1
    path = _write_parquet(tmp_path / "f.parquet", _parquet_table(_numbered_rows(n, set())), row_group_size=3)
    got = {k: _parquet_outcome(path, {"rows": k}, 2)[0] for k in range(n + 1)}
    assert got == {k: [1000 + i for i in range(k, n)] for k in range(n + 1)}


def test_parquet_empty_file(tmp_path):
    path = _write_parquet(tmp_path / "e.parquet", _parquet_table([]).slice(0, 0))
    results = list(parse_parquet(str(path), unit="p", source="s"))
    assert len(results) == 1 and results[0].final and results[0].batch.num_rows == 0
    assert results[0].position == {"rows": 0}


# ---------------------------------------------------------------------------------------------------------------
# Property-based: garbage mixed with valid lines
# ---------------------------------------------------------------------------------------------------------------

_KNOWN = F.KNOWN_FIELDS


def _is_header_like(line: str) -> bool:
    # A line whose first token is a known field name is an S3 header (FORMATS.md): not garbage, it changes the
    # field order. Those are excluded from the garbage.
    first = line.lstrip(" \t").replace("\t", " ").split(" ", 1)[0]
    return first in _KNOWN


# Text without line breaks: "\n" ends a line; a lone "\r" makes pyarrow split one line into two rows (so one line
# may give two errors: covered by test_regression_lone_carriage_return_raises, not here). Surrogates are not
# encodable; invalid UTF-8 has its own regression tests.
_line_chars = st.characters(blacklist_categories=("Cs",), blacklist_characters="\n\r")
_TOKEN_POOL = (
    "-", "2", "0", "65535", "65536", "ACCEPT", "REJECT", "OK", "NODATA", "SKIPDATA", "eni-1", "10.0.0.1", "::1",
    "1.2.3", "999999999999999999999999", "-1", "1e3", "0x10", "\u00e9t\u00e9", "\U0001f600", "\x00", "\t", "",
)  # fmt: skip
_tokens = st.one_of(
    st.sampled_from(_TOKEN_POOL),
    st.integers(min_value=-(2**70), max_value=2**70).map(str),
    st.text(_line_chars, min_size=1, max_size=12).filter(lambda s: " " not in s),
)
_garbage = st.one_of(
    st.text(_line_chars, min_size=1, max_size=80),
    st.lists(_tokens, min_size=1, max_size=20).map(" ".join),
    st.lists(_tokens, min_size=14, max_size=14).map(" ".join),  # right field count, random values
    # binary noise, as valid UTF-8 (undecodable bytes: see the invalid-UTF-8 regression tests)
    st.binary(min_size=1, max_size=60).map(lambda b: b.decode("utf-8", "replace")),
).filter(lambda s: s.strip() != "" and "\n" not in s and "\r" not in s and not _is_header_like(s))


@st.composite
def _valid(draw) -> tuple[str, dict]:
    nodata = draw(st.booleans()) and draw(st.booleans())
    account = draw(st.from_regex(r"\A[0-9]{12}\Z"))
    start = draw(st.one_of(st.integers(0, 2**31), st.integers(2**31 + 1, 4102444800000)))
    end = draw(st.one_of(st.integers(0, 2**31), st.integers(2**31 + 1, 4102444800000)))
    if nodata:
        status = draw(st.sampled_from(["NODATA", "SKIPDATA"]))
        return f"2 {account} ENI {'- ' * 7}{start} {end} - {status}", {
            "account": account, "src_addr": None, "dst_addr": None, "src_port": None, "dst_port": None,
            "protocol": None, "packets": None, "bytes": None, "start": start if start > 2**31 else start * 1000,
            "end": end if end > 2**31 else end * 1000, "action": None, "log_status": status.lower(),
        }  # fmt: skip
    src = draw(st.ip_addresses())
    dst = draw(st.ip_addresses())
    sp, dp = draw(st.integers(0, 65535)), draw(st.integers(0, 65535))
    proto = draw(st.integers(0, 255))
    packets, nbytes = draw(st.integers(0, 2**63 - 1)), draw(st.integers(0, 2**63 - 1))
    action = draw(st.sampled_from(["ACCEPT", "REJECT"]))
    line = f"2 {account} ENI {src} {dst} {sp} {dp} {proto} {packets} {nbytes} {start} {end} {action} OK"
    return line, {
        "account": account, "src_addr": str(src), "dst_addr": str(dst), "src_port": sp, "dst_port": dp,
        "protocol": proto, "packets": packets, "bytes": nbytes, "start": start if start > 2**31 else start * 1000,
        "end": end if end > 2**31 else end * 1000, "action": action.lower(), "log_status": "ok",
    }  # fmt: skip


def _canon_addr(text: str | None) -> str | None:
    if text is None:
        return None
    ip = ipaddress.ip_address(text)
    if ip.version == 6 and ip.ipv4_mapped is not None:
        return str(ip.ipv4_mapped)
    return str(ip)


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    items=st.lists(
        st.one_of(st.tuples(st.just("valid"), _valid()), st.tuples(st.just("garbage"), _garbage)), max_size=25
    ),  # fmt: skip
    block_size=st.sampled_from([150, 600, 1 << 22]),
    chunk=st.sampled_from([3, 50, 1 << 16]),
)
def test_property_garbage_never_breaks_valid_lines(items, block_size, chunk):
    lines, expected, garbage_lines = [], {}, []
    for n, (kind, value) in enumerate(items, start=1):
        if kind == "valid":
            text, exp = value
            eni = f"eni-v{n:05d}"  # marks the row as coming from line n
            lines.append(text.replace("ENI", eni))
            expected[eni] = exp
        else:
            lines.append(value)
            garbage_lines.append(n)
    data = "".join(line + "\n" for line in lines).encode()

    results = list(parse_text(chunked(data, chunk), unit="g", source="s", block_size=block_size))
    rows = [row for r in results for row in _plain_rows(r.batch)]
    errors = [e for r in results for e in r.errors]
    assert results[-1].final and results[-1].position["offset"] == len(data)
    assert results[-1].position["line"] == len(lines)

    valid_rows = [r for r in rows if r["interface"] in expected]
    garbage_rows = [r for r in rows if r["interface"] not in expected]
    # every valid line yields exactly its row
    assert sorted(r["interface"] for r in valid_rows) == sorted(expected)
    for r in valid_rows:
        exp = expected[r["interface"]]
        got = {k: r[k] for k in exp}
        assert got == {**exp, "src_addr": _canon_addr(exp["src_addr"]), "dst_addr": _canon_addr(exp["dst_addr"])}
    # every garbage line yields an error on its own line, or (if it happens to be valid) a row
    error_lines = [e.line for e in errors]
    assert len(set(error_lines)) == len(error_lines)
    assert set(error_lines) <= set(garbage_lines)
    assert len(errors) + len(garbage_rows) == len(garbage_lines)
    assert all(e.unit == "g" for e in errors)


def _plain_rows(batch: pa.RecordBatch) -> list[dict]:
    """Rows with times as int64 ms and addresses as canonical text."""
    cols = {}
    for name in batch.schema.names:
        col = batch.column(name)
        if name in ("time_start", "time_end"):
            cols[name.removeprefix("time_")] = col.cast(pa.int64()).to_pylist()
        elif name in ("src_addr", "dst_addr"):
            cols[name] = [_canon_addr(None if v is None else str(ipaddress.IPv6Address(v))) for v in col.to_pylist()]
        elif name == "extra":
            continue
        else:
            cols[name] = col.to_pylist()
    return [{k: v[i] for k, v in cols.items()} for i in range(batch.num_rows)]


class _ReadsCounted(io.RawIOBase):
    """A seekable file over bytes that records each read's size and can fail like a network after `fail_after`
    reads: what an S3 object (adapters/aws/s3io.py) looks like to the parser."""

    def __init__(self, data: bytes, fail_after: int | None = None) -> None:
        self.data, self.pos, self.reads, self.fail_after = data, 0, [], fail_after

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def seek(self, offset: int, whence: int = 0) -> int:
        self.pos = offset if whence == 0 else self.pos + offset if whence == 1 else len(self.data) + offset
        return self.pos

    def tell(self) -> int:
        return self.pos

    def readinto(self, buffer) -> int:
        if self.fail_after is not None and len(self.reads) >= self.fail_after:
            raise ConnectionResetError("connection reset by peer")
        chunk = self.data[self.pos : self.pos + len(buffer)]
        buffer[: len(chunk)] = chunk
        self.pos += len(chunk)
        self.reads.append(len(chunk))
        return len(chunk)


def _big_parquet() -> bytes:
    n = 200_000
    table = pa.table(
        {"srcaddr": ["10.0.0.1"] * n, "dstaddr": ["10.0.0.2"] * n, "bytes": pa.array(range(n), pa.int64())}
    )
    out = io.BytesIO()
    pq.write_table(table, out, row_group_size=20_000)
    return out.getvalue()


def test_parquet_is_read_a_column_chunk_at_a_time():
    """Memory stays bounded for a remote Parquet object: no read covers more than a row group's column chunk."""
    data = _big_parquet()
    f = _ReadsCounted(data)
    rows = sum(r.batch.num_rows for r in parse_parquet(f, unit="u", source="s"))
    assert rows == 200_000
    assert max(f.reads) < len(data) / 5  # pre-buffering would read all row groups at once


def test_parquet_read_failure_fails_the_unit_instead_of_finishing_it():
    """A network error in the middle is not "damaged Parquet": finishing the unit would checkpoint it as done and
    lose its remaining rows. The error propagates so the adapter retries the object."""
    f = _ReadsCounted(_big_parquet(), fail_after=20)
    results = parse_parquet(f, unit="u", source="s")
    delivered = 0
    with pytest.raises(ConnectionResetError):
        for r in results:
            assert not r.final
            delivered += r.batch.num_rows
    assert 0 < delivered < 200_000
