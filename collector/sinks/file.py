"""`file` sink: JSON Lines (optionally gzip) or Parquet files, rotated by size and time; exactly once across crashes.

Readers never see a partial file: data goes to a hidden part file that is renamed into place when the file rotates.
What is acked is durable, and what is durable is journaled:
- JSON Lines: `flush` writes the buffered lines (whole gzip members) and fsyncs; the ack is recorded in the
  checkpoint store together with the file's fsynced size (`journal()`).
- Parquet: a file is readable only once its footer is written, so batches are acked when the file is closed.
- Rotation is two-phase: the file is *sealed* (closed, fsynced, still hidden), the pipeline records the ack with the
  file's name and size, and only then calls `publish_sealed()` to rename it.
After a crash, `open()` settles every part file *of this sink* by the journal the pipeline hands it (`restore`,
the `JournaledSink` protocol): a named file is cut back to its recorded size and published; an unnamed one held
nothing recorded and is removed. The batches beyond what was recorded are delivered again by the source, so every flow
lands exactly once. Part files carry the sink's name (`.NAME.part` suffix, see `_part_tag`), so a sink never
touches another's files even if two were pointed at one directory (which `check` refuses).

The sink contract (collector/sinks/__init__.py): `write` only encodes into memory, and the disk I/O that can fail
(disk full, a read-only remount) happens in `_drain`, which either writes all it has or leaves the file as it was
(cut back to its last good size) and keeps the data for the retry. Parquet is encoded into memory too (the writer
writes into `_Staging`, never to the disk), so a failed disk write cannot leave a Parquet writer half-way through a
row group: after an outage the same bytes are written again, and the file is whole. Memory stays bounded during an
outage: `write` first drains what is buffered, and refuses (raises, taking nothing) while that fails.
"""

from __future__ import annotations

import asyncio
import logging
import os
import re
import secrets
import time
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any

import isal.igzip
import pyarrow as pa
import pyarrow.parquet as pq

from collector.jsonl import dumps_chunks
from collector.options import Choice, Directory, Duration, InvalidField, Min, Positive, Size
from collector.registry import register_sink
from collector.schema import SCHEMA, FlowBatch
from collector.sinks import BatchId, JournaledSink, RejectedRows, SinkFatal, SinkOptions, encode_or_reject

log = logging.getLogger("flowcollector.sink.file")

_ROW_GROUP_ROWS = 128 * 1024
# A row group is also written once the rows waiting for it hold this much Arrow memory: rows are not the same size
# everywhere (a GCP row with its flattened `extra` is ~800 bytes, an AWS v2 row ~220), and the rows of an open
# row group are held in memory until it is encoded.
_ROW_GROUP_BYTES = 32 << 20
_BUFFER = 8 << 20  # bytes buffered in memory before they go to the file, whatever the interval

# Compressions each file format supports; the first is the default when `compression` is not given.
FILE_COMPRESSIONS: dict[str, tuple[str, ...]] = {
    "jsonl": ("none", "gzip"),
    "parquet": ("zstd", "snappy", "gzip", "none"),
}


@dataclass(frozen=True, slots=True, kw_only=True)
class FileSinkConfig(SinkOptions):
    """`type: file`: JSON Lines or Parquet files written into the directory `path` (relative: to the config's dir).

    `compression` None (the default) means the format's default, resolved on construction: "none" for jsonl,
    "zstd" for parquet; after construction it is always a concrete string. A compression the format does not
    support raises ValueError here, so hand-built configs are checked too.
    """

    type: str = "file"
    path: Annotated[Path, Directory] = Path("./var/flows")
    format: Annotated[str, Choice(*FILE_COMPRESSIONS)] = "jsonl"
    rotate_bytes: Annotated[int, Size, Min(1)] = 128 * 2**20
    rotate_interval: Annotated[float, Duration, Positive] = 300.0
    compression: str | None = None
    fsync: bool = True

    def claims(self) -> tuple[tuple[str, str], ...]:
        """Recovery after a crash settles the part files of a directory by one sink's journal: one sink each."""
        return (("path", f"directory {os.path.realpath(self.path)}"),)

    def __post_init__(self) -> None:
        supported = FILE_COMPRESSIONS.get(self.format)
        if supported is None:
            raise InvalidField("format", f"expected one of {', '.join(FILE_COMPRESSIONS)}, got {self.format!r}")
        if self.compression is None:
            object.__setattr__(self, "compression", supported[0])
        elif self.compression not in supported:
            raise InvalidField(
                "compression",
                f"{self.compression!r} is not supported with format {self.format} "
                f"(expected one of {', '.join(supported)})",
            )


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _write_all(fd: int, data: bytes | memoryview) -> None:
    view = memoryview(data)
    while view:
        n = os.write(fd, view)
        view = view[n:]


