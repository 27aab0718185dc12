"""The parsing seam: bytes of a flow log object in, normalized batches out, whatever the provider and container.

Every source that reads objects (a local file, an S3 object, later a Cloud Storage object or an Azure blob) hands
its stream to `open_stream`, which unwraps gzip, recognizes the format from the content (never the name: exports
are named anything) and runs that format's parser. Parsers register here by name with a sniff function
(`register_format`, called by the provider's module, which `collector.registry.FORMATS` names), so adding GCP or
Azure JSON is one registration, and `flowcollector parse --provider auto` finds it.

What a parser is: a pure generator from bytes to `ParseResult`s (no I/O, no clock, no randomness), each result
one batch plus the position to resume after it. The rule every parser keeps, because exactly-once skipping after a
crash and sinks' idempotent insert tokens (`collector.sinks.BatchId`) rely on it:

    Batch boundaries depend only on (unit, version, resume point). Parsing the same bytes from the same position
    yields the same batches, cut at the same places, with the same positions.

So a parser must not cut batches by time, by how the input happened to be chunked by the network, or by memory
pressure: only by the content (a block of N bytes of input, N rows), counted from the resume point. A position
holds `offset` (decompressed bytes consumed, for text and JSON) or `rows` (for columnar files): that number is the
unit's progress, increasing within a unit version.

Growing objects (appended to while they are read: a local file being written, an Azure PT1H.json blob): the parser
option `complete` (default True) is False while more may be appended. A format that supports it (`Format.growing`)
then stops at the end of the last complete record and does not consume what follows (a line still being written):
the last position is there, and the next read, over the grown object, resumes from it. Each read keeps the rule
above from its own resume point: a read that caught up ends its last batch where the complete data ended, and the
next read counts its batches from there. Formats that do not support it, gzip streams (a gzip member is only
whole at its end) and file containers (Parquet's footer is written last) deliver nothing until the object is
complete: one empty result at the resume point.

Where a growing object's batches end depends on how much of it existed at each read. After a crash, the read from
the checkpoint finds more data and would cut elsewhere, and a sink that had acked past the checkpoint would get the
range again inside a longer batch. So `resume` may carry `cuts`: the progress each sink recorded (reads end batches
there); a parser of a growing format ends a batch at each cut and counts the next from there, as a read resumed
there would, so every sink skips exactly what it holds (adapters/units.py passes them).

Resuming by seeking: a resumed read of a plain (not gzip) seekable stream (a local file, an object read with ranged
requests) need not read the `offset` bytes before its resume point only to skip them, which for a large object
means downloading most of it again after each restart. For a stream format that says so (`Format.seeks`), the
format is still recognized from the object's first bytes, then the stream is sought to the resume point and the
parser is given the option `stream_offset`: the decompressed offset its first chunk starts at (it skips
`offset - stream_offset` bytes, none). Decompressed offsets are the raw ones there, less a UTF-8 byte order mark at
the start (removed before the parser sees it). gzip streams cannot be entered in the middle: they are decompressed
from the start and skipped as before, as are non-seekable streams (pipes) and formats that do not opt in.

Sniffing order: formats that recognize a container by its raw magic bytes (Parquet's `PAR1`) first; then, on the
first decompressed bytes, each stream format by its `order` (specific shapes first, the most lenient — AWS text,
whose records are just numbers and words — last).
"""

from __future__ import annotations

import io
import os
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO

from isal import isal_zlib

from collector import registry
from collector.schema import FlowBatch, ParseError, empty_batch

