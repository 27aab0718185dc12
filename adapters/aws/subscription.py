"""VPC flow log events in two JSON wrappers around CloudWatch Logs events, as pure parsers: byte chunks in (already
decompressed), batches out, no I/O.

1. Subscription payloads (`parse_subscription`). A CloudWatch Logs subscription filter sends the events of a log
   group in batches, each one gzip-compressed JSON document (CloudWatch Logs User Guide, "Validate the flow of log
   events"): `{"owner", "logGroup", "logStream", "subscriptionFilters", "messageType": "DATA_MESSAGE", "logEvents":
   [{"id", "timestamp", "message"}]}`. Kinesis Data Firehose without a transformation writes the records to S3 as
   they came: an object is gzip members one after another, and once the caller has decompressed them all,
   documents one after another (`}{`, whitespace allowed between). `CONTROL_MESSAGE` documents are CloudWatch
   checking that the destination is reachable: skipped, not an error.
2. Message lines (`parse_message_lines`): one JSON object per line with a `message` key, other keys ignored, as log
   shippers export CloudWatch events (also `aws logs filter-log-events ... | jq -c '.events[]'`).

Each message is one flow log record and goes through the AWS text parser as a header-less line in `fields` order,
cleaned the way the aws_cloudwatch source cleans its events (line breaks to spaces; an empty message or a header
line is an error): the rows are exactly those the text parser makes of that line. Nothing of the wrapper becomes a
column: the record carries its own account and interface, and owner / logGroup / logStream would be columns only
these two inputs have.

Batches and positions. A batch holds about `block_size` of weight: the characters of the messages it parses plus
the bytes of what it skipped (CONTROL_MESSAGE and damaged documents, blank or bad lines), so a run of skipped input
also makes progress. Where a batch ends depends only on the input bytes and the resume point, never on how the
input was chunked: exactly-once skipping and ClickHouse insert tokens rely on it. Each position lets a later call
with `resume=position` go on exactly after that batch; `offset` grows batch by batch (the daemon's progress counter).
- Subscription payloads: `{"offset", "document", "event"}` between documents (`offset` = bytes consumed, up to the
  end of the last document; `document` = documents passed). A batch may end inside a document (documents run to
  MBs; batches stay bounded): then `event` = events of it consumed and `start` = its byte offset, where a resumed
  parse reads it again and skips those events; `offset` is then `start + event`, a counter that stays below the
  document's end (every event takes more than a byte), so that it still grows batch by batch.
- Message lines: `{"offset", "line"}`, bytes and lines consumed; batches end at line ends.

Errors never raise. A subscription payload's errors name the document (1-based in the stream) and the event
(1-based in its document, with its id) in the reason, `line` None: `document 3, event 7 (id 3195...): expected 14
fields, found 3`. Message lines' errors carry the line number in `line`. Damaged documents are reported whole and
reading resumes at the next document start; a truncated final document is an error; the rest is still parsed.
"""

from __future__ import annotations

import ipaddress
import re
from bisect import bisect_left, bisect_right
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from itertools import accumulate, islice
from typing import Any

import orjson
import pyarrow as pa

from adapters.aws import fields as F
from adapters.aws import parse as text_parser
from collector.parsing import ParseResult
from collector.schema import ParseError, empty_batch

BLOCK_SIZE = 4 << 20
# A Firehose record is at most 1,000 KiB, and CloudWatch Logs sends each document gzip-compressed in one: a few MB
# decompressed. A "document" much longer is damage, and holding it (plus its parsed events, several times its size)
# would be the one unbounded thing here.
MAX_DOCUMENT = 16 << 20
MAX_LINE = text_parser.MAX_LINE
# A `}` followed by `{` inside a JSON string looks like a document boundary; each one costs a parse of the document
# so far. After this many in one document the end is found by a (slower, linear) scan of its structure instead.
MAX_FALSE_ENDS = 16
READ_AHEAD = 64 << 10  # small chunks are joined to this before the buffer is searched again (no quadratic joins)
RAW_CHARS = 200  # how much of a bad input ParseError.raw quotes
SNIFF_LINES = 5

