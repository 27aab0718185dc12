"""The running collector: sources and sinks from the config, supervised, with progress, signals and systemd.

`run(config, once=True)` processes what exists and returns; without `once` it polls until SIGTERM/SIGINT, then
drains: sources stop at a batch boundary, sinks flush and close, the last checkpoints are committed.
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import socket
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from collector import redact
from collector.aio import sleep_or_stop
from collector.checkpoints import CheckpointStore
from collector.metrics import Metrics
from collector.options import secret_values
from collector.pipeline import Pipeline, PipelineFailed
from collector.registry import create_sink, create_source
from collector.statelock import StateLock

log = logging.getLogger("flowcollector")

# How long a stop waits for the sinks to drain; past it, what they lack is left to the next run (never lost:
# it was not checkpointed). systemd's TimeoutStopSec in systemd/flowcollector.service is longer.
DRAIN_TIMEOUT = 60.0


def sd_notify(message: str) -> None:
    """systemd's notify protocol (sd_notify(3)): one datagram to $NOTIFY_SOCKET; a no-op outside systemd."""
    addr = os.environ.get("NOTIFY_SOCKET")
    if not addr:
        return
    if addr.startswith("@"):
        addr = "\0" + addr[1:]  # abstract namespace socket
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as s:
            s.sendto(message.encode(), addr)
    except OSError as exc:
        log.debug("sd_notify failed: %s", exc)


async def _supervise(source: Any, pipeline: Pipeline, once: bool, stop: asyncio.Event) -> None:
    """A failing source is logged and restarted with backoff; it never takes the other sources down."""
    delay = 1.0
    while not stop.is_set():
        try:
            await source.run(pipeline, once, stop)
            return
        except PipelineFailed:
            return  # a sink failed for good: the daemon is stopping
        except Exception:
            log.exception("source=%s crashed", source.name)
            if once:
                return
            await sleep_or_stop(stop, delay)
            delay = min(delay * 2, 60.0)


class _Sources:
    """The running sources, each with its own stop event, so a reload can stop one and start another while the
    rest (and the pipeline, and the sinks) go on."""

    def __init__(self, pipeline: Pipeline, once: bool) -> None:
        self.tg: asyncio.TaskGroup | None = None
        self.pipeline = pipeline
        self.once = once
        self.running: dict[str, tuple[Any, asyncio.Event, asyncio.Task[None]]] = {}  # name -> (config, stop, task)

    def start(self, config: Any, source: Any) -> None:
        own = asyncio.Event()
        assert self.tg is not None
        task = self.tg.create_task(_supervise(source, self.pipeline, self.once, own), name=f"source:{source.name}")
        self.running[source.name] = (config, own, task)

    async def stop_one(self, name: str) -> None:
        _config, own, task = self.running.pop(name)
        own.set()
        await asyncio.wait([task])  # it stops at a batch boundary; what it emitted is still checkpointed

    def stop_all(self) -> None:
        for _config, own, _task in self.running.values():
            own.set()


async def _reloader(
    config: Any,
    reload: asyncio.Event,
    sources: _Sources,
    store: CheckpointStore,
    metrics: Metrics,
    executor: ThreadPoolExecutor,
    stop: asyncio.Event,
) -> None:
    """SIGHUP: read the config file again and apply its sources: new ones start, removed ones stop, changed ones
    restart (from their checkpoints). An invalid file changes nothing and is reported with its lines. Sinks, the
    state directory and the pipeline settings need a restart: a change to them is reported, not applied."""
    from collector.config import ConfigError, load_config

    current = config
    while True:
        _done, pending = await asyncio.wait(
            [asyncio.ensure_future(reload.wait()), asyncio.ensure_future(stop.wait())],
            return_when=asyncio.FIRST_COMPLETED,
        )
        for future in pending:
            future.cancel()
        if stop.is_set():
            return
        reload.clear()
        sd_notify("RELOADING=1")
        log.info("SIGHUP received: reloading %s", current.path)
        try:
            new = await asyncio.to_thread(load_config, current.path)
        except ConfigError as exc:
            log.error("reload refused, the running configuration stays: %s", " | ".join(exc.errors))
            sd_notify("READY=1")
            continue
        redact.remember(secret_values(new))  # new credentials are hidden from the log like the first ones
        for key in ("state_dir", "sinks", "pipeline", "metrics_listen"):
            if getattr(new, key) != getattr(current, key):
                log.warning("reload: %s changed; it takes effect at the next restart", key)
        old = {c.name: c for c in current.sources}
        wanted = {c.name: c for c in new.sources}
        removed = [n for n in old if n not in wanted]
        changed = [n for n in old if n in wanted and wanted[n] != old[n]]
        added = [n for n in wanted if n not in old]
        for name in removed + changed:
            await sources.stop_one(name)
        for name in changed + added:
            sources.start(wanted[name], create_source(wanted[name], store, metrics, executor))
        log.info(
            "reloaded: sources added=%s removed=%s changed=%s unchanged=%d",
            ",".join(added) or "-",
            ",".join(removed) or "-",
            ",".join(changed) or "-",
            len(wanted) - len(added) - len(changed),
        )
        current = new
        sd_notify("READY=1")


