"""GCP VPC Flow Logs: Cloud Logging `LogEntry` JSON (`compute.googleapis.com/vpc_flows`) to normalized batches.

Pure: bytes in, `ParseResult`s out (collector/parsing.py). Two entry points:
- `parse_lines`: newline-delimited JSON, as a log sink writes it to Cloud Storage (one LogEntry per line), or one
  bare `jsonPayload` object per line. Position `{"offset": bytes consumed, "line": lines consumed}`.
- `parse_entries`: a list of message bodies (Pub/Sub: one LogEntry per message), one batch for all of them; the
  indexes of the bodies that gave no flow because they are bad come back too (the source leaves those unacked).

The rules (README "GCP VPC flow logs" says the same to users; tests/oracle_gcp.py checks them independently):
1. A line is split at LF; a CR before it is JSON whitespace. Blank lines (empty, or only ASCII whitespace: space,
   TAB, CR, VT, FF) are passed over. A line longer than MAX_LINE bytes (its LF not counted) is one error and is
   skipped without being held in memory. A line that is not valid UTF-8 is an error.
2. Each other line is one JSON value (RFC 8259; a lone surrogate escape is invalid; of a name given twice in one
   object the last value counts; objects and arrays nested more than MAX_NESTING = 64 deep make the line an
   error, whatever msgspec's own, call-stack-dependent limit). An object with the key
   `jsonPayload` is a LogEntry: its `jsonPayload` (an object) is the record and its `resource.labels` the fallback
   for the project and subnet. An object without it that has `connection` is a bare record. Anything else is an
   error.
3. The record maps to one row. Reporter `SRC` / `SRC_GATEWAY` -> direction egress, `DEST` / `DEST_GATEWAY` ->
   ingress (relative to the reporting side); another reporter string is kept in `reporter` with direction null.
   The reporting side is `src_*` for SRC*, `dest_*` for DEST*. For a VM: its instance `project_id` / `vm_name` /
   `region` / `zone` and its VPC `vpc_name` / `subnetwork_name` give `account` / `interface` and `instance` (both
   the VM name) / `region` / `zone` / `vpc` / `subnet`. For a gateway (`*_gateway`): its `project_id`, `name` (as
   interface; `instance` stays null: a gateway is no VM), `location` (as region) and `vpc.vpc_name`. Fallbacks,
   in order: account <- the VPC's `project_id` <- `resource.labels.project_id`; subnet <-
   `resource.labels.subnetwork_name`; region <- the VPC's `subnetwork_region`. So each column takes the first
   non-null of: account: instance, gateway, VPC, gateway VPC `project_id`, `resource.labels.project_id`;
   interface: `vm_name`, gateway `name`; region: instance `region`, gateway `location`, VPC `subnetwork_region`;
   vpc: VPC, gateway VPC `vpc_name`; subnet: VPC `subnetwork_name`, `resource.labels.subnetwork_name` (a VM's
   details before a gateway's on the same side).
4. `connection.src_ip` / `dest_ip` -> src_addr / dst_addr (IPv4 or IPv6 text, else an error); `src_port`,
   `dest_port` (0-65535), `protocol` (0-255), `packets_sent`, `bytes_sent` (0 to 2^63-1) are numbers: a JSON
   integer, a JSON number with an integral value as an IEEE double (`3389.0`, `1e3`; `1e400` is out of range), or a
   string of ASCII decimal digits
   optionally followed by `.` and zeros (`"491"`, `"3389.0"`, leading zeros allowed). Missing or null -> null
   (ICMP has no ports).
5. `start_time` / `end_time`: RFC 3339 `YYYY-MM-DDTHH:MM:SS[.fraction](Z|+HH:MM|-HH:MM)` (upper-case T and Z, as
   Cloud Logging writes; 1 to 9 fraction digits; years 0001-9999; seconds 00-59: Google smears leap seconds),
   floored to milliseconds UTC, the instant within 0001-01-01T00:00:00Z..9999-12-31T23:59:59.999Z (what a
   timestamp column gives as a datetime); missing or null -> null.
6. `disposition` ALLOWED -> action accept, DROPPED -> reject (another value: action null, the value in `extra`);
   action is null without it (older records). `log_status` is null (GCP has none); `sampling_rate` is the
   source's `sampling_rate` option when given, else null.
7. A value of the wrong type or out of range in rules 3-6 (a string where an object or a number belongs, a port of
   70000, `"abc"` bytes, a reporter that is not a string, a `*_instance`, `*_vpc` or `*_gateway` that is not an
   object, or one whose fields named in rule 3 are not strings; of the LogEntry, an `insertId` that is not a string,
   a `resource` or `resource.labels` that is not an object) makes the line one error naming the field's JSON path;
   no row.
8. `extra` keeps every other leaf of the record, flattened to dotted paths: `rtt_msec`, `dest_location.country`,
   `dest_instance.vm_name` (the other side's instance, VPC and gateway are kept whole this way),
   `src_instance.managed_instance_group.name`, `src_gke_details.pod.pod_name`, `connection.src_nat_ip`. A string
   leaf is its text; an integer is written in decimal (`15169`); any other number, a boolean and an array are their
   JSON text as written in the input (`1.50`, `true`, `[80,443]`); nulls and empty objects are left out; an object
   nested deeper than MAX_DEPTH levels is kept whole, as written, under its path at that depth. Of the reporting
   side's objects, the leaves that became a column are not repeated; a candidate of rule 3 that did not give its
   column is kept when it differs from the column's value, left out when equal (`src_vpc.project_id` of a Shared
   VPC host project, `src_vpc.subnetwork_region`); so are their other keys (`src_gateway.type`). Of the LogEntry
   around the record, `insertId` (as `insertId`)
   and `resource.labels`' other labels (`resource.labels.subnetwork_id`, `resource.labels.location`; and
   `project_id` / `subnetwork_name` when they differ from the column) are kept. No key appears twice in a row;
   the order of the pairs is not part of the contract: two keys of one name (a key `src_location.city` written
   beside `src_location`) make the line an error, as a map holds one.
9. With the option `projects` (project ids), rows whose `account` is not among them are dropped (an
   organisation-level sink writes every project of the organisation into one bucket); they are not errors.

Batches end at the first line end at or after BLOCK_SIZE bytes of input from the batch's start, or after
MAX_BATCH_ROWS lines, whichever comes first: boundaries depend only on the content from the resume point. A
resumed plain object is read from its resume point on (option `stream_offset`, collector/parsing.py).

How it is fast: each line is decoded by msgspec into typed structs of the fields the documentation lists (no dict
per record; the structs are kept out of the garbage collector), rows are tuples, extra keys are small integer codes
(one Arrow take builds the key column), and numbers, times and addresses are converted and validated column-wise
in Arrow. A line the typed decoder refuses (a key it does not know anywhere in the record, a value of another type,
broken JSON) is decoded again by the general path (`_general`), which applies the same rules key by key, flattens
what it does not know, and names the field at fault; only lines that need it pay for it.
"""

