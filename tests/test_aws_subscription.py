"""CloudWatch Logs subscription payloads (Firehose to S3) and exported event lines (adapters/aws/subscription.py):
hand-checked fields, sameness with the text parser, CONTROL_MESSAGE, errors and where they are, resume from every
position, chunking independence, and the sniffers.

Inputs are the files of tests/fixtures/aws/subscription (provenance in its README) or literal documents written
here, each with a comment saying what it stands for.
"""

from __future__ import annotations

import gzip
import io
import json
from collections.abc import Iterable, Iterator
from datetime import UTC, datetime
from pathlib import Path

import pyarrow as pa
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from adapters.aws import subscription as sub
from adapters.aws.parse import ParseResult, parse_text
from adapters.aws.subscription import (
    looks_like_message_lines,
    looks_like_subscription,
    parse_message_lines,
    parse_subscription,
)
from collector.schema import SCHEMA, address_bytes

FIX = Path(__file__).parent / "fixtures" / "aws" / "subscription"
DATA_DOC = (FIX / "data-message.json").read_bytes()
CONTROL_DOC = (FIX / "control-message.json").read_bytes()
LINES = (FIX / "filter-log-events.jsonl").read_bytes()
RECORDS = [e["message"] for e in json.loads(DATA_DOC)["logEvents"]]
IDS = [e["id"] for e in json.loads(DATA_DOC)["logEvents"]]


def ts(*args: int) -> datetime:
    return datetime(*args, tzinfo=UTC)


def doc(messages: Iterable[str], *, ids: Iterable[str] | None = None, **extra) -> bytes:
    """A compact DATA_MESSAGE document as CloudWatch Logs hands it to Firehose (the documented keys)."""
    messages = list(messages)
    ids = list(ids) if ids is not None else [f"{i:056d}" for i in range(len(messages))]
    body = {
        "messageType": "DATA_MESSAGE",
        "owner": "123456789010",
        "logGroup": "vpc-flow-logs",
        "logStream": "eni-1235b8ca123456789-all",
        "subscriptionFilters": ["FlowLogsToFirehose"],
        "logEvents": [{"id": i, "timestamp": 1418530010000, "message": m} for i, m in zip(ids, messages, strict=True)],
    }
    body.update(extra)
    return json.dumps(body, separators=(",", ":")).encode()


def chunked(data: bytes, size: int) -> Iterator[bytes]:
    for i in range(0, len(data), size):
        yield data[i : i + size]


def run(parser, data: bytes | Iterable[bytes], **kw) -> list[ParseResult]:
    kw.setdefault("unit", "s3://b/firehose/obj")
    kw.setdefault("source", "fh")
    return list(parser([data] if isinstance(data, bytes) else data, **kw))


def rows_and_errors(results: list[ParseResult]) -> tuple[list[dict], list[tuple]]:
    rows = [row for r in results for row in r.batch.to_pylist()]
    errors = [(e.unit, e.line, e.reason, e.raw) for r in results for e in r.errors]
    return rows, errors


def text_rows(messages: Iterable[str], **kw) -> list[dict]:
    """What the AWS text parser makes of the same records as header-less lines."""
    data = "".join(m + "\n" for m in messages).encode()
    results = list(parse_text([data], unit="u", source=kw.get("source", "fh"), fields=kw.get("fields")))
    assert [e for r in results for e in r.errors] == []
    return [row for r in results for row in r.batch.to_pylist()]


# ---------------------------------------------------------------------------------------------------------------
# Fields, hand-checked (VPC User Guide default-format examples, see the fixture README)
# ---------------------------------------------------------------------------------------------------------------

