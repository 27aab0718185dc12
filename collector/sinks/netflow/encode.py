"""FlowBatch -> IPFIX (RFC 7011), NetFlow v9 (RFC 3954) and NetFlow v5 UDP payloads. Pure: no sockets, no clocks.

Why it is built this way:
- Column-wise. A batch becomes two numpy record arrays (IPv4, IPv6) whose dtype *is* the IPFIX data record
  (big-endian, packed, in template order), so an IPFIX message is a raw copy of a run of that array plus a
  vectorized header column; v9 rewrites the two time fields and copies the rest as octets, v5 re-lays fields. No
  Python runs per record, only per message (slicing the finished buffer): ~10 M records per CPU-second from Arrow
  batch to IPFIX datagrams, where `struct.pack` per record manages ~5 M for the packing alone (ARCHITECTURE.md).
- The export time is a parameter and every counter (sequence numbers, clamped times) lives on the encoder, so the
  bytes are a function of the inputs and tests can compare them exactly.

Code points (IANA "IPFIX Information Elements" registry, which NetFlow v9 field types share for these numbers):
- forwardingStatus (89, RFC 7270 sec. 4.12; IANA "Forwarding Status" sub-registry): two status bits + six reason
  bits. accept -> 64 (0b01_000000, "Forwarded: Unknown"); reject -> 129 (0b10_000001, "Dropped: ACL deny") -- a
  security group / NACL deny is an ACL deny, 130 is "ACL drop"; no action -> 0 ("Unknown"). IANA defines it as
  unsigned32 but says to export it as unsigned8: one octet, reduced-size encoding (RFC 7011 sec. 6.2).
- firewallEvent (233, IANA "firewallEvent" registry): accept -> 1 "Flow created", reject -> 3 "Flow denied",
  no action -> 0 "Ignore (invalid)".
- flowDirection (61): 0 ingress, 1 egress (as the registry); no direction -> 255, which the registry leaves
  unassigned: collectors show it as a number instead of guessing a direction.
- ingressInterface (10) / egressInterface (14): `interface_index(name)` of the logging point (ENI, VM, MAC) on the
  side the direction says: ingress -> (idx, 0), egress -> (0, idx), unknown direction -> (idx, 0), because flow
  tools (Akvorado) key on the input interface first and an unknown direction is more often inbound-logged.
- tcpControlBits (6): one octet (reduced-size; IANA has unsigned16 since RFC 7125): pmacct 1.7.7 loses the
  two-octet form (SERVICES.md), and cloud flow logs carry only the low eight flag bits anyway.
- samplingInterval (34): unsigned32; a null sampling rate is sent as 1, since Akvorado drops flows without one.
- icmpTypeCodeIPv4 (32) / icmpTypeCodeIPv6 (139): ICMP / ICMPv6 flows carry type * 256 + code in their
  destination port (the usual exporter convention, which IPFIX collectors read); nfdump reads it over v9 only
  from these elements, so it is sent there too (0 for other protocols).

Padding: IPFIX sets are not padded (RFC 7011 sec. 3.3.1 makes it optional, and collectors read by set length), so
set and message lengths are exactly header + records. v9 FlowSets are padded with zeros to 4 octets, as RFC 3954
sec. 5.3 says the exporter SHOULD; the v9 data FlowSet length counts the padding.
"""

from __future__ import annotations

import functools
import struct
import zlib
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from collector.schema import FlowBatch

# --- identifiers --------------------------------------------------------------------------------------------------


def _stable_31(text: str) -> int:
    value = zlib.crc32(text.encode("utf-8")) & 0x7FFFFFFF
    return value or 1  # 0 means "no interface" / "no specific domain" on the wire


def interface_index(name: str) -> int:
    """A 31-bit nonzero ifIndex for an interface name: CRC-32 of its UTF-8, the same on every machine and restart.

    31 bits because some collectors read ifIndex as a signed 32-bit integer. Collisions are possible (about 2 % for
    10,000 interfaces in one domain); the interface-name options records let a collector show which name it meant.
    """
    return _stable_31(name)


def domain_id(name: str) -> int:
    """Observation domain (IPFIX) / source id (v9) for a source or account name: same rule as `interface_index`,
    so an operator can compute it (`zlib.crc32(name.encode()) & 0x7fffffff`) when configuring a collector."""
    return _stable_31(name)


# --- templates ----------------------------------------------------------------------------------------------------

TEMPLATE_V4 = 256
TEMPLATE_V6 = 257
TEMPLATE_INTERFACES = 258
TEMPLATE_DOMAINS = 259

INTERFACE_NAME_LENGTH = 32  # an ENI id is 21 octets, a GCP VM name at most 63 (kept to 32: names, not essays)
INTERFACE_DESCRIPTION_LENGTH = 96  # "account vpc subnet instance" of an AWS ENI is ~80 octets
DOMAIN_NAME_LENGTH = 64


@dataclass(frozen=True, slots=True)
class Field:
    """One template field: the IANA element id (also the v9 field type for every id used here) and its numpy
    type, whose size is the field length sent in the template."""

    element: int
    name: str
    dtype: Any

    @property
    def length(self) -> int:
        return np.dtype(self.dtype).itemsize


