"""collector/jsonl.py: dumps_batch output equals a per-row reference built from batch.to_pylist()."""

from __future__ import annotations

import ipaddress
from datetime import UTC, datetime
from pathlib import Path

import orjson
import pyarrow as pa
import pytest

from adapters.aws import fields as F
from adapters.aws.parse import normalize, parse_parquet, parse_text
from collector.jsonl import dumps_batch, format_time_ms
from collector.schema import ADDRESS_COLUMNS, COLUMNS, SCHEMA, TIME_COLUMNS, address_bytes, assemble, empty_batch

CONF = Path(__file__).parent / "fixtures" / "conformance"
RAW = sorted((CONF / "raw" / "aws").glob("*.log"))


# ---------------------------------------------------------------------------------------------------------------
# Reference: one row at a time, from Python objects
# ---------------------------------------------------------------------------------------------------------------


def _time_text(v: datetime | None) -> str | None:
    if v is None:
        return None
    v = v.astimezone(UTC)
    return f"{v.year:04d}-{v.month:02d}-{v.day:02d}T{v.hour:02d}:{v.minute:02d}:{v.second:02d}.{v.microsecond // 1000:03d}Z"


def _addr_text(v: bytes | None) -> str | None:
    if v is None:
        return None
    ip = ipaddress.IPv6Address(v)
    return str(ip.ipv4_mapped) if ip.ipv4_mapped is not None else str(ip)


def reference(batch: pa.RecordBatch) -> list[dict]:
    out = []
    for row in batch.to_pylist():
        obj = {}
        for name in COLUMNS:
            v = row[name]
            if name in TIME_COLUMNS:
                v = _time_text(v)
            elif name in ADDRESS_COLUMNS:
                v = _addr_text(v)
            elif name == "extra":
                v = {} if v is None else dict(v)
            obj[name] = v
        out.append(obj)
    return out


def assert_matches_reference(batch: pa.RecordBatch) -> list[dict]:
    view = dumps_batch(batch)  # bytes or a zero-copy memoryview on Arrow's buffer
    out = bytes(view)
    assert len(out) == memoryview(view).nbytes
    if batch.num_rows == 0:
        assert out == b""
        return []
    assert out.endswith(b"\n")
    lines = out.split(b"\n")[:-1]
    assert len(lines) == batch.num_rows  # no raw newline inside a record: control characters are escaped
    objs = [orjson.loads(line) for line in lines]
    for obj in objs:
        assert list(obj) == list(COLUMNS)  # every column, in schema order
    assert objs == reference(batch)
    return objs


def parse(data: bytes, **kw) -> pa.RecordBatch:
    batches = [r.batch for r in parse_text([data], unit="u", source="src", **kw)]
    return pa.concat_batches(batches)


# ---------------------------------------------------------------------------------------------------------------
# Batches from the fixtures
# ---------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("path", RAW, ids=[p.name for p in RAW])
def test_conformance_inputs(path):
    batch = parse(path.read_bytes())
    objs = assert_matches_reference(batch)
    assert len(objs) == batch.num_rows


def test_all_conformance_inputs_in_one_batch_and_slices():
    batch = pa.concat_batches([parse(p.read_bytes()) for p in RAW])
    assert batch.num_rows > 30
    assert_matches_reference(batch)
    # slices have non-zero offsets in every column (and in the map's offsets)
    for start, length in [(1, 5), (7, 1), (3, batch.num_rows - 3), (batch.num_rows - 1, 1)]:
        assert_matches_reference(batch.slice(start, length))
    # a filtered batch (what the parser does with bad rows)
    mask = pa.array([i % 3 != 1 for i in range(batch.num_rows)])
    assert_matches_reference(batch.filter(mask))


