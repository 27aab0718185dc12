"""Flow log files whose records carry a unique id (in `bytes`), and counting those ids in the sinks' output, so a
test can tell exactly what was lost and what was delivered twice."""

from __future__ import annotations

import collections
import gzip
import random
import re
from collections.abc import Iterator
from pathlib import Path

import pyarrow.parquet as pq

HEADER = (
    "version account-id interface-id srcaddr dstaddr srcport dstport protocol packets bytes start end action log-status"
)


def varied_records(first_id: int, n: int) -> Iterator[str]:
    """Default-format records with ids `first_id`... in `bytes` and the other fields varied (seeded by `first_id`),
    so they compress like real flow logs (about 3.5x with gzip level 1): a parse batch (4 MiB of text) is some
    60,000 of them, where the same record repeated would make one batch of a whole 1 MiB gzip read."""
    rnd = random.Random(first_id)
    for i in range(n):
        src = f"10.{rnd.randrange(256)}.{rnd.randrange(256)}.{rnd.randrange(256)}"
        dst = f"172.31.{rnd.randrange(256)}.{rnd.randrange(256)}"
        yield (
            f"2 123456789010 eni-{rnd.getrandbits(32):08x} {src} {dst} {rnd.randrange(1024, 65536)}"
            f" {rnd.randrange(1, 1024)} 6 {rnd.randrange(1, 100_000)} {first_id + i} 1418530010 1418530070 ACCEPT OK"
        )


def gzip_flows(first_id: int, n: int) -> bytes:
    """A gzip flow log object with a header line and `n` varied records."""
    return gzip.compress((HEADER + "\n" + "\n".join(varied_records(first_id, n)) + "\n").encode(), 1)


def json_ids(data: bytes) -> collections.Counter[int]:
    """How often each id is in JSON Lines text (a regex: loading hundreds of thousands of rows takes seconds)."""
    return collections.Counter(map(int, re.findall(rb'"bytes":(\d+)', data)))


def jsonl_ids(out: Path) -> collections.Counter[int]:
    found: collections.Counter[int] = collections.Counter()
    for f in out.glob("*.jsonl"):
        found.update(json_ids(f.read_bytes()))
    return found


def parquet_ids(out: Path) -> collections.Counter[int]:
    found: collections.Counter[int] = collections.Counter()
    for f in out.glob("*.parquet"):
        found.update(pq.read_table(f, columns=["bytes"]).column("bytes").to_pylist())
    return found


def tally(ids: collections.Counter[int], expected: range) -> tuple[int, int, int]:
    """(ids of `expected` present, ids present more than once, rows in all): exactly once is (n, 0, n)."""
    return len(set(ids) & set(expected)), sum(1 for v in ids.values() if v > 1), sum(ids.values())
