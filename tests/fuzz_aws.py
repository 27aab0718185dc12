"""Hypothesis strategies for hostile AWS flow log input (issue #10, deliverable 6): field orders, records, headers,
mutated lines, whole objects (plain, gzip, truncated gzip, gzip with a bad trailer, concatenated members) and
Parquet tables with columns of any type.

Values are shaped like the AWS documentation examples (FORMATS.md; ids like `eni-1235b8ca123456789`), so a valid
record is one AWS could write. The strategies only make bytes: what those bytes mean is for `oracle_aws` to say,
so a mutation that happens to stay valid (a zero-padded port) is not a problem here.
"""

from __future__ import annotations

import functools
import gzip
import ipaddress
import random
from collections.abc import Callable
from dataclasses import dataclass

import pyarrow as pa
from hypothesis import strategies as st
from oracle_aws import BOM, DEFAULT_ORDER, FIELDS_BY_VERSION, KNOWN, MAX_LINE, TGW_DEFAULT_ORDER

ALL_FIELDS: tuple[str, ...] = tuple(n for v in sorted(FIELDS_BY_VERSION) for n in FIELDS_BY_VERSION[v])
UNKNOWN_FIELDS = (
    "x-custom",
    "future-field",
    "encryption-status",
    "x-new-field",
)  # names AWS might add (FORMATS.md: keep them)
INTEGER_FIELDS = (
    "version", "srcport", "dstport", "protocol", "packets", "bytes", "start", "end", "tcp-flags", "traffic-path",
    "packets-lost-no-route", "packets-lost-blackhole", "packets-lost-mtu-exceeded", "packets-lost-ttl-expired",
)  # fmt: skip
ENUM_FIELDS = ("action", "log-status", "flow-direction", "type")
ADDRESS_FIELDS = ("srcaddr", "dstaddr", "pkt-srcaddr", "pkt-dstaddr")
TEXT_FIELDS = tuple(n for n in ALL_FIELDS if n not in INTEGER_FIELDS + ENUM_FIELDS + ADDRESS_FIELDS)


def _hex(n: int) -> st.SearchStrategy[str]:
    return st.text("0123456789abcdef", min_size=n, max_size=n)


def _id(prefix: str) -> st.SearchStrategy[str]:
    return st.one_of(_hex(8), _hex(17)).map(lambda h: prefix + h)


_account = st.text("0123456789", min_size=12, max_size=12)
_ipv4 = st.ip_addresses(v=4).map(str)
_ipv6 = st.ip_addresses(v=6).map(str)
_seconds = st.integers(0, 2**31)
_millis = st.integers(2**31 + 1, 4102444800000)
_u64 = st.one_of(st.integers(0, 100_000), st.sampled_from([2**63 - 1, 2**63, 2**64 - 1]), st.integers(0, 2**64 - 1))
# Free text: printable ASCII without space; no `{`/`[` so that no object starts like JSON (another format's sniff).
_free = st.text(st.characters(min_codepoint=0x21, max_codepoint=0x7E, exclude_characters="{["), min_size=1, max_size=20)

VALUES: dict[str, st.SearchStrategy[str]] = {
    "version": st.integers(2, 8).map(str),
    "account-id": st.one_of(_account, st.just("unknown")),
    "interface-id": _id("eni-"),
    "srcaddr": st.one_of(_ipv4, _ipv6),
    "dstaddr": st.one_of(_ipv4, _ipv6),
    "srcport": st.integers(0, 65535).map(str),
    "dstport": st.integers(0, 65535).map(str),
    "protocol": st.integers(0, 255).map(str),
    "packets": _u64.map(str),
    "bytes": _u64.map(str),
    "start": st.one_of(_seconds, _millis).map(str),
    "end": st.one_of(_seconds, _millis).map(str),
    "action": st.sampled_from(["ACCEPT", "REJECT"]),
    "log-status": st.sampled_from(["OK", "NODATA", "SKIPDATA"]),
    "vpc-id": _id("vpc-"),
    "subnet-id": _id("subnet-"),
    "instance-id": _id("i-"),
    "tcp-flags": st.sampled_from(["0", "1", "2", "3", "18", "19", "255"]),
    "type": st.sampled_from(["IPv4", "IPv6", "EFA"]),
    "pkt-srcaddr": st.one_of(_ipv4, _ipv6),
    "pkt-dstaddr": st.one_of(_ipv4, _ipv6),
    "region": st.sampled_from(["us-east-1", "ap-southeast-2", "eu-west-1"]),
    "az-id": st.sampled_from(["use1-az1", "apse2-az3"]),
    "sublocation-type": st.sampled_from(["wavelength", "outpost", "localzone"]),
    "sublocation-id": _free,
    "pkt-src-aws-service": st.sampled_from(["S3", "AMAZON", "EC2", "ROUTE53"]),
    "pkt-dst-aws-service": st.sampled_from(["S3", "AMAZON", "DYNAMODB"]),
    "flow-direction": st.sampled_from(["ingress", "egress"]),
    "traffic-path": st.integers(1, 8).map(str),
    "resource-type": st.just("TransitGateway"),
    "reject-reason": st.just("BPA"),
}
for _name in ALL_FIELDS + UNKNOWN_FIELDS:
    if _name not in VALUES:
        if _name.startswith("packets-lost-"):
            VALUES[_name] = st.integers(0, 1000).map(str)
        elif _name.endswith("-account-id"):
            VALUES[_name] = _account
        elif _name.endswith("-arn"):
            VALUES[_name] = _hex(8).map(lambda h: f"arn:aws:ecs:us-east-1:123456789012:x/{h}")
        else:
            VALUES[_name] = _free