READ_SIZE = 1 << 20
SNIFF_BYTES = 64 << 10  # decompressed bytes a sniff function sees (fewer only if the object is shorter)
HEAD_CAP = 16 << 20  # decompressed bytes read ahead for sniffing at most (leading whitespace included)
GZIP_MAGIC = b"\x1f\x8b"
UTF8_BOM = b"\xef\xbb\xbf"
# Rows of one batch at most, whatever the input: a block of text is cut at this many lines even when it is under
# its byte size (2,000,000 short lines compress into 658 KB). Not a setting: batch boundaries must not change
# between runs (see "Batch boundaries" above).
MAX_BATCH_ROWS = 65536
PROVIDER_NAMES = {"aws": "AWS", "gcp": "GCP", "azure": "Azure"}


@dataclass(slots=True)
class ParseResult:
    """One batch of a unit, with where to resume after it (JSON-able, stored in the checkpoint).

    `provider` is set by `open_stream` from the format that produced it (error records name it)."""

    batch: FlowBatch
    errors: list[ParseError]
    position: dict[str, Any]
    lines: int = 0
    final: bool = False
    provider: str = ""


@dataclass(frozen=True, slots=True)
class Format:
    """A registered input format.

    - `sniff(head, options)`: whether `head` (the first decompressed bytes, up to SNIFF_BYTES; for `container`
      "file", the first raw bytes) is this format. `options` are the source's parser options (`aws_fields`).
    - `parse`: for "stream" formats `parse(chunks, unit=, source=, options=, resume=)` over decompressed chunks;
      for "file" formats `parse(fh, unit=, source=, options=, resume=)` with a seekable binary file.
    - `default`: the format of its provider used when `provider:` is given explicitly and nothing sniffs.
    - `growing`: the parser honours the option `complete=False` (module docstring, "Growing objects").
    - `seeks`: the parser honours the option `stream_offset` (module docstring, "Resuming by seeking"): its
      position's `offset` counts decompressed bytes of the whole stream, and its chunks may start past 0."""

    name: str
    provider: str
    sniff: Callable[[bytes, Mapping[str, Any]], bool]
    parse: Callable[..., Iterator[ParseResult]]
    container: str = "stream"
    order: int = 100
    default: bool = False
    growing: bool = False
    seeks: bool = False


FORMATS: dict[str, Format] = {}
# Parser options a command line may give as text (`--aws-format`): name -> converter (ValueError on bad text).
OPTIONS: dict[str, Callable[[str], Any]] = {}


def register_format(fmt: Format) -> None:
    FORMATS[fmt.name] = fmt


def register_option(name: str, convert: Callable[[str], Any]) -> None:
    OPTIONS[name] = convert


def convert_option(name: str, text: str) -> Any:
    """A parser option from command-line text; ValueError says what is wrong with it."""
    registry.load_formats()
    return OPTIONS[name](text)


def formats(provider: str = "auto") -> list[Format]:
    registry.load_formats(None if provider == "auto" else provider)
    chosen = [f for f in FORMATS.values() if provider == "auto" or f.provider == provider]
    return sorted(chosen, key=lambda f: f.order)


# --- decompression ----------------------------------------------------------------------------------------------


class Truncated(bytes):
    """The empty chunk a damaged stream ends with: what follows the last complete record before it is missing. A
    parser that cares (AWS text: a line cut short is an error, not a record) checks `type(chunk) is Truncated`; to
    any other it is an empty chunk."""


TRUNCATED = Truncated()
_FEXTRA, _FNAME, _FCOMMENT, _FHCRC = 4, 8, 16, 2
GZIP_HEADER_CAP = 1 << 20  # a member header's name, comment and extra field are short; a longer one is not gzip


class _GzipDamage(Exception):
    def __init__(self, offset: int, what: str, truncated: bool = False) -> None:
        super().__init__(f"{'truncated' if truncated else 'corrupt'} gzip stream at compressed byte {offset}: {what}")
        self.truncated = truncated


