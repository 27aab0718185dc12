"""A slow, obviously-correct reader of GCP VPC flow log JSON lines: the oracle the GCP fuzz holds the parser to.

Written from the rules in the module docstring of `adapters/gcp/parse.py` (rules 1-9, the spec) and the sniff rule
in its `looks_like_gcp` docstring, independently of that module: nothing is imported from it, and JSON is read by
a small recursive-descent reader of RFC 8259 below (regular expressions for the tokens, the stdlib `json` module to
unescape a string token), not by msgspec, which the parser uses. Only the column names come from
`collector/schema.py`, and the address grammar and the gzip reader from `tests/oracle_aws.py` (the AWS oracle's own).

How the rules are read, line by line of `judge` below; where the rules are silent or a JSON library could choose
differently, the choice is written down as *Choice*:

1. A line ends at LF; every other byte (a CR too) is part of the line. A line longer than MAX_LINE bytes (counted
   without its LF, a CR before it included) is an error. A line that is empty or only ASCII whitespace (space, TAB,
   CR, VT, FF: *Choice*, the parser's `bytes.isspace`) is blank: no row, no error, counted in the line numbers. A
   UTF-8 BOM is dropped at the very start of the (decompressed) stream only; anywhere else it is bytes of a line
   that is then not JSON. A line that is not valid UTF-8 is an error.
2. JSON is RFC 8259 exactly: whitespace is space, TAB, LF and CR; no trailing commas, no leading zeros, no NaN;
   control characters in strings must be escaped; a `\\u` escape of a lone surrogate is invalid (the rule says so).
   *Choice* (duplicate names, which RFC 8259 leaves open): the last value of a name wins, as in JavaScript and
   Python. *Choice* (nesting, which RFC 8259 section 9 lets an implementation limit): a line whose objects and
   arrays nest more than MAX_NESTING (64) deep is an error; the top-level object is depth 1. (msgspec's own
   limit depends on the interpreter's call stack, which would make the same line a row in one process and an
   error in another.)
3. The line's value must be an object: with the name `jsonPayload` it is a LogEntry (its `jsonPayload` must be
   an object: the record), else with the name `connection` (any value) it is a bare record, else an error.
4. Numbers (rule 4): a JSON integer is exact (so an integer of 5,000 digits is simply out of range); *Choice*: a
   JSON number with a fraction or an exponent is the nearest IEEE 754 double, as RFC 8259 section 6 describes what
   interoperable readers do, and must be finite and integral (`3389.0`, `1e3`, `-0.0` is 0, `1e-400` is 0,
   `1e400` is out of range); a string is `[0-9]+(\\.0*)?` (ASCII digits, leading zeros allowed whatever their
   number). Then the range: ports 0-65535, protocol 0-255, packets and bytes 0 to 2^63-1. A boolean, an object,
   an array or another string is an error.
5. Times (rule 5): `YYYY-MM-DDTHH:MM:SS[.f{1,9}](Z|+HH:MM|-HH:MM)`, ASCII digits, a real calendar date, year
   0001-9999, hours 00-23, minutes and seconds 00-59, offset hours 00-23 and minutes 00-59. *Choice*: a leap second
   (`:60`) is an error (Google smears leap seconds, so Cloud Logging never writes one). *Choice*: the instant, in
   UTC, must lie from 0001-01-01T00:00:00Z to 9999-12-31T23:59:59.999Z (`0001-01-01T00:00:00+01:00` is before the
   first instant a timestamp column gives as a datetime): else an error. Floored to milliseconds.
6. Types (rule 7): `connection`, the six `*_instance` / `*_vpc` / `*_gateway` objects and a gateway's `vpc` must
   be objects or null, on either side; their fields named in rule 3 (instance: project_id, vm_name, region, zone;
   VPC: project_id, vpc_name, subnetwork_name, subnetwork_region; gateway: project_id, name, location, and its
   vpc's project_id and vpc_name) strings or null; src_ip / dest_ip strings (then addresses) or null; reporter,
   start_time, end_time and disposition strings or null. *Choice* (the LogEntry's own shape, rule 8 being silent):
   `insertId` a string or null, `resource` and `resource.labels` objects or null, `resource.labels.project_id`
   and `subnetwork_name` (the fallbacks of rule 3) strings or null. Any violation: the line is one error.
7. Columns (rule 3). The reporting side is `src` for SRC / SRC_GATEWAY, `dest` for DEST / DEST_GATEWAY, none for
   another reporter or none. Each column takes the first non-null of its candidates, in this order (*Choice* where
   rule 3 does not order them: the VM's details before the gateway's; the fallbacks after both):
   account: instance.project_id, gateway.project_id, vpc.project_id, gateway.vpc.project_id,
   resource.labels.project_id; interface: instance.vm_name, gateway.name (instance: the VM's name only); region: instance.region,
   gateway.location, vpc.subnetwork_region; zone: instance.zone; vpc: vpc.vpc_name, gateway.vpc.vpc_name; subnet:
   vpc.subnetwork_name, resource.labels.subnetwork_name (objects of the reporting side; without one, only the
   labels). *Choice* (rule 8, "every other key"): a candidate that is not used is kept in `extra` under its path
   (`src_vpc.project_id`, `resource.labels.project_id`) unless its value equals the column's: nothing that differs
   is lost, nothing is said twice.
8. `extra` (rule 8) holds every other key: of the record, of `connection`, of the reporting side's objects (their
   keys not named in rule 3: `src_instance.managed_instance_group`, `src_gateway.type`, ...), the other side's
   objects whole (every non-null field), the LogEntry's `insertId` and every `resource.labels` key but the two
   fallbacks; a `disposition` other than ALLOWED / DROPPED. *Choice* (the rule's example `src_location ->
   {"continent":...}` says the text is kept; the parser and its hand-checked tests keep it flattened, which a map
   of strings can query): an object is flattened, each field as `key.field`, down to MAX_DEPTH (16) levels counted
   from the first key not named in rules 3-6 (its value is level 1); an object at level 16 is kept as its JSON text
   as written. Strings: their unescaped text; an integer: its decimal text (`-0` is `0`); other numbers, booleans,
   arrays: the JSON text exactly as written; nulls and empty objects: nothing. *Choice*: two keys of one row's
   `extra` with the same name (a literal key `src_location.city` beside `src_location: {"city": ...}`, an `insertId`
   inside jsonPayload beside the LogEntry's) make the line an error: a map cannot hold both, and keeping one would
   drop the other silently.
9. disposition ALLOWED -> accept, DROPPED -> reject; direction from the reporter; log_status null; sampling_rate the
   option; with `projects`, a row whose account is not among them (or null) is dropped, not an error.

A truncated gzip stream (*Choice*, the rules being silent): its last piece of a line is judged like any line (a cut
object is not JSON; one cut right after its closing brace is whole). As for AWS, the parser's inflater may stop up to
one deflate symbol short of zlib's output (`cut_alternatives`).

Format detection (the `looks_like_gcp` docstring, through `open_stream(provider="auto")`): the head is the first
SNIFF_BYTES (64 KiB) after the BOM and leading ASCII whitespace; its pieces split at LF, the last piece left out
unless it is the only one (*Choice*, as the AWS message-lines sniff: a final line the head may cut off is not
judged, even when the object ends there); of the first SNIFF_LINES (16) pieces not blank after stripping ASCII
whitespace, one must start with `{` and be a JSON object (rule 2 above, nesting included) whose `jsonPayload` is an
object with an object `connection`, or which has an object `connection` and a `reporter` key. Otherwise the object
is not GCP's (another format or none: `unrecognized`).
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from typing import Any

from oracle_aws import BOM, BadValue, OracleResult, _address, gunzip

from collector.schema import COLUMNS

MAX_LINE = 1 << 20
MAX_NESTING = 64
MAX_DEPTH = 16
I64 = 2**63 - 1
SNIFF_BYTES = 64 << 10
SNIFF_LINES = 16
EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
FIRST_MS = (datetime(1, 1, 1, tzinfo=UTC) - EPOCH) // timedelta(milliseconds=1)
LAST_MS = (datetime(9999, 12, 31, 23, 59, 59, 999000, tzinfo=UTC) - EPOCH) // timedelta(milliseconds=1)
ASCII_SPACE = b" \t\r\x0b\x0c"


class Bad(Exception):
    """The line is an error (the reason is the oracle's own words, for reports)."""


# --- JSON (RFC 8259) ---------------------------------------------------------------------------------------------


@dataclass(slots=True)
class Node:
    """A JSON value: kind, value (dict name -> Node for an object, list for an array, str for a string, the token
    text for a number, None otherwise) and its text exactly as written."""

    kind: str
    value: Any
    raw: str


_WS = re.compile(r"[ \t\n\r]*")
_STRING = re.compile(r'"(?:[^"\\\x00-\x1f]++|\\["\\/bfnrt]|\\u[0-9a-fA-F]{4})*+"')
_NUMBER = re.compile(r"-?(?:0|[1-9][0-9]*)(?:\.[0-9]+)?(?:[eE][+-]?[0-9]+)?")
_SURROGATE = re.compile(r"[\ud800-\udfff]")


class _Reader:
    def __init__(self, text: str) -> None:
        self.s = text
        self.i = 0

    def ws(self) -> None:
        self.i = _WS.match(self.s, self.i).end()  # type: ignore[union-attr]

    def string(self) -> str:
        m = _STRING.match(self.s, self.i)
        if m is None:
            raise Bad("json: string")
        self.i = m.end()
        text = json.loads(m.group())
        if _SURROGATE.search(text):  # a pair of escapes is one character by now: what is left is lone
            raise Bad("json: lone surrogate")
        return text

    def value(self, depth: int) -> Node:
        s, start = self.s, self.i
        c = s[start : start + 1]
        if c == "{" or c == "[":
            if depth > MAX_NESTING:
                raise Bad("json: nested too deep")
            self.i += 1
            self.ws()
            close = "}" if c == "{" else "]"
            items: Any = {} if c == "{" else []
            if s[self.i : self.i + 1] == close:
                self.i += 1
            else:
                while True:
                    if c == "{":
                        if s[self.i : self.i + 1] != '"':
                            raise Bad("json: name")
                        name = self.string()
                        self.ws()
                        if s[self.i : self.i + 1] != ":":
                            raise Bad("json: colon")
                        self.i += 1
                        self.ws()
                        items.pop(name, None)  # the last wins (and comes last)
                        items[name] = self.value(depth + 1)
                    else:
                        items.append(self.value(depth + 1))
                    self.ws()
                    nxt = s[self.i : self.i + 1]
                    self.i += 1
                    if nxt == close:
                        break
                    if nxt != ",":
                        raise Bad("json: separator")
                    self.ws()
            return Node("object" if c == "{" else "array", items, s[start : self.i])
        if c == '"':
            text = self.string()
            return Node("string", text, s[start : self.i])
        for word in ("true", "false", "null"):
            if s.startswith(word, start):
                self.i = start + len(word)
                return Node(word, None, word)
        m = _NUMBER.match(s, start)
        if m is None or m.end() == start:
            raise Bad("json: value")
        self.i = m.end()
        return Node("number", m.group(), m.group())


def parse_json(text: str) -> Node:
    """One JSON text (whitespace around it allowed), or Bad. The top-level container is at depth 1."""
    r = _Reader(text)
    r.ws()
    node = r.value(1)
    r.ws()
    if r.i != len(text):
        raise Bad("json: trailing")
    return node


# --- values ------------------------------------------------------------------------------------------------------

_DIGITS = re.compile(r"[0-9]+(\.0*)?")
_TIME = re.compile(
    r"([0-9]{4})-([0-9]{2})-([0-9]{2})T([0-9]{2}):([0-9]{2}):([0-9]{2})(?:\.([0-9]{1,9}))?(?:Z|([+-])([0-9]{2}):([0-9]{2}))"
)


def number(node: Node | None, high: int, what: str) -> int | None:
    if node is None or node.kind == "null":
        return None
    if node.kind == "number":
        text = node.value
        if any(ch in text for ch in ".eE"):
            f = float(text)
            if not math.isfinite(f) or not f.is_integer():
                raise Bad(f"{what}: not integral")
            value = int(f)
        else:
            if len(text.lstrip("-")) > 20:
                raise Bad(f"{what}: range")
            value = int(text)
    elif node.kind == "string":
        if not _DIGITS.fullmatch(node.value):
            raise Bad(f"{what}: not digits")
        digits = node.value.partition(".")[0].lstrip("0") or "0"
        if len(digits) > 20:
            raise Bad(f"{what}: range")
        value = int(digits)
    else:
        raise Bad(f"{what}: type")
    if not 0 <= value <= high:
        raise Bad(f"{what}: range")
    return value


def string(node: Node | None, what: str) -> str | None:
    if node is None or node.kind == "null":
        return None
    if node.kind != "string":
        raise Bad(f"{what}: not a string")
    return node.value


def obj(node: Node | None, what: str) -> dict[str, Node] | None:
    if node is None or node.kind == "null":
        return None
    if node.kind != "object":
        raise Bad(f"{what}: not an object")
    return node.value


def time_ms(text: str) -> int:
    m = _TIME.fullmatch(text)
    if m is None:
        raise Bad("time: shape")
    year, month, day, hour, minute, second = (int(m.group(k)) for k in range(1, 7))
    if year < 1 or not 1 <= month <= 12 or hour > 23 or minute > 59 or second > 59:
        raise Bad("time: field")
    try:
        days = date(year, month, day).toordinal() - date(1970, 1, 1).toordinal()
    except ValueError:
        raise Bad("time: date") from None
    fraction = (m.group(7) or "").ljust(9, "0")
    ns = ((days * 86400 + hour * 3600 + minute * 60 + second) * 10**9) + int(fraction)
    if m.group(8):
        oh, om = int(m.group(9)), int(m.group(10))
        if oh > 23 or om > 59:
            raise Bad("time: offset")
        shift = (oh * 3600 + om * 60) * 10**9
        ns = ns - shift if m.group(8) == "+" else ns + shift
    ms = ns // 10**6
    if not FIRST_MS <= ms <= LAST_MS:
        raise Bad("time: range")
    return ms


def when(node: Node | None, what: str) -> datetime | None:
    text = string(node, what)
    if text is None:
        return None
    return EPOCH + timedelta(milliseconds=time_ms(text))


def address(node: Node | None, what: str) -> bytes | None:
    text = string(node, what)
    if text is None:
        return None
    try:
        return _address(what, text)
    except BadValue:
        raise Bad(f"{what}: address") from None


# --- extra ---------------------------------------------------------------------------------------------------------


def keep(pairs: list[tuple[str, str]], key: str, node: Node, level: int = 1) -> None:
    """Rule 8 for a value (at `level`, 1 for the value of a key not named in rules 3-6)."""
    kind = node.kind
    if kind == "null":
        return
    if kind == "string":
        pairs.append((key, node.value))
    elif kind == "object":
        if level >= MAX_DEPTH:
            pairs.append((key, node.raw))
            return
        for name, item in node.value.items():
            keep(pairs, f"{key}.{name}", item, level + 1)
    elif kind == "number" and not any(ch in node.value for ch in ".eE"):
        pairs.append((key, "0" if node.value == "-0" else node.value))
    else:
        pairs.append((key, node.raw))


# --- one record ----------------------------------------------------------------------------------------------------

_INSTANCE = ("project_id", "vm_name", "region", "zone")
_VPC = ("project_id", "vpc_name", "subnetwork_name", "subnetwork_region")
_GATEWAY = ("project_id", "name", "location")
_GATEWAY_VPC = ("project_id", "vpc_name")
_OBJECTS = {
    "src_instance": _INSTANCE,
    "dest_instance": _INSTANCE,
    "src_vpc": _VPC,
    "dest_vpc": _VPC,
    "src_gateway": _GATEWAY,
    "dest_gateway": _GATEWAY,
}
_SIDE = {"SRC": "src", "SRC_GATEWAY": "src", "DEST": "dest", "DEST_GATEWAY": "dest"}
_DIRECTION = {"src": "egress", "dest": "ingress"}
_ACTION = {"ALLOWED": "accept", "DROPPED": "reject"}
_NUMBERS = (("src_port", "src_port", 65535), ("dest_port", "dst_port", 65535), ("protocol", "protocol", 255))


@dataclass
class _Known:
    """A rule-3 object: its typed fields (path -> text) and the extra pairs of its other keys."""

    fields: dict[str, str | None] = field(default_factory=dict)
    others: list[tuple[str, str]] = field(default_factory=list)
    present: bool = False


def _known(path: str, node: Node | None, names: tuple[str, ...]) -> _Known:
    out = _Known()
    items = obj(node, path)
    if items is None:
        return out
    out.present = True
    for key, item in items.items():
        if key in names:
            out.fields[key] = string(item, f"{path}.{key}")
        elif path.endswith("_gateway") and key == "vpc":
            vpc = obj(item, f"{path}.vpc")
            for name, sub in (vpc or {}).items():
                if name in _GATEWAY_VPC:
                    out.fields[f"vpc.{name}"] = string(sub, f"{path}.vpc.{name}")
                else:
                    keep(out.others, f"{path}.vpc.{name}", sub)
        else:
            keep(out.others, f"{path}.{key}", item)
    return out


def _whole(path: str, k: _Known) -> list[tuple[str, str]]:
    """An object that gives no column: every field kept."""
    pairs = [(f"{path}.{name}", v) for name, v in k.fields.items() if v is not None]
    return pairs + k.others


def record(rec: dict[str, Node], envelope: dict[str, Node] | None, source: str, options: dict[str, Any]) -> dict | None:
    """The row of one record (None if `projects` drops it); Bad if the line is an error."""
    row: dict[str, Any] = dict.fromkeys(COLUMNS)
    row["provider"], row["source"] = "gcp", source
    if options.get("sampling_rate") is not None:
        row["sampling_rate"] = int(options["sampling_rate"])
    extra: list[tuple[str, str]] = []
    conn = obj(rec.get("connection"), "connection") or {}
    row["src_addr"] = address(conn.get("src_ip"), "connection.src_ip")
    row["dst_addr"] = address(conn.get("dest_ip"), "connection.dest_ip")
    for key, column, high in _NUMBERS:
        row[column] = number(conn.get(key), high, f"connection.{key}")
    for key, item in conn.items():
        if key not in ("src_ip", "dest_ip", "src_port", "dest_port", "protocol"):
            keep(extra, f"connection.{key}", item)
    row["packets"] = number(rec.get("packets_sent"), I64, "packets_sent")
    row["bytes"] = number(rec.get("bytes_sent"), I64, "bytes_sent")
    row["time_start"] = when(rec.get("start_time"), "start_time")
    row["time_end"] = when(rec.get("end_time"), "end_time")
    reporter = string(rec.get("reporter"), "reporter")
    disposition = string(rec.get("disposition"), "disposition")
    objects = {name: _known(name, rec.get(name), names) for name, names in _OBJECTS.items()}
    labels: _Known | None = None
    if envelope is not None:
        insert = string(envelope.get("insertId"), "insertId")
        if insert is not None:
            extra.append(("insertId", insert))
        resource = obj(envelope.get("resource"), "resource")
        if resource is not None:
            items = obj(resource.get("labels"), "resource.labels")
            if items is not None:
                labels = _Known(present=True)
                for key, item in items.items():
                    if key in ("project_id", "subnetwork_name"):
                        labels.fields[key] = string(item, f"resource.labels.{key}")
                    else:
                        keep(labels.others, f"resource.labels.{key}", item)
                extra += labels.others
    side = _SIDE.get(reporter) if reporter is not None else None
    row["reporter"] = reporter
    row["direction"] = _DIRECTION.get(side) if side else None
    cands: dict[str, list[tuple[str, str | None]]] = {c: [] for c in ("account", "interface", "region", "zone")}
    cands.update(vpc=[], subnet=[])
    if side is not None:
        inst, vpc, gw = (objects[f"{side}_{k}"] for k in ("instance", "vpc", "gateway"))
        i, v, g = f"{side}_instance", f"{side}_vpc", f"{side}_gateway"
        cands["account"] += [
            (f"{i}.project_id", inst.fields.get("project_id")),
            (f"{g}.project_id", gw.fields.get("project_id")),
            (f"{v}.project_id", vpc.fields.get("project_id")),
            (f"{g}.vpc.project_id", gw.fields.get("vpc.project_id")),
        ]
        cands["interface"] += [(f"{i}.vm_name", inst.fields.get("vm_name")), (f"{g}.name", gw.fields.get("name"))]
        cands["region"] += [
            (f"{i}.region", inst.fields.get("region")),
            (f"{g}.location", gw.fields.get("location")),
            (f"{v}.subnetwork_region", vpc.fields.get("subnetwork_region")),
        ]
        cands["zone"] += [(f"{i}.zone", inst.fields.get("zone"))]
        cands["vpc"] += [
            (f"{v}.vpc_name", vpc.fields.get("vpc_name")),
            (f"{g}.vpc.vpc_name", gw.fields.get("vpc.vpc_name")),
        ]
        cands["subnet"] += [(f"{v}.subnetwork_name", vpc.fields.get("subnetwork_name"))]
        extra += inst.others + vpc.others + gw.others
        for name, k in objects.items():
            if not name.startswith(side + "_"):
                extra += _whole(name, k)
    else:
        for name, k in objects.items():
            extra += _whole(name, k)
    if labels is not None:
        cands["account"].append(("resource.labels.project_id", labels.fields.get("project_id")))
        cands["subnet"].append(("resource.labels.subnetwork_name", labels.fields.get("subnetwork_name")))
    for column, options_ in cands.items():
        value = next((v for _, v in options_ if v is not None), None)
        row[column] = value
        for path, v in options_:
            if v is not None and v != value:
                extra.append((path, v))
    row["instance"] = objects[f"{side}_instance"].fields.get("vm_name") if side else None  # a gateway is no VM
    if disposition is not None:
        row["action"] = _ACTION.get(disposition)
        if row["action"] is None:
            extra.append(("disposition", disposition))
    for key, item in rec.items():
        if key not in _OBJECTS and key not in (
            "connection", "reporter", "bytes_sent", "packets_sent", "start_time", "end_time", "disposition",
        ):  # fmt: skip
            keep(extra, key, item)
    names = [k for k, _ in extra]
    if len(set(names)) != len(names):
        raise Bad("extra: a key twice")
    row["extra"] = extra
    projects = options.get("projects")
    if projects and row["account"] not in projects:
        return None
    return row


def judge(data: bytes, source: str = "s", options: dict[str, Any] | None = None) -> dict | None:
    """One non-blank line (or message body) that is valid UTF-8: its row, None if filtered out; Bad if an error."""
    text = data.decode("utf-8")
    top = parse_json(text)
    if top.kind != "object":
        raise Bad("not an object")
    items = top.value
    if "jsonPayload" in items:
        rec = obj(items["jsonPayload"], "jsonPayload")
        if rec is None:
            raise Bad("jsonPayload: null")
        return record(rec, items, source, options or {})
    if "connection" in items:
        return record(items, None, source, options or {})
    raise Bad("not a flow record")


# --- streams -------------------------------------------------------------------------------------------------------


def read_lines(
    data: bytes, *, source: str = "s", options: dict[str, Any] | None = None, max_line: int = MAX_LINE
) -> OracleResult:
    """Rows and errors of a decompressed stream (the BOM at its start, if any, already removed)."""
    out = OracleResult()
    pieces = data.split(b"\n")
    if pieces[-1] == b"":
        pieces.pop()
    for number_, line in enumerate(pieces, 1):
        if len(line) > max_line:
            out.errors.append((number_, "too-long"))
            continue
        if not line.strip(ASCII_SPACE):
            continue
        try:
            line.decode("utf-8")
        except UnicodeDecodeError:
            out.errors.append((number_, "utf-8"))
            continue
        try:
            row = judge(line, source, options)
        except Bad as exc:
            out.errors.append((number_, str(exc)))
            continue
        if row is not None:
            out.records.append(row)
    return out


def _sniff_line(text: bytes) -> bool:
    if text[:1] != b"{":
        return False
    try:
        top = parse_json(text.decode("utf-8"))
    except (Bad, UnicodeDecodeError):
        return False
    if top.kind != "object":
        return False
    items = top.value
    payload = items.get("jsonPayload")
    if payload is not None and payload.kind == "object":
        conn = payload.value.get("connection")
        if conn is not None and conn.kind == "object":
            return True
    conn = items.get("connection")
    return conn is not None and conn.kind == "object" and "reporter" in items


def recognized(data: bytes) -> bool:
    """The sniff (module docstring, "Format detection") on a decompressed stream without its BOM."""
    head = data.lstrip()[:SNIFF_BYTES]
    pieces = head.split(b"\n")
    if len(pieces) > 1:
        pieces = pieces[:-1]
    checked = 0
    for raw in pieces:
        text = raw.strip()
        if not text:
            continue
        checked += 1
        if checked > SNIFF_LINES:
            break
        if _sniff_line(text):
            return True
    return False


def read_data(
    data: bytes, problems: list[str], *, source: str = "s", options: dict[str, Any] | None = None,
    max_line: int = MAX_LINE,
) -> OracleResult:  # fmt: skip
    if data.startswith(BOM):
        data = data[len(BOM) :]
    if not recognized(data):
        return OracleResult([], [(None, "unrecognized")] + [(None, p) for p in problems], unrecognized=True)
    out = read_lines(data, source=source, options=options, max_line=max_line)
    out.errors.extend((None, p) for p in problems)
    return out


def _gunzip(blob: bytes) -> tuple[bytes, list[str], bool]:
    """oracle_aws.gunzip, and zero bytes after the last member are padding, not an error (collector/parsing.py's
    documented choice: some writers add them and gzip ignores them)."""
    got = gunzip(blob)
    zeros = len(blob) - len(blob.rstrip(b"\0"))
    if "gzip-garbage" in got[1] and zeros:
        for k in range(zeros, 0, -1):
            data, problems, cut = gunzip(blob[: len(blob) - k])
            if not cut and "gzip-garbage" not in problems:
                return data, problems, cut
    return got


def read_object(
    blob: bytes, *, source: str = "s", options: dict[str, Any] | None = None, max_line: int = MAX_LINE
) -> OracleResult:
    """A whole object as stored: gzip (by its magic) or plain."""
    if blob[:2] == b"\x1f\x8b":
        data, problems, _cut = _gunzip(blob)
    else:
        data, problems = blob, []
    return read_data(data, problems, source=source, options=options, max_line=max_line)


MAX_HELD_BACK = 258  # the longest deflate symbol's output


def cut_alternatives(
    blob: bytes, *, source: str = "s", options: dict[str, Any] | None = None, max_line: int = MAX_LINE
) -> list[OracleResult]:
    """For a gzip stream cut inside compressed data, the outcomes of what inflated cut up to MAX_HELD_BACK bytes
    shorter (the parser's inflater may hold back the last symbol); empty for any other object."""
    if blob[:2] != b"\x1f\x8b":
        return []
    data, problems, cut = _gunzip(blob)
    if not cut:
        return []
    return [
        read_data(data[:end], problems, source=source, options=options, max_line=max_line)
        for end in range(len(data) - 1, max(-1, len(data) - MAX_HELD_BACK - 1), -1)
    ]


# --- message bodies (parse_entries) ------------------------------------------------------------------------------


@dataclass
class EntriesResult:
    records: list[dict] = field(default_factory=list)
    bad: list[int] = field(default_factory=list)


def read_entries(
    bodies: list[bytes], *, source: str = "s", options: dict[str, Any] | None = None, max_line: int = MAX_LINE
) -> EntriesResult:
    """Each body one JSON text (whitespace around it, LF too, allowed): rows of the good ones, indexes of the bad
    (a BOM at a body's start dropped; an empty or blank body is bad)."""
    out = EntriesResult()
    for i, body in enumerate(bodies):
        data = body.removeprefix(BOM)
        try:
            if len(data) > max_line or not data.strip():
                raise Bad("size")
            try:
                data.decode("utf-8")
            except UnicodeDecodeError:
                raise Bad("utf-8") from None
            row = judge(data, source, options)
        except Bad:
            out.bad.append(i)
            continue
        if row is not None:
            out.records.append(row)
    return out