# fmt: off
EXPECTED = [
    # (src, dst, src_port, dst_port, protocol, packets, bytes, start, end, action, log_status, interface)
    ("172.31.16.139", "172.31.16.21", 20641, 22, 6, 20, 4249, ts(2014, 12, 14, 4, 6, 50), ts(2014, 12, 14, 4, 7, 50), "accept", "ok", "eni-1235b8ca123456789"),
    ("172.31.9.69", "172.31.9.12", 49761, 3389, 6, 20, 4249, ts(2014, 12, 14, 4, 6, 50), ts(2014, 12, 14, 4, 7, 50), "reject", "ok", "eni-1235b8ca123456789"),
    (None, None, None, None, None, None, None, ts(2015, 5, 10, 18, 1, 16), ts(2015, 5, 10, 18, 2, 14), None, "nodata", "eni-1235b8ca123456789"),
    (None, None, None, None, None, None, None, ts(2015, 5, 10, 18, 1, 16), ts(2015, 5, 10, 18, 2, 14), None, "skipdata", "eni-11111111aaaaaaaaa"),
    ("203.0.113.12", "172.31.16.139", 0, 0, 1, 4, 336, ts(2015, 5, 29, 16, 30, 27), ts(2015, 5, 29, 16, 32, 22), "accept", "ok", "eni-1235b8ca123456789"),
    ("172.31.16.139", "203.0.113.12", 0, 0, 1, 4, 336, ts(2015, 5, 29, 16, 31, 34), ts(2015, 5, 29, 16, 32, 22), "reject", "ok", "eni-1235b8ca123456789"),
    ("2001:db8:1234:a100:8d6e:3477:df66:f105", "2001:db8:1234:a102:3304:8879:34cf:4071", 34892, 22, 6, 54, 8855, ts(2016, 10, 31, 11, 35, 8), ts(2016, 10, 31, 11, 37, 0), "accept", "ok", "eni-1235b8ca123456789"),
]
# fmt: on


def check_documented_rows(rows: list[dict], source: str) -> None:
    assert len(rows) == len(EXPECTED)
    for row, exp in zip(rows, EXPECTED, strict=True):
        src, dst, sport, dport, proto, packets, nbytes, start, end, action, status, interface = exp
        assert row["src_addr"] == (address_bytes(src) if src else None)
        assert row["dst_addr"] == (address_bytes(dst) if dst else None)
        assert (row["src_port"], row["dst_port"], row["protocol"]) == (sport, dport, proto)
        assert (row["packets"], row["bytes"]) == (packets, nbytes)
        assert (row["time_start"], row["time_end"]) == (start, end)
        assert (row["action"], row["log_status"]) == (action, status)
        assert (row["account"], row["interface"]) == ("123456789010", interface)
        assert (row["provider"], row["source"], row["sampling_rate"]) == ("aws", source, 1)
        assert row["extra"] == [("version", "2")]
        # nothing of the wrapper (owner, logGroup, logStream, event id / timestamp) became a column
        for col in ("region", "zone", "vpc", "subnet", "instance", "direction", "tcp_flags", "reporter"):
            assert row[col] is None, col


def test_documented_payload_every_record():
    results = run(parse_subscription, DATA_DOC, source="vpc-prod")
    rows, errors = rows_and_errors(results)
    assert errors == []
    check_documented_rows(rows, "vpc-prod")
    assert results[-1].final and not any(r.final for r in results[:-1])
    assert results[-1].position == {"offset": len(DATA_DOC), "document": 1, "event": 0}
    assert all(r.batch.schema == SCHEMA for r in results)
    assert sum(r.lines for r in results) == 7  # events consumed


def test_message_lines_every_record():
    results = run(parse_message_lines, LINES, source="vpc-prod")
    rows, errors = rows_and_errors(results)
    assert errors == []
    check_documented_rows(rows, "vpc-prod")
    assert results[-1].position == {"offset": len(LINES), "line": 7}


@pytest.mark.parametrize("fields", [None, ("version", "account-id", "interface-id", "srcaddr", "dstaddr")])
def test_rows_equal_the_text_parsers(fields):
    # The same message through the text parser directly: every column, the extra map included, must be equal.
    messages = RECORDS if fields is None else ["2 123456789010 eni-1 10.0.0.1 ::1", "3 unknown eni-2 - 10.0.0.2"]
    lines = b"".join(json.dumps({"message": m, "ingestionTime": 1}).encode() + b"\n" for m in messages)
    expected = text_rows(messages, fields=fields)
    assert rows_and_errors(run(parse_subscription, doc(messages), fields=fields)) == (expected, [])
    assert rows_and_errors(run(parse_message_lines, lines, fields=fields)) == (expected, [])


def test_messages_are_cleaned_as_the_cloudwatch_source_cleans_them():
    # A trailing newline or CR inside an event's message (some agents keep the line end) is not a second line.
    messages = [RECORDS[0] + "\n", "  " + RECORDS[1] + "\r\n", RECORDS[2].replace(" - NODATA", "\n- NODATA")]
    rows, errors = rows_and_errors(run(parse_subscription, doc(messages)))
    assert errors == []
    assert rows == text_rows(RECORDS[:3])


# ---------------------------------------------------------------------------------------------------------------
# CONTROL_MESSAGE, gzip members, separators
# ---------------------------------------------------------------------------------------------------------------