_WS = re.compile(rb"[ \t\r\n]*")
_BOUNDARY = re.compile(rb"\}[ \t\r\n]*\{")
# A `}` that may end a document: followed by whitespace and a `{`, or by the end of what is searched (looked at again
# with all that has been read: the end of a search is not always the end of the stream).
_CANDIDATE = re.compile(rb"\}(?=[ \t\r\n]*(?:\{|\Z))")
# JSON structure for the fallback scan and the sniffer: a whole string, a bracket, or a lone quote (a string the
# buffer cuts off). DOTALL: `\\.` must also step over an escaped line break inside a (damaged) string.
_TOKENS = re.compile(rb'"(?:[^"\\]++|\\.)*+"|[{}\[\]]|"', re.DOTALL)
_KEY_TOKENS = re.compile(rb'"(?:[^"\\]++|\\.)*+"|[{}\[\]:,]|"', re.DOTALL)
_BOM = b"\xef\xbb\xbf"
_OPEN, _QUOTE = 0x7B, 0x22

SUBSCRIPTION_KEYS = frozenset(
    {"messageType", "owner", "logGroup", "logStream", "subscriptionFilters", "logEvents", "policyLevel"}
)
_SUBSCRIPTION_TYPES = frozenset({"DATA_MESSAGE", "CONTROL_MESSAGE"})
# Top-level keys of the other JSON inputs (GCP LogEntry, Azure flow log documents, subscription payloads): a line
# holding one is not a bare exported event, whatever else it has.
_FOREIGN_KEYS = frozenset(
    {"logEvents", "messageType", "records", "jsonPayload", "textPayload", "protoPayload", "logName", "insertId"}
)
_DIGITS = "0123456789"
_FLOW_TOKEN = re.compile(r"[A-Za-z0-9._:/\-]+")
_RESOURCE_ID = re.compile(r"[a-z]+(?:-[a-z]+)*-[0-9a-f]{8,17}")


def parse_subscription(
    chunks: Iterable[bytes],
    *,
    unit: str,
    source: str,
    fields: Sequence[str] | None = None,
    resume: dict[str, Any] | None = None,
    block_size: int = BLOCK_SIZE,
) -> Iterator[ParseResult]:
    """CloudWatch Logs subscription payloads as Firehose writes them to S3 (decompressed), in batches.

    `fields` is the field order of the messages (CloudWatch events carry no header; default v2). `resume` is a
    position from an earlier result of the same input. The last result has final=True."""
    order = tuple(fields) if fields else F.V2_FIELDS
    passed = int(resume.get("document", 0)) if resume else 0
    skip_events = int(resume.get("event", 0)) if resume else 0
    offset = int(resume.get("start" if skip_events else "offset", 0)) if resume else 0
    stream = _Stream(chunks, offset)
    batch = _Batch(unit, source, order)
    for doc in _documents(stream):
        number = passed + 1
        first, skip_events = skip_events, 0
        size = doc.end - doc.start
        events = None
        if doc.problem is not None:
            batch.reject(None, f"document {number}: {doc.problem}", doc.raw, size)
        else:
            events = _events_of(doc.value, number, batch, size)
        if events:
            batch.begin_document(number, events)
            clean = _clean_messages(events, first)
            if clean is None:
                for i in range(first, len(events)):
                    if batch.weight >= block_size:
                        yield batch.result(_inside(doc, passed, i))
                    batch.add(events[i], i)
            else:
                # The same cuts as event by event: event t is taken while the weight before it is under block_size.
                # totals[k]: the weight of the first k messages (each counts its length + 1).
                totals = list(accumulate(map((1).__add__, map(len, clean)), initial=0))
                k = 0
                while k < len(clean):
                    if batch.weight >= block_size:
                        yield batch.result(_inside(doc, passed, first + k))
                    m = bisect_left(totals, block_size - batch.weight + totals[k], k + 1)
                    m = min(m, len(clean))
                    batch.extend(clean[k:m], first + k, totals[m] - totals[k])
                    k = m
            batch.end_document()
        passed += 1
        if batch.weight >= block_size:
            yield batch.result({"offset": doc.end, "document": passed, "event": 0})
    yield batch.result({"offset": stream.consumed, "document": passed, "event": 0}, final=True)