def _common(icmp_element: int) -> tuple[Field, ...]:
    """The fields after the addresses; only the ICMP type/code element differs between the IPv4 and IPv6 layouts.

    ICMP type * 256 + code goes both in the destination port (where IPFIX collectors and nfdump read it) and in
    icmpTypeCodeIPv4 (32) / icmpTypeCodeIPv6 (139), the only place a v9 collector such as nfdump 1.7 looks.
    """
    return (
        Field(7, "src_port", ">u2"),  # sourceTransportPort / L4_SRC_PORT
        Field(11, "dst_port", ">u2"),  # destinationTransportPort / L4_DST_PORT
        Field(icmp_element, "icmp", ">u2"),  # icmpTypeCodeIPv4 / ICMP_TYPE, icmpTypeCodeIPv6 / ICMP_IPv6_TYPE
        Field(4, "protocol", "u1"),  # protocolIdentifier / PROTOCOL
        Field(6, "tcp_flags", "u1"),  # tcpControlBits / TCP_FLAGS, one octet (see module docstring)
        Field(2, "packets", ">u8"),  # packetDeltaCount / IN_PKTS
        Field(1, "bytes", ">u8"),  # octetDeltaCount / IN_BYTES
        Field(10, "in_if", ">u4"),  # ingressInterface / INPUT_SNMP
        Field(14, "out_if", ">u4"),  # egressInterface / OUTPUT_SNMP
        Field(61, "direction", "u1"),  # flowDirection / DIRECTION
        Field(89, "forwarding", "u1"),  # forwardingStatus / FORWARDING_STATUS
        Field(233, "fw_event", "u1"),  # firewallEvent
        Field(34, "sampling", ">u4"),  # samplingInterval / SAMPLING_INTERVAL
    )


_IPFIX_TIMES = (Field(152, "start", ">u8"), Field(153, "end", ">u8"))  # flowStart/EndMilliseconds
_V9_TIMES = (Field(22, "first", ">u4"), Field(21, "last", ">u4"))  # FIRST_SWITCHED / LAST_SWITCHED (sysUptime ms)
# An IPv4 address as a big-endian u4 holds its four octets in wire order (and copies 2x faster than a subarray);
# an IPv6 address is 16 opaque octets.
_V4_ADDRS = (Field(8, "src", ">u4"), Field(12, "dst", ">u4"))
_V6_ADDRS = (Field(27, "src", "V16"), Field(28, "dst", "V16"))

IPFIX_V4_FIELDS: tuple[Field, ...] = _IPFIX_TIMES + _V4_ADDRS + _common(32)
IPFIX_V6_FIELDS: tuple[Field, ...] = _IPFIX_TIMES + _V6_ADDRS + _common(139)
V9_V4_FIELDS: tuple[Field, ...] = _V9_TIMES + _V4_ADDRS + _common(32)
V9_V6_FIELDS: tuple[Field, ...] = _V9_TIMES + _V6_ADDRS + _common(139)


def _dtype(fields: Sequence[Field]) -> np.dtype:
    return np.dtype([(f.name, f.dtype) for f in fields])  # packed (align=False): exactly the wire record


IPFIX_V4 = _dtype(IPFIX_V4_FIELDS)  # 63 octets
IPFIX_V6 = _dtype(IPFIX_V6_FIELDS)  # 87 octets
V9_V4 = _dtype(V9_V4_FIELDS)  # 55 octets
V9_V6 = _dtype(V9_V6_FIELDS)  # 79 octets

# Options records: fixed-length strings, NUL padded (NUL is valid UTF-8, RFC 7011 sec. 6.1.6; nfdump and tshark
# strip it), truncated on a character boundary.
INTERFACE_RECORD = np.dtype(
    [("index", ">u4"), ("name", f"S{INTERFACE_NAME_LENGTH}"), ("description", f"S{INTERFACE_DESCRIPTION_LENGTH}")]
)
DOMAIN_RECORD = np.dtype([("domain", ">u4"), ("name", f"S{DOMAIN_NAME_LENGTH}")])
_INTERFACE_OPTION_FIELDS = ((82, INTERFACE_NAME_LENGTH), (83, INTERFACE_DESCRIPTION_LENGTH))  # interfaceName/Desc


def _template_record(template_id: int, fields: Sequence[Field]) -> bytes:
    out = struct.pack("!HH", template_id, len(fields))
    return out + b"".join(struct.pack("!HH", f.element, f.length) for f in fields)


def _fixed_utf8(text: str | None, size: int) -> bytes:
    """`text` as UTF-8 cut to `size` octets on a character boundary (RFC 7011 sec. 6.1.6 forbids ill-formed UTF-8)."""
    raw = (text or "").encode("utf-8", "replace")
    if len(raw) > size:
        raw = raw[:size].decode("utf-8", "ignore").encode("utf-8")
    return raw


# --- preparing a batch --------------------------------------------------------------------------------------------

_SKIPPED_STATUS = ("nodata", "skipdata")
_ACTION = {"accept": (64, 1), "reject": (129, 3)}  # -> (forwardingStatus, firewallEvent); see module docstring
_DIRECTION = {"ingress": 0, "egress": 1}
DIRECTION_UNKNOWN = 255
_MAPPED_WORD = np.frombuffer(b"\0\0\xff\xff", dtype=np.uint32)[0]  # octets 8..11 of ::ffff:a.b.c.d


@dataclass(slots=True)
class FlowArrays:
    """A batch ready to encode: IPv4 and IPv6 records laid out as IPFIX templates 256 / 257.

    `skipped` counts rows that are not flows (NODATA / SKIPDATA) or cannot be placed (no address, no time).
    `interfaces` maps each ifIndex used by the records to (name, description) for the options records.
    """

    v4: np.ndarray
    v6: np.ndarray
    skipped: int = 0
    interfaces: dict[int, tuple[str, str]] = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.v4) + len(self.v6)