_versions_up_to = [sum((FIELDS_BY_VERSION[v] for v in range(2, top + 1) if v != 6), ()) for top in (3, 4, 5, 7, 8)]

field_orders: st.SearchStrategy[tuple[str, ...]] = st.one_of(
    st.just(DEFAULT_ORDER),
    st.just(TGW_DEFAULT_ORDER),
    st.sampled_from(_versions_up_to),
    st.lists(st.sampled_from(ALL_FIELDS + UNKNOWN_FIELDS), min_size=1, max_size=20, unique=True).map(tuple),
)
"""Default v2, the Transit Gateway default, every field of v2..v3, ..v8 (without TGW), and custom subsets in
any order, sometimes with names not in the docs (which a header may carry, FORMATS.md)."""


_VALUE_OR_NULL = {n: v if n == "version" else st.one_of(v, st.just("-")) for n, v in VALUES.items()}


@functools.lru_cache(maxsize=4096)
def record_tokens(order: tuple[str, ...]) -> st.SearchStrategy[list[str]]:
    """One valid record in `order`; any field but version may be `-`. Cached: validating a strategy built per line
    costs more than drawing from it."""
    return st.tuples(*(_VALUE_OR_NULL[n] for n in order)).map(list)


def header_line(order: tuple[str, ...]) -> bytes:
    return " ".join(order).encode()


_BAD_INTEGERS = [
    "0x1BB", "0X1bb", "-0", "-1", "+5", "1.0", "80.5", "1e3", "", "9" * 25, "0" * 23 + "443", "00443", "٣",
    "18446744073709551616", "18446744073709551615", "9223372036854775808", "65536", "256", "0", "9",
]  # fmt: skip
_BAD_ENUMS = ["FOO", "BAR", "accept", "Accept", "ok", "Ok", "INGRESS", "Egress", "ipv4", "IPV6", "NODATA ", "0"]
_BAD_ADDRESSES = ["010.1.1.1", "1.2.3.256", "1.2.3", "fe80::1%eth0", "::ffff:1.2.3.4", "2001:db8::g", "1.2.3.4.5", "::"]
_BAD_BYTES = [b"\r", b"\t", b"\x00", BOM, b"\xff", "\u00e9".encode(), b"\x7f", b"\xc3", b"\x0b", b"\xed\xa0\x80"]