def _inside(doc: _Document, index: int, event: int) -> dict[str, Any]:
    """The position after `event` events of a document (see the module docstring)."""
    return {"offset": doc.start + event, "document": index, "event": event, "start": doc.start}


def parse_message_lines(
    chunks: Iterable[bytes],
    *,
    unit: str,
    source: str,
    fields: Sequence[str] | None = None,
    resume: dict[str, Any] | None = None,
    block_size: int = BLOCK_SIZE,
) -> Iterator[ParseResult]:
    """Newline-delimited JSON objects whose `message` is a flow log record (decompressed), in batches.

    Same arguments as parse_subscription; a position is `{"offset", "line"}`. Blank lines are passed over."""
    order = tuple(fields) if fields else F.V2_FIELDS
    offset = int(resume.get("offset", 0)) if resume else 0
    line = int(resume.get("line", 0)) if resume else 0
    stream = _Stream(chunks, offset)
    batch = _Batch(unit, source, order)
    for start, end, data in _lines(stream):
        if batch.weight >= block_size:
            yield batch.result({"offset": start, "line": line})
        line += 1
        size = end - start
        if start == 0 and data is not None:
            data = data.removeprefix(_BOM)
        if data is None:
            batch.reject(line, f"line longer than {MAX_LINE} bytes: skipped", stream.last_raw, size)
            continue
        text = data.strip()
        if not text:
            batch.skip(size)
            continue
        try:
            value = orjson.loads(text)
        except orjson.JSONDecodeError as exc:
            batch.reject(line, f"not JSON: {exc.msg} at byte {exc.pos}", _quote(text), size)
            continue
        if not isinstance(value, dict):
            batch.reject(line, "not a JSON object", _quote(text), size)
        elif "message" not in value:
            batch.reject(line, 'no "message" key', _quote(text), size)
        else:
            batch.add(value, line)
    yield batch.result({"offset": stream.consumed, "line": line}, final=True)


def looks_like_subscription(head: bytes) -> bool:
    """Whether the first decompressed bytes (up to 64 KiB, possibly cut mid-document) are subscription payloads.

    The first document's top-level keys decide: `messageType` DATA_MESSAGE or CONTROL_MESSAGE (a key no other input
    we read has at the top level); if the head ends before that key, at least two of the payload's other keys and
    no key it does not have. GCP LogEntries, Azure `{"records": ...}` documents, message lines and AWS text fail."""
    keys, message_type = _top_level_keys(head)
    if keys is None:
        return False
    if message_type is not None:
        return message_type in _SUBSCRIPTION_TYPES
    complete = bool(keys) and keys[-1] is None  # the head held the whole first document
    if "messageType" in keys and (complete or keys[-1] != "messageType"):
        return False  # present, but not a string: not CloudWatch's (unless the head ends in its value)
    named = {k for k in keys if k is not None}
    return not complete and len(named) >= 2 and named <= SUBSCRIPTION_KEYS


def looks_like_message_lines(head: bytes) -> bool:
    """Whether the first decompressed bytes are exported events: JSON object lines with a `message` string that reads
    like a flow log record. Up to the first SNIFF_LINES non-blank lines complete in the head are checked, and all
    must be such objects (a final line the head cuts off is not judged, unless it is the only one)."""
    lines = head.removeprefix(_BOM).split(b"\n")
    if len(lines) > 1:
        lines = lines[:-1]  # the head may end mid-line
    checked = 0
    for raw in lines:
        text = raw.strip()
        if not text:
            continue
        try:
            value = orjson.loads(text)
        except orjson.JSONDecodeError:
            return False
        if not isinstance(value, dict) or _FOREIGN_KEYS.intersection(value):
            return False
        message = value.get("message")
        if not isinstance(message, str) or not _looks_like_record(message):
            return False
        checked += 1
        if checked >= SNIFF_LINES:
            break
    return checked > 0


# -- batches


