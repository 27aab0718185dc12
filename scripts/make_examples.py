"""Write the bundled sample flow logs under examples/data/ (deterministic: fixed seed, fixed times).

    .venv/bin/python scripts/make_examples.py            # write the files, the README, then parse them back
    .venv/bin/python scripts/make_examples.py --check    # only parse the committed files and compare the counts

The AWS records are written from FORMATS.md ("AWS VPC flow logs"), the GCP ones from Google's VPC Flow Logs record
format and Cloud Logging's LogEntry as a log sink exports it to Cloud Storage (adapters/gcp/parse.py): private
10.x / 172.31.x addresses talking to the documentation ranges (198.51.100.0/24, 203.0.113.0/24, 192.0.2.0/24,
2001:db8::/32), so no real address appears; project ids are made up.
Every file is parsed back with the collector's own parsers and the counts are compared with what was written; the
counts also go into examples/README.md, which tests and users read to know what to expect.
"""

from __future__ import annotations

import argparse
import gzip
import json
import random
import sys
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))  # run as a file: make `adapters` and `collector` importable

from adapters.aws import fields as F  # noqa: E402

DATA = ROOT / "examples" / "data"
SEED = 20261122

V2_ACCOUNT = "123456789012"
V5_ACCOUNT = "210987654321"

V2_KEY = (
    "aws/AWSLogs/123456789012/vpcflowlogs/us-east-1/2026/11/22/"
    "123456789012_vpcflowlogs_us-east-1_fl-0a1b2c3d4e5f67890_20261122T0600Z_3f2a1b9c.log.gz"
)
V5_KEY = (
    "aws/AWSLogs/aws-account-id=210987654321/aws-service=vpcflowlogs/aws-region=eu-west-1/"
    "year=2026/month=11/day=22/hour=06/"
    "210987654321_vpcflowlogs_eu-west-1_fl-0b2c3d4e5f6a78901_20261122T0605Z_7c4d2e1a.log.gz"
)
PARQUET_KEY = (
    "aws/AWSLogs/123456789012/vpcflowlogs/us-east-1/2026/11/22/"
    "123456789012_vpcflowlogs_us-east-1_fl-0d4e5f6a7b8c90123_20261122T0610Z_9e8d7c6b.log.parquet"
)
TGW_KEY = (
    "aws/AWSLogs/123456789012/transitgatewayflowlogs/us-east-1/2026/11/22/"
    "123456789012_transitgatewayflowlogs_us-east-1_fl-0c3d4e5f6a7b89012_20261122T0600Z_5b6c7d8e.log.gz"
)

# The custom format of the eu-west-1 flow log: the AWS documentation's traffic-path example order, with the v4
# location fields appended (29 fields, version 5).
V5_FORMAT: tuple[str, ...] = (
    "version", "vpc-id", "subnet-id", "instance-id", "interface-id", "account-id", "type", "srcaddr", "dstaddr",
    "srcport", "dstport", "pkt-srcaddr", "pkt-dstaddr", "protocol", "bytes", "packets", "start", "end", "action",
    "tcp-flags", "log-status", "pkt-src-aws-service", "pkt-dst-aws-service", "flow-direction", "traffic-path",
    "region", "az-id", "sublocation-type", "sublocation-id",
)  # fmt: skip

# The Parquet object's columns (the v2 default fields plus v3..v5 ones), with the types AWS writes (FORMATS.md).
PARQUET_FORMAT: tuple[str, ...] = F.V2_FIELDS + (
    "vpc-id", "subnet-id", "instance-id", "tcp-flags", "type", "pkt-srcaddr", "pkt-dstaddr", "region", "az-id",
    "flow-direction", "traffic-path", "pkt-src-aws-service", "pkt-dst-aws-service",
)  # fmt: skip
PARQUET_INT32 = frozenset({"version", "srcport", "dstport", "protocol", "tcp-flags", "traffic-path"})
PARQUET_INT64 = frozenset({"packets", "bytes", "start", "end"})

# Where the malformed lines of the custom-format object go (1-based line numbers; line 1 is the header).
V5_BAD_LINES = {15: "truncated", 42: "port", 77: "address"}


def _epoch(hh: int, mm: int, ss: int = 0) -> int:
    return int(datetime(2026, 11, 22, hh, mm, ss, tzinfo=UTC).timestamp())


@dataclass(frozen=True, slots=True)
class Interface:
    """A logging point: one ENI with its addresses, and the network it sits in."""

    eni: str
    ip: str
    vpc: str
    subnet: str
    instance: str | None
    az: str
    ip6: str | None = None
    role: str = "web"  # web | bastion | app | nat


@dataclass(slots=True)
class Expected:
    """What a file holds, counted while writing it (and checked against the parser afterwards)."""

    rows: int = 0
    flows: int = 0
    accept: int = 0
    reject: int = 0
    nodata: int = 0
    skipdata: int = 0
    ipv6: int = 0
    ingress: int = 0
    egress: int = 0
    packets: int = 0
    bytes: int = 0
    packets_lost: int = 0
    reporters: dict[str, int] = field(default_factory=dict)  # GCP: rows by reporter
    accounts: dict[str, int] = field(default_factory=dict)  # GCP: rows by project
    provider: str = "aws"
    errors: dict[int, str] = field(default_factory=dict)  # line -> what is wrong
    notes: list[str] = field(default_factory=list)  # for the README, not compared

    def add(self, rec: dict[str, Any]) -> None:
        self.rows += 1
        status = rec.get("log-status")
        if status == "NODATA":
            self.nodata += 1
            return
        if status == "SKIPDATA":
            self.skipdata += 1
            return
        self.flows += 1
        if rec.get("action") == "ACCEPT":
            self.accept += 1
        elif rec.get("action") == "REJECT":
            self.reject += 1
        if ":" in str(rec.get("srcaddr")):
            self.ipv6 += 1
        if rec.get("flow-direction") == "ingress":
            self.ingress += 1
        elif rec.get("flow-direction") == "egress":
            self.egress += 1
        self.packets += rec["packets"]
        self.bytes += rec["bytes"]
        self.packets_lost += sum(
            int(rec.get(k) or 0)
            for k in (
                "packets-lost-no-route",
                "packets-lost-blackhole",
                "packets-lost-mtu-exceeded",
                "packets-lost-ttl-expired",
            )
        )