def test_control_message_alone_gives_nothing_and_no_error():
    results = run(parse_subscription, CONTROL_DOC)
    assert len(results) == 1 and results[0].final
    assert results[0].batch.num_rows == 0 and results[0].errors == []
    assert results[0].position == {"offset": len(CONTROL_DOC), "document": 1, "event": 0}


def firehose_object(*documents: bytes) -> bytes:
    """What Firehose writes to S3 for CloudWatch Logs records without a transformation: each record (one
    gzip-compressed document) as it came, one after another: a multi-member gzip stream."""
    return b"".join(gzip.compress(d) for d in documents)


def gunzip_chunks(blob: bytes, size: int) -> Iterator[bytes]:
    """Decompress every member, streaming, as the caller does (GzipFile reads concatenated members on)."""
    with gzip.GzipFile(fileobj=io.BytesIO(blob)) as f:
        while chunk := f.read(size):
            yield chunk


@pytest.mark.parametrize("size", [1, 13, 1 << 20])
def test_firehose_object_of_gzip_members(size):
    # Health check first (CloudWatch sends it when the subscription is created), then the documented payload
    # (pretty-printed), then two compact documents.
    first = doc(RECORDS[:3], ids=IDS[:3])
    second = doc(RECORDS[3:], ids=IDS[3:])
    blob = firehose_object(CONTROL_DOC, DATA_DOC, first, second)
    plain = CONTROL_DOC + DATA_DOC + first + second
    assert gzip.decompress(blob) == plain
    assert b"}{" in plain  # members end and begin without a separator
    results = run(parse_subscription, gunzip_chunks(blob, size))
    rows, errors = rows_and_errors(results)
    assert errors == []
    check_documented_rows(rows[:7], "fh")
    check_documented_rows(rows[7:], "fh")
    assert results[-1].position == {"offset": len(plain), "document": 4, "event": 0}


@pytest.mark.parametrize("sep", [b"\n", b"\r\n", b" \n\t ", b"\n\n"])
def test_whitespace_between_documents(sep):
    data = sep + doc(RECORDS[:2]) + sep + CONTROL_DOC + sep + doc(RECORDS[2:]) + sep
    rows, errors = rows_and_errors(run(parse_subscription, data))
    assert errors == []
    assert rows == text_rows(RECORDS)


def test_byte_order_mark_at_the_start():
    for size in (1, 100):
        rows, errors = rows_and_errors(run(parse_subscription, chunked(b"\xef\xbb\xbf" + doc(RECORDS[:1]), size)))
        assert errors == [] and rows == text_rows(RECORDS[:1])
        rows, errors = rows_and_errors(run(parse_message_lines, chunked(b"\xef\xbb\xbf" + LINES, size)))
        assert errors == [] and rows == text_rows(RECORDS)


def test_braces_inside_strings_are_not_document_ends():
    # A `}{` inside a string looks like a boundary; it must not split the document (here in an id and in the
    # log group name: strings a subscription payload may hold anything in).
    data = doc(RECORDS[:2], ids=["a}{b", "}\n{"], logGroup="g}{x}") + doc(RECORDS[2:3])
    rows, errors = rows_and_errors(run(parse_subscription, chunked(data, 5)))
    assert errors == [] and rows == text_rows(RECORDS[:3])


def test_many_braces_inside_strings_fall_back_to_a_linear_scan(monkeypatch):
    monkeypatch.setattr(sub, "MAX_FALSE_ENDS", 3)
    group = "}{" * 50
    data = doc(RECORDS[:2], logGroup=group) + doc(RECORDS[2:4], logGroup=group) + b'{"messageType":"DATA_MESSAGE"'
    scans = []
    real = sub._structural_end
    monkeypatch.setattr(sub, "_structural_end", lambda *a: scans.append(a[2:4]) or real(*a))
    results = run(parse_subscription, chunked(data, 7))
    assert scans  # the linear scan found the ends
    rows, errors = rows_and_errors(results)
    assert rows == text_rows(RECORDS[:4])
    assert [e[2] for e in errors] == ["document 3: truncated: the input ends inside it"]


# ---------------------------------------------------------------------------------------------------------------
# Errors and where they are
# ---------------------------------------------------------------------------------------------------------------


