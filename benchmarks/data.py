"""Synthetic AWS flow log objects for the benchmarks, generated column-wise and cached under benchmarks/.data/
(GCP objects: benchmarks/gcp_data.py; `generate` writes both kinds).

A block of 100,000 lines is built with numpy (random indices and numbers) and pyarrow compute (string columns
joined element-wise), so generating 10 M lines takes seconds, not minutes; blocks are compressed with isal level 1
as they are made, so generation memory stays at one block whatever the object size.

The distribution is meant to look like a real VPC, because the parser's cost depends on it: ~3,000 distinct
addresses (2,000 private, the documentation ranges, 200 IPv6) picked with a skew, 200 interfaces in 20 VPCs /
60 subnets / 5 accounts, well-known service ports against ephemeral ones, ~8 % REJECT, 0.1 % NODATA lines, and
10 distinct start times (one object covers ten one-minute intervals).
"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Iterator, Sequence

import isal.igzip
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from benchmarks.datasets import BY_NAME, DATA_DIR, Dataset, meta_path

BLOCK_ROWS = 100_000
BASE_TIME = 1795327200 - 600  # 2026-11-22T05:50:00Z

SERVICE_PORTS = np.array([443, 80, 22, 53, 3389, 123, 5432, 8080, 25, 445])
SERVICE_P = np.array([0.45, 0.12, 0.08, 0.15, 0.04, 0.03, 0.05, 0.04, 0.02, 0.02])
TCP_FLAGS = np.array([19, 18, 2, 3, 1, 27, 16])
TCP_FLAGS_P = np.array([0.35, 0.2, 0.15, 0.1, 0.1, 0.05, 0.05])


def _skewed(n: int, a: float = 0.9) -> np.ndarray:
    p = 1.0 / np.arange(1, n + 1) ** a
    return p / p.sum()


def _hexids(rng: np.random.Generator, prefix: str, n: int) -> list[str]:
    """AWS-style ids: prefix + 17 hex digits (the first one 0, as most ids have)."""
    return [f"{prefix}0{v:016x}" for v in rng.integers(0, 2**63 - 1, size=n, dtype=np.int64).tolist()]


class Pools:
    """The names and addresses a VPC's flow logs repeat: interfaces and where they live, peers, services."""

    def __init__(self, seed: int = 7) -> None:
        rng = np.random.default_rng(seed)
        # 20 VPCs of 10.<vpc>.0.0/16; hosts drawn without repetition.
        hosts = rng.choice(20 * 65536, size=2000, replace=False)
        private = [f"10.{h >> 16}.{(h >> 8) & 255}.{(h & 255) or 1}" for h in hosts.tolist()]
        public = [f"{net}.{h}" for net in ("198.51.100", "203.0.113", "192.0.2") for h in range(1, 255)]
        v6 = [f"2001:db8:{rng.integers(0, 0xFFFF):x}:{rng.integers(0, 0xFFFF):x}::{i + 1:x}" for i in range(200)]
        self.addr = pa.array(private + public + v6, pa.string())
        self.n_private, self.n_public, self.n_v6 = len(private), len(public), len(v6)
        self.p_private = _skewed(self.n_private)
        self.p_public = _skewed(self.n_public)
        self.p_v6 = _skewed(self.n_v6)
        n_itf = 200
        self.n_itf = n_itf
        self.p_itf = _skewed(n_itf, 0.7)
        self.itf_ip = np.arange(n_itf)  # interface i has private address i
        self.itf_ip6 = self.n_private + self.n_public + np.arange(n_itf) % self.n_v6
        self.eni = pa.array(_hexids(rng, "eni-", n_itf))
        instances = _hexids(rng, "i-", n_itf)
        for i in range(0, n_itf, 10):
            instances[i] = "-"  # requester-managed interfaces (load balancers, NAT gateways)
        self.instance = pa.array(instances)
        subnet_of = rng.integers(0, 60, size=n_itf)
        vpc_of_subnet = np.arange(60) % 20
        account_of_vpc = np.arange(20) % 5
        subnets = _hexids(rng, "subnet-", 60)
        vpcs = _hexids(rng, "vpc-", 20)
        accounts = [f"{v:012d}" for v in rng.integers(10**11, 10**12 - 1, size=5)]
        azs = [f"use1-az{k % 6 + 1}" for k in range(60)]
        self.subnet = pa.array([subnets[s] for s in subnet_of])
        self.vpc = pa.array([vpcs[vpc_of_subnet[s]] for s in subnet_of])
        self.account = pa.array([accounts[account_of_vpc[vpc_of_subnet[s]]] for s in subnet_of])
        self.az = pa.array([azs[s] for s in subnet_of])