# -- flow scenarios ------------------------------------------------------------------------------------------------
class Flows:
    """Realistic conversations seen from one interface: both directions of a connection are separate records."""

    def __init__(self, rng: random.Random, window: tuple[int, int], aggregation: int = 60) -> None:
        self.rng = rng
        self.window = window
        self.aggregation = aggregation

    def _interval(self) -> tuple[int, int]:
        lo, hi = self.window
        start = self.rng.randrange(lo, hi - self.aggregation)
        return start, start + self.rng.randrange(self.aggregation // 2, self.aggregation + 1)

    def ephemeral(self) -> int:
        return self.rng.randrange(32768, 61000)

    def _base(self, itf: Interface, src: str, dst: str, sport: int, dport: int, proto: int) -> dict[str, Any]:
        start, end = self._interval()
        return {
            "interface-id": itf.eni,
            "vpc-id": itf.vpc,
            "subnet-id": itf.subnet,
            "instance-id": itf.instance,
            "az-id": itf.az,
            "srcaddr": src,
            "dstaddr": dst,
            "srcport": sport,
            "dstport": dport,
            "protocol": proto,
            "start": start,
            "end": end,
            "type": "IPv6" if ":" in src else "IPv4",
            "pkt-srcaddr": src,
            "pkt-dstaddr": dst,
            "log-status": "OK",
        }

    def _counts(self, packets: tuple[int, int], size: tuple[int, int]) -> tuple[int, int]:
        p = self.rng.randint(*packets)
        return p, sum(self.rng.randint(*size) for _ in range(min(p, 50))) * max(1, p // 50)

    def connection(
        self,
        itf: Interface,
        local: str,
        remote: str,
        port: int,
        *,
        inbound: bool,
        path: int | None = None,
        service: str | None = None,
        big: bool = False,
    ) -> list[dict[str, Any]]:
        """An accepted TCP connection: the client's record and the server's reply (flags 3/19 and 18/19/1)."""
        eph = self.ephemeral()
        client, server = (remote, local) if inbound else (local, remote)
        req = self._base(itf, client, server, eph, port, 6)
        rsp = self._base(itf, server, client, port, eph, 6)
        rsp["start"], rsp["end"] = req["start"], req["end"]
        req["packets"], req["bytes"] = self._counts((4, 40), (52, 600))
        rsp["packets"], rsp["bytes"] = self._counts((4, 60) if not big else (200, 4000), (52, 1448))
        req["tcp-flags"] = self.rng.choice((3, 19, 19, 1))  # 1: a long connection still open (FIN seen only)
        rsp["tcp-flags"] = self.rng.choice((18, 19, 19)) if req["tcp-flags"] != 1 else 1
        for rec, out in ((req, not inbound), (rsp, inbound)):
            rec["action"] = "ACCEPT"
            rec["flow-direction"] = "egress" if out else "ingress"
            rec["traffic-path"] = path if out else None
            if service:
                rec["pkt-dst-aws-service" if out else "pkt-src-aws-service"] = service
        return [req, rsp]

    def probe(self, itf: Interface, local: str, remote: str, port: int) -> dict[str, Any]:
        """A rejected inbound SYN (scanner knocking on 22/3389/…): 1-3 packets of 40-60 bytes, flags 2."""
        rec = self._base(itf, remote, local, self.ephemeral(), port, 6)
        rec["packets"] = self.rng.randint(1, 3)
        rec["bytes"] = rec["packets"] * self.rng.choice((40, 44, 60))
        rec["tcp-flags"] = 2
        rec["action"] = "REJECT"
        rec["flow-direction"] = "ingress"
        return rec

    def dns(self, itf: Interface, local: str, resolver: str) -> list[dict[str, Any]]:
        """A DNS lookup to the VPC resolver (base + 2): query and answer, UDP, tcp-flags 0."""
        eph = self.ephemeral()
        q = self._base(itf, local, resolver, eph, 53, 17)
        a = self._base(itf, resolver, local, 53, eph, 17)
        a["start"], a["end"] = q["start"], q["end"]
        n = self.rng.randint(1, 6)
        q["packets"], q["bytes"] = n, n * self.rng.randint(60, 90)
        a["packets"], a["bytes"] = n, n * self.rng.randint(90, 300)
        for rec, out in ((q, True), (a, False)):
            rec.update({"action": "ACCEPT", "tcp-flags": 0, "flow-direction": "egress" if out else "ingress"})
            rec["traffic-path"] = 1 if out else None
        return [q, a]

    def icmp(self, itf: Interface, local: str, remote: str, accept: bool) -> dict[str, Any]:
        rec = self._base(itf, remote, local, 0, 0, 58 if ":" in remote else 1)
        rec["packets"] = self.rng.randint(1, 8)
        rec["bytes"] = rec["packets"] * 84
        rec.update({"action": "ACCEPT" if accept else "REJECT", "tcp-flags": 0, "flow-direction": "ingress"})
        return rec

    def status(self, itf: Interface, status: str) -> dict[str, Any]:
        """A NODATA / SKIPDATA line: `-` for everything but the interface, times and the status."""
        start, end = self._interval()
        return {
            "interface-id": itf.eni,
            "vpc-id": itf.vpc,
            "subnet-id": itf.subnet,
            "instance-id": itf.instance,
            "az-id": itf.az,
            "start": start,
            "end": end,
            "log-status": status,
        }


def _remote(rng: random.Random, net: str, lo: int = 1, hi: int = 254) -> str:
    return f"{net}.{rng.randint(lo, hi)}"


def _mix(rng: random.Random, flows: Flows, itfs: Sequence[Interface], n: int, resolver: str) -> list[dict[str, Any]]:
    """About n records of a typical edge VPC: web traffic, admin SSH, scanners, DNS, egress HTTPS, pings."""
    out: list[dict[str, Any]] = []
    while len(out) < n:
        itf = rng.choice(itfs)
        kind = rng.choices(("web", "scan", "dns", "egress", "icmp", "ssh", "s3"), weights=(30, 16, 12, 14, 6, 4, 6))[0]
        if kind == "web" and itf.role == "web":
            client = _remote(rng, rng.choice(("198.51.100", "203.0.113")))
            out += flows.connection(itf, itf.ip, client, 443, inbound=True, path=8, big=rng.random() < 0.3)
        elif kind == "scan":
            port = rng.choice((22, 22, 3389, 3389, 23, 445, 1433, 8080))
            out.append(flows.probe(itf, itf.ip, _remote(rng, "203.0.113"), port))
        elif kind == "dns":
            out += flows.dns(itf, itf.ip, resolver)
        elif kind == "egress":
            dst = _remote(rng, rng.choice(("192.0.2", "198.51.100")))
            out += flows.connection(itf, itf.ip, dst, 443, inbound=False, path=8, big=rng.random() < 0.2)
        elif kind == "icmp":
            out.append(flows.icmp(itf, itf.ip, _remote(rng, "192.0.2"), accept=rng.random() < 0.6))
        elif kind == "ssh" and itf.role == "bastion":
            out += flows.connection(itf, itf.ip, "198.51.100.10", 22, inbound=True, path=8)
        elif kind == "s3":
            # Through a gateway endpoint: the far side is an AWS service, traffic-path 7 (Nitro gateway endpoint).
            dst = _remote(rng, "192.0.2", 200, 250)
            out += flows.connection(itf, itf.ip, dst, 443, inbound=False, path=7, service="S3", big=True)
    return out[:n]


def _ipv6(flows: Flows, itf: Interface, n: int) -> list[dict[str, Any]]:
    assert itf.ip6 is not None
    recs: list[dict[str, Any]] = []
    clients = ("2001:db8:ffff:10::7", "2001:db8:ffff:22::1b", "2001:db8:cafe::42")
    for i in range(n):
        if i % 2 == 0:
            recs.append(flows.connection(itf, itf.ip6, clients[i % 3], 443, inbound=True, path=8)[0])
        else:
            recs.append(flows.probe(itf, itf.ip6, clients[i % 3], 22))
    return recs


def _finish(recs: list[dict[str, Any]], names: Sequence[str], version: int, account: str, region: str) -> None:
    """Stamp the common fields and keep only the fields of the file's format (so the counts match what it holds)."""
    for i, rec in enumerate(recs):
        rec.update({"version": version, "account-id": account, "region": region})
        recs[i] = {n: rec.get(n) for n in names}


def _line(rec: dict[str, Any], names: Sequence[str]) -> str:
    return " ".join("-" if rec.get(n) is None else str(rec[n]) for n in names)


def _write_gzip(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(gzip.compress(text.encode(), compresslevel=9, mtime=0))


# -- the four objects ----------------------------------------------------------------------------------------------
def make_v2(rng: random.Random) -> tuple[str, Expected, str]:
    """Default format, us-east-1, 120 records: 114 IPv4 flows, 3 IPv6 flows, 2 NODATA, 1 SKIPDATA."""
    itfs = [
        Interface("eni-0f1e2d3c4b5a69788", "10.0.1.25", "vpc-0a1b2c3d", "subnet-0a1b2c3d", "i-0a1b2c3d4e5f60718",
                  "use1-az1", "2001:db8:1234:1a00::25", "web"),
        Interface("eni-0a9b8c7d6e5f40312", "10.0.1.26", "vpc-0a1b2c3d", "subnet-0a1b2c3d", "i-0b2c3d4e5f6a70819",
                  "use1-az1", None, "web"),
        Interface("eni-04d5e6f7a8b9c0d12", "10.0.2.10", "vpc-0a1b2c3d", "subnet-1b2c3d4e", "i-0c3d4e5f6a7b8091a",
                  "use1-az2", None, "bastion"),
        Interface("eni-0b1c2d3e4f5a6b7c8", "10.0.3.57", "vpc-0a1b2c3d", "subnet-2c3d4e5f", "i-0d4e5f6a7b8c90a1b",
                  "use1-az2", None, "app"),
        Interface("eni-07a6b5c4d3e2f1a09", "10.0.0.136", "vpc-0a1b2c3d", "subnet-3d4e5f6a", None,
                  "use1-az1", None, "nat"),
    ]  # fmt: skip
    flows = Flows(rng, (_epoch(5, 48), _epoch(5, 59)), aggregation=60)
    recs = _mix(rng, flows, itfs, 114, "10.0.0.2")
    six = _ipv6(flows, itfs[0], 3)
    recs[20:20] = six[:1]
    recs[57:57] = six[1:2]
    recs[98:98] = six[2:]
    recs.insert(33, flows.status(itfs[3], "NODATA"))
    recs.insert(76, flows.status(itfs[4], "NODATA"))
    recs.insert(109, flows.status(itfs[2], "SKIPDATA"))
    _finish(recs, F.V2_FIELDS, 2, V2_ACCOUNT, "us-east-1")
    exp = Expected()
    for rec in recs:
        exp.add(rec)
    text = " ".join(F.V2_FIELDS) + "\n" + "".join(_line(r, F.V2_FIELDS) + "\n" for r in recs)
    exp.notes += line_notes(text)
    return V2_KEY, exp, text


def _v5_interfaces() -> list[Interface]:
    return [
        Interface("eni-0e2d4c6b8a0f13579", "172.31.16.139", "vpc-0e1f2a3b4c5d6e7f8", "subnet-0e1f2a3b",
                  "i-0e1f2a3b4c5d6e7f8", "euw1-az1", "2001:db8:5e00:1a00::8b", "web"),
        Interface("eni-01b3d5f7092a4c6e8", "172.31.16.21", "vpc-0e1f2a3b4c5d6e7f8", "subnet-0e1f2a3b",
                  "i-01b3d5f7092a4c6e8", "euw1-az1", None, "bastion"),
        Interface("eni-0c4e6a8b0d2f46813", "172.31.33.70", "vpc-0e1f2a3b4c5d6e7f8", "subnet-1f2a3b4c",
                  "i-0c4e6a8b0d2f46813", "euw1-az2", None, "app"),
        # A requester-managed interface (a load balancer's): no instance id.
        Interface("eni-05f7a9b1c3d5e7092", "172.31.9.69", "vpc-0e1f2a3b4c5d6e7f8", "subnet-2a3b4c5d", None,
                  "euw1-az3", None, "web"),
    ]  # fmt: skip


# A NAT gateway's interface (requester-managed: no instance id) in the eu-west-1 VPC.
V5_NAT = Interface("eni-0a7c9e1b3d5f70246", "172.31.0.136", "vpc-0e1f2a3b4c5d6e7f8", "subnet-3b4c5d6e", None,
                   "euw1-az1", None, "nat")  # fmt: skip


def _through_nat(flows: Flows, instance: str, remote: str) -> list[dict[str, Any]]:
    """An instance's HTTPS request leaving through the NAT gateway, seen on the NAT interface: the packet's real
    destination (request) and source (reply) are in pkt-dstaddr / pkt-srcaddr, not in dstaddr / srcaddr."""
    req, rsp = flows.connection(V5_NAT, V5_NAT.ip, instance, 443, inbound=True)
    req["pkt-dstaddr"] = remote  # instance -> NAT, on its way to the internet
    rsp["pkt-srcaddr"] = remote  # NAT -> instance, the reply from the internet
    rsp["traffic-path"] = 1
    return [req, rsp]


def make_v5(rng: random.Random) -> tuple[str, Expected, str]:
    """Custom 29-field v5 format, Hive layout, eu-west-1: 80 records and 3 malformed lines at known places."""
    itfs = _v5_interfaces()
    flows = Flows(rng, (_epoch(5, 53), _epoch(6, 4)), aggregation=60)
    recs = _mix(rng, flows, itfs, 76, "172.31.0.2")
    six = _ipv6(flows, itfs[0], 2)
    recs[10:10] = six[:1]
    recs[60:60] = six[1:]
    recs[30:30] = _through_nat(flows, "172.31.33.70", "203.0.113.5")
    _finish(recs, V5_FORMAT, 5, V5_ACCOUNT, "eu-west-1")
    exp = Expected()
    for rec in recs:
        exp.add(rec)
    lines = [_line(r, V5_FORMAT) for r in recs]
    # The malformed lines: copies of real records, damaged; the parser must report them and keep the others.
    template = dict(recs[0])
    bad: dict[int, str] = {}
    for lineno, what in sorted(V5_BAD_LINES.items()):
        rec = dict(template)
        if what == "truncated":
            tokens = _line(rec, V5_FORMAT).split(" ")
            text = " ".join(tokens[:17])  # cut mid-record, after `start`
            bad[lineno] = f"truncated line: 17 of {len(V5_FORMAT)} fields"
        elif what == "port":
            rec["dstport"] = "https"
            text = _line(rec, V5_FORMAT)
            bad[lineno] = "non-numeric dstport 'https'"
        else:
            rec["srcaddr"] = "172.31.16.300"
            text = _line(rec, V5_FORMAT)
            bad[lineno] = "invalid srcaddr '172.31.16.300'"
        lines.insert(lineno - 2, text)  # -1 for 1-based, -1 for the header line
    exp.errors = bad
    nat = [i + 2 for i, line in enumerate(lines) if V5_NAT.eni in line and "203.0.113.5 " in line]
    exp.notes.append(f"NAT gateway records (peer 203.0.113.5 in pkt-dstaddr / pkt-srcaddr) on lines {nat[0]}, {nat[1]}")
    text = " ".join(V5_FORMAT) + "\n" + "".join(line + "\n" for line in lines)
    exp.notes += line_notes(text)
    return V5_KEY, exp, text


def make_parquet(rng: random.Random) -> tuple[str, Expected, Any]:
    """Parquet, us-east-1, 60 records (v2 + v3..v5 columns): 58 flows, 1 NODATA, 1 SKIPDATA."""
    import pyarrow as pa

    itfs = [
        Interface("eni-0f1e2d3c4b5a69788", "10.0.1.25", "vpc-0a1b2c3d", "subnet-0a1b2c3d", "i-0a1b2c3d4e5f60718",
                  "use1-az1", None, "web"),
        Interface("eni-04d5e6f7a8b9c0d12", "10.0.2.10", "vpc-0a1b2c3d", "subnet-1b2c3d4e", "i-0c3d4e5f6a7b8091a",
                  "use1-az2", None, "bastion"),
        Interface("eni-0b1c2d3e4f5a6b7c8", "10.0.3.57", "vpc-0a1b2c3d", "subnet-2c3d4e5f", "i-0d4e5f6a7b8c90a1b",
                  "use1-az2", None, "app"),
    ]  # fmt: skip
    flows = Flows(rng, (_epoch(5, 58), _epoch(6, 9)), aggregation=60)
    recs = _mix(rng, flows, itfs, 58, "10.0.0.2")
    recs.insert(12, flows.status(itfs[2], "NODATA"))
    recs.insert(40, flows.status(itfs[1], "SKIPDATA"))
    _finish(recs, PARQUET_FORMAT, 5, V2_ACCOUNT, "us-east-1")
    exp = Expected()
    for rec in recs:
        exp.add(rec)
    arrays = []
    for name in PARQUET_FORMAT:
        type_ = pa.int32() if name in PARQUET_INT32 else pa.int64() if name in PARQUET_INT64 else pa.string()
        values = [rec.get(name) for rec in recs]
        arrays.append(pa.array([v if v is None or type_ != pa.string() else str(v) for v in values], type_))
    table = pa.table(arrays, names=[n.replace("-", "_") for n in PARQUET_FORMAT])
    for status in ("NODATA", "SKIPDATA"):
        rows = [str(i + 1) for i, rec in enumerate(recs) if rec["log-status"] == status]
        exp.notes.append(f"{status} at row {', '.join(rows)} (1-based, no header in Parquet)")
    return PARQUET_KEY, exp, table


def make_tgw(rng: random.Random) -> tuple[str, Expected, str]:
    """Transit Gateway default format, 60 s aggregation, 20 records (some with packets lost)."""
    attach = {
        "vpc-0a1b2c3d": ("tgw-attach-0a1b2c3d4e5f60718", "subnet-0a1b2c3d", "eni-0aa1bb2cc3dd4ee5f", "use1-az1"),
        "vpc-0f9e8d7c": ("tgw-attach-0f9e8d7c6b5a40312", "subnet-0f9e8d7c", "eni-0ff9ee8dd7cc6bb5a", "use1-az2"),
        "vpc-05a4b3c2": ("tgw-attach-05a4b3c2d1e0f9a8b", "subnet-05a4b3c2", "eni-055a44b33c22d11e0", "use1-az1"),
    }
    nets = {"vpc-0a1b2c3d": "10.0.1", "vpc-0f9e8d7c": "10.20.4", "vpc-05a4b3c2": "10.30.8"}
    other_account = {"vpc-0a1b2c3d": V2_ACCOUNT, "vpc-0f9e8d7c": V2_ACCOUNT, "vpc-05a4b3c2": "345678901234"}
    start0 = _epoch(5, 50)
    recs: list[dict[str, Any]] = []
    vpcs = list(attach)
    for _ in range(20):
        src_vpc, dst_vpc = rng.sample(vpcs, 2)
        s_att, s_sub, s_eni, s_az = attach[src_vpc]
        d_att, d_sub, d_eni, d_az = attach[dst_vpc]
        port, proto = rng.choice(((443, 6), (5432, 6), (22, 6), (53, 17), (8080, 6)))
        start = start0 + 60 * rng.randrange(0, 9)
        packets = rng.randint(3, 900)
        rec: dict[str, Any] = {
            "version": 6,
            "resource-type": "TransitGateway",
            "account-id": V2_ACCOUNT,
            "tgw-id": "tgw-0123456789abcdef0",
            "tgw-attachment-id": s_att,
            "tgw-src-vpc-account-id": other_account[src_vpc],
            "tgw-dst-vpc-account-id": other_account[dst_vpc],
            "tgw-src-vpc-id": src_vpc,
            "tgw-dst-vpc-id": dst_vpc,
            "tgw-src-subnet-id": s_sub,
            "tgw-dst-subnet-id": d_sub,
            "tgw-src-eni": s_eni,
            "tgw-dst-eni": d_eni,
            "tgw-src-az-id": s_az,
            "tgw-dst-az-id": d_az,
            "tgw-pair-attachment-id": d_att,
            "srcaddr": _remote(rng, nets[src_vpc], 10, 200),
            "dstaddr": _remote(rng, nets[dst_vpc], 10, 200),
            "srcport": rng.randrange(32768, 61000),
            "dstport": port,
            "protocol": proto,
            "packets": packets,
            "bytes": packets * rng.randint(60, 1400),
            "start": start,
            "end": start + 60,
            "log-status": "OK",
            "type": "IPv4",
            "packets-lost-no-route": 0,
            "packets-lost-blackhole": 0,
            "packets-lost-mtu-exceeded": 0,
            "packets-lost-ttl-expired": 0,
            "tcp-flags": rng.choice((19, 3, 18, 2, 1)) if proto == 6 else 0,
            "region": "us-east-1",
            "flow-direction": "ingress",  # the transit gateway's view: traffic entering from the attachment
            "pkt-src-aws-service": None,
            "pkt-dst-aws-service": None,
        }
        recs.append(rec)
    # Packets the transit gateway dropped: a missing route and a blackhole route.
    recs[6]["packets-lost-no-route"] = 12
    recs[13]["packets-lost-blackhole"] = 7
    exp_notes = ["packets lost: line 8 (packets-lost-no-route 12), line 15 (packets-lost-blackhole 7)"]
    exp = Expected()
    for rec in recs:
        exp.add(rec)
    exp.notes += exp_notes
    text = " ".join(F.TGW_DEFAULT_FIELDS) + "\n" + "".join(_line(r, F.TGW_DEFAULT_FIELDS) + "\n" for r in recs)
    return TGW_KEY, exp, text


# -- GCP: a log sink's Cloud Storage export ------------------------------------------------------------------------
# An organisation-level log sink exporting `compute.googleapis.com/vpc_flows` to one bucket (`gcp/` is the bucket
# root): one object per hour and shard, one LogEntry per line, every project of the organisation mixed in.
GCP_PROJECT = "example-shop-prod-4821"
GCP_PROJECT_2 = "example-data-dev-1937"
GCP_KEY = "gcp/compute.googleapis.com/vpc_flows/2026/11/22/06:00:00_06:59:59_S0.json"
GCP_KEY_2 = "gcp/compute.googleapis.com/vpc_flows/2026/11/22/07:00:00_07:59:59_S0.json"
GCP_LOG = "compute.googleapis.com%2Fvpc_flows"
# Where the damaged lines of the 06:00 object go (1-based; there is no header line).
GCP_BAD_LINES = {9: "truncated", 27: "bytes", 44: "port"}


@dataclass(frozen=True, slots=True)
class Vm:
    """A GCE instance's NIC as VPC Flow Logs describe it (InstanceDetails + VpcDetails), with its subnet's id."""

    project: str
    name: str
    ip: str
    vpc: str
    subnet: str
    subnet_id: str
    region: str
    zone: str
    ip6: str | None = None
    group: str | None = None  # managed instance group

    def instance(self) -> dict[str, Any]:
        out: dict[str, Any] = {"project_id": self.project, "region": self.region, "vm_name": self.name,
                               "zone": self.zone}  # fmt: skip
        if self.group:
            out["managed_instance_group"] = {"name": self.group, "region": self.region}
        return out

    def vpc_details(self) -> dict[str, Any]:
        return {"project_id": self.project, "subnetwork_name": self.subnet, "subnetwork_region": self.region,
                "vpc_name": self.vpc}  # fmt: skip


GCP_WEB = (
    Vm(GCP_PROJECT, "web-euw1-7x2k", "10.128.0.11", "shop-vpc", "web-euw1", "4821000000000000011", "europe-west1",
       "europe-west1-b", "2001:db8:4821:10::b", "web-euw1"),
    Vm(GCP_PROJECT, "web-euw1-9p4m", "10.128.0.12", "shop-vpc", "web-euw1", "4821000000000000011", "europe-west1",
       "europe-west1-c", None, "web-euw1"),
)  # fmt: skip
GCP_APP = Vm(GCP_PROJECT, "app-euw1-1", "10.128.16.21", "shop-vpc", "app-euw1", "4821000000000000012",
             "europe-west1", "europe-west1-b")  # fmt: skip
GCP_ETL = (
    Vm(GCP_PROJECT_2, "etl-usc1-1", "10.132.0.5", "data-vpc", "etl-usc1", "1937000000000000021", "us-central1",
       "us-central1-a"),
    Vm(GCP_PROJECT_2, "etl-usc1-2", "10.132.0.6", "data-vpc", "etl-usc1", "1937000000000000021", "us-central1",
       "us-central1-f"),
)  # fmt: skip
# A Cloud VPN tunnel of the shop VPC to an on-premises network (198.51.100.64/26 here).
GCP_VPN = {"location": "europe-west1", "name": "vpn-onprem-1", "project_id": GCP_PROJECT, "type": "VPN_TUNNEL",
           "vpc": {"project_id": GCP_PROJECT, "vpc_name": "shop-vpc"}}  # fmt: skip
GCP_PLACES = (
    {"asn": 64496, "city": "Amsterdam", "continent": "Europe", "country": "nld", "region": "North Holland"},
    {"asn": 64500, "city": "Frankfurt am Main", "continent": "Europe", "country": "deu", "region": "Hesse"},
    {"asn": 64511, "city": "Chicago", "continent": "America", "country": "usa", "region": "Illinois"},
)  # ASNs from the documentation range (RFC 5398)


class GcpFlows:
    """LogEntry lines as a log sink writes them: int64 values (bytes, packets, rtt) as JSON strings, ports and
    protocol as numbers, times in RFC 3339 with nanoseconds; keys sorted, compact, as the export writes them."""

    def __init__(self, rng: random.Random, hour: int) -> None:
        self.rng = rng
        self.hour = hour

    def _time(self, seconds: float) -> str:
        """`seconds` after the hour, to the nanosecond (so a start is never after its end)."""
        whole, ns = divmod(int(seconds * 1_000_000_000), 1_000_000_000)
        when = datetime(2026, 11, 22, self.hour, tzinfo=UTC).timestamp() + whole
        return datetime.fromtimestamp(when, UTC).strftime("%Y-%m-%dT%H:%M:%S") + f".{ns:09d}Z"

    def _interval(self) -> tuple[float, float]:
        start = self.rng.uniform(0, 3500)
        return start, start + self.rng.uniform(0.5, 5.0)  # the default aggregation interval is 5 s

    def entry(self, vm: Vm, record: dict[str, Any], end: float, *, vpn: bool = False) -> dict[str, Any]:
        """The LogEntry around a record, reported by `vm`'s subnet (a gateway report: the VPN tunnel's region)."""
        received = end + self.rng.uniform(5, 40)
        labels = {"location": vm.region if vpn else vm.zone, "project_id": vm.project, "subnetwork_id": vm.subnet_id,
                  "subnetwork_name": vm.subnet}  # fmt: skip
        return {
            "insertId": "".join(self.rng.choice("abcdefghijklmnopqrstuvwxyz0123456789") for _ in range(14)),
            "jsonPayload": record,
            "logName": f"projects/{vm.project}/logs/{GCP_LOG}",
            "receiveTimestamp": self._time(received),
            "resource": {"labels": labels, "type": "gce_subnetwork"},
            "timestamp": self._time(end + self.rng.uniform(0.1, 2)),
        }

    def record(self, src: str, dst: str, sport: int | None, dport: int | None, proto: int, reporter: str,
               packets: int, size: int, around: float | None = None) -> tuple[dict[str, Any], float]:  # fmt: skip
        """One flow record; `around` (seconds after the hour) puts the reports of one connection in about the same
        aggregation interval."""
        start, end = self._interval()
        if around is not None:
            start = around + self.rng.uniform(0, 0.2)
            end = start + self.rng.uniform(0.5, 5.0)
        conn: dict[str, Any] = {"dest_ip": dst, "protocol": proto, "src_ip": src}
        if sport is not None and dport is not None:
            conn.update({"dest_port": dport, "src_port": sport})
        rec = {
            "bytes_sent": str(packets * size),
            "connection": conn,
            "end_time": self._time(end),
            "packets_sent": str(packets),
            "reporter": reporter,
            "start_time": self._time(start),
        }
        return rec, end

    def internet(self, vm: Vm, peer: str, port: int, *, inbound: bool, v6: bool = False) -> list[dict[str, Any]]:
        """A TCP connection between a VM and the internet: the VM reports both directions (DEST for what it
        receives, SRC with rtt_msec for what it sends); the peer side has a GeographicDetails location."""
        local = vm.ip6 if v6 else vm.ip
        assert local is not None
        eph = self.rng.randrange(32768, 61000)
        client, server, cport, sport = (peer, local, eph, port) if inbound else (local, peer, eph, port)
        place = self.rng.choice(GCP_PLACES)
        t0 = self.rng.uniform(0, 3490)
        out = []
        for src, dst, a, b in ((client, server, cport, sport), (server, client, sport, cport)):
            sending = src == local
            packets = self.rng.randint(2, 400)
            size = self.rng.randint(52, 1400)
            rec, end = self.record(src, dst, a, b, 6, "SRC" if sending else "DEST", packets, size, t0)
            side = "src" if sending else "dest"
            rec[f"{side}_instance"] = vm.instance()
            rec[f"{side}_vpc"] = vm.vpc_details()
            rec[f"{'dest' if sending else 'src'}_location"] = place
            if sending:
                rec["rtt_msec"] = str(self.rng.randint(1, 180))
            out.append(self.entry(vm, rec, end))
        return out

    def between(self, a: Vm, b: Vm, port: int) -> list[dict[str, Any]]:
        """A connection from VM a to VM b, each direction reported by both VMs (SRC by the sender, DEST by the
        receiver; both carry both instances and VPCs). The two reports of one direction are sampled separately,
        so their counts differ a little."""
        eph = self.rng.randrange(32768, 61000)
        t0 = self.rng.uniform(0, 3490)
        out = []
        for src, dst, sport, dport in ((a, b, eph, port), (b, a, port, eph)):
            packets = self.rng.randint(5, 300)
            size = self.rng.randint(60, 1400)
            for reporter, vm in (("SRC", src), ("DEST", dst)):
                seen = max(1, packets + self.rng.randint(-3, 3))
                rec, end = self.record(src.ip, dst.ip, sport, dport, 6, reporter, seen, size, t0)
                rec.update({"dest_instance": dst.instance(), "dest_vpc": dst.vpc_details(),
                            "src_instance": src.instance(), "src_vpc": src.vpc_details()})  # fmt: skip
                if reporter == "SRC":
                    rec["rtt_msec"] = str(self.rng.randint(1, 4))
                out.append(self.entry(vm, rec, end))
        return out

    def ping(self, vm: Vm, peer: str) -> dict[str, Any]:
        """An echo request from the internet: ICMP, so `connection` has no ports."""
        v6 = ":" in peer
        n = self.rng.randint(1, 10)
        local = vm.ip6 if v6 else vm.ip
        assert local is not None
        rec, end = self.record(peer, local, None, None, 58 if v6 else 1, "DEST", n, 84)
        rec.update({"dest_instance": vm.instance(), "dest_vpc": vm.vpc_details(),
                    "src_location": self.rng.choice(GCP_PLACES)})  # fmt: skip
        return self.entry(vm, rec, end)

    def vpn(self, vm: Vm, onprem: str, port: int) -> list[dict[str, Any]]:
        """On-premises client -> VM through the VPN tunnel: the tunnel reports the request as SRC_GATEWAY and the
        reply as DEST_GATEWAY (its gateway is the reporting side), the VM reports DEST and SRC."""
        eph = self.rng.randrange(32768, 61000)
        t0 = self.rng.uniform(0, 3490)
        out = []
        for src, dst, sport, dport, to_vm in ((onprem, vm.ip, eph, port, True), (vm.ip, onprem, port, eph, False)):
            packets = self.rng.randint(4, 200)
            size = self.rng.randint(60, 1400)
            for reporter in ("SRC_GATEWAY", "DEST") if to_vm else ("SRC", "DEST_GATEWAY"):
                rec, end = self.record(src, dst, sport, dport, 6, reporter, packets, size, t0)
                vm_side, gw_side = ("dest", "src") if to_vm else ("src", "dest")
                rec[f"{vm_side}_instance"] = vm.instance()
                rec[f"{vm_side}_vpc"] = vm.vpc_details()
                rec[f"{gw_side}_gateway"] = GCP_VPN
                out.append(self.entry(vm, rec, end, vpn="GATEWAY" in reporter))
        return out


def _gcp_line(entry: dict[str, Any]) -> str:
    return json.dumps(entry, sort_keys=True, separators=(",", ":"))


def _gcp_expected(
    entries: Sequence[dict[str, Any]], lines: Sequence[str], skip: frozenset[int] | set[int] = frozenset()
) -> Expected:
    exp = Expected(provider="gcp")
    for e in entries:
        rec = e["jsonPayload"]
        assert rec["start_time"] <= rec["end_time"] <= e["timestamp"] <= e["receiveTimestamp"], e  # same format
        exp.rows += 1
        exp.flows += 1
        exp.ipv6 += ":" in rec["connection"]["src_ip"]
        exp.egress += rec["reporter"].startswith("SRC")
        exp.ingress += rec["reporter"].startswith("DEST")
        exp.packets += int(rec["packets_sent"])
        exp.bytes += int(rec["bytes_sent"])
        exp.reporters[rec["reporter"]] = exp.reporters.get(rec["reporter"], 0) + 1
        project = e["resource"]["labels"]["project_id"]
        exp.accounts[project] = exp.accounts.get(project, 0) + 1
    exp.reporters = dict(sorted(exp.reporters.items()))
    exp.accounts = dict(sorted(exp.accounts.items()))

    def where(test: Callable[[dict[str, Any]], bool]) -> str:
        found = []
        for i, text in enumerate(lines, 1):
            if i in skip:
                continue
            if test(json.loads(text)["jsonPayload"]):
                found.append(str(i))
        return f"line{'s' if len(found) > 1 else ''} {', '.join(found)}" if found else ""

    exp.notes.append("reporters: " + ", ".join(f"{n} {r}" for r, n in exp.reporters.items()))
    exp.notes.append("projects: " + ", ".join(f"{p} {n}" for p, n in exp.accounts.items()))
    six = where(lambda r: ":" in r["connection"]["src_ip"])
    if six:
        exp.notes.append(f"IPv6 flows on {six}")
    icmp = where(lambda r: "src_port" not in r["connection"])
    if icmp:
        exp.notes.append(f"ICMP (no ports in `connection`) on {icmp}")
    gateway = where(lambda r: r["reporter"].endswith("_GATEWAY"))
    if gateway:
        exp.notes.append(f"VPN tunnel reports (SRC_GATEWAY / DEST_GATEWAY, `src_gateway` / `dest_gateway`) on "
                         f"{gateway}")  # fmt: skip
    both = where(lambda r: "src_instance" in r and "dest_instance" in r)
    if both:
        exp.notes.append(f"VM-to-VM flows, each direction reported by both VMs (SRC and DEST) on {both}")
    return exp


def make_gcp(rng: random.Random) -> tuple[str, Expected, str]:
    """06:00 hour, both projects mixed as an organisation sink writes them: 60 entries and 3 damaged lines."""
    flows = GcpFlows(rng, 6)
    entries: list[dict[str, Any]] = []
    entries += flows.between(GCP_WEB[0], GCP_APP, 8080)
    while len(entries) < 40:
        web = rng.choice(GCP_WEB)
        entries += flows.internet(web, _remote(rng, rng.choice(("198.51.100", "203.0.113"))), 443, inbound=True)
    entries += flows.internet(GCP_WEB[0], "2001:db8:ffff:10::7", 443, inbound=True, v6=True)
    entries.append(flows.ping(GCP_WEB[1], _remote(rng, "192.0.2")))
    entries += flows.vpn(GCP_APP, "198.51.100.70", 5432)
    entries += flows.between(GCP_ETL[0], GCP_ETL[1], 9000)
    while len(entries) < 60:
        entries += flows.internet(rng.choice(GCP_ETL), _remote(rng, "192.0.2"), 443, inbound=False)
    entries = entries[:60]
    lines = [_gcp_line(e) for e in entries]
    exp = _gcp_expected(entries, lines)
    bad: dict[int, str] = {}
    template = entries[5]
    for lineno, what in sorted(GCP_BAD_LINES.items()):
        damaged = json.loads(json.dumps(template))
        if what == "truncated":
            text = _gcp_line(damaged)[:300]  # a line cut short: not JSON
            bad[lineno] = "line cut short: not JSON"
        elif what == "bytes":
            damaged["jsonPayload"]["bytes_sent"] = "12k"
            text = _gcp_line(damaged)
            bad[lineno] = '`bytes_sent` "12k" is not a number'
        else:
            damaged["jsonPayload"]["connection"]["dest_port"] = 70000
            text = _gcp_line(damaged)
            bad[lineno] = "`connection.dest_port` 70000 is out of range"
        lines.insert(lineno - 1, text)
    exp.errors = bad
    exp.notes = _gcp_expected(entries, lines, skip=set(bad)).notes  # line numbers after the damaged lines went in
    return GCP_KEY, exp, "".join(line + "\n" for line in lines)


def make_gcp_2(rng: random.Random) -> tuple[str, Expected, str]:
    """07:00 hour: 24 entries, mostly the data project; IPv6 and an ICMPv6 ping; no damage."""
    flows = GcpFlows(rng, 7)
    entries: list[dict[str, Any]] = []
    while len(entries) < 16:
        entries += flows.internet(rng.choice(GCP_ETL), _remote(rng, rng.choice(("192.0.2", "198.51.100"))), 443,
                                  inbound=False)  # fmt: skip
    entries += flows.internet(GCP_WEB[0], "2001:db8:ffff:22::1b", 443, inbound=True, v6=True)
    entries.append(flows.ping(GCP_WEB[0], "2001:db8:cafe::42"))
    entries += flows.between(GCP_ETL[1], GCP_ETL[0], 5432)
    while len(entries) < 24:
        entries += flows.internet(rng.choice(GCP_WEB), _remote(rng, "203.0.113"), 443, inbound=True)
    entries = entries[:24]
    lines = [_gcp_line(e) for e in entries]
    return GCP_KEY_2, _gcp_expected(entries, lines), "".join(line + "\n" for line in lines)


# -- verification --------------------------------------------------------------------------------------------------
def parse_counts(path: Path) -> Expected:
    """Parse a file back with the collector's parsers and count what came out."""
    import isal.igzip
    import pyarrow as pa
    import pyarrow.compute as pc

    from adapters.aws.parse import parse_parquet, parse_text

    if path.suffix == ".json":  # GCP: through the parsing seam's detection, as the `local` source reads it
        from collector.parsing import open_unit

        results = list(open_unit(path, unit=path.name, source="examples"))
        assert {r.provider for r in results if r.batch.num_rows} == {"gcp"}, path
    elif path.suffix == ".parquet":
        results = list(parse_parquet(str(path), unit=path.name, source="examples"))
    else:
        data = isal.igzip.decompress(path.read_bytes())
        results = list(parse_text([data], unit=path.name, source="examples"))
    batches = [r.batch for r in results if r.batch.num_rows]
    got = Expected()
    got.errors = {e.line or 0: e.reason for r in results for e in r.errors}
    if not batches:
        return got
    table = pa.Table.from_batches(batches)

    def count(col: str, value: str) -> int:
        return int(pc.sum(pc.equal(table.column(col).cast(pa.string()), value)).as_py() or 0)

    got.rows = table.num_rows
    got.nodata = count("log_status", "nodata")
    got.skipdata = count("log_status", "skipdata")
    got.flows = got.rows - got.nodata - got.skipdata
    got.accept = count("action", "accept")
    got.reject = count("action", "reject")
    got.ingress = count("direction", "ingress")
    got.egress = count("direction", "egress")
    src = table.column("src_addr").to_pylist()
    got.ipv6 = sum(1 for a in src if a is not None and a[:12] != b"\x00" * 10 + b"\xff\xff")
    got.packets = int(pc.sum(table.column("packets")).as_py() or 0)
    got.bytes = int(pc.sum(table.column("bytes")).as_py() or 0)
    lost = 0
    for m in table.column("extra").to_pylist():
        lost += sum(int(v) for k, v in (m or []) if k.startswith("packets-lost-"))
    got.packets_lost = lost
    if path.suffix == ".json":
        got.reporters = dict(sorted(Counter(table.column("reporter").to_pylist()).items()))
        got.accounts = dict(sorted(Counter(table.column("account").to_pylist()).items()))
    return got


COMPARED = (
    "rows",
    "flows",
    "accept",
    "reject",
    "nodata",
    "skipdata",
    "ipv6",
    "packets",
    "bytes",
    "packets_lost",
    "reporters",
    "accounts",
)


def check(key: str, exp: Expected) -> list[str]:
    got = parse_counts(DATA / key)
    problems = [
        f"{k}: wrote {getattr(exp, k)}, parsed {getattr(got, k)}"
        for k in COMPARED
        if getattr(exp, k) != getattr(got, k)
    ]
    if sorted(got.errors) != sorted(exp.errors):
        problems.append(f"error lines: wrote {sorted(exp.errors)}, parsed {sorted(got.errors)}")
    if exp.ingress + exp.egress and (exp.ingress, exp.egress) != (got.ingress, got.egress):
        problems.append(f"direction: wrote {exp.ingress}/{exp.egress}, parsed {got.ingress}/{got.egress}")
    return [f"{Path(key).name}: {p}" for p in problems]


# -- README --------------------------------------------------------------------------------------------------------
def summary(exp: Expected) -> list[str]:
    """What a file holds, one fact a line (the README's bullets and the script's output)."""
    if exp.provider == "gcp":  # GCP has no status records
        out = [f"records: {exp.rows} flows"]
    else:
        out = [f"records: {exp.rows} = {exp.flows} flows + {exp.nodata} NODATA + {exp.skipdata} SKIPDATA"]
    if exp.provider == "gcp" and not exp.accept + exp.reject:
        out.append("flows: no `disposition` field (action is null)")
    elif exp.accept + exp.reject:
        out.append(f"flows: {exp.accept} ACCEPT, {exp.reject} REJECT")
    else:
        out.append("flows: no action field (action is null)")
    out.append(f"IPv6 flows: {exp.ipv6}")
    if exp.provider == "gcp":
        out.append(f"direction (from the reporter): {exp.ingress} ingress, {exp.egress} egress")
    elif exp.ingress + exp.egress:
        out.append(f"flow-direction: {exp.ingress} ingress, {exp.egress} egress")
    out.append(f"packets: {exp.packets}, bytes: {exp.bytes} (sums over the flows)")
    if exp.packets_lost:
        out.append(f"packets lost (sum of packets-lost-*): {exp.packets_lost}")
    out += exp.notes
    if exp.errors:
        bad = ", ".join(f"line {line}: {why}" for line, why in sorted(exp.errors.items()))
        out.append(f"malformed lines: {len(exp.errors)} ({bad})")
    else:
        out.append("malformed lines: none")
    return out


def line_notes(text: str) -> list[str]:
    """Where the status rows and IPv6 flows of a text object are (1-based lines, header included)."""
    lines = text.splitlines()
    status = {s: [i + 1 for i, ln in enumerate(lines) if ln.endswith(" " + s)] for s in ("NODATA", "SKIPDATA")}
    six = [i + 1 for i, ln in enumerate(lines[1:], 1) if "2001:db8:" in ln]
    notes = [f"{s} on line{'s' if len(v) > 1 else ''} {', '.join(map(str, v))}" for s, v in status.items() if v]
    if six:
        notes.append(f"IPv6 flows on lines {', '.join(map(str, six))}")
    return notes


README_HEAD = """\
# Sample flow logs

Generated by `scripts/make_examples.py` (fixed seed and times: running it again writes the same records). Every
record is synthetic: private `10.x` / `172.31.x` addresses talking to the documentation ranges `198.51.100.0/24`,
`203.0.113.0/24`, `192.0.2.0/24` and `2001:db8::/32` (ASNs from `64496-64511`); accounts, projects, interfaces and
IDs are made up. The layout mirrors an S3 bucket (`aws/` is the bucket root) and the Cloud Storage bucket of a GCP
log sink (`gcp/` is the bucket root), so the `local` source, `aws s3 sync` or `gcloud storage cp -r` can replay it.

Counts below are *records the parser returns* (flows plus NODATA/SKIPDATA status rows), and the parser's verdict on
the malformed lines; `python scripts/make_examples.py --check` parses the files, compares the counts and checks
that the committed text files and this README are what the script writes. Line numbers are 1-based; in AWS text
they count the header line (line 1); GCP objects have no header. Packets and bytes are sums over the flows.
"""


def readme(objects: list[tuple[str, str, Expected]]) -> str:
    out = [README_HEAD]
    for key, what, exp in objects:
        bullets = "".join(f"- {fact}\n" for fact in summary(exp))
        out.append(f"\n## `{Path(key).name}`\n\n`{key}`\n\n{what}\n\n{bullets}")
    return "".join(out)


DESCRIPTIONS = {
    GCP_KEY: (
        "GCP VPC Flow Logs as an organisation-level log sink exports them to Cloud Storage: one Cloud Logging "
        "LogEntry per line (`insertId`, `jsonPayload`, `logName`, `receiveTimestamp`, `resource` of type "
        "`gce_subnetwork` with its labels, `timestamp`), two projects (`example-shop-prod-4821` in europe-west1, "
        "`example-data-dev-1937` in us-central1) mixed in one object. int64 values (`bytes_sent`, `packets_sent`, "
        "`rtt_msec`) are JSON strings, times RFC 3339 with nanoseconds. Internet peers have `src_location` / "
        "`dest_location`; a VPN tunnel reports as `SRC_GATEWAY` / `DEST_GATEWAY` with `src_gateway` / "
        "`dest_gateway`. Three lines are damaged on purpose; the parser reports each as an error with its line "
        "number and keeps every other line."
    ),
    GCP_KEY_2: (
        "The next hour's object of the same sink: mostly the data project's egress, IPv6 and an ICMPv6 ping to a web "
        "VM of the shop project, and a VM-to-VM connection of the data project."
    ),
    V2_KEY: (
        "Default format (version 2, the 14 v2 fields), gzip text with a header line, as S3 delivers it. us-east-1, "
        "account 123456789012, 5 interfaces (web servers, a bastion, an app server, a NAT gateway interface without "
        "an instance id). The IPv6 flows use `2001:db8:1234:1a00::25`."
    ),
    V5_KEY: (
        "Custom format (version 5, 29 fields: the AWS traffic-path example order plus `region az-id "
        "sublocation-type sublocation-id`) in the Hive-compatible S3 layout. eu-west-1, account 210987654321. "
        "Has `flow-direction`, `traffic-path` (8 internet gateway, 7 gateway endpoint, 1 same VPC), "
        "`pkt-dst-aws-service`/`pkt-src-aws-service` `S3` on the gateway-endpoint flows, requester-managed "
        "interfaces (`instance-id` `-`), and a connection through a NAT gateway interface whose two records carry "
        "the internet peer `203.0.113.5` only in `pkt-dstaddr` / `pkt-srcaddr`. Three lines are "
        "damaged on purpose; the parser reports each as an error with its line number and keeps every other line."
    ),
    PARQUET_KEY: (
        "Parquet (written with pyarrow), us-east-1, account 123456789012. Columns named as AWS writes them "
        "(`account_id`, `interface_id`, `log_status`, `tcp_flags`, `flow_direction`, …): the v2 fields plus "
        "`vpc_id subnet_id instance_id tcp_flags type pkt_srcaddr pkt_dstaddr region az_id flow_direction "
        "traffic_path pkt_src_aws_service pkt_dst_aws_service`. Ports, protocol, tcp_flags, traffic_path and "
        "version are INT32; packets, bytes, start and end INT64; the rest STRING (null where the text has `-`)."
    ),
    TGW_KEY: (
        "Transit Gateway flow log (`transitgatewayflowlogs` in the key), the TGW default format (version 6, "
        "`adapters.aws.fields.TGW_DEFAULT_FIELDS`), 60 s intervals, traffic between three attached VPCs (one in "
        "account 345678901234). No action field; two records have packets lost (no route: 12, blackhole: 7)."
    ),
}


def build() -> list[tuple[str, Expected, Any]]:
    """Every object as (key, expected counts, content); each maker has its own seeded generator."""
    makers: tuple[Callable[[random.Random], tuple[str, Expected, Any]], ...] = (
        make_v2,
        make_v5,
        make_parquet,
        make_tgw,
        make_gcp,
        make_gcp_2,
    )
    return [make(random.Random(SEED * 10 + salt)) for salt, make in enumerate(makers, 1)]


def write(objects: Sequence[tuple[str, Expected, Any]]) -> None:
    import pyarrow.parquet as pq

    for key, _exp, content in objects:
        path = DATA / key
        path.parent.mkdir(parents=True, exist_ok=True)
        if isinstance(content, str) and key.endswith(".json"):
            path.write_text(content)  # a log sink writes plain JSON lines
        elif isinstance(content, str):
            _write_gzip(path, content)
        else:
            pq.write_table(content, path, compression="snappy")
    (DATA.parent / "README.md").write_text(readme_of(objects))


def readme_of(objects: Sequence[tuple[str, Expected, Any]]) -> str:
    return readme([(k, DESCRIPTIONS[k], e) for k, e, _ in objects])


def stale_content(objects: Sequence[tuple[str, Expected, Any]]) -> list[str]:
    """Committed text objects and README that differ from what this script writes (Parquet is left out: its
    footer names the pyarrow version that wrote it)."""
    import isal.igzip

    problems = []
    for key, _exp, content in objects:
        path = DATA / key
        if isinstance(content, str) and path.exists():
            data = path.read_bytes()
            text = (data if key.endswith(".json") else isal.igzip.decompress(data)).decode()
            if text != content:
                problems.append(f"{path.name}: content differs from what the script writes")
    if (DATA.parent / "README.md").read_text() != readme_of(objects):
        problems.append("examples/README.md differs from what the script writes")
    return problems


def stale_files(objects: Sequence[tuple[str, Expected, Any]]) -> Iterator[Path]:
    keep = {DATA / k for k, _, _ in objects}
    for path in sorted(DATA.rglob("*")):
        if path.is_file() and path not in keep:
            yield path


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--check", action="store_true", help="only parse the existing files and compare the counts")
    args = ap.parse_args(argv)
    objects = build()
    if not args.check:
        write(objects)
    problems: list[str] = []
    for key, exp, _ in objects:
        print(key, *summary(exp), sep="\n    ")
        problems += check(key, exp)
    problems += stale_content(objects)
    for path in stale_files(objects):
        print(f"note: {path.relative_to(ROOT)} is not written by this script")
    if problems:
        print("\nMISMATCH between what was written and what the parser returns:", *problems, sep="\n  ")
        return 1
    print(f"\nok: {len(objects)} objects parsed back with the expected counts")
    return 0


if __name__ == "__main__":
    sys.exit(main())