@st.composite
def hostile_line(draw: st.DrawFn, order: tuple[str, ...]) -> bytes:
    """A valid record of `order` with one mutation, as the fuzz corpus of issue #10 found them."""
    tokens = draw(record_tokens(order))
    # Lines near 1 MiB are costly to make and to read: one mutation in about 40.
    kinds = ["name-first", "all-names", "integer", "enum", "address", "byte", "count", "spaces"]
    kind = draw(st.sampled_from(kinds * 50 + ["overlong"]))
    if kind == "name-first":
        tokens[0] = draw(st.sampled_from(ALL_FIELDS))
    elif kind == "all-names":  # made only of known names: a header, whatever it was meant to be
        tokens = draw(st.lists(st.sampled_from(ALL_FIELDS), min_size=1, max_size=len(order) + 1))
    elif kind in ("integer", "enum", "address"):
        pool = {"integer": INTEGER_FIELDS, "enum": ENUM_FIELDS, "address": ADDRESS_FIELDS}[kind]
        where = [i for i, n in enumerate(order) if n in pool]
        if where:
            i = draw(st.sampled_from(where))
            bad = {"integer": _BAD_INTEGERS, "enum": _BAD_ENUMS, "address": _BAD_ADDRESSES}[kind]
            tokens[i] = draw(st.one_of(st.sampled_from(bad), st.integers(-(2**70), 2**70).map(str)))
    elif kind == "count":
        if draw(st.booleans()) and len(tokens) > 1:
            del tokens[draw(st.integers(0, len(tokens) - 1))]
        else:
            tokens.insert(draw(st.integers(0, len(tokens))), draw(_free))
    line = " ".join(tokens).encode()
    if kind == "byte":
        at = draw(st.integers(0, len(line)))
        line = line[:at] + draw(st.sampled_from(_BAD_BYTES)) + line[at:]
    elif kind == "spaces":  # valid: a double space, leading or trailing spaces
        at = draw(st.integers(0, len(line)))
        line = line[:at] + b" " * draw(st.integers(1, 3)) + line[at:]
    elif kind == "overlong":
        # Around the 1 MiB limit: padding an integer with zeros keeps it valid at any length, padding text too.
        target = MAX_LINE + draw(st.sampled_from([-1, 0, 1, 1000]))
        texts = [i for i, n in enumerate(order) if n in TEXT_FIELDS + UNKNOWN_FIELDS or n in INTEGER_FIELDS]
        if texts and len(line) < target:
            i = draw(st.sampled_from(texts))
            pad = target - len(line)
            if tokens[i] == "-":
                tokens[i] = "0"
            tokens[i] = ("0" * pad + tokens[i]) if order[i] in INTEGER_FIELDS else (tokens[i] + "x" * pad)
            line = " ".join(tokens).encode()
    return line


@dataclass(frozen=True)
class TextCase:
    """One decompressed stream and the field order a source would configure for it (None: the v2 default)."""

    data: bytes
    fields: tuple[str, ...] | None
    lines: int  # lines generated, blank and header lines included (what the long mode counts as inputs)


@st.composite
def text_streams(draw: st.DrawFn, max_lines: int = 30) -> TextCase:
    """An object's text: optional BOM, an S3 header or a configured order, then records, hostile lines, blank
    lines and headers (repeated, or changing the order: concatenated objects) in any mix, LF or CRLF."""
    order = draw(field_orders)
    with_header = draw(st.booleans())
    configured = None if with_header or (order == DEFAULT_ORDER and draw(st.booleans())) else order
    crlf = draw(st.sampled_from([b"\n", b"\n", b"\r\n"]))
    out: list[bytes] = []
    if draw(st.integers(0, 9)) == 0:
        out.append(BOM)
    lines: list[bytes] = []
    if with_header:
        first = order
        if "x-new-field" not in order and draw(st.integers(0, 4)) == 0:  # a field AWS added after our list
            first = order + ("x-new-field",)
            order = first
        lines.append(header_line(first))
    n = draw(st.integers(0, max_lines))
    for _ in range(n):
        kind = draw(st.sampled_from(["valid"] * 5 + ["hostile"] * 3 + ["blank", "header"]))
        if kind == "valid":
            lines.append(" ".join(draw(record_tokens(order))).encode())
        elif kind == "hostile":
            lines.append(draw(hostile_line(order)))
        elif kind == "blank":
            lines.append(draw(st.sampled_from([b"", b" ", b"   "])))
        else:
            if draw(st.booleans()):
                order = draw(field_orders)
            lines.append(header_line(order))
    ends = [crlf if draw(st.integers(0, 19)) else draw(st.sampled_from([b"\n", b"\r\n"])) for _ in lines]
    if lines and draw(st.integers(0, 3)) == 0:
        ends[-1] = b""  # no line end after the last line
    out.extend(line + end for line, end in zip(lines, ends, strict=True))
    return TextCase(b"".join(out), configured, len(lines))


@dataclass(frozen=True)
class ObjectCase:
    """An object as stored (the bytes a source hands to the seam) and how it was made, for the report."""

    blob: bytes
    text: TextCase
    container: str


def _gz(data: bytes, level: int) -> bytes:
    return gzip.compress(data, compresslevel=level, mtime=0)


