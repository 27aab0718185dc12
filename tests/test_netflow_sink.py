"""The netflow sink against real UDP sockets bound on 127.0.0.1: what collectors receive, decoded by the
`struct`-based collector of test_netflow_encode.py. Waits are for datagrams to arrive (with a generous cap),
never assertions on durations."""

from __future__ import annotations

import asyncio
import re
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pyarrow as pa
import pytest
from test_netflow_encode import (
    CUSTOM,
    CUSTOM_HEADER,
    DOCS_V2,
    ENI,
    Collector,
    Message,
    batch_of,
    expected_flows,
    flows_of,
    many_lines,
)

from collector.config import ConfigError, parse_config
from collector.sinks.netflow.config import NetflowSinkConfig
from collector.sinks.netflow.encode import domain_id, interface_index
from collector.sinks.netflow.sink import NetflowSink, TokenBucket


class Receiver:
    """A UDP collector socket drained by a thread, so a paced burst never overflows the receive buffer."""

    def __init__(self, host: str = "127.0.0.1") -> None:
        self.sock = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 << 20)
        self.sock.bind((host, 0))
        self.sock.settimeout(0.05)
        port = self.sock.getsockname()[1]
        self.address = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
        self.packets: list[bytes] = []
        self._stop = False
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop:
            try:
                self.packets.append(self.sock.recv(65535))
            except TimeoutError:
                continue

    async def wait_for(self, count: int, cap: float = 20.0) -> list[bytes]:
        deadline = time.monotonic() + cap
        while len(self.packets) < count and time.monotonic() < deadline:
            await asyncio.sleep(0.01)
        await asyncio.sleep(0.05)  # anything beyond `count` would show up as a mismatch
        return list(self.packets)

    def close(self) -> None:
        self._stop = True
        self._thread.join()
        self.sock.close()


@pytest.fixture
def receivers() -> Iterator[list[Receiver]]:
    made = [Receiver(), Receiver()]
    yield made
    for r in made:
        r.close()


def config(*receivers: Receiver, **overrides: object) -> NetflowSinkConfig:
    values: dict[str, object] = {
        "name": "nf",
        "addresses": tuple(r.address for r in receivers),
        "max_packets_per_second": 20_000,
    }
    values.update(overrides)
    return NetflowSinkConfig(**values)  # type: ignore[arg-type]


async def deliver(cfg: NetflowSinkConfig, batches: list[pa.RecordBatch]) -> NetflowSink:
    sink = NetflowSink(cfg)
    await sink.open()
    for batch in batches:
        await sink.write(batch)
    assert await sink.flush() == len(batches)  # acked once sent
    assert await sink.close() == len(batches)
    return sink


def decode(packets: list[bytes]) -> list[Message]:
    collector = Collector()  # raises KeyError on data whose template has not been seen: templates come first
    return [collector.parse(p) for p in packets]


def check_ipfix_sequences(messages: list[Message]) -> None:
    sent: dict[int, int] = {}
    for msg in messages:
        assert msg.sequence == sent.get(msg.domain, 0)
        sent[msg.domain] = msg.sequence + len(msg.records)


async def test_all_records_arrive_templates_first(receivers: list[Receiver]) -> None:
    rx = receivers[0]
    batch = batch_of(DOCS_V2 + many_lines(2000) + [CUSTOM_HEADER] + CUSTOM)
    sink = await deliver(config(rx), [batch])
    messages = decode(await rx.wait_for(sink.metrics.packets))
    assert len(messages) == sink.metrics.packets == 1 + 1 + 96 + 1  # templates, options, IPv4 data, IPv6 data
    assert messages[0].templates == [256, 257, 258, 259]
    assert all(m.domain == domain_id("vpc-flows") and m.version == 10 for m in messages)
    names = {r[10]: r[82] for m in messages for r in m.data(258)}
    assert names[interface_index(ENI)] == ENI
    assert [(r[149], r[300]) for r in messages[1].data(259)] == [(domain_id("vpc-flows"), "vpc-flows")]
    assert flows_of(messages) == expected_flows(batch)
    check_ipfix_sequences(messages)
    m = sink.metrics
    assert (m.records, m.skipped_rows, m.send_errors, m.domains) == (2009 + 2, 2, 0, 1)