def empty_v4() -> np.ndarray:
    return np.empty(0, IPFIX_V4)


def empty_v6() -> np.ndarray:
    return np.empty(0, IPFIX_V6)


def _valid(arr: pa.Array) -> np.ndarray:
    if arr.null_count == 0:
        return np.ones(len(arr), dtype=bool)
    return arr.is_valid().to_numpy(zero_copy_only=False)


def _ints(arr: pa.Array, fill: int, dtype: Any) -> np.ndarray:
    if pa.types.is_timestamp(arr.type):
        arr = arr.cast(pa.int64())
    if arr.null_count:
        arr = arr.fill_null(fill)
    return arr.to_numpy(zero_copy_only=False).astype(dtype, copy=False)


def _addresses(arr: pa.Array) -> np.ndarray:
    """A fixed 16-octet binary column as an (n, 16) uint8 view of its Arrow buffer (no copy; null slots: junk)."""
    n = len(arr)
    if arr.type != pa.binary(16):
        arr = arr.cast(pa.binary(16))
    buf = arr.buffers()[1]
    if buf is None:
        return np.zeros((n, 16), dtype=np.uint8)
    return np.frombuffer(buf, dtype=np.uint8, count=(arr.offset + n) * 16)[arr.offset * 16 :].reshape(n, 16)


def _is_mapped(addr: np.ndarray) -> np.ndarray:
    words = addr.view(np.uint32)  # native order: compare with the prefix read the same way
    return (addr.view(np.uint64)[:, 0] == 0) & (words[:, 2] == _MAPPED_WORD)


def _codes(arr: pa.Array, table: Mapping[str, int], default: int) -> np.ndarray:
    """Map a small-vocabulary column (dictionary or text) through `table`; null and unknown values -> `default`."""
    denc = arr if pa.types.is_dictionary(arr.type) else pc.dictionary_encode(arr)
    values = denc.dictionary.to_pylist()
    lut = np.array([table.get(v, default) for v in values] + [default], dtype=np.int64)
    idx = _ints(denc.indices, len(values), np.int64)
    return lut[idx]


def _interfaces(
    batch: FlowBatch, kept: np.ndarray, cache: dict[str, tuple[int, str]]
) -> tuple[np.ndarray, dict[int, tuple[str, str]]]:
    """Per-row ifIndex (0 when null) and, for indexes used by kept rows, (name, description).

    The description ("account vpc subnet instance") comes from the interface's last row; `cache` keeps name ->
    (index, description) across batches so the few hundred interfaces of a batch cost a dict lookup each.
    """
    arr = batch.column("interface")
    n = len(arr)
    if arr.null_count == n:
        return np.zeros(n, dtype=np.uint32), {}
    denc = arr if pa.types.is_dictionary(arr.type) else pc.dictionary_encode(arr)
    names = denc.dictionary.to_pylist()
    codes = _ints(denc.indices, len(names), np.int64)
    # The last kept row of each interface describes it (deterministic, unlike a fancy assignment with repeats).
    row_of = np.full(len(names) + 1, -1, dtype=np.int64)
    np.maximum.at(row_of, codes[kept], kept)
    used = [int(c) for c in np.flatnonzero(row_of[: len(names)] >= 0) if names[c] is not None]
    missing = [c for c in used if names[c] not in cache]
    if missing:
        rows = pa.array(row_of[missing])
        columns = [batch.column(c).take(rows).to_pylist() for c in ("account", "vpc", "subnet", "instance")]
        for j, code in enumerate(missing):
            name = names[code]
            cache[name] = (interface_index(name), " ".join(str(col[j]) for col in columns if col[j]))
    lut = np.zeros(len(names) + 1, dtype=np.uint32)
    info = {}
    for code in used:
        index, description = cache[names[code]]
        lut[code] = index
        info[index] = (names[code], description)
    return lut[codes], info


