"""AWS VPC / Transit Gateway flow log parsers: bytes in, FlowBatches out, no I/O (registered in formats.py).

Text (S3 objects, CloudWatch events) is parsed column-wise with pyarrow's CSV reader, one block of a few MiB (and
at most MAX_BATCH_ROWS lines) at a time, so memory stays bounded whatever the object size or its compression
ratio. Every field is read as text and validated column-wise with masks (`_as_int64`: one integer grammar), so one
bad value costs one row, never the block, and a line's outcome never depends on its neighbours. Lines with the
wrong field count are handed to us by pyarrow's invalid-row handler: re-split on whitespace runs (a documented AWS
sample has a double space), and reported as errors if that does not fit either. Lines that cannot be records
whatever their fields (a control character, a lone CR, a byte outside ASCII, longer than MAX_LINE, cut short by a
damaged stream) are errors too.

Header lines (`version account-id ...`, FORMATS.md) may appear anywhere: an S3 object starts with one, concatenated
objects repeat it. A header changes the field order for the lines after it and produces no record; what is a
header is decided by `_header_of` alone (a line of field names), never by what else the block holds.
"""

from __future__ import annotations

import re
from collections.abc import Generator, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any, BinaryIO

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv

from adapters.aws import fields as F
from collector.parsing import MAX_BATCH_ROWS, UTF8_BOM, ParseResult, Truncated
from collector.schema import DICT_STRING, TIME, FlowBatch, ParseError, assemble, constant, parse_addresses

BLOCK_SIZE = 4 << 20
MAX_LINE = 1 << 20  # AWS records are well under 4 KiB; a longer "line" is damage, not data
_KNOWN = frozenset(F.KNOWN_FIELDS)
# Lines that may be headers: they start with a lower-case letter. Searching for "\n<letter>" is ~10x faster than
# a multi-line "^" anchor (the literal newline lets the regex engine skip ahead); the block's first line is
# checked on its own. Each candidate is then judged whole (`header_of`).
_HEADER_IN_BLOCK = re.compile(rb"\n *[a-z]")
_FIELD_NAME = re.compile(r"[a-z][a-z0-9-]*\Z")
_ROW_END = re.compile(rb"\r\n|\r|\n")
_INT64_MAX = 2**63 - 1
_MAX_TIME_MS = 253402300799999  # 9999-12-31T23:59:59.999Z, the last time RFC 3339 can write
_MS_THRESHOLD = 2**31  # ARCHITECTURE.md: AWS start/end above 2^31 are milliseconds
_NL = 10


def header_of(line: str) -> tuple[str, ...] | None:
    """The field order a line declares, or None if it is not a header.

    A header is a line of field names, wherever it is (an S3 object starts with one, concatenated objects repeat
    theirs): every token shaped like a field name (a lower-case letter, then letters, digits and hyphens) and at
    least half of them names this version knows; the others are fields AWS added since, kept in `extra`
    (FORMATS.md). Nothing else is a header: a record always holds a value that is not shaped like a field name (a
    number, an id with digits first, an upper-case keyword), so a record whose first value happens to be a field
    name (`action 123456789012 eni-...`) is a record, and is judged as one."""
    tokens = line.split()
    if not tokens or not all(_FIELD_NAME.match(t) for t in tokens):
        return None
    known = sum(t in _KNOWN for t in tokens)
    return tuple(tokens) if 2 * known >= len(tokens) else None


class _Overlong(Exception):
    """A block holds a line longer than MAX_LINE (its 1-based line number): the block must end before it, so that
    every such line is handled one way (reported, skipped to its end) wherever a block happens to start."""

    def __init__(self, line: int) -> None:
        super().__init__(line)
        self.line = line


@dataclass(slots=True)
class _Segment:
    fields: tuple[str, ...]
    data: bytes
    first_line: int  # 1-based line number of data's first line


@dataclass(slots=True)
class TextState:
    """Where a text parse stands: byte offset in the decompressed stream, lines passed, current field order."""

    offset: int = 0
    line: int = 0
    fields: tuple[str, ...] | None = None
    # Address text -> 16 bytes, shared by the blocks of one object: a few thousand addresses recur all through it.
    addresses: dict[str, bytes | None] = field(default_factory=dict)

    def as_position(self, skipping_line: bool = False) -> dict[str, Any]:
        position: dict[str, Any] = {"offset": self.offset, "line": self.line, "fields": list(self.fields or ())}
        if skipping_line:
            position["skip_line"] = True  # inside a line longer than MAX_LINE: a resumed parse drops it to its end
        return position


def _newlines(data: bytes) -> int:
    # numpy's count is ~3x faster than bytes.count for one byte value
    return int(np.count_nonzero(np.frombuffer(data, np.uint8) == _NL))


