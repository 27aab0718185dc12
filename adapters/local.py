"""`local` source: a directory of flow log files in any provider's format (backfills, offline use, the demo).

A file is a unit of work, identified by its path and versioned by size + mtime: a finished file is skipped on every
later poll, a file that changed is read again as a new unit. Files should be complete when they appear (write then
rename into place, as `aws s3 sync` does); in daemon mode a file must also be unchanged for `settle` seconds.

The format is detected from the content, not the name, by the parsing seam (collector/parsing.py): gzip is
unwrapped, and each registered format (AWS text and Parquet today) is tried on the first bytes.
"""

from __future__ import annotations

import asyncio
import fnmatch
import logging
import os
import time
from collections.abc import Iterator
from concurrent.futures import Executor
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any

from adapters.aws.config import AwsFields
from adapters.units import Outcome, RetryBook, deliver_unit
from collector.aio import sleep_or_stop
from collector.checkpoints import CheckpointStore
from collector.metrics import Metrics
from collector.options import Choice, Duration, Name, NonEmpty, Positive
from collector.parsing import ParseResult, open_unit
from collector.pipeline import Pipeline
from collector.registry import register_source

log = logging.getLogger("flowcollector.source.local")

FORGET_AFTER = 86400.0  # seconds a finished file must have been gone before its checkpoint is dropped


@dataclass(frozen=True, slots=True)
class LocalSourceConfig:
    """`type: local`: flow log files in a directory (searched recursively) or a single file.

    `path` is resolved against the config file's directory when relative. `glob` is an fnmatch pattern on the file
    *name*. `aws_fields` is the field order of AWS text without a header line (None: the v2 default format).
    `settle`: in daemon mode a file must be unchanged this long before it is read, so half-copied files are not.
    """

    name: Name
    type: str = "local"
    path: Path = Path(".")
    glob: Annotated[str, NonEmpty] = "*"
    recursive: bool = True
    provider: Annotated[str, Choice("auto", "aws", "gcp", "azure")] = "auto"
    aws_fields: Annotated[tuple[str, ...] | None, AwsFields] = None
    poll_interval: Annotated[float, Duration, Positive] = 10.0
    settle: Annotated[float, Duration] = 2.0


class LocalSource:
    def __init__(self, config: Any, store: CheckpointStore, metrics: Metrics, executor: Executor | None = None) -> None:
        self.config = config
        self.name: str = config.name
        self.store = store
        self.counters = metrics.sources[config.name]
        self.executor = executor
        self.root = Path(config.path)
        self._emitted: dict[str, str] = {}
        self._retry = RetryBook()  # a unit that failed is not retried on every poll

    def _scan(self) -> list[tuple[Path, str, float]]:
        """(path, version, mtime) of every candidate file, in path order (so runs are reproducible)."""
        if self.root.is_file():
            candidates = [self.root]
        elif self.config.recursive:
            candidates = [Path(d) / f for d, _, files in os.walk(self.root) for f in files]
        else:
            candidates = [p for p in self.root.iterdir() if p.is_file()]
        out = []
        for p in sorted(candidates):
            if p.name.startswith(".") or not fnmatch.fnmatch(p.name, self.config.glob):
                continue
            try:
                st = p.stat()
            except OSError:
                continue
            out.append((p, f"{st.st_size}:{st.st_mtime_ns}", st.st_mtime))
        return out

    def _unit_name(self, path: Path) -> str:
        return str(path.relative_to(self.root)) if path != self.root else path.name

    async def run(self, pipeline: Pipeline, once: bool, stop: asyncio.Event) -> None:
        while not stop.is_set():
            await self.poll(pipeline, once, stop)
            if once:
                return
            await sleep_or_stop(stop, self.config.poll_interval)

    async def poll(self, pipeline: Pipeline, once: bool, stop: asyncio.Event) -> None:
        loop = asyncio.get_running_loop()
        if not self.root.exists():
            # A failed unit, like an unreadable file: counted (run --once exits 1) and retried next poll.
            self.counters.units_failed += 1
            log.error("source=%s path %s does not exist", self.name, self.root)
            return
        files = await loop.run_in_executor(self.executor, self._scan)
        done = await loop.run_in_executor(self.executor, self.store.done_versions, self.name)
        now = time.time()
        # Units emitted to the end but not yet acked by every sink (a Parquet sink acks when its file closes) are
        # not read again by the next poll; once committed as done they are known from the store.
        self._emitted = {u: v for u, v in self._emitted.items() if done.get(u) != v}
        present = set()
        for path, version, mtime in files:
            if stop.is_set():
                return
            unit = self._unit_name(path)
            present.add(unit)
            if done.get(unit) == version or self._emitted.get(unit) == version:
                continue
            if self._retry.waiting(unit, version, now):
                continue
            if not once and now - mtime < self.config.settle:
                continue  # still being written, perhaps: next poll
            await self._process(pipeline, path, unit, version, stop)

        # The store's horizon: forget finished files that are gone, once they have been gone a while (a directory
        # that is briefly unmounted must not make every file new again).
        gone = [u for u in done if u not in present]
        if gone and files:
            await loop.run_in_executor(self.executor, self.store.forget_units, self.name, gone, now - FORGET_AFTER)

    async def _process(self, pipeline: Pipeline, path: Path, unit: str, version: str, stop: asyncio.Event) -> None:
        bytes_read = [0]

        def open_results(resume: dict[str, Any] | None) -> Iterator[ParseResult]:
            return open_unit(
                path,
                unit=str(path),
                source=self.name,
                provider=self.config.provider,
                options={"aws_fields": self.config.aws_fields},
                resume=resume,
                bytes_read=bytes_read,
            )

        outcome = await deliver_unit(
            pipeline,
            source=self.name,
            unit=unit,
            version=version,
            label=str(path),
            open_results=open_results,
            store=self.store,
            counters=self.counters,
            executor=self.executor,
            stop=stop,
            log=log,
            bytes_read=bytes_read,
        )
        if outcome is Outcome.DONE:
            self._emitted[unit] = version
            self._retry.succeeded(unit)
        elif outcome is Outcome.FAILED:
            delay = self._retry.failed(unit, version)
            log.warning("source=%s unit=%s will be tried again in %.0fs (or when it changes)", self.name, unit, delay)


register_source("local", LocalSourceConfig, LocalSource)
