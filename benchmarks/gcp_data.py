"""Synthetic GCP VPC Flow Logs objects for the benchmarks: Cloud Logging LogEntry JSON lines, one per line, as a
log sink writes them to Cloud Storage (`compute.googleapis.com/vpc_flows/YYYY/MM/DD/HH:00:00_HH:59:59_S0.json`:
plain newline-delimited JSON, not gzip).

Why built from templates and not `json.dumps` per record: a 1 GB object is ~850,000 records, and the parser's cost
depends on realistic content, not on how it was made. Each per-entity object (an instance, a VPC, a location, GKE
details, a gateway, resource labels) is rendered once as JSON text in `Pools`; a block of 100,000 lines is then
random indices and numbers (numpy) joined element-wise into lines (pyarrow compute), as benchmarks/data.py does for
AWS, so a gigabyte takes seconds.

What a line holds (the fields of https://cloud.google.com/vpc/docs/about-flow-logs-records, keys of `jsonPayload`
in alphabetical order as Cloud Logging writes a Struct): `insertId` (14 base-36 characters, unique), `jsonPayload`
{`bytes_sent` and `packets_sent` as JSON strings (int64), `connection` {ips, ports and protocol as JSON integers; no
ports for ICMP}, `reporter`, `start_time` / `end_time` (RFC 3339, nanoseconds, a 0-5 s aggregation interval within
the object's hour), `rtt_msec` (a string, TCP reported by a VM), `src_`/`dest_instance` (some with
`managed_instance_group`), `src_`/`dest_vpc`, `src_`/`dest_location` for internet peers, `src_`/`dest_gke_details`
for GKE nodes' pods, `src_`/`dest_gateway` for VPN tunnels}, `logName`, `receiveTimestamp`, `resource` {`type`
`gce_subnetwork`, `labels` of the reporting side's subnet}, `timestamp`.

The traffic, with the repetition of a real deployment (as the AWS generator: a few thousand addresses, skewed):
5 projects, 20 VPCs (shared VPC: 30 % of the VMs live in another project than their network's), 60 subnets in 4
regions, 200 VMs (40 % in managed instance groups, 20 % GKE nodes with 8 pods each), 1,800 other private addresses,
762 internet addresses (the documentation ranges) with 24 locations, 200 IPv6 peers. Per record: 40 % between two
logged VMs (both sides' metadata; reported by SRC or DEST), 45 % a VM and an internet peer (location of the peer), 12 %
a VM and an unlogged private address, 3 % through a VPN tunnel (reporter SRC_GATEWAY / DEST_GATEWAY). Ports, protocol
and counts are drawn as in benchmarks/data.py. Lines are 0.9-1.6 KB (1.2 KB on average).
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from benchmarks.data import BLOCK_ROWS, SERVICE_P, SERVICE_PORTS, _skewed
from benchmarks.datasets import Dataset

HOUR_NS = 1795327200 * 10**9  # 2026-11-22T06:00:00Z: the object covers this hour
REGIONS = ("us-central1", "us-east1", "europe-west1", "asia-east1")
ZONES = ("a", "b", "c", "f")
WORDS = ("web", "api", "checkout", "search", "auth", "billing", "cache", "db", "queue", "batch", "ml", "etl")
# (asn, city or None, continent, country (ISO 3166-1 alpha-3, lower case, as GCP writes it), region or None)
PLACES = (
    (15169, "Mountain View", "America", "usa", "California"), (7922, "Philadelphia", "America", "usa", "Pennsylvania"),
    (16509, "Ashburn", "America", "usa", "Virginia"), (8075, "Seattle", "America", "usa", "Washington"),
    (7018, "Dallas", "America", "usa", "Texas"), (701, None, "America", "usa", None),
    (3320, "Frankfurt am Main", "Europe", "deu", "Hesse"), (3215, "Paris", "Europe", "fra", "Ile-de-France"),
    (2856, "London", "Europe", "gbr", "England"), (1136, "Amsterdam", "Europe", "nld", "North Holland"),
    (3269, "Milan", "Europe", "ita", "Lombardy"), (12389, None, "Europe", "rus", None),
    (4134, "Beijing", "Asia", "chn", "Beijing"), (4837, None, "Asia", "chn", None),
    (2914, "Tokyo", "Asia", "jpn", "Tokyo"), (9318, "Seoul", "Asia", "kor", "Seoul"),
    (55836, "Mumbai", "Asia", "ind", "Maharashtra"), (4788, "Kuala Lumpur", "Asia", "mys", "Kuala Lumpur"),
    (28573, "Sao Paulo", "America", "bra", "Sao Paulo"), (8151, "Mexico City", "America", "mex", "Mexico City"),
    (1221, "Sydney", "Oceania", "aus", "New South Wales"), (36924, "Lagos", "Africa", "nga", "Lagos"),
    (37100, None, "Africa", "zaf", None), (577, "Toronto", "America", "can", "Ontario"),
)  # fmt: skip
BASE36 = np.frombuffer(b"0123456789abcdefghijklmnopqrstuvwxyz", dtype=np.uint8)


def _ids(rng: np.random.Generator, n: int, width: int) -> np.ndarray:
    return BASE36[rng.integers(0, 36, size=(n, width))]


def _obj(**fields: str | int | None) -> str:
    """A JSON object of plain ASCII values (no escaping needed), keys in the order given, nulls left out."""
    parts = []
    for key, value in fields.items():
        if value is None:
            continue
        parts.append(f'"{key}":{value}' if isinstance(value, int) or value.startswith("{") else f'"{key}":"{value}"')
    return "{" + ",".join(parts) + "}"


def _table(prefix: str, texts: list[str]) -> pa.Array:
    """`prefix` + each text, and one more entry "" (index len(texts)): the record does not have the field."""
    return pa.array([prefix + t for t in texts] + [""], pa.string())


class Pools:
    """Every entity a deployment's flow logs repeat, rendered once as the JSON fragments a line is made of."""

    def __init__(self, seed: int = 7) -> None:
        rng = np.random.default_rng(seed)
        numbers = rng.integers(100000, 999999, size=5).tolist()
        projects = [
            f"acme-{w}-{v}" for w, v in zip(("prod", "shared-net", "data", "dev", "edge"), numbers, strict=True)
        ]
        vpc_project = np.arange(20) % 5
        vpc_names = [f"{('prod', 'shared', 'data', 'dev', 'edge')[p]}-vpc-{i}" for i, p in enumerate(vpc_project)]
        sub_vpc = np.arange(60) % 20
        sub_region = rng.integers(0, len(REGIONS), size=60)
        sub_names = [
            f"{vpc_names[v]}-{REGIONS[r]}-{i}" for i, (v, r) in enumerate(zip(sub_vpc, sub_region, strict=True))
        ]
        sub_ids = [str(v) for v in rng.integers(10**18, 9 * 10**18, size=60)]

        n_vm = self.n_vm = 200
        self.p_vm = _skewed(n_vm, 0.7)
        vm_sub = rng.integers(0, 60, size=n_vm)
        vm_vpc = sub_vpc[vm_sub]
        vm_project = np.where(rng.random(n_vm) < 0.3, rng.integers(0, 5, size=n_vm), vpc_project[vm_vpc])
        vm_zone = [
            f"{REGIONS[sub_region[s]]}-{ZONES[z]}" for s, z in zip(vm_sub, rng.integers(0, 4, size=n_vm), strict=True)
        ]
        gke = rng.random(n_vm) < 0.2
        mig = gke | (rng.random(n_vm) < 0.25)
        self.gke = gke
        suffix = ["".join(chr(c) for c in row) for row in _ids(rng, n_vm, 4)]
        instances, vpcs, gkes, ips, labels, lognames = [], [], [], [], [], []
        for i in range(n_vm):
            s, v = int(vm_sub[i]), int(vm_vpc[i])
            region, zone = REGIONS[sub_region[s]], vm_zone[i]
            word = WORDS[i % len(WORDS)]
            group = None
            if gke[i]:
                name = f"gke-{word}-cluster-default-pool-{i:08x}-{suffix[i]}"
                group = _obj(name=f"gke-{word}-cluster-default-pool-{i:08x}-grp", zone=zone)
            elif mig[i]:
                name = f"{word}-mig-{suffix[i]}"
                group = _obj(name=f"{word}-mig", region=region) if i % 3 else _obj(name=f"{word}-mig", zone=zone)
            else:
                name = f"{word}-{i}"
            project = projects[vm_project[i]]
            instances.append(_obj(managed_instance_group=group, project_id=project, region=region, vm_name=name,
                                  zone=zone))  # fmt: skip
            vpcs.append(_obj(project_id=projects[vpc_project[v]], subnetwork_name=sub_names[s],
                             subnetwork_region=region, vpc_name=vpc_names[v]))  # fmt: skip
            labels.append(_obj(location=zone, project_id=project, subnetwork_id=sub_ids[s],
                               subnetwork_name=sub_names[s]))  # fmt: skip
            lognames.append(f"projects/{project}/logs/compute.googleapis.com%2Fvpc_flows")
            ips.append(f"10.{s}.{(i >> 8) + 1}.{i & 255 or 1}")
            for k in range(8):
                ns = ("default", "shop", "platform", "kube-system")[(i + k) % 4]
                work = WORDS[(i + k) % len(WORDS)]
                pod = _obj(pod_name=f"{work}-{i:05x}{k}-{suffix[i]}", pod_namespace=ns,
                           pod_workload=_obj(workload_name=work, workload_type="DEPLOYMENT"))  # fmt: skip
                service = f',"service":[{_obj(service_name=work, service_namespace=ns)}]' if k % 2 else ""
                cluster = _obj(cluster_location=region, cluster_name=f"{word}-cluster")
                gkes.append(f'{{"cluster":{cluster},"pod":{pod}{service}}}')
        self.vm_ip = pa.array(ips, pa.string())
        self.pod_ip = pa.array([f"10.{100 + i // 64}.{(i % 64) * 4}.{k + 2}" for i in range(n_vm) for k in range(8)])
        self.src_instance, self.dest_instance = (
            _table(',"src_instance":', instances),
            _table(',"dest_instance":', instances),
        )
        self.src_vpc, self.dest_vpc = _table(',"src_vpc":', vpcs), _table(',"dest_vpc":', vpcs)
        self.src_gke, self.dest_gke = _table(',"src_gke_details":', gkes), _table(',"dest_gke_details":', gkes)
        self.labels = pa.array(labels, pa.string())
        self.logname = pa.array(lognames, pa.string())

        hosts = rng.choice(np.arange(20 * 65536, 40 * 65536), size=1800, replace=False)
        self.other = pa.array([f"10.{h >> 16}.{(h >> 8) & 255}.{(h & 255) or 1}" for h in hosts.tolist()])
        self.p_other = _skewed(1800)
        public = [f"{net}.{h}" for net in ("198.51.100", "203.0.113", "192.0.2") for h in range(1, 255)]
        v6 = [f"2001:db8:{rng.integers(0, 0xFFFF):x}:{rng.integers(0, 0xFFFF):x}::{i + 1:x}" for i in range(200)]
        self.public = pa.array(public + v6, pa.string())
        self.n_public, self.n_v6 = len(public), len(v6)
        self.p_public, self.p_v6 = _skewed(len(public)), _skewed(len(v6))
        place = rng.choice(len(PLACES), size=len(public) + len(v6), p=_skewed(len(PLACES), 1.2))
        locations = [_obj(asn=a, city=c, continent=k, country=n, region=r) for a, c, k, n, r in
                     (PLACES[p] for p in place)]  # fmt: skip
        self.src_location, self.dest_location = (
            _table(',"src_location":', locations),
            _table(',"dest_location":', locations),
        )
        gateways = [_obj(location=REGIONS[g], name=f"vpn-onprem-{g}", project_id=projects[1], type="VPN_TUNNEL",
                         vpc=_obj(project_id=projects[1], vpc_name=vpc_names[1])) for g in range(2)]  # fmt: skip
        self.src_gateway, self.dest_gateway = _table(',"src_gateway":', gateways), _table(',"dest_gateway":', gateways)
        self.onprem = pa.array([f"192.168.{k}.{h}" for k in range(4) for h in range(1, 51)])