class _Batch:
    """The messages and errors of the batch being filled, and what it weighs (see the module docstring).

    Per-event work is kept to a few string operations: where an event is (document number, event id) is only put
    into words for an error."""

    def __init__(self, unit: str, source: str, fields: tuple[str, ...]) -> None:
        self.unit = unit
        self.source = source
        self.fields = fields
        self.weight = 0
        self._texts: list[str] = []
        # per text: its line (message lines), or the index of its event in its document (subscription payloads)
        self._where: list[int] = []
        # subscription payloads: (index of its first text, number, events) of each document with texts here
        self._documents: list[tuple[int, int, list[Any]]] = []
        self._current: tuple[int, list[Any]] | None = None  # the document whose events are being added
        # (messages taken before it, error): errors found while filling, merged in input order with the text parser's
        self._errors: list[tuple[int, ParseError]] = []
        self._items = 0

    def skip(self, size: int) -> None:
        self.weight += size
        self._items += 1

    def reject(self, line: int | None, reason: str, raw: str, size: int) -> None:
        self._errors.append((len(self._texts), ParseError(self.unit, line, reason, raw)))
        self.skip(size)

    def begin_document(self, number: int, events: list[Any]) -> None:
        self._current = (number, events)
        self._documents.append((len(self._texts), number, events))

    def end_document(self) -> None:
        self._current = None

    def add(self, event: Any, where: int) -> None:
        """One event (a dict with, we hope, a string `message`) at `where` (see `_where`), cleaned as the
        aws_cloudwatch source cleans events."""
        message = event.get("message") if type(event) is dict else None
        if type(message) is not str:
            what = 'no "message" string' if type(event) is dict else "not a JSON object"
            self._event_error(where, what, _quote(orjson.dumps(event)), 1)
            return
        if "\n" in message or "\r" in message:
            message = message.replace("\r", " ").replace("\n", " ")
        text = message.strip()
        if not text:
            self._event_error(where, "empty message", "", 1)
        elif not text[0].isdigit() and text.split(None, 1)[0] in F.KNOWN_FIELDS:
            # CloudWatch events carry no header; the text parser would take this one as a new field order.
            self._event_error(where, "a header line, not a record", text[:RAW_CHARS], len(text) + 1)
        else:
            self._texts.append(text)
            self._where.append(where)
            self.weight += len(text) + 1
            self._items += 1

    def extend(self, texts: list[str], first: int, weight: int) -> None:
        """Messages known to be clean (see _clean_messages), of the current document's events from `first` on."""
        self._texts.extend(texts)
        self._where.extend(range(first, first + len(texts)))
        self.weight += weight
        self._items += len(texts)

    def _event_error(self, where: int, what: str, raw: str, size: int) -> None:
        if self._current is None:
            self.reject(where, what, raw, size)
        else:
            self.reject(None, f"{_spot(*self._current, where)}: {what}", raw, size)

    def result(self, position: dict[str, Any], final: bool = False) -> ParseResult:
        """Parse the messages taken (one text-parser block) and start the next batch."""
        batches: list[pa.RecordBatch] = []
        errors = list(self._errors)
        if self._texts:
            data = ("\n".join(self._texts) + "\n").encode("utf-8", "replace")
            results = text_parser.parse_text(
                [data],
                unit=self.unit,
                source=self.source,
                fields=self.fields,
                block_size=len(data) + 1,
                max_rows=len(data) + 1,
                headers=False,
            )
            firsts = [d[0] for d in self._documents]
            for r in results:
                if r.batch.num_rows:
                    batches.append(r.batch)
                for err in r.errors:
                    k = min(max((err.line or 1) - 1, 0), len(self._texts) - 1)
                    if not self._documents:
                        line, reason = self._where[k], err.reason
                    else:
                        _, number, events = self._documents[bisect_right(firsts, k) - 1]
                        line, reason = None, f"{_spot(number, events, self._where[k])}: {err.reason}"
                    # after the errors found before message k was taken, before those found after it
                    errors.append((k, ParseError(self.unit, line, reason, err.raw)))
        errors.sort(key=lambda e: e[0])  # stable: same-key errors keep their order
        if not batches:
            batch = empty_batch()
        else:
            batch = batches[0] if len(batches) == 1 else pa.concat_batches(batches)
        result = ParseResult(batch, [e for _, e in errors], position, self._items, final)
        self._texts, self._where, self._errors, self.weight, self._items = [], [], [], 0, 0
        self._documents = [(0, *self._current)] if self._current is not None else []
        return result


