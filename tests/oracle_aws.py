"""A slow, obviously-correct reader of AWS VPC flow log text: the oracle the fuzz tests hold the real parser to.

Written from the documentation (FORMATS.md "AWS VPC flow logs", ARCHITECTURE.md "The normalized schema", the
intended behaviour of issue #10, deliverable 1), line by line in plain Python, and independently of
`adapters/aws/parse.py`: nothing here is imported from the parser, and the field names are restated from the
FORMATS.md table rather than taken from `adapters/aws/fields.py`. Only the column names come from
`collector/schema.py`, because the oracle's records must have the shape `FlowBatch.to_pylist()` gives.

The rules, one per line of `read_text` below:

1. Lines end at LF. A CR right before the LF is part of the line end (CRLF tolerated); a CR anywhere else is an
   ordinary byte of the line, so rule 4 makes that line an error (never two records).
2. A UTF-8 BOM (EF BB BF) is dropped at the very start of the stream only. Anywhere else its bytes are part of the
   line, so rule 4 makes that line an error. Dropping it does not shift line numbers (line 1 is still line 1).
3. A line is at most 1 MiB (1,048,576 bytes, not counting its LF and the CR before it); a longer one is an error.
4. A line holds printable ASCII only (bytes 0x20-0x7E): AWS writes numbers, addresses, identifiers, ARNs and
   keywords. Any other byte (control characters including TAB and a lone CR, DEL, anything >= 0x80 whether valid
   UTF-8 or not) makes the line an error. *Choice*: the docs do not say; rejecting is what "never silently
   re-maps" asks (replacing undecodable bytes with U+FFFD would change the evidence), and TAB is not a separator.
5. A line of nothing but spaces (or empty) is blank: no record, no error, but it counts in the line numbers.
6. Fields are separated by runs of spaces; leading and trailing spaces are ignored (the README documents that a
   double space is read as one separator: an AWS documentation sample has one).
7. A header is a line of field names, on any line: every token shaped like a field name (`[a-z][a-z0-9-]*`)
   and at least half of them known field names (FORMATS.md table); the others are fields AWS added after this
   list was written (kept in `extra`), so a concatenated object of a newer version is still read. It sets the
   field order for the lines after it and gives no record; a repeated header changes nothing. A record always
   holds a value not shaped like a field name (digits, upper-case keywords), so it is never a header.
   *Choice*: a header may name a field twice: the first occurrence is the field, the k-th repeat is free text
   kept in `extra` as `name#k` (nothing written is dropped).
8. Any other non-blank line is a data line, judged the same wherever it is (the first line too): a wrong field
   count is an error; otherwise each field is checked (rule 9); one bad field makes the whole line an error (the
   error names the first bad field in field order). A data line whose first token is a field name is just a
   data line with a bad `version` (or whatever field comes first).
9. Values: `-` is null for every field. Integers are decimal digits only (no sign, no `0x`, no `.`, no exponent),
   leading zeros allowed, any number of digits, then range-checked: srcport/dstport 0-65535, protocol 0-255,
   tcp-flags 0-255 (the uint8 column; *choice*: not limited to the six documented flag bits), traffic-path 1-8
   (the documented values), packets/bytes 0 to 2^63-1 (Parquet documents them INT64, signed: one bound for
   both encodings, though the column is uint64), start/end see rule 10, and the integer fields without a column
   (version, packets-lost-*) 0 to 2^63-1 (*choice*: no bound of their own, a future version must not break
   parsing). Enumerations, case as AWS writes them: action
   ACCEPT|REJECT, log-status OK|NODATA|SKIPDATA, flow-direction ingress|egress, type IPv4|IPv6|EFA. Addresses
   (srcaddr, dstaddr, pkt-srcaddr, pkt-dstaddr): an IPv4 dotted quad without leading zeros or an IPv6 address,
   no zone index (`%eth0`). Every other field (identifiers, regions, ARNs, service names, reject-reason,
   resource-type, sublocation-*, unknown names) is free text (printable ASCII by rule 4). *Choice*: no check
   across fields (a NODATA line with a port is kept as written).
10. start/end: seconds, or milliseconds when the value is above 2^31 (ARCHITECTURE.md); the time must not be
    after 9999-12-31T23:59:59.999Z (*choice*: the last instant a timestamp column can give as a datetime and
    RFC 3339 can write).
11. A stream cut short (gzip truncated: the data ended before the end of the compressed stream) makes its last
    line an error when that line has no LF: it is a piece of a line, not a record. A complete stream's last line
    without LF is an ordinary line.

12. *Choice* (the README's format detection; found by the long fuzz, seeds 5003045 and 5004473): without a
    configured field order, an object is flow log text only if one of its first 16 non-blank lines (among the
    first 64 lines of the first 64 KiB after leading whitespace) is a header or starts with a number (a v2
    record's version); otherwise it is one error on line 1 ("not a recognized flow log format") and no records,
    even if valid records come later: a file of something else (a README beside the logs) is reported once
    rather than line by line. With a configured order, anything not starting like JSON is text. The sniff splits
    like Python's `str.split()` (any whitespace); a header is judged by rule 7.

Output mapping (ARCHITECTURE.md table): account-id account, region, az-id zone, vpc-id vpc, subnet-id subnet,
interface-id interface, instance-id instance, srcaddr/dstaddr/pkt-srcaddr/pkt-dstaddr 16-byte addresses (IPv4 as
::ffff:a.b.c.d), srcport src_port, dstport dst_port, protocol, packets, bytes, start/end time_start/time_end
(datetimes in UTC), action/log-status lower-cased, flow-direction direction, tcp-flags tcp_flags, traffic-path
traffic_path, reject-reason reject_reason; provider "aws", source as given, sampling_rate 1. Every other field
goes to `extra` as (name, text as written) pairs in field order, nulls left out; `extra` is None when the field
order has no such field at all, and [] when it has some but all are null on that line (the shape of a
map<string,string> column through `to_pylist()`). *Choice*: an integer without a column (version,
packets-lost-*) is kept in `extra` as written (`02` stays `02`): "every record read as written".

Errors are (line, reason class) with 1-based line numbers; stream-level problems (a truncated or corrupt gzip)
have line None. The reason classes are the oracle's own words, for the report: the tests compare line numbers.

gzip (`gunzip`): members are read by hand per RFC 1952 with raw inflate, so that the data of a member whose
CRC32 or ISIZE trailer is wrong is still delivered (issue #10 deliverable 3: zcat's choice), with one problem
"gzip-trailer" for that member; a stream that ends early delivers what inflated and one problem "gzip-truncated".
*Choice* (found by the long fuzz, seed 10): what "inflated" means for a stream cut inside compressed data is not
exact. zlib decodes every symbol whose bits are all there; the parser's inflater (isal, for speed) keeps back the
last symbol or two it cannot yet confirm, so the parser may see a prefix of zlib's output shorter by up to one
deflate symbol (a literal, or a match of at most 258 bytes; measured: 0-2 bytes, in about 7% of random cuts). The
truncation is reported either way; what can differ is only the end: a fragment of a cut line seen or not, or the LF
of the last whole line held back (which makes that line the cut one). `cut_alternatives` gives the outcomes of
those shorter prefixes, and a parser outcome that equals one of them agrees.
"""