@st.composite
def objects(draw: st.DrawFn, max_lines: int = 30) -> ObjectCase:
    text = draw(text_streams(max_lines))
    container = draw(st.sampled_from(["plain", "gzip", "truncated", "bad-crc", "bad-isize", "members"]))
    level = draw(st.sampled_from([1, 6, 9]))
    data = text.data
    if container == "plain":
        blob = data
    elif container == "members":
        # Concatenated members (concatenated objects, or one object written in pieces): cut anywhere, even mid-line.
        cuts = sorted(draw(st.lists(st.integers(0, len(data)), max_size=3)))
        pieces = [data[a:b] for a, b in zip([0, *cuts], [*cuts, len(data)], strict=True)]
        blob = b"".join(_gz(p, level) for p in pieces)
        if draw(st.integers(0, 3)) == 0:
            blob = blob[: draw(st.integers(2, len(blob) - 1))]
            container = "members-truncated"
    else:
        blob = _gz(data, level)
        if container == "truncated":
            blob = blob[: draw(st.integers(2, len(blob) - 1))]
        elif container == "bad-crc":
            blob = blob[:-8] + bytes(b ^ 0x5A for b in blob[-8:-4]) + blob[-4:]
        elif container == "bad-isize":
            blob = blob[:-4] + ((len(data) + draw(st.integers(1, 1000))) & 0xFFFFFFFF).to_bytes(4, "little")
    return ObjectCase(blob, text, container)


# --- Parquet --------------------------------------------------------------------------------------------------

# FORMATS.md: "ports/protocol/tcp-flags/traffic-path/version INT32, packets/bytes/start/end INT64, the rest STRING";
# column names with `_` for `-`. The fields below are the ones whose Parquet type the docs give for sure.
PARQUET_INT32 = ("version", "srcport", "dstport", "protocol", "tcp_flags", "traffic_path")
PARQUET_INT64 = ("packets", "bytes", "start", "end")
PARQUET_STRING = (
    "account_id", "interface_id", "srcaddr", "dstaddr", "action", "log_status", "flow_direction", "vpc_id",
    "subnet_id", "instance_id", "type", "pkt_srcaddr", "pkt_dstaddr", "region", "az_id",
)  # fmt: skip
PARQUET_TYPES = {
    "int32": pa.int32(),
    "int64": pa.int64(),
    "uint16": pa.uint16(),
    "float": pa.float64(),
    "bool": pa.bool_(),
    "string": pa.string(),
    "binary": pa.binary(),
    "null": pa.null(),
}


def _valid_parquet_value(name: str) -> st.SearchStrategy:
    text = name.replace("_", "-")
    if name in PARQUET_INT32 + PARQUET_INT64:
        return VALUES[text].map(int).filter(lambda v: v < 2**63)  # an INT64 column holds no more (packets, bytes)
    return VALUES[text]


@st.composite
def parquet_value(draw: st.DrawFn, type_name: str) -> object:
    """A value of the given Arrow type; strings may be invalid UTF-8 (written raw, as a foreign writer might)."""
    if type_name in ("int32", "int64", "uint16"):
        lim = {"int32": (-(2**31), 2**31 - 1), "int64": (-(2**63), 2**63 - 1), "uint16": (0, 65535)}[type_name]
        return draw(st.one_of(st.integers(0, 70000), st.integers(*lim)).filter(lambda v: lim[0] <= v <= lim[1]))
    if type_name == "float":
        return draw(st.one_of(st.sampled_from([80.5, 443.0, -1.0, 1e30]), st.floats(allow_nan=True)))
    if type_name == "bool":
        return draw(st.booleans())
    if type_name == "string":
        return draw(st.one_of(st.sampled_from(["1", "443", "ACCEPT", "10.0.0.1", "FOO"]), st.text(max_size=10)))
    if type_name == "binary":
        return draw(st.one_of(st.just(b"\xff\xfe"), st.binary(max_size=10)))
    return None


@dataclass(frozen=True)
class ParquetCase:
    table: pa.Table
    bad_string_rows: frozenset[int]  # rows whose `interface_id` bytes are not valid UTF-8