from __future__ import annotations

import re
from array import array
from collections.abc import Iterable, Iterator, Mapping, Sequence
from typing import Any

import msgspec
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from msgspec import Raw, Struct

from collector.parsing import MAX_BATCH_ROWS, ParseResult
from collector.schema import DICT_STRING, TIME, FlowBatch, ParseError, assemble, constant, empty_batch, parse_addresses

BLOCK_SIZE = 4 << 20
MAX_LINE = 1 << 20
RAW_CHARS = 200  # how much of a bad line ParseError.raw quotes
INT64_MAX = (1 << 63) - 1
SNIFF_LINES = 16

Num = int | float | str | None
_F = {"gc": False, "forbid_unknown_fields": True}  # no reference cycles: keep them out of the collector's scans


class _Connection(Struct, **_F):
    src_ip: str | None = None
    src_port: Num = None
    dest_ip: str | None = None
    dest_port: Num = None
    protocol: Num = None


class _Group(Struct, **_F):
    name: str | None = None
    region: str | None = None
    zone: str | None = None


class _Instance(Struct, **_F):
    project_id: str | None = None
    vm_name: str | None = None
    region: str | None = None
    zone: str | None = None
    managed_instance_group: _Group | None = None


class _Vpc(Struct, **_F):
    project_id: str | None = None
    vpc_name: str | None = None
    subnetwork_name: str | None = None
    subnetwork_region: str | None = None


class _GatewayVpc(Struct, **_F):
    project_id: str | None = None
    vpc_name: str | None = None


class _Gateway(Struct, **_F):
    project_id: str | None = None
    name: str | None = None
    location: str | None = None
    type: str | None = None
    vpc: _GatewayVpc | None = None


class _Location(Struct, **_F):
    continent: str | None = None
    country: str | None = None
    region: str | None = None
    city: str | None = None
    asn: int | str | None = None


class _Workload(Struct, **_F):
    workload_name: str | None = None
    workload_type: str | None = None


class _Pod(Struct, **_F):
    pod_name: str | None = None
    pod_namespace: str | None = None
    pod_workload: _Workload | None = None


class _Cluster(Struct, **_F):
    cluster_location: str | None = None
    cluster_name: str | None = None


class _Gke(Struct, **_F):
    """GKE details (a node's pods): `service` may be a list, kept as written (rule 8), so it stays raw here."""

    cluster: _Cluster | None = None
    pod: _Pod | None = None
    service: Raw = None  # type: ignore[assignment]


class _Record(Struct, **_F):
    """jsonPayload as the fast path knows it: a record with another key, or another type in an object it knows (a
    float `asn`), goes to the general path, which flattens what this does not name."""

    connection: _Connection | None = None
    reporter: str | None = None
    bytes_sent: Num = None
    packets_sent: Num = None
    start_time: str | None = None
    end_time: str | None = None
    disposition: str | None = None
    src_instance: _Instance | None = None
    dest_instance: _Instance | None = None
    src_vpc: _Vpc | None = None
    dest_vpc: _Vpc | None = None
    src_gateway: _Gateway | None = None
    dest_gateway: _Gateway | None = None
    src_location: _Location | None = None
    dest_location: _Location | None = None
    src_gke_details: _Gke | None = None
    dest_gke_details: _Gke | None = None
    rtt_msec: int | str | None = None


class _Labels(Struct, **_F):
    project_id: str | None = None
    subnetwork_name: str | None = None
    subnetwork_id: str | None = None
    location: str | None = None


class _Resource(Struct, **_F):
    labels: _Labels | None = None
    type: str | None = None


class _Entry(Struct, **_F):
    """A LogEntry as Cloud Logging writes VPC flows. Its other keys are not read, but they are not skipped either:
    msgspec's skipping recurses without a limit of its own, so a key this does not name goes to the general path,
    which checks the nesting (MAX_NESTING) first."""

    jsonPayload: _Record  # noqa: N815 (the LogEntry's own key)
    resource: _Resource | None = None
    insertId: str | None = None  # noqa: N815
    logName: str | None = None  # noqa: N815
    timestamp: str | None = None
    receiveTimestamp: str | None = None  # noqa: N815
    severity: str | None = None


_ENTRY = msgspec.json.Decoder(_Entry)
_BARE = msgspec.json.Decoder(_Record)
_RAW_OBJECT = msgspec.json.Decoder(dict[str, Raw])
_STRING = msgspec.json.Decoder(str)
_ANY = msgspec.json.Decoder()

_DIRECTION = {"SRC": "egress", "SRC_GATEWAY": "egress", "DEST": "ingress", "DEST_GATEWAY": "ingress"}
_SIDE = {"SRC": "src", "SRC_GATEWAY": "src", "DEST": "dest", "DEST_GATEWAY": "dest"}
_ACTION = {"ALLOWED": "accept", "DROPPED": "reject"}
_NUMBER_TEXT = re.compile(r"[0-9]+(\.0*)?")
_DIGITS_PATTERN = r"^[0-9]{1,19}$"
_YEAR = r"([1-9][0-9]{3}|0[1-9][0-9]{2}|00[1-9][0-9]|000[1-9])"  # 0001-9999
_TIME_PATTERN = "^" + _YEAR + r"-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}(\.[0-9]{1,9})?(Z|[+-][0-9]{2}:[0-9]{2})$"
_TIME_TEXT = re.compile(_TIME_PATTERN)
_MICRO = re.compile(r"(\.[0-9]{1,6})[0-9]*")
# The instants a timestamp column can give as a datetime (0001-01-01T00:00:00Z to 9999-12-31T23:59:59.999Z): an
# offset can take a time of year 1 or 9999 outside them.
FIRST_MS = -62135596800000
LAST_MS = 253402300799999
# Objects and arrays nested deeper than this make the line an error (RFC 8259 section 9 allows a limit). msgspec
# has a limit of its own, but it depends on the interpreter's call stack (about 1,000 levels minus the frames
# above the call): the same line would be a row in one process and an error in another.
MAX_NESTING = 64
_STRINGS = re.compile(rb'"(?:[^"\\]|\\.)*"', re.DOTALL)
_BRACKETS = re.compile(rb"[\[\]{}]")
MAX_DEPTH = 16  # objects nested deeper than this are kept whole, as written, under the key at this depth

