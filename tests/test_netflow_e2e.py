"""NetFlow v9 / IPFIX end to end against real collectors: nfcapd + nfdump 1.7.1, pmacct nfacctd 1.7.7, and tshark
4.0 as the packet-level oracle (tests/services.py starts them; skipped loudly when missing, failed under CI=true).

First the helpers are proven with hand-built packets (`struct`, one template + IPv4 data records), so a failure
of the sink tests below is the sink's, not the harness's. Then AWS and GCP flow logs (the conformance fixtures, the
bundled examples and tests/fixtures/netflow/aws-edge-cases.log) go through `NetflowSink` to each collector, and every
record read back is compared field by field with the source rows, as multisets (order is not promised); the GCP
conformance records also with hand-checked values.

What each collector can show (found on Debian 12; see the reply of the services work and SERVICES.md):
- nfdump decodes addresses, ports (ICMP: type/code from the destination port, no source port), protocol, TCP
  flags, packets, bytes (u64), in/out interface, flowDirection and the times (IPFIX 152/153 in ms; v9 FIRST/LAST
  from sysUptime). forwardingStatus (89) and firewallEvent (233) only over v9: over IPFIX nfdump 1.7.1 drops them,
  so there the action is checked through tshark, and only the record's arrival through nfdump. samplingInterval
  (34) in data records is ignored by nfdump 1.7.1 (`"sampled": 0`, counters not scaled): checked through tshark.
- nfacctd aggregates by its key (duplicates are summed) and has no direction or action primitive.
- tshark decodes every field and every header: sequences, templates, options records.
"""

from __future__ import annotations

import asyncio
import ipaddress
import re
import socket
import struct
import time
import zlib
from collections import Counter
from collections.abc import Iterable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, NamedTuple

import pyarrow as pa
import pytest
from services import CflowPacket, nfacctd, nfcapd, seconds_to_ms, split_messages, tshark_capture

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parent.parent
CONFORMANCE_AWS = sorted((ROOT / "tests" / "fixtures" / "conformance" / "raw" / "aws").glob("*.log"))
# GCP LogEntry lines (obsrvbl-oss/gcp-flowlogs-reader's SAMPLE_PAYLOADS, see tests/fixtures/conformance/SOURCES.md),
# parsed with the source option `sampling_rate` so that it is seen reaching samplingInterval.
CONFORMANCE_GCP = sorted((ROOT / "tests" / "fixtures" / "conformance" / "raw" / "gcp").glob("*.logentries.jsonl"))
GCP_SAMPLING = 4
EXAMPLES = sorted(p for p in (ROOT / "examples" / "data").rglob("*") if p.is_file())  # AWS and GCP
EDGE_CASES = ROOT / "tests" / "fixtures" / "netflow" / "aws-edge-cases.log"
DAY_MS = 86_400_000
EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
ICMP = (1, 58)


# --- a flow as every collector shows it -----------------------------------------------------------------------


class Flow(NamedTuple):
    """One flow record; None where a collector cannot show the field (it is then left out of the comparison)."""

    src: ipaddress.IPv4Address | ipaddress.IPv6Address
    dst: ipaddress.IPv4Address | ipaddress.IPv6Address
    src_port: int | None
    dst_port: int
    protocol: int
    tcp_flags: int | None
    packets: int
    bytes: int
    start_ms: int
    end_ms: int
    in_if: int
    out_if: int
    direction: int | None = None
    forwarding: int | None = None  # forwardingStatus (89) octet
    fw_event: int | None = None  # firewallEvent (233)
    sampling: int | None = None  # samplingInterval (34)


def address(raw: bytes) -> ipaddress.IPv4Address | ipaddress.IPv6Address:
    addr = ipaddress.IPv6Address(raw)
    return addr.ipv4_mapped or addr


def ms_of(value: datetime) -> int:
    return (value - EPOCH) // timedelta(milliseconds=1)


def _interface_index(name: str) -> int:
    try:
        from collector.sinks.netflow.encode import interface_index
    except ImportError:  # the documented rule, should the helper move
        return zlib.crc32(name.encode()) & 0x7FFFFFFF or 1
    return interface_index(name)


def _domain_id(name: str) -> int:
    try:
        from collector.sinks.netflow.encode import domain_id
    except ImportError:
        return zlib.crc32(name.encode()) & 0x7FFFFFFF or 1
    return domain_id(name)