def parse_text(
    chunks: Iterable[bytes],
    *,
    unit: str,
    source: str,
    fields: Sequence[str] | None = None,
    resume: dict[str, Any] | None = None,
    block_size: int = BLOCK_SIZE,
    max_rows: int = MAX_BATCH_ROWS,
    complete: bool = True,
    headers: bool = True,
    stream_offset: int = 0,
) -> Iterator[ParseResult]:
    """Parse AWS flow log text (already decompressed) into batches of one block each: about `block_size` bytes of
    input, `max_rows` lines at most (however compressible the input, a batch stays bounded).

    `fields` is the field order for lines before any header (CloudWatch events carry none; default v2). `resume`
    is a position from an earlier ParseResult: that many bytes of the stream are skipped, and the field order in
    force there is restored. `stream_offset` is where `chunks` start in the stream (collector/parsing.py, "Resuming
    by seeking": the caller sought to the resume point); only the bytes between it and the resume point are
    skipped. `headers=False` for text that cannot hold header lines (CloudWatch event messages):
    every line is then a record.

    Lines end at LF (CRLF is accepted); a line with a lone CR, a control character or a byte outside ASCII (a UTF-8
    byte order mark included, except at the very start of the stream, where collector/parsing.py removes it) is an
    error, as is a line longer than MAX_LINE, and a last line cut short by a damaged stream (a `Truncated` chunk).

    Where blocks end depends only on the bytes from the resume point, never on how the stream was chunked: a block
    ends after the first line end at or past `block_size` bytes, after its `max_rows`-th line, or at the next cut
    (below), whichever comes first; a line longer than MAX_LINE that is still open there ends the block where it
    starts, is reported once (its position: MAX_LINE + 1 bytes into it, `skip_line`) and skipped to its end.

    `complete=False` says more may be appended to the stream (a growing object read before it is final): the
    parse then stops at the last line end, and bytes after it (a line still being written) are neither a record
    nor consumed: the last position's offset is that line end, so the next read resumes at the start of the
    incomplete line. Resuming from that position over the grown stream and concatenating gives exactly the records
    of one complete read: the batches of the resumed read are counted from the new resume point (the rule of
    collector/parsing.py holds for each read).
    """
    state = TextState(fields=tuple(fields) if fields else F.V2_FIELDS)
    skip = 0
    discarding = False  # inside a line longer than MAX_LINE: drop bytes until it ends
    truncated = False
    if resume:
        state.offset = int(resume.get("offset", 0))
        skip = state.offset - stream_offset
        if skip < 0:
            raise ValueError(f"the stream starts at {stream_offset}, past the resume point {state.offset}")
        state.line = int(resume.get("line", 0))
        if resume.get("fields"):
            state.fields = tuple(resume["fields"])
        discarding = bool(resume.get("skip_line"))
    # Offsets where earlier reads of a growing unit ended a batch (collector/parsing.py, "Growing objects"): a batch
    # ends at each, and the next is counted from there, as a read resumed there would count it.
    cuts = sorted(int(c) for c in (resume or {}).get("cuts", ()) if int(c) > state.offset)
    pending: list[bytes] = []  # chunks not yet parsed; joined once when a block may be complete
    size = lines = 0  # bytes and line ends pending
    for chunk in chunks:
        if type(chunk) is Truncated:
            truncated = True
            continue
        if skip:
            if len(chunk) <= skip:
                skip -= len(chunk)
                continue
            chunk = chunk[skip:]
            skip = 0
        if discarding:
            end = chunk.find(b"\n")
            if end < 0:
                state.offset += len(chunk)
                continue
            state.offset += end + 1
            chunk = chunk[end + 1 :]
            discarding = False
            yield ParseResult(assemble(0, {}), [], state.as_position(), 0)
        if not chunk:
            continue
        pending.append(chunk)
        size += len(chunk)
        lines += _newlines(chunk)
        if size < block_size and lines < max_rows and not (cuts and state.offset + size >= cuts[0]):
            continue
        data = pending[0] if len(pending) == 1 else b"".join(pending)
        base = state.offset  # stream offset of data[0]
        line0 = state.line  # lines before data[0]
        start = 0  # data[:start] is parsed (a line end, so its line ends are state.line - line0)
        ends: np.ndarray | None = None  # positions of the line ends in data, found when the row bound needs them
        while True:
            seen = state.line - line0
            cut = data.find(b"\n", start + block_size - 1) + 1 if len(data) - start >= block_size else 0
            if lines - seen >= max_rows:
                if ends is None:
                    ends = np.flatnonzero(np.frombuffer(data, np.uint8) == _NL)
                row_cut = int(ends[seen + max_rows - 1]) + 1
                cut = row_cut if cut == 0 else min(cut, row_cut)
            while cuts and cuts[0] <= base + start:
                cuts.pop(0)  # inside a skipped overlong line
            if cuts and cuts[0] - base <= len(data) and (cut == 0 or cuts[0] - base < cut):
                cut = cuts.pop(0) - base
            if cut:
                start = yield from _emit(data, base, start, cut, state, unit, source, headers)
                continue
            line_start = data.rfind(b"\n", start) + 1 or start  # of the line still open
            if len(data) - line_start <= MAX_LINE:
                rest = data[start:] if start else data
                pending, size, lines = ([rest] if rest else []), len(rest), lines - seen
                break
            # A line longer than MAX_LINE with no end in sight: the lines before it, then it is reported once and
            # skipped to its end (the same results as `_emit` gives for one whose end is already here).
            if line_start > start:
                start = yield from _emit(data, base, start, line_start, state, unit, source, headers)
                continue  # (it may have met a long line before this one)
            yield _overlong_result(data, base, line_start, state, unit)
            state.offset = base + len(data)
            pending, size, lines, discarding = [], 0, 0, True
            break
    rest = b"".join(pending)
    partial = b""
    if not complete:
        rest = rest[: rest.rfind(b"\n") + 1]  # a line without its end yet is read when it is complete
    elif truncated and rest and not rest.endswith(b"\n"):
        start = rest.rfind(b"\n") + 1  # the stream broke off inside this line: what came of it is not a record
        rest, partial = rest[:start], rest[start:]
    results: list[ParseResult] = []
    done, base = 0, state.offset
    while done < len(rest):  # held back, not yielded: the last result is the final one, known only at the end
        emitting = _emit(rest, base, done, len(rest), state, unit, source, headers)
        while True:
            try:
                results.append(next(emitting))
            except StopIteration as stop:
                done = stop.value
                break
    if not results or results[-1].position.get("skip_line"):
        results.append(_parse_block(b"", state, unit, source, headers))
    result = results[-1]
    yield from results[:-1]
    if partial:
        state.offset += len(partial)
        state.line += 1
        text = partial[:200].decode("utf-8", "replace")
        result.errors.append(ParseError(unit, state.line, "line cut short by the damaged stream: not a record", text))
        result.lines += 1
        result.position = state.as_position()
    if discarding and not complete:
        result.position = state.as_position(True)  # the stream ended inside an overlong line (complete=False)
    result.final = True
    yield result


def _overlong_result(data: bytes, base: int, line_start: int, state: TextState, unit: str) -> ParseResult:
    """The result for a line longer than MAX_LINE starting at data[line_start]: one error, and a position MAX_LINE + 1
    bytes into the line with `skip_line` (a resumed parse drops the rest of it), wherever its end is."""
    state.line += 1
    state.offset = base + line_start + MAX_LINE + 1
    text = data[line_start : line_start + 200].decode("utf-8", "replace")
    err = ParseError(unit, state.line, f"line longer than {MAX_LINE} bytes: skipped", text)
    return ParseResult(assemble(0, {}), [err], state.as_position(True), 1)