@st.composite
def parquet_tables(draw: st.DrawFn, max_rows: int = 20) -> ParquetCase:
    """A table of AWS-named columns, each of a random type; `interface_id` (always a string column) numbers the
    rows (`eni-r<i>`) so a test can tell which rows came out, and is sometimes invalid UTF-8 in one row."""
    n = draw(st.integers(1, max_rows))
    names = draw(st.lists(st.sampled_from(PARQUET_INT32 + PARQUET_INT64 + PARQUET_STRING), unique=True, max_size=8))
    names = [x for x in names if x != "interface_id"]
    cols: dict[str, pa.Array] = {}
    bad_rows: set[int] = set()
    ids: list[bytes] = [f"eni-r{i}".encode() for i in range(n)]
    if draw(st.integers(0, 3)) == 0:
        i = draw(st.integers(0, n - 1))
        ids[i] = b"eni-\xff\xfe" + str(i).encode()
        bad_rows.add(i)
    # binary -> string without validation: a string column holding invalid UTF-8, as a broken writer leaves it
    cols["interface_id"] = pa.array(ids, pa.binary()).view(pa.string())
    for name in names:
        type_name = draw(st.sampled_from(list(PARQUET_TYPES) + ["documented"] * 4))
        if type_name == "documented":
            t = pa.int32() if name in PARQUET_INT32 else pa.int64() if name in PARQUET_INT64 else pa.string()
            values = draw(st.lists(st.one_of(_valid_parquet_value(name), st.none()), min_size=n, max_size=n))
            cols[name] = pa.array(values, t)
        else:
            values = draw(st.lists(st.one_of(parquet_value(type_name), st.none()), min_size=n, max_size=n))
            cols[name] = pa.array(values, PARQUET_TYPES[type_name])
    return ParquetCase(pa.table(cols), frozenset(bad_rows))


def canonical_address(raw: bytes | None) -> str | None:
    """16 bytes -> text, IPv4-mapped as a dotted quad: for readable reports."""
    if raw is None:
        return None
    ip = ipaddress.IPv6Address(raw)
    return str(ip.ipv4_mapped) if ip.ipv4_mapped else str(ip)


__all__ = [
    "KNOWN",
    "ObjectCase",
    "ParquetCase",
    "TextCase",
    "field_orders",
    "header_line",
    "hostile_line",
    "objects",
    "parquet_tables",
    "record_tokens",
    "seeded_object",
    "seeded_parquet",
    "text_streams",
]


# --- seeded generation: the same shapes from `random.Random`, for the long mode -----------------------------------
#
# Hypothesis spends most of a long run generating (about 200 lines/s here): for a million inputs the long mode draws
# from these plain-Python mirrors of the strategies above instead, one `random.Random(seed)` per object, so that a
# seed is a reproducer (`seeded_object(seed)` gives the same object again). They keep the strategies' value shapes
# and mutation classes; what they lose is Hypothesis's bias towards boundaries, which the lists of bad values
# (_BAD_INTEGERS, ...) and the explicit boundary picks below stand in for.

_PRINTABLE = [chr(c) for c in range(0x21, 0x7F) if chr(c) not in "{["]
_HEXDIGITS = "0123456789abcdef"
_U64_EDGES = [0, 1, 2**31, 2**32, 2**63 - 1, 2**63, 2**64 - 1]
_INT_EDGES = {"srcport": [0, 65535], "dstport": [0, 65535], "protocol": [0, 255]}


def _r_hex(rng: random.Random, n: int) -> str:
    return "".join(rng.choices(_HEXDIGITS, k=n))


def _r_free(rng: random.Random) -> str:
    return "".join(rng.choices(_PRINTABLE, k=rng.randint(1, 20)))


def _r_account(rng: random.Random) -> str:
    return "".join(rng.choices("0123456789", k=12))


def _r_ipv4(rng: random.Random) -> str:
    if rng.random() < 0.2:
        return rng.choice(["0.0.0.0", "255.255.255.255", "10.0.0.1", "172.31.16.139", "192.0.2.1"])
    return str(ipaddress.IPv4Address(rng.getrandbits(32)))


def _r_ipv6(rng: random.Random) -> str:
    if rng.random() < 0.2:
        return rng.choice(["::", "::1", "2001:db8::1", "fe80::1", "::ffff:10.0.0.1", "64:ff9b::1.2.3.4"])
    groups = [0 if rng.random() < 0.4 else rng.getrandbits(16) for _ in range(8)]  # runs of zeros: `::` forms
    return str(ipaddress.IPv6Address(int.from_bytes(b"".join(g.to_bytes(2, "big") for g in groups), "big")))


def _r_addr(rng: random.Random) -> str:
    return _r_ipv4(rng) if rng.random() < 0.6 else _r_ipv6(rng)


def _r_u64(rng: random.Random) -> str:
    k = rng.random()
    if k < 0.9:
        return str(rng.randint(0, 100_000))
    if k < 0.95:
        return str(rng.choice(_U64_EDGES))
    return str(rng.randint(0, 2**64 - 1))