def prepare_flows(batch: FlowBatch, interface_cache: dict[str, tuple[int, str]] | None = None) -> FlowArrays:
    """Split a batch into IPFIX-layout IPv4 and IPv6 record arrays, skipping rows that are not flows.

    A row is IPv4 when both addresses are IPv4-mapped; a mixed pair goes to IPv6 with the mapped form, which is
    the same address to any IPv6-aware tool. A missing start or end time takes the other one; a row with neither
    is skipped (a collector would file it at 1970). Null counters, ports, protocol and flags are sent as 0.
    `interface_cache` (name -> (ifIndex, description)) may be shared across batches; it only saves work.
    """
    n = batch.num_rows
    col = batch.column
    status = _codes(col("log_status"), {s: 1 for s in _SKIPPED_STATUS}, 0)
    src_arr, dst_arr = col("src_addr"), col("dst_addr")
    start_arr, end_arr = col("time_start"), col("time_end")
    start_ok, end_ok = _valid(start_arr), _valid(end_arr)
    keep = (status == 0) & _valid(src_arr) & _valid(dst_arr) & (start_ok | end_ok)
    kept = np.flatnonzero(keep)
    src, dst = _addresses(src_arr), _addresses(dst_arr)
    is_v4 = _is_mapped(src) & _is_mapped(dst)
    rows4 = kept[is_v4[kept]]
    rows6 = kept[~is_v4[kept]]
    if len(rows4) == n:
        rows4 = slice(None)  # the usual batch: every row an IPv4 flow, no gather needed

    start = _ints(start_arr, 0, np.int64)
    end = _ints(end_arr, 0, np.int64)
    if not (start_ok.all() and end_ok.all()):
        start, end = np.where(start_ok, start, end), np.where(end_ok, end, start)
    action = _codes(col("action"), {k: i for i, k in enumerate(_ACTION)}, len(_ACTION))
    forwarding = np.array([v[0] for v in _ACTION.values()] + [0], dtype=np.uint8)[action]
    fw_event = np.array([v[1] for v in _ACTION.values()] + [0], dtype=np.uint8)[action]
    direction = _codes(col("direction"), _DIRECTION, DIRECTION_UNKNOWN).astype(np.uint8)
    index, interfaces = _interfaces(batch, kept, {} if interface_cache is None else interface_cache)
    egress = direction == 1
    dst_port = _ints(col("dst_port"), 0, np.uint16)
    protocol = _ints(col("protocol"), 0, np.uint8)
    columns = {
        "start": start,
        "end": end,
        "src_port": _ints(col("src_port"), 0, np.uint16),
        "dst_port": dst_port,
        "icmp": np.where((protocol == 1) | (protocol == 58), dst_port, 0).astype(np.uint16),
        "protocol": protocol,
        "tcp_flags": _ints(col("tcp_flags"), 0, np.uint8),
        "packets": _ints(col("packets"), 0, np.uint64),
        "bytes": _ints(col("bytes"), 0, np.uint64),
        "in_if": np.where(egress, 0, index).astype(np.uint32),
        "out_if": np.where(egress, index, 0).astype(np.uint32),
        "direction": direction,
        "forwarding": forwarding,
        "fw_event": fw_event,
        "sampling": _ints(col("sampling_rate"), 1, np.uint32),
    }
    out = []
    for rows, dtype, view, column in ((rows4, IPFIX_V4, ">u4", 3), (rows6, IPFIX_V6, "V16", 0)):
        count = n if isinstance(rows, slice) else len(rows)
        rec = np.empty(count, dtype)
        if count:
            rec["src"] = src.view(view)[rows, column]
            rec["dst"] = dst.view(view)[rows, column]
            for name, values in columns.items():
                rec[name] = values[rows]
        out.append(rec)
    return FlowArrays(out[0], out[1], n - len(kept), interfaces)


# --- framing ------------------------------------------------------------------------------------------------------


def _pad(length: int, align: int) -> int:
    return -length % align


def _frame(
    records: np.ndarray, per_message: int, header: np.dtype, align: int, set_header: bool = True
) -> list[tuple[np.ndarray, int, int]]:
    """Lay `records` out as messages of `per_message` records: header, set header, records, zero padding.

    Returns (messages, records per message, index of the first record) for the full messages and for the last,
    shorter one; the caller fills the header columns (vectorized) and takes the bytes. v5 has no set header.
    """
    n = len(records)
    full, rest = divmod(n, per_message)
    parts = []
    for count, m, first in ((per_message, full, 0), (rest, 1 if rest else 0, full * per_message)):
        if not m:
            continue
        layout: list[tuple[Any, ...]] = [("hdr", header)]
        body = count * records.dtype.itemsize
        if set_header:
            layout += [("set_id", ">u2"), ("set_len", ">u2")]
            body += 4
        # Records as raw octets: a structured copy would go field by field, this is one memcpy-like pass.
        layout.append(("recs", np.uint8, (count * records.dtype.itemsize,)))
        pad = _pad(body, align)
        if pad:
            layout.append(("pad", f"V{pad}"))
        msgs = np.zeros(m, np.dtype(layout))
        raw = np.ascontiguousarray(records[first : first + m * count]).view(np.uint8)
        msgs["recs"] = raw.reshape(m, count * records.dtype.itemsize)
        if set_header:
            msgs["set_len"] = body + pad
        parts.append((msgs, count, first))
    return parts


def _split(msgs: np.ndarray) -> list[bytes]:
    buf = msgs.tobytes()
    size = msgs.dtype.itemsize
    return [buf[i : i + size] for i in range(0, len(buf), size)]


def _records_per_message(mtu: int, header: int, record: int, align: int) -> int:
    k = (mtu - header - 4) // record
    while k > 0 and header + 4 + k * record + _pad(4 + k * record, align) > mtu:
        k -= 1
    if k < 1:
        raise ValueError(f"mtu {mtu} cannot hold one {record}-octet record")
    return k


# --- IPFIX --------------------------------------------------------------------------------------------------------

IPFIX_VERSION = 10
IPFIX_HEADER = np.dtype(
    [("version", ">u2"), ("length", ">u2"), ("export_time", ">u4"), ("sequence", ">u4"), ("domain", ">u4")]
)
_U32 = 1 << 32