def test_bad_message_is_located_by_document_event_and_id():
    bad = doc([RECORDS[0], "2 123456789010 eni-1 bogus!", RECORDS[1]], ids=["id-a", "id-b", "id-c"])
    port = RECORDS[0].replace(" 20641 ", " http ")
    data = doc(RECORDS[4:6]) + bad + doc([RECORDS[2], port], ids=["id-d", "id-e"])
    rows, errors = rows_and_errors(run(parse_subscription, data, unit="s3://b/k.gz"))
    assert rows == text_rows(RECORDS[4:6] + [RECORDS[0], RECORDS[1], RECORDS[2]])
    assert errors == [
        (
            "s3://b/k.gz",
            None,
            "document 2, event 2 (id id-b): expected 14 fields, found 4",
            "2 123456789010 eni-1 bogus!",
        ),
        ("s3://b/k.gz", None, "document 3, event 2 (id id-e): srcport: invalid value 'http'", port),
    ]


def test_document_level_errors_and_the_rest_still_parsed():
    # A damaged document between good ones, one without logEvents, one of an unknown messageType, events without a
    # message / with an empty one / holding a header line, then a final document cut short.
    damaged = (
        b'{"messageType":"DATA_MESSAGE","logEvents":[{"id":"x","message":"2 1 eni-1 - - - - - - - 1 2 - NODATA"},]}'
    )
    no_events = b'{"messageType":"DATA_MESSAGE","owner":"123456789010"}'
    other = b'{"messageType":"OTHER","logEvents":[]}'
    odd_events = (
        doc([RECORDS[0]])[:-2] + b',{"id":"n1"},{"id":"n2","message":"  "},7,{"id":"n3","message":"version srcaddr"}]}'
    )
    data = doc(RECORDS[:1]) + damaged + doc(RECORDS[1:2]) + no_events + other + odd_events + doc(RECORDS[2:3])[:-30]
    results = run(parse_subscription, data)
    rows, errors = rows_and_errors(results)
    assert rows == text_rows([RECORDS[0], RECORDS[1], RECORDS[0]])
    reasons = [e[2] for e in errors]
    assert reasons == [
        f"document 2: invalid JSON: trailing comma is not allowed at byte {damaged.index(b',]')}",
        "document 4: no logEvents list",
        "document 5: messageType 'OTHER', not a CloudWatch Logs subscription payload",
        'document 6, event 2 (id n1): no "message" string',
        "document 6, event 3 (id n2): empty message",
        "document 6, event 4: not a JSON object",
        "document 6, event 5 (id n3): a header line, not a record",
        "document 7: truncated: the input ends inside it",
    ]
    assert all(e[1] is None for e in errors)
    assert errors[0][3] == damaged[:200].decode()
    assert errors[1][3] == '{"messageType":"DATA_MESSAGE","owner":"123456789010"}'
    assert results[-1].final and results[-1].position["offset"] == len(data)


def test_truncated_document_followed_by_a_whole_one():
    # A record cut short inside Firehose's object (a damaged member decompressed as far as it goes) directly
    # followed by the next: reading resumes at the next document's `{`, which is where the parse fails.
    cut = doc(RECORDS[:2])[:-3]
    data = doc(RECORDS[:1]) + cut + doc(RECORDS[2:4])
    rows, errors = rows_and_errors(run(parse_subscription, chunked(data, 11)))
    assert rows == text_rows([RECORDS[0], RECORDS[2], RECORDS[3]])
    assert [e[2].split(":")[0] for e in errors] == ["document 2"]
    assert errors[0][2].startswith("document 2: invalid JSON")


def test_bytes_that_are_not_a_document():
    data = b"garbage" + doc(RECORDS[:1]) + b"\n]]" + doc(RECORDS[1:2]) + b"tail"
    rows, errors = rows_and_errors(run(parse_subscription, data))
    assert rows == text_rows(RECORDS[:2])
    assert [(e[2], e[3]) for e in errors] == [
        ("document 1: not a JSON document (skipped to the next '{')", "garbage"),
        ("document 3: not a JSON document (skipped to the next '{')", "]]"),  # a document followed by junk
        ("document 5: not a JSON document (skipped to the next '{')", "tail"),
    ]


def test_invalid_utf8_document_is_an_error_and_the_next_is_read():
    # orjson rejects invalid UTF-8 anywhere in a document and says "at byte 0" (regression: reading resumed where
    # it stood, for ever).
    bad = doc([RECORDS[0], RECORDS[1]]).replace(b"ACCEPT", b"ACC\xffPT")
    cases = [
        (doc(RECORDS[2:3]) + bad + doc(RECORDS[3:4]), RECORDS[2:4]),
        (bad + b"\n" + doc(RECORDS[3:4]), RECORDS[3:4]),
        (bad, []),
    ]
    for data, records in cases:
        rows, errors = rows_and_errors(run(parse_subscription, chunked(data, 9)))
        assert rows == text_rows(records)
        assert len(errors) == 1 and "invalid JSON" in errors[0][2] and "UTF-8" in errors[0][2]