# Fields of the objects the fast path knows, and their extra keys: (attribute, key suffix).
_OBJECTS = {
    "connection": _Connection,
    "src_instance": _Instance,
    "dest_instance": _Instance,
    "src_vpc": _Vpc,
    "dest_vpc": _Vpc,
    "src_gateway": _Gateway,
    "dest_gateway": _Gateway,
}
# Keys of the objects of rule 3 that must be strings (rule 7), whichever side they are on.
_STRING_KEYS = {
    _Instance: ("project_id", "vm_name", "region", "zone"),
    _Vpc: ("project_id", "vpc_name", "subnetwork_name", "subnetwork_region"),
    _Gateway: ("project_id", "name", "location"),
}
_SIDE_OBJECTS_ALL = ("src_instance", "dest_instance", "src_vpc", "dest_vpc", "src_gateway", "dest_gateway")
_SCALARS = ("reporter", "bytes_sent", "packets_sent", "start_time", "end_time", "disposition")


class _Bad(Exception):
    """A line's error (rule 7), with the JSON path of the field at fault in the message."""


# -- the rows of a batch, before column conversion --------------------------------------------------------------------


class _Vocab:
    """Extra keys as small integers (a row appends a code, not a string): the map's key column is one take from the
    distinct keys. Codes of the keys the fast path writes are fixed at import; others are added as met."""

    __slots__ = ("codes", "keys")

    def __init__(self) -> None:
        self.codes = dict(_BASE_CODES)
        self.keys = list(_BASE_KEYS)

    def code(self, key: str) -> int:
        code = self.codes.get(key)
        if code is None:
            code = self.codes[key] = len(self.keys)
            self.keys.append(key)
        return code


_BASE_KEYS: list[str] = []
_BASE_CODES: dict[str, int] = {}


def _k(key: str) -> int:
    code = _BASE_CODES.get(key)
    if code is None:
        code = _BASE_CODES[key] = len(_BASE_KEYS)
        _BASE_KEYS.append(key)
    return code


_NESTED = {
    (_Instance, "managed_instance_group"): _Group,
    (_Gateway, "vpc"): _GatewayVpc,
    (_Gke, "cluster"): _Cluster,
    (_Gke, "pod"): _Pod,
    (_Pod, "pod_workload"): _Workload,
}
Table = tuple[tuple[str, int, Any], ...]


def _table(prefix: str, cls: type) -> Table:
    """(field, extra key code, table of a nested known object) for flattening a known object under `prefix`."""
    return tuple(
        (
            name,
            _k(f"{prefix}.{name}"),
            _table(f"{prefix}.{name}", _NESTED[cls, name]) if (cls, name) in _NESTED else None,
        )
        for name in cls.__struct_fields__
    )


_WHOLE = {  # objects kept whole in extra (the other side's, and the locations)
    name: _table(name, cls)
    for name, cls in (
        ("src_instance", _Instance),
        ("dest_instance", _Instance),
        ("src_vpc", _Vpc),
        ("dest_vpc", _Vpc),
        ("src_gateway", _Gateway),
        ("dest_gateway", _Gateway),
        ("src_location", _Location),
        ("dest_location", _Location),
        ("src_gke_details", _Gke),
        ("dest_gke_details", _Gke),
    )
}
_C_SRC_LOCATION = tuple(code for _, code, _ in _WHOLE["src_location"])
_C_DEST_LOCATION = tuple(code for _, code, _ in _WHOLE["dest_location"])
assert _Location.__struct_fields__ == ("continent", "country", "region", "city", "asn")  # the unrolled order in _add
_GROUP = {side: _table(f"{side}_instance.managed_instance_group", _Group) for side in ("src", "dest")}
_C_INSERT_ID = _k("insertId")
_C_LABELS = {name: _k(f"resource.labels.{name}") for name in _Labels.__struct_fields__}
_C_RTT = _k("rtt_msec")
_C_DISPOSITION = _k("disposition")
_C_VPC = {
    (side, name): _k(f"{side}_vpc.{name}") for side in ("src", "dest") for name in ("project_id", "subnetwork_region")
}
_C_GATEWAY = {
    (side, name): _k(f"{side}_gateway.{name}")
    for side in ("src", "dest")
    for name in ("project_id", "name", "location", "type", "vpc.vpc_name", "vpc.project_id")
}
_OTHERS = {
    "src": ("dest_instance", "dest_vpc", "dest_gateway"),
    "dest": ("src_instance", "src_vpc", "src_gateway"),
    None: _SIDE_OBJECTS_ALL,
}


class _Rows:
    """The rows of one batch before column conversion: one tuple per row (`_ROW` order) and the extra pairs."""

    __slots__ = ("codes", "offsets", "scalars", "values", "vocab")

    def __init__(self, vocab: _Vocab) -> None:
        self.scalars: list[tuple[Any, ...]] = []
        self.codes = array("i")  # int32 buffers Arrow takes without a copy
        self.values: list[str] = []
        self.offsets = array("i", [0])
        self.vocab = vocab

    def __len__(self) -> int:
        return len(self.scalars)


_ROW = (
    "src_ip", "dest_ip", "src_port", "dest_port", "protocol", "packets", "bytes", "start", "end", "reporter", "action",
    "account", "interface", "instance", "region", "zone", "vpc", "subnet", "line",
)  # fmt: skip
_LINE = len(_ROW) - 1


def _flat(codes: array[int], values: list[str], table: Table, obj: Any, vocab: _Vocab) -> None:
    for name, code, sub in table:
        value = getattr(obj, name)
        if value is None:
            continue
        if sub is not None:
            _flat(codes, values, sub, value, vocab)
        elif type(value) is str:
            codes.append(code)
            values.append(value)
        elif type(value) is int:
            codes.append(code)
            values.append(str(value))
        else:  # Raw (GKE `service`): rule 8 for a value the structs leave raw
            pairs: list[tuple[str, str]] = []
            _leaf(pairs, _BASE_KEYS[code], value)
            for key, text in pairs:
                codes.append(vocab.code(key))
                values.append(text)