class IpfixEncoder:
    """IPFIX messages of one observation domain; `sequence` counts the Data Records sent (RFC 7011 sec. 3.1).

    Every message carries one set; a template message carries the template set (256, 257) and one options
    template set each for 258 and 259, and does not advance the sequence number (only Data Records do, options data
    records included).
    """

    def __init__(self, observation_domain_id: int, mtu: int = 1400) -> None:
        self.domain = observation_domain_id
        self.mtu = mtu
        self.sequence = 0
        self._per_message = {
            False: _records_per_message(mtu, IPFIX_HEADER.itemsize, IPFIX_V4.itemsize, 1),
            True: _records_per_message(mtu, IPFIX_HEADER.itemsize, IPFIX_V6.itemsize, 1),
        }
        templates = _template_record(TEMPLATE_V4, IPFIX_V4_FIELDS) + _template_record(TEMPLATE_V6, IPFIX_V6_FIELDS)
        interfaces = (
            struct.pack("!HHH", TEMPLATE_INTERFACES, 3, 1)  # scope: ingressInterface
            + struct.pack("!HH", 10, 4)
            + b"".join(struct.pack("!HH", ie, size) for ie, size in _INTERFACE_OPTION_FIELDS)
        )
        domains = (
            struct.pack("!HHH", TEMPLATE_DOMAINS, 2, 1)  # scope: observationDomainId
            + struct.pack("!HHHH", 149, 4, 300, DOMAIN_NAME_LENGTH)  # observationDomainName
        )
        self._template_sets = struct.pack("!HH", 2, 4 + len(templates)) + templates
        # One options template per set: RFC 7011 allows several, but pmacct nfacctd 1.7.7 reads the second one of
        # a set at a wrong offset and then drops its data as "unknown template" (tests/test_netflow_e2e.py).
        for options in (interfaces, domains):
            self._template_sets += struct.pack("!HH", 3, 4 + len(options)) + options
        if IPFIX_HEADER.itemsize + len(self._template_sets) > mtu:
            raise ValueError(f"mtu {mtu} cannot hold the template message")

    def records_per_message(self, ipv6: bool) -> int:
        return self._per_message[ipv6]

    def _header(self, length: int, export_time: float) -> bytes:
        return struct.pack("!HHIII", IPFIX_VERSION, length, int(export_time) % _U32, self.sequence, self.domain)

    def template_message(self, export_time: float) -> bytes:
        return self._header(16 + len(self._template_sets), export_time) + self._template_sets

    def data_messages(self, v4: np.ndarray, v6: np.ndarray, export_time: float) -> list[bytes]:
        """IPv4 messages then IPv6 messages, each at most `mtu` octets, sequence numbers continuing."""
        out: list[bytes] = []
        for records, set_id in ((v4, TEMPLATE_V4), (v6, TEMPLATE_V6)):
            out += self._messages(records, set_id, self._per_message[set_id == TEMPLATE_V6], export_time)
        return out

    def _messages(self, records: np.ndarray, set_id: int, per_message: int, export_time: float) -> list[bytes]:
        out: list[bytes] = []
        for msgs, count, first in _frame(records, per_message, IPFIX_HEADER, 1):
            hdr = msgs["hdr"]
            hdr["version"] = IPFIX_VERSION
            hdr["length"] = msgs.dtype.itemsize
            hdr["export_time"] = int(export_time) % _U32
            hdr["sequence"] = (self.sequence + first + np.arange(len(msgs), dtype=np.uint64) * count) % _U32
            hdr["domain"] = self.domain
            msgs["set_id"] = set_id
            out += _split(msgs)
        self.sequence = (self.sequence + len(records)) % _U32
        return out

    def options_messages(
        self, interfaces: Sequence[tuple[int, str, str]], domains: Sequence[tuple[int, str]], export_time: float
    ) -> list[bytes]:
        """Options data: interface names (template 258) and observation domain names (259), packed into as few
        messages as fit; each message holds one or two sets."""
        sets = [
            (TEMPLATE_INTERFACES, INTERFACE_RECORD.itemsize, [_interface_record(*i) for i in interfaces]),
            (TEMPLATE_DOMAINS, DOMAIN_RECORD.itemsize, [_domain_record(*d) for d in domains]),
        ]
        out: list[bytes] = []
        chunks = _pack_sets(sets, self.mtu - IPFIX_HEADER.itemsize, align=1)
        for chunk, nrecords in chunks:
            out.append(self._header(16 + len(chunk), export_time) + chunk)
            self.sequence = (self.sequence + nrecords) % _U32
        return out


@functools.lru_cache(maxsize=1 << 16)
def _interface_record(index: int, name: str, description: str) -> bytes:
    """One options record of template 258, memoized: the same interfaces are named again at every refresh."""
    return (
        struct.pack("!I", index)
        + _fixed_utf8(name, INTERFACE_NAME_LENGTH).ljust(INTERFACE_NAME_LENGTH, b"\0")
        + _fixed_utf8(description, INTERFACE_DESCRIPTION_LENGTH).ljust(INTERFACE_DESCRIPTION_LENGTH, b"\0")
    )


def _domain_record(ident: int, name: str) -> bytes:
    return struct.pack("!I", ident) + _fixed_utf8(name, DOMAIN_NAME_LENGTH).ljust(DOMAIN_NAME_LENGTH, b"\0")