from __future__ import annotations

import ipaddress
import math
import re
import struct
import zlib
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

import pyarrow as pa

from collector.schema import COLUMNS

# FORMATS.md, AWS table, copied as written there (v6 is Transit Gateway).
_DOC_TABLE = {
    2: "version account-id interface-id srcaddr dstaddr srcport dstport protocol packets bytes start end action "
    "log-status",
    3: "vpc-id subnet-id instance-id tcp-flags type pkt-srcaddr pkt-dstaddr",
    4: "region az-id sublocation-type sublocation-id",
    5: "pkt-src-aws-service pkt-dst-aws-service flow-direction traffic-path",
    6: "resource-type tgw-id tgw-attachment-id tgw-src-vpc-account-id tgw-dst-vpc-account-id tgw-src-vpc-id "
    "tgw-dst-vpc-id tgw-src-subnet-id tgw-dst-subnet-id tgw-src-eni tgw-dst-eni tgw-src-az-id tgw-dst-az-id "
    "tgw-pair-attachment-id packets-lost-no-route packets-lost-blackhole packets-lost-mtu-exceeded "
    "packets-lost-ttl-expired",
    7: "ecs-cluster-arn ecs-cluster-name ecs-container-instance-arn ecs-container-instance-id ecs-container-id "
    "ecs-second-container-id ecs-service-name ecs-task-definition-arn ecs-task-arn ecs-task-id",
    8: "reject-reason",
}
FIELDS_BY_VERSION: dict[int, tuple[str, ...]] = {v: tuple(text.split()) for v, text in _DOC_TABLE.items()}
KNOWN: frozenset[str] = frozenset(n for names in FIELDS_BY_VERSION.values() for n in names)
DEFAULT_ORDER: tuple[str, ...] = FIELDS_BY_VERSION[2]
# FORMATS.md, Transit Gateway default format, in its order.
_TGW_DOC = (
    "version resource-type account-id tgw-id tgw-attachment-id tgw-src-vpc-account-id tgw-dst-vpc-account-id "
    "tgw-src-vpc-id tgw-dst-vpc-id tgw-src-subnet-id tgw-dst-subnet-id tgw-src-eni tgw-dst-eni tgw-src-az-id "
    "tgw-dst-az-id tgw-pair-attachment-id srcaddr dstaddr srcport dstport protocol packets bytes start end "
    "log-status type packets-lost-no-route packets-lost-blackhole packets-lost-mtu-exceeded "
    "packets-lost-ttl-expired tcp-flags region flow-direction pkt-src-aws-service pkt-dst-aws-service"
)
TGW_DEFAULT_ORDER: tuple[str, ...] = tuple(_TGW_DOC.split())

