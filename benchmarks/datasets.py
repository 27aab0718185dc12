"""The benchmark data sets: names, sizes, formats (light: the runner imports this, not the generator)."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from adapters.aws import fields as F

DATA_DIR = Path(__file__).resolve().parent / ".data"

# The custom format of the AWS documentation's traffic-path example, with the v4 location fields: 29 fields.
V5_FIELDS: tuple[str, ...] = (
    "version", "vpc-id", "subnet-id", "instance-id", "interface-id", "account-id", "type", "srcaddr", "dstaddr",
    "srcport", "dstport", "pkt-srcaddr", "pkt-dstaddr", "protocol", "bytes", "packets", "start", "end", "action",
    "tcp-flags", "log-status", "pkt-src-aws-service", "pkt-dst-aws-service", "flow-direction", "traffic-path",
    "region", "az-id", "sublocation-type", "sublocation-id",
)  # fmt: skip


@dataclass(frozen=True, slots=True)
class Dataset:
    name: str  # file name in DATA_DIR
    fields: tuple[str, ...]  # AWS: the field order (GCP: unused)
    records: int | None = None  # exact count, or
    raw_bytes: int | None = None  # stop after this much text (the last block completes)
    made_by_case: bool = False  # not a file: the case makes its input itself (the Pub/Sub case publishes messages)
    # "aws": gzip text (benchmarks/data.py); "gcp": plain LogEntry JSON lines, as a log sink writes them to Cloud
    # Storage (benchmarks/gcp_data.py)
    kind: str = "aws"

    @property
    def path(self) -> Path:
        return DATA_DIR / self.name


def meta_path(ds: Dataset) -> Path:
    return ds.path.with_name(ds.path.name + ".json")


def cached(ds: Dataset) -> dict[str, int] | None:
    """The metadata of a generated data set (records, raw_bytes, gzip_bytes), or None if it must be generated."""
    meta = meta_path(ds)
    if ds.path.exists() and meta.exists():
        return json.loads(meta.read_text())
    return None


V2_2M = Dataset("v2_2m.log.gz", F.V2_FIELDS, records=2_000_000)
V5_2M = Dataset("v5_2m.log.gz", V5_FIELDS, records=2_000_000)
V2_1G = Dataset("v2_1g.log.gz", F.V2_FIELDS, raw_bytes=1_000_000_000)
V2_200K = Dataset("v2_200k.log.gz", F.V2_FIELDS, records=200_000)
V5_200K = Dataset("v5_200k.log.gz", V5_FIELDS, records=200_000)

# Pub/Sub LogEntry messages, published by the case to the emulator (not timed).
GCP_PUBSUB_200K = Dataset("gcp-pubsub-200k", (), records=200_000, made_by_case=True)
GCP_PUBSUB_20K = Dataset("gcp-pubsub-20k", (), records=20_000, made_by_case=True)

# ~1.2 KB a line: 500,000 records are 0.6 GB of text; the 1 GB object is 900,000 (whole 100,000-line blocks).
GCP_500K = Dataset("gcp_500k.json", (), records=500_000, kind="gcp")
GCP_1G = Dataset("gcp_1g.json", (), raw_bytes=1_000_000_000, kind="gcp")
GCP_200K = Dataset("gcp_200k.json", (), records=200_000, kind="gcp")

BY_NAME = {
    ds.name: ds
    for ds in (V2_2M, V5_2M, V2_1G, V2_200K, V5_200K, GCP_500K, GCP_1G, GCP_200K, GCP_PUBSUB_200K, GCP_PUBSUB_20K)
}