def _emit(
    data: bytes, base: int, lo: int, hi: int, state: TextState, unit: str, source: str, headers: bool
) -> Generator[ParseResult, None, int]:
    """The results of data[lo:hi] (hi a line end, or the end of the stream), `base` being data[0]'s stream offset;
    returns where it stopped. One block, unless it holds a line longer than MAX_LINE: then the block before that
    line, the line's result (`_overlong_result`) and an empty result at its end, and it stops there: the caller
    counts the next block from that line end, as a read resumed there would (every such line is handled the same
    way wherever blocks happen to start)."""
    try:
        yield _parse_block(data[lo:hi] if lo or hi < len(data) else data, state, unit, source, headers)
        return hi
    except _Overlong as exc:
        skip = exc.line - state.line - 1  # whole lines before the long one
        if skip:
            ends = np.flatnonzero(np.frombuffer(data, np.uint8, count=hi - lo, offset=lo) == _NL)
            line_start = lo + int(ends[skip - 1]) + 1
            yield _parse_block(data[lo:line_start], state, unit, source, headers)
        else:
            line_start = lo
    yield _overlong_result(data, base, line_start, state, unit)
    end = data.find(b"\n", line_start, hi)
    if end < 0:
        state.offset = base + hi
        return hi
    state.offset = base + end + 1
    yield ParseResult(assemble(0, {}), [], state.as_position(), 0)
    return end + 1


def _scrub(block: bytes, first_line: int, unit: str) -> tuple[bytes, list[ParseError], int]:
    """Lines that cannot be records whatever their fields, found before the fields are split: those holding a byte
    that is not printable ASCII (a control character, a lone CR, anything above 0x7E: flow logs are ASCII). Each
    is one error with its line and column (a tab too: AWS separates fields by single spaces), and is dropped.

    The common clean block costs `isascii`, a DEL search and two numpy counts (bytes below 0x20 against line
    ends)."""
    a = np.frombuffer(block, np.uint8)
    nl = a == _NL
    line_ends = int(np.count_nonzero(nl))
    if block.isascii() and b"\x7f" not in block and np.count_nonzero(a < 0x20) == line_ends:
        return block, [], line_ends
    outside = (a - np.uint8(0x20)) >= np.uint8(0x5F)  # below 0x20 wraps around above 0xDF
    bad = outside & ~nl
    cr = np.flatnonzero(a == 13)
    crlf = cr[cr + 1 < len(a)]
    bad[crlf[a[crlf + 1] == _NL]] = False
    if not bad.any():
        return block, [], line_ends
    errors: list[ParseError] = []
    pieces: list[bytes] = []
    ends = np.flatnonzero(nl)
    kept = 0  # block[kept:] not yet copied
    for pos in np.flatnonzero(bad).tolist():
        if pos < kept:
            continue  # another bad byte of a line already reported
        k = int(np.searchsorted(ends, pos))  # line ends before pos
        start = int(ends[k - 1]) + 1 if k else 0
        end = int(ends[k]) if k < len(ends) else len(block)
        byte = block[pos]
        if byte == 13:
            what = "a carriage return inside the line (lines end at LF or CRLF)"
        elif block.startswith(UTF8_BOM, pos):
            what = f"a byte order mark (U+FEFF) at column {pos - start + 1}"
        elif byte < 0x20 or byte == 0x7F:
            what = f"control character 0x{byte:02x} at column {pos - start + 1}"
        else:
            what = f"non-ASCII byte 0x{byte:02x} at column {pos - start + 1} (flow logs are ASCII)"
        raw = block[start : min(end, start + 200)].decode("utf-8", "backslashreplace")
        errors.append(ParseError(unit, first_line + k, f"not a record: {what}", raw))
        # The line's bytes are dropped, its line end kept: an empty line, skipped, and every other line keeps its
        # number (the block's offsets are counted before this).
        pieces.append(block[kept:start])
        kept = end
    pieces.append(block[kept:])
    return b"".join(pieces), errors, line_ends


def _parse_block(block: bytes, state: TextState, unit: str, source: str, headers: bool = True) -> ParseResult:
    first_line = state.line + 1
    consumed = len(block)
    open_end = bool(block) and not block.endswith(b"\n")  # a last line without its end counts as a line
    block, errors, line_ends = _scrub(block, first_line, unit)
    nlines = line_ends + open_end
    batches: list[FlowBatch] = []
    fields = state.fields or F.V2_FIELDS
    # The whole block is parsed in one piece unless a header may be in it. With an integer field in the order, a
    # header line fails as a record (a field name where a number belongs, or the wrong field count), so the piece
    # says whether it met one; without, or on the stream's first line, the block is searched for headers.
    careful = headers and (header_of(_first_line(block)) is not None or not any(f in F.INT_FIELDS for f in fields))
    if not careful:
        batch, errs, met_header = _parse_segment(
            _Segment(fields, block, first_line), unit, source, state.addresses, headers
        )
        careful = met_header
        if not careful:
            if batch.num_rows:
                batches.append(batch)
            errors.extend(errs)
    if careful:
        saved = state.fields
        try:
            segments = _split_headers(block, state, first_line)
        except BaseException:
            state.fields = saved
            raise
        for seg in segments:
            try:
                batch, errs, _ = _parse_segment(seg, unit, source, state.addresses, False)
            except _Overlong:
                state.fields = saved
                raise
            if batch.num_rows:
                batches.append(batch)
            errors.extend(errs)
    errors.sort(key=lambda e: e.line or 0)
    state.offset += consumed
    state.line += nlines
    if not batches:
        batch = assemble(0, {})
    elif len(batches) == 1:
        batch = batches[0]
    else:
        batch = pa.concat_batches(batches)
    return ParseResult(batch, errors, state.as_position(), nlines)


def _first_line(block: bytes) -> str:
    end = block.find(b"\n")
    return (block if end < 0 else block[:end]).decode("ascii", "replace")