def test_literal_values_docs_default_line():
    # AWS docs default-format example record 1 and the IPv6 record, NODATA record.
    batch = parse(
        b"2 123456789010 eni-1235b8ca123456789 172.31.16.139 172.31.16.21 20641 22 6 20 4249 1418530010 1418530070 "
        b"ACCEPT OK\n"
        b"2 123456789010 eni-1235b8ca123456789 2001:db8:1234:a100:8d6e:3477:df66:f105 "
        b"2001:db8:1234:a102:3304:8879:34cf:4071 34892 22 6 54 8855 1477913708 1477913820 ACCEPT OK\n"
        b"2 123456789010 eni-1235b8ca123456789 - - - - - - - 1431280876 1431280934 - NODATA\n"
    )
    first, ipv6, nodata = assert_matches_reference(batch)
    assert first == {
        "time_start": "2014-12-14T04:06:50.000Z",
        "time_end": "2014-12-14T04:07:50.000Z",
        "provider": "aws",
        "source": "src",
        "account": "123456789010",
        "region": None,
        "zone": None,
        "vpc": None,
        "subnet": None,
        "interface": "eni-1235b8ca123456789",
        "instance": None,
        "src_addr": "172.31.16.139",
        "dst_addr": "172.31.16.21",
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
        "extra": {"version": "2"},
    }
    assert (ipv6["src_addr"], ipv6["dst_addr"]) == (
        "2001:db8:1234:a100:8d6e:3477:df66:f105",
        "2001:db8:1234:a102:3304:8879:34cf:4071",
    )
    assert nodata["log_status"] == "nodata" and nodata["src_addr"] is None and nodata["packets"] is None
    assert nodata["time_start"] == "2015-05-10T18:01:16.000Z"


def test_strings_needing_escaping():
    # Synthetic: a custom header (v2 + unknown fields, kept in `extra`) whose values need JSON escaping: quotes,
    # backslashes, control characters (tab is not a field separator for the single-space split), NUL, DEL,
    # non-ASCII, U+2028; one header name itself needs escaping. Text fields with columns of their own (account,
    # interface) and a dictionary column (source: `action` holds only ACCEPT/REJECT since issue #10) carry some
    # too. No value contains a space (the field separator).
    values = {
        "x-quote": 'say"hi"',
        "x-backslash": "C:\\path\\",
        "x-control": "tab\there\x01\x1f\x00end\x7f",
        "x-unicode": "h\u00e9llo-\u65e5\u672c-\U0001f600-\u2028",
        'x-"key"\\': "v",
    }
    # Built by the normalizer directly: the text parser rejects lines holding control or non-ASCII bytes (issue
    # #10), but the encoder must still escape whatever a column holds (Parquet strings may be any UTF-8).
    names = [*F.V2_FIELDS, *values]
    tokens = [
        "2",
        '"acct"\\1',
        'eni-é\\"x"',
        "10.0.0.1",
        "10.0.0.2",
        "1",
        "2",
        "6",
        "1",
        "1",
        "1418530010",
        "1418530070",
        "ACCEPT",
        "OK",
    ]
    cols = {n: pa.array([v], pa.string()) for n, v in zip(names, [*tokens, *values.values()], strict=True)}
    batch, bad = normalize(cols, 1, 'src"\\')
    assert bad is None and batch.num_rows == 1
    (obj,) = assert_matches_reference(batch)
    assert obj["account"] == '"acct"\\1'
    assert obj["interface"] == 'eni-\u00e9\\"x"'
    assert (obj["source"], obj["action"]) == ('src"\\', "accept")
    assert obj["extra"] == {"version": "2", **values}


def test_hand_built_batch_nulls_times_extremes():
    ts_type = SCHEMA.field("time_start").type
    extra = pa.array([None, [("k", "v")], [], None], SCHEMA.field("extra").type)
    batch = assemble(
        4,
        {
            "time_start": pa.array([-1, 0, 1512564058123, None], pa.int64()).cast(ts_type),
            "time_end": pa.array([999, 253402300799999, None, 1], pa.int64()).cast(ts_type),
            "packets": pa.array([2**64 - 1, 0, None, 1], pa.uint64()),
            "src_port": pa.array([65535, 0, None, 1], pa.uint16()),
            "src_addr": pa.array(
                [address_bytes(a) for a in ("::", "::ffff:0.0.0.0", "2001:db8::1")] + [None], pa.binary(16)
            ),
            "dst_addr": pa.array([address_bytes("255.255.255.255"), address_bytes("::1"), None, None], pa.binary(16)),
            "extra": extra,
        },
    )
    objs = assert_matches_reference(batch)
    assert [o["time_start"] for o in objs] == [
        "1969-12-31T23:59:59.999Z",
        "1970-01-01T00:00:00.000Z",
        "2017-12-06T12:40:58.123Z",
        None,
    ]
    assert objs[1]["time_end"] == "9999-12-31T23:59:59.999Z"
    assert [o["packets"] for o in objs] == [18446744073709551615, 0, None, 1]
    assert [o["src_addr"] for o in objs] == ["::", "0.0.0.0", "2001:db8::1", None]
    assert [o["dst_addr"] for o in objs] == ["255.255.255.255", "::1", None, None]
    assert [o["extra"] for o in objs] == [{}, {"k": "v"}, {}, {}]
    assert all(o["provider"] is None for o in objs)