def _gzip_header_length(buf: bytes) -> int:
    """Length of the RFC 1952 member header `buf` starts with; 0 if `buf` does not hold all of it yet; ValueError
    if it is not a gzip member header."""
    if len(buf) < 10:
        if GZIP_MAGIC[: len(buf)] != buf[:2] or (len(buf) > 2 and buf[2] != 8):
            raise ValueError("not a gzip member")
        return 0
    if buf[0:2] != GZIP_MAGIC or buf[2] != 8:
        raise ValueError("not a gzip member")
    flags, pos = buf[3], 10
    if flags & _FEXTRA:
        if len(buf) < pos + 2:
            return 0
        pos += 2 + int.from_bytes(buf[pos : pos + 2], "little")
    for flag in (_FNAME, _FCOMMENT):
        if flags & flag:
            end = buf.find(b"\0", pos)
            if end < 0:
                return 0
            pos = end + 1
    if flags & _FHCRC:
        pos += 2
    return pos if len(buf) >= pos else 0


class _Compressed:
    """Compressed input not yet used, and its offset in the object (for error messages)."""

    def __init__(self, fh: BinaryIO, counter: list[int]) -> None:
        self.fh, self.counter = fh, counter
        self.buf, self.offset, self.eof = b"", 0, False

    def more(self) -> bool:
        if self.eof:
            return False
        raw = self.fh.read(READ_SIZE)
        if not raw:
            self.eof = True
            return False
        self.counter[0] += len(raw)
        self.buf = self.buf + raw if self.buf else raw
        return True

    def fill(self, n: int) -> bool:
        while len(self.buf) < n:
            if not self.more():
                return False
        return True

    def skip(self, n: int) -> None:
        self.buf, self.offset = self.buf[n:], self.offset + n


def _gunzip(fh: BinaryIO, counter: list[int], problems: list[ParseError], unit: str) -> Iterator[bytes]:
    """Decompress a gzip stream of one or more members (concatenated objects are valid gzip), READ_SIZE bytes of
    output at most per chunk whatever the compression ratio, so a gzip bomb cannot inflate one chunk.

    The members are taken apart here (RFC 1952 header, raw deflate, CRC-32 and ISIZE trailer) rather than by
    zlib's gzip mode, which raises on a bad trailer and so loses the output of its last call: everything that
    decompressed is handed on before a problem is reported. A member whose trailer does not match its data is
    delivered and reported, as zcat does: such damage is usually in the trailer's 8 bytes, and every line is still
    validated by the parser. A truncated or corrupt stream ends with TRUNCATED. Zero bytes after the last member
    (padding some writers add; gzip ignores them too) are not an error."""
    raw = _Compressed(fh, counter)
    try:
        while raw.fill(1):
            member = raw.offset
            if member and raw.buf[:1] == b"\0":
                if raw.buf.strip(b"\0"):
                    raise _GzipDamage(raw.offset, "not a gzip member (garbage after zero padding?)")
                raw.skip(len(raw.buf))  # zero padding so far: read on
                continue
            while True:
                try:
                    head = _gzip_header_length(raw.buf)
                except ValueError:
                    raise _GzipDamage(member, "not a gzip member (garbage after the last member?)") from None
                if head or len(raw.buf) > GZIP_HEADER_CAP:
                    break
                if not raw.more():
                    raise _GzipDamage(member, "the stream ends inside a member header", truncated=True)
            if not head:
                raise _GzipDamage(member, "member header too long")
            raw.skip(head)
            d = isal_zlib.decompressobj(wbits=-15)
            crc = size = 0
            while not d.eof:
                if not raw.buf and not raw.more():
                    if tail := d.flush():  # what the decompressor still holds of the data it was given
                        yield tail
                    raise _GzipDamage(raw.offset, "the stream ends inside compressed data", truncated=True)
                data = raw.buf
                try:
                    out = d.decompress(data, READ_SIZE)
                except isal_zlib.error as exc:
                    raise _GzipDamage(raw.offset, f"undecodable compressed data ({exc})") from None
                rest = d.unused_data if d.eof else d.unconsumed_tail
                raw.buf, raw.offset = rest, raw.offset + len(data) - len(rest)
                if out:
                    crc = isal_zlib.crc32(out, crc)
                    size += len(out)
                    yield out
            if not raw.fill(8):
                raise _GzipDamage(raw.offset, "the stream ends inside a member trailer", truncated=True)
            want_crc, want_size = int.from_bytes(raw.buf[0:4], "little"), int.from_bytes(raw.buf[4:8], "little")
            if (want_crc, want_size) != (crc, size & 0xFFFFFFFF):
                what = "CRC-32" if want_crc != crc else "length (ISIZE)"
                problems.append(
                    ParseError(
                        unit,
                        None,
                        f"gzip member at compressed byte {member}: its {what} does not match its data (a damaged "
                        f"trailer or damaged data); its {size} decompressed bytes were read, each line validated",
                    )
                )
            raw.skip(8)
    except _GzipDamage as exc:
        problems.append(ParseError(unit, None, str(exc)))
        yield TRUNCATED