def _split_headers(block: bytes, state: TextState, first_line: int) -> list[_Segment]:
    """Cut a block at its header lines (`_header_of`); each piece is parsed with the field order in force for it."""
    segments: list[_Segment] = []
    starts = [0] + [m.start() + 1 for m in _HEADER_IN_BLOCK.finditer(block)]
    pos = 0
    line = first_line
    for hstart in starts:
        hend = block.find(b"\n", hstart)
        hend = len(block) if hend < 0 else hend + 1
        declared = header_of(block[hstart:hend].decode("ascii", "replace"))
        if declared is None:
            continue  # a record that starts with a field name: parsed as one
        if hstart > pos:
            segments.append(_Segment(state.fields or F.V2_FIELDS, block[pos:hstart], line))
            line += block.count(b"\n", pos, hstart)
        state.fields = declared
        pos = hend
        line += 1
    if pos < len(block):
        segments.append(_Segment(state.fields or F.V2_FIELDS, block if pos == 0 else block[pos:], line))
    return segments


def _read(data: bytes, names: Sequence[str], invalid: list[Any]) -> pa.Table:
    """Every field as text: integers are validated by one grammar afterwards (`_as_int64`). Arrow's own integer
    parsing would take `0x1BB` for 443 and `-0` for 0, and is no faster than reading text and casting."""

    def on_invalid(row: Any) -> str:
        invalid.append(row)
        return "skip"

    return pacsv.read_csv(
        pa.py_buffer(data),
        read_options=pacsv.ReadOptions(column_names=list(names), use_threads=False, block_size=len(data) + 1),
        parse_options=pacsv.ParseOptions(
            delimiter=" ",
            quote_char=False,
            escape_char=False,
            invalid_row_handler=on_invalid,
        ),
        convert_options=pacsv.ConvertOptions(
            column_types={n: pa.string() for n in names},
            null_values=["-"],
            strings_can_be_null=True,
            check_utf8=False,
        ),
    )


def _unique_names(names: Sequence[str]) -> list[str]:
    """pyarrow refuses duplicate column names; a header naming a field twice keeps the first under its name."""
    seen: dict[str, int] = {}
    out = []
    for n in names:
        k = seen.get(n, 0)
        seen[n] = k + 1
        out.append(n if k == 0 else f"{n}#{k}")
    return out


def _row_checks(cols: dict[str, pa.Array], n: int) -> tuple[np.ndarray | None, np.ndarray | None]:
    """Rows whose line is longer than MAX_LINE (a long line can sit whole inside a block), and rows with an empty
    field (a doubled, leading or trailing space: the line splits into the right count only by accident); None
    where there is none. The common case costs one min/max per column: the sum of the columns' longest values
    bounds every line."""
    if not n:
        return None, None
    lengths = [pc.binary_length(c) for c in cols.values()]
    bounds = [pc.min_max(x) for x in lengths]
    longest = len(cols) - 1 + sum((b["max"].as_py() or 1) for b in bounds)
    over = empty = None
    if longest > MAX_LINE:
        total = np.full(n, len(cols) - 1, dtype=np.int64)
        for x in lengths:
            total += x.fill_null(1).to_numpy(zero_copy_only=False)
        over = total > MAX_LINE
        over = over if over.any() else None
    if any(b["min"].as_py() == 0 for b in bounds):
        empty = np.zeros(n, dtype=bool)
        for x in lengths:
            empty |= pc.equal(x, 0).fill_null(False).to_numpy(zero_copy_only=False)
    return over, empty


def _parse_segment(
    seg: _Segment,
    unit: str,
    source: str,
    addresses: dict[str, bytes | None],
    detect_headers: bool = False,
) -> tuple[FlowBatch, list[ParseError], bool]:
    """Rows and errors of a piece of text in one field order; the flag says a header line was met (with
    `detect_headers`: the caller then splits the block at its headers instead)."""
    names = _unique_names(seg.fields)
    if not seg.data:
        return assemble(0, {}), [], False
    invalid: list[Any] = []
    table = _read(seg.data, names, invalid)
    if detect_headers and any(header_of(row.text) for row in invalid):
        return assemble(0, {}), [], True
    # Lines that did not split into the right number of fields: retry on whitespace runs, else report.
    errors: list[ParseError] = []
    rescued: list[list[str]] = []
    rescued_lines: list[int] = []
    long_lines: list[int] = []  # lines longer than MAX_LINE
    lines = _line_map(seg) if invalid else []
    for row in invalid:
        text = row.text
        tokens = text.split()
        if not tokens:
            continue  # a line of spaces: nothing to deliver, nothing wrong
        line = lines[row.number - 1] if row.number and row.number <= len(lines) else seg.first_line
        if len(text) > MAX_LINE:
            long_lines.append(line)
        elif len(tokens) == len(names):
            rescued.append(tokens)
            rescued_lines.append(line)
        else:
            errors.append(ParseError(unit, line, f"expected {len(names)} fields, found {len(tokens)}", text[:200]))
    skipped = {row.number for row in invalid}
    cols = {n: _one_chunk(table.column(n)) for n in names}
    n = table.num_rows
    over, empty = _row_checks(cols, n)
    if over is not None or empty is not None:
        # Rows the table cannot keep: taken out, as the invalid-row handler takes out wrong field counts.
        lines = lines or _line_map(seg)
        row_lines = _valid_row_lines(lines, skipped)
        numbers = [k for k in range(1, len(lines) + 1) if k not in skipped]
        drop = np.zeros(n, dtype=bool)
        if over is not None:
            long_lines.append(row_lines[int(np.flatnonzero(over)[0])])
        for i in np.flatnonzero(empty if empty is not None else drop).tolist():
            if drop[i]:
                continue
            drop[i] = True
            # Split on whitespace runs, as for a wrong field count: `a  b` is two fields, a line of spaces none.
            tokens = [v for v in _row_text(cols, names, i, MAX_LINE).split(" ") if v]
            if not tokens:
                continue
            if len(tokens) == len(names):
                rescued.append(tokens)
                rescued_lines.append(row_lines[i])
            else:
                reason = f"expected {len(names)} fields, found {len(tokens)}"
                errors.append(ParseError(unit, row_lines[i], reason, " ".join(tokens)[:200]))
        skipped.update(numbers[i] for i in np.flatnonzero(drop).tolist())
        keep = pa.array(~drop)
        cols = {k: v.filter(keep) for k, v in cols.items()}
        n = len(next(iter(cols.values())))
        if rescued:
            order = np.argsort(rescued_lines, kind="stable")
            rescued = [rescued[i] for i in order]
            rescued_lines = [rescued_lines[i] for i in order]
    if long_lines:
        raise _Overlong(min(long_lines))
    batch, bad = normalize(cols, n, source, addresses)
    if bad is not None:
        if detect_headers and any(header_of(_row_text(cols, names, i, MAX_LINE)) for i in np.flatnonzero(bad.mask)):
            return assemble(0, {}), [], True
        line_numbers = _valid_row_lines(lines or _line_map(seg), skipped)
        for i in np.flatnonzero(bad.mask):
            errors.append(ParseError(unit, line_numbers[i], bad.reason_of(i, cols), _row_text(cols, names, i)))
    if rescued:
        rcols = {
            n: pa.array([None if r[j] == "-" else r[j] for r in rescued], pa.string()) for j, n in enumerate(names)
        }
        rbatch, rbad = normalize(rcols, len(rescued), source, addresses)
        if rbad is not None:
            for i in np.flatnonzero(rbad.mask):
                errors.append(ParseError(unit, rescued_lines[i], rbad.reason_of(i, rcols), " ".join(rescued[i])[:200]))
        if rbatch.num_rows and not batch.num_rows:
            batch = rbatch
        elif rbatch.num_rows:
            # Put rescued rows back in input order, so the output never depends on where a block was cut.
            main_lines = np.array(_valid_row_lines(lines, skipped))
            if bad is not None:
                main_lines = main_lines[~bad.mask]
            extra_lines = np.array(rescued_lines)
            if rbad is not None:
                extra_lines = extra_lines[~rbad.mask]
            order = np.argsort(np.concatenate([main_lines, extra_lines]), kind="stable")
            batch = pa.concat_batches([batch, rbatch]).take(pa.array(order))
    errors.sort(key=lambda e: e.line or 0)
    return batch, errors, False