def _add(rows: _Rows, entry: _Entry | None, rec: _Record, where: int, more: list[tuple[str, str]] | None) -> None:
    """Map one record into `rows` (rules 3, 6, 8); `more` are extra pairs the general path found."""
    codes, values = rows.codes, rows.values
    reporter = rec.reporter
    side = _SIDE.get(reporter) if reporter is not None else None
    account = interface = vm = region = zone = vpc_name = subnet = None
    if side is not None:
        if side == "src":
            inst, vpc, gw = rec.src_instance, rec.src_vpc, rec.src_gateway
        else:
            inst, vpc, gw = rec.dest_instance, rec.dest_vpc, rec.dest_gateway
        if inst is not None:
            account, vm, region, zone = inst.project_id, inst.vm_name, inst.region, inst.zone
            interface = vm
            if inst.managed_instance_group is not None:
                _flat(codes, values, _GROUP[side], inst.managed_instance_group, rows.vocab)
        # Each column takes its first non-null candidate (rule 3: the VM's, the gateway's, then the fallbacks); a
        # candidate left over is kept in extra when it differs from the column (rule 8: nothing that differs is lost).
        if gw is not None:
            if gw.type is not None:
                codes.append(_C_GATEWAY[side, "type"])
                values.append(gw.type)
            for name, value, column in (("project_id", gw.project_id, account), ("name", gw.name, interface)):
                if value is not None and column is not None and value != column:
                    codes.append(_C_GATEWAY[side, name])
                    values.append(value)
            if account is None:
                account = gw.project_id
            if interface is None:
                interface = gw.name
            if region is None:
                region = gw.location
            elif gw.location is not None and gw.location != region:
                codes.append(_C_GATEWAY[side, "location"])
                values.append(gw.location)
        if vpc is not None:
            vpc_name, subnet = vpc.vpc_name, vpc.subnetwork_name
            sub_region, vpc_project = vpc.subnetwork_region, vpc.project_id
            if region is None:
                region = sub_region
            elif sub_region is not None and sub_region != region:
                codes.append(_C_VPC[side, "subnetwork_region"])
                values.append(sub_region)
            if account is None:
                account = vpc_project
            elif vpc_project is not None and vpc_project != account:
                codes.append(_C_VPC[side, "project_id"])
                values.append(vpc_project)
        if gw is not None and gw.vpc is not None:
            gvpc = gw.vpc
            if vpc_name is None:
                vpc_name = gvpc.vpc_name
            elif gvpc.vpc_name is not None and gvpc.vpc_name != vpc_name:
                codes.append(_C_GATEWAY[side, "vpc.vpc_name"])
                values.append(gvpc.vpc_name)
            if account is None:
                account = gvpc.project_id
            elif gvpc.project_id is not None and gvpc.project_id != account:
                codes.append(_C_GATEWAY[side, "vpc.project_id"])
                values.append(gvpc.project_id)
    for name in _OTHERS[side]:
        obj = getattr(rec, name)
        if obj is not None:
            _flat(codes, values, _WHOLE[name], obj, rows.vocab)
    if entry is not None:
        if entry.insertId is not None:
            codes.append(_C_INSERT_ID)
            values.append(entry.insertId)
        resource = entry.resource
        labels = resource.labels if resource is not None else None
        if labels is not None:
            project, sub_name = labels.project_id, labels.subnetwork_name
            if account is None:
                account = project
            elif project is not None and project != account:
                codes.append(_C_LABELS["project_id"])
                values.append(project)
            if subnet is None:
                subnet = sub_name
            elif sub_name is not None and sub_name != subnet:
                codes.append(_C_LABELS["subnetwork_name"])
                values.append(sub_name)
            if labels.subnetwork_id is not None:
                codes.append(_C_LABELS["subnetwork_id"])
                values.append(labels.subnetwork_id)
            if labels.location is not None:
                codes.append(_C_LABELS["location"])
                values.append(labels.location)
    for loc, c in ((rec.src_location, _C_SRC_LOCATION), (rec.dest_location, _C_DEST_LOCATION)):
        if loc is None:
            continue
        # Unrolled _flat: nearly every record has one location (the peer outside the VPC).
        if loc.continent is not None:
            codes.append(c[0])
            values.append(loc.continent)
        if loc.country is not None:
            codes.append(c[1])
            values.append(loc.country)
        if loc.region is not None:
            codes.append(c[2])
            values.append(loc.region)
        if loc.city is not None:
            codes.append(c[3])
            values.append(loc.city)
        asn = loc.asn
        if asn is not None:
            codes.append(c[4])
            values.append(asn if type(asn) is str else str(asn))
    if rec.src_gke_details is not None:
        _flat(codes, values, _WHOLE["src_gke_details"], rec.src_gke_details, rows.vocab)
    if rec.dest_gke_details is not None:
        _flat(codes, values, _WHOLE["dest_gke_details"], rec.dest_gke_details, rows.vocab)
    rtt = rec.rtt_msec
    if rtt is not None:
        codes.append(_C_RTT)
        values.append(rtt if type(rtt) is str else str(rtt))
    disposition = rec.disposition
    action = None
    if disposition is not None:
        action = _ACTION.get(disposition)
        if action is None:
            codes.append(_C_DISPOSITION)
            values.append(disposition)
    if more:
        code = rows.vocab.code
        for key, value in more:
            codes.append(code(key))
            values.append(value)
        # Only the general path's keys can meet another (`src_location.city` written as a key of its own).
        start = rows.offsets[-1]
        row = codes[start:]
        if len(set(row)) != len(row):
            twice = next(c for i, c in enumerate(row) if c in row[:i])
            del codes[start:], values[start:]
            raise _Bad(f"extra: {rows.vocab.keys[twice]} would be given twice (a key of that name beside the field)")
    rows.offsets.append(len(codes))
    conn = rec.connection
    if conn is None:
        rows.scalars.append(
            (None, None, None, None, None, rec.packets_sent, rec.bytes_sent, rec.start_time, rec.end_time, reporter,
             action, account, interface, vm, region, zone, vpc_name, subnet, where)
        )  # fmt: skip
    else:
        rows.scalars.append(
            (conn.src_ip, conn.dest_ip, conn.src_port, conn.dest_port, conn.protocol, rec.packets_sent, rec.bytes_sent,
             rec.start_time, rec.end_time, reporter, action, account, interface, vm, region, zone, vpc_name, subnet,
             where)
        )  # fmt: skip