def _num(values: np.ndarray) -> pa.Array:
    return pa.array(values).cast(pa.string())


def _where(mask: np.ndarray, a: pa.Array | str, b: pa.Array | str) -> pa.Array:
    return pc.if_else(pa.array(mask), a, b)


def make_block(pools: Pools, fields: Sequence[str], n: int, rng: np.random.Generator) -> bytes:
    """n lines of flow log text in the given field order."""
    itf = rng.choice(pools.n_itf, size=n, p=pools.p_itf)
    v6 = rng.random(n) < 0.03
    public = rng.random(n) < 0.6
    remote = np.where(
        public,
        pools.n_private + rng.choice(pools.n_public, size=n, p=pools.p_public),
        rng.choice(pools.n_private, size=n, p=pools.p_private),
    )
    remote = np.where(v6, pools.n_private + pools.n_public + rng.choice(pools.n_v6, size=n, p=pools.p_v6), remote)
    local = np.where(v6, pools.itf_ip6[itf], pools.itf_ip[itf])
    client_local = rng.random(n) < 0.4  # the interface opened the connection
    response = rng.random(n) < 0.5  # the server -> client half
    src_local = client_local ^ response
    src = pools.addr.take(pa.array(np.where(src_local, local, remote)))
    dst = pools.addr.take(pa.array(np.where(src_local, remote, local)))

    svc = rng.choice(SERVICE_PORTS, size=n, p=SERVICE_P)
    eph = rng.integers(32768, 61000, size=n)
    icmp = rng.random(n) < 0.02
    proto = np.where(icmp, 1, np.where((svc == 53) | (svc == 123), 17, 6))
    sport = np.where(icmp, 0, np.where(response, svc, eph))
    dport = np.where(icmp, 0, np.where(response, eph, svc))
    packets = np.minimum(np.maximum(rng.lognormal(2.0, 1.6, size=n).astype(np.int64), 1), 5_000_000)
    nbytes = packets * rng.integers(40, 1500, size=n)
    start = BASE_TIME + 60 * rng.integers(0, 10, size=n)
    reject = rng.random(n) < 0.08
    flags = np.where(proto == 6, rng.choice(TCP_FLAGS, size=n, p=TCP_FLAGS_P), 0)
    flags = np.where(reject & (proto == 6), 2, flags)
    path = np.where(src_local, rng.choice(np.array([1, 2, 8, 7]), size=n, p=[0.3, 0.1, 0.5, 0.1]), 0)
    service = np.where(path == 7, 1, 0)  # gateway endpoint traffic: the peer is S3
    nodata = rng.random(n) < 0.001

    itf_a = pa.array(itf)
    text: dict[str, pa.Array | str] = {
        "version": "5" if "flow-direction" in fields else "2",
        "account-id": pools.account.take(itf_a),
        "interface-id": pools.eni.take(itf_a),
        "srcaddr": src,
        "dstaddr": dst,
        "srcport": _num(sport),
        "dstport": _num(dport),
        "protocol": _num(proto),
        "packets": _num(packets),
        "bytes": _num(nbytes),
        "start": _num(start),
        "end": _num(start + 60),
        "action": _where(reject, "REJECT", "ACCEPT"),
        "log-status": "OK",
        "vpc-id": pools.vpc.take(itf_a),
        "subnet-id": pools.subnet.take(itf_a),
        "instance-id": pools.instance.take(itf_a),
        "tcp-flags": _num(flags),
        "type": _where(v6, "IPv6", "IPv4"),
        "pkt-srcaddr": src,
        "pkt-dstaddr": dst,
        "region": "us-east-1",
        "az-id": pools.az.take(itf_a),
        "sublocation-type": "-",
        "sublocation-id": "-",
        "pkt-src-aws-service": _where(~src_local & (rng.random(n) < 0.03), "AMAZON", "-"),
        "pkt-dst-aws-service": _where(service == 1, "S3", "-"),
        "flow-direction": _where(src_local, "egress", "ingress"),
        "traffic-path": _where(src_local, _num(path), "-"),
    }
    status_only = {"version", "account-id", "interface-id", "start", "end", "log-status", "vpc-id", "subnet-id",
                   "instance-id", "region", "az-id"}  # fmt: skip
    cols: list[pa.Array | str] = []
    for name in fields:
        col = text[name]
        if name == "log-status":
            col = _where(nodata, "NODATA", "OK")
        elif name not in status_only and nodata.any():
            col = _where(nodata, "-", col if isinstance(col, pa.Array) else pa.scalar(col))
        cols.append(col)
    lines = pc.binary_join_element_wise(*cols, " ")
    lines = pc.binary_join_element_wise(lines, "\n", "")
    off = np.frombuffer(lines.buffers()[1], dtype=np.int32, count=n + 1, offset=lines.offset * 4)
    return lines.buffers()[2].to_pybytes()[off[0] : off[-1]]


