"""`local` source: a directory of flow log files in any provider's format (backfills, offline use, the demo).

A file is a unit of work, identified by its path and versioned by size + mtime: a finished file is skipped on every
later poll, a file that changed is read again as a new unit. Files should be complete when they appear (write then
rename into place, as `aws s3 sync` does); in daemon mode a file must also be unchanged for `settle` seconds.

The format is detected from the content, not the name: gzip is unwrapped, `PAR1` is Parquet, text starting with
`{`/`[` is JSON (GCP / Azure, parsers to come), anything else AWS flow log text.
"""

from __future__ import annotations

import asyncio
import fnmatch
import io
import logging
import os
import time
from collections.abc import Iterator
from concurrent.futures import Executor
from pathlib import Path
from typing import Any, BinaryIO

from isal import isal_zlib

from adapters.aws.fields import KNOWN_FIELDS
from adapters.aws.parse import ParseResult, parse_parquet, parse_text
from adapters.units import Outcome, RetryBook, deliver_unit
from collector.aio import sleep_or_stop
from collector.checkpoints import CheckpointStore
from collector.metrics import Metrics
from collector.pipeline import Pipeline
from collector.schema import ParseError, empty_batch

log = logging.getLogger("flowcollector.source.local")

READ_SIZE = 1 << 20
GZIP_MAGIC = b"\x1f\x8b"
PARQUET_MAGIC = b"PAR1"
FORGET_AFTER = 86400.0  # seconds a finished file must have been gone before its checkpoint is dropped


def _gunzip(fh: BinaryIO, counter: list[int]) -> Iterator[bytes]:
    """Decompress a gzip stream of one or more members (concatenated objects are valid gzip).

    Driven by hand rather than through a GzipFile so that everything decompressed before a truncation or corruption
    is still handed on: the caller then reports the damage after delivering every complete line before it."""
    d = isal_zlib.decompressobj(wbits=31)
    started = False
    while raw := fh.read(READ_SIZE):
        counter[0] += len(raw)
        while raw:
            out = d.decompress(raw)
            started = True
            if out:
                yield out
            if not d.eof:
                break
            raw = d.unused_data  # another member follows
            d = isal_zlib.decompressobj(wbits=31)
            started = False
    if started and not d.eof:
        if tail := d.flush():
            yield tail
        raise EOFError("compressed stream ended before the end-of-stream marker")


def _chunks(fh: BinaryIO, gz: bool, unit: str, problems: list[ParseError], counter: list[int]) -> Iterator[bytes]:
    """Decompressed chunks of a file; a truncated or corrupt gzip stream ends the stream with an error, so the
    parser still delivers every complete line before the damage."""
    try:
        if gz:
            yield from _gunzip(fh, counter)
        else:
            while chunk := fh.read(READ_SIZE):
                counter[0] += len(chunk)
                yield chunk
    except (EOFError, isal_zlib.error) as exc:
        problems.append(ParseError(unit, None, f"truncated or corrupt gzip stream: {exc}"))


def open_unit(
    path: Path,
    *,
    unit: str,
    source: str,
    provider: str = "auto",
    aws_fields: tuple[str, ...] | None = None,
    resume: dict[str, Any] | None = None,
    bytes_read: list[int] | None = None,
) -> Iterator[ParseResult]:
    """Parse one file of any supported format. Raises OSError only if the file cannot be opened or read."""
    with open(path, "rb") as fh:
        size = os.fstat(fh.fileno()).st_size if fh.seekable() else None
        yield from open_stream(
            fh,
            unit=unit,
            source=source,
            provider=provider,
            aws_fields=aws_fields,
            resume=resume,
            bytes_read=bytes_read,
            size=size,
        )


def open_stream(
    fh: io.BufferedIOBase | BinaryIO,
    *,
    unit: str,
    source: str,
    provider: str = "auto",
    aws_fields: tuple[str, ...] | None = None,
    resume: dict[str, Any] | None = None,
    bytes_read: list[int] | None = None,
    size: int | None = None,
) -> Iterator[ParseResult]:
    """Parse a flow log object from a buffered binary stream (a file, an S3 object): the format is detected from its
    first bytes. Parquet needs a seekable stream; `size` is what a Parquet object counts as read."""
    counter = bytes_read if bytes_read is not None else [0]
    magic = fh.peek(4)[:4]  # peek, not seek: pipes and /dev/stdin work too
    if magic == PARQUET_MAGIC:
        counter[0] = size or 0
        yield from parse_parquet(
            fh if fh.seekable() else io.BytesIO(fh.read()), unit=unit, source=source, resume=resume
        )
        return
    gz = magic[:2] == GZIP_MAGIC
    problems: list[ParseError] = []
    chunks = _chunks(fh, gz, unit, problems, counter)
    first = next(chunks, b"")
    kind = provider
    if kind == "auto":
        kind = "json" if first.lstrip()[:1] in (b"{", b"[") else "aws"
        if kind == "aws" and aws_fields is None and not _looks_like_aws(first):
            reason = "not a recognized flow log format (no AWS header line, not a v2 record); skipped"
            yield ParseResult(empty_batch(), [ParseError(unit, 1, reason)], {}, 0, True)
            return
    if kind != "aws":
        what = {"gcp": "GCP", "azure": "Azure"}.get(kind, "JSON (GCP or Azure)")
        yield ParseResult(
            empty_batch(), [ParseError(unit, None, f"{what} flow logs are not supported yet")], {}, 0, True
        )
        return

    def all_chunks() -> Iterator[bytes]:
        if first:
            yield first
        yield from chunks

    for result in parse_text(all_chunks(), unit=unit, source=source, fields=aws_fields, resume=resume):
        if result.final and problems:
            result.errors.extend(problems)
        yield result


def _looks_like_aws(head: bytes) -> bool:
    """Auto-detection for text: an AWS header line, or a default-format record (its first field, version, is a
    number). Other text (a README beside the logs) is reported once instead of as hundreds of malformed lines."""
    line = head.lstrip().split(b"\n", 1)[0]
    token = line.split(None, 1)[0] if line.strip() else b""
    return not token or token.isdigit() or token.decode("ascii", "replace") in KNOWN_FIELDS


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
                aws_fields=self.config.aws_fields,
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
