"""Issue #10 (hostile input), AWS text: each reproducer of the fuzz report, with its exact outcome.

Every case is built from the documented v2 default format (FORMATS.md, "AWS VPC flow logs"): a header line of the 14
v2 field names and records of 14 space-separated values. Each one failed before the parser was fixed: the comment
says what happened then."""

from __future__ import annotations

import gzip
import io
import random
import subprocess
import sys
import zlib
from pathlib import Path

import pytest

from adapters.aws.parse import MAX_LINE, parse_text
from collector.parsing import MAX_BATCH_ROWS, open_stream, open_unit

HEADER = b"version account-id interface-id srcaddr dstaddr srcport dstport protocol packets bytes start end action log-status\n"


def rec(
    port: bytes = b"443", nbytes: bytes = b"84000", eni: bytes = b"eni-0a1b2c3d", start: bytes = b"1620000000"
) -> bytes:
    return b"2 123456789012 %s 10.0.0.1 10.0.0.2 %s 49152 6 10 %s %s 1620000060 ACCEPT OK\n" % (
        eni,
        port,
        nbytes,
        start,
    )


def run(data: bytes, **kw):
    results = list(open_stream(io.BufferedReader(io.BytesIO(data)), unit="u", source="s", **kw))
    rows = [r for x in results for r in x.batch.to_pylist()]
    errors = [(e.line, e.reason) for x in results for e in x.errors]
    return rows, errors


# 1. A data line whose first token is a field name became a header: the lines after it came out with every schema
# column null and the values in `extra`, with 0 errors.
@pytest.mark.parametrize("block_size", [1, 150, 4 << 20])
def test_field_name_first_data_line_is_a_record_not_a_header(block_size):
    data = HEADER + rec(b"1") + b"action 123456789012 eni-0a1b2c3d ACCEPT OK\n" + rec(b"2") + rec(b"3")
    results = list(parse_text([data], unit="u", source="s", block_size=block_size))
    rows = [r for x in results for r in x.batch.to_pylist()]
    errors = [(e.line, e.reason) for x in results for e in x.errors]
    assert [r["src_port"] for r in rows] == [1, 2, 3]
    assert [(r["action"], r["bytes"], r["interface"], r["extra"]) for r in rows] == [
        ("accept", 84000, "eni-0a1b2c3d", [("version", "2")])
    ] * 3
    assert errors == [(3, "expected 14 fields, found 5")]


def test_a_line_of_known_field_names_is_a_header_anywhere():
    # concatenated objects repeat their header; a second header may change the order (here: two fields swapped)
    swapped = HEADER.replace(b"srcport dstport", b"dstport srcport")
    rows, errors = run(HEADER + rec(b"1") + swapped + rec(b"2"))
    assert errors == []
    assert [(r["src_port"], r["dst_port"]) for r in rows] == [(1, 49152), (49152, 2)]


def test_first_line_may_name_unknown_fields():
    # FORMATS.md: an unknown field name in a header must not break parsing; it is kept in `extra`.
    header = HEADER.rstrip(b"\n") + b" future-field\n"
    rows, errors = run(header + rec().rstrip(b"\n") + b" zz\n")
    assert errors == []
    assert rows[0]["src_port"] == 443 and ("future-field", "zz") in rows[0]["extra"]


# 2. A malformed first line, or a UTF-8 BOM, skipped the whole file (0 records, exit 0).
def test_malformed_first_line_costs_that_line_only():
    rows, errors = run(b"garbage here\n" + rec(b"1") + rec(b"2"))
    assert [r["src_port"] for r in rows] == [1, 2]
    assert errors == [(1, "expected 14 fields, found 2")]


def test_headerless_file_with_damaged_first_line(tmp_path: Path):
    path = tmp_path / "x.log.gz"
    path.write_bytes(gzip.compress(b"2 123456789012 eni-0a1b2c3d 10.0.0.1\n" + rec(b"1") + rec(b"2")))
    results = list(open_unit(path, unit=str(path), source="s"))
    assert sum(r.batch.num_rows for r in results) == 2
    assert [(e.line, e.reason) for r in results for e in r.errors] == [(1, "expected 14 fields, found 4")]