# -- the general path -------------------------------------------------------------------------------------------------


def _kind(data: bytes) -> str:
    first = data[:1]
    if data == b"null":
        return "null"
    return {b"{": "an object", b"[": "an array", b'"': "a string", b"t": "a boolean", b"f": "a boolean"}.get(
        first, "a number"
    )


def _leaf(more: list[tuple[str, str]], key: str, raw: Raw | bytes, depth: int = 1) -> None:
    """Rule 8 for a value the fast path does not know: strings as text, integers in decimal, other scalars and
    arrays as written, objects flattened (deeper than MAX_DEPTH: as written), nulls and empty objects left out."""
    data = bytes(raw)
    first = data[:1]
    if first == b'"':
        more.append((key, _STRING.decode(data)))
    elif first == b"{":
        if depth >= MAX_DEPTH:
            more.append((key, data.decode("utf-8")))
            return
        for name, item in _RAW_OBJECT.decode(data).items():
            _leaf(more, f"{key}.{name}", item, depth + 1)
    elif data == b"null":
        return
    elif data == b"-0":  # an integer's decimal text: JSON integers have no leading zeros, so only -0 changes
        more.append((key, "0"))
    else:
        more.append((key, data.decode("utf-8")))


def _object(raw: Raw, path: str) -> dict[str, Raw] | None:
    data = bytes(raw)
    if data == b"null":
        return None
    try:
        return _RAW_OBJECT.decode(data)
    except msgspec.ValidationError:
        raise _Bad(f"{path}: expected an object, got {_kind(data)}") from None


def _string(raw: Raw, path: str) -> str | None:
    data = bytes(raw)
    if data == b"null":
        return None
    try:
        return _STRING.decode(data)
    except msgspec.ValidationError:
        raise _Bad(f"{path}: expected a string, got {_kind(data)}") from None


def _known(cls: type, raw: Raw, path: str, more: list[tuple[str, str]]) -> Any:
    """An object of rule 3 (connection, an instance, VPC or gateway) on the general path: its known keys typed
    (rule 7), any other kept in extra as `path.key`."""
    fields = _object(raw, path)
    if fields is None:
        return None
    obj = cls()
    strings = _STRING_KEYS.get(cls, ())
    for key, item in fields.items():
        if key not in cls.__struct_fields__:
            _leaf(more, f"{path}.{key}", item)
        elif key in strings:
            setattr(obj, key, _string(item, f"{path}.{key}"))
        elif cls is _Connection:
            value = _scalar(item, f"connection.{key}")
            if key in ("src_ip", "dest_ip"):
                if value is not None and type(value) is not str:
                    raise _Bad(f"connection.{key}: expected a string, got {_kind(bytes(item))}")
            elif value is not None and type(value) not in (int, float, str):
                raise _Bad(f"connection.{key}: expected a number, got {_kind(bytes(item))}")
            setattr(obj, key, value)
        elif cls is _Gateway and key == "vpc":
            sub = _object(item, f"{path}.vpc")
            if sub is not None:
                vpc = _GatewayVpc()
                for name, value in sub.items():
                    if name in _GatewayVpc.__struct_fields__:
                        setattr(vpc, name, _string(value, f"{path}.vpc.{name}"))
                    else:
                        _leaf(more, f"{path}.vpc.{name}", value)
                obj.vpc = vpc
        else:  # type, managed_instance_group: not columns, kept as they are
            _leaf(more, f"{path}.{key}", item)
    return obj


_HIGH_OF = {
    "connection.src_port": 65535,
    "connection.dest_port": 65535,
    "connection.protocol": 255,
    "packets_sent": INT64_MAX,
    "bytes_sent": INT64_MAX,
}


def _scalar(raw: Raw, path: str) -> Any:
    """A value of rules 4-6 on the general path. A JSON number msgspec cannot hold (`1e400`, an integer of 5,000
    digits) is out of every range of rule 4, and not a string."""
    try:
        return _ANY.decode(raw)
    except msgspec.ValidationError:
        high = _HIGH_OF.get(path)
        if high is None:
            raise _Bad(f"{path}: expected a string, got a number") from None
        raise _Bad(f"{path}: expected a number from 0 to {high}, got {bytes(raw)[:RAW_CHARS].decode()}") from None


def _too_deep(data: bytes) -> bool:
    """Whether the JSON text nests objects and arrays more than MAX_NESTING deep (brackets in strings left out)."""
    if data.count(b"{") + data.count(b"[") <= MAX_NESTING:
        return False
    depth = top = 0
    for bracket in _BRACKETS.findall(_STRINGS.sub(b"", data)):
        if bracket in (b"{", b"["):
            depth += 1
            top = max(top, depth)
        else:
            depth -= 1
    return top > MAX_NESTING


def _general(data: bytes) -> tuple[_Entry | None, _Record, list[tuple[str, str]]]:
    """One line the fast path refused, by the same rules key by key (raises _Bad naming the field at fault)."""
    if _too_deep(data):
        raise _Bad(f"objects and arrays nested more than {MAX_NESTING} deep")
    try:
        top = _RAW_OBJECT.decode(data)
    except msgspec.ValidationError:
        raise _Bad(f"not a JSON object: {_kind(data.strip())}") from None
    except msgspec.DecodeError as exc:
        raise _Bad(f"not JSON: {exc}") from None
    more: list[tuple[str, str]] = []
    entry = None
    if "jsonPayload" in top:
        fields = _object(top["jsonPayload"], "jsonPayload")
        if fields is None:
            raise _Bad("jsonPayload: expected an object, got null")
        entry = _envelope(top, more)
    elif "connection" in top:
        fields = top
    else:
        raise _Bad("not a VPC flow log record: no jsonPayload (LogEntry) and no connection (record)")
    rec = _Record()
    for key, raw in fields.items():
        cls = _OBJECTS.get(key)
        if cls is not None:
            setattr(rec, key, _known(cls, raw, key, more))
        elif key in _SCALARS:
            value = _scalar(raw, key)
            if value is not None:
                if key in ("bytes_sent", "packets_sent"):
                    if type(value) not in (int, float, str):
                        raise _Bad(f"{key}: expected a number, got {_kind(bytes(raw))}")
                elif type(value) is not str:
                    raise _Bad(f"{key}: expected a string, got {_kind(bytes(raw))}")
            setattr(rec, key, value)
        else:
            _leaf(more, key, raw)
    return entry, rec, more