def test_parquet_batch():
    # A Parquet-parsed batch (INT32/INT64 source columns) renders like a text-parsed one.
    import io

    import pyarrow.parquet as pq

    table = pa.table(
        {
            "version": pa.array([5, 5], pa.int32()),
            "account_id": ["123456789010", None],
            "srcaddr": ["2001:db8::5", "10.0.0.1"],
            "srcport": pa.array([443, None], pa.int32()),
            "start": pa.array([1616729292, 1512564058123], pa.int64()),
            "log_status": ["OK", "NODATA"],
        }
    )
    buf = io.BytesIO()
    pq.write_table(table, buf)
    buf.seek(0)
    batches = [r.batch for r in parse_parquet(buf, unit="p", source="pq")]
    objs = assert_matches_reference(pa.concat_batches(batches))
    assert [o["src_addr"] for o in objs] == ["2001:db8::5", "10.0.0.1"]
    assert [o["time_start"] for o in objs] == ["2021-03-26T03:28:12.000Z", "2017-12-06T12:40:58.123Z"]
    assert [o["account"] for o in objs] == ["123456789010", None]


@pytest.mark.parametrize(
    "batch",
    [
        empty_batch(),
        next(iter(parse_text([b""], unit="u", source="s"))).batch,
        assemble(1, {"account": pa.array(["x"])}).slice(1, 0),
    ],
    ids=["empty_batch", "parsed-empty", "sliced-empty"],
)
def test_empty_batch(batch):
    assert batch.num_rows == 0
    assert bytes(dumps_batch(batch)) == b""


@pytest.mark.parametrize(
    ("ms", "text"),
    [
        (0, "1970-01-01T00:00:00.000Z"),
        (1, "1970-01-01T00:00:00.001Z"),
        (-1, "1969-12-31T23:59:59.999Z"),
        (1418530010000, "2014-12-14T04:06:50.000Z"),
        (1512564058123, "2017-12-06T12:40:58.123Z"),
        (253402300799999, "9999-12-31T23:59:59.999Z"),
    ],
)
def test_format_time_ms(ms, text):
    assert format_time_ms(ms) == text


# ---------------------------------------------------------------------------------------------------------------
# Regressions: bugs found by these tests, fixed
# ---------------------------------------------------------------------------------------------------------------


def test_regression_time_beyond_year_9999_breaks_dumps_batch():
    line = b"2 123456789010 eni-1 10.0.0.1 10.0.0.2 1 2 6 1 1 253402300800000 1418530070 ACCEPT OK\n"
    batch = parse(line + line.replace(b"253402300800000", b"1418530010"))
    out = bytes(dumps_batch(batch))  # either the line is rejected by the parser or the batch renders
    assert len(out.splitlines()) == batch.num_rows


def test_regression_ipv4_compatible_address_text():
    batch = assemble(1, {"src_addr": pa.array([address_bytes("::2:3")], pa.binary(16))})
    (obj,) = (orjson.loads(line) for line in bytes(dumps_batch(batch)).splitlines())
    assert obj["src_addr"] == "::2:3"


def test_regression_null_map_with_hidden_entries():
    extra = pa.MapArray.from_arrays(
        pa.array([0, 1, 2], pa.int32()), pa.array(["k1", "k2"]), pa.array(["v1", "v2"]), mask=pa.array([True, False])
    )
    assert extra.to_pylist() == [None, [("k2", "v2")]]
    batch = assemble(2, {"extra": extra})
    assert [orjson.loads(line)["extra"] for line in bytes(dumps_batch(batch)).splitlines()] == [{}, {"k2": "v2"}]