def _r_time(rng: random.Random) -> str:
    return str(rng.randint(0, 2**31) if rng.random() < 0.6 else rng.randint(2**31 + 1, 4102444800000))


def _r_int(low: int, high: int, edges: list[int] | None = None) -> Callable[[random.Random], str]:
    def draw(rng: random.Random) -> str:
        if edges and rng.random() < 0.1:
            return str(rng.choice(edges))
        return str(rng.randint(low, high))

    return draw


def _r_choice(words: list[str]) -> Callable[[random.Random], str]:
    return lambda rng: rng.choice(words)


R_VALUES: dict[str, Callable[[random.Random], str]] = {
    "version": _r_int(2, 8),
    "account-id": lambda rng: _r_account(rng) if rng.random() < 0.9 else "unknown",
    "interface-id": lambda rng: "eni-" + _r_hex(rng, rng.choice([8, 17])),
    "srcaddr": _r_addr,
    "dstaddr": _r_addr,
    "srcport": _r_int(0, 65535, [0, 65535]),
    "dstport": _r_int(0, 65535, [0, 65535]),
    "protocol": _r_int(0, 255, [0, 255]),
    "packets": _r_u64,
    "bytes": _r_u64,
    "start": _r_time,
    "end": _r_time,
    "action": _r_choice(["ACCEPT", "REJECT"]),
    "log-status": _r_choice(["OK", "NODATA", "SKIPDATA"]),
    "vpc-id": lambda rng: "vpc-" + _r_hex(rng, rng.choice([8, 17])),
    "subnet-id": lambda rng: "subnet-" + _r_hex(rng, rng.choice([8, 17])),
    "instance-id": lambda rng: "i-" + _r_hex(rng, rng.choice([8, 17])),
    "tcp-flags": _r_choice(["0", "1", "2", "3", "18", "19", "255"]),
    "type": _r_choice(["IPv4", "IPv6", "EFA"]),
    "pkt-srcaddr": _r_addr,
    "pkt-dstaddr": _r_addr,
    "region": _r_choice(["us-east-1", "ap-southeast-2", "eu-west-1"]),
    "az-id": _r_choice(["use1-az1", "apse2-az3"]),
    "sublocation-type": _r_choice(["wavelength", "outpost", "localzone"]),
    "sublocation-id": _r_free,
    "pkt-src-aws-service": _r_choice(["S3", "AMAZON", "EC2", "ROUTE53"]),
    "pkt-dst-aws-service": _r_choice(["S3", "AMAZON", "DYNAMODB"]),
    "flow-direction": _r_choice(["ingress", "egress"]),
    "traffic-path": _r_int(1, 8),
    "resource-type": _r_choice(["TransitGateway"]),
    "reject-reason": _r_choice(["BPA"]),
}
for _name in ALL_FIELDS + UNKNOWN_FIELDS:
    if _name not in R_VALUES:
        if _name.startswith("packets-lost-"):
            R_VALUES[_name] = _r_int(0, 1000)
        elif _name.endswith("-account-id"):
            R_VALUES[_name] = _r_account
        elif _name.endswith("-arn"):
            R_VALUES[_name] = lambda rng: f"arn:aws:ecs:us-east-1:123456789012:x/{_r_hex(rng, 8)}"
        else:
            R_VALUES[_name] = _r_free


def r_field_order(rng: random.Random) -> tuple[str, ...]:
    k = rng.randrange(4)
    if k == 0:
        return DEFAULT_ORDER
    if k == 1:
        return TGW_DEFAULT_ORDER
    if k == 2:
        return tuple(rng.choice(_versions_up_to))
    return tuple(rng.sample(ALL_FIELDS + UNKNOWN_FIELDS, rng.randint(1, 20)))


def r_record_tokens(rng: random.Random, order: tuple[str, ...]) -> list[str]:
    """As record_tokens: any field but version is `-` now and then (more often in some objects than others)."""
    nulls = rng.choice([0.0, 0.1, 0.5])
    return [R_VALUES[n](rng) if n == "version" or rng.random() >= nulls else "-" for n in order]


def _r_bad(rng: random.Random, pool: list[str]) -> str:
    return rng.choice(pool) if rng.random() < 0.7 else str(rng.randint(-(2**70), 2**70))


_HOSTILE_KINDS = ["name-first", "all-names", "integer", "enum", "address", "byte", "count", "spaces"]