def _spot(number: int, events: list[Any], index: int) -> str:
    """Where a subscription payload's event is, in an error: `document 3, event 7 (id ...)`, both 1-based."""
    event = events[index]
    event_id = event.get("id") if type(event) is dict else None
    where = f"document {number}, event {index + 1}"
    return f"{where} (id {event_id})" if isinstance(event_id, str) and event_id else where


def _events_of(value: Any, number: int, batch: _Batch, size: int) -> list[Any] | None:
    """A document's events, or None when it has none to parse (skipped, or reported to the batch)."""
    kind = value.get("messageType")
    if kind == "CONTROL_MESSAGE":
        batch.skip(size)
        return None
    if kind != "DATA_MESSAGE":
        what = "no messageType" if kind is None else f"messageType {kind!r}"
        reason = f"document {number}: {what}, not a CloudWatch Logs subscription payload"
        batch.reject(None, reason, _outline(value), size)
        return None
    events = value.get("logEvents")
    if not isinstance(events, list):
        batch.reject(None, f"document {number}: no logEvents list", _outline(value), size)
        return None
    if not events:
        batch.skip(size)
    return events


def _clean_messages(events: list[Any], first: int) -> list[str] | None:
    """The messages of `events[first:]` if every one is a string that `_Batch.add` would take as it is (no line
    break, no surrounding whitespace, starting with a digit: not a header), else None (then event by event).

    The common case costs a few passes in C instead of several Python steps per event: a CloudWatch subscription of
    default-format flow logs is all such messages."""
    try:
        texts = [e["message"] for e in islice(events, first, None)]
        joined = "\n".join(texts)
    except (KeyError, TypeError, IndexError):  # an event that is not an object, without a message, not a string
        return None
    if "\r" in joined or joined.count("\n") != len(texts) - 1:
        return None
    # (a comprehension: a regex with `^`/`$` under MULTILINE is tried at every position, ten times slower)
    if any(not t or t[0] not in _DIGITS or t[-1].isspace() for t in texts):
        return None
    return texts


def _outline(value: dict[str, Any]) -> str:
    """A damaged document as an error quotes it: its keys and values but the events."""
    return _quote(orjson.dumps({k: v for k, v in value.items() if k != "logEvents"}))


def _quote(data: bytes) -> str:
    return data[:RAW_CHARS].decode("utf-8", "replace")


# -- the byte stream


class _Stream:
    """The decompressed stream from a byte offset on: a buffer read at `pos`, grown at the end by `more()`.

    Scanners index `buf` directly; `more()` drops what lies before `pos` (so `pos` becomes 0) and appends at least
    READ_AHEAD bytes, or as many as it keeps. `base` is the stream offset of `buf[0]`."""

    __slots__ = ("_chunks", "_skip", "base", "buf", "eof", "last_raw", "pos")

    def __init__(self, chunks: Iterable[bytes], skip: int) -> None:
        self._chunks = iter(chunks)
        self._skip = skip
        self.base = skip
        self.buf = b""
        self.pos = 0
        self.eof = False
        self.last_raw = ""  # the start of the last over-long line, for its error

    @property
    def consumed(self) -> int:
        """Stream offset of `pos`."""
        return self.base + self.pos

    def more(self) -> bool:
        """Read on; False once the stream is exhausted (and nothing was added)."""
        parts = [self.buf[self.pos :]] if self.pos < len(self.buf) else []
        self.base += self.pos
        self.pos = 0
        got = 0
        # At least as much as is kept: a document growing in the buffer is copied O(1) times per byte, not once per
        # READ_AHEAD (16 MiB in 64 KiB steps would be 2 GB of copying).
        want = max(READ_AHEAD, len(parts[0]) if parts else 0)
        if not self.eof:
            for chunk in self._chunks:
                if self._skip:
                    if len(chunk) <= self._skip:
                        self._skip -= len(chunk)
                        continue
                    chunk = chunk[self._skip :]
                    self._skip = 0
                if chunk:
                    parts.append(chunk)
                    got += len(chunk)
                    if got >= want:
                        break
            else:
                self.eof = True
        self.buf = parts[0] if len(parts) == 1 else b"".join(parts)
        return got > 0

    def skip_whitespace(self) -> bool:
        """Move past whitespace (and a byte order mark at the stream's start); False at the end of the stream."""
        while True:
            if self.consumed == 0 and not self.eof and len(self.buf) < len(_BOM) and _BOM.startswith(self.buf):
                self.more()  # perhaps the start of a byte order mark: decide once it is whole
                continue
            if self.consumed == 0 and self.buf.startswith(_BOM):
                self.pos = len(_BOM)
            self.pos = _WS.match(self.buf, self.pos).end()
            if self.pos < len(self.buf):
                return True
            if not self.more():
                return False


