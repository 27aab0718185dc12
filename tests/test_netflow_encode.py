"""NetFlow v9 / IPFIX / v5 encoding, checked at the packet level by a small collector written here with `struct`
from RFC 7011 / RFC 3954 (independent of the encoder's numpy layouts): headers, templates field by field, set
lengths and padding, MTU, sequence numbers, and every record decoded back equal to the source rows.

`test_netflow_sink.py` imports `Collector`, `flows_of` and the sample lines from here.
"""

from __future__ import annotations

import ipaddress
import struct
import zlib
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import pyarrow as pa
import pytest

from adapters.aws.parse import parse_text
from collector.sinks.netflow.encode import (
    IpfixEncoder,
    NetflowV5Encoder,
    NetflowV9Encoder,
    domain_id,
    interface_index,
    prepare_flows,
)

# --- source rows -----------------------------------------------------------------------------------------------

# Default-format (v2) records from the AWS VPC Flow Logs user guide, "Flow log record examples".
DOCS_V2 = [
    # accepted SSH traffic
    "2 123456789010 eni-1235b8ca123456789 172.31.16.139 172.31.16.21 20641 22 6 20 4249 1418530010 1418530070 ACCEPT OK",
    # rejected RDP traffic
    "2 123456789010 eni-1235b8ca123456789 172.31.9.69 172.31.9.12 49761 3389 6 20 4249 1418530010 1418530070 REJECT OK",
    # no data recorded during the aggregation interval
    "2 123456789010 eni-1235b8ca123456789 - - - - - - - 1431280876 1431280934 - NODATA",
    # records skipped during the aggregation interval
    "2 123456789010 eni-11111111aaaaaaaaa - - - - - - - 1431280876 1431280934 - SKIPDATA",
    # ICMP: a ping allowed in by the security group ...
    "2 123456789010 eni-1235b8ca123456789 203.0.113.12 172.31.16.139 0 0 1 4 336 1432917027 1432917142 ACCEPT OK",
    # ... and its reply denied by the network ACL
    "2 123456789010 eni-1235b8ca123456789 172.31.16.139 203.0.113.12 0 0 1 4 336 1432917094 1432917142 REJECT OK",
    # IPv6 SSH traffic
    "2 123456789010 eni-1235b8ca123456789 2001:db8:1234:a100:8d6e:3477:df66:f105 2001:db8:1234:a102:3304:8879:34cf:4071"
    " 34892 22 6 54 8855 1477913708 1477913820 ACCEPT OK",
]

# A custom format with tcp-flags and flow-direction (a header line switches the field order, as in S3 objects).
CUSTOM_HEADER = (
    "version account-id interface-id srcaddr dstaddr srcport dstport protocol packets bytes start end action "
    "log-status vpc-id subnet-id instance-id tcp-flags flow-direction"
)
CUSTOM = [
    # The values of the AWS docs' v3 example (52.213.180.42 -> 10.0.0.62, port 5001, SYN) in this field order,
    # with flow-direction added.
    "5 123456789010 eni-1235b8ca123456789 52.213.180.42 10.0.0.62 43416 5001 6 8 568 1566848875 1566848933 ACCEPT OK"
    " vpc-abcdefab012345678 subnet-aaaaaaaa012345678 i-01234567890123456 2 ingress",
    # Synthetic: the reply, rejected on the way out (FIN|ACK).
    "5 123456789010 eni-1235b8ca123456789 10.0.0.62 52.213.180.42 5001 43416 6 4 248 1566848876 1566848934 REJECT OK"
    " vpc-abcdefab012345678 subnet-aaaaaaaa012345678 i-01234567890123456 17 egress",
    # Synthetic: no interface, action, direction or flags (all '-').
    "5 123456789010 - 10.0.0.7 10.0.0.8 53 5353 17 1 80 1566848877 1566848878 - OK - - - - -",
    # Synthetic mixed family: IPv6 source, IPv4 destination (goes out as IPv6 with ::ffff:10.0.0.62).
    "5 123456789010 eni-0fedcba9876543210 2001:db8::5 10.0.0.62 443 50000 6 10 1000 1566848880 1566848933 ACCEPT OK"
    " vpc-abcdefab012345678 subnet-bbbbbbbb012345678 i-0abcdef0123456789 24 egress",
    # Synthetic: start/end in milliseconds (AWS writes them so above 2^31; the parser keeps the milliseconds).
    "5 123456789010 eni-1235b8ca123456789 10.0.0.62 169.254.169.254 41234 80 6 3 180 1566848882250 1566848882999"
    " ACCEPT OK vpc-abcdefab012345678 subnet-aaaaaaaa012345678 i-01234567890123456 27 egress",
    # Synthetic: counters above 2^32 (u64 fields; v5 saturates them).
    "5 123456789010 eni-0fedcba9876543210 10.0.0.9 10.0.0.10 40000 443 6 5000000000 6000000000000 1566848881"
    " 1566848932 ACCEPT OK vpc-abcdefab012345678 subnet-bbbbbbbb012345678 i-0abcdef0123456789 0 ingress",
]

EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
ENI = "eni-1235b8ca123456789"


def batch_of(lines: list[str], source: str = "vpc-flows") -> pa.RecordBatch:
    text = "".join(line + "\n" for line in lines).encode()
    results = list(parse_text([text], unit="test", source=source))
    assert [e for r in results for e in r.errors] == []
    batches = [r.batch for r in results if r.batch.num_rows]
    return pa.Table.from_batches(batches).combine_chunks().to_batches()[0]


def many_lines(n: int, start: int = 1418530010) -> list[str]:
    """The docs' accepted-SSH record, varied per row (port, destination, counters, action) so rows differ."""
    return [
        f"2 123456789010 {ENI} 172.31.16.139 172.31.{i // 250 % 250}.{i % 250 + 1} {1024 + i % 60000} 22 6"
        f" {i % 50 + 1} {4249 + i} {start + i % 100} {start + 60 + i % 100} {'REJECT' if i % 7 == 0 else 'ACCEPT'} OK"
        for i in range(n)
    ]


def ms(value: datetime) -> int:
    return (value - EPOCH) // timedelta(milliseconds=1)


def text_of(address: ipaddress.IPv4Address | ipaddress.IPv6Address) -> str:
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return str(address.ipv4_mapped)
    return str(address)


def expected_flows(batch: pa.RecordBatch) -> list[dict[str, Any]]:
    """What a collector should recover, computed from the rows with the documented mapping (IPv4 rows first, then
    IPv6 rows, each in batch order)."""
    v4, v6 = [], []
    for row in batch.to_pylist():
        if row["log_status"] in ("nodata", "skipdata") or row["src_addr"] is None or row["dst_addr"] is None:
            continue
        src, dst = ipaddress.IPv6Address(row["src_addr"]), ipaddress.IPv6Address(row["dst_addr"])
        index = (zlib.crc32(row["interface"].encode()) & 0x7FFFFFFF or 1) if row["interface"] else 0
        direction = {"ingress": 0, "egress": 1}.get(row["direction"], 255)
        forwarding, fw_event = {"accept": (64, 1), "reject": (129, 3)}.get(row["action"], (0, 0))
        flow = {
            "start": ms(row["time_start"]),
            "end": ms(row["time_end"]),
            "src": text_of(src),
            "dst": text_of(dst),
            "src_port": row["src_port"] or 0,
            "dst_port": row["dst_port"] or 0,
            "protocol": row["protocol"] or 0,
            "tcp_flags": row["tcp_flags"] or 0,
            "packets": row["packets"] or 0,
            "bytes": row["bytes"] or 0,
            "in_if": 0 if direction == 1 else index,
            "out_if": index if direction == 1 else 0,
            "direction": direction,
            "forwarding": forwarding,
            "fw_event": fw_event,
            "sampling": row["sampling_rate"],
            # ICMP type * 256 + code rides in the destination port; icmpTypeCode (32 / 139) repeats it for v9.
            "icmp": (row["dst_port"] or 0) if row["protocol"] in (1, 58) else 0,
        }
        both_v4 = src.ipv4_mapped is not None and dst.ipv4_mapped is not None
        (v4 if both_v4 else v6).append(flow)
    return v4 + v6


# --- an independent collector ------------------------------------------------------------------------------------

STRING_ELEMENTS = {82, 83, 300}  # interfaceName, interfaceDescription, observationDomainName


@dataclass
class Message:
    version: int
    export_time: int  # seconds
    sequence: int
    domain: int  # observation domain / source id / v5 engine type<<8 | engine id
    length: int = 0  # IPFIX header length
    count: int = 0  # v9 / v5 header count
    uptime: int = 0  # v9 / v5 sysUptime
    sampling: int = 0  # v5 header
    sets: list[tuple[int, int]] = field(default_factory=list)  # (set id, set length)
    templates: list[int] = field(default_factory=list)
    records: list[tuple[int, dict[int, Any]]] = field(default_factory=list)  # (template id, element -> value)

    def data(self, *template_ids: int) -> list[dict[int, Any]]:
        return [r for t, r in self.records if t in template_ids]