async def test_templates_refresh_every_n_packets(receivers: list[Receiver]) -> None:
    rx = receivers[0]
    batches = [batch_of(many_lines(1000)), batch_of(many_lines(200))]
    sink = await deliver(config(rx, template_refresh_packets=5), batches)
    messages = decode(await rx.wait_for(sink.metrics.packets))
    kinds = ["T" if m.templates else "O" if m.data(258, 259) else "D" for m in messages]
    # 1000 rows = 47 full + 1 partial datagram (21 per 1400 octets), 200 rows = 9 + 1: templates (and options) before every 5 data.
    data_runs = "".join(kinds).replace("TO", "|").split("|")
    assert data_runs[0] == "" and all(run == "D" * 5 for run in data_runs[1:-1])
    assert kinds.count("D") == 48 + 10 and kinds.count("T") == 12 == sink.metrics.template_packets
    assert flows_of(messages) == expected_flows(batches[0]) + expected_flows(batches[1])
    check_ipfix_sequences(messages)


async def test_template_refresh_by_time_while_idle(receivers: list[Receiver]) -> None:
    rx = receivers[0]
    sink = NetflowSink(config(rx, template_refresh=0.05, observation_domain=77))
    await sink.open()  # a fixed domain: templates go out at start, before any data
    packets = await rx.wait_for(6)  # three rounds of template + options (domain name)
    await sink.close()
    messages = decode(packets)
    assert sum(1 for m in messages if m.templates) >= 3
    assert {m.domain for m in messages} == {77} and messages[0].templates
    assert [(r[149], r[300]) for r in messages[1].data(259)] == [(77, "nf")]


async def test_v9_sequence_per_packet_and_exact_times(receivers: list[Receiver]) -> None:
    rx = receivers[0]
    recent = batch_of(many_lines(600, start=int(time.time()) - 3600))
    old = batch_of([CUSTOM_HEADER] + CUSTOM)  # 2019: before the virtual boot (now - 20 days): backdated packets
    sink = await deliver(config(rx, version=9, observation_domain="source"), [recent, old])
    messages = decode(await rx.wait_for(sink.metrics.packets))
    assert [m.sequence for m in messages] == list(range(len(messages)))
    assert all(m.version == 9 and m.domain == domain_id("vpc-flows") for m in messages)
    got = flows_of(messages)
    assert got[:600] == expected_flows(recent)  # boot + FIRST/LAST_SWITCHED == the source milliseconds
    key = lambda f: (f["start"], f["src"], f["src_port"])  # noqa: E731
    assert sorted(got[600:], key=key) == sorted(expected_flows(old), key=key)  # backdated packets: exact too
    assert (sink.metrics.clamped_times, sink.metrics.backdated_records, len(got)) == (0, 6, 606)


async def test_v5_sends_ipv4_only(receivers: list[Receiver]) -> None:
    rx = receivers[0]
    batch = batch_of(DOCS_V2 + many_lines(100, start=int(time.time()) - 60))
    sink = await deliver(config(rx, version=5), [batch])
    messages = decode(await rx.wait_for(sink.metrics.packets))
    # The docs' four IPv4 records (December 2014 and May 2015) predate the virtual boot: backdated packets, one per
    # 40-day span, first; then the 100 recent flows, 28 per packet.
    assert [m.count for m in messages] == [2, 2, 28, 28, 28, 16]
    assert sink.metrics.dropped_ipv6 == 1 and sink.metrics.template_packets == 0
    assert (sink.metrics.backdated_records, sink.metrics.clamped_times) == (4, 0)
    got, want = flows_of(messages), expected_flows(batch)
    assert [f["src_port"] for f in got][4:] == [f["src_port"] for f in want][4:104]
    assert sorted((f["start"], f["end"]) for f in got[:4]) == sorted((f["start"], f["end"]) for f in want[:4])