def _pack_sets(sets: Sequence[tuple[int, int, Sequence[bytes]]], room: int, align: int) -> list[tuple[bytes, int]]:
    """Fill messages of at most `room` octets (after the message header) with sets of (set id, record size,
    records), in order; returns each message body and its record count."""
    out: list[tuple[bytes, int]] = []
    parts: list[bytes] = []
    used = nrecords = 0
    for set_id, size, records in sets:
        i = 0
        while i < len(records):
            fit = min(len(records) - i, (room - used - 4 - (align - 1)) // size)  # room for the worst padding
            if fit < 1:
                if not parts:
                    raise ValueError(f"mtu cannot hold one {size}-octet options record")
                out.append((b"".join(parts), nrecords))
                parts, used, nrecords = [], 0, 0
                continue
            length = 4 + fit * size
            pad = _pad(length, align)
            parts += [struct.pack("!HH", set_id, length + pad), *records[i : i + fit], b"\0" * pad]
            used += length + pad
            nrecords += fit
            i += fit
    if parts:
        out.append((b"".join(parts), nrecords))
    return out


# --- NetFlow v9 ---------------------------------------------------------------------------------------------------

V9_VERSION = 9
V9_HEADER = np.dtype(
    [
        ("version", ">u2"),
        ("count", ">u2"),
        ("uptime", ">u4"),
        ("unix_secs", ">u4"),
        ("sequence", ">u4"),
        ("source_id", ">u4"),
    ]
)
V9_SCOPE_INTERFACE = 2  # RFC 3954 sec. 6.2 scope field types: 1 System, 2 Interface, 3 Line Card, 4 Cache, 5 Template


_BACKDATE_SPAN_MS = 40 * 86_400_000  # starts of one backdated packet lie within this (2^32 ms is 49.7 days)


def _backdate_groups(
    records: np.ndarray, per_message: int
) -> Iterator[tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]]:
    """Flows too old for the virtual boot, sorted by start and cut into packets of `per_message` that never mix
    40-day spans: (records, boot per record, sysUptime per packet, unix_secs per packet). Each packet's header
    reaches back to its oldest flow, one second before it (a FIRST_SWITCHED of 0 reads as "no time" to some
    decoders; tshark 4.0 shows the epoch), on a whole second (unix_secs * 1000 - uptime must be exactly it)."""
    records = records[np.argsort(records["start"], kind="stable")]
    span = np.asarray(records["start"], dtype=np.int64) // _BACKDATE_SPAN_MS
    cuts = [0, *(np.flatnonzero(np.diff(span)) + 1).tolist(), len(records)]
    for lo, hi in zip(cuts[:-1], cuts[1:], strict=True):
        group = records[lo:hi]
        starts = np.arange(0, len(group), per_message)
        oldest = np.minimum.reduceat(np.minimum(group["start"], group["end"]).astype(np.int64), starts)
        newest = np.maximum.reduceat(np.maximum(group["start"], group["end"]).astype(np.int64), starts)
        boot = oldest - oldest % 1000 - 1000
        unix_secs = newest // 1000 + 1
        uptime = np.minimum(unix_secs * 1000 - boot, _U32 - 1)
        yield group, boot[np.arange(len(group)) // per_message], uptime, unix_secs


def _fits(records: np.ndarray, boot_ms: int) -> np.ndarray:
    """Which records' start and end are expressible as sysUptime milliseconds after `boot_ms`."""
    first = records["start"].astype(np.int64) - boot_ms
    last = records["end"].astype(np.int64) - boot_ms
    return (first >= 0) & (first < _U32) & (last >= 0) & (last < _U32)


class NetflowV9Encoder:
    """NetFlow v9 packets of one source id; `sequence` counts packets (RFC 3954 sec. 5.1), templates included.

    FIRST/LAST_SWITCHED are milliseconds of sysUptime. The exporter is given a virtual boot time `boot_ms` (the
    sink picks process start minus 20 days): sysUptime = export time - boot_ms, computed from the *whole-second*
    export time so that a collector's `unix_secs * 1000 - sysUptime` is exactly `boot_ms` and the flow times it
    reconstructs are exact to the millisecond. A flow starting before boot_ms (or more than 2^32 ms after it) goes
    out in packets with their own, backdated header time (`_backdated`, counted in `backdated`). sysUptime itself
    must fit 32 bits: boot_ms must be less than ~49.7 days before the export time (the sink re-bases it after 40
    days).
    Options: interface names (template 258, Interface scope); observation domain names have no v9 scope and are
    not sent.
    """

    def __init__(self, source_id: int, boot_ms: int, mtu: int = 1400) -> None:
        self.source_id = source_id
        self.boot_ms = boot_ms
        self.mtu = mtu
        self.sequence = 0
        self.clamped = 0
        self.backdated = 0
        self._per_message = {
            False: _records_per_message(mtu, V9_HEADER.itemsize, V9_V4.itemsize, 4),
            True: _records_per_message(mtu, V9_HEADER.itemsize, V9_V6.itemsize, 4),
        }
        templates = _template_record(TEMPLATE_V4, V9_V4_FIELDS) + _template_record(TEMPLATE_V6, V9_V6_FIELDS)
        options = struct.pack("!HHH", TEMPLATE_INTERFACES, 4, 4 * len(_INTERFACE_OPTION_FIELDS))
        options += struct.pack("!HH", V9_SCOPE_INTERFACE, 4)
        options += b"".join(struct.pack("!HH", t, size) for t, size in _INTERFACE_OPTION_FIELDS)
        options += b"\0" * _pad(4 + len(options), 4)
        self._template_flowsets = struct.pack("!HH", 0, 4 + len(templates)) + templates
        self._template_flowsets += struct.pack("!HH", 1, 4 + len(options)) + options
        if V9_HEADER.itemsize + len(self._template_flowsets) > mtu:
            raise ValueError(f"mtu {mtu} cannot hold the template packet")

    def records_per_message(self, ipv6: bool) -> int:
        return self._per_message[ipv6]

    def uptime_ms(self, export_time: float) -> int:
        uptime = int(export_time) * 1000 - self.boot_ms
        if not 0 <= uptime < _U32:
            raise ValueError(f"export time {export_time} is not within 2^32 ms after boot_ms {self.boot_ms}")
        return uptime

    def _header(self, count: int, export_time: float) -> bytes:
        uptime = self.uptime_ms(export_time)
        header = struct.pack(
            "!HHIIII", V9_VERSION, count, uptime, int(export_time) % _U32, self.sequence, self.source_id
        )
        self.sequence = (self.sequence + 1) % _U32
        return header

    def template_message(self, export_time: float) -> bytes:
        return self._header(3, export_time) + self._template_flowsets  # two templates, one options template

    def data_messages(self, v4: np.ndarray, v6: np.ndarray, export_time: float) -> list[bytes]:
        uptime = self.uptime_ms(export_time)
        out: list[bytes] = []
        for records, dtype, set_id in ((v4, V9_V4, TEMPLATE_V4), (v6, V9_V6, TEMPLATE_V6)):
            if not len(records):
                continue
            per_message = self._per_message[set_id == TEMPLATE_V6]
            fits = _fits(records, self.boot_ms)
            if not fits.all():
                out += self._backdated(records[~fits], dtype, set_id, per_message)
                records = records[fits]
            v9 = self._relayout(records, dtype, self.boot_ms)
            for msgs, count, _ in _frame(v9, per_message, V9_HEADER, 4):
                self._fill(msgs, count, set_id, uptime, int(export_time))
                out += _split(msgs)
        return out

    def _fill(self, msgs: np.ndarray, count: int, set_id: int, uptime: Any, unix_secs: Any) -> None:
        hdr = msgs["hdr"]
        hdr["version"] = V9_VERSION
        hdr["count"] = count
        hdr["uptime"] = uptime
        hdr["unix_secs"] = np.asarray(unix_secs, dtype=np.int64) % _U32
        hdr["sequence"] = (self.sequence + np.arange(len(msgs), dtype=np.uint64)) % _U32
        hdr["source_id"] = self.source_id
        msgs["set_id"] = set_id
        self.sequence = (self.sequence + len(msgs)) % _U32

    def _backdated(self, records: np.ndarray, dtype: np.dtype, set_id: int, per_message: int) -> list[bytes]:
        """Packets for flows the virtual boot cannot express (older than it: a backfill, a replay of old logs).

        Each packet gets its own header time: unix_secs just after its newest flow and a sysUptime reaching back
        to its oldest, so `unix_secs * 1000 - sysUptime + FIRST_SWITCHED` is again exact to the millisecond.
        Collectors compute flow times per packet (nfdump, pmacct, goflow2 and Akvorado all do); the header then
        tells when the flows happened rather than when they were sent. Flows are sorted by start time, so a
        packet spans minutes, not weeks; only a flow lasting over nine days could still be clamped (counted)."""
        self.backdated += len(records)
        out: list[bytes] = []
        for group, boot, uptime, unix_secs in _backdate_groups(records, per_message):
            v9 = self._relayout(group, dtype, boot)
            for msgs, count, first in _frame(v9, per_message, V9_HEADER, 4):
                index = first // per_message + np.arange(len(msgs))
                self._fill(msgs, count, set_id, uptime[index], unix_secs[index])
                out += _split(msgs)
        return out

    def _relayout(self, records: np.ndarray, dtype: np.dtype, boot: Any) -> np.ndarray:
        out = np.empty(len(records), dtype)
        first = records["start"].astype(np.int64) - boot
        last = records["end"].astype(np.int64) - boot
        bad = (first < 0) | (first >= _U32) | (last < 0) | (last >= _U32)
        if bad.any():
            self.clamped += int(bad.sum())
            first, last = np.clip(first, 0, _U32 - 1), np.clip(last, 0, _U32 - 1)
        out["first"] = first
        out["last"] = last
        # Everything after the two times is the same octets in both layouts: one strided copy, not 14 fields.
        tail = records.dtype.itemsize - 16
        out.view(np.uint8).reshape(-1, dtype.itemsize)[:, 8:] = records.view(np.uint8).reshape(-1, 16 + tail)[:, 16:]
        return out

    def options_messages(
        self, interfaces: Sequence[tuple[int, str, str]], domains: Sequence[tuple[int, str]], export_time: float
    ) -> list[bytes]:
        """Interface names as v9 options data (FlowSet 258); `domains` is accepted for symmetry and not sent."""
        out: list[bytes] = []
        sets = [(TEMPLATE_INTERFACES, INTERFACE_RECORD.itemsize, [_interface_record(*i) for i in interfaces])]
        for body, nrecords in _pack_sets(sets, self.mtu - V9_HEADER.itemsize, align=4):
            out.append(self._header(nrecords, export_time) + body)
        return out


# --- NetFlow v5 ---------------------------------------------------------------------------------------------------

V5_VERSION = 5
V5_MAX_RECORDS = 30
V5_HEADER = np.dtype(
    [
        ("version", ">u2"),
        ("count", ">u2"),
        ("uptime", ">u4"),
        ("unix_secs", ">u4"),
        ("unix_nsecs", ">u4"),
        ("sequence", ">u4"),
        ("engine_type", "u1"),
        ("engine_id", "u1"),
        ("sampling", ">u2"),
    ]
)
V5_RECORD = np.dtype(
    [
        ("src", ">u4"),
        ("dst", ">u4"),
        ("nexthop", ">u4"),
        ("in_if", ">u2"),
        ("out_if", ">u2"),
        ("packets", ">u4"),
        ("bytes", ">u4"),
        ("first", ">u4"),
        ("last", ">u4"),
        ("src_port", ">u2"),
        ("dst_port", ">u2"),
        ("pad1", "u1"),
        ("tcp_flags", "u1"),
        ("protocol", "u1"),
        ("tos", "u1"),
        ("src_as", ">u2"),
        ("dst_as", ">u2"),
        ("src_mask", "u1"),
        ("dst_mask", "u1"),
        ("pad2", ">u2"),
    ]
)  # 48 octets


class NetflowV5Encoder:
    """NetFlow v5 for collectors that speak nothing else. What v5 cannot carry is lost, by design of the format:
    - IPv6 flows: dropped, counted in `dropped_v6`;
    - counters above 2^32-1: saturated rather than wrapped, records counted in `saturated`;
    - action and direction: no fields for them;
    - ifIndex above 16 bits: folded into 1..65535, so collisions are likelier;
    - flows older than `boot_ms`: sent in backdated packets (their own header time), as in v9;
    - sampling: one rate per packet in the header; mixed rates in one packet are reported with the largest.
    `sequence` counts flows sent (the header's flow_sequence); engine type / id are the high / low octet of the
    low 16 bits of the domain id.
    """

    def __init__(self, engine_id: int, boot_ms: int, mtu: int = 1400) -> None:
        self.engine = engine_id & 0xFFFF
        self.boot_ms = boot_ms
        self.per_message = min(V5_MAX_RECORDS, (mtu - V5_HEADER.itemsize) // V5_RECORD.itemsize)
        if self.per_message < 1:
            raise ValueError(f"mtu {mtu} cannot hold one v5 record")
        self.sequence = 0
        self.dropped_v6 = 0
        self.saturated = 0
        self.clamped = 0
        self.backdated = 0

    def records_per_message(self, ipv6: bool) -> int:
        return self.per_message

    def data_messages(self, v4: np.ndarray, v6: np.ndarray, export_time: float) -> list[bytes]:
        self.dropped_v6 += len(v6)
        if not len(v4):
            return []
        uptime = int(export_time) * 1000 - self.boot_ms
        if not 0 <= uptime < _U32:
            raise ValueError(f"export time {export_time} is not within 2^32 ms after boot_ms {self.boot_ms}")
        out: list[bytes] = []
        fits = _fits(v4, self.boot_ms)
        if not fits.all():  # too old for the virtual boot: packets with their own header time, as in v9
            old = v4[~fits]
            self.backdated += len(old)
            for group, boot, uptimes, unix_secs in _backdate_groups(old, self.per_message):
                out += self._messages(group, boot, uptimes, unix_secs)
            v4 = v4[fits]
        if len(v4):
            messages = -(-len(v4) // self.per_message)
            out += self._messages(
                v4, np.int64(self.boot_ms), np.full(messages, uptime), np.full(messages, int(export_time))
            )
        return out

    def _messages(self, v4: np.ndarray, boot: Any, uptime: np.ndarray, unix_secs: np.ndarray) -> list[bytes]:
        """v5 packets of `v4` records; `boot` per record (or one), `uptime` / `unix_secs` per packet."""
        n = len(v4)
        rec = np.zeros(n, V5_RECORD)
        rec["src"], rec["dst"] = v4["src"], v4["dst"]
        for name in ("src_port", "dst_port", "protocol", "tcp_flags"):
            rec[name] = v4[name]
        for name in ("in_if", "out_if"):
            index = v4[name].astype(np.int64)
            rec[name] = np.where(index == 0, 0, (index - 1) % 0xFFFF + 1)
        packets, octets = v4["packets"].astype(np.uint64), v4["bytes"].astype(np.uint64)
        over = (packets >= _U32) | (octets >= _U32)
        if over.any():
            self.saturated += int(over.sum())
        rec["packets"], rec["bytes"] = np.minimum(packets, _U32 - 1), np.minimum(octets, _U32 - 1)
        first = v4["start"].astype(np.int64) - boot
        last = v4["end"].astype(np.int64) - boot
        bad = (first < 0) | (first >= _U32) | (last < 0) | (last >= _U32)
        if bad.any():
            self.clamped += int(bad.sum())
        rec["first"], rec["last"] = np.clip(first, 0, _U32 - 1), np.clip(last, 0, _U32 - 1)
        sampling = v4["sampling"].astype(np.int64)
        out: list[bytes] = []
        for msgs, count, first_rec in _frame(rec, self.per_message, V5_HEADER, 1, set_header=False):
            m = len(msgs)
            index = first_rec // self.per_message + np.arange(m)
            rates = sampling[first_rec : first_rec + m * count].reshape(m, count).max(axis=1)
            hdr = msgs["hdr"]
            hdr["version"] = V5_VERSION
            hdr["count"] = count
            hdr["uptime"] = uptime[index]
            hdr["unix_secs"] = unix_secs[index] % _U32
            hdr["unix_nsecs"] = 0  # uptime is from the whole second, so boot = unix_secs*1000 - uptime exactly
            hdr["sequence"] = (self.sequence + first_rec + np.arange(m, dtype=np.uint64) * count) % _U32
            hdr["engine_type"] = self.engine >> 8
            hdr["engine_id"] = self.engine & 0xFF
            # Sampling: 2 mode bits (01 = packet interval) + 14 bits of interval; unsampled is all zeros.
            hdr["sampling"] = np.where(rates > 1, (1 << 14) | np.minimum(rates, 0x3FFF), 0)
            out += _split(msgs)
        self.sequence = (self.sequence + n) % _U32
        return out