def _num(values: np.ndarray) -> pa.Array:
    return pa.array(values).cast(pa.string())


def _time(ns: np.ndarray) -> pa.Array:
    return pc.strftime(pa.array(ns, pa.timestamp("ns", "UTC")), format="%Y-%m-%dT%H:%M:%SZ")


def _cat(*parts: pa.Array | str) -> pa.Array:
    return pc.binary_join_element_wise(*parts, "")


def make_block(pools: Pools, n: int, rng: np.random.Generator) -> bytes:
    """n LogEntry lines."""
    kind = rng.choice(4, size=n, p=[0.40, 0.45, 0.12, 0.03])  # VM-VM, internet, other private, VPN
    vm, peer = rng.choice(pools.n_vm, size=(2, n), p=pools.p_vm)
    none_vm = pools.n_vm
    client_local = rng.random(n) < 0.55  # the (reporting) VM opened the connection
    response = rng.random(n) < 0.5  # the server -> client half
    local_is_src = client_local ^ response
    # VM-VM: the reporting side is either end; elsewhere the VM reports (a VPN record: the gateway, the VM's peer).
    reporter_src = np.where(kind == 0, rng.random(n) < 0.5, local_is_src)
    reporter_src = np.where(kind == 3, ~local_is_src, reporter_src)
    pod = rng.integers(0, 8, size=n)
    with_gke = pools.gke[vm] & (rng.random(n) < 0.7)
    local_ip = pc.if_else(pa.array(with_gke), pools.pod_ip.take(pa.array(vm * 8 + pod)), pools.vm_ip.take(pa.array(vm)))

    v6 = (kind == 1) & (rng.random(n) < 0.05)
    public = np.where(v6, pools.n_public + rng.choice(pools.n_v6, size=n, p=pools.p_v6),
                      rng.choice(pools.n_public, size=n, p=pools.p_public))  # fmt: skip
    remote_ip = pools.vm_ip.take(pa.array(peer))
    remote_ip = pc.if_else(pa.array(kind == 1), pools.public.take(pa.array(public)), remote_ip)
    other = rng.choice(len(pools.other), size=n, p=pools.p_other)
    remote_ip = pc.if_else(pa.array(kind == 2), pools.other.take(pa.array(other)), remote_ip)
    remote_ip = pc.if_else(pa.array(kind == 3), pools.onprem.take(pa.array(rng.integers(0, 200, size=n))), remote_ip)
    src_local = pa.array(local_is_src)
    src_ip = pc.if_else(src_local, local_ip, remote_ip)
    dest_ip = pc.if_else(src_local, remote_ip, local_ip)

    svc = rng.choice(SERVICE_PORTS, size=n, p=SERVICE_P)
    eph = rng.integers(32768, 61000, size=n)
    icmp = rng.random(n) < 0.02
    proto = np.where(icmp, 1, np.where((svc == 53) | (svc == 123), 17, 6))
    client_is_src = ~response
    sport = np.where(client_is_src, eph, svc)
    dport = np.where(client_is_src, svc, eph)
    no_ports = pa.array(icmp)
    src_port = pc.if_else(no_ports, "", _cat(',"src_port":', _num(sport)))
    dest_port = pc.if_else(no_ports, "", _cat('"dest_port":', _num(dport), ","))
    packets = np.minimum(np.maximum(rng.lognormal(1.2, 1.4, size=n).astype(np.int64), 1), 5_000_000)
    nbytes = packets * rng.integers(40, 1460, size=n)

    start = HOUR_NS + rng.integers(0, 3600 * 10**9 - 5 * 10**9, size=n)
    end = start + rng.integers(0, 5 * 10**9, size=n)
    stamp = end + rng.integers(5 * 10**9, 60 * 10**9, size=n)
    received = stamp + rng.integers(10**8, 20 * 10**9, size=n)
    rtt_ms = _num(rng.lognormal(3.0, 1.0, size=n).astype(np.int64) + 1)
    rtt = pc.if_else(
        pa.array((proto == 6) & (kind != 3) & (rng.random(n) < 0.9)), _cat(',"rtt_msec":"', rtt_ms, '"'), ""
    )

    # Each side's metadata, by index into the tables (index n_vm / len(table)-1: absent).
    vm_src = np.where(local_is_src, vm, np.where(kind == 0, peer, none_vm))
    vm_dest = np.where(local_is_src, np.where(kind == 0, peer, none_vm), vm)
    gke_none = pools.n_vm * 8
    gke_idx = np.where(with_gke, vm * 8 + pod, gke_none)
    gke_src = np.where(local_is_src, gke_idx, gke_none)
    gke_dest = np.where(local_is_src, gke_none, gke_idx)
    loc_none = len(pools.src_location) - 1
    loc = np.where(kind == 1, public, loc_none)
    loc_src = np.where(local_is_src, loc_none, loc)
    loc_dest = np.where(local_is_src, loc, loc_none)
    gw = rng.integers(0, 2, size=n)
    gw_src = np.where((kind == 3) & ~local_is_src, gw, 2)
    gw_dest = np.where((kind == 3) & local_is_src, gw, 2)
    reporter = pc.if_else(pa.array(reporter_src), "SRC", "DEST")
    reporter = pc.if_else(pa.array(kind == 3), pc.binary_join_element_wise(reporter, "_GATEWAY", ""), reporter)
    reporting_vm = pa.array(np.where(reporter_src & (kind == 0), vm_src, np.where(kind == 0, vm_dest, vm)))

    def take(table: pa.Array, idx: np.ndarray) -> pa.Array:
        return table.take(pa.array(idx))

    insert_id = pa.array(_ids(rng, n, 14).view("S14").ravel()).cast(pa.string())
    lines = _cat(
        '{"insertId":"', insert_id, '","jsonPayload":{"bytes_sent":"', _num(nbytes), '","connection":{"dest_ip":"',
        dest_ip, '",', dest_port, '"protocol":', _num(proto), ',"src_ip":"', src_ip, '"', src_port, "}",
        take(pools.dest_gateway, gw_dest), take(pools.dest_gke, gke_dest), take(pools.dest_instance, vm_dest),
        take(pools.dest_location, loc_dest), take(pools.dest_vpc, vm_dest),
        ',"end_time":"', _time(end), '","packets_sent":"', _num(packets), '","reporter":"', reporter, '"', rtt,
        take(pools.src_gateway, gw_src), take(pools.src_gke, gke_src), take(pools.src_instance, vm_src),
        take(pools.src_location, loc_src), take(pools.src_vpc, vm_src),
        ',"start_time":"', _time(start), '"},"logName":"', pools.logname.take(reporting_vm),
        '","receiveTimestamp":"', _time(received), '","resource":{"labels":', pools.labels.take(reporting_vm),
        ',"type":"gce_subnetwork"},"timestamp":"', _time(stamp), '"}\n',
    )  # fmt: skip
    off = np.frombuffer(lines.buffers()[1], dtype=np.int32, count=n + 1, offset=lines.offset * 4)
    return lines.buffers()[2].to_pybytes()[off[0] : off[-1]]


def blocks(ds: Dataset, seed: int = 13) -> Iterator[tuple[bytes, int]]:
    """(text, lines) blocks of a GCP dataset; deterministic for a seed."""
    pools = Pools()
    rng = np.random.default_rng(seed)
    done = raw = 0
    while True:
        if ds.records is not None:
            n = min(BLOCK_ROWS, ds.records - done)
            if n <= 0:
                return
        elif raw >= (ds.raw_bytes or 0):
            return
        else:
            n = BLOCK_ROWS
        data = make_block(pools, n, rng)
        done += n
        raw += len(data)
        yield data, n