def _envelope(top: dict[str, Raw], more: list[tuple[str, str]]) -> _Entry:
    """The LogEntry's insertId and resource labels (rule 8) on the general path."""
    entry = _Entry(jsonPayload=_Record())
    if "insertId" in top:
        entry.insertId = _string(top["insertId"], "insertId")
    resource = _object(top["resource"], "resource") if "resource" in top else None
    if resource is not None and "labels" in resource:
        fields = _object(resource["labels"], "resource.labels")
        if fields is not None:
            labels = _Labels()
            for key, raw in fields.items():
                if key in ("project_id", "subnetwork_name"):
                    setattr(labels, key, _string(raw, f"resource.labels.{key}"))
                else:
                    _leaf(more, f"resource.labels.{key}", raw)
            entry.resource = _Resource(labels=labels)
    return entry


# -- column conversion ------------------------------------------------------------------------------------------------


def _number(value: Any, high: int) -> int | None:
    """One number by rule 4 (the slow path of `_numbers`); ValueError if it is not one."""
    if value is None:
        return None
    kind = type(value)
    if kind is int:
        number = value
    elif kind is float:
        if not value.is_integer():
            raise ValueError
        number = int(value)
    elif kind is str:
        if not _NUMBER_TEXT.fullmatch(value):
            raise ValueError
        digits = value.partition(".")[0].lstrip("0")
        if len(digits) > 19:  # above INT64_MAX (and int() refuses more than 4,300 digits, zero-padded or not)
            raise ValueError
        number = int(digits or "0")
    else:
        raise ValueError
    if number < 0 or number > high:
        raise ValueError
    return number


def _numbers(values: Sequence[Any], high: int) -> tuple[pa.Array, np.ndarray]:
    """A number column (rule 4) as int64 and the mask of rows whose value is not a number in 0..high (null there).

    Column-wise in the common cases (all JSON integers; all strings of digits, as Cloud Logging writes int64), value
    by value otherwise."""
    n = len(values)
    try:
        arr = pa.array(values)
    except (pa.ArrowInvalid, pa.ArrowTypeError, OverflowError):
        arr = None
    if arr is not None:
        kind = arr.type
        if pa.types.is_null(kind):
            return pa.nulls(n, pa.int64()), np.zeros(n, dtype=bool)
        if pa.types.is_int64(kind):
            lo, hi = pc.min_max(arr).values()
            if lo.as_py() >= 0 and hi.as_py() <= high:
                return arr, np.zeros(n, dtype=bool)
        elif pa.types.is_string(kind) and pc.all(pc.match_substring_regex(arr, _DIGITS_PATTERN)).as_py() is not False:
            try:
                ints = pc.cast(arr, pa.int64())
            except (pa.ArrowInvalid, OverflowError):
                ints = None
            if ints is not None and (ints.null_count == n or pc.max(ints).as_py() <= high):
                return ints, np.zeros(n, dtype=bool)
    out: list[int | None] = [None] * n
    bad = np.zeros(n, dtype=bool)
    for i, value in enumerate(values):
        try:
            out[i] = _number(value, high)
        except (ValueError, OverflowError):
            bad[i] = True
    return pa.array(out, pa.int64()), bad


def _one_time(text: str) -> int:
    """Milliseconds of one RFC 3339 time (rule 5); ValueError if it is not one."""
    if not _TIME_TEXT.fullmatch(text):
        raise ValueError
    arr = pa.array([_truncate_fraction(text)])
    ms = int(pc.cast(pc.cast(arr, pa.timestamp("us", "UTC")), pa.int64())[0].as_py()) // 1000
    if not FIRST_MS <= ms <= LAST_MS:
        raise ValueError
    return ms


def _truncate_fraction(text: str) -> str:
    """The time with at most 6 fraction digits: dropping digits floors, and Arrow parses microseconds."""
    return _MICRO.sub(r"\1", text, count=1)


def _times(values: Sequence[str | None]) -> tuple[pa.Array, np.ndarray]:
    """A time column (rule 5) as timestamp[ms, UTC] and the mask of rows that are not RFC 3339 times (null there).

    One regex pass and one cast to nanoseconds in the common case; value by value (microseconds, years 1-9999)
    when a time is outside what nanoseconds hold (1677-2262) or is not one."""
    n = len(values)
    arr = pa.array(values, pa.string())
    if arr.null_count == n:
        return pa.nulls(n, TIME), np.zeros(n, dtype=bool)
    if pc.all(pc.match_substring_regex(arr, _TIME_PATTERN)).as_py() is not False:
        try:
            ns = pc.cast(arr, pa.timestamp("ns", "UTC"))
        except pa.ArrowInvalid:
            ns = None
        if ns is not None:
            # fill_null first: an int64 column with nulls comes out of to_numpy as float64, which rounds
            # nanoseconds since 1970 to ~128 ns (found by the fuzz: .521Z read as .520 next to a missing time).
            raw = pc.cast(ns, pa.int64()).fill_null(0).to_numpy()
            valid = ns.is_valid().to_numpy(zero_copy_only=False)
            ms = np.floor_divide(raw, 1_000_000)
            return pa.array(ms, pa.int64(), mask=~valid).cast(TIME), np.zeros(n, dtype=bool)
    out: list[int | None] = [None] * n
    bad = np.zeros(n, dtype=bool)
    for i, value in enumerate(values):
        if value is None:
            continue
        try:
            out[i] = _one_time(value)
        except (ValueError, pa.ArrowInvalid):
            bad[i] = True
    return pa.array(out, pa.int64()).cast(TIME), bad


def _dictionary(values: Sequence[str | None]) -> pa.Array:
    return pc.dictionary_encode(pa.array(values, pa.string()))


_PATHS = {
    "src_ip": "connection.src_ip",
    "dest_ip": "connection.dest_ip",
    "src_port": "connection.src_port",
    "dest_port": "connection.dest_port",
    "protocol": "connection.protocol",
    "packets": "packets_sent",
    "bytes": "bytes_sent",
    "start": "start_time",
    "end": "end_time",
}
_HIGH = {"src_port": 65535, "dest_port": 65535, "protocol": 255, "packets": INT64_MAX, "bytes": INT64_MAX}