def _value(element: int, raw: bytes) -> Any:
    if element in (8, 12):
        return ipaddress.IPv4Address(raw)
    if element in (27, 28):
        return ipaddress.IPv6Address(raw)
    if element in STRING_ELEMENTS:
        return raw.rstrip(b"\0").decode("utf-8")
    return int.from_bytes(raw, "big")


class Collector:
    """Decodes IPFIX (RFC 7011), NetFlow v9 (RFC 3954) and v5 datagrams, keeping templates per domain, and checks
    the framing rules as it goes (lengths, counts, padding)."""

    def __init__(self) -> None:
        self.templates: dict[tuple[int, int, int], list[tuple[int, int]]] = {}

    def parse(self, packet: bytes) -> Message:
        (version,) = struct.unpack_from("!H", packet)
        if version == 10:
            return self._ipfix(packet)
        if version == 9:
            return self._v9(packet)
        assert version == 5, version
        return self._v5(packet)

    def _ipfix(self, packet: bytes) -> Message:
        _, length, export, seq, domain = struct.unpack_from("!HHIII", packet)
        assert length == len(packet)
        msg = Message(10, export, seq, domain, length=length)
        offset = 16
        while offset < length:
            set_id, set_len = struct.unpack_from("!HH", packet, offset)
            assert set_len >= 4 and offset + set_len <= length
            body = packet[offset + 4 : offset + set_len]
            msg.sets.append((set_id, set_len))
            if set_id in (2, 3):
                pos = 0
                while pos < len(body):
                    tid, count = struct.unpack_from("!HH", body, pos)
                    pos += 4
                    if set_id == 3:
                        (scope,) = struct.unpack_from("!H", body, pos)
                        assert 1 <= scope <= count
                        pos += 2
                    fields = []
                    for _ in range(count):
                        element, size = struct.unpack_from("!HH", body, pos)
                        assert not element & 0x8000  # no enterprise elements
                        fields.append((element, size))
                        pos += 4
                    self.templates[(10, domain, tid)] = fields
                    msg.templates.append(tid)
            else:
                self._data(msg, (10, domain, set_id), body, align=1)
            offset += set_len
        assert offset == length
        return msg

    def _v9(self, packet: bytes) -> Message:
        _, count, uptime, secs, seq, source = struct.unpack_from("!HHIIII", packet)
        msg = Message(9, secs, seq, source, count=count, uptime=uptime)
        offset = 20
        while offset < len(packet):
            set_id, set_len = struct.unpack_from("!HH", packet, offset)
            assert set_len % 4 == 0 and offset + set_len <= len(packet)  # FlowSets padded to 4 octets
            body = packet[offset + 4 : offset + set_len]
            msg.sets.append((set_id, set_len))
            if set_id == 0:
                pos = 0
                while pos + 4 <= len(body):
                    tid, n = struct.unpack_from("!HH", body, pos)
                    fields = [struct.unpack_from("!HH", body, pos + 4 + 4 * i) for i in range(n)]
                    self.templates[(9, source, tid)] = fields
                    msg.templates.append(tid)
                    pos += 4 + 4 * n
                assert body[pos:] == b"\0" * (len(body) - pos)
            elif set_id == 1:
                tid, scope_len, option_len = struct.unpack_from("!HHH", body)
                n = (scope_len + option_len) // 4
                fields = [struct.unpack_from("!HH", body, 6 + 4 * i) for i in range(n)]
                self.templates[(9, source, tid)] = fields
                msg.templates.append(tid)
                rest = body[6 + 4 * n :]
                assert rest == b"\0" * len(rest) and len(rest) < 4
            else:
                self._data(msg, (9, source, set_id), body, align=4)
            offset += set_len
        assert offset == len(packet)
        assert count == len(msg.templates) + len(msg.records)  # RFC 3954: templates count as records
        return msg

    def _data(self, msg: Message, key: tuple[int, int, int], body: bytes, align: int) -> None:
        fields = self.templates[key]  # a data set before its template is a failure
        size = sum(n for _, n in fields)
        count, padding = divmod(len(body), size)
        assert padding < align and body[count * size :] == b"\0" * padding
        for i in range(count):
            pos, record = i * size, {}
            for element, n in fields:
                record[element] = _value(element, body[pos : pos + n])
                pos += n
            msg.records.append((key[2], record))

    def _v5(self, packet: bytes) -> Message:
        _, count, uptime, secs, nsecs, seq, engine_type, engine_id, sampling = struct.unpack_from("!HHIIIIBBH", packet)
        assert len(packet) == 24 + 48 * count and nsecs == 0
        msg = Message(5, secs, seq, engine_type << 8 | engine_id, count=count, uptime=uptime, sampling=sampling)
        for i in range(count):
            src, dst, hop, inp, out, pkts, octets, first, last, sport, dport, _, flags, proto, *_ = struct.unpack_from(
                "!4s4sIHHIIIIHHBBBBHHBBH", packet, 24 + 48 * i
            )
            assert hop == 0
            record = {8: ipaddress.IPv4Address(src), 12: ipaddress.IPv4Address(dst), 10: inp, 14: out, 2: pkts}
            record.update({1: octets, 22: first, 21: last, 7: sport, 11: dport, 6: flags, 4: proto})
            msg.records.append((0, record))
        return msg


