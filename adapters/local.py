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

import pyarrow as pa
import pyarrow.compute as pc
from isal import isal_zlib

from adapters.aws.fields import KNOWN_FIELDS
from adapters.aws.parse import ParseResult, parse_parquet, parse_text
from collector.aio import sleep_or_stop
from collector.checkpoints import CheckpointStore
from collector.metrics import Metrics
from collector.pipeline import Delivery, Pipeline, PipelineFailed
from collector.schema import ParseError, empty_batch

log = logging.getLogger("flowcollector.source.local")

READ_SIZE = 1 << 20
GZIP_MAGIC = b"\x1f\x8b"
PARQUET_MAGIC = b"PAR1"
FORGET_AFTER = 86400.0  # seconds a finished file must have been gone before its checkpoint is dropped
MAX_ERRORS_LOGGED = 10  # per unit; the rest are counted and summarized


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
    counter = bytes_read if bytes_read is not None else [0]
    with open(path, "rb") as fh:
        magic = fh.peek(4)[:4]  # peek, not seek: pipes and /dev/stdin work too
        if magic == PARQUET_MAGIC:
            counter[0] = os.fstat(fh.fileno()).st_size
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
        # unit -> (version, when to try again, backoff): a unit that failed is not retried on every poll.
        self._retry: dict[str, tuple[str, float, float]] = {}

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
        if not self.root.exists():
            log.error("source=%s path %s does not exist", self.name, self.root)
        while not stop.is_set():
            await self.poll(pipeline, once, stop)
            if once:
                return
            await sleep_or_stop(stop, self.config.poll_interval)

    async def poll(self, pipeline: Pipeline, once: bool, stop: asyncio.Event) -> None:
        loop = asyncio.get_running_loop()
        files = await loop.run_in_executor(self.executor, self._scan) if self.root.exists() else []
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
            retry = self._retry.get(unit)
            if retry is not None and retry[0] == version and now < retry[1]:
                continue
            if not once and now - mtime < self.config.settle:
                continue  # still being written, perhaps: next poll
            await self._process(pipeline, path, unit, version, stop)

        # The store's horizon: forget finished files that are gone, once they have been gone a while (a directory
        # that is briefly unmounted must not make every file new again).
        gone = [u for u in done if u not in present]
        if gone and files:
            await loop.run_in_executor(self.executor, self.store.forget_units, self.name, gone, now - FORGET_AFTER)

    def _failed(self, unit: str, version: str) -> None:
        self.counters.units_failed += 1
        previous = self._retry.get(unit)
        delay = min(previous[2] * 2, 3600.0) if previous and previous[0] == version else 60.0
        self._retry[unit] = (version, time.time() + delay, delay)
        log.warning("source=%s unit=%s will be tried again in %.0fs (or when it changes)", self.name, unit, delay)

    async def _process(self, pipeline: Pipeline, path: Path, unit: str, version: str, stop: asyncio.Event) -> None:
        loop = asyncio.get_running_loop()
        pipeline.begin_unit(self.name, unit)
        ckpt = await loop.run_in_executor(self.executor, self.store.get, self.name, unit)
        resume = None
        records = 0
        if ckpt is not None and ckpt.version == version and ckpt.position:
            resume, records = ckpt.position, ckpt.records
            log.info("source=%s unit=%s resuming at %s", self.name, unit, _describe(resume))
        bytes_read = [0]
        results = open_unit(
            path,
            unit=str(path),
            source=self.name,
            provider=self.config.provider,
            aws_fields=self.config.aws_fields,
            resume=resume,
            bytes_read=bytes_read,
        )
        logged = 0
        errors = 0
        sentinel = None
        try:
            while True:
                result = await loop.run_in_executor(self.executor, next, results, sentinel)
                if result is None:
                    break
                for err in result.errors:
                    if logged < MAX_ERRORS_LOGGED:
                        log.warning("source=%s %s", self.name, err)
                        logged += 1
                errors += len(result.errors)
                self.counters.errors += len(result.errors)
                n = result.batch.num_rows
                records += n
                self.counters.records += n
                if n:
                    self.counters.status_rows += _status_rows(result)
                # Text positions count decompressed bytes, Parquet positions rows: both grow within a unit.
                progress = int(result.position.get("offset", result.position.get("rows", 0)))
                await pipeline.emit(
                    Delivery(self.name, unit, version, result.batch, result.position, result.final, records, progress)
                )
                if result.final:
                    self._emitted[unit] = version
                    self._retry.pop(unit, None)
                    break
                if stop.is_set():
                    return  # the checkpoint of what was emitted still lands; the rest next run
        except PipelineFailed:
            raise
        except (OSError, pa.ArrowException) as exc:
            self._failed(unit, version)
            log.error("source=%s unit=%s cannot be read: %s", self.name, path, exc)
            return
        except Exception:  # a parser bug must not take the daemon down: report it with where it happened
            self._failed(unit, version)
            log.exception("source=%s unit=%s failed unexpectedly", self.name, path)
            return
        finally:
            self.counters.bytes_read += bytes_read[0]
            results.close()
        if errors > logged:
            log.warning("source=%s unit=%s %d more errors not shown", self.name, path, errors - logged)
        log.info("source=%s unit=%s records=%d errors=%d", self.name, path, records, errors)


_STATUS_VALUES = pa.array(["nodata", "skipdata"])


def _status_rows(result: ParseResult) -> int:
    statuses = result.batch.column("log_status")
    if statuses.null_count == len(statuses):
        return 0
    return int(pc.sum(pc.is_in(statuses.cast(pa.string()), value_set=_STATUS_VALUES)).as_py() or 0)


def _describe(position: dict[str, Any]) -> str:
    return ", ".join(f"{k}={v}" for k, v in position.items() if k != "fields")