@pytest.mark.parametrize("gz", [False, True])
def test_bom_at_start_is_removed(gz):
    data = b"\xef\xbb\xbf" + HEADER + rec(b"1") + rec(b"2")
    rows, errors = run(gzip.compress(data) if gz else data)
    assert [r["src_port"] for r in rows] == [1, 2] and errors == []


def test_bom_inside_is_an_error_and_does_not_shift_line_numbers():
    data = HEADER + rec(b"1") + b"\xef\xbb\xbf" + rec(b"2") + rec(b"x") + rec(b"4")
    rows, errors = run(data)
    assert [r["src_port"] for r in rows] == [1, 4]
    assert errors == [(3, "not a record: a byte order mark (U+FEFF) at column 1"), (4, "srcport: invalid value 'x'")]


# 3. Acceptance depended on the neighbours: on the fast path 0x1BB was 443, -0 was 0, a 23-digit zero-padded number
# its value; with one bad line elsewhere in the block the same values were rejected; over 19 digits, always rejected.
@pytest.mark.parametrize("neighbour", [b"", rec(b"bad")])
@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (b"0x1BB", None),
        (b"-0", None),
        (b"+5", None),
        (b"1e3", None),
        (b"0" * 20 + b"443", 443),  # 23 digits, leading zeros allowed
        (b"00443", 443),
        (b"65535", 65535),
        (b"65536", None),
    ],
)
def test_one_integer_grammar_whatever_the_block_holds(neighbour, value, expected):
    rows, errors = run(HEADER + rec(b"1") + neighbour + rec(value))
    ports = [r["src_port"] for r in rows]
    mine = [e for e in errors if e[0] == (4 if neighbour else 3)]
    if expected is None:
        assert ports == [1] and mine == [(4 if neighbour else 3, f"srcport: invalid value {value.decode()!r}")]
    else:
        assert ports == [1, expected] and mine == []


def test_zero_padded_counter_over_19_digits_in_range_is_accepted():
    rows, errors = run(HEADER + rec(nbytes=b"0" * 30 + b"84000", start=b"0" * 15 + b"1620000000"))
    assert errors == [] and rows[0]["bytes"] == 84000 and rows[0]["time_start"].timestamp() == 1620000000
    rows, errors = run(HEADER + rec(nbytes=b"9223372036854775808"))  # 2^63: beyond int64
    assert rows == [] and errors == [(2, "bytes: invalid value '9223372036854775808'")]


