"""`file` sink: JSON Lines (optionally gzip) or Parquet files, rotated by size and time; exactly once across crashes.

Readers never see a partial file: data goes to a hidden `.<name>.part` file that is renamed into place when the
file rotates. What is acked is durable, and what is durable is journaled:
- JSON Lines: `flush` writes the buffered lines (whole gzip members) and fsyncs; the ack is recorded in the
  checkpoint store together with the file's fsynced size (`journal()`).
- Parquet: a file is readable only once its footer is written, so batches are acked when the file is closed.
- Rotation is two-phase: the file is *sealed* (closed, fsynced, still hidden), the pipeline records the ack with the
  file's name and size, and only then calls `publish_sealed()` to rename it.
After a crash, `open()` settles every part file by the journal the pipeline hands it (`journal_in_store`): a named
file is cut back to its recorded size and published; an unnamed one held nothing recorded and is removed. The
batches beyond what was recorded are delivered again by the source, so every flow lands exactly once.
"""

from __future__ import annotations

import asyncio
import logging
import os
import secrets
import time
from pathlib import Path
from typing import Any

import isal.igzip
import pyarrow as pa
import pyarrow.parquet as pq

from collector.jsonl import dumps_batch
from collector.schema import SCHEMA, FlowBatch
from collector.sinks import SinkFatal, register

log = logging.getLogger("flowcollector.sink.file")

_ROW_GROUP_ROWS = 128 * 1024
_JSONL_BUFFER = 8 << 20  # flush early when this much JSON is pending, whatever the interval


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _write_all(fh: Any, data: bytes | memoryview) -> None:
    view = memoryview(data)
    while view:
        n = fh.write(view)
        view = view[n:]