def flows_of(messages: list[Message]) -> list[dict[str, Any]]:
    """Flow records (templates 256/257, or v5) back in the shape of `expected_flows`; v9/v5 times go through the
    collector's arithmetic: boot = unix_secs * 1000 - sysUptime, time = boot + FIRST/LAST_SWITCHED."""
    out = []
    for msg in messages:
        for tid, r in msg.records:
            if tid not in (0, 256, 257):
                continue
            if 152 in r:
                start, end = r[152], r[153]
            else:
                boot = msg.export_time * 1000 - msg.uptime
                start, end = boot + r[22], boot + r[21]
            flow = {
                "start": start,
                "end": end,
                "src": text_of(r.get(8) or r[27]),
                "dst": text_of(r.get(12) or r[28]),
                "src_port": r[7],
                "dst_port": r[11],
                "protocol": r[4],
                "tcp_flags": r[6],
                "packets": r[2],
                "bytes": r[1],
                "in_if": r[10],
                "out_if": r[14],
            }
            if msg.version != 5:
                icmp = r[32] if 32 in r else r[139]
                flow.update(direction=r[61], forwarding=r[89], fw_event=r[233], sampling=r[34], icmp=icmp)
            out.append(flow)
    return out


# --- identifiers and preparation ---------------------------------------------------------------------------------


def test_interface_index_is_crc32_31_bits_and_stable() -> None:
    assert interface_index(ENI) == zlib.crc32(ENI.encode()) & 0x7FFFFFFF == 519544290
    assert domain_id("vpc-flows") == zlib.crc32(b"vpc-flows") & 0x7FFFFFFF
    assert all(0 < interface_index(f"eni-{i:017x}") < 2**31 for i in range(1000))


