"""The daemon's counters as Prometheus metrics on `metrics_listen` (GET /metrics), read at scrape time.

Why it is built this way: the counters already live in `collector.metrics.Metrics` (the `--once` summary and the
progress log read them); a custom collector turns them into metric families on each scrape, so there is one set of
numbers, no second bookkeeping in the hot path, and nothing registered globally (tests run several daemons in one
process). prometheus-client's own HTTP server runs in a daemon thread: a scrape never waits on the event loop.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterator
from typing import Any

from prometheus_client import CollectorRegistry, start_http_server
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric

from collector.metrics import Metrics

log = logging.getLogger("flowcollector.metrics")

_SOURCE_COUNTERS = (
    ("records", "Rows delivered by the source (flows and NODATA/SKIPDATA status rows)."),
    ("status_rows", "NODATA / SKIPDATA rows among the delivered rows."),
    ("errors", "Records rejected (malformed lines, bad values), each reported with where it came from."),
    ("units", "Units (files, objects, log streams) completed and checkpointed."),
    ("units_failed", "Units that could not be read, and listing / credential failures (each attempt)."),
    ("bytes_read", "Bytes read from the store (compressed, as transferred)."),
)
_SINK_COUNTERS = (
    ("records", "Rows written to the sink."),
    ("batches", "Batches written to the sink."),
    ("flushes", "Flushes (durability points) of the sink."),
    ("failures", "Failed sink operations (retried with backoff)."),
    ("rejected", "Rows the sink could not encode (data errors): dropped for that sink, logged with their unit."),
    ("filtered", "Rows left out by the sink's filter (counted as delivered for that sink)."),
)


class MetricsCollector:
    """A prometheus-client collector over a `Metrics` object; `in_flight` gives the pipeline's in-flight batches."""

    def __init__(self, metrics: Metrics, in_flight: Callable[[], int] | None = None) -> None:
        self.metrics = metrics
        self.in_flight = in_flight

    def collect(self) -> Iterator[Metric]:
        m = self.metrics
        now = time.time()
        sources = sorted(m.sources.items())
        for name, help_text in _SOURCE_COUNTERS:
            family = CounterMetricFamily(f"flowcollector_source_{name}", help_text, labels=["source"])
            for source, c in sources:
                family.add_metric([source], getattr(c, name))
            yield family
        lag = GaugeMetricFamily(
            "flowcollector_source_lag_seconds",
            "Age of the newest delivered object / event, by its own time (cloud sources that know it).",
            labels=["source"],
        )
        for source, c in sources:
            if c.newest_object_time:
                lag.add_metric([source], max(0.0, now - c.newest_object_time))
        yield lag
        for name, help_text in _SINK_COUNTERS:
            family = CounterMetricFamily(f"flowcollector_sink_{name}", help_text, labels=["sink"])
            for sink, s in sorted(m.sinks.items()):
                family.add_metric([sink], getattr(s, name))
            yield family
        if self.in_flight is not None:
            yield GaugeMetricFamily(
                "flowcollector_in_flight_batches", "Batches handed to the sinks, not yet checkpointed.",
                value=self.in_flight(),
            )  # fmt: skip
        yield GaugeMetricFamily("flowcollector_start_time_seconds", "When the daemon started.", value=m.started)


def serve(listen: tuple[str, int], metrics: Metrics, in_flight: Callable[[], int] | None = None) -> Any:
    """Start the /metrics endpoint; returns the server (its `server_address` has the bound port)."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(MetricsCollector(metrics, in_flight))  # type: ignore[arg-type]
    host, port = listen
    server, _thread = start_http_server(port, addr=host, registry=registry)
    log.info("metrics on http://%s:%d/metrics", host, server.server_address[1])
    return server