def _lines(s: _Stream) -> Iterator[tuple[int, int, bytes | None]]:
    """(start offset, end offset, line without its LF) of every line; None for a line longer than MAX_LINE, which is
    passed over without being held (its first bytes in `s.last_raw`)."""
    while True:
        end = s.buf.find(b"\n", s.pos)
        if end >= 0 and end - s.pos <= MAX_LINE:
            start = s.consumed
            line = s.buf[s.pos : end]
            s.pos = end + 1
            yield start, s.consumed, line
            continue
        if end < 0 and len(s.buf) - s.pos <= MAX_LINE:
            if s.more():
                continue
            if s.pos < len(s.buf):  # a last line without LF
                start = s.consumed
                line = s.buf[s.pos :]
                s.pos = len(s.buf)
                yield start, s.consumed, line
            return
        start = s.consumed
        s.last_raw = _quote(s.buf[s.pos : s.pos + RAW_CHARS])
        while (end := s.buf.find(b"\n", s.pos)) < 0:
            s.pos = len(s.buf)
            if not s.more():
                break
        s.pos = end + 1 if end >= 0 else len(s.buf)
        yield start, s.consumed, None


# -- documents


@dataclass(slots=True)
class _Document:
    start: int  # stream offset of its first byte
    end: int  # stream offset after its last byte
    value: dict[str, Any] | None
    problem: str | None = None
    raw: str = ""

    @classmethod
    def damaged(cls, start: int, end: int, problem: str, head: bytes) -> _Document:
        """Bytes that are not a document; `head` their first bytes (perhaps more: only theirs are quoted)."""
        return cls(start, end, None, problem, _quote(head[: end - start]))


def _documents(s: _Stream) -> Iterator[_Document]:
    """The JSON documents of the stream, in order; damage comes out as a document with a problem, covering the bytes
    up to where reading resumes (the next `{` for bytes that do not start a document, the next plausible document
    start for a damaged one)."""
    while s.skip_whitespace():
        before = s.consumed
        doc = _document(s) if s.buf[s.pos] == _OPEN else _garbage(s)
        if s.consumed <= before:  # every path moves on; should one not, fail the unit rather than spin
            raise RuntimeError(f"subscription parser stuck at byte {before}")
        yield doc


def _garbage(s: _Stream) -> _Document:
    start = s.consumed
    head = s.buf[s.pos : s.pos + RAW_CHARS]
    while (k := s.buf.find(b"{", s.pos)) < 0:
        s.pos = len(s.buf)
        if not s.more():
            break
    s.pos = k if k >= 0 else len(s.buf)
    return _Document.damaged(start, s.consumed, "not a JSON document (skipped to the next '{')", head)