def _one_chunk(col: pa.ChunkedArray) -> pa.Array:
    # read_csv gives one chunk per column for a block; combine_chunks would copy it.
    return col.chunk(0) if col.num_chunks == 1 else col.combine_chunks()


def _line_map(seg: _Segment) -> list[int]:
    """Line number of each CSV row (1-based row k -> element k-1). Error path only.

    pyarrow ends a row at CRLF, LF or a lone CR (`_scrub` removed lone CRs), and skips empty rows."""
    out = []
    line = seg.first_line
    start = 0
    for m in _ROW_END.finditer(seg.data):
        if m.start() > start:
            out.append(line)
        if m.group() != b"\r":
            line += 1
        start = m.end()
    if start < len(seg.data):
        out.append(line)
    return out


def _valid_row_lines(lines: list[int], skipped: set[int]) -> list[int]:
    """Line number of each row of the parsed table: every row minus those the invalid-row handler took."""
    return [line for k, line in enumerate(lines, start=1) if k not in skipped]


def _row_text(cols: dict[str, pa.Array], names: Sequence[str], i: int, limit: int = 200) -> str:
    vals = [cols[n][i].as_py() for n in names]
    return " ".join("-" if v is None else str(v) for v in vals)[:limit]


@dataclass(slots=True)
class BadRows:
    """Rows a normalization rejected, with the first reason found for each."""

    mask: np.ndarray
    reasons: dict[str, np.ndarray]

    def reason_of(self, i: int, cols: dict[str, pa.Array]) -> str:
        for name, m in self.reasons.items():
            if m[i]:
                return f"{name}: invalid value {cols[name][i].as_py()!r}"
        return "invalid record"


def _as_int64(name: str, arr: pa.Array, bad: dict[str, np.ndarray]) -> pa.Array:
    """An integer column from text or any integer type; the row is bad unless the value is a non-negative integer
    that fits int64 and its column. One grammar for text, whatever else the block holds: decimal ASCII digits only
    (no sign, no `0x`, no spaces), leading zeros allowed at any length, then the range check. Checks run as Arrow
    kernels: the common case costs one digit test, one cast and a min/max pass."""
    limit = F.INT_FIELDS.get(name)
    limit = _INT64_MAX if limit is None else limit
    if pa.types.is_string(arr.type) or pa.types.is_large_string(arr.type):
        wrong = pc.invert(pc.ascii_is_decimal(arr)).fill_null(False)
        wrong_np: np.ndarray | None = None
        if pc.any(wrong).as_py():
            arr = pc.if_else(wrong, pa.scalar(None, arr.type), arr)
            wrong_np = wrong.to_numpy(zero_copy_only=False)
        try:
            arr = arr.cast(pa.int64())
        except pa.ArrowInvalid:  # more than 19 significant digits somewhere: beyond int64 (rare, found in Python)
            significant = pc.utf8_length(pc.utf8_ltrim(arr, "0")).fill_null(0).to_numpy(zero_copy_only=False)
            over = significant >= 19
            for i in np.flatnonzero(significant == 19).tolist():  # int() of the significant digits only: CPython
                over[i] = int(arr[i].as_py().lstrip("0")) > _INT64_MAX  # refuses more than 4300 digits
            wrong_np = over if wrong_np is None else wrong_np | over
            arr = pc.if_else(pa.array(over), pa.scalar(None, arr.type), arr).cast(pa.int64())
        if wrong_np is not None and wrong_np.any():
            bad[name] = wrong_np
    elif not pa.types.is_int64(arr.type):
        arr = arr.cast(pa.int64())
    low = F.INT_MIN.get(name, 0)
    if len(arr):
        bounds = pc.min_max(arr)
        lo, hi = bounds["min"].as_py(), bounds["max"].as_py()
        if lo is not None and (lo < low or hi > limit):
            out = pc.or_(pc.less(arr, low), pc.greater(arr, limit)).fill_null(False)
            mask = out.to_numpy(zero_copy_only=False)
            bad[name] = bad[name] | mask if name in bad else mask
            arr = pc.if_else(out, pa.scalar(None, pa.int64()), arr)
    return arr