MAX_LINE = 1 << 20
BOM = b"\xef\xbb\xbf"
I64 = 2**63 - 1
MS_ABOVE = 2**31
LAST_MS = int(
    (datetime(9999, 12, 31, 23, 59, 59, 999000, tzinfo=UTC) - datetime(1970, 1, 1, tzinfo=UTC))
    / timedelta(milliseconds=1)
)
EPOCH = datetime(1970, 1, 1, tzinfo=UTC)

# field -> (lowest, highest) for integers with a column or documented as numbers.
INT_RANGE: dict[str, tuple[int, int]] = {
    "srcport": (0, 65535),
    "dstport": (0, 65535),
    "protocol": (0, 255),
    "tcp-flags": (0, 255),
    "traffic-path": (1, 8),
    "packets": (0, I64),
    "bytes": (0, I64),
    "version": (0, I64),
    "packets-lost-no-route": (0, I64),
    "packets-lost-blackhole": (0, I64),
    "packets-lost-mtu-exceeded": (0, I64),
    "packets-lost-ttl-expired": (0, I64),
}
ENUMS: dict[str, frozenset[str]] = {
    "action": frozenset({"ACCEPT", "REJECT"}),
    "log-status": frozenset({"OK", "NODATA", "SKIPDATA"}),
    "flow-direction": frozenset({"ingress", "egress"}),
    "type": frozenset({"IPv4", "IPv6", "EFA"}),
}
TEXT_COLUMN = {
    "account-id": "account",
    "region": "region",
    "az-id": "zone",
    "vpc-id": "vpc",
    "subnet-id": "subnet",
    "interface-id": "interface",
    "instance-id": "instance",
    "reject-reason": "reject_reason",
}
ADDRESS_COLUMN = {
    "srcaddr": "src_addr",
    "dstaddr": "dst_addr",
    "pkt-srcaddr": "pkt_src_addr",
    "pkt-dstaddr": "pkt_dst_addr",
}
INT_COLUMN = {
    "srcport": "src_port",
    "dstport": "dst_port",
    "protocol": "protocol",
    "packets": "packets",
    "bytes": "bytes",
    "tcp-flags": "tcp_flags",
    "traffic-path": "traffic_path",
}
LOWERED_COLUMN = {"action": "action", "log-status": "log_status"}
AS_IS_COLUMN = {"flow-direction": "direction"}
TIME_COLUMN = {"start": "time_start", "end": "time_end"}
HAS_COLUMN = (
    frozenset(TEXT_COLUMN)
    | set(ADDRESS_COLUMN)
    | set(INT_COLUMN)
    | set(LOWERED_COLUMN)
    | set(AS_IS_COLUMN)
    | set(TIME_COLUMN)
)

_NOT_PRINTABLE = re.compile(rb"[^\x20-\x7e]")  # rule 4; a regex only because lines may be 1 MiB
_NAME_SHAPE = re.compile(r"[a-z][a-z0-9-]*\Z")
_IPV4 = re.compile(r"(0|[1-9][0-9]{0,2})(\.(0|[1-9][0-9]{0,2})){3}\Z")


@dataclass
class OracleResult:
    records: list[dict] = field(default_factory=list)
    errors: list[tuple[int | None, str]] = field(default_factory=list)
    unrecognized: bool = False  # the object is not recognized as flow log text (rule 12): one error, no records

    @property
    def error_lines(self) -> list[int]:
        return [line for line, _ in self.errors if line is not None]

    @property
    def stream_errors(self) -> list[str]:
        return [reason for line, reason in self.errors if line is None]