def test_prepare_splits_families_skips_status_rows_and_maps_fields() -> None:
    batch = batch_of(DOCS_V2 + [CUSTOM_HEADER] + CUSTOM)
    flows = prepare_flows(batch)
    assert flows.skipped == 2  # NODATA and SKIPDATA
    assert (len(flows.v4), len(flows.v6)) == (9, 2)  # the docs IPv6 flow and the mixed-family flow
    assert flows.v4.dtype.itemsize == 63 and flows.v6.dtype.itemsize == 87
    mixed = flows.v6[1]
    assert bytes(mixed["dst"]) == ipaddress.IPv6Address("::ffff:10.0.0.62").packed
    eni = interface_index(ENI)
    # Described by its last row (a custom one: v2 rows carry no vpc / subnet / instance).
    assert flows.interfaces[eni] == (
        ENI,
        "123456789010 vpc-abcdefab012345678 subnet-aaaaaaaa012345678 i-01234567890123456",
    )
    assert prepare_flows(batch_of(DOCS_V2)).interfaces == {eni: (ENI, "123456789010")}
    by_src = {(str(ipaddress.IPv4Address(int(r["src"]))), int(r["src_port"])): r for r in flows.v4}
    reject_rdp = by_src[("172.31.9.69", 49761)]
    assert (reject_rdp["forwarding"], reject_rdp["fw_event"], reject_rdp["direction"]) == (129, 3, 255)
    assert (reject_rdp["in_if"], reject_rdp["out_if"]) == (eni, 0)  # unknown direction: on the input side
    ingress = by_src[("52.213.180.42", 43416)]
    assert (ingress["forwarding"], ingress["fw_event"], ingress["direction"], ingress["tcp_flags"]) == (64, 1, 0, 2)
    assert (ingress["in_if"], ingress["out_if"]) == (eni, 0)
    egress = by_src[("10.0.0.62", 5001)]
    assert (egress["forwarding"], egress["fw_event"], egress["direction"], egress["tcp_flags"]) == (129, 3, 1, 17)
    assert (egress["in_if"], egress["out_if"]) == (0, eni)
    bare = by_src[("10.0.0.7", 53)]
    assert (bare["forwarding"], bare["fw_event"], bare["direction"], bare["in_if"], bare["out_if"]) == (0, 0, 255, 0, 0)
    precise = by_src[("10.0.0.62", 41234)]
    assert (int(precise["start"]), int(precise["end"])) == (1566848882250, 1566848882999)
    big = by_src[("10.0.0.9", 40000)]
    assert (int(big["packets"]), int(big["bytes"]), int(big["sampling"])) == (5_000_000_000, 6_000_000_000_000, 1)
    described = {name: text for name, text in flows.interfaces.values()}
    assert described["eni-0fedcba9876543210"] == (
        "123456789010 vpc-abcdefab012345678 subnet-bbbbbbbb012345678 i-0abcdef0123456789"
    )


def test_icmp_type_code_goes_to_the_icmp_element_of_its_family() -> None:
    # Synthetic rows: AWS itself writes ports 0 for ICMP (DOCS_V2), but a source that keeps type/code in the
    # destination port (the exporter convention) must reach v9 collectors, which read it only from 32 / 139.
    batch = batch_of(
        [
            f"2 123456789010 {ENI} 10.0.0.1 10.0.0.2 0 2048 1 1 84 1566848875 1566848876 ACCEPT OK",  # echo request
            f"2 123456789010 {ENI} 10.0.0.2 10.0.0.1 0 771 1 1 84 1566848875 1566848876 ACCEPT OK",  # port unreach.
            f"2 123456789010 {ENI} 2001:db8::1 2001:db8::2 0 32768 58 1 104 1566848875 1566848876 ACCEPT OK",  # v6
            f"2 123456789010 {ENI} 10.0.0.1 10.0.0.2 40000 2048 6 1 60 1566848875 1566848876 ACCEPT OK",  # TCP
        ]
    )
    flows = prepare_flows(batch)
    assert [int(v) for v in flows.v4["icmp"]] == [2048, 771, 0]
    assert [int(v) for v in flows.v6["icmp"]] == [32768]
    assert [int(v) for v in flows.v4["dst_port"]] == [2048, 771, 2048]  # the port keeps its value
    for enc in (IpfixEncoder(1), NetflowV9Encoder(1, BOOT)):
        collector = Collector()
        collector.parse(enc.template_message(EXPORT))
        messages = [collector.parse(m) for m in enc.data_messages(flows.v4, flows.v6, EXPORT)]
        assert [(r.get(32), r.get(139)) for m in messages for _, r in m.records] == [
            (2048, None), (771, None), (0, None), (None, 32768)
        ]  # fmt: skip
        assert flows_of(messages) == expected_flows(batch)


def test_rows_without_times_or_only_status_produce_nothing() -> None:
    no_times = (
        "version account-id interface-id srcaddr dstaddr srcport dstport protocol packets bytes action log-status"
    )
    batch = batch_of([DOCS_V2[2], no_times, f"2 123456789010 {ENI} 10.0.0.1 10.0.0.2 1 2 6 1 40 ACCEPT OK"])
    flows = prepare_flows(batch)
    assert (len(flows), flows.skipped, flows.interfaces) == (0, 2, {})
    assert IpfixEncoder(1).data_messages(flows.v4, flows.v6, 1e9) == []


# --- IPFIX ----------------------------------------------------------------------------------------------------

IPFIX_V4_SPEC = [(152, 8), (153, 8), (8, 4), (12, 4), (7, 2), (11, 2), (32, 2), (4, 1), (6, 1), (2, 8), (1, 8)]
IPFIX_V4_SPEC += [(10, 4), (14, 4), (61, 1), (89, 1), (233, 1), (34, 4)]
IPFIX_V6_SPEC = IPFIX_V4_SPEC[:2] + [(27, 16), (28, 16)] + IPFIX_V4_SPEC[4:6] + [(139, 2)] + IPFIX_V4_SPEC[7:]