def expected_flows(batches: Iterable[pa.RecordBatch]) -> list[Flow]:
    """What the sink promises to deliver, restated from its documentation (not computed by its code):
    NODATA/SKIPDATA rows and rows without both addresses or without any time are not flows; a missing start or
    end takes the other; null counters/ports/flags are 0; an IPv4 pair is IPv4, anything else IPv6 (mapped);
    direction ingress 0 / egress 1 / unknown 255; the logging interface is ingressInterface except for egress;
    accept -> (forwardingStatus 64, firewallEvent 1), reject -> (129, 3), no action -> (0, 0); samplingInterval
    the row's sampling rate, 1 when null."""
    out = []
    for batch in batches:
        for row in batch.to_pylist():
            if row["log_status"] in ("nodata", "skipdata") or row["src_addr"] is None or row["dst_addr"] is None:
                continue
            start, end = row["time_start"] or row["time_end"], row["time_end"] or row["time_start"]
            if start is None:
                continue
            index = _interface_index(row["interface"]) if row["interface"] else 0
            direction = {"ingress": 0, "egress": 1}.get(row["direction"], 255)
            src, dst = address(row["src_addr"]), address(row["dst_addr"])
            if src.version != dst.version:  # a mixed pair goes out as IPv6, the IPv4 side mapped
                src, dst = ipaddress.IPv6Address(row["src_addr"]), ipaddress.IPv6Address(row["dst_addr"])
            forwarding, fw_event = {"accept": (64, 1), "reject": (129, 3)}.get(row["action"], (0, 0))
            out.append(
                Flow(
                    src=src,
                    dst=dst,
                    src_port=row["src_port"] or 0,
                    dst_port=row["dst_port"] or 0,
                    protocol=row["protocol"] or 0,
                    tcp_flags=row["tcp_flags"] or 0,
                    packets=row["packets"] or 0,
                    bytes=row["bytes"] or 0,
                    start_ms=ms_of(start),
                    end_ms=ms_of(end),
                    in_if=0 if direction == 1 else index,
                    out_if=index if direction == 1 else 0,
                    direction=direction,
                    forwarding=forwarding,
                    fw_event=fw_event,
                    sampling=row["sampling_rate"] or 1,
                )
            )
    return out


def as_nfdump_shows(flow: Flow, version: int) -> Flow:
    """nfdump 1.7.1 hides ICMP source ports and flags (it shows type/code: over IPFIX from the destination port,
    over v9 only from icmpTypeCode 32 / 139, which the sink sends for that reason) and over IPFIX drops
    forwardingStatus / firewallEvent; samplingInterval in data records it ignores."""
    flow = flow._replace(sampling=None)
    if flow.protocol in ICMP:
        flow = flow._replace(src_port=None, tcp_flags=None)
    if version == 10:
        flow = flow._replace(forwarding=None, fw_event=None)
    return flow


def assert_same_flows(got: list[Flow], want: list[Flow], what: str) -> None:
    missing = Counter(want) - Counter(got)
    unexpected = Counter(got) - Counter(want)
    if missing or unexpected:
        lines = [f"{what}: {len(got)} records read back, {len(want)} expected"]
        lines += [f"  missing    x{n}: {flow}" for flow, n in list(missing.items())[:20]]
        lines += [f"  unexpected x{n}: {flow}" for flow, n in list(unexpected.items())[:20]]
        pytest.fail("\n".join(lines), pytrace=False)


# --- nfdump / nfacctd / tshark records -> Flow ------------------------------------------------------------------

NFDUMP_FLAGS = "CEUAPRSF"  # nfdump 1.7.1 prints tcp flags as 8 characters, '.' where a bit is clear, CWR first


def nfdump_flags(text: str) -> int:
    assert len(text) == 8 and all(c in (".", f) for c, f in zip(text, NFDUMP_FLAGS, strict=True)), text
    return sum(1 << (7 - i) for i, c in enumerate(text) if c != ".")


def nfdump_ms(text: str) -> int:
    """nfdump -o json time "2024-06-01T00:00:01.250" (local time of nfdump: the helper runs it with TZ=UTC)."""
    return int(datetime.strptime(text, "%Y-%m-%dT%H:%M:%S.%f").replace(tzinfo=UTC).timestamp() * 1000 + 0.5)


def from_nfdump(r: dict[str, Any], version: int) -> Flow:
    v6 = "src6_addr" in r
    icmp = r["proto"] in ICMP
    fw_event = None
    if version == 9:
        assert r["type"] == "EVENT", r  # firewallEvent makes nfdump file the record as an NSEL event
        fw_event = int(r["event_id"])
        assert r["event"] == {0: "IGNORE", 1: "CREATE", 3: "DENIED"}[fw_event], r
    return Flow(
        src=ipaddress.ip_address(r["src6_addr" if v6 else "src4_addr"]),
        dst=ipaddress.ip_address(r["dst6_addr" if v6 else "dst4_addr"]),
        src_port=None if icmp else r["src_port"],
        dst_port=(r["icmp_type"] << 8 | r["icmp_code"]) if icmp else r["dst_port"],
        protocol=r["proto"],
        tcp_flags=None if icmp else nfdump_flags(r["tcp_flags"]),
        packets=r["in_packets"],
        bytes=r["in_bytes"],
        start_ms=nfdump_ms(r["first"]),
        end_ms=nfdump_ms(r["last"]),
        in_if=r["input_snmp"],
        out_if=r["output_snmp"],
        direction=r["direction"],
        forwarding=r["fwd_status"] if version == 9 else None,
        fw_event=fw_event,
    )


def epoch_ms(text: str) -> int:
    """nfacctd `timestamps_since_epoch` value "1566848875.250000" -> ms (exact: no float)."""
    seconds, _, fraction = text.partition(".")
    return int(seconds) * 1000 + int((fraction + "000")[:3])