def _columns(
    rows: _Rows, source: str, options: Mapping[str, Any], cache: dict[str, bytes | None]
) -> tuple[FlowBatch, dict[int, str]]:
    """The batch of `rows`, and row index -> reason of the rows refused by rules 4 and 5 (left out of the batch;
    the first column at fault names the error: one error per line)."""
    n = len(rows)
    if n == 0:
        return empty_batch(), {}
    column = dict(zip(_ROW, zip(*rows.scalars, strict=True), strict=True))
    problems: dict[int, str] = {}
    cols: dict[str, pa.Array] = {}
    bad_any = np.zeros(n, dtype=bool)
    for name, out in (("src_ip", "src_addr"), ("dest_ip", "dst_addr")):
        values = column[name]
        addr, bad = parse_addresses(pa.array(values, pa.string()), cache)
        cols[out] = addr
        if bad.any():
            _note(problems, bad, name, values, "expected an IP address")
            bad_any |= bad
    for name, out in (
        ("src_port", "src_port"),
        ("dest_port", "dst_port"),
        ("protocol", "protocol"),
        ("packets", "packets"),
        ("bytes", "bytes"),
    ):
        values = column[name]
        arr, bad = _numbers(values, _HIGH[name])
        if bad.any():
            _note(problems, bad, name, values, f"expected a number from 0 to {_HIGH[name]}")
            bad_any |= bad
        cols[out] = arr
    for name, out in (("start", "time_start"), ("end", "time_end")):
        values = column[name]
        arr, bad = _times(values)
        if bad.any():
            _note(problems, bad, name, values, "expected an RFC 3339 time such as 2024-06-01T12:00:00.123456789Z")
            bad_any |= bad
        cols[out] = arr
    for name in ("account", "region", "zone", "vpc", "subnet", "interface", "instance"):
        cols[name] = pa.array(column[name], pa.string())
    reporter = _dictionary(column["reporter"])
    cols["reporter"] = reporter
    cols["direction"] = _directions(reporter)
    cols["action"] = _dictionary(column["action"])
    cols["provider"] = constant("gcp", n, DICT_STRING)
    cols["source"] = constant(source, n, DICT_STRING)
    rate = options.get("sampling_rate")
    if rate is not None:
        cols["sampling_rate"] = constant(int(rate), n, pa.uint32())
    keys = pa.array(rows.vocab.keys, pa.string()).take(_int32(rows.codes))
    cols["extra"] = pa.MapArray.from_arrays(_int32(rows.offsets), keys, pa.array(rows.values, pa.string()))
    batch = assemble(n, cols)
    keep = ~bad_any
    projects = options.get("projects")
    if projects:
        wanted = pc.is_in(cols["account"], value_set=pa.array(sorted(projects), pa.string()))
        keep &= wanted.fill_null(False).to_numpy(zero_copy_only=False)
    if not keep.all():
        batch = batch.filter(pa.array(keep))
    return batch, problems


def _int32(values: array[int]) -> pa.Array:
    return pa.Array.from_buffers(pa.int32(), len(values), [None, pa.py_buffer(values)])


def _directions(reporter: pa.DictionaryArray) -> pa.Array:
    """direction from the reporter column, mapped on its few distinct values (rule 3)."""
    mapped = pa.array([_DIRECTION.get(v) for v in reporter.dictionary.to_pylist()], pa.string())
    return pc.dictionary_encode(mapped.take(reporter.indices))


def _note(problems: dict[int, str], bad: np.ndarray, name: str, values: Sequence[Any], what: str) -> None:
    for i in np.flatnonzero(bad):
        row = int(i)
        if row not in problems:
            shown = msgspec.json.encode(values[row]).decode()[:RAW_CHARS]
            problems[row] = f"{_PATHS[name]}: {what}, got {shown}"


# -- lines ------------------------------------------------------------------------------------------------------------


def _decode_line(data: bytes, rows: _Rows, where: int, shape: _Shape) -> str | None:
    """Decode one non-blank line into `rows`; the reason if it is an error."""
    for bare in (shape.bare, not shape.bare):
        try:
            if bare:
                rec = _BARE.decode(data)
                if rec.connection is None:
                    continue
                entry = None
            else:
                entry = _ENTRY.decode(data)
                rec = entry.jsonPayload
        except (msgspec.ValidationError, msgspec.DecodeError):
            continue
        shape.bare = bare
        try:
            _add(rows, entry, rec, where, None)
        except _Bad as exc:
            return str(exc)
        return None
    try:
        entry_all, record, more = _general(data)
        _add(rows, entry_all, record, where, more)
    except _Bad as exc:
        return str(exc)
    return None


def _quote(data: bytes) -> str:
    return data[:RAW_CHARS].decode("utf-8", "replace")


class _Lines:
    """The decompressed stream from a byte offset on: `buf` holds what is read and not yet consumed."""

    def __init__(self, chunks: Iterable[bytes], skip: int) -> None:
        self._chunks = iter(chunks)
        self._skip = skip
        self.buf = b""
        self.eof = False

    def fill(self, want: int) -> None:
        """Read until `buf` holds `want` bytes or the stream ends."""
        parts = [self.buf] if self.buf else []
        have = len(self.buf)
        while have < want and not self.eof:
            try:
                chunk = next(self._chunks)
            except StopIteration:
                self.eof = True
                break
            if self._skip:
                if len(chunk) <= self._skip:
                    self._skip -= len(chunk)
                    continue
                chunk = chunk[self._skip :]
                self._skip = 0
            if chunk:
                parts.append(chunk)
                have += len(chunk)
        self.buf = parts[0] if len(parts) == 1 else b"".join(parts)

    def skip_line(self) -> tuple[int, bytes]:
        """Pass over the line `buf` starts with, reading on without holding it: (its length with the LF, its head)."""
        head = self.buf[:RAW_CHARS]
        skipped = 0
        while True:
            cut = self.buf.find(b"\n")
            if cut >= 0:
                self.buf = self.buf[cut + 1 :]
                return skipped + cut + 1, head
            skipped += len(self.buf)
            self.buf = b""
            if self.eof:
                return skipped, head
            self.fill(READ_SIZE)
            if not self.buf:
                return skipped, head


READ_SIZE = 1 << 20