def _part_tag(sink: str) -> str:
    """The part-file suffix that marks a file as this sink's: its name made safe for a file name, plus a checksum of
    the exact name (two names that map to one safe text still differ)."""
    safe = re.sub(r"[^A-Za-z0-9_-]+", "_", sink)[:40]
    return f"{safe}-{zlib.crc32(sink.encode()):08x}"


def _located(exc: OSError, path: Path | None) -> OSError:
    """The same error naming the file (an unbuffered write's OSError does not), so the log says errno and path."""
    if exc.filename is not None or path is None:
        return exc
    return type(exc)(exc.errno, exc.strerror, str(path))


class _Staging:
    """Where a ParquetWriter writes: memory, handed to the sink's buffer. The writer never sees a disk error."""

    def __init__(self, out: list[bytes]) -> None:
        self.out = out
        self.position = 0
        self.closed = False

    def write(self, data: Any) -> int:
        chunk = bytes(data)
        self.out.append(chunk)
        self.position += len(chunk)
        return len(chunk)

    def tell(self) -> int:
        return self.position

    def flush(self) -> None:
        pass

    def close(self) -> None:
        self.closed = True

    def writable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return False


class FileSink(JournaledSink):
    def __init__(self, config: Any) -> None:
        self.config = config
        self.name: str = config.name
        self.dir = Path(config.path)
        self.format: str = config.format
        self.compression: str = config.compression
        self._tag = _part_tag(self.name)
        self._written = 0  # write() calls so far
        self._acked = 0  # write() calls durable so far
        # The current file: on disk once its first bytes are drained.
        self._part: Path | None = None
        self._final: Path | None = None
        self._fd: int | None = None
        self._size = 0  # bytes of the part file known good (a failed write is cut back to it)
        self._tail_dirty = False  # a failed write may have left bytes past _size that could not be cut yet
        self._unsynced = False  # bytes written since the last fsync
        self._synced_size = 0  # bytes of the open JSON Lines file made durable by the last flush
        self._closing = False  # the current file is complete and is being sealed (retried until it is)
        self._data_since: float | None = None  # when the oldest data of the current file arrived
        # Taken, not yet in the file: JSON text (compressed when drained) or encoded Parquet bytes.
        self._pending: list[bytes | memoryview] = []
        self._pending_size = 0
        # Parquet: rows waiting for a full row group, and the writer of the current file (into memory).
        self._rows: list[FlowBatch] = []
        self._row_count = 0
        self._row_bytes = 0
        self._staged: list[bytes] = []
        self._writer: pq.ParquetWriter | None = None
        self._sealed: list[tuple[Path, Path, int]] = []  # (part, final, size) closed, awaiting publish_sealed()
        # Handed by the pipeline before open() (`restore`): file name -> acked size, as the store recorded them.
        self.journal_in_store: dict[str, int] = {}

    def restore(self, journal: dict[str, int]) -> None:
        self.journal_in_store = dict(journal)

    # -- lifecycle --------------------------------------------------------------------------------------------
    async def open(self) -> None:
        await asyncio.to_thread(self._recover)

    def _owned_final(self, part: str) -> str | None:
        """The final name of one of this sink's part files, or None if the file is not this sink's."""
        suffix = f".{self._tag}.part"
        if part.startswith(".") and part.endswith(suffix):
            return part[1 : -len(suffix)]
        # A part file of an older release (no sink name in it) is this sink's only if the journal names it.
        legacy = part[1:].removesuffix(".part")
        if part.startswith(".") and part.endswith(".part") and legacy in self.journal_in_store:
            return legacy
        return None

    def _recover(self) -> None:
        """Finish what a crash interrupted, using what the checkpoint store recorded of this sink's files.

        A hidden part file the store names holds acked data up to the recorded size: cut it there (what follows was
        not recorded, so it is delivered again) and publish it. A part file the store does not name holds nothing
        recorded: remove it, its batches are delivered again. Either way nothing is lost and nothing doubled. Files
        of other sinks are left alone."""
        self.dir.mkdir(parents=True, exist_ok=True)
        for part in sorted(self.dir.glob(".*.part")):
            name = self._owned_final(part.name)
            if name is None:
                continue
            final = part.with_name(name)
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
    async def write(self, batch: FlowBatch, ident: BatchId | None = None) -> None:
        """Take the whole batch into memory, or raise having taken nothing (see the module docstring)."""
        if batch.num_rows:
            if self._closing or self._pending_size >= _BUFFER:
                await asyncio.to_thread(self._settle_io)  # may fail (disk full): then nothing of this batch is taken
            if self.format == "parquet":
                await asyncio.to_thread(self._take_rows, batch)
            else:
                chunks = await asyncio.to_thread(encode_or_reject, batch, dumps_chunks)
                self._pending.extend(chunks)
                self._pending_size += sum(len(c) for c in chunks)
            if self._data_since is None:
                self._data_since = time.time()
        self._written += 1

    async def flush(self, force: bool = False) -> int:
        await asyncio.to_thread(self._flush, force)
        return self._acked

    def _settle_io(self) -> None:
        if self._closing:
            self._finish_seal()
        self._drain()

    def _take_rows(self, batch: FlowBatch) -> None:
        if not batch.schema.equals(SCHEMA):
            raise RejectedRows(range(batch.num_rows), "the batch does not have the flow schema")
        size = batch.nbytes
        if self._row_count + batch.num_rows >= _ROW_GROUP_ROWS or self._row_bytes + size >= _ROW_GROUP_BYTES:
            self._encode_row_group(batch)  # takes the batch only if it succeeds (a retry must not append it twice)
        else:
            self._rows.append(batch)
            self._row_count += batch.num_rows
            self._row_bytes += size

    def _encode_row_group(self, extra: FlowBatch | None = None) -> None:
        """Rows waiting (and `extra`) -> one Parquet row group, encoded into memory (`_Staging`), drained to the
        file later. Until the writer is handed the table, a failure changes nothing and is retried."""
        rows = self._rows + [extra] if extra is not None else self._rows
        if not rows:
            return
        table = pa.Table.from_batches(rows, SCHEMA)
        if self._writer is None:
            codec = None if self.compression == "none" else self.compression
            self._writer = pq.ParquetWriter(_Staging(self._staged), SCHEMA, compression=codec)
        try:
            self._writer.write_table(table, row_group_size=_ROW_GROUP_ROWS)
        except Exception as exc:
            # Memory only: this is not an outage but a writer in an unknown state. Nothing in the file was acked.
            raise SinkFatal(f"sink={self.name}: encoding a row group failed: {exc}") from exc
        self._rows.clear()
        self._row_count = 0
        self._row_bytes = 0
        self._move_staged()

    def _move_staged(self) -> None:
        if self._staged:
            self._pending.extend(self._staged)
            self._pending_size += sum(len(c) for c in self._staged)
            self._staged.clear()

    def _flush(self, force: bool) -> None:
        # Files are published in two phases: a file due for rotation is *sealed* (complete, fsynced, still hidden),
        # the pipeline records the sink's progress together with the file's name and size (journal()), and only
        # then calls publish_sealed(). The open JSON Lines file is journaled at every ack with its fsynced size.
        if self._closing:
            self._finish_seal()
        if self.format == "parquet":
            # Row groups are written as they fill; a short flush interval must not make tiny row groups, so the
            # remainder is written only when the file closes: a Parquet file is readable only once closed.
            if force or self._rotation_due():
                self._encode_row_group()
                if self._writer is not None:
                    try:
                        self._writer.close()  # the footer, into memory
                    except Exception as exc:  # memory only: a writer in an unknown state, nothing in the file acked
                        raise SinkFatal(f"sink={self.name}: closing a Parquet writer failed: {exc}") from exc
                    self._writer = None
                    self._move_staged()
                    self._closing = True
                    self._finish_seal()
            elif self._pending_size >= _BUFFER:
                self._drain()
            if self._writer is None and not self._rows and not self._pending and self._fd is None:
                self._acked = self._written  # everything written is in sealed or published files
            return
        self._drain()
        if self._fd is not None:
            self._sync()
            self._synced_size = self._size
            if force or self._rotation_due():
                self._closing = True
                self._finish_seal()
        self._acked = self._written

    def _sync(self) -> None:
        if self._unsynced and self.config.fsync:
            assert self._fd is not None
            try:
                os.fsync(self._fd)
            except OSError as exc:
                raise _located(exc, self._part) from None
        self._unsynced = False

    def _drain(self) -> None:
        """Write what is buffered to the part file: all of it, or nothing (the file is cut back to its last good
        size and the buffer kept, so a retry writes it again whole: never half a line or half a row group)."""
        if not self._pending:
            return
        self._ensure_file()
        assert self._fd is not None
        data: bytes | memoryview = self._pending[0] if len(self._pending) == 1 else b"".join(self._pending)
        if self.format == "jsonl" and self.compression == "gzip":
            data = isal.igzip.compress(data, 1)  # one member per drain: a crash cuts at a member boundary
        try:
            if self._tail_dirty:
                os.ftruncate(self._fd, self._size)
                self._tail_dirty = False
            os.lseek(self._fd, self._size, os.SEEK_SET)
            _write_all(self._fd, data)
        except OSError as exc:
            self._tail_dirty = True
            try:
                os.ftruncate(self._fd, self._size)  # fails too on a read-only remount: then cut at the retry
                self._tail_dirty = False
            except OSError:
                pass
            raise _located(exc, self._part) from None
        self._pending.clear()
        self._pending_size = 0
        self._size += len(data)
        self._unsynced = True

    # -- files ------------------------------------------------------------------------------------------------
    def _rotation_due(self) -> bool:
        if self._data_since is None:
            return False
        size = self._size + self._pending_size
        return size >= self.config.rotate_bytes or time.time() - self._data_since >= self.config.rotate_interval

    def _ensure_file(self) -> None:
        if self._fd is not None:
            return
        if self._part is None:
            stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
            ext = {"parquet": ".parquet", "jsonl": ".jsonl"}[self.format]
            if self.format == "jsonl" and self.compression == "gzip":
                ext += ".gz"
            self._final = self.dir / f"flows-{stamp}-{secrets.token_hex(4)}{ext}"
            self._part = self.dir / f".{self._final.name}.{self._tag}.part"
        try:
            fd = os.open(self._part, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o644)
        except OSError as exc:
            raise _located(exc, self._part) from None
        try:
            if self.config.fsync:
                _fsync_dir(self.dir)  # the part file's name must survive a power loss along with its data
        except OSError as exc:
            os.close(fd)
            raise _located(exc, self.dir) from None
        self._fd = fd
        self._size = 0
        self._synced_size = 0
        self._tail_dirty = False

    def journal(self) -> list[tuple[str, int]]:
        """(file name, acked size) of every file not yet published: sealed files and the open JSON Lines file."""
        out = [(final.name, size) for _, final, size in self._sealed]
        if self._fd is not None and self.format == "jsonl" and self._final is not None:
            out.append((self._final.name, self._synced_size))
        return out

    def sealed(self) -> list[str]:
        return [final.name for _, final, _ in self._sealed]

    async def publish_sealed(self) -> None:
        await asyncio.to_thread(self._publish_sealed)

    def _publish_sealed(self) -> None:
        while self._sealed:
            part, final, _ = self._sealed[0]
            if part.exists():
                try:
                    os.replace(part, final)
                except OSError as exc:
                    raise _located(exc, part) from None
            if self.config.fsync:
                _fsync_dir(self.dir)  # before it leaves the list: a failed fsync is retried, the rename made durable
            log.info("sink=%s published %s", self.name, final)
            self._sealed.pop(0)

    def _finish_seal(self) -> None:
        """Complete the file: the rest of its bytes, fsync, close. Retried until it succeeds; no new data is taken
        meanwhile (it would belong to the next file)."""
        self._drain()
        if self._fd is None:  # nothing was ever written (an empty Parquet file is not kept)
            self._reset_file()
            return
        self._unsynced = True
        self._sync()
        os.close(self._fd)
        self._fd = None
        assert self._part is not None and self._final is not None
        self._sealed.append((self._part, self._final, self._size))
        self._reset_file()

    def _reset_file(self) -> None:
        self._part = self._final = None
        self._size = self._synced_size = 0
        self._closing = False
        self._data_since = None


register_sink("file", FileSinkConfig, FileSink)