class BadValue(Exception):
    """One field of a data line that is not what the docs allow."""


def _digits(name: str, text: str) -> int:
    """Decimal digits of any length; leading zeros are stripped first because CPython refuses int() of more than
    4300 digits, and anything still longer than 20 digits is above 2^64 anyway."""
    if not (text.isascii() and text.isdigit()):
        raise BadValue(name)
    significant = text.lstrip("0") or "0"
    if len(significant) > 20:
        raise BadValue(name)
    return int(significant)


def _integer(name: str, text: str) -> int:
    value = _digits(name, text)
    low, high = INT_RANGE[name]
    if not low <= value <= high:
        raise BadValue(name)
    return value


def _time(name: str, text: str) -> datetime:
    value = _digits(name, text)
    ms = value if value > MS_ABOVE else value * 1000
    if ms > LAST_MS:
        raise BadValue(name)
    return EPOCH + timedelta(milliseconds=ms)


def _address(name: str, text: str) -> bytes:
    if "%" in text or not text.isascii():
        raise BadValue(name)
    if "." in text and ":" not in text:
        if not _IPV4.match(text) or any(int(part) > 255 for part in text.split(".")):
            raise BadValue(name)
        return b"\x00" * 10 + b"\xff\xff" + bytes(int(part) for part in text.split("."))
    try:
        return ipaddress.IPv6Address(text).packed
    except ValueError:
        raise BadValue(name) from None


def _record(order: tuple[str, ...], tokens: list[str | None], source: str, *, null: str | None = "-") -> dict:
    rec: dict = dict.fromkeys(COLUMNS)
    rec["provider"] = "aws"
    rec["source"] = source
    rec["sampling_rate"] = 1
    extra: list[tuple[str, str]] | None = None if all(n in HAS_COLUMN for n in order) else []
    for name, text in zip(order, tokens, strict=True):
        if text is None or text == null:
            continue
        if name in INT_RANGE:
            value = _integer(name, text)
            if name in INT_COLUMN:
                rec[INT_COLUMN[name]] = value
                continue
        elif name in ENUMS and text not in ENUMS[name]:
            raise BadValue(name)
        if name in TIME_COLUMN:
            rec[TIME_COLUMN[name]] = _time(name, text)
        elif name in ADDRESS_COLUMN:
            rec[ADDRESS_COLUMN[name]] = _address(name, text)
        elif name in TEXT_COLUMN:
            rec[TEXT_COLUMN[name]] = text
        elif name in LOWERED_COLUMN:
            rec[LOWERED_COLUMN[name]] = text.lower()
        elif name in AS_IS_COLUMN:
            rec[AS_IS_COLUMN[name]] = text
        else:
            assert extra is not None
            extra.append((name, text))
    rec["extra"] = extra
    return rec


def _is_header(tokens: list[str], first: bool) -> bool:
    """Rule 7; `first` is not used: the rule is the same on every line."""
    return all(_NAME_SHAPE.match(t) for t in tokens) and 2 * sum(t in KNOWN for t in tokens) >= len(tokens)


def read_text(
    data: bytes, fields: tuple[str, ...] | None = None, *, source: str = "s", cut: bool = False
) -> OracleResult:
    """Records and errors of one decompressed stream; `fields` is the order before any header (default v2);
    `cut`: the stream ended early (a truncated gzip), so a last line without LF is a piece of a line."""
    out = OracleResult()
    order = tuple(fields) if fields else DEFAULT_ORDER
    start = len(BOM) if data.startswith(BOM) else 0
    pos = start
    number = 0
    while pos < len(data):
        number += 1
        lf = data.find(b"\n", pos)
        if lf < 0:
            line, pos, terminated = data[pos:], len(data), False
        else:
            line, pos, terminated = data[pos:lf], lf + 1, True
        if terminated and line.endswith(b"\r"):
            line = line[:-1]
        if cut and not terminated:
            out.errors.append((number, "cut"))
            continue
        if len(line) > MAX_LINE:
            out.errors.append((number, "too-long"))
            continue
        if _NOT_PRINTABLE.search(line):
            out.errors.append((number, "byte"))
            continue
        text = line.decode("ascii")
        tokens = text.split(" ")
        tokens = [t for t in tokens if t]
        if not tokens:
            continue
        first = number == 1
        if _is_header(tokens, first):
            seen: dict[str, int] = {}
            named = []
            for t in tokens:
                k = seen.get(t, 0)
                seen[t] = k + 1
                named.append(t if k == 0 else f"{t}#{k}")
            order = tuple(named)
            continue
        if len(tokens) != len(order):
            out.errors.append((number, "field-count"))
            continue
        try:
            out.records.append(_record(order, tokens, source))
        except BadValue as exc:
            out.errors.append((number, f"value:{exc}"))
    return out