def test_document_too_large_is_skipped_without_holding_it(monkeypatch):
    monkeypatch.setattr(sub, "MAX_DOCUMENT", 1000)
    big = doc(RECORDS * 3)
    assert len(big) > 1000
    data = doc(RECORDS[:1]) + big + doc(RECORDS[1:2])
    rows, errors = rows_and_errors(run(parse_subscription, chunked(data, 100)))
    assert rows == text_rows(RECORDS[:2])
    assert [e[2] for e in errors] == ["document 2: no end within 1000 bytes: skipped"]


def test_empty_and_whitespace_input():
    for data in (b"", b"  \n"):
        (result,) = run(parse_subscription, data)
        assert result.final and result.batch.num_rows == 0 and result.errors == []
        assert result.position == {"offset": len(data), "document": 0, "event": 0}
        (result,) = run(parse_message_lines, data)
        assert result.final and result.batch.num_rows == 0 and result.errors == []


def test_message_lines_errors_carry_line_numbers():
    data = (
        json.dumps({"message": RECORDS[0]}).encode() + b"\r\n"
        + b"\n"  # blank: passed over, still counted
        + b"not json\n"
        + b"[1, 2]\n"
        + json.dumps({"msg": RECORDS[1]}).encode() + b"\n"
        + json.dumps({"message": 42}).encode() + b"\n"
        + json.dumps({"message": "2 123456789010 eni-1 bogus!"}).encode() + b"\n"
        + json.dumps({"message": ""}).encode() + b"\n"
        + json.dumps({"message": RECORDS[1], "logStreamName": "x"}).encode()  # last line without LF
    )  # fmt: skip
    results = run(parse_message_lines, chunked(data, 3), unit="export.jsonl")
    rows, errors = rows_and_errors(results)
    assert rows == text_rows(RECORDS[:2])
    assert [(e[1], e[2].split(":")[0]) for e in errors] == [
        (3, "not JSON"),
        (4, "not a JSON object"),
        (5, 'no "message" key'),
        (6, 'no "message" string'),
        (7, "expected 14 fields, found 4"),
        (8, "empty message"),
    ]
    assert all(e[0] == "export.jsonl" for e in errors)
    assert results[-1].position == {"offset": len(data), "line": 9}


def test_message_line_too_long_is_skipped(monkeypatch):
    monkeypatch.setattr(sub, "MAX_LINE", 300)
    long = json.dumps({"message": RECORDS[0], "pad": "x" * 400}).encode()
    data = b"\n".join(
        [json.dumps({"message": RECORDS[0]}).encode(), long, json.dumps({"message": RECORDS[1]}).encode()]
    )
    for size in (7, 1 << 20):
        rows, errors = rows_and_errors(run(parse_message_lines, chunked(data, size)))
        assert rows == text_rows(RECORDS[:2])
        assert [(e[1], e[2], e[3]) for e in errors] == [(2, "line longer than 300 bytes: skipped", long[:200].decode())]


# ---------------------------------------------------------------------------------------------------------------
# Batches, positions, resume, chunking
# ---------------------------------------------------------------------------------------------------------------


def _mixed_subscription_stream() -> bytes:
    """Several documents of several sizes, a health check, damage and bad messages, the final one truncated."""
    bogus = "2 123456789010 eni-1 bogus!"
    parts = [
        CONTROL_DOC,
        DATA_DOC,
        doc(RECORDS[:3] + [bogus] + RECORDS[3:], ids=[f"a{i}" for i in range(8)]),
        b"\n",
        b'{"messageType":"DATA_MESSAGE","logEvents":[1,]}',
        doc(RECORDS * 4),
        CONTROL_DOC,
        doc([RECORDS[6]]),
        b"\n\n",
        doc(["", RECORDS[0], "version srcaddr", RECORDS[1]]),
        doc([" " + RECORDS[5]] + RECORDS * 2),  # event by event from its start, at full speed resumed past event 1
        doc(RECORDS * 2)[:-40],
    ]
    return b"".join(parts)


def _mixed_lines_stream() -> bytes:
    lines = []
    for i in range(40):
        r = RECORDS[i % 7]
        lines.append(json.dumps({"message": r, "n": i}).encode())
        if i % 9 == 4:
            lines.append(b"")
        if i % 11 == 3:
            lines.append(b'{"message": "2 123456789010 eni-1 bogus!"}')
        if i % 13 == 5:
            lines.append(b"{broken")
    return b"\n".join(lines) + b"\n"