async def test_pacing_does_not_lose_packets(receivers: list[Receiver]) -> None:
    rx = receivers[0]
    batch = batch_of(many_lines(4400))  # 210 data datagrams at 1000/s: bursts of 50, then sleeps
    sink = await deliver(config(rx, max_packets_per_second=1000), [batch])
    messages = decode(await rx.wait_for(sink.metrics.packets))
    assert len(messages) == sink.metrics.packets == 212
    assert sink.metrics.pacing_waits > 0
    assert flows_of(messages) == expected_flows(batch)


def test_token_bucket_grants_bursts_and_computes_waits() -> None:
    now = [0.0]
    bucket = TokenBucket(1000, 50, clock=lambda: now[0])
    assert bucket.take(200) == 50 and bucket.take(10) == 0
    assert bucket.wait(200) == pytest.approx(0.05)  # a whole burst, not one packet
    now[0] = 0.02
    assert bucket.take(200) == 20
    now[0] = 10.0
    assert bucket.take(200) == 50  # never more than a burst banked


async def test_two_collectors_receive_everything(receivers: list[Receiver]) -> None:
    batch = batch_of(DOCS_V2 + many_lines(1500))
    sink = await deliver(config(*receivers), [batch])
    first = await receivers[0].wait_for(sink.metrics.packets)
    second = await receivers[1].wait_for(sink.metrics.packets)
    assert first == second and len(first) == sink.metrics.packets
    assert flows_of(decode(first)) == expected_flows(batch)


def _ipv6_loopback() -> bool:
    try:
        with socket.socket(socket.AF_INET6, socket.SOCK_DGRAM) as probe:
            probe.bind(("::1", 0))
        return True
    except OSError:
        return False


@pytest.mark.skipif(not _ipv6_loopback(), reason="no IPv6 loopback here")
async def test_ipv6_collector_address() -> None:
    rx = Receiver("::1")
    try:
        batch = batch_of(DOCS_V2 + many_lines(300))
        sink = await deliver(config(rx), [batch])  # addresses=("[::1]:PORT",)
        assert rx.address.startswith("[::1]:")
        assert flows_of(decode(await rx.wait_for(sink.metrics.packets))) == expected_flows(batch)
    finally:
        rx.close()


async def test_observation_domain_per_source(receivers: list[Receiver]) -> None:
    rx = receivers[0]
    a, b = batch_of(many_lines(100), source="src-a"), batch_of(DOCS_V2, source="src-b")
    mixed = pa.Table.from_batches([a, b]).unify_dictionaries().combine_chunks().to_batches()[0]
    sink = await deliver(config(rx), [a, mixed])
    messages = decode(await rx.wait_for(sink.metrics.packets))
    ids = {domain_id("src-a"), domain_id("src-b")}
    assert {m.domain for m in messages} == ids and sink.metrics.domains == 2
    for ident in ids:
        mine = [m for m in messages if m.domain == ident]
        assert mine[0].templates  # templates before the first data of every domain
    check_ipfix_sequences(messages)
    assert sorted(f["src_port"] for f in flows_of(messages)) == sorted(
        f["src_port"] for f in expected_flows(a) * 2 + expected_flows(b)
    )


async def test_observation_domain_per_account(receivers: list[Receiver]) -> None:
    rx = receivers[0]
    other = "2 210987654321 eni-0aaaaaaaaaaaaaaaa 10.1.0.1 10.1.0.2 443 50000 6 3 180 1418530010 1418530070 ACCEPT OK"
    batch = batch_of(DOCS_V2 + [other])  # synthetic second account after the docs records
    sink = await deliver(config(rx, observation_domain="account"), [batch])
    messages = decode(await rx.wait_for(sink.metrics.packets))
    by_domain = {m.domain for m in messages if m.data(256, 257)}
    assert by_domain == {domain_id("123456789010"), domain_id("210987654321")}
    names = {r[300] for m in messages for r in m.data(259)}
    assert names == {"123456789010", "210987654321"}


