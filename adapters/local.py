"""`local` source: a directory of flow log files in any provider's format (backfills, offline use, the demo).

A file is a unit of work, identified by its path and versioned by size + mtime: a finished file is skipped on every
later poll, a file that changed is read again as a new unit. Files should be complete when they appear (write then
rename into place, as `aws s3 sync` does); in daemon mode a file must also be unchanged for `settle` seconds.

The format is detected from the content, not the name, by the parsing seam (collector/parsing.py): gzip is
unwrapped, and each registered format (AWS text and Parquet today) is tried on the first bytes.

`growing: true` reads files while they are appended to (a collector writing its flow log to a file): each plain
text file is a growing unit (adapters/units.py). Its version is its identity, `st_dev:st_ino` (plus the birth time
where the platform reports one): what stays the same while it grows; size and mtime change on every append, and
ctime too (it changes with every write), so none of them can be the version. It is read whenever its size or
mtime changed since the last read, up to the last line end (a line still being written is left for the next
read), and stays caught up, not done, until it has been unchanged for `final_after`: then the rest is read (a last
line without line end included) and it is done. `settle` does not apply to it. A file that shrank below its
checkpoint (truncated in place) is a new version read from the start; a file replaced by another (new inode) too,
and so is one whose first bytes are not those its checkpoint recorded (a file deleted and created again with the
same inode, or rewritten in place and grown past its checkpoint while the collector was down: `Growth.head`,
adapters/units.py). A done file that grew (appended to after it went final) is read on from where it was done.
Each file's size, mtime and ctime are remembered when it was last read or checked, so an unchanged file costs a
stat per poll; a new source (a restart) looks once at each done file (its checkpoint and first 4 KiB).
gzip and Parquet files cannot be read while they are written (a gzip member and a Parquet file are whole only at
their end): recognized by their first bytes, they are read as complete files as without `growing` (versioned by
size and mtime, after `settle`). The unit is the path: a file renamed (rotated) is a new unit.

Turning `growing` on or off keeps what the other mode delivered: a file whose checkpoint is its complete-file
version (size and mtime, unchanged since) is skipped in either mode; without `growing`, a file that has a growing
unit's checkpoint of its identity is read on from there once settled, as a final growing unit. What cannot be
carried over: a file read whole without `growing` and appended to after it was turned on has no identity nor head
in its checkpoint to read on from, so it is read again from the start.
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
from adapters.units import HEAD_BYTES, Growth, Outcome, RetryBook, deliver_unit, same_object
from collector.aio import sleep_or_stop
from collector.checkpoints import CheckpointStore
from collector.metrics import Metrics
from collector.options import Choice, Duration, Name, NonEmpty, Positive
from collector.parsing import ParseResult, appendable, open_unit
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
    `growing`: plain text files are read while they are appended to (module docstring); one is final, and done,
    once unchanged for `final_after` (also in `run --once`: a younger file is read to its last line end and left
    caught up, the next run goes on from there).
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
    growing: bool = False
    final_after: Annotated[float, Duration, Positive] = 3600.0


def file_identity(st: os.stat_result) -> str:
    """What stays the same while a file is appended to: device and inode (and birth time, where reported)."""
    birth = getattr(st, "st_birthtime", None)
    return f"{st.st_dev}:{st.st_ino}" + (f":{int(birth * 1_000_000)}" if birth is not None else "")


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
        self.growing: bool = getattr(config, "growing", False)  # (tests hand in configs built by hand)
        self.final_after: float = getattr(config, "final_after", 3600.0)
        # growing: unit -> (identity, size, mtime_ns, ctime_ns) when it was last read to its end (caught up, or
        # done), so an unchanged file is not looked at again on every poll; and unit -> ((identity, ctime_ns),
        # appendable) once its first bytes are known (a gzip or Parquet file's are not read on every poll).
        self._seen: dict[str, tuple[str, int, int, int]] = {}
        self._kinds: dict[str, tuple[tuple[str, int], bool]] = {}

    def _scan(self) -> list[tuple[Path, os.stat_result]]:
        """(path, stat) of every candidate file, in path order (so runs are reproducible)."""
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
            out.append((p, st))
        return out

    def _peek(self, path: Path, unit: str, identity: str, st: os.stat_result) -> tuple[bool | None, bytes | None]:
        """Whether a file is read as a growing unit (`growing` is set and it is neither gzip nor Parquet; None while
        it is too short to tell), and if it is, its first HEAD_BYTES (runs in the executor)."""
        key = (identity, st.st_ctime_ns)
        known = self._kinds.get(unit)
        if known is not None and known[0] == key and not known[1]:
            return False, None
        if st.st_size < 4:
            return None, None
        try:
            with open(path, "rb") as fh:
                head = fh.read(HEAD_BYTES)
        except OSError:
            return None, None  # gone since the scan, or unreadable: reading it would report why
        if len(head) < 4:
            return None, None
        self._kinds[unit] = (key, appendable(head[:4]))
        return (True, head) if self._kinds[unit][1] else (False, None)

    def _was_growing(self, unit: str, identity: str, done: dict[str, str]) -> bool:
        """Whether, with `growing` off, a file has a growing unit's checkpoint (it was on before): read on from it,
        as a growing unit that is final, rather than again from the start (runs in the executor)."""
        if same_object(done.get(unit), identity):
            return True
        ckpt = None if unit in done else self.store.get(self.name, unit)
        return ckpt is not None and same_object(ckpt.version, identity)

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
        self._emitted = {u: v for u, v in self._emitted.items() if not same_object(done.get(u), v)}
        present = set()
        for path, st in files:
            if stop.is_set():
                return
            unit = self._unit_name(path)
            present.add(unit)
            identity, plain = file_identity(st), f"{st.st_size}:{st.st_mtime_ns}"
            seen = (identity, st.st_size, st.st_mtime_ns, st.st_ctime_ns)
            last = self._seen.get(unit)
            if done.get(unit) == plain or self._emitted.get(unit) == plain:
                continue  # read whole and unchanged since (also with `growing` turned on since)
            if last == seen and (same_object(done.get(unit), identity) or self._emitted.get(unit) == identity):
                continue  # a growing unit, final and delivered, unchanged since
            if not self.growing and not once and now - st.st_mtime < self.config.settle:
                continue  # still being written, perhaps: next poll
            growth = None
            if self.growing or await loop.run_in_executor(self.executor, self._was_growing, unit, identity, done):
                kind, head = await loop.run_in_executor(self.executor, self._peek, path, unit, identity, st)
                if kind is None:
                    continue  # a few bytes so far: next poll
                if kind:
                    # Without `growing` (turned off since the file was read as growing) it is complete once settled.
                    final = not self.growing or now - st.st_mtime >= self.final_after
                    if not final and last == seen:
                        continue  # unchanged since it was read to its end
                    growth = Growth(final, st.st_size, head)
            version = identity if growth else plain
            retry_key = f"{version}:{st.st_size}:{st.st_mtime_ns}" if growth else version
            if self._retry.waiting(unit, retry_key, now):
                continue
            if growth is None and not once and now - st.st_mtime < self.config.settle:
                continue  # still being written, perhaps: next poll
            outcome = await self._process(pipeline, path, unit, version, stop, growth, retry_key)
            if growth is not None and outcome in (Outcome.CAUGHT_UP, Outcome.DONE):
                self._seen[unit] = (version, st.st_size, st.st_mtime_ns, st.st_ctime_ns)
            else:
                self._seen.pop(unit, None)
        self._seen = {u: v for u, v in self._seen.items() if u in present}
        self._kinds = {u: v for u, v in self._kinds.items() if u in present}

        # The store's horizon: forget finished files that are gone, once they have been gone a while (a directory
        # that is briefly unmounted must not make every file new again).
        gone = [u for u in done if u not in present]
        if gone and files:
            await loop.run_in_executor(self.executor, self.store.forget_units, self.name, gone, now - FORGET_AFTER)

    async def _process(
        self,
        pipeline: Pipeline,
        path: Path,
        unit: str,
        version: str,
        stop: asyncio.Event,
        growth: Growth | None = None,
        retry_key: str | None = None,
    ) -> Outcome:
        bytes_read = [0]
        options: dict[str, Any] = {"aws_fields": self.config.aws_fields}
        if growth is not None:
            options["complete"] = growth.final

        def open_results(resume: dict[str, Any] | None) -> Iterator[ParseResult]:
            return open_unit(
                path,
                unit=str(path),
                source=self.name,
                provider=self.config.provider,
                options=options,
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
            growth=growth,
        )
        if outcome is Outcome.DONE:
            self._emitted[unit] = version
            self._retry.succeeded(unit)
        elif outcome is Outcome.CAUGHT_UP:
            self._retry.succeeded(unit)
        elif outcome is Outcome.FAILED:
            delay = self._retry.failed(unit, retry_key or version)
            log.warning("source=%s unit=%s will be tried again in %.0fs (or when it changes)", self.name, unit, delay)
        return outcome


register_source("local", LocalSourceConfig, LocalSource)