class _Shape:
    """Which decoder succeeded last: a file of bare records is tried as bare records first."""

    __slots__ = ("bare",)

    def __init__(self) -> None:
        self.bare = False


def parse_lines(
    chunks: Iterable[bytes],
    *,
    unit: str,
    source: str,
    options: Mapping[str, Any] | None = None,
    resume: dict[str, Any] | None = None,
    block_size: int = BLOCK_SIZE,
) -> Iterator[ParseResult]:
    """Newline-delimited LogEntry (or bare record) JSON, decompressed, in batches (rules in the module docstring)."""
    opts = options or {}
    offset = int(resume.get("offset", 0)) if resume else 0
    line = int(resume.get("line", 0)) if resume else 0
    # The seam may have sought to the resume point (collector/parsing.py, "Resuming by seeking"): skip only what
    # lies between where the chunks start and it.
    stream = _Lines(chunks, offset - int(opts.get("stream_offset", 0)))
    cache: dict[str, bytes | None] = {}
    shape = _Shape()
    while True:
        # Enough to hold the line that crosses block_size, unless that line is longer than MAX_LINE.
        stream.fill(block_size + MAX_LINE + 1)
        buf = stream.buf
        if not buf:
            break
        cut = buf.find(b"\n", block_size - 1) if len(buf) >= block_size else -1
        overlong = False
        if cut >= 0:
            end = cut + 1
        elif stream.eof:
            end = len(buf)
        else:  # the line crossing block_size goes past the buffer: longer than MAX_LINE
            end = buf.rfind(b"\n", 0, block_size - 1) + 1
            overlong = True
        block = buf[:end] if end < len(buf) else buf
        parts = block.split(b"\n", MAX_BATCH_ROWS)
        if len(parts) > MAX_BATCH_ROWS:  # cut after the MAX_BATCH_ROWS-th line
            end -= len(parts.pop())
            overlong = False
            block = block[:end]
        elif parts[-1] == b"":
            parts.pop()
        errors: list[ParseError] = []
        rows = _Rows(_Vocab())  # per batch: keys met in one batch, however many the object holds
        line = _block(parts, block.isascii(), rows, unit, line, errors, shape)
        del block
        stream.buf = buf[end:]
        offset += end
        if overlong:
            skipped, head = stream.skip_line()
            offset += skipped
            line += 1
            errors.append(ParseError(unit, line, f"line longer than {MAX_LINE} bytes: skipped", _quote(head)))
        batch, problems = _columns(rows, source, opts, cache)
        for index, reason in problems.items():
            errors.append(ParseError(unit, rows.scalars[index][_LINE], reason, ""))
        errors.sort(key=lambda e: e.line or 0)
        yield ParseResult(batch, errors, {"offset": offset, "line": line}, lines=len(rows) + len(errors))
    yield ParseResult(empty_batch(), [], {"offset": offset, "line": line}, final=True)


def _block(
    parts: list[bytes],
    ascii_block: bool,
    rows: _Rows,
    unit: str,
    line: int,
    errors: list[ParseError],
    shape: _Shape,
) -> int:
    """Decode the lines of one block into `rows`; the line count after them."""
    for data in parts:
        line += 1
        if len(data) > MAX_LINE:
            errors.append(ParseError(unit, line, f"line longer than {MAX_LINE} bytes: skipped", _quote(data)))
            continue
        if not data or data.isspace():
            continue
        if not ascii_block:
            try:
                data.decode("utf-8")
            except UnicodeDecodeError as exc:
                errors.append(ParseError(unit, line, f"not UTF-8 at byte {exc.start} of the line", _quote(data)))
                continue
        reason = _decode_line(data, rows, line, shape)
        if reason is not None:
            errors.append(ParseError(unit, line, reason, _quote(data)))
    return line


def parse_entries(
    bodies: Sequence[bytes],
    *,
    unit: str,
    source: str,
    names: Sequence[str],
    options: Mapping[str, Any] | None = None,
) -> tuple[ParseResult, list[int]]:
    """Message bodies, each one LogEntry (or bare record), as one batch; errors name `names[i]` (a message id) as
    their unit. Also returns the indexes of the bodies that are bad (no flow and an error)."""
    opts = options or {}
    rows = _Rows(_Vocab())
    errors: list[ParseError] = []
    bad: list[int] = []
    shape = _Shape()
    for i, body in enumerate(bodies):
        data = body.removeprefix(b"\xef\xbb\xbf")
        reason: str | None
        if len(data) > MAX_LINE:
            reason = f"message longer than {MAX_LINE} bytes"
        elif not data.strip():
            reason = "empty message"
        else:
            try:
                data.decode("utf-8")
            except UnicodeDecodeError as exc:
                reason = f"not UTF-8 at byte {exc.start}"
            else:
                reason = _decode_line(data, rows, i, shape)
        if reason is not None:
            errors.append(ParseError(names[i], None, reason, _quote(data)))
            bad.append(i)
    batch, problems = _columns(rows, source, opts, {})
    for index, reason in problems.items():
        i = rows.scalars[index][_LINE]
        errors.append(ParseError(names[i], None, reason, _quote(bodies[i])))
        bad.append(i)
    bad.sort()
    result = ParseResult(batch, errors, {"offset": len(bodies)}, lines=len(bodies), final=True)
    return result, bad


def looks_like_gcp(head: bytes) -> bool:
    """Whether the first decompressed bytes are GCP flow log JSON lines: among the first SNIFF_LINES non-blank lines
    complete in the head, one is a LogEntry whose jsonPayload has `connection`, or a record with `connection` and
    `reporter` (a damaged first line costs that line, not the file)."""
    lines = head.split(b"\n")
    if len(lines) > 1:
        lines = lines[:-1]
    checked = 0
    for raw in lines:
        text = raw.strip()
        if not text:
            continue
        checked += 1
        if checked > SNIFF_LINES:
            break
        if text[:1] != b"{" or _too_deep(text):
            continue
        # Raw values: a number no decoder holds (1e400) in a record makes it an error line, not another format.
        try:
            value = _RAW_OBJECT.decode(text)
            payload = _RAW_OBJECT.decode(bytes(value["jsonPayload"])) if "jsonPayload" in value else None
        except (msgspec.DecodeError, msgspec.ValidationError):
            continue
        if payload is not None and bytes(payload.get("connection", b""))[:1] == b"{":
            return True
        if bytes(value.get("connection", b""))[:1] == b"{" and "reporter" in value:
            return True
    return False