def _skip_gzip_header(buf: bytes, i: int) -> int | None:
    """Offset of a member's deflate data (RFC 1952, 2.3), or None if the header is cut short."""
    if len(buf) - i < 10:
        return None
    flags = buf[i + 3]
    j = i + 10
    if flags & 4:  # FEXTRA
        if len(buf) - j < 2:
            return None
        (xlen,) = struct.unpack_from("<H", buf, j)
        j += 2 + xlen
    for bit in (8, 16):  # FNAME, FCOMMENT: zero-terminated
        if flags & bit:
            end = buf.find(b"\x00", j)
            if end < 0:
                return None
            j = end + 1
    if flags & 2:  # FHCRC
        j += 2
    return j if j <= len(buf) else None


def gunzip(blob: bytes) -> tuple[bytes, list[str], bool]:
    """(decompressed data, problems, cut) of a gzip stream of one or more members."""
    out = bytearray()
    problems: list[str] = []
    i = 0
    while i < len(blob):
        if blob[i : i + 2] != b"\x1f\x8b" or (len(blob) - i >= 3 and blob[i + 2] != 8):
            problems.append("gzip-garbage")
            return bytes(out), problems, False
        j = _skip_gzip_header(blob, i)
        if j is None:
            problems.append("gzip-truncated")
            return bytes(out), problems, True
        d = zlib.decompressobj(wbits=-15)
        try:
            member = d.decompress(blob[j:]) + d.flush()
        except zlib.error:
            problems.append("gzip-corrupt")
            return bytes(out), problems, True
        out += member
        if not d.eof:
            problems.append("gzip-truncated")
            return bytes(out), problems, True
        trailer = d.unused_data
        if len(trailer) < 8:
            problems.append("gzip-truncated")
            return bytes(out), problems, True
        crc, isize = struct.unpack_from("<II", trailer, 0)
        if crc != zlib.crc32(member) or isize != len(member) & 0xFFFFFFFF:
            problems.append("gzip-trailer")
        i = len(blob) - len(trailer) + 8
    return bytes(out), problems, False


SNIFF_BYTES = 64 << 10
SNIFF_LINES = 16


def recognized(data: bytes, fields: tuple[str, ...] | None) -> bool:
    """Rule 12, on the decompressed stream."""
    stripped = (data[len(BOM) :] if data.startswith(BOM) else data).lstrip()
    if fields:
        return stripped[:1] not in (b"{", b"[")
    if not stripped:
        return True
    pieces = stripped[:SNIFF_BYTES].split(b"\n")[: SNIFF_LINES * 4]
    for line in [p for p in pieces if p.strip()][:SNIFF_LINES]:
        tokens = line.decode("ascii", "replace").split()
        if tokens[0].isdigit() or _is_header(tokens, False):
            return True
    return False


def read_object(blob: bytes, fields: tuple[str, ...] | None = None, *, source: str = "s") -> OracleResult:
    """A whole object as stored: gzip (by its magic) or plain text."""
    if blob[:2] == b"\x1f\x8b":
        data, problems, cut = gunzip(blob)
    else:
        data, problems, cut = blob, [], False
    if not recognized(data, fields):
        return OracleResult([], [(1, "unrecognized")] + [(None, p) for p in problems], unrecognized=True)
    result = read_text(data, fields, source=source, cut=cut)
    result.errors.extend((None, p) for p in problems)
    return result


MAX_HELD_BACK = 258  # the longest deflate symbol's output (a match)


def cut_alternatives(blob: bytes, fields: tuple[str, ...] | None = None, *, source: str = "s") -> list[OracleResult]:
    """For a gzip stream cut inside compressed data, the outcomes of the prefixes of what inflated that are up to
    MAX_HELD_BACK bytes shorter (see the module docstring), one per distinct outcome: ending right after each LF in
    that window (no fragment) or right before it (a fragment). Empty for any other object."""
    if blob[:2] != b"\x1f\x8b":
        return []
    data, problems, cut = gunzip(blob)
    if not cut:
        return []
    low = max(0, len(data) - MAX_HELD_BACK)
    ends = set()
    for q in range(low, len(data)):
        if data[q] == 0x0A:
            ends.update((q, q + 1))
    ends.add(low)
    out = []
    for end in sorted(ends):
        if end < len(data):
            result = read_text(data[:end], fields, source=source, cut=True)
            result.errors.extend((None, p) for p in problems)
            out.append(result)
    return out


