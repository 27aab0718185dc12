"""`netflow` sink: flows as IPFIX (default), NetFlow v9 or v5 over UDP to one or more collectors.

What it promises and why it is built this way:
- A write is acked once its datagrams have been handed to the kernel ("UDP datagram sent", ARCHITECTURE.md):
  UDP gives no more. Send errors (ICMP port unreachable reported on the next send, no route, buffer full) are
  counted in `metrics` and logged, never raised: one collector being down must not stop checkpoints or the
  other collectors. Only when no collector address resolves at all does `write` raise, so the pipeline retries
  with backoff instead of acking data that went nowhere.
- Each batch is encoded and sent in a worker thread (`asyncio.to_thread`): encoding is numpy (releases the GIL
  in its loops), sending is one syscall per datagram or per 64 KiB, and pacing sleeps there, so the event loop
  never stalls on a large batch. Writes are serialized with the template refresher by one lock.
- Every collector gets every datagram, from its own connected socket (`send` skips the per-call address lookup
  of `sendto`). On Linux, runs of equal-size datagrams go out with UDP GSO (`UDP_SEGMENT`): one `sendmsg` of up
  to 64 datagrams that the kernel (or NIC) splits into exactly the datagrams we built -- the wire is identical,
  the syscall cost is shared. Where the kernel refuses GSO, the socket falls back to one `send` per datagram.
- Observation domains (IPFIX domain id, v9 source id, v5 engine type/id): `source` (default) gives each
  configured source its own domain, `account` each account/project/subscription, an integer one fixed domain.
  Ids are `encode.domain_id(name)` (CRC-32, 31 bits), logged when a domain first appears; each domain has its
  own sequence numbers and template schedule.
- Templates (and the options templates) go out before the first data of a domain, then again every
  `template_refresh` seconds (a background task, even when idle) and every `template_refresh_packets` data
  packets. With a fixed integer domain they are sent at `open`. Each refresh carries options data naming the
  interfaces seen since the previous one (and the domain name); an interface never named before is named
  right away, before the data that uses it.
- Pacing: a token bucket of `max_packets_per_second` datagrams per collector with a burst of 50 ms worth, so the
  sender sleeps once per burst, not per packet.
- v9/v5 times are relative to a virtual boot time: process start minus 20 days (flows up to 20 days old fit),
  moved forward again after 40 days of uptime, before sysUptime would wrap at 49.7 days. Older flows go out in
  backdated packets with their own header time (see encode._backdate_groups).
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import logging
import math
import socket
import struct
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from collector.schema import FlowBatch
from collector.sinks import BatchId
from collector.sinks.netflow.encode import (
    FlowArrays,
    IpfixEncoder,
    NetflowV5Encoder,
    NetflowV9Encoder,
    domain_id,
    empty_v4,
    empty_v6,
    prepare_flows,
)

log = logging.getLogger("flowcollector.sink.netflow")

_DAY_MS = 86_400_000
BOOT_BACKDATE_MS = 20 * _DAY_MS
REBASE_AFTER_MS = 40 * _DAY_MS
_UDP_SEGMENT = getattr(socket, "UDP_SEGMENT", 103)  # linux/udp.h; Python exposes it only on recent versions
_GSO_MAX_SEGMENTS = 64  # UDP_MAX_SEGMENTS in the kernel
_GSO_MAX_BYTES = 65000  # one GSO send is one UDP "super datagram": its payload must fit 16 bits with headers
_GSO_UNSUPPORTED = {errno.EINVAL, errno.EIO, errno.ENOPROTOOPT, errno.EOPNOTSUPP, errno.EMSGSIZE}
_SNDBUF = 4 << 20
_RESOLVE_RETRY = 30.0  # seconds between attempts to resolve a collector that did not resolve
_ERROR_LOG_INTERVAL = 10.0

# The columns encode.prepare_flows reads; splitting a batch by domain gathers only these.
_COLUMNS = (
    "time_start", "time_end", "account", "vpc", "subnet", "interface", "instance", "src_addr", "dst_addr",
    "src_port", "dst_port", "protocol", "packets", "bytes", "action", "direction", "tcp_flags", "log_status",
    "sampling_rate",
)  # fmt: skip


@dataclass
class NetflowMetrics:
    """What the operator needs to see: datagrams and records sent, what was lost and where."""

    packets: int = 0  # datagrams built and sent (each went to every collector)
    bytes: int = 0
    records: int = 0  # flow records sent
    template_packets: int = 0
    options_packets: int = 0
    send_errors: int = 0  # datagrams refused (ICMP unreachable) or not sent, summed over collectors
    skipped_rows: int = 0  # NODATA / SKIPDATA rows, rows without an address or a time
    clamped_times: int = 0  # v9/v5: flows whose times could not be expressed (a packet spanning > 49.7 days)
    backdated_records: int = 0  # v9/v5: flows older than the virtual boot, sent in packets with their own header time
    dropped_ipv6: int = 0  # v5 only
    saturated_counters: int = 0  # v5 only: packets/bytes above 2^32-1
    pacing_waits: int = 0  # times the sender slept for tokens
    domains: int = 0


class TokenBucket:
    """`rate` tokens per second, at most `burst` banked. `take` grants what is there now; `wait` says how long
    until `want` (at most a burst) will be, so a paced sender sleeps once per burst."""

    def __init__(self, rate: float, burst: int, clock: Any = time.monotonic) -> None:
        self.rate = float(rate)
        self.burst = max(1, int(burst))
        self.clock = clock
        self.tokens = float(self.burst)
        self.stamp = clock()

    def _refill(self) -> None:
        now = self.clock()
        self.tokens = min(float(self.burst), self.tokens + (now - self.stamp) * self.rate)
        self.stamp = now

    def take(self, want: int) -> int:
        self._refill()
        granted = min(want, int(self.tokens))
        self.tokens -= granted
        return granted

    def wait(self, want: int) -> float:
        self._refill()
        return max(0.0, (min(want, self.burst) - self.tokens) / self.rate)


@dataclass
class _Target:
    """One collector: its own connected socket, GSO state and error counts."""

    text: str
    host: str
    port: int
    sock: socket.socket | None = None
    gso: bool = sys.platform == "linux"
    resolve_after: float = 0.0
    errors: int = 0
    logged_at: float = -math.inf


@dataclass
class _Domain:
    ident: int
    name: str
    encoder: Any
    templates_at: float = -math.inf  # monotonic time of the last template message
    packets_since: int = 0  # data packets since then
    recent: dict[int, tuple[str, str]] = field(default_factory=dict)  # interfaces seen since the last refresh
    announced: set[int] = field(default_factory=set)  # interfaces whose names went out at least once


class NetflowSink:
    def __init__(self, config: Any) -> None:
        self.config = config
        self.name: str = config.name
        self.version: int = config.version
        self.metrics = NetflowMetrics()
        self._written = 0
        endpoints = zip(config.addresses, config.endpoints(), strict=True)
        self._targets = [_Target(text, host, port) for text, (host, port) in endpoints]
        self._fixed: int | None = config.fixed_domain()
        self._mode: str = config.observation_domain
        self._domains: dict[int, _Domain] = {}
        self._boot_ms = int(time.time() * 1000) - BOOT_BACKDATE_MS
        rate = config.max_packets_per_second
        self._bucket = TokenBucket(rate, max(1, rate // 20)) if rate else None
        self._lock = asyncio.Lock()
        self._refresher: asyncio.Task[None] | None = None
        # interface name -> (ifIndex, description), kept for one template period so a moved ENI is re-described
        self._interface_cache: dict[str, tuple[int, str]] = {}
        self._cache_since = time.monotonic()

    # -- lifecycle --------------------------------------------------------------------------------------------
    async def open(self) -> None:
        await asyncio.to_thread(self._connect)
        if self._fixed is not None:
            how = f"one fixed observation domain {self._fixed}"
        else:
            how = f"one observation domain per {self._mode} (id = crc32(name) & 0x7fffffff)"
        log.info(
            "sink=%s netflow v%d to %s, %s, templates every %gs / %d packets, %s",
            self.name,
            self.version,
            ", ".join(t.text for t in self._targets),
            how,
            self.config.template_refresh,
            self.config.template_refresh_packets,
            f"at most {self.config.max_packets_per_second} packets/s" if self._bucket else "unpaced",
        )
        if self._fixed is not None:
            async with self._lock:
                await asyncio.to_thread(self._start_fixed_domain)
        if self.version != 5:
            self._refresher = asyncio.create_task(self._refresh_loop(), name=f"netflow-templates:{self.name}")

    async def close(self) -> int:
        # Holding the lock, the refresher is asleep or waiting for the lock, never mid-send in its thread: cancel
        # it there, so no thread is still sending on a socket being closed.
        async with self._lock:
            refresher, self._refresher = self._refresher, None
            if refresher is not None:
                refresher.cancel()
            for target in self._targets:
                if target.sock is not None:
                    target.sock.close()
                    target.sock = None
        if refresher is not None:
            with contextlib.suppress(asyncio.CancelledError):
                await refresher
        return self._written

    # -- data path --------------------------------------------------------------------------------------------
    async def write(self, batch: FlowBatch, ident: BatchId | None = None) -> None:
        if batch.num_rows:
            async with self._lock:
                await asyncio.to_thread(self._deliver, batch)
        self._written += 1

    async def flush(self, force: bool = False) -> int:
        return self._written  # write returns once the datagrams are sent: nothing is buffered here

    def _deliver(self, batch: FlowBatch) -> None:
        if not self._connect():
            raise ConnectionError(f"sink {self.name}: no collector address could be resolved")
        self._rebase()
        self._expire_interface_cache()
        for ident, name, part in self._split(batch):
            domain = self._domain(ident, name)
            flows = prepare_flows(part, self._interface_cache)
            self.metrics.skipped_rows += flows.skipped
            self._data(domain, flows)
        self._collect_encoder_counters()

    def _data(self, domain: _Domain, flows: FlowArrays) -> None:
        encoder = domain.encoder
        templates = self.version != 5
        if templates:
            fresh = {i: v for i, v in flows.interfaces.items() if i not in domain.announced}
            domain.recent.update(flows.interfaces)
            if self._templates_due(domain):
                self._send_templates(domain)
            elif fresh:
                self._send_options(domain, fresh, [])
        for records, ipv6 in ((flows.v4, False), (flows.v6, True)):
            per_message = encoder.records_per_message(ipv6)
            pos = 0
            while pos < len(records):
                budget = len(records)
                if templates:
                    if self._templates_due(domain):
                        self._send_templates(domain)
                    budget = (self.config.template_refresh_packets - domain.packets_since) * per_message
                chunk = records[pos : pos + budget]
                if ipv6:
                    messages = encoder.data_messages(empty_v4(), chunk, time.time())
                else:
                    messages = encoder.data_messages(chunk, empty_v6(), time.time())
                self._send(messages)
                domain.packets_since += len(messages)
                self.metrics.records += len(chunk)
                pos += len(chunk)

    # -- domains and templates --------------------------------------------------------------------------------
    def _split(self, batch: FlowBatch) -> list[tuple[int, str, FlowBatch]]:
        """The batch cut by observation domain; a batch of one source (the usual case) is not copied."""
        if self._fixed is not None:
            return [(self._fixed, self.name, batch)]
        arr = batch.column(self._mode)
        denc = arr if pa.types.is_dictionary(arr.type) else pc.dictionary_encode(arr)
        names = [v if v is not None else "" for v in denc.dictionary.to_pylist()] + [""]
        codes = denc.indices.fill_null(len(names) - 1).to_numpy(zero_copy_only=False).astype(np.int64)
        if (codes == codes[0]).all():
            return [(domain_id(names[codes[0]]), names[codes[0]], batch)]
        order = np.argsort(codes, kind="stable")
        ordered = codes[order]
        starts = np.concatenate(([0], np.flatnonzero(np.diff(ordered)) + 1, [len(ordered)]))
        gathered = batch.select(list(_COLUMNS)).take(pa.array(order))
        out = []
        for a, b in zip(starts[:-1], starts[1:], strict=True):
            name = names[ordered[a]]
            out.append((domain_id(name), name, gathered.slice(int(a), int(b - a))))
        return out

    def _domain(self, ident: int, name: str) -> _Domain:
        domain = self._domains.get(ident)
        if domain is not None:
            if domain.name != name:
                log.warning(
                    "sink=%s %s %r has the same observation domain id %d as %r: they share it",
                    self.name, self._mode, name, ident, domain.name,
                )  # fmt: skip
                domain.name = name if len(name) > len(domain.name) else domain.name
            return domain
        mtu = self.config.mtu
        if self.version == 10:
            encoder: Any = IpfixEncoder(ident, mtu)
        elif self.version == 9:
            encoder = NetflowV9Encoder(ident, self._boot_ms, mtu)
        else:
            encoder = NetflowV5Encoder(ident, self._boot_ms, mtu)
        domain = self._domains[ident] = _Domain(ident, name, encoder)
        self.metrics.domains = len(self._domains)
        log.info("sink=%s observation domain %d = %s %r", self.name, ident, self._mode, name)
        return domain

    def _start_fixed_domain(self) -> None:
        assert self._fixed is not None
        domain = self._domain(self._fixed, self.name)
        if self.version != 5 and self._connect():
            self._send_templates(domain)

    def _templates_due(self, domain: _Domain) -> bool:
        return (
            domain.packets_since >= self.config.template_refresh_packets
            or time.monotonic() - domain.templates_at >= self.config.template_refresh
        )

    def _send_templates(self, domain: _Domain) -> None:
        export = time.time()
        self._send([domain.encoder.template_message(export)])
        self.metrics.template_packets += 1
        self._send_options(domain, domain.recent, [(domain.ident, domain.name)])
        domain.recent = {}
        domain.templates_at = time.monotonic()
        domain.packets_since = 0

    def _send_options(
        self, domain: _Domain, interfaces: dict[int, tuple[str, str]], domains: Sequence[tuple[int, str]]
    ) -> None:
        rows = [(index, name, description) for index, (name, description) in sorted(interfaces.items())]
        messages = domain.encoder.options_messages(rows, domains, time.time())
        self._send(messages)
        self.metrics.options_packets += len(messages)
        domain.announced.update(interfaces)

    async def _refresh_loop(self) -> None:
        """Re-send templates of idle domains on time: a collector that restarts while no data flows still learns
        them within `template_refresh`."""
        period = min(5.0, max(0.05, self.config.template_refresh / 4))
        while True:
            await asyncio.sleep(period)
            async with self._lock:
                due = [d for d in self._domains.values() if self._templates_due(d)]
                if due:
                    await asyncio.to_thread(self._refresh, due)

    def _refresh(self, domains: list[_Domain]) -> None:
        if not self._connect():
            return
        self._rebase()
        for domain in domains:
            self._send_templates(domain)

    def _expire_interface_cache(self) -> None:
        if time.monotonic() - self._cache_since >= self.config.template_refresh:
            self._interface_cache.clear()
            self._cache_since = time.monotonic()

    def _rebase(self) -> None:
        """Move the virtual boot time forward before sysUptime (u32 ms) would wrap; collectors derive the boot time
        from every packet's header, so the jump is invisible in the flow times."""
        if self.version == 10:
            return
        now_ms = int(time.time() * 1000)
        if now_ms - self._boot_ms <= REBASE_AFTER_MS:
            return
        self._boot_ms = now_ms - BOOT_BACKDATE_MS
        for domain in self._domains.values():
            domain.encoder.boot_ms = self._boot_ms
        log.info("sink=%s NetFlow v%d virtual boot time moved to %d ms", self.name, self.version, self._boot_ms)

    def _collect_encoder_counters(self) -> None:
        encoders = [d.encoder for d in self._domains.values()]
        self.metrics.clamped_times = sum(getattr(e, "clamped", 0) for e in encoders)
        self.metrics.backdated_records = sum(getattr(e, "backdated", 0) for e in encoders)
        self.metrics.dropped_ipv6 = sum(getattr(e, "dropped_v6", 0) for e in encoders)
        self.metrics.saturated_counters = sum(getattr(e, "saturated", 0) for e in encoders)

    # -- sockets ----------------------------------------------------------------------------------------------
    def _connect(self) -> bool:
        """Resolve and connect collectors not yet connected (retrying failed ones every 30 s); True if any is."""
        now = time.monotonic()
        for target in self._targets:
            if target.sock is not None or now < target.resolve_after:
                continue
            try:
                family, kind, proto, _, addr = socket.getaddrinfo(target.host, target.port, type=socket.SOCK_DGRAM)[0]
                sock = socket.socket(family, kind, proto)
                try:
                    with contextlib.suppress(OSError):
                        sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, _SNDBUF)
                    sock.connect(addr)
                except OSError:
                    sock.close()
                    raise
                target.sock = sock
                log.info("sink=%s collector %s is %s", self.name, target.text, addr[0])
            except OSError as exc:
                target.resolve_after = now + _RESOLVE_RETRY
                log.error("sink=%s collector %s: %s (retrying in %.0fs)", self.name, target.text, exc, _RESOLVE_RETRY)
        return any(t.sock is not None for t in self._targets)

    def _send(self, packets: list[bytes]) -> None:
        """Every packet to every collector, paced; a failed send is counted, never raised."""
        i, n = 0, len(packets)
        while i < n:
            granted = n - i if self._bucket is None else self._bucket.take(n - i)
            if not granted:
                assert self._bucket is not None
                time.sleep(self._bucket.wait(n - i))
                self.metrics.pacing_waits += 1
                continue
            run = packets[i : i + granted]
            for target in self._targets:
                if target.sock is not None:
                    self._send_run(target, run)
            i += granted
        self.metrics.packets += n
        self.metrics.bytes += sum(map(len, packets))

    def _send_run(self, target: _Target, run: list[bytes]) -> None:
        sock = target.sock
        assert sock is not None
        j, m = 0, len(run)
        while j < m:
            size = len(run[j])
            if target.gso:
                limit = min(_GSO_MAX_SEGMENTS, _GSO_MAX_BYTES // size)
                end = j + 1
                while end < m and end - j < limit and len(run[end]) == size:
                    end += 1
                if end < m and end - j < limit and len(run[end]) < size:
                    end += 1  # GSO allows a shorter last segment: the partial message of a batch
                if end - j > 1 and self._send_gso(target, run[j:end], size):
                    j = end
                    continue
            self._send_one(target, run[j])
            j += 1

    def _send_gso(self, target: _Target, group: list[bytes], size: int) -> bool:
        """One sendmsg for a run of datagrams; False if this socket cannot do GSO (then it never tries again)."""
        assert target.sock is not None
        payload = b"".join(group)
        control = [(socket.IPPROTO_UDP, _UDP_SEGMENT, struct.pack("@H", size))]
        for attempt in (1, 2):
            try:
                target.sock.sendmsg([payload], control)
                return True
            except OSError as exc:
                if exc.errno in _GSO_UNSUPPORTED:
                    target.gso = False
                    log.info("sink=%s collector %s: UDP GSO unavailable (%s), one send per datagram",
                             self.name, target.text, exc)  # fmt: skip
                    return False
                if exc.errno == errno.ECONNREFUSED and attempt == 1:
                    # An ICMP port-unreachable for an earlier datagram, reported now: that one is counted as
                    # lost, this one was not sent yet and is tried once more.
                    self._error(target, exc, 1)
                    continue
                self._error(target, exc, len(group))
                return True
        return True

    def _send_one(self, target: _Target, packet: bytes) -> None:
        assert target.sock is not None
        for attempt in (1, 2):
            try:
                target.sock.send(packet)
                return
            except OSError as exc:
                if exc.errno == errno.ECONNREFUSED and attempt == 1:
                    self._error(target, exc, 1)  # an earlier datagram was refused (see _send_gso)
                    continue
                self._error(target, exc, 1)
                return

    def _error(self, target: _Target, exc: OSError, lost: int) -> None:
        target.errors += lost
        self.metrics.send_errors += lost
        now = time.monotonic()
        if now - target.logged_at >= _ERROR_LOG_INTERVAL:
            log.warning(
                "sink=%s collector %s: send failed: %s (%d datagrams lost so far)",
                self.name, target.text, exc, target.errors,
            )  # fmt: skip
            target.logged_at = now