def _document(s: _Stream) -> _Document:
    """The document starting at `s.pos` (a `{`).

    Its end is found by trying candidates: a `}` followed by whitespace and then `{` or the end of the stream.
    For a valid document the first candidate that parses is its end: a prefix ending inside a string never parses
    (the parser is at the same place as in the whole document, inside that string). A candidate failing with
    "unexpected end of data" is such a `}` inside a string: the next is tried. Failing anywhere else, the document
    is damaged, or followed by bytes that are not one (see _damaged)."""
    start = s.consumed
    head = s.buf[s.pos : s.pos + RAW_CHARS]
    scan = 1  # relative to the document's start: where the next `}` is looked for
    false_ends: list[tuple[int, int]] = []  # (end, where the next `{` is) of candidates inside a string
    structure: tuple[int, int] | None = None  # (scanned to, depth) once candidates are given up
    while True:
        base = s.pos
        avail = len(s.buf) - base
        limit = min(avail, MAX_DOCUMENT)
        if structure is not None:
            end, scanned, depth = _structural_end(s.buf, base, *structure, limit)
            structure = (scanned, depth)
            if end is not None:
                return _parse_document(s, start, end, head)
            if avail >= MAX_DOCUMENT:
                return _too_large(s, start, head)
            if not s.more():
                return _truncated(s, start, head)
            continue
        m = _CANDIDATE.search(s.buf, base + scan, base + limit)
        k = m.start() if m else -1
        if k < 0:
            if avail >= MAX_DOCUMENT:
                return _without_end(s, start, false_ends, head, MAX_DOCUMENT)
            scan = max(scan, avail)
            if not s.more():
                return _without_end(s, start, false_ends, head, len(s.buf) - s.pos)
            continue
        end = k + 1 - base
        following = _WS.match(s.buf, k + 1).end()
        if following == len(s.buf) and not s.eof:
            scan = end - 1  # look at this `}` again once what follows it has been read
            s.more()
            continue
        if following < len(s.buf) and s.buf[following] != _OPEN:
            scan = end
            continue
        try:
            value = orjson.loads(memoryview(s.buf)[base : base + end])
        except orjson.JSONDecodeError as exc:
            if exc.pos >= end:  # ran out of input: inside a string (or the document is cut short)
                false_ends.append((end, following - base))
                scan = end
                if len(false_ends) > MAX_FALSE_ENDS:
                    structure = (0, 0)
                continue
            found = _damaged(s, start, exc, (*false_ends, (end, following - base)), head)
            assert found is not None  # the candidate itself lies after the failure
            return found
        s.pos = base + end
        return _Document(start, start + end, value)


def _without_end(s: _Stream, start: int, false_ends: Sequence[tuple[int, int]], head: bytes, size: int) -> _Document:
    """No candidate end parsed in the `size` bytes at `s.pos` (the rest of the stream, or MAX_DOCUMENT of it): a
    whole document followed by bytes that are not one (a `}` followed by neither `{` nor the end is no candidate),
    else a damaged, truncated or too large one."""
    base = s.pos
    try:
        orjson.loads(memoryview(s.buf)[base : base + size])
    except orjson.JSONDecodeError as exc:
        if exc.pos < size and (found := _damaged(s, start, exc, false_ends, head)) is not None:
            return found
    if size >= MAX_DOCUMENT:
        return _too_large(s, start, head)
    return _truncated(s, start, head)


def _structural_end(buf: bytes, base: int, scanned: int, depth: int, limit: int) -> tuple[int | None, int, int]:
    """The end of the JSON value at `buf[base]`, by bracket depth outside strings, looked for up to `limit` (relative
    to base) and resumable: (end or None, scanned to, depth). Linear, for documents whose strings hold many `}{`."""
    for m in _TOKENS.finditer(buf, base + scanned, base + limit):
        c = buf[m.start()]
        if c == _QUOTE:
            if m.end() - m.start() == 1:
                return None, m.start() - base, depth  # a string the buffer cuts off: read on, then look again
        elif c == _OPEN or c == 0x5B:
            depth += 1
        else:
            depth -= 1
            if depth == 0:
                return m.end() - base, m.end() - base, 0
    return None, limit, depth