async def _progress(metrics: Metrics, pipeline: Pipeline, interval: float, stop: asyncio.Event) -> None:
    last_records, last_t = 0, time.monotonic()
    while not await sleep_or_stop(stop, interval):
        now = time.monotonic()
        records = metrics.total_records()
        rate = (records - last_records) / max(now - last_t, 1e-9)
        last_records, last_t = records, now
        units = sum(c.units for c in metrics.sources.values())
        errors = sum(c.errors for c in metrics.sources.values())
        # Lag: how old the newest delivered object / event is, per source that knows (cloud sources).
        lags = " ".join(
            f"lag_{name}={time.time() - c.newest_object_time:.0f}s"
            for name, c in sorted(metrics.sources.items())
            if c.newest_object_time
        )
        log.info(
            "progress records=%d rate=%.0f/s units_done=%d errors=%d in_flight_batches=%d%s",
            records,
            rate,
            units,
            errors,
            pipeline.in_flight(),
            f" {lags}" if lags else "",
        )


async def _watchdog(stop: asyncio.Event) -> None:
    usec = int(os.environ.get("WATCHDOG_USEC", "0") or 0)
    if not usec:
        return
    sd_notify("WATCHDOG=1")
    while not await sleep_or_stop(stop, usec / 2e6):
        sd_notify("WATCHDOG=1")


async def run(config: Any, once: bool, metrics: Metrics | None = None) -> Metrics:
    metrics = metrics or Metrics()
    lock = StateLock(config.state_dir)
    lock.acquire()  # before anything opens: a second collector on this state exits here (StateDirInUse)
    try:
        return await _run_locked(config, once, metrics)
    finally:
        lock.release()


async def _run_locked(config: Any, once: bool, metrics: Metrics) -> Metrics:
    store = CheckpointStore(config.state_dir)
    sinks = [create_sink(c) for c in config.sinks]
    flush = {c.name: c.flush_interval for c in config.sinks}
    give_up = config.pipeline.give_up_after if once else None
    filters = {c.name: c.filter.apply for c in config.sinks if c.filter is not None}
    pipeline = Pipeline(sinks, store, metrics, config.pipeline.queue_batches, flush, give_up, filters)
    workers = config.pipeline.workers or os.cpu_count() or 2
    executor = ThreadPoolExecutor(workers, thread_name_prefix="parse")
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    running = _Sources(pipeline, once)

    def stop_everything() -> None:
        stop.set()
        running.stop_all()

    def on_signal(signame: str) -> None:
        if stop.is_set():
            log.warning("second %s: exiting without draining", signame)
            os._exit(130)
        log.info("%s received: finishing the current batches, then stopping", signame)
        sd_notify("STOPPING=1")
        stop_everything()

    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, on_signal, sig.name)
    pipeline.on_failure = lambda exc: stop_everything()
    server = None
    try:
        await pipeline.start()
        if config.metrics_listen is not None:
            from collector.config import split_listen
            from collector.prometheus import serve

            server = serve(split_listen(config.metrics_listen), metrics, pipeline.in_flight)
        sources = [create_source(c, store, metrics, executor) for c in config.sources]
        log.info(
            "started sources=%s sinks=%s state=%s mode=%s",
            ",".join(s.name for s in sources),
            ",".join(s.name for s in config.sinks),
            store.path,
            "once" if once else "daemon",
        )
        sd_notify("READY=1")
        helpers = []
        if config.progress_interval > 0:
            helpers.append(asyncio.create_task(_progress(metrics, pipeline, config.progress_interval, stop)))
        helpers.append(asyncio.create_task(_watchdog(stop)))
        async with asyncio.TaskGroup() as tg:
            running.tg = tg
            for source_config, source in zip(config.sources, sources, strict=True):
                running.start(source_config, source)
            if not once:
                reload = asyncio.Event()
                loop.add_signal_handler(signal.SIGHUP, reload.set)
                tg.create_task(_reloader(config, reload, running, store, metrics, executor, stop), name="reload")
        stop.set()
        await pipeline.close(timeout=DRAIN_TIMEOUT)
        for h in helpers:
            await h
        if pipeline.failed is not None:
            metrics.failed = f"{type(pipeline.failed).__name__}: {pipeline.failed}"
    finally:
        if server is not None:
            server.shutdown()
            server.server_close()
        for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
            loop.remove_signal_handler(sig)
        executor.shutdown(wait=False, cancel_futures=True)
        store.close()
    return metrics


def _human_bytes(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n < 1024 or unit == "GiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} GiB"


def summary_table(metrics: Metrics, elapsed: float) -> str:
    rows = [("source", "units", "failed", "records", "status", "errors", "read")]
    for name, c in sorted(metrics.sources.items()):
        rows.append(
            (
                name,
                str(c.units),
                str(c.units_failed),
                str(c.records),
                str(c.status_rows),
                str(c.errors),
                _human_bytes(c.bytes_read),
            )
        )
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    lines = [
        "  ".join(v.ljust(w) if i == 0 else v.rjust(w) for i, (v, w) in enumerate(zip(r, widths, strict=True)))
        for r in rows
    ]
    lines.insert(1, "  ".join("-" * w for w in widths))
    total = metrics.total_records()
    lines.append(f"{total} records in {elapsed:.1f}s ({total / max(elapsed, 1e-9):,.0f} records/s)")
    for name, s in sorted(metrics.sinks.items()):
        line = f"sink {name}: {s.records} records in {s.batches} batches, {s.failures} failures"
        if s.filtered:
            line += f", {s.filtered} filtered out"
        if s.rejected:
            line += f", {s.rejected} rejected"
        lines.append(line)
    return "\n".join(lines)