def _chunks(fh: BinaryIO, gz: bool, unit: str, problems: list[ParseError], counter: list[int]) -> Iterator[bytes]:
    """Decompressed chunks of a file, a UTF-8 byte order mark at its very start removed (some editors and Windows
    tools write one; anywhere else it is data, and a line holding one is an error). A damaged gzip stream is
    reported in `problems` and ends with TRUNCATED, so the parser still delivers every complete line before it."""
    chunks = _gunzip(fh, counter, problems, unit) if gz else _plain(fh, counter)
    for chunk in chunks:
        if chunk:
            if chunk.startswith(UTF8_BOM):
                chunk = chunk[len(UTF8_BOM) :]
            yield chunk
            break
        yield chunk
    yield from chunks


def _plain(fh: BinaryIO, counter: list[int]) -> Iterator[bytes]:
    while chunk := fh.read(READ_SIZE):
        counter[0] += len(chunk)
        yield chunk


@dataclass(slots=True)
class _Head:
    """The first decompressed chunks, read ahead for sniffing and handed on before the rest.

    A sniff function sees SNIFF_BYTES from the first byte that is not whitespace: a file starting with a run of
    blank lines is judged by what follows them. The read-ahead is capped (HEAD_CAP) so that a file of nothing but
    whitespace cannot make it unbounded."""

    chunks: list[bytes] = field(default_factory=list)

    def take(self, rest: Iterator[bytes]) -> bytes:
        size = blank = 0
        for chunk in rest:
            self.chunks.append(chunk)
            size += len(chunk)
            if blank == size - len(chunk):  # everything so far was whitespace: count this chunk's leading run
                blank += len(chunk) - len(chunk.lstrip())
            if size - blank >= SNIFF_BYTES or size >= HEAD_CAP:
                break
        return b"".join(self.chunks)[blank : blank + SNIFF_BYTES]

    def replay(self, rest: Iterator[bytes]) -> Iterator[bytes]:
        chunks, self.chunks = self.chunks, []
        yield from chunks
        yield from rest


# --- opening ----------------------------------------------------------------------------------------------------