def _damaged(
    s: _Stream, start: int, exc: orjson.JSONDecodeError, candidates: Sequence[tuple[int, int]], head: bytes
) -> _Document | None:
    """The document at `s.pos` failed to parse at `exc.pos`, not for want of input: where does reading resume?

    - What comes before the failure is a whole document: it was one, followed by bytes that are not (no candidate
      end was right after it); those are read next.
    - The failure is at a `{` (not its own): a document cut short, and the next one starts there (Firehose writes
      documents `}{`, so a truncated one runs straight into the next).
    - Otherwise at the first candidate end at or after the failure, the nearest plausible document start; None if
      there is none."""
    base, at = s.pos, exc.pos
    try:
        value = orjson.loads(memoryview(s.buf)[base : base + at])
    except orjson.JSONDecodeError:
        pass
    else:
        s.pos = base + at
        return _Document(start, start + at, value)
    if at == 0 or s.buf[base + at] != _OPEN:  # (orjson says 0 for invalid UTF-8 anywhere: no `{` rule then)
        at = next((end for end, following in candidates if following >= at), -1)
        if at < 0:
            return None
    s.pos = base + at
    return _Document.damaged(start, start + at, f"invalid JSON: {exc.msg} at byte {exc.pos}", head)


def _parse_document(s: _Stream, start: int, end: int, head: bytes) -> _Document:
    base = s.pos
    s.pos = base + end
    try:
        value = orjson.loads(memoryview(s.buf)[base : base + end])
    except orjson.JSONDecodeError as exc:
        return _Document.damaged(start, start + end, f"invalid JSON: {exc.msg} at byte {exc.pos}", head)
    return _Document(start, start + end, value)


def _too_large(s: _Stream, start: int, head: bytes) -> _Document:
    """Report a document with no end within MAX_DOCUMENT and pass over it to the next `}{` without holding it."""
    s.pos += MAX_DOCUMENT
    while not (m := _BOUNDARY.search(s.buf, s.pos)):
        k = s.buf.rfind(b"}", s.pos)
        s.pos = k if k >= 0 and _WS.match(s.buf, k + 1).end() == len(s.buf) else len(s.buf)
        if not s.more():
            s.pos = len(s.buf)
            break
    if m:
        s.pos = m.end() - 1
    return _Document.damaged(start, s.consumed, f"no end within {MAX_DOCUMENT} bytes: skipped", head)


def _truncated(s: _Stream, start: int, head: bytes) -> _Document:
    s.pos = len(s.buf)
    return _Document.damaged(start, s.consumed, "truncated: the input ends inside it", head)


# -- sniffing


def _top_level_keys(head: bytes) -> tuple[list[str | None] | None, str | None]:
    """The top-level keys of the JSON object the head starts with, in order (a final None if the object ends within
    the head), and the value of `messageType` if it is a string seen in the head; (None, None) if the head does
    not start with an object."""
    text = head.removeprefix(_BOM)
    pos = _WS.match(text).end()
    if text[pos : pos + 1] != b"{":
        return None, None
    keys: list[str | None] = []
    message_type = None
    depth = 0
    expect_key = False
    key: str | None = None  # the key whose value comes next, at depth 1
    for m in _KEY_TOKENS.finditer(text, pos):
        tok = m.group()
        c = tok[0]
        if c == _QUOTE:
            if len(tok) == 1:
                break  # cut off by the head's end
            if depth == 1 and expect_key:
                try:
                    name = orjson.loads(tok)
                except orjson.JSONDecodeError:
                    return None, None
                keys.append(name)
                key, expect_key = name, False
            elif depth == 1 and key == "messageType":
                try:
                    message_type = orjson.loads(tok)
                except orjson.JSONDecodeError:
                    return None, None
                return keys, message_type
        elif tok in (b"{", b"["):
            depth += 1
            expect_key = depth == 1
        elif tok in (b"}", b"]"):
            depth -= 1
            if depth == 0:
                keys.append(None)
                break
        elif tok == b"," and depth == 1:
            expect_key, key = True, None
    return keys, message_type


def _looks_like_record(message: str) -> bool:
    """A flow log record (or header) as CloudWatch events hold them: tokens of ids, numbers, addresses and ARNs, the
    first one a version number, an address, a resource id or a field name. Not a Lambda or application log line."""
    tokens = message.split()
    if not tokens or not all(_FLOW_TOKEN.fullmatch(t) for t in tokens):
        return False
    first = tokens[0]
    if first.isdigit() or first == "-" or first in F.KNOWN_FIELDS or _RESOURCE_ID.fullmatch(first):
        return True
    try:
        ipaddress.ip_address(first)
    except ValueError:
        return False
    return True