STREAMS = {
    "subscription": (parse_subscription, _mixed_subscription_stream()),
    "lines": (parse_message_lines, _mixed_lines_stream()),
}


@pytest.mark.parametrize("kind", STREAMS)
@pytest.mark.parametrize("block_size", [1, 150, 700, 1 << 22])
def test_resume_from_every_position(kind, block_size):
    parser, data = STREAMS[kind]
    whole = rows_and_errors(run(parser, data))
    assert whole[0] and whole[1]
    results = run(parser, chunked(data, 97), block_size=block_size)
    assert rows_and_errors(results) == whole
    if block_size < 1000:
        assert len(results) > 5
    assert results[-1].final and not any(r.final for r in results[:-1])
    offsets = [r.position["offset"] for r in results]
    # the daemon's progress counter: strictly increasing from batch to batch (an equal one would let a sink skip
    # a batch as already held); only a final empty batch may repeat the last
    assert all(a < b for a, b in zip(offsets[:-1], offsets[1:-1], strict=False)), offsets
    assert offsets[-1] == len(data) and offsets == sorted(offsets)
    if kind == "subscription" and block_size == 150:
        assert any(r.position["event"] for r in results)  # cuts inside documents were exercised
    before: tuple[list, list] = ([], [])
    for r in results:
        rows, errors = rows_and_errors([r])
        before[0].extend(rows)
        before[1].extend(errors)
        json.dumps(r.position)  # stored in the checkpoint
        resumed = run(parser, chunked(data, 61), block_size=block_size, resume=r.position)
        after = rows_and_errors(resumed)
        assert before[0] + after[0] == whole[0], f"rows differ resuming at {r.position}"
        assert before[1] + after[1] == whole[1], f"errors differ resuming at {r.position}"
        assert resumed[-1].final and resumed[-1].position == results[-1].position