def _fields(spec: list[tuple[int, int]]) -> bytes:
    return b"".join(struct.pack("!HH", e, n) for e, n in spec)


def test_ipfix_template_message_field_by_field() -> None:
    msg = IpfixEncoder(7).template_message(1566849000.9)
    expected = struct.pack("!HHIII", 10, 204, 1566849000, 0, 7)  # version, length, export time, sequence, domain
    expected += struct.pack("!HH", 2, 4 + 2 * (4 + 17 * 4))  # Template Set
    expected += struct.pack("!HH", 256, 17) + _fields(IPFIX_V4_SPEC)
    expected += struct.pack("!HH", 257, 17) + _fields(IPFIX_V6_SPEC)
    # One Options Template Set per options template (pmacct misreads a second one in the same set).
    expected += struct.pack("!HH", 3, 4 + 18) + struct.pack("!HHH", 258, 3, 1) + _fields([(10, 4), (82, 32), (83, 96)])
    expected += struct.pack("!HH", 3, 4 + 14) + struct.pack("!HHH", 259, 2, 1) + _fields([(149, 4), (300, 64)])
    assert msg == expected


@pytest.mark.parametrize("mtu", [256, 512, 1400, 9000])
def test_ipfix_messages_fit_the_mtu_with_exact_lengths(mtu: int) -> None:
    batch = batch_of(many_lines(1500) + DOCS_V2[-1:] * 40)
    flows = prepare_flows(batch)
    enc = IpfixEncoder(3, mtu)
    messages = enc.data_messages(flows.v4, flows.v6, 1418530100)
    per4, per6 = (mtu - 20) // 63, (mtu - 20) // 87
    assert (enc.records_per_message(False), enc.records_per_message(True)) == (per4, per6)
    collector = Collector()
    collector.parse(enc.template_message(1418530100))
    counts = []
    for raw in messages:
        msg = collector.parse(raw)
        assert len(raw) <= mtu and msg.length == len(raw)
        ((set_id, set_len),) = msg.sets  # one set per message, unpadded: 4 + records
        size = 63 if set_id == 256 else 87
        assert set_len == len(raw) - 16 == 4 + size * len(msg.records)
        counts.append((set_id, len(msg.records)))
    v4 = [c for s, c in counts if s == 256]
    v6 = [c for s, c in counts if s == 257]
    assert v4 == [per4] * (1500 // per4) + ([1500 % per4] if 1500 % per4 else [])
    assert v6 == [per6] * (40 // per6) + ([40 % per6] if 40 % per6 else [])
    assert [s for s, _ in counts] == sorted(s for s, _ in counts)  # IPv4 messages, then IPv6


def test_ipfix_sequence_counts_data_records_before_each_message() -> None:
    flows = prepare_flows(batch_of(many_lines(100) + DOCS_V2))
    enc = IpfixEncoder(9)
    collector = Collector()
    stream = [enc.template_message(1e9)]
    stream += enc.data_messages(flows.v4, flows.v6, 1e9)
    stream.append(enc.template_message(1e9))  # a refresh: does not count
    stream += enc.options_messages([(1, "eni-a", "x"), (2, "eni-b", "y")], [(9, "vpc-flows")], 1e9)  # 3 records
    stream += enc.data_messages(flows.v4[:30], flows.v6[:0], 1e9)
    sent = 0
    for raw in stream:
        msg = collector.parse(raw)
        assert msg.sequence == sent and msg.domain == 9
        sent += len(msg.records)
    assert sent == 105 + 3 + 30 and enc.sequence == sent  # 104 IPv4 + 1 IPv6 flows, 3 options records, 30 flows
    assert [len(collector.parse(m).records) for m in stream[1:7]] == [21, 21, 21, 21, 20, 1]


def test_ipfix_sequence_wraps_modulo_2_32() -> None:
    flows = prepare_flows(batch_of(many_lines(30)))
    enc = IpfixEncoder(1)
    enc.sequence = 2**32 - 5
    first, second = enc.data_messages(flows.v4, flows.v6, 1e9)
    assert struct.unpack_from("!I", first, 8)[0] == 2**32 - 5
    assert struct.unpack_from("!I", second, 8)[0] == 16  # 2^32 - 5 + 21
    assert enc.sequence == 25


def test_ipfix_round_trip_recovers_every_row() -> None:
    batch = batch_of(DOCS_V2 + many_lines(500) + [CUSTOM_HEADER] + CUSTOM)
    flows = prepare_flows(batch)
    enc = IpfixEncoder(5)
    collector = Collector()
    messages = [collector.parse(enc.template_message(1.6e9))]
    messages += [collector.parse(m) for m in enc.data_messages(flows.v4, flows.v6, 1.6e9)]
    assert flows_of(messages) == expected_flows(batch)
    assert len(expected_flows(batch)) == 511


def test_ipfix_options_name_interfaces_and_domains() -> None:
    enc = IpfixEncoder(11, mtu=600)
    long_name = "eni-" + "é" * 20  # 44 octets: cut to 32 on a character boundary (4 + 14 * 2 = 32)
    interfaces = [(interface_index(f"eni-{i:017x}"), f"eni-{i:017x}", f"123456789010 vpc-{i}") for i in range(9)]
    interfaces.append((interface_index(long_name), long_name, "d" * 200))
    messages = enc.options_messages(interfaces, [(11, "vpc-flows")], 1e9)
    collector = Collector()
    collector.parse(enc.template_message(1e9))
    decoded = [collector.parse(m) for m in messages]
    assert all(len(m) <= 600 for m in messages)
    assert [len(d.records) for d in decoded] == [4, 4, 3]  # (600 - 16 - 4) // 132 = 4; the domain record fits
    names = [(r[10], r[82], r[83]) for d in decoded for r in d.data(258)]
    assert names[:9] == interfaces[:9]
    assert names[9] == (interface_index(long_name), "eni-" + "é" * 14, "d" * 96)
    assert [(r[149], r[300]) for d in decoded for r in d.data(259)] == [(11, "vpc-flows")]
    assert [d.sequence for d in decoded] == [0, 4, 8] and enc.sequence == 11


# --- NetFlow v9 ---------------------------------------------------------------------------------------------------

BOOT = 1566848875000 - 20 * 86_400_000  # the custom rows start at 1566848875 s
EXPORT = 1566849000.75


def test_v9_template_packet_field_by_field() -> None:
    enc = NetflowV9Encoder(source_id=42, boot_ms=BOOT)
    raw = enc.template_message(EXPORT)
    v4 = [(22, 4), (21, 4)] + IPFIX_V4_SPEC[2:]
    v6 = [(22, 4), (21, 4)] + IPFIX_V6_SPEC[2:]
    uptime = 1566849000 * 1000 - BOOT  # from the whole second: unix_secs * 1000 - uptime == boot
    expected = struct.pack("!HHIIII", 9, 3, uptime, 1566849000, 0, 42)  # count: 2 templates + 1 options template
    expected += struct.pack("!HH", 0, 4 + 2 * (4 + 17 * 4)) + struct.pack("!HH", 256, 17) + _fields(v4)
    expected += struct.pack("!HH", 257, 17) + _fields(v6)
    # Options template: id, scope length, option length, scope (Interface, 4), options; 22 octets padded to 24.
    expected += struct.pack("!HH", 1, 24) + struct.pack("!HHH", 258, 4, 8) + _fields([(2, 4), (82, 32), (83, 96)])
    expected += b"\0\0"
    assert raw == expected and enc.sequence == 1


def test_v9_times_sequence_padding_and_round_trip() -> None:
    batch = batch_of(many_lines(300, start=1566848800) + [CUSTOM_HEADER] + CUSTOM)
    flows = prepare_flows(batch)
    enc = NetflowV9Encoder(42, BOOT)
    collector = Collector()
    stream = [enc.template_message(EXPORT)] + enc.data_messages(flows.v4, flows.v6, EXPORT)
    stream.append(enc.template_message(EXPORT))
    stream += enc.options_messages([(7, "eni-a", "b")], [(42, "ignored in v9")], EXPORT)
    stream += enc.data_messages(flows.v4[:1], flows.v6[:0], EXPORT + 1)
    decoded = [collector.parse(raw) for raw in stream]
    assert [d.sequence for d in decoded] == list(range(len(stream)))  # +1 per packet, templates included
    assert all(len(raw) <= 1400 and len(raw) % 4 == 0 for raw in stream)  # header 20 + FlowSets padded to 4
    data = [d for d in decoded if d.data(256, 257)]
    assert [len(d.records) for d in data[:-1]] == [25] * 12 + [5, 1]  # (1400 - 24) // 55 = 25; 305 IPv4, 1 IPv6
    # FlowSet lengths include the zero padding: 4 + 25 * 55 = 1379 -> 1380, 4 + 5 * 55 = 279 -> 280, 4 + 79 -> 84.
    assert [d.sets[0][1] for d in data[:-1]] == [1380] * 12 + [280, 84]
    assert flows_of(data[:-1]) == expected_flows(batch)  # FIRST/LAST_SWITCHED back to the source milliseconds
    assert flows_of(data[-1:]) == expected_flows(batch)[:1]  # one second later: new sysUptime, same times
    assert [(r[2], r[82], r[83]) for r in decoded[-2].data(258)] == [(7, "eni-a", "b")]
    assert enc.clamped == 0


def test_v9_backdates_packets_of_flows_before_the_virtual_boot() -> None:
    """Flows older than the virtual boot (a 2014 record with a 2019 one, and many 2014 ones) go out in packets of
    their own whose header time reaches back to them: the collector's arithmetic gives the exact milliseconds."""
    lines = DOCS_V2[:1] + many_lines(60) + [CUSTOM_HEADER] + CUSTOM[:1]  # 2014 x 61, 2019 x 1 (BOOT is 2019)
    batch = batch_of(lines)
    flows = prepare_flows(batch)
    enc = NetflowV9Encoder(1, BOOT)
    collector = Collector()
    collector.parse(enc.template_message(EXPORT))
    decoded = [collector.parse(m) for m in enc.data_messages(flows.v4, flows.v6, EXPORT)]
    # 2014 flows: 61 in packets of 25 (sorted by start), backdated; the 2019 flow fits the virtual boot.
    assert [len(d.records) for d in decoded] == [25, 25, 11, 1]
    assert [d.sequence for d in decoded] == [1, 2, 3, 4]  # one sequence per packet, as ever
    assert enc.backdated == 61 and enc.clamped == 0
    for d in decoded[:3]:
        starts = [r[22] for r in d.data(256)]
        boot = d.export_time * 1000 - d.uptime
        assert boot % 1000 == 0 and 1000 <= min(starts) < 2000  # sysUptime reaches back to the oldest flow
        assert d.export_time < 1418540000  # December 2014: when those flows happened, not when they were sent
    assert decoded[3].export_time == int(EXPORT) and decoded[3].uptime == int(EXPORT) * 1000 - BOOT
    key = lambda f: (f["start"], f["src"], f["dst"], f["src_port"])  # noqa: E731
    assert sorted(flows_of(decoded), key=key) == sorted(expected_flows(batch), key=key)
    with pytest.raises(ValueError, match="2\\^32"):
        enc.data_messages(flows.v4, flows.v6, BOOT / 1000 + 50 * 86400)  # sysUptime would wrap


# --- NetFlow v5 ---------------------------------------------------------------------------------------------------


def test_v5_drops_ipv6_saturates_counters_and_folds_interfaces() -> None:
    batch = batch_of(many_lines(60, start=1566848800) + [CUSTOM_HEADER] + CUSTOM)
    flows = prepare_flows(batch)
    enc = NetflowV5Encoder(0x0102, BOOT, mtu=1400)
    messages = enc.data_messages(flows.v4, flows.v6, EXPORT)
    collector = Collector()
    decoded = [collector.parse(m) for m in messages]
    assert [d.count for d in decoded] == [28, 28, 9]  # (1400 - 24) // 48 = 28 (v5 allows 30)
    assert [d.sequence for d in decoded] == [0, 28, 56] and enc.sequence == 65
    assert {(d.domain, d.sampling, d.export_time) for d in decoded} == {(0x0102, 0, 1566849000)}
    assert enc.dropped_v6 == 1 and enc.saturated == 1
    got = flows_of(decoded)
    want = [f for f in expected_flows(batch) if ":" not in f["src"] + f["dst"]]
    for g, w in zip(got, want, strict=True):
        for key in ("in_if", "out_if"):
            w[key] = (w[key] - 1) % 0xFFFF + 1 if w[key] else 0
        w["packets"], w["bytes"] = min(w["packets"], 2**32 - 1), min(w["bytes"], 2**32 - 1)
        assert g == {k: w[k] for k in g}
    assert NetflowV5Encoder(1, BOOT, mtu=1500).records_per_message(False) == 30