def _check_enum(name: str, arr: pa.Array, bad: dict[str, np.ndarray]) -> pa.Array:
    """Mark rows whose value is not one of the field's documented words (F.ENUM_VALUES, case as AWS writes it).

    Checked on the dictionary (a handful of words for millions of rows), so the common case costs one dictionary
    encoding, which `_enum` then reuses: the result is the column dictionary-encoded."""
    denc = arr if pa.types.is_dictionary(arr.type) else pc.dictionary_encode(_text(arr))
    known = pc.is_in(denc.dictionary.cast(pa.string()), value_set=pa.array(sorted(F.ENUM_VALUES[name]), pa.string()))
    if not pc.all(known).as_py():
        wrong = pc.invert(known).take(denc.indices).fill_null(False).to_numpy(zero_copy_only=False)
        bad[name] = bad[name] | wrong if name in bad else wrong
    return denc


def _enum(arr: pa.Array) -> pa.Array:
    """Lower-case a small-vocabulary text column through its dictionary (a handful of values, millions of rows)."""
    denc = arr if pa.types.is_dictionary(arr.type) else pc.dictionary_encode(arr)
    lowered = pc.utf8_lower(denc.dictionary.cast(pa.string()))
    return pa.DictionaryArray.from_arrays(denc.indices, lowered)


def _text(arr: pa.Array) -> pa.Array:
    if pa.types.is_dictionary(arr.type):
        arr = arr.cast(pa.string())
    return arr if pa.types.is_string(arr.type) else arr.cast(pa.string())


def _extra(cols: dict[str, pa.Array], names: list[str], n: int) -> pa.Array | None:
    """Every field without a column of its own, as map<string,string>, built column-wise (no per-row Python)."""
    if not names:
        return None
    values = [_text(cols[name]) for name in names]
    k = len(names)
    if not any(v.null_count for v in values):
        # The common case (every field present): k entries per row, interleaved row by row.
        offsets = pa.array(np.arange(0, (n + 1) * k, k, dtype=np.int32))
        if k == 1:
            return pa.MapArray.from_arrays(offsets, pa.repeat(pa.scalar(names[0]), n), values[0])
        order = (np.arange(k, dtype=np.int64)[None, :] * n + np.arange(n, dtype=np.int64)[:, None]).ravel()
        keys = pa.array(names, pa.string()).take(pa.array(np.tile(np.arange(k), n)))
        return pa.MapArray.from_arrays(offsets, keys, pa.concat_arrays(values).take(pa.array(order)))
    valid = np.stack([~v.is_null().to_numpy(zero_copy_only=False) for v in values], axis=1)  # n x k
    offsets = np.zeros(n + 1, dtype=np.int32)
    np.cumsum(valid.sum(axis=1), out=offsets[1:])
    rows, colidx = np.nonzero(valid)  # row-major: entries of each row stay together, in field order
    items = pa.concat_arrays(values).take(pa.array(colidx.astype(np.int64) * n + rows))
    keys = pa.array(names, pa.string()).take(pa.array(colidx))
    return pa.MapArray.from_arrays(pa.array(offsets), keys, items)


def normalize(
    cols: dict[str, pa.Array], n: int, source: str, addresses: dict[str, bytes | None] | None = None
) -> tuple[FlowBatch, BadRows | None]:
    """AWS field columns (text or integers, named as in the header) -> FlowBatch, dropping invalid rows."""
    out: dict[str, pa.Array] = {}
    bad: dict[str, np.ndarray] = {}
    ints: dict[str, pa.Array] = {}
    addr_cols: dict[str, pa.Array] = {}
    extra_names: list[str] = []
    for name, arr in cols.items():
        base = name.split("#", 1)[0]
        if name != base:
            extra_names.append(name)  # a duplicated header field
            continue
        if base in F.INT_FIELDS:
            ints[base] = _as_int64(base, arr, bad)
        if base in F.ENUM_VALUES:
            arr = _check_enum(base, arr, bad)
        if base in F.STRING_COLUMNS:
            out[F.STRING_COLUMNS[base]] = _text(arr)
        elif base in F.ADDRESS_COLUMNS:
            addr_cols[base] = _text(arr)
        elif base in F.NUMBER_COLUMNS:
            out[F.NUMBER_COLUMNS[base]] = ints[base]
        elif base in F.ENUM_COLUMNS:
            out[F.ENUM_COLUMNS[base]] = _enum(arr)
        elif base in F.TIME_FIELDS:
            v = ints[base]
            is_ms = pc.greater(v, _MS_THRESHOLD)
            # Multiply only the values that are seconds (<= 2^31): a huge millisecond value must not overflow.
            ms = pc.if_else(is_ms, v, pc.multiply(pc.if_else(is_ms, 0, v), 1000))
            if pc.any(pc.greater(ms, _MAX_TIME_MS)).as_py():  # beyond year 9999: not a time
                late = pc.greater(ms, _MAX_TIME_MS).fill_null(False)
                bad[base] = (
                    bad[base] | late.to_numpy(zero_copy_only=False)
                    if base in bad
                    else late.to_numpy(zero_copy_only=False)
                )
                ms = pc.if_else(late, pa.scalar(None, pa.int64()), ms)
            out[F.TIME_FIELDS[base]] = ms.cast(TIME)
        else:
            extra_names.append(name)
    if addr_cols:
        # All address columns in one conversion: src, dst and pkt-* share most of their values.
        joined = pa.concat_arrays(list(addr_cols.values())) if len(addr_cols) > 1 else next(iter(addr_cols.values()))
        packed, wrong_all = parse_addresses(joined, addresses)
        for k, base in enumerate(addr_cols):
            out[F.ADDRESS_COLUMNS[base]] = packed.slice(k * n, n)
            wrong = wrong_all[k * n : (k + 1) * n]
            if wrong.any():
                bad[base] = wrong
    extra = _extra({k: cols[k] for k in extra_names}, extra_names, n)  # as written (`02` stays `02`)
    if extra is not None:
        out["extra"] = extra
    out["provider"] = constant("aws", n, DICT_STRING)
    out["source"] = constant(source, n, DICT_STRING)
    out["sampling_rate"] = constant(1, n, pa.uint32())
    batch = assemble(n, out)
    if not bad:
        return batch, None
    mask = np.zeros(n, dtype=bool)
    for m in bad.values():
        mask |= m
    return batch.filter(pa.array(~mask)), BadRows(mask, bad)