@register("file")
class FileSink:
    def __init__(self, config: Any) -> None:
        self.config = config
        self.name: str = config.name
        self.dir = Path(config.path)
        self.format: str = config.format
        self.compression: str = config.compression
        self._written = 0  # write() calls so far
        self._acked = 0  # write() calls durable so far
        self._part: Path | None = None
        self._final: Path | None = None
        self._data_since: float | None = None  # when the oldest unpublished data arrived
        self._bytes = 0
        self._fh: Any = None  # binary file (jsonl) or ParquetWriter
        self._pending: list[bytes | memoryview] = []
        self._pending_size = 0
        self._rows: list[FlowBatch] = []
        self._row_count = 0
        self._dirty = False  # JSON Lines written since the last fsync
        self._synced_size = 0  # bytes of the open JSON Lines file made durable by the last flush
        self._sealed: list[tuple[Path, Path, int]] = []  # (part, final, size) closed, awaiting publish_sealed()
        # Set by the pipeline before open(): file name -> acked size, as the checkpoint store recorded them.
        self.journal_in_store: dict[str, int] = {}

    # -- lifecycle --------------------------------------------------------------------------------------------
    async def open(self) -> None:
        await asyncio.to_thread(self._recover)

    def _recover(self) -> None:
        """Finish what a crash interrupted, using what the checkpoint store recorded of this sink's files.

        A hidden part file the store names holds acked data up to the recorded size: cut it there (what follows was
        not recorded, so it is delivered again) and publish it. A part file the store does not name holds nothing
        recorded: remove it, its batches are delivered again. Either way nothing is lost and nothing doubled."""
        self.dir.mkdir(parents=True, exist_ok=True)
        for part in sorted(self.dir.glob(".*.part")):
            final = part.with_name(part.name[1:].removesuffix(".part"))
            size = self.journal_in_store.get(final.name)
            if size is None:
                log.warning("sink=%s removing %s: nothing in it was recorded as delivered", self.name, part)
                part.unlink()
                continue
            actual = part.stat().st_size
            if actual > size:
                log.warning("sink=%s cutting %d unrecorded bytes from %s", self.name, actual - size, part)
                with open(part, "r+b") as fh:
                    fh.truncate(size)
                    os.fsync(fh.fileno())
            elif actual < size:
                log.error("sink=%s %s is shorter than recorded (%d < %d bytes)", self.name, part, actual, size)
            os.replace(part, final)
            log.info("sink=%s published %s (recovered)", self.name, final)
        _fsync_dir(self.dir)

    async def close(self) -> int:
        return await self.flush(force=True)

    # -- data path --------------------------------------------------------------------------------------------
    async def write(self, batch: FlowBatch) -> None:
        if batch.num_rows:
            if self._data_since is None:
                self._data_since = time.time()
            if self.format == "parquet":
                self._rows.append(batch)
                self._row_count += batch.num_rows
                if self._row_count >= _ROW_GROUP_ROWS:
                    await asyncio.to_thread(self._write_row_group)
            else:
                data = await asyncio.to_thread(dumps_batch, batch)
                self._pending.append(data)
                self._pending_size += len(data)
                if self._pending_size >= _JSONL_BUFFER:
                    await asyncio.to_thread(self._drain)  # hand it to the OS now; fsync waits for flush
        self._written += 1

    async def flush(self, force: bool = False) -> int:
        await asyncio.to_thread(self._flush, force)
        return self._acked

    def _flush(self, force: bool) -> None:
        # Files are published in two phases: a file due for rotation is *sealed* (complete, fsynced, still hidden),
        # the pipeline records the sink's progress together with the file's name and size (journal()), and only
        # then calls publish_sealed(). The open JSON Lines file is journaled at every ack with its fsynced size.
        if self.format == "parquet":
            # Row groups are written as they fill; a short flush interval must not make tiny row groups, so the
            # remainder is written only when the file closes: a Parquet file is readable only once closed.
            if force or self._rotation_due():
                self._write_row_group()
                if self._fh is not None:
                    self._seal()
            if self._fh is None and not self._rows:
                self._acked = self._written  # everything written is in sealed or published files
            return
        self._drain()
        if self._fh is not None:
            if self._dirty and self.config.fsync:
                os.fsync(self._fh.fileno())
            self._dirty = False
            self._synced_size = self._fh.tell()
            if force or self._rotation_due():
                self._seal()
        self._acked = self._written

    def _drain(self) -> None:
        """Write buffered JSON Lines to the part file (not yet fsynced, so not yet acked).

        A failed write (disk full) is undone by truncating back and keeps the buffer, so a retry writes it again
        whole: never half a line, never an ack for data that is not there."""
        if not self._pending:
            return
        self._ensure_open()
        data: bytes | memoryview = b"".join(self._pending)
        if self.compression == "gzip":
            data = isal.igzip.compress(data, 1)  # one member per drain: a crash cuts at a member boundary
        pos = self._fh.tell()
        try:
            _write_all(self._fh, data)
        except OSError:
            self._fh.truncate(pos)
            self._fh.seek(pos)
            raise
        self._pending.clear()
        self._pending_size = 0
        self._bytes += len(data)
        self._dirty = True

    # -- files ------------------------------------------------------------------------------------------------
    def _rotation_due(self) -> bool:
        if self._data_since is None:
            return False
        return self._bytes >= self.config.rotate_bytes or time.time() - self._data_since >= self.config.rotate_interval

    def _ensure_open(self) -> None:
        if self._fh is not None:
            return
        stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
        ext = {"parquet": ".parquet", "jsonl": ".jsonl"}[self.format]
        if self.format == "jsonl" and self.compression == "gzip":
            ext += ".gz"
        final = self.dir / f"flows-{stamp}-{secrets.token_hex(4)}{ext}"
        self._final = final
        self._part = final.with_name("." + final.name + ".part")
        self._bytes = 0
        self._synced_size = 0
        if self.format == "parquet":
            codec = None if self.compression == "none" else self.compression
            self._fh = pq.ParquetWriter(self._part, SCHEMA, compression=codec)
        else:
            # Unbuffered: a write reaches the OS or fails, so a failed write can be undone exactly.
            self._fh = open(self._part, "wb", buffering=0)  # noqa: SIM115 (kept open until rotation)
        if self.config.fsync:
            _fsync_dir(self.dir)  # the part file's name must survive a power loss along with its data

    def _write_row_group(self) -> None:
        if not self._rows:
            return
        self._ensure_open()
        table = pa.Table.from_batches(self._rows, SCHEMA)
        try:
            self._fh.write_table(table, row_group_size=_ROW_GROUP_ROWS)
        except Exception as exc:
            # A Parquet writer that failed mid-row-group cannot be trusted to finish the file; nothing in it was
            # acked, so stop and let the next run deliver it all again.
            raise SinkFatal(f"sink={self.name}: writing {self._part} failed: {exc}") from exc
        self._rows.clear()
        self._row_count = 0
        self._bytes = os.stat(self._part).st_size  # row groups go to disk as written; the footer adds little

    def journal(self) -> list[tuple[str, int]]:
        """(file name, acked size) of every file not yet published: sealed files and the open JSON Lines file."""
        out = [(final.name, size) for _, final, size in self._sealed]
        if self._fh is not None and self.format == "jsonl" and self._final is not None:
            out.append((self._final.name, self._synced_size))
        return out

    def sealed(self) -> list[str]:
        return [final.name for _, final, _ in self._sealed]

    async def publish_sealed(self) -> None:
        await asyncio.to_thread(self._publish_sealed)

    def _publish_sealed(self) -> None:
        for part, final, _ in self._sealed:
            if part.exists():
                os.replace(part, final)
            log.info("sink=%s published %s", self.name, final)
        if self._sealed and self.config.fsync:
            _fsync_dir(self.dir)
        self._sealed.clear()

    def _seal(self) -> None:
        assert self._part is not None and self._final is not None
        fh, self._fh = self._fh, None
        try:
            fh.close()
            if self.config.fsync:
                with open(self._part, "rb") as f:
                    os.fsync(f.fileno())
        except Exception as exc:
            raise SinkFatal(f"sink={self.name}: closing {self._part} failed: {exc}") from exc
        self._sealed.append((self._part, self._final, os.stat(self._part).st_size))
        self._part = self._final = None
        self._data_since = None