def blocks(ds: Dataset, seed: int = 11) -> Iterator[tuple[bytes, int]]:
    """(text, lines) blocks of a dataset, the header first; deterministic for a seed."""
    pools = Pools()
    rng = np.random.default_rng(seed)
    yield (" ".join(ds.fields) + "\n").encode(), 0
    done = 0
    raw = 0
    while True:
        if ds.records is not None:
            n = min(BLOCK_ROWS, ds.records - done)
            if n <= 0:
                return
        elif raw >= (ds.raw_bytes or 0):
            return
        else:
            n = BLOCK_ROWS
        data = make_block(pools, ds.fields, n, rng)
        done += n
        raw += len(data)
        yield data, n


def generate(ds: Dataset, log: bool = True) -> dict[str, int]:
    """Write the dataset (to a temporary name, renamed when complete); returns its metadata."""
    DATA_DIR.mkdir(parents=True, exist_ok=True)
    ignore = DATA_DIR / ".gitignore"
    if not ignore.exists():
        ignore.write_text("*\n")
    if log:
        print(f"generating {ds.path.relative_to(DATA_DIR.parent.parent)} ...", flush=True)
    tmp = ds.path.with_name("." + ds.path.name + ".tmp")
    records = raw = 0
    if ds.kind == "gcp":  # plain JSON lines, as a log sink writes them to Cloud Storage
        from benchmarks import gcp_data

        made, fh = gcp_data.blocks(ds), open(tmp, "wb")  # noqa: SIM115 (closed by the with below)
    else:
        made, fh = blocks(ds), isal.igzip.open(tmp, "wb", compresslevel=1)
    with fh:
        for data, n in made:
            fh.write(data)
            records += n
            raw += len(data)
    meta = {"records": records, "raw_bytes": raw, "gzip_bytes": tmp.stat().st_size}
    if ds.kind == "gcp":
        meta["gzip_bytes"] = 0  # not compressed
    os.replace(tmp, ds.path)
    meta_path(ds).write_text(json.dumps(meta))
    return meta


if __name__ == "__main__":
    # `python -m benchmarks.data NAME...`: the benchmark runner generates in a subprocess, so that its own peak
    # RSS (inherited by the case subprocesses it starts: Linux carries ru_maxrss across fork + exec) stays small.
    for name in sys.argv[1:]:
        generate(BY_NAME[name])