@pytest.mark.parametrize("kind", STREAMS)
@pytest.mark.parametrize("block_size", [150, 1000])
def test_batch_boundaries_do_not_depend_on_chunking(kind, block_size):
    parser, data = STREAMS[kind]
    reference = run(parser, [data], block_size=block_size)
    for size in (1, 5, 64, 4096):
        results = run(parser, chunked(data, size), block_size=block_size)
        assert [r.position for r in results] == [r.position for r in reference]
        assert [rows_and_errors([r]) for r in results] == [rows_and_errors([r]) for r in reference]
        assert [r.lines for r in results] == [r.lines for r in reference]
    # and a resumed parse makes the same cuts as the whole one after its resume point
    mid = reference[len(reference) // 2].position
    resumed = run(parser, chunked(data, 33), block_size=block_size, resume=mid)
    assert [r.position for r in resumed] == [r.position for r in reference[len(reference) // 2 + 1 :]]


@pytest.mark.parametrize("block_size", [1, 150, 700, 1 << 22])
def test_clean_documents_take_the_fast_path_with_the_same_result(block_size, monkeypatch):
    # Documents whose messages all need no cleaning are taken in one go (sub._clean_messages); the outcome must be
    # the one event-by-event processing gives: same rows, errors, cuts and positions.
    _, data = STREAMS["subscription"]
    fast = run(parse_subscription, chunked(data, 97), block_size=block_size)
    calls = []
    monkeypatch.setattr(sub, "_clean_messages", lambda events, first: calls.append(first))
    slow = run(parse_subscription, chunked(data, 97), block_size=block_size)
    assert calls  # every document with events went event by event
    assert [r.position for r in slow] == [r.position for r in fast]
    assert [rows_and_errors([r]) for r in slow] == [rows_and_errors([r]) for r in fast]
    assert [r.lines for r in slow] == [r.lines for r in fast]


def test_batches_are_about_block_size_of_messages():
    data = doc(RECORDS * 300)  # one large document: cut inside it
    results = run(parse_subscription, data, block_size=10_000)
    sizes = [r.batch.num_rows for r in results]
    per_record = sum(len(m) + 1 for m in RECORDS) / 7
    assert sum(sizes) == 2100
    assert all(abs(n - 10_000 / per_record) <= 2 for n in sizes[:-2])
    assert all(r.position["event"] and r.position["start"] == 0 for r in results[:-1])
    assert results[-1].position == {"offset": len(data), "document": 1, "event": 0}


def test_resume_at_end_gives_nothing():
    for parser, data in STREAMS.values():
        end = run(parser, data)[-1].position
        (again,) = run(parser, chunked(data, 50), resume=end)
        assert again.final and again.batch.num_rows == 0 and again.errors == [] and again.position == end


def test_position_in_a_document_resumes_after_the_events_taken():
    data = doc(RECORDS, ids=IDS)
    results = run(parse_subscription, data, block_size=200)  # two messages of ~116 characters fill it
    first = results[0]
    assert first.position == {"offset": 2, "document": 0, "event": 2, "start": 0}
    assert first.batch.num_rows == 2
    rest = run(parse_subscription, data, resume=first.position)
    assert rows_and_errors(rest)[0] == text_rows(RECORDS[2:])


# ---------------------------------------------------------------------------------------------------------------
# Sniffing
# ---------------------------------------------------------------------------------------------------------------

GCP_HEADS = [
    # GCP VPC flow log LogEntry (FORMATS.md), as exported to GCS: insertId first, and logName first.
    b'{"insertId":"1a2b3c","jsonPayload":{"connection":{"src_ip":"10.0.0.1","src_port":443,"dest_ip":"10.0.0.2",'
    b'"dest_port":5000,"protocol":6},"reporter":"SRC","bytes_sent":"1024","packets_sent":"4"},"logName":"projects/p/'
    b'logs/compute.googleapis.com%2Fvpc_flows","timestamp":"2024-01-01T00:00:00Z"}\n',
    b'{"logName":"projects/p/logs/compute.googleapis.com%2Fvpc_flows","jsonPayload":{"message":"2 1 eni-1 a b",'
    b'"connection":{}},"resource":{"labels":{"project_id":"p"}}}\n',
]
AZURE_HEADS = [
    # Azure NSG flow log blob (FORMATS.md), compact and as the first committed block.
    b'{"records":[{"time":"2024-01-01T00:00:00.000Z","systemId":"x","macAddress":"000D3A","category":'
    b'"NetworkSecurityGroupFlowEvent","properties":{"Version":2,"flows":[{"rule":"DefaultRule_AllowInternetOutBound",',
    b'{"records":[',
]
AWS_TEXT_HEAD = (
    FIX.parent.parent / "conformance" / "raw" / "aws" / "awsdocs-x__default-format-examples.log"
).read_bytes()


@pytest.mark.parametrize(
    "head",
    [
        DATA_DOC,
        CONTROL_DOC,
        CONTROL_DOC + DATA_DOC,
        doc(RECORDS),
        gzip.decompress(firehose_object(DATA_DOC, doc(RECORDS))),
        DATA_DOC[:200],  # cut before messageType: owner, logGroup, logStream seen
        doc(RECORDS)[:40],  # cut just after messageType's value
        b"\n" + doc(RECORDS),
        doc(RECORDS * 500)[: 64 << 10],  # a 64 KiB head cut inside logEvents
        # messageType after logEvents and beyond the head: two payload keys seen, no other
        json.dumps(
            {"owner": "1", "logEvents": [{"message": r} for r in RECORDS] * 200, "messageType": "DATA_MESSAGE"}
        ).encode()[: 64 << 10],
    ],
)
def test_looks_like_subscription_true(head):
    assert looks_like_subscription(head)
    assert not looks_like_message_lines(head)


@pytest.mark.parametrize(
    "head",
    [
        *GCP_HEADS,
        *AZURE_HEADS,
        AWS_TEXT_HEAD,
        b"version account-id interface-id srcaddr dstaddr\n",
        LINES,
        b"",
        b"   \n",
        b"[]",
        b'{"messageType":"SOMETHING_ELSE","logEvents":[]}',
        b'{"messageType":7,"owner":"1","logGroup":"g"}',
        b'{"owner":"1","logGroup":"g","records":[]}',  # a key payloads do not have
        b'{"owner":"1"}',  # one key, complete: not enough
        b'{"message":"2 1 eni-1"}',
        b'{"data":{"messageType":"DATA_MESSAGE"}}',  # nested, not top-level
        # only logEvents seen before the head ends: one key is not enough to claim it
        json.dumps({"logEvents": [{"message": r} for r in RECORDS] * 200}).encode()[: 64 << 10],
    ],
)
def test_looks_like_subscription_false(head):
    assert not looks_like_subscription(head)


@pytest.mark.parametrize(
    "head",
    [
        LINES,
        LINES[:500],  # cut mid-line: the complete lines decide
        b"\n" + LINES,
        LINES.replace(b"\n", b"\r\n"),
        json.dumps({"message": "version srcaddr dstaddr"}).encode() + b"\n",  # a header as message: still this shape
        json.dumps({"message": "10.0.0.1 10.0.0.2 443 5000 6"}).encode(),  # custom order, address first; no LF
        json.dumps({"message": "eni-1235b8ca123456789 ACCEPT"}).encode() + b"\n",
        json.dumps({"@timestamp": "x", "message": RECORDS[2], "cloud": {"provider": "aws"}}).encode() + b"\n",
    ],
)
def test_looks_like_message_lines_true(head):
    assert looks_like_message_lines(head)
    assert not looks_like_subscription(head)


@pytest.mark.parametrize(
    "head",
    [
        *GCP_HEADS,
        *AZURE_HEADS,
        AWS_TEXT_HEAD,
        DATA_DOC,
        CONTROL_DOC,
        doc(RECORDS) + b"\n" + doc(RECORDS) + b"\n",  # subscription documents one per line
        b"",
        b"\n\n",
        LINES[:100],  # not one complete line, and what there is does not parse
        # CloudWatch events of other logs: a Lambda function's, an application's JSON log line
        json.dumps({"message": "START RequestId: 8f5 Version: $LATEST"}).encode() + b"\n",
        json.dumps({"message": '{"level":"info","msg":"hello"}'}).encode() + b"\n",
        json.dumps({"message": RECORDS[0]}).encode()
        + b"\n"
        + json.dumps({"message": "REPORT Duration: 1 ms"}).encode()
        + b"\n",
        json.dumps({"message": RECORDS[0]}).encode() + b"\nnot json\n",
        json.dumps({"message": RECORDS[0], "jsonPayload": {}}).encode() + b"\n",
        b'{"message": 5}\n',
        b"[1, 2]\n",
    ],
)
def test_looks_like_message_lines_false(head):
    assert not looks_like_message_lines(head)


def test_sniffed_heads_parse_without_errors():
    # What the sniffers claim, the parsers read.
    for head, parser in ((DATA_DOC + CONTROL_DOC, parse_subscription), (LINES, parse_message_lines)):
        rows, errors = rows_and_errors(run(parser, head))
        assert errors == [] and len(rows) == 7


def test_rows_concatenate_into_one_table():
    batches = [r.batch for r in run(parse_subscription, _mixed_subscription_stream(), block_size=150)]
    table = pa.Table.from_batches(batches)
    assert table.schema == SCHEMA and table.num_rows == len(
        rows_and_errors(run(parse_subscription, _mixed_subscription_stream()))[0]
    )


# ---------------------------------------------------------------------------------------------------------------
# Damage anywhere: never an exception, never a spin, same cuts whatever the chunking, resumable
# ---------------------------------------------------------------------------------------------------------------

_EDITS = st.lists(
    st.tuples(
        st.floats(0, 1, exclude_max=True),
        st.sampled_from([b"", b"{", b"}", b"[", b"]", b'"', b"\\", b",", b":", b"\n", b"}{", b"\xff", b"\xef\xbb\xbf"]),
        st.integers(0, 40),
    ),
    min_size=1,
    max_size=8,
)


@pytest.mark.parametrize("kind", STREAMS)
@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(edits=_EDITS, block_size=st.sampled_from([1, 200, 5000]), chunk=st.sampled_from([1, 3, 50]))
def test_property_damage_anywhere(kind, edits, block_size, chunk):
    parser, data = STREAMS[kind]
    damaged = bytearray(data)
    for where, insert, delete in edits:  # replace `delete` bytes at a spot by `insert`
        i = int(where * len(damaged))
        damaged[i : i + delete] = insert
    damaged = bytes(damaged)
    reference = run(parser, [damaged], block_size=block_size)
    results = run(parser, chunked(damaged, chunk), block_size=block_size)
    assert [r.position for r in results] == [r.position for r in reference]
    assert [rows_and_errors([r]) for r in results] == [rows_and_errors([r]) for r in reference]
    assert results[-1].final and results[-1].position["offset"] == len(damaged)
    offsets = [r.position["offset"] for r in results]
    assert all(a < b for a, b in zip(offsets[:-2], offsets[1:-1], strict=True)) and offsets == sorted(offsets)
    whole = rows_and_errors(reference)
    k = len(reference) // 2
    after = rows_and_errors(run(parser, chunked(damaged, 17), block_size=block_size, resume=reference[k].position))
    before = rows_and_errors(reference[: k + 1])
    assert (before[0] + after[0], before[1] + after[1]) == whole