def r_hostile_line(rng: random.Random, order: tuple[str, ...]) -> bytes:
    """As hostile_line: a valid record of `order` with one mutation of the same classes and odds."""
    tokens = r_record_tokens(rng, order)
    kind = "overlong" if rng.randrange(401) == 0 else rng.choice(_HOSTILE_KINDS)
    if kind == "name-first":
        tokens[0] = rng.choice(ALL_FIELDS)
    elif kind == "all-names":
        tokens = rng.choices(ALL_FIELDS, k=rng.randint(1, len(order) + 1))
    elif kind in ("integer", "enum", "address"):
        pool = {"integer": INTEGER_FIELDS, "enum": ENUM_FIELDS, "address": ADDRESS_FIELDS}[kind]
        where = [i for i, n in enumerate(order) if n in pool]
        if where:
            bad = {"integer": _BAD_INTEGERS, "enum": _BAD_ENUMS, "address": _BAD_ADDRESSES}[kind]
            tokens[rng.choice(where)] = _r_bad(rng, bad)
    elif kind == "count":
        if rng.random() < 0.5 and len(tokens) > 1:
            del tokens[rng.randrange(len(tokens))]
        else:
            tokens.insert(rng.randint(0, len(tokens)), _r_free(rng))
    line = " ".join(tokens).encode()
    if kind == "byte":
        at = rng.randint(0, len(line))
        line = line[:at] + rng.choice(_BAD_BYTES) + line[at:]
    elif kind == "spaces":
        at = rng.randint(0, len(line))
        line = line[:at] + b" " * rng.randint(1, 3) + line[at:]
    elif kind == "overlong":
        target = MAX_LINE + rng.choice([-1, 0, 1, 1000])
        texts = [i for i, n in enumerate(order) if n in TEXT_FIELDS + UNKNOWN_FIELDS or n in INTEGER_FIELDS]
        if texts and len(line) < target:
            i = rng.choice(texts)
            pad = target - len(line)
            if tokens[i] == "-":
                tokens[i] = "0"
            tokens[i] = ("0" * pad + tokens[i]) if order[i] in INTEGER_FIELDS else (tokens[i] + "x" * pad)
            line = " ".join(tokens).encode()
    return line


def r_text_stream(rng: random.Random, max_lines: int) -> TextCase:
    """As text_streams, with up to `max_lines` lines, in another mix: the share of hostile lines is drawn per object
    (1%, 10% or 30%), blank lines and headers 2% each, so that long objects hold long runs of valid records (a
    fast path's ground) with damage among them, and a line that turns out to be a header (only known names) is
    followed by the current header again, so that the lines after it stay records rather than field-count errors."""
    order = r_field_order(rng)
    with_header = rng.random() < 0.5
    configured = None if with_header or (order == DEFAULT_ORDER and rng.random() < 0.5) else order
    crlf = rng.choice([b"\n", b"\n", b"\r\n"])
    lines: list[bytes] = []
    if with_header:
        if "x-new-field" not in order and rng.randrange(5) == 0:
            order = order + ("x-new-field",)
        lines.append(header_line(order))
    hostile = rng.choice([0.01, 0.1, 0.3])
    for _ in range(rng.randint(0, max_lines)):
        k = rng.random()
        if k < hostile:
            lines.append(r_hostile_line(rng, order))
            if all(
                t in KNOWN for t in lines[-1].decode("latin-1").split(" ") if t
            ):  # it is a header: restore the order for what follows
                lines.append(header_line(order))
        elif k < hostile + 0.02:
            lines.append(rng.choice([b"", b" ", b"   "]))
        elif k < hostile + 0.04:
            new = r_field_order(rng) if rng.random() < 0.5 else order
            lines.append(header_line(new))
            if all(n in KNOWN for n in new):  # mid-stream, a header of unknown names is a data line (an error)
                order = new
        else:
            lines.append(" ".join(r_record_tokens(rng, order)).encode())
    ends = [crlf if rng.randrange(20) else rng.choice([b"\n", b"\r\n"]) for _ in lines]
    if lines and rng.randrange(4) == 0:
        ends[-1] = b""
    body = b"".join(line + end for line, end in zip(lines, ends, strict=True))
    return TextCase((BOM if rng.randrange(10) == 0 else b"") + body, configured, len(lines))


