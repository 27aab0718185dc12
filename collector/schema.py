"""The normalized flow schema: the one place every parser, sink and test takes it from.

A `FlowBatch` is a `pyarrow.RecordBatch` of `SCHEMA`. Batches are columnar on purpose: per-record Python objects
are what make flow pipelines slow (ARCHITECTURE.md, "Performance notes").

Addresses are stored as 16-byte IPv6 (IPv4 as IPv4-mapped `::ffff:a.b.c.d`), the representation IPFIX,
NetFlow v9 and ClickHouse's `IPv6` type consume without conversion; text forms (JSON, syslog) are produced from the
few unique values of a batch, never per row.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Mapping
from dataclasses import dataclass
from socket import AF_INET, AF_INET6, inet_ntop, inet_pton

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

FlowBatch = pa.RecordBatch

DICT_STRING = pa.dictionary(pa.int32(), pa.string())
ADDR = pa.binary(16)
TIME = pa.timestamp("ms", tz="UTC")

SCHEMA = pa.schema(
    [
        pa.field("time_start", TIME),
        pa.field("time_end", TIME),
        pa.field("provider", DICT_STRING),
        pa.field("source", DICT_STRING),
        pa.field("account", pa.string()),
        pa.field("region", pa.string()),
        pa.field("zone", pa.string()),
        pa.field("vpc", pa.string()),
        pa.field("subnet", pa.string()),
        pa.field("interface", pa.string()),
        pa.field("instance", pa.string()),
        pa.field("src_addr", ADDR),
        pa.field("dst_addr", ADDR),
        pa.field("src_port", pa.uint16()),
        pa.field("dst_port", pa.uint16()),
        pa.field("protocol", pa.uint8()),
        pa.field("packets", pa.uint64()),
        pa.field("bytes", pa.uint64()),
        pa.field("action", DICT_STRING),
        pa.field("direction", DICT_STRING),
        pa.field("tcp_flags", pa.uint8()),
        pa.field("log_status", DICT_STRING),
        pa.field("sampling_rate", pa.uint32()),
        pa.field("flow_state", DICT_STRING),
        pa.field("reporter", DICT_STRING),
        pa.field("pkt_src_addr", ADDR),
        pa.field("pkt_dst_addr", ADDR),
        pa.field("traffic_path", pa.uint8()),
        pa.field("reject_reason", pa.string()),
        pa.field("extra", pa.map_(pa.string(), pa.string())),
    ]
)

COLUMNS: tuple[str, ...] = tuple(SCHEMA.names)
ADDRESS_COLUMNS = ("src_addr", "dst_addr", "pkt_src_addr", "pkt_dst_addr")
TIME_COLUMNS = ("time_start", "time_end")

_V4_PREFIX = b"\x00" * 10 + b"\xff\xff"


@dataclass(frozen=True, slots=True)
class ParseError:
    """One rejected record, located so an operator can find it: unit (file/object), 1-based line, reason."""

    unit: str
    line: int | None
    reason: str
    raw: str = ""

    def __str__(self) -> str:
        where = f"{self.unit}:{self.line}" if self.line is not None else self.unit
        return f"{where}: {self.reason}"


def constant(value: str | int | None, n: int, type_: pa.DataType) -> pa.Array:
    """A column holding one value n times; dictionary columns stay one-entry dictionaries (no string copies)."""
    if pa.types.is_dictionary(type_):
        if value is None:
            return pa.nulls(n, type_)
        indices = pa.array(np.zeros(n, dtype=np.int32))
        return pa.DictionaryArray.from_arrays(indices, pa.array([value], pa.string()))
    if value is None:
        return pa.nulls(n, type_)
    return pa.array(np.full(n, value), type_) if pa.types.is_integer(type_) else pa.repeat(pa.scalar(value, type_), n)


def assemble(n: int, columns: Mapping[str, pa.Array]) -> FlowBatch:
    """Build a FlowBatch from the columns a parser knows; every other column is null, types are cast once here."""
    arrays = []
    for field in SCHEMA:
        arr = columns.get(field.name)
        if arr is None:
            arr = pa.nulls(n, field.type)
        elif arr.type != field.type:
            arr = arr.cast(field.type)
        arrays.append(arr)
    return pa.RecordBatch.from_arrays(arrays, schema=SCHEMA)


def empty_batch() -> FlowBatch:
    return assemble(0, {})


_CACHE_LIMIT = 200_000
_MISSING = b""


def _pack(text: str) -> bytes | None:
    # inet_pton is strict (no "1" or "010.1.1.1" as inet_aton would take) and ~6x faster than ipaddress.
    try:
        return _V4_PREFIX + inet_pton(AF_INET, text)
    except (OSError, TypeError, ValueError):  # ValueError: text with an embedded NUL
        pass
    try:
        return inet_pton(AF_INET6, text)
    except (OSError, TypeError, ValueError):
        return None


def parse_addresses(arr: pa.Array, cache: dict[str, bytes | None] | None = None) -> tuple[pa.Array, np.ndarray]:
    """Text addresses -> 16-byte addresses, converting each distinct value once.

    Returns the binary column and a boolean mask of rows whose non-null text is not an IP address. Flow logs repeat
    a few thousand addresses millions of times, so dictionary-encoding first (and a `cache` kept across the batches
    of one object) makes this several million rows/s.
    """
    n = len(arr)
    if n == 0:
        return pa.array([], ADDR), np.zeros(0, dtype=bool)
    if isinstance(arr, pa.ChunkedArray):
        arr = arr.combine_chunks()
    denc = arr if pa.types.is_dictionary(arr.type) else pc.dictionary_encode(arr)
    if cache is None:
        cache = {}
    elif len(cache) > _CACHE_LIMIT:
        cache.clear()
    texts = denc.dictionary.to_pylist()
    packed = [cache.get(t, _MISSING) for t in texts]
    for i, p in enumerate(packed):
        if p is _MISSING:
            packed[i] = cache[texts[i]] = _pack(texts[i])
    out = pc.take(pa.array(packed, ADDR), denc.indices)
    bad_codes = [code for code, p in enumerate(packed) if p is None]
    if bad_codes:
        bad = pc.is_in(denc.indices, value_set=pa.array(bad_codes, denc.indices.type))
        bad_mask = bad.fill_null(False).to_numpy(zero_copy_only=False)
    else:
        bad_mask = np.zeros(n, dtype=bool)
    return out, bad_mask


def address_text(arr: pa.Array) -> pa.Array:
    """16-byte addresses -> canonical text (IPv4-mapped shown as dotted quad), converting each distinct value once."""
    if isinstance(arr, pa.ChunkedArray):
        arr = arr.combine_chunks()
    if len(arr) == 0 or arr.null_count == len(arr):
        return pa.nulls(len(arr), pa.string())
    denc = pc.dictionary_encode(arr)
    # ipaddress, not inet_ntop, for IPv6: glibc writes ::2:3 as ::0.2.0.3, RFC 5952 wants ::2:3.
    texts = [
        inet_ntop(AF_INET, raw[12:]) if raw[:12] == _V4_PREFIX else str(ipaddress.IPv6Address(raw))
        for raw in denc.dictionary.to_pylist()
    ]
    return pc.take(pa.array(texts, pa.string()), denc.indices)


def address_bytes(text: str) -> bytes:
    """One address in the column representation; for tests and configuration, not for hot paths."""
    ip = ipaddress.ip_address(text)
    return _V4_PREFIX + ip.packed if ip.version == 4 else ip.packed