async def test_send_errors_are_counted_not_raised(receivers: list[Receiver]) -> None:
    closed = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    closed.bind(("127.0.0.1", 0))
    dead = f"127.0.0.1:{closed.getsockname()[1]}"
    closed.close()  # nobody listens: ICMP port unreachable, reported on the next send
    good = receivers[0]
    batches = [batch_of(many_lines(500)), batch_of(many_lines(500))]
    sink = await deliver(config(good, addresses=(dead, good.address)), batches)
    assert sink.metrics.send_errors > 0
    messages = decode(await good.wait_for(sink.metrics.packets))
    assert flows_of(messages) == expected_flows(batches[0]) + expected_flows(batches[1])


async def test_status_rows_are_skipped_and_counted(receivers: list[Receiver]) -> None:
    rx = receivers[0]
    sink = await deliver(config(rx), [batch_of(DOCS_V2[2:4])])  # NODATA + SKIPDATA
    messages = decode(await rx.wait_for(sink.metrics.packets))
    assert (sink.metrics.skipped_rows, sink.metrics.records) == (2, 0)
    assert flows_of(messages) == []


# --- configuration ----------------------------------------------------------------------------------------------


def test_config_loads_with_defaults_and_validates(tmp_path: Path) -> None:
    head = "sources:\n  - {name: s, type: local, path: .}\nsinks:\n"
    cfg = parse_config(
        head + '  - name: nf\n    type: netflow\n    version: 9\n    address: "collector.example:2055"\n'
        '    addresses: ["[::1]:4739", "collector.example:2055"]\n    observation_domain: 7\n'
        "    template_refresh: 30s\n",
        tmp_path / "c.yaml",
    ).sinks[0]
    assert isinstance(cfg, NetflowSinkConfig)
    assert cfg.addresses == ("collector.example:2055", "[::1]:4739")
    assert cfg.endpoints() == (("collector.example", 2055), ("::1", 4739))
    assert (cfg.version, cfg.observation_domain, cfg.fixed_domain(), cfg.template_refresh) == (9, "7", 7, 30.0)
    assert (cfg.mtu, cfg.template_refresh_packets, cfg.max_packets_per_second, cfg.flush_interval) == (
        1400,
        1000,
        50_000,
        1.0,
    )
    with pytest.raises(ConfigError) as bad:
        parse_config(
            head + "  - name: nf\n    type: netflow\n    version: 8\n    mtu: 100\n    address: a:1\n"
            "    observation_domain: region\n",
            tmp_path / "c.yaml",
        )
    assert [e.split(": ", 1)[1] for e in bad.value.errors] == [
        "sinks[0].version: expected one of 5, 9, 10, got 8",
        "sinks[0].mtu: must be at least 256, got 100",
        "sinks[0].observation_domain: invalid observation domain 'region': "
        "expected 'source', 'account' or an integer 0..4294967295",
    ]
    for address, message in [
        ("::1:2055", "write an IPv6 address in brackets"),
        ("[::1]", "expected [IPv6]:port"),
        ("host:0", "port must be 1..65535"),
        ("host", "expected host:port"),
    ]:
        with pytest.raises(ConfigError, match=re.escape(message)) as bad:
            parse_config(head + f'  - name: nf\n    type: netflow\n    address: "{address}"\n', tmp_path / "c.yaml")
        assert ":6:" in bad.value.errors[0] and "sinks[0].address" in bad.value.errors[0]
    with pytest.raises(ValueError, match="a collector is required"):
        NetflowSinkConfig(name="nf")