def open_unit(
    path: Path,
    *,
    unit: str,
    source: str,
    provider: str = "auto",
    options: Mapping[str, Any] | None = None,
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
            options=options,
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
    options: Mapping[str, Any] | None = None,
    resume: dict[str, Any] | None = None,
    bytes_read: list[int] | None = None,
    size: int | None = None,
) -> Iterator[ParseResult]:
    """Parse a flow log object from a buffered binary stream (a file, an S3 object): the format is detected from its
    first bytes (`provider` "auto") or chosen among one provider's formats. File formats (Parquet) need a seekable
    stream; `size` is what such an object counts as read. `options` go to the parser (`aws_fields`, ...;
    `complete=False` for an object that may still grow, see "Growing objects" above)."""
    opts: Mapping[str, Any] = options or {}
    complete = bool(opts.get("complete", True))
    counter = bytes_read if bytes_read is not None else [0]
    candidates = formats(provider)
    magic = fh.peek(4)[:4]  # peek, not seek: pipes and /dev/stdin work too
    for fmt in candidates:
        if fmt.container == "file" and fmt.sniff(magic, opts):
            if not complete:
                yield _held_back(resume)
                return
            counter[0] = size or 0
            stream = fh if fh.seekable() else io.BytesIO(fh.read())
            for result in fmt.parse(stream, unit=unit, source=source, options=opts, resume=resume):
                result.provider = fmt.provider
                yield result
            return
    if not complete and magic[:2] == GZIP_MAGIC:
        yield _held_back(resume)
        return
    problems: list[ParseError] = []
    rest = _chunks(fh, magic[:2] == GZIP_MAGIC, unit, problems, counter)
    head_buf = _Head()
    head = head_buf.take(rest)
    stream_formats = [f for f in candidates if f.container == "stream"]
    chosen = next((f for f in stream_formats if f.sniff(head, opts)), None)
    if chosen is None and provider != "auto":
        chosen = next((f for f in stream_formats if f.default), None)
    if chosen is None:
        if not complete and len(head) < SNIFF_BYTES:
            yield _held_back(resume)  # perhaps too little of it yet to tell (an empty file, half a first line)
            return
        unrecognized = _unrecognized(unit, provider, head)
        unrecognized.errors.extend(problems)  # a damaged gzip is reported whatever it held (found by the fuzz)
        yield unrecognized
        return
    if not complete and not chosen.growing:
        yield _held_back(resume)
        return
    offset = int(resume.get("offset", 0)) if resume else 0
    if offset > 0 and chosen.seeks and magic[:2] != GZIP_MAGIC and fh.seekable():
        # "Resuming by seeking" (module docstring): the head was only for recognizing the format.
        close = getattr(rest, "close", None)
        if close is not None:
            close()
        head_buf.chunks = []
        fh.seek(offset + (len(UTF8_BOM) if magic[:3] == UTF8_BOM else 0))
        rest = _plain(fh, counter)
        opts = {**opts, "stream_offset": offset}
    for result in chosen.parse(head_buf.replay(rest), unit=unit, source=source, options=opts, resume=resume):
        result.provider = chosen.provider
        if result.final and problems:
            result.errors.extend(problems)
        yield result


def appendable(magic: bytes) -> bool:
    """Whether an object whose first raw bytes are `magic` (at least 4) can be read while it is appended to: a plain
    stream, neither gzip nor a file container (Parquet)."""
    if magic[:2] == GZIP_MAGIC:
        return False
    return not any(f.container == "file" and f.sniff(magic[:4], {}) for f in formats())


def _held_back(resume: dict[str, Any] | None) -> ParseResult:
    """Nothing of an incomplete object this format cannot read in part: the position stays at the resume point."""
    return ParseResult(empty_batch(), [], {k: v for k, v in (resume or {}).items() if k != "cuts"}, 0, True)


def _unrecognized(unit: str, provider: str, head: bytes) -> ParseResult:
    """Nothing claims the object: one error for it, instead of hundreds of malformed lines (a README beside the
    logs, a provider whose parser has not landed)."""
    if provider != "auto":
        reason = f"{PROVIDER_NAMES.get(provider, provider)} flow logs are not supported yet"
        return ParseResult(empty_batch(), [ParseError(unit, None, reason)], {}, 0, True, provider)
    if head.lstrip()[:1] in (b"{", b"["):
        reason = "JSON that is not a known flow log (GCP LogEntry lines, CloudWatch exports); Azure: not supported yet"
        return ParseResult(empty_batch(), [ParseError(unit, None, reason)], {}, 0, True)
    reason = "not a recognized flow log format (no AWS header line, not a v2 record); skipped"
    return ParseResult(empty_batch(), [ParseError(unit, 1, reason)], {}, 0, True)