# 4. Silent wrong values.
def test_truncated_gzip_cut_line_is_an_error_not_a_record():
    random.seed(4)
    body = b"".join(rec(nbytes=str(random.randrange(10**6)).encode()) for _ in range(2000))
    packed = gzip.compress(HEADER + body)
    whole = body.split(b"\n")
    rows, errors = run(packed[: len(packed) // 2])
    assert 0 < len(rows) < 2000
    # every delivered record is a whole line of the input, in order
    assert [r["bytes"] for r in rows] == [int(line.split()[9]) for line in whole[: len(rows)]]
    cut_line = len(rows) + 2  # header, then the delivered records, then the cut one
    assert errors[0] == (cut_line, "line cut short by the damaged stream: not a record")
    assert errors[1][0] is None and errors[1][1].startswith("truncated gzip stream at compressed byte ")
    assert len(errors) == 2


def test_lone_cr_inside_a_line_is_one_error_not_two_records():
    rows, errors = run(HEADER + rec(b"1") + rec(eni=b"eni-0a\r1b") + rec(b"3"))
    assert [r["src_port"] for r in rows] == [1, 3]
    assert errors == [(3, "not a record: a carriage return inside the line (lines end at LF or CRLF)")]


def test_crlf_line_ends_are_accepted():
    rows, errors = run((HEADER + rec(b"1") + rec(b"2")).replace(b"\n", b"\r\n"))
    assert [r["src_port"] for r in rows] == [1, 2] and errors == []
    assert rows[0]["log_status"] == "ok"


def test_non_ascii_and_control_bytes_make_a_line_an_error():
    rows, errors = run(HEADER + rec(eni=b"eni-\xff01") + rec(eni=b"eni-\x0101") + rec(b"3"))
    assert [r["src_port"] for r in rows] == [3]
    assert errors == [
        (2, "not a record: non-ASCII byte 0xff at column 20 (flow logs are ASCII)"),
        (3, "not a record: control character 0x01 at column 20"),
    ]


@pytest.mark.parametrize("length", [MAX_LINE + 1, 3 * MAX_LINE])
def test_line_limit_holds_inside_a_block(length):
    long_eni = b"eni-" + b"a" * (length - len(rec(eni=b"")) + 1 - 4)
    line = rec(eni=long_eni)
    assert len(line) - 1 == length
    rows, errors = run(HEADER + rec(b"1") + line + rec(b"3"))
    assert [r["src_port"] for r in rows] == [1, 3]
    assert [(e[0], e[1]) for e in errors] == [(3, f"line longer than {MAX_LINE} bytes")] or [e[0] for e in errors] == [
        3
    ]
    assert all("longer than" in e[1] for e in errors)


def test_line_of_exactly_the_limit_is_a_record():
    long_eni = b"eni-" + b"a" * (MAX_LINE - len(rec(eni=b"")) + 1 - 4)
    line = rec(eni=long_eni)
    assert len(line) - 1 == MAX_LINE
    rows, errors = run(HEADER + line)
    assert errors == [] and len(rows[0]["interface"]) == len(long_eni)


# 5. Memory: a batch never exceeds MAX_BATCH_ROWS rows, however compressible the input.
def test_rows_per_batch_are_bounded_for_a_gzip_bomb():
    # a record line of 62 bytes (not even NODATA: a flow without addresses is still a row)
    short = b"2 123456789012 eni-1 - - - - - - - 1620000000 1620000060 - OK\n"
    assert len(short) * MAX_BATCH_ROWS < 4 << 20  # short lines: the row bound cuts before the byte bound
    packed = gzip.compress(short * 300_000, 9)
    sizes = [r.batch.num_rows for r in open_stream(io.BufferedReader(io.BytesIO(packed)), unit="u", source="s")]
    assert sum(sizes) == 300_000
    assert max(sizes) == MAX_BATCH_ROWS
    # boundaries are counted from the stream's start: every batch but the last holds MAX_BATCH_ROWS lines
    assert sizes[:4] == [MAX_BATCH_ROWS] * 4


def test_gzip_bomb_peak_memory_is_bounded(tmp_path: Path):
    # The reproducer: 2,000,000 identical lines, ~658 KB of gzip, peaked at 2.5 GB. Run in a child process
    # so the measurement is the parse alone; VmHWM, not ru_maxrss, which Linux keeps across fork and exec (the
    # child's would start at this pytest process's peak, which a full run pushed past the bound).
    path = tmp_path / "bomb.log.gz"
    with gzip.open(path, "wb", compresslevel=9) as fh:
        fh.write(HEADER)
        for _ in range(20):
            fh.write(rec() * 100_000)
    script = (
        "import sys\n"
        "from pathlib import Path\n"
        "from collector.parsing import open_unit\n"
        "n = m = 0\n"
        "for r in open_unit(Path(sys.argv[1]), unit='u', source='s'):\n"
        "    n += r.batch.num_rows; m = max(m, r.batch.num_rows)\n"
        # VmHWM, not ru_maxrss: after exec, ru_maxrss keeps the parent's peak (a large pytest process)
        "hwm = [l for l in open('/proc/self/status') if l.startswith('VmHWM:')][0].split()[1]\n"
        "print(n, m, int(hwm) // 1024)\n"
    )
    out = subprocess.run([sys.executable, "-c", script, str(path)], capture_output=True, text=True, check=True)
    rows, biggest, rss_mb = (int(x) for x in out.stdout.split())
    assert rows == 2_000_000 and biggest <= MAX_BATCH_ROWS
    assert rss_mb < 300, f"peak RSS {rss_mb} MB"


# 7. A gzip member with a bad CRC or ISIZE trailer delivered nothing, though every line was intact.
@pytest.mark.parametrize(("flip", "what"), [(-6, "CRC-32"), (-2, "length (ISIZE)")])
def test_bad_gzip_trailer_delivers_and_reports(flip, what):
    packed = bytearray(gzip.compress(HEADER + rec(b"1") + rec(b"2")))
    packed[flip] ^= 0xFF
    second = gzip.compress(rec(b"3"))  # a member after the damaged one is read too
    rows, errors = run(bytes(packed) + second)
    assert [r["src_port"] for r in rows] == [1, 2, 3]
    assert errors == [
        (
            None,
            f"gzip member at compressed byte 0: its {what} does not match its data (a damaged trailer or damaged "
            f"data); its {len(HEADER + rec(b'1') + rec(b'2'))} decompressed bytes were read, each line validated",
        )
    ]


def test_zero_padding_after_last_member_is_not_an_error_but_garbage_is():
    rows, errors = run(gzip.compress(HEADER + rec(b"1")) + gzip.compress(rec(b"2")) + b"\0" * 100)
    assert [r["src_port"] for r in rows] == [1, 2] and errors == []
    first = gzip.compress(HEADER + rec(b"1"))
    rows, errors = run(first + b"junk")
    assert [r["src_port"] for r in rows] == [1]
    assert errors == [
        (
            None,
            f"corrupt gzip stream at compressed byte {len(first)}: not a gzip member (garbage after the last member?)",
        )
    ]


# Found by the fuzz (test_objects_agree, CI seed): a truncated gzip whose inflated part is only the start of its
# header line. Nothing in it is a recognized format, so the object was reported as unrecognized and the damage to
# the gzip stream (deliverable 3: "report the corruption with the object and the byte offset") was not reported.
def test_unrecognized_truncated_gzip_still_reports_the_truncation():
    z = zlib.compressobj(wbits=31)  # gzip; a sync flush makes every byte so far inflatable, then the stream stops
    cut = z.compress(b"version account-id interface-") + z.flush(zlib.Z_SYNC_FLUSH)
    rows, errors = run(cut)
    assert rows == []
    # the piece of a header is still recognized as AWS text (a line of field names); it is cut, so not a header
    assert errors == [
        (1, "line cut short by the damaged stream: not a record"),
        (None, f"truncated gzip stream at compressed byte {len(cut)}: the stream ends inside compressed data"),
    ]
    rows, errors = run(zlib.compress(b"garbage-", wbits=31)[:-4])  # not recognized: still reports the truncation
    assert rows == [] and errors[0] == (
        1,
        "not a recognized flow log format (no AWS header line, not a v2 record); skipped",
    )
    assert errors[1][0] is None and errors[1][1].startswith("truncated gzip stream")


# Found by the long fuzz (seeds 5001136, 5005101, 5007179): an integer field zero-padded to thousands of digits whose
# significant digits are beyond int64 raised ValueError from parse (CPython refuses int() of more than 4300 digits)
# instead of rejecting its line. Zero padding is valid at any length; 20 significant digits are beyond int64 anyway.
@pytest.mark.parametrize("value", [b"0" * 5000 + b"9223372036854775808", b"9" * 5000, b"0" * 5000 + b"9" * 5000])
def test_huge_zero_padded_integer_beyond_int64_is_an_error_not_a_crash(value):
    rows, errors = run(HEADER + rec(nbytes=value) + rec(nbytes=b"0" * 5000 + b"9223372036854775807"))
    assert [r["bytes"] for r in rows] == [2**63 - 1]
    assert [(line, reason[:22]) for line, reason in errors] == [(2, "bytes: invalid value '")]
