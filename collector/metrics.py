"""Counters the operator sees: the `--once` summary, progress log lines, and (later) Prometheus.

Passed in, not global (Akvorado's "reporter"), so tests and several pipelines in one process stay apart.
"""

from __future__ import annotations

import time
from collections import defaultdict
from dataclasses import dataclass, field


@dataclass
class SourceCounters:
    units: int = 0  # units completed and checkpointed
    units_failed: int = 0  # units that could not be read (I/O, corrupt container), counted per attempt
    records: int = 0  # rows delivered (flows and NODATA/SKIPDATA status rows)
    status_rows: int = 0  # NODATA / SKIPDATA rows among them
    errors: int = 0  # rejected records (malformed lines, bad values)
    bytes_read: int = 0
    newest_delivered: float = 0.0  # epoch seconds of the newest unit checkpointed
    # Epoch seconds of the newest object / event delivered, by its own time (S3 LastModified, CloudWatch event
    # timestamp): now minus this is the source's lag.
    newest_object_time: float = 0.0


@dataclass
class SinkCounters:
    batches: int = 0
    records: int = 0
    flushes: int = 0
    failures: int = 0  # failed operations (outages), each retried
    rejected: int = 0  # rows the sink could not encode (data errors), dropped for that sink and logged
    filtered: int = 0  # rows left out by the sink's `filter` (delivered, as far as checkpoints go)


@dataclass
class Metrics:
    started: float = field(default_factory=time.time)
    sources: dict[str, SourceCounters] = field(default_factory=lambda: defaultdict(SourceCounters))
    sinks: dict[str, SinkCounters] = field(default_factory=lambda: defaultdict(SinkCounters))
    failed: str | None = None  # why the pipeline stopped early, if it did

    def total_records(self) -> int:
        return sum(c.records for c in self.sources.values())