def parse_parquet(
    file: BinaryIO | str,
    *,
    unit: str,
    source: str,
    resume: dict[str, Any] | None = None,
    batch_rows: int = 65536,
) -> Iterator[ParseResult]:
    """AWS Parquet flow logs (columns named like the text fields, `-` written as `_`), a bounded batch at a time.

    The position is the number of rows consumed; a resumed parse skips whole row groups before that, then the
    rest of a partly consumed one. Batches never span row groups (a group of 100,000 rows is read as 65,536 +
    34,464), which keeps their boundaries the same on every read.

    Column types are checked against the documented ones (FORMATS.md: integer fields INT32/INT64, the rest STRING),
    because a Parquet reader checks nothing and any writer can have rewritten an object (`_parquet_columns`):
    - an integer field takes any integer type, range-checked per value as on the text path; and two types whose
      values can be checked one by one, so a bad value costs its row, not its batch: floats (a whole number is
      that number; 80.5, NaN or infinity rejects its row; pandas writes an integer column with nulls as float64)
      and strings (the text grammar: decimal digits only).
    - a string field takes strings, and binary (Parquet BYTE_ARRAY without the UTF8 annotation, as older writers
      store strings). A value that is not valid UTF-8 rejects its row (`_utf8`), in any column: a bad byte costs
      its row, never a traceback. Enumerated fields are then checked against their documented words, in
      `normalize`, as for text.
    - a column of a type that can never hold its field (an integer field of type bool, binary, null, timestamp,
      struct, list...; a string field of a number type, such as an int64 `action`, which read as text would be
      "1") is refused: one error naming the column, its type and the rows, and those rows are rejected. We do not
      deliver them with the field null: null is what `-` means ("not applicable"), so a value the object holds
      would turn, silently, into a claim that there was none; the text path rejects a line whose port is not an
      integer, and a refused column is that fault in every row. The rows are counted as errors, not lost unsaid.
    - a column that is no known field goes to `extra` as text: any scalar type can be written as text; a nested
      one cannot, and is left out with one error, its rows kept (nothing documented is missing from them).
    """
    import pyarrow.parquet as pq

    # Only Arrow's own errors mean a damaged object. An exception of the file object (a disk or network failure)
    # propagates: the unit fails and is read again later, instead of being finished as if it were empty.
    # pre_buffer=False: one column chunk in memory at a time; pre-buffering would read every chunk of the requested
    # row groups in one go (the whole object).
    try:
        pf = pq.ParquetFile(file, pre_buffer=False)
        written = pf.schema_arrow.names
    except pa.ArrowException as exc:
        yield ParseResult(assemble(0, {}), [ParseError(unit, None, f"unreadable Parquet: {exc}")], {}, 0, final=True)
        return
    # A field named twice keeps the first column under its name; the others go to extra (as on the text path).
    names = _unique_names([n.replace("_", "-") for n in written])
    addresses: dict[str, bytes | None] = {}
    done = int(resume.get("rows", 0)) if resume else 0
    groups = []
    skip = done
    for i in range(pf.num_row_groups):
        rows = pf.metadata.row_group(i).num_rows
        if not groups and skip >= rows:
            skip -= rows  # whole row groups before the resume point are not read at all
            continue
        groups.append(i)
    consumed = done - skip
    problem: list[ParseError] = []
    # One row group at a time, so batches are cut at (group start + k * batch_rows) whatever the resume point: a
    # read across groups would count its cuts from the first group read, and a resumed read would cut elsewhere
    # than the first one did (collector/parsing.py: boundaries depend only on unit, version and resume point).
    batches = (rb for g in groups for rb in pf.iter_batches(batch_size=batch_rows, row_groups=[g], use_threads=False))
    while True:
        try:
            rb = next(batches, None)
        except pa.ArrowException as exc:  # a damaged row group: report it, keep what came before
            problem.append(ParseError(unit, consumed + 1, f"unreadable Parquet data from row {consumed + 1}: {exc}"))
            break
        if rb is None:
            break
        if skip:
            take = min(skip, rb.num_rows)
            rb = rb.slice(take)
            skip -= take
            consumed += take
            if rb.num_rows == 0:
                continue
        first_row = consumed
        consumed += rb.num_rows
        yield _parquet_batch(rb, written, names, first_row, unit, source, addresses)
    # An explicit empty, final result tells the adapter the unit is complete (also for a file of no rows).
    yield ParseResult(assemble(0, {}), problem, {"rows": consumed}, 0, final=True)


def _parquet_batch(
    rb: pa.RecordBatch,
    written: Sequence[str],
    names: Sequence[str],
    first_row: int,
    unit: str,
    source: str,
    addresses: dict[str, bytes | None],
) -> ParseResult:
    """One record batch of a Parquet object: columns checked, then normalized; errors carry 1-based row numbers."""
    n = rb.num_rows
    end = first_row + n
    position = {"rows": end}
    checked = _parquet_columns(rb, written, names)
    errors = [ParseError(unit, first_row + 1, f"rows {first_row + 1}-{end}: {m}") for m in checked.problems]
    if checked.refused:
        return ParseResult(assemble(0, {}), errors, position, n)
    cols, shown = checked.cols, checked.shown
    rows = np.arange(n)  # row of the batch behind each row handed to normalize
    if checked.wrong:
        pre = BadRows(np.zeros(n, dtype=bool), checked.wrong)
        for m in checked.wrong.values():
            pre.mask |= m
        for i in np.flatnonzero(pre.mask):
            errors.append(ParseError(unit, first_row + int(i) + 1, "row " + pre.reason_of(i, shown)))
        rows = np.flatnonzero(~pre.mask)
        keep = pa.array(rows)
        cols = {k: v.take(keep) for k, v in cols.items()}
        shown = {k: v.take(keep) for k, v in shown.items()}
    try:
        batch, bad = normalize(cols, len(rows), source, addresses)
    except (pa.ArrowException, ValueError, TypeError) as exc:  # a safety net: the column checks should catch all
        err = ParseError(unit, first_row + 1, f"rows {first_row + 1}-{end}: unsupported column data: {exc}")
        return ParseResult(assemble(0, {}), [*errors, err], position, n)
    if bad is not None:
        for i in np.flatnonzero(bad.mask):
            errors.append(ParseError(unit, first_row + int(rows[i]) + 1, "row " + bad.reason_of(i, shown)))
    errors.sort(key=lambda e: e.line or 0)
    return ParseResult(batch, errors, position, n)


