"""`file` sink: JSON Lines (optionally gzip) or Parquet files, rotated by size and time.

Readers never see a partial file: data goes to a hidden `.<name>.part` file, renamed into place (and the directory
fsynced) when the file rotates. What is acked is durable:
- JSON Lines: `flush` writes the buffered lines (a gzip member per flush) and fsyncs the part file. After a crash,
  `open` finds the part file, cuts it back to its last complete line (or gzip member) and publishes it; anything
  written after the last checkpoint is delivered again (duplicates bounded by the batches in flight).
- Parquet: a file is readable only once its footer is written, so batches are acked when the file is closed
  (on rotation, or `flush(force=True)` at shutdown). After a crash the unreadable part file is removed: its batches
  were never acked, so they are delivered again, exactly once.
"""

from __future__ import annotations

import asyncio
import logging
import os
import secrets
import time
import zlib
from pathlib import Path
from typing import Any, BinaryIO

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


def _complete_gzip_prefix(fh: BinaryIO) -> int:
    """Length of the longest prefix of a file made of complete gzip members, read in bounded chunks."""
    good = pos = 0
    d = zlib.decompressobj(wbits=31)
    while chunk := fh.read(1 << 20):
        data = chunk
        while data:
            try:
                d.decompress(data)
            except zlib.error:
                return good
            if not d.eof:
                pos += len(data)
                break
            pos += len(data) - len(d.unused_data)
            good = pos
            data = d.unused_data
            d = zlib.decompressobj(wbits=31)
    return good


def _last_line_end(fh: BinaryIO, size: int) -> int:
    """Offset just past the last newline of a file, reading backwards in bounded chunks."""
    end = size
    while end > 0:
        start = max(0, end - (1 << 16))
        fh.seek(start)
        chunk = fh.read(end - start)
        i = chunk.rfind(b"\n")
        if i >= 0:
            return start + i + 1
        end = start
    return 0


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

    # -- lifecycle --------------------------------------------------------------------------------------------
    async def open(self) -> None:
        await asyncio.to_thread(self._recover)

    def _recover(self) -> None:
        self.dir.mkdir(parents=True, exist_ok=True)
        for part in sorted(self.dir.glob(".*.part")):
            final = part.with_name(part.name[1:].removesuffix(".part"))
            if final.suffix == ".parquet":
                log.warning(
                    "sink=%s removing unfinished Parquet file %s (its batches were never acked)", self.name, part
                )
                part.unlink()
                continue
            size = part.stat().st_size
            with open(part, "r+b") as fh:
                keep = _complete_gzip_prefix(fh) if final.name.endswith(".gz") else _last_line_end(fh, size)
                if 0 < keep < size:
                    log.warning("sink=%s cutting %d bytes of a partial record from %s", self.name, size - keep, part)
                    fh.truncate(keep)
                    os.fsync(fh.fileno())
            if keep == 0:
                part.unlink()
                continue
            os.replace(part, final)
            log.info("sink=%s published recovered file %s", self.name, final)
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
        if self.format == "parquet":
            # Row groups are written as they fill; a short flush interval must not make tiny row groups, so the
            # remainder is written only when the file closes.
            if force or self._rotation_due():
                self._write_row_group()
                if self._fh is not None:
                    self._publish()
            if self._fh is None and not self._rows:
                self._acked = self._written  # everything written is in closed files
            return
        self._drain()
        if self._fh is not None:
            if self._dirty and self.config.fsync:
                os.fsync(self._fh.fileno())
            self._dirty = False
            if force or self._rotation_due():
                self._publish()
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

    def _publish(self) -> None:
        """Close, fsync and rename the part file. Safe to call again after a failure at any step."""
        assert self._part is not None and self._final is not None
        if self._fh is not None:
            fh, self._fh = self._fh, None
            try:
                fh.close()
            except Exception as exc:
                if self.format == "parquet":
                    raise SinkFatal(f"sink={self.name}: closing {self._part} failed: {exc}") from exc
                raise  # JSON Lines were fsynced before: the file is complete
            if self.config.fsync and self.format == "parquet":
                with open(self._part, "rb") as f:
                    os.fsync(f.fileno())
        if self._part.exists():
            os.replace(self._part, self._final)
        if self.config.fsync:
            _fsync_dir(self.dir)
        log.info("sink=%s published %s", self.name, self._final)
        self._part = self._final = None
        self._data_since = None