def r_object(rng: random.Random, max_lines: int) -> ObjectCase:
    """As objects: the same containers and damage."""
    text = r_text_stream(rng, max_lines)
    container = rng.choice(["plain", "gzip", "truncated", "bad-crc", "bad-isize", "members"])
    level = rng.choice([1, 6, 9])
    data = text.data
    if container == "plain":
        blob = data
    elif container == "members":
        cuts = sorted(rng.randint(0, len(data)) for _ in range(rng.randint(0, 3)))
        pieces = [data[a:b] for a, b in zip([0, *cuts], [*cuts, len(data)], strict=True)]
        blob = b"".join(_gz(p, level) for p in pieces)
        if rng.randrange(4) == 0:
            blob = blob[: rng.randint(2, len(blob) - 1)]
            container = "members-truncated"
    else:
        blob = _gz(data, level)
        if container == "truncated":
            blob = blob[: rng.randint(2, len(blob) - 1)]
        elif container == "bad-crc":
            blob = blob[:-8] + bytes(b ^ 0x5A for b in blob[-8:-4]) + blob[-4:]
        elif container == "bad-isize":
            blob = blob[:-4] + ((len(data) + rng.randint(1, 1000)) & 0xFFFFFFFF).to_bytes(4, "little")
    return ObjectCase(blob, text, container)


def seeded_object(seed: int, max_lines: int = 400) -> ObjectCase:
    """The object of `seed`: what the long mode fuzzes and keeps as a reproducer."""
    return r_object(random.Random(seed), max_lines)


def _r_parquet_value(rng: random.Random, type_name: str) -> object:
    if type_name in ("int32", "int64", "uint16"):
        lo, hi = {"int32": (-(2**31), 2**31 - 1), "int64": (-(2**63), 2**63 - 1), "uint16": (0, 65535)}[type_name]
        return rng.randint(max(lo, 0), min(hi, 70000)) if rng.random() < 0.7 else rng.randint(lo, hi)
    if type_name == "float":
        if rng.random() < 0.5:
            return rng.choice([80.5, 443.0, -1.0, 1e30, float("nan"), float("inf"), -0.0, 2.0**63, 65535.0])
        return rng.uniform(-1e6, 1e6)
    if type_name == "bool":
        return rng.random() < 0.5
    if type_name == "string":
        if rng.random() < 0.7:
            return rng.choice(["1", "443", "ACCEPT", "10.0.0.1", "FOO", "-", "", "0x1BB", "٣", "ok"])
        return "".join(chr(rng.choice([rng.randint(0x20, 0x7E), rng.randint(0x80, 0x2FFF)])) for _ in range(5))
    if type_name == "binary":
        return rng.choice([b"\xff\xfe", b"443", b"ACCEPT", rng.randbytes(rng.randint(0, 10))])
    return None


def _r_valid_parquet_value(rng: random.Random, name: str) -> object:
    text = R_VALUES[name.replace("_", "-")](rng)
    if name in PARQUET_INT32 + PARQUET_INT64:
        return min(int(text), 2**63 - 1)
    return text


def seeded_parquet(seed: int, max_rows: int = 200) -> ParquetCase:
    """As parquet_tables, from a seed."""
    rng = random.Random(seed)
    n = rng.randint(1, max_rows)
    names = rng.sample(
        [x for x in PARQUET_INT32 + PARQUET_INT64 + PARQUET_STRING if x != "interface_id"], rng.randint(0, 8)
    )
    ids = [f"eni-r{i}".encode() for i in range(n)]
    bad_rows: set[int] = set()
    if rng.randrange(4) == 0:
        i = rng.randrange(n)
        ids[i] = b"eni-\xff\xfe" + str(i).encode()
        bad_rows.add(i)
    cols: dict[str, pa.Array] = {"interface_id": pa.array(ids, pa.binary()).view(pa.string())}
    for name in names:
        type_name = rng.choice(list(PARQUET_TYPES) + ["documented"] * 4)
        nulls = rng.choice([0.0, 0.2])
        if type_name == "documented":
            t = pa.int32() if name in PARQUET_INT32 else pa.int64() if name in PARQUET_INT64 else pa.string()
            values = [None if rng.random() < nulls else _r_valid_parquet_value(rng, name) for _ in range(n)]
            cols[name] = pa.array(values, t)
        else:
            values = [None if rng.random() < nulls else _r_parquet_value(rng, type_name) for _ in range(n)]
            cols[name] = pa.array(values, PARQUET_TYPES[type_name])
    return ParquetCase(pa.table(cols), frozenset(bad_rows))