@dataclass(slots=True)
class _ParquetColumns:
    """A batch's columns as `normalize` takes them (integer fields int64 or text, the rest valid UTF-8 text)."""

    cols: dict[str, pa.Array] = field(default_factory=dict)
    shown: dict[str, pa.Array] = field(default_factory=dict)  # values for error messages: as written where readable
    wrong: dict[str, np.ndarray] = field(default_factory=dict)  # field -> rows whose value its type cannot hold
    problems: list[str] = field(default_factory=list)  # column-level errors
    refused: bool = False  # a known field's column is of a type that cannot hold it: every row is rejected


def _parquet_columns(rb: pa.RecordBatch, written: Sequence[str], names: Sequence[str]) -> _ParquetColumns:
    """Check each column's type against its field's documented one; see parse_parquet for the rules and why."""
    out = _ParquetColumns()
    for i, name in enumerate(names):
        arr = rb.column(i)
        if pa.types.is_dictionary(arr.type):
            arr = arr.dictionary_decode()
        col = f"column {written[i]!r} is {arr.type}"
        if _is_text(arr.type, binary=name not in F.INT_FIELDS):
            # Text of any field; for an integer field, `_as_int64`'s grammar then decides per row (digits only).
            out.cols[name], out.shown[name], wrong = _utf8(arr)
            if wrong is not None:
                out.wrong[name] = wrong
        elif name in F.INT_FIELDS:
            got = _parquet_int(arr)
            if got is None:
                out.problems.append(f"{col}, not an integer (AWS writes int32/int64): rows rejected")
                out.refused = True
                continue
            out.cols[name], wrong = got
            out.shown[name] = arr  # an error shows the value as written (80.5, not the null it became)
            if wrong is not None:
                out.wrong[name] = wrong
        elif name in F.KNOWN_FIELDS:
            out.problems.append(f"{col}, not a string (AWS writes string): rows rejected")
            out.refused = True
        else:  # no known field: kept in extra as text if it can be written as text
            try:
                out.cols[name] = out.shown[name] = arr.cast(pa.string())
            except (pa.ArrowNotImplementedError, pa.ArrowInvalid):
                out.problems.append(f"{col}, which cannot be kept as text in extra: left out")
    return out


def _is_text(t: pa.DataType, *, binary: bool) -> bool:
    if pa.types.is_string(t) or pa.types.is_large_string(t) or pa.types.is_string_view(t):
        return True
    return binary and (pa.types.is_binary(t) or pa.types.is_large_binary(t) or pa.types.is_binary_view(t))


def _parquet_int(arr: pa.Array) -> tuple[pa.Array, np.ndarray | None] | None:
    """An integer field's column as int64 (or as text for `_as_int64`'s grammar) and the rows whose value is no
    integer or beyond int64; None if the column's type can never hold an integer."""
    t = arr.type
    if pa.types.is_integer(t):
        if pa.types.is_uint64(t):
            over = pc.greater(arr, pa.scalar(_INT64_MAX, t)).fill_null(False)
            if pc.any(over).as_py():
                kept = pc.if_else(over, pa.scalar(None, t), arr).cast(pa.int64())
                return kept, over.to_numpy(zero_copy_only=False)
        return arr.cast(pa.int64()), None  # any other integer type fits int64; _as_int64 checks the field's range
    if pa.types.is_floating(t):
        v = arr.cast(pa.float64()).to_numpy(zero_copy_only=False)
        present = arr.is_valid().to_numpy(zero_copy_only=False)
        with np.errstate(invalid="ignore"):
            whole = np.isfinite(v) & (np.floor(v) == v) & (np.abs(v) < 2.0**63)
        wrong = present & ~whole
        ints = pa.array(np.where(whole, v, 0).astype(np.int64), mask=~(present & whole))
        return ints, (wrong if wrong.any() else None)
    if pa.types.is_decimal(t):  # rare: checked in Python
        vals: list[int | None] = []
        wrong = np.zeros(len(arr), dtype=bool)
        for k, d in enumerate(arr.to_pylist()):
            if d is not None and d == d.to_integral_value() and -(2**63) <= d <= _INT64_MAX:
                vals.append(int(d))
            else:
                vals.append(None)
                wrong[k] = d is not None
        return pa.array(vals, pa.int64()), (wrong if wrong.any() else None)
    return None


def _utf8(arr: pa.Array) -> tuple[pa.Array, pa.Array, np.ndarray | None]:
    """A string or binary column as text: (values, values to show in errors, rows that are not valid UTF-8).

    Parquet readers validate nothing: a string column may hold any bytes, and pyarrow raises when such a value is
    turned into Python (an error message, a JSON sink). A value that does not decode is an error of its row, as a
    line with a byte outside ASCII is on the text path: damaged bytes are never delivered, and never repaired into
    something that looks like data (U+FFFD appears only in the error message). The check is one pass over the
    bytes; the per-value work, in Python, runs only for a batch that needs it."""
    large = pa.types.is_large_string(arr.type) or pa.types.is_large_binary(arr.type)
    if pa.types.is_string(arr.type) or pa.types.is_large_string(arr.type):
        raw = arr.view(pa.large_binary() if large else pa.binary())
    else:
        raw = arr.cast(pa.large_binary() if large else pa.binary())
    text_type = pa.large_string() if large else pa.string()
    try:
        text = raw.cast(text_type)
        return text, text, None
    except pa.ArrowInvalid:
        pass
    values: list[str | None] = []
    shown: list[str | None] = []
    wrong = np.zeros(len(raw), dtype=bool)
    for k, b in enumerate(raw.to_pylist()):
        try:
            values.append(None if b is None else b.decode("utf-8"))
        except UnicodeDecodeError:
            values.append(None)
            wrong[k] = True
        shown.append(None if b is None else b.decode("utf-8", "replace"))
    return pa.array(values, text_type), pa.array(shown, text_type), wrong