# --- Parquet ----------------------------------------------------------------------------------------------------
#
# The text rules above judge each value; what Parquet adds is its column types. FORMATS.md documents INT32/INT64
# for the integer fields and STRING for the rest, and issue #10 asks that integers may widen but never turn into
# strings or booleans, and that a bad value rejects its row, not its batch. The docs are silent on the rest; these
# are the parser's chosen policies (adapters/aws/parse.py `parse_parquet`, `_parquet_columns`, `_parquet_int`; the
# README "Parquet objects" paragraph), restated here:
# - *Choice*: an integer field takes any integer type, value by value through rule 9; a float column too, value by
#   value: a whole finite number is that integer (pandas writes integer columns with nulls as float64), 80.5, NaN
#   or infinity rejects its row only; a string column goes through the text grammar (decimal digits only).
# - *Choice*: a string field takes strings and plain binary; a value that is not valid UTF-8 rejects its row (in
#   any column). Parquet strings are not text lines: rule 4 (printable ASCII) does not apply, and `-` is a value
#   like any other (null is the column's null), so `-` in an enumerated, address or integer field is an error and
#   in a free-text field is kept.
# - *Choice*: a column whose type can never hold its field (an integer field of type bool, null, binary,
#   timestamp, list, struct...; a string field of a number, bool or null type) is refused: one error per refused
#   column per batch, on the batch's first row, and every row of that batch is rejected (null would claim `-`).

PARQUET_BATCH_ROWS = 65536  # parse_parquet's batch size: a refusal costs the rows of one batch


def _is_str(t: pa.DataType) -> bool:
    return pa.types.is_string(t) or pa.types.is_large_string(t)


def _is_bin(t: pa.DataType) -> bool:
    return pa.types.is_binary(t) or pa.types.is_large_binary(t)


def _parquet_token(name: str, t: pa.DataType, value: object) -> str | None:
    """A Parquet value as the text the rules above judge; BadValue if its type's own rule rejects it."""
    if value is None:
        return None
    if isinstance(value, bytes):  # a string column read raw, or a binary one
        try:
            value = value.decode("utf-8")
        except UnicodeDecodeError:
            raise BadValue(name) from None
    if isinstance(value, float):
        if not (math.isfinite(value) and value == math.floor(value) and abs(value) < 2.0**63):
            raise BadValue(name)
        return str(int(value))
    return str(value)


def read_parquet_table(table: pa.Table, *, source: str = "s") -> OracleResult:
    """Records and errors (1-based row numbers) the parser must give for a Parquet object holding `table`, every
    column named like a documented field with `_` for `-` (no unknown names: this oracle leaves `extra` of unknown
    columns out)."""
    out = OracleResult()
    order = tuple(n.replace("_", "-") for n in table.column_names)
    integer = set(INT_RANGE) | set(TIME_COLUMN)
    refused = []
    for name, f in zip(order, table.schema, strict=True):
        t = f.type
        ok = (pa.types.is_integer(t) or pa.types.is_floating(t) or _is_str(t)) if name in integer else None
        if ok is None:
            ok = _is_str(t) or _is_bin(t)
        if not ok:
            refused.append(name)
    # raw bytes of string columns: Arrow would raise on invalid UTF-8 when turning them into Python
    columns = []
    for f, col in zip(table.schema, table.columns, strict=True):
        if _is_str(f.type):
            col = col.cast(pa.large_binary()) if pa.types.is_large_string(f.type) else col.cast(pa.binary())
        columns.append(col.to_pylist() if not pa.types.is_null(f.type) else [None] * table.num_rows)
    for first in range(0, table.num_rows, PARQUET_BATCH_ROWS):
        if refused:
            out.errors.extend((first + 1, f"refused:{name}") for name in refused)
            continue
        for i in range(first, min(first + PARQUET_BATCH_ROWS, table.num_rows)):
            try:
                tokens = [
                    _parquet_token(name, f.type, col[i])
                    for name, f, col in zip(order, table.schema, columns, strict=True)
                ]
                out.records.append(_record(order, tokens, source, null=None))
            except BadValue as exc:
                out.errors.append((i + 1, f"value:{exc}"))
    return out