class AcctKey(NamedTuple):
    """What nfacctd shows of a flow: its aggregation key (tests/fixtures/netflow/nfacctd.conf) and the exporter."""

    src: ipaddress.IPv4Address | ipaddress.IPv6Address
    dst: ipaddress.IPv4Address | ipaddress.IPv6Address
    src_port: int
    dst_port: int
    protocol: int
    tcp_flags: int
    in_if: int
    out_if: int
    start_ms: int
    end_ms: int
    version: int
    domain: int


def acct_key(flow: Flow, version: int, domain: int) -> AcctKey:
    """nfacctd 1.7.7 shows v9 flow times in whole seconds, rounded up: it subtracts the whole seconds of
    (sysUptime - FIRST/LAST_SWITCHED) from the export second. IPFIX milliseconds (152/153) are kept."""
    start, end = flow.start_ms, flow.end_ms
    if version == 9:
        start, end = -(-start // 1000) * 1000, -(-end // 1000) * 1000
    return AcctKey(flow.src, flow.dst, flow.src_port or 0, flow.dst_port, flow.protocol, flow.tcp_flags or 0,
                   flow.in_if, flow.out_if, start, end, version, domain)  # fmt: skip


def acct_totals(rows: Iterable[tuple[AcctKey, int, int]]) -> dict[AcctKey, tuple[int, int]]:
    totals: dict[AcctKey, tuple[int, int]] = {}
    for key, packets, octets in rows:
        p, b = totals.get(key, (0, 0))
        totals[key] = (p + packets, b + octets)
    return totals


def from_nfacctd(r: dict[str, Any]) -> tuple[AcctKey, int, int]:
    key = AcctKey(
        src=ipaddress.ip_address(r["ip_src"]),
        dst=ipaddress.ip_address(r["ip_dst"]),
        src_port=r["port_src"],
        dst_port=r["port_dst"],
        protocol=int(r["ip_proto"]),
        tcp_flags=int(r["tcp_flags"]),
        in_if=r["iface_in"],
        out_if=r["iface_out"],
        start_ms=epoch_ms(r["timestamp_start"]),
        end_ms=epoch_ms(r["timestamp_end"]),
        version=r["export_proto_version"],
        domain=r["export_proto_sysid"],
    )
    return key, r["packets"], r["bytes"]


_TSHARK_TIME = re.compile(r"^(\w{3}) +(\d+), (\d{4}) (\d\d):(\d\d):(\d\d)\.(\d{9}) UTC$")
_MONTHS = ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec")


def tshark_ms(text: str) -> int:
    """tshark absolute time "Jun  1, 2024 00:00:01.250000000 UTC" -> ms."""
    m = _TSHARK_TIME.match(text)
    assert m, text
    month, day, year, hh, mm, ss, ns = m.groups()
    when = datetime(int(year), _MONTHS.index(month) + 1, int(day), int(hh), int(mm), int(ss), tzinfo=UTC)
    return int(when.timestamp()) * 1000 + int(ns) // 1_000_000


def tshark_times(r: dict[str, Any], packet: CflowPacket) -> tuple[int, int]:
    """Flow start/end in ms. tshark shows IPFIX 152/153 as absolute times, and v9 FIRST/LAST_SWITCHED as
    seconds of sysUptime ("cflow.timestart"), made absolute here from the header: export second - sysUptime."""
    if packet.version == 10:
        return tshark_ms(r["cflow.abstimestart"]), tshark_ms(r["cflow.abstimeend"])
    assert packet.uptime_ms is not None, r
    boot_ms = packet.export_time * 1000 - packet.uptime_ms

    def relative(key: str) -> int:
        if f"cflow.{key}" in r:
            return seconds_to_ms(r[f"cflow.{key}"])
        return tshark_ms(r[f"cflow.abs{key}"])  # tshark 4.0 shows a v9 time of 0 as an absolute epoch time

    return boot_ms + relative("timestart"), boot_ms + relative("timeend")


def from_tshark(r: dict[str, Any], packet: CflowPacket) -> Flow:
    """A data record of template 256/257 as tshark decodes it. forwardingStatus is shown as its two status bits
    and a reason code field named after the status (forward/drop/consume/unknown)."""
    v6 = "cflow.srcaddrv6" in r
    codes = [int(v) for k, v in r.items() if k.startswith("cflow.forwarding_status_") and k.endswith("_code")]
    forwarding = int(r["cflow.forwarding_status"]) << 6 | (codes[0] if codes else 0)
    # icmpTypeCodeIPv4 (32) / icmpTypeCodeIPv6 (139) repeat an ICMP flow's destination port (0 otherwise).
    if "cflow.icmp_type_code_ipv4" in r:
        icmp = int(r["cflow.icmp_type_code_ipv4"], 0)
    else:
        icmp = int(r["cflow.icmp_ipv6_type"]) << 8 | int(r["cflow.icmp_ipv6_code"])
    assert icmp == (int(r["cflow.dstport"]) if int(r["cflow.protocol"]) in ICMP else 0), r
    return Flow(
        src=ipaddress.ip_address(r["cflow.srcaddrv6" if v6 else "cflow.srcaddr"]),
        dst=ipaddress.ip_address(r["cflow.dstaddrv6" if v6 else "cflow.dstaddr"]),
        src_port=int(r["cflow.srcport"]),
        dst_port=int(r["cflow.dstport"]),
        protocol=int(r["cflow.protocol"]),
        tcp_flags=int(r["cflow.tcpflags"], 16),
        packets=int(r["cflow.packets"]),
        bytes=int(r["cflow.octets"]),
        start_ms=tshark_times(r, packet)[0],
        end_ms=tshark_times(r, packet)[1],
        in_if=int(r["cflow.inputint"]),
        out_if=int(r["cflow.outputint"]),
        direction=int(r["cflow.direction"]),
        forwarding=forwarding,
        fw_event=int(r["cflow.firewall_event"]),
        sampling=int(r["cflow.sampling_interval"]) if "cflow.sampling_interval" in r else None,
    )


def check_stream(packets: list[CflowPacket], version: int) -> dict[int, list[CflowPacket]]:
    """Packet-level checks on what tshark decoded: no malformed / expert / silently truncated message; per
    domain, templates before the data that uses them and sequence numbers continuous from 0 (IPFIX: + data
    records of the previous message, options records included; v9: + 1 per packet, template packets included).
    Returns the packets by domain."""
    assert packets, "tshark captured nothing"
    problems = [f"#{p.index} (frame {p.frame}): {problem}" for p in packets for problem in p.problems()]
    assert problems == []
    assert {p.version for p in packets} == {version}
    by_domain: dict[int, list[CflowPacket]] = {}
    for p in packets:
        by_domain.setdefault(p.domain, []).append(p)
    for domain, stream in by_domain.items():
        defined: set[int] = set()
        expected_sequence = 0
        for p in stream:
            assert p.sequence == expected_sequence, f"domain {domain} #{p.index}: sequence {p.sequence}"
            expected_sequence = (p.sequence + (p.data_records if version == 10 else 1)) % 2**32
            defined.update(p.template_ids)
            used = {set_id for set_id, _ in p.sets if set_id >= 256}
            assert used <= defined, f"domain {domain} #{p.index}: data sets {used - defined} before their template"
        assert stream[0].template_ids, f"domain {domain}: the first message carries no templates"
    return by_domain


# --- hand-built packets: the harness itself -------------------------------------------------------------------

# One IPv4 template, the elements nfdump/nfacctd/tshark are checked on (IANA ids; v9 shares them but for times).
# As the sink lays them out: ICMP type/code both in the destination port and in icmpTypeCodeIPv4 (32).
HAND_FIELDS_IPFIX = ((152, 8), (153, 8), (8, 4), (12, 4), (7, 2), (11, 2), (32, 2), (4, 1), (6, 1), (2, 8), (1, 8),
                     (10, 4), (14, 4), (61, 1), (89, 1), (233, 1))  # fmt: skip
HAND_FIELDS_V9 = ((22, 4), (21, 4)) + HAND_FIELDS_IPFIX[2:]
HAND_FLOWS = [
    Flow(ipaddress.ip_address("10.0.0.1"), ipaddress.ip_address("10.0.0.2"), 1000, 443, 6, 0x12, 5, 500,
         1717200001250, 1717200002999, 7, 0, 0, 64, 1),
    Flow(ipaddress.ip_address("10.0.0.2"), ipaddress.ip_address("10.0.0.1"), 443, 1000, 6, 0x19, 6_000_000_000,
         9_000_000_000_000, 1717200001300, 1717200003000, 0, 8, 1, 129, 3),
    Flow(ipaddress.ip_address("192.0.2.9"), ipaddress.ip_address("10.0.0.1"), 0, 0x0303, 1, 0, 1, 56,
         1717200004000, 1717200004000, 9, 0, 0, 64, 1),
]  # fmt: skip


def _record(flow: Flow, times: bytes) -> bytes:
    return times + struct.pack(
        "!4s4sHHHBBQQIIBBB", flow.src.packed, flow.dst.packed, flow.src_port or 0, flow.dst_port,
        flow.dst_port if flow.protocol in ICMP else 0, flow.protocol, flow.tcp_flags or 0, flow.packets, flow.bytes, flow.in_if, flow.out_if, flow.direction or 0,
        flow.forwarding or 0, flow.fw_event or 0,
    )  # fmt: skip


def template_set(set_id: int, template_id: int, fields: Iterable[tuple[int, int]], scope: int | None = None) -> bytes:
    fields = tuple(fields)
    head = struct.pack("!HH", template_id, len(fields)) + (b"" if scope is None else struct.pack("!H", scope))
    body = head + b"".join(struct.pack("!HH", *f) for f in fields)
    return struct.pack("!HH", set_id, 4 + len(body)) + body


def data_set(set_id: int, records: Iterable[bytes], align: int = 1) -> bytes:
    body = b"".join(records)
    pad = -(4 + len(body)) % align
    return struct.pack("!HH", set_id, 4 + len(body) + pad) + body + b"\0" * pad


def ipfix_message(domain: int, sequence: int, sets: Iterable[bytes], export: int) -> bytes:
    body = b"".join(sets)
    return struct.pack("!HHIII", 10, 16 + len(body), export, sequence, domain) + body


def v9_packet(source_id: int, sequence: int, count: int, flowsets: Iterable[bytes], export: int, boot_ms: int) -> bytes:
    body = b"".join(flowsets)
    return struct.pack("!HHIIII", 9, count, export * 1000 - boot_ms, export, sequence, source_id) + body


def hand_packets(version: int, domain: int = 7) -> list[bytes]:
    """Template, then two data messages (2 flows, 1 flow); sequences as each protocol counts them."""
    export = int(time.time())
    if version == 10:
        recs = [_record(f, struct.pack("!QQ", f.start_ms, f.end_ms)) for f in HAND_FLOWS]
        return [
            ipfix_message(domain, 0, [template_set(2, 256, HAND_FIELDS_IPFIX)], export),
            ipfix_message(domain, 0, [data_set(256, recs[:2])], export),
            ipfix_message(domain, 2, [data_set(256, recs[2:])], export),
        ]
    boot_ms = min(f.start_ms for f in HAND_FLOWS) - 1000  # every flow time fits sysUptime (u32 ms)...
    export = boot_ms // 1000 + 86_400  # ...and the export time: a day after the virtual boot
    recs = [_record(f, struct.pack("!II", f.start_ms - boot_ms, f.end_ms - boot_ms)) for f in HAND_FLOWS]
    return [
        v9_packet(domain, 0, 1, [template_set(0, 256, HAND_FIELDS_V9)], export, boot_ms),
        v9_packet(domain, 1, 2, [data_set(256, recs[:2], align=4)], export, boot_ms),
        v9_packet(domain, 2, 1, [data_set(256, recs[2:], align=4)], export, boot_ms),
    ]


def send(port: int, packets: Iterable[bytes]) -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        for packet in packets:
            sock.sendto(packet, ("127.0.0.1", port))


@pytest.mark.parametrize("version", [10, 9])
def test_hand_built_packets_round_trip_nfcapd_nfdump_tshark(tmp_path: Path, version: int) -> None:
    with nfcapd(tmp_path) as (port, read), tshark_capture(port, tmp_path) as decode:
        send(port, hand_packets(version))
        packets = decode()
        records = read()
    assert read.stats["sequence_errors"] == 0 and read.stats["flows"] == len(HAND_FLOWS)
    assert_same_flows([from_nfdump(r, version) for r in records], [as_nfdump_shows(f, version) for f in HAND_FLOWS],
                      "nfdump")  # fmt: skip
    stream = check_stream(packets, version)[7]
    assert [(p.sets, p.template_ids) for p in stream] == [([(2 if version == 10 else 0, 1)], [256]),
                                                          ([(256, 2)], []), ([(256, 1)], [])]  # fmt: skip
    tshark_flows = [from_tshark(r, p) for p in packets for r in p.records]
    assert tshark_flows == HAND_FLOWS


@pytest.mark.parametrize("version", [10, 9])
def test_hand_built_packets_round_trip_nfacctd(tmp_path: Path, version: int) -> None:
    with nfacctd(tmp_path) as (port, read):
        send(port, hand_packets(version))
        records = read()
    want = acct_totals((acct_key(f, version, 7), f.packets, f.bytes) for f in HAND_FLOWS)
    assert acct_totals(from_nfacctd(r) for r in records) == want


def test_tshark_oracle_reports_broken_messages_and_splits_gso_frames(tmp_path: Path) -> None:
    """The oracle must not pass what it cannot read: a truncated message (tshark 4.0 shows only its header and
    no expert info), a wrong length, an unknown version. And two messages in one datagram, as a UDP GSO send is
    captured on lo, are two messages."""
    good = hand_packets(10)
    truncated = good[1][:-5]
    too_long = good[2][:2] + struct.pack("!H", len(good[2]) + 8) + good[2][4:]
    port = 9  # discard: nobody listens, the capture sees the datagrams all the same
    with tshark_capture(port, tmp_path) as decode:
        send(port, [good[0] + good[1], truncated, too_long, b"\x00\x05garbage"])
        packets = decode()
    assert [len(m) for m in split_messages(good[0] + good[1])] == [len(good[0]), len(good[1])]
    assert [p.problems() == [] for p in packets] == [True, True, False, False, False]
    assert "no set decoded" in packets[2].problems()
    assert any("length" in problem for problem in packets[3].problems())


def test_nfcapd_ipfix_sequence_counts_only_flow_records(tmp_path: Path) -> None:
    """Pins an nfcapd 1.7.1 quirk the sink tests rely on: RFC 7011 sec. 3.1 counts every Data Record in the
    sequence number, options data records included, but nfcapd counts only flow records, so an exporter that
    sends options data (the sink names interfaces and domains) shows 'Sequence Errors' in nfcapd's totals although
    its numbering is right. The sink's sequences are therefore checked with tshark, not nfcapd."""
    template, first, last = hand_packets(10)
    export = int(time.time())
    options_template = ipfix_message(7, 2, [template_set(3, 258, [(10, 4), (82, 8)], scope=1)], export)
    options_data = ipfix_message(7, 2, [data_set(258, [struct.pack("!I8s", 7, b"eth0")])], export)
    last = last[:8] + struct.pack("!I", 3) + last[12:]  # 2 flow records + 1 options record before it
    with nfcapd(tmp_path) as (port, read), tshark_capture(port, tmp_path) as decode:
        send(port, [template, first, options_template, options_data, last])
        check_stream(decode(), 10)  # RFC-correct numbering
        assert len(read()) == 3
    assert read.stats["sequence_errors"] == 1


def test_nfacctd_reads_one_ipfix_options_template_per_set_only(tmp_path: Path) -> None:
    """Pins a pmacct 1.7.7 quirk: in an IPFIX Options Template Set holding two templates, nfacctd reads the second
    at a wrong offset ("insert_opt_template(): unable to read Options Template Flowset (malformed)") and then
    discards that template's data as "unknown template". One options template per set is read."""
    export = int(time.time())
    interfaces = template_set(3, 258, [(10, 4), (82, 8)], scope=1)
    domains = template_set(3, 259, [(149, 4), (300, 8)], scope=1)
    both_in_one_set = struct.pack("!HH", 3, len(interfaces) + len(domains) - 4) + interfaces[4:] + domains[4:]
    for sets, malformed in (([both_in_one_set], True), ([interfaces, domains], False)):
        with nfacctd(tmp_path) as (port, read):
            send(port, [ipfix_message(7, 0, sets, export), *hand_packets(10)])
            assert len(read()) == len(HAND_FLOWS)
            log = read.log.read_text()
        assert ("unable to read Options Template Flowset (malformed)" in log) is malformed, log[-1500:]


# --- the sink, end to end -------------------------------------------------------------------------------------


def source_batches() -> list[pa.RecordBatch]:
    """Parsed flow logs, one observation domain per source: the AWS conformance fixtures (parse_text), the GCP ones
    (parse_lines, with a sampling rate), the bundled AWS and GCP examples (collector.parsing.open_unit: gzip,
    Parquet and GCP LogEntry lines as the `local` source reads them) and the edge cases."""
    from adapters.aws.parse import parse_text
    from collector.parsing import open_unit

    batches = []
    for path in [*CONFORMANCE_AWS, EDGE_CASES]:
        source = "edge-cases" if path == EDGE_CASES else "conformance"
        batches += [r.batch for r in parse_text([path.read_bytes()], unit=path.name, source=source)]
    batches += gcp_conformance_batches()
    for path in EXAMPLES:
        batches += [r.batch for r in open_unit(path, unit=path.name, source="examples")]
    batches = [b for b in batches if b.num_rows]
    assert len(CONFORMANCE_AWS) >= 10 and len(EXAMPLES) >= 6 and sum(b.num_rows for b in batches) > 380
    assert {b.column("provider")[0].as_py() for b in batches} == {"aws", "gcp"}
    return batches


def gcp_conformance_batches() -> list[pa.RecordBatch]:
    from adapters.gcp.parse import parse_lines

    assert CONFORMANCE_GCP
    return [r.batch for path in CONFORMANCE_GCP
            for r in parse_lines([path.read_bytes()], unit=path.name, source="gcp-conformance",
                                 options={"sampling_rate": GCP_SAMPLING})
            if r.batch.num_rows]  # fmt: skip


async def deliver(port: int, version: int, batches: list[pa.RecordBatch]) -> Any:
    from collector.sinks.netflow.config import NetflowSinkConfig
    from collector.sinks.netflow.sink import NetflowSink

    sink = NetflowSink(NetflowSinkConfig(name="e2e", address=f"127.0.0.1:{port}", version=version))
    await sink.open()
    for batch in batches:
        await sink.write(batch)
    assert await sink.flush() == len(batches)
    assert await sink.close() == len(batches)
    return sink


def batches_for(version: int) -> list[pa.RecordBatch]:
    """The flow logs as they are: years old. Over v9 they go out in backdated packets (their own header time), so
    nfdump and pmacct must show their exact times, as for recent flows."""
    return source_batches()


def skipped_rows(batches: list[pa.RecordBatch]) -> int:
    return sum(b.num_rows for b in batches) - len(expected_flows(batches))


@pytest.mark.parametrize("version", [10, 9])
async def test_sink_to_nfcapd_every_record_field_by_field(tmp_path: Path, version: int) -> None:
    batches = batches_for(version)
    want = expected_flows(batches)
    with nfcapd(tmp_path) as (port, read), tshark_capture(port, tmp_path) as decode:
        sink = await deliver(port, version, batches)
        await asyncio.sleep(0.2)
        packets = decode()
        records = read()
    m = sink.metrics
    assert (m.records, m.skipped_rows, m.send_errors, m.clamped_times) == (len(want), skipped_rows(batches), 0, 0)

    # nfdump: every record, every field it decodes; NODATA / SKIPDATA and time-less rows never arrive.
    assert read.stats["flows"] == len(records) == len(want)
    repeated = sorted({key for r in records for key in r if "#" in key})
    assert repeated == [], f"nfdump printed these keys twice in a record (second value kept as key#2): {repeated}"
    assert_same_flows([from_nfdump(r, version) for r in records], [as_nfdump_shows(f, version) for f in want],
                      f"nfdump v{version}")  # fmt: skip
    if version == 9:  # nfcapd checks v9 numbering (packets); for IPFIX it miscounts options records (see above)
        assert read.stats["sequence_errors"] == 0

    # tshark: clean messages, sequences, templates first, and every field (action over IPFIX too).
    by_domain = check_stream(packets, version)
    names = {"conformance", "gcp-conformance", "examples", "edge-cases"}
    assert set(by_domain) == {_domain_id(n) for n in names}
    data = [from_tshark(r, p) for p in packets for r in p.records if r["set_id"] in (256, 257)]
    assert_same_flows(data, want, f"tshark v{version}")

    # Options: every interface is named (interfaceName, 82) in its domain before data uses its index.
    interface_names = {_interface_index(r["interface"]): r["interface"] for b in batches for r in b.to_pylist()
                       if r["interface"]}  # fmt: skip
    for domain, stream in by_domain.items():
        named: dict[int, str] = {}
        for p in stream:
            for r in p.records:
                if r["set_id"] == 258:
                    named[int(r.get("cflow.inputint", r.get("cflow.scope_interface")))] = r["cflow.if_name"]
                elif r["set_id"] in (256, 257):
                    for index in (int(r["cflow.inputint"]), int(r["cflow.outputint"])):
                        assert index == 0 or named.get(index) == interface_names[index], (domain, p.index, index)
    if version == 10:  # observationDomainName (300) per domain; v9 has no scope for it
        domain_names = {int(r["cflow.od_id"]): r["cflow.observation_domain_name"]
                        for p in packets for r in p.records if r["set_id"] == 259}  # fmt: skip
        assert domain_names == {_domain_id(n): n for n in names}


def _gcp_hand_checked(version: int) -> list[Flow]:
    """GCP flows as nfdump must show them, written from the LogEntry lines by hand: the conformance sample's four
    records, and from examples/.../06:00:00_06:59:59_S0.json the two reports of one VM-to-VM direction (lines 1,
    2), an IPv6 flow (line 43) and an ICMP ping without ports (line 46). SRC -> egress (1, the reporting VM as
    egressInterface), DEST -> ingress (0, as ingressInterface); times floored to ms; a missing start_time takes
    end_time; no tcp flags in GCP records (0); no disposition: forwardingStatus 0 / firewallEvent 0 over v9."""
    ip = ipaddress.ip_address
    v9 = 0 if version == 9 else None

    def flow(src: str, dst: str, sport: int | None, dport: int, proto: int, packets: int, octets: int,
             first: str, last: str, vm: str, egress: bool) -> Flow:  # fmt: skip
        index = _interface_index(vm)
        return Flow(ip(src), ip(dst), sport, dport, proto, None if proto in ICMP else 0, packets, octets,
                    nfdump_ms(first), nfdump_ms(last), 0 if egress else index, index if egress else 0,
                    1 if egress else 0, v9, v9)  # fmt: skip

    return [
        flow("198.51.100.75", "192.0.2.2", 49444, 3389, 6, 4, 491, "2018-04-03T13:47:37.301",
             "2018-04-03T13:47:38.401", "vm-instance-01", False),
        flow("192.0.2.2", "198.51.100.75", 3389, 49444, 6, 6, 756, "2018-04-03T13:47:32.805",
             "2018-04-03T13:47:33.937", "vm-instance-01", True),
        flow("192.0.2.2", "192.0.2.3", 3389, 65535, 6, 20, 1020, "2018-04-03T13:47:31.805",
             "2018-04-03T13:48:33.937", "vm-instance-01", True),
        flow("192.0.2.2", "192.0.2.3", None, 0, 1, 20, 1020, "2018-04-03T13:48:33.937",
             "2018-04-03T13:48:33.937", "vm-instance-01", True),
        flow("10.128.0.11", "10.128.16.21", 50854, 8080, 6, 212, 130592, "2026-11-22T06:12:07.541",
             "2026-11-22T06:12:09.845", "web-euw1-7x2k", True),
        flow("10.128.0.11", "10.128.16.21", 50854, 8080, 6, 208, 128128, "2026-11-22T06:12:07.423",
             "2026-11-22T06:12:09.736", "app-euw1-1", False),
        flow("2001:db8:ffff:10::7", "2001:db8:4821:10::b", 47437, 443, 6, 279, 364653, "2026-11-22T06:08:35.150",
             "2026-11-22T06:08:37.619", "web-euw1-7x2k", False),
        flow("192.0.2.156", "10.128.0.12", None, 0, 1, 5, 420, "2026-11-22T06:46:02.667",
             "2026-11-22T06:46:05.308", "web-euw1-9p4m", False),
    ]  # fmt: skip


@pytest.mark.parametrize("version", [10, 9])
async def test_gcp_flows_to_nfcapd_hand_checked(tmp_path: Path, version: int) -> None:
    """GCP only: the conformance sample (with the source option sampling_rate 4) and the bundled GCP examples go
    through the sink; nfdump shows every one of them, the hand-checked ones with the values written above, and
    tshark shows samplingInterval 4 on the conformance records and 1 (null: sent as 1) on the others."""
    from collector.parsing import open_unit

    gcp_examples = [p for p in EXAMPLES if p.suffix == ".json"]
    batches = gcp_conformance_batches()
    for path in gcp_examples:
        batches += [r.batch for r in open_unit(path, unit=path.name, source="examples") if r.batch.num_rows]
    assert len(gcp_examples) == 2
    assert [b.num_rows for b in batches] == [4, 60, 24]  # examples/README.md: 60 and 24 records
    with nfcapd(tmp_path) as (port, read), tshark_capture(port, tmp_path) as decode:
        sink = await deliver(port, version, batches)
        await asyncio.sleep(0.2)
        packets = decode()
        records = read()
    assert (sink.metrics.records, sink.metrics.skipped_rows, sink.metrics.send_errors) == (88, 0, 0)
    got = [from_nfdump(r, version) for r in records]
    assert len(got) == read.stats["flows"] == 88
    assert {r["sampled"] for r in records} == {0}  # nfdump 1.7.1 does not read samplingInterval from data records
    hand = _gcp_hand_checked(version)
    missing = Counter(hand) - Counter(got)
    assert not missing, f"hand-checked flows not shown by nfdump: {list(missing)}"
    assert_same_flows(got, [as_nfdump_shows(f, version) for f in expected_flows(batches)], f"nfdump v{version}")
    data = [from_tshark(r, p) for p in packets for r in p.records if r["set_id"] in (256, 257)]
    assert Counter(f.sampling for f in data) == {GCP_SAMPLING: 4, 1: 84}
    conformance = {(f.src, f.dst, f.protocol, f.packets, f.bytes) for f in hand[:4]}
    assert {f.sampling for f in data if (f.src, f.dst, f.protocol, f.packets, f.bytes) in conformance} == {4}
    assert_same_flows(data, expected_flows(batches), f"tshark v{version}")


@pytest.mark.parametrize("version", [10, 9])
async def test_sink_to_nfacctd_every_record(tmp_path: Path, version: int) -> None:
    batches = batches_for(version)
    want = expected_flows(batches)
    with nfacctd(tmp_path) as (port, read):
        sink = await deliver(port, version, batches)
        records = read()
    assert (sink.metrics.records, sink.metrics.send_errors) == (len(want), 0)
    # nfacctd aggregates records with the same key (the duplicate edge-case row, same-key rows of a file): compare
    # per-key totals. A batch holds one source, whose observation domain its flows carry.
    expected = []
    for batch in batches:
        domain = _domain_id(batch.column("source")[0].as_py())
        for flow in expected_flows([batch]):
            expected.append((acct_key(flow, version, domain), flow.packets, flow.bytes))
    got = acct_totals(from_nfacctd(r) for r in records)
    wanted = acct_totals(expected)
    missing = {k: v for k, v in wanted.items() if got.get(k) != v}
    unexpected = {k: v for k, v in got.items() if k not in wanted}
    assert not missing and not unexpected, f"missing/different: {missing}\nunexpected: {unexpected}"


def test_flowcollector_run_once_into_nfcapd(tmp_path: Path) -> None:
    """The daemon path, not only the sink: `flowcollector run --once` on the bundled examples with an IPFIX sink and
    a JSON Lines file sink side by side; nfdump reads back exactly the flows the JSON Lines file holds."""
    import json
    import subprocess
    import sys

    with nfcapd(tmp_path) as (port, read):
        cfg = tmp_path / "c.yaml"
        cfg.write_text(
            f"state_dir: {tmp_path / 'state'}\n"
            f"sources:\n  - {{name: samples, type: local, path: {ROOT / 'examples' / 'data'}}}\n"
            f"sinks:\n  - {{name: archive, type: file, path: {tmp_path / 'out'}, format: jsonl}}\n"
            f"  - {{name: nf, type: netflow, version: 10, address: '127.0.0.1:{port}'}}\n"
        )
        res = subprocess.run(
            [sys.executable, "-m", "collector.cli", "run", "-c", str(cfg), "--once"],
            capture_output=True, text=True, timeout=120, cwd=ROOT,
        )  # fmt: skip
        assert res.returncode == 0, res.stderr
        time.sleep(0.2)
        records = read()
    rows = [json.loads(line) for f in sorted((tmp_path / "out").glob("*.jsonl")) for line in f.open()]
    flows = [r for r in rows if r["log_status"] not in ("nodata", "skipdata") and r["src_addr"] and r["time_start"]]

    def ms(text: str) -> int:
        return int(datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp() * 1000)

    def icmp(r: dict[str, Any]) -> bool:
        return r["protocol"] in ICMP

    want = Counter(
        (str(ipaddress.ip_address(r["src_addr"])), str(ipaddress.ip_address(r["dst_addr"])),
         None if icmp(r) else r["src_port"] or 0, r["dst_port"] or 0, r["protocol"], r["packets"], r["bytes"],
         ms(r["time_start"]), ms(r["time_end"]))
        for r in flows
    )  # fmt: skip
    shown = [from_nfdump(r, 10) for r in records]
    got = Counter(
        (str(f.src), str(f.dst), f.src_port, f.dst_port, f.protocol, f.packets, f.bytes, f.start_ms, f.end_ms)
        for f in shown
    )
    assert len(flows) > 100 and got == want
