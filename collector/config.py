"""The YAML config file -> a validated, typed, frozen `Config`, checked completely before anything starts.

Why it is built this way:
- Every problem is reported at once, each located as `FILE:LINE:COL: key.path: message`, so an operator fixes a
  file in one pass (`flowcollector check`) instead of one restart per typo. Locations come from the YAML node tree
  (`yaml.compose`): constructed Python objects have lost them.
- The dataclasses below *are* the schema. One small walker reads their type hints, plus `Annotated` markers for
  durations, sizes, choices and bounds, so a new option is a new field and nothing else. The markers do not change
  what a field holds: `Annotated[float, Duration]` is a `float` to every reader.
- Relative paths (`state_dir`, a source's or a sink's `path`, and their defaults) are resolved against the directory
  of the config file, not the current directory, so the same file works from systemd, cron or `-c /etc/...` in a
  shell anywhere. The directory is taken as written (made absolute, not symlink-resolved), so a config mounted
  through a symlink (Kubernetes ConfigMaps) resolves against the directory it appears in.
- `${VAR}` and `${VAR:-default}` are replaced from the environment in every string value before it is converted
  (as in sh, the default also applies when VAR is set but empty). Only upper-case names (`[A-Z_][A-Z0-9_]*`) are
  variables, so AWS LogFormat text such as `${srcaddr} ${account-id}` is left alone; `$${` writes a literal `${`.
  A value that interpolation changed is re-typed as if written unquoted, so `workers: ${WORKERS:-4}` is an integer.
"""

from __future__ import annotations

import difflib
import math
import os
import re
import types
from collections.abc import Callable, Iterable, Mapping
from dataclasses import MISSING, dataclass, fields, is_dataclass
from fractions import Fraction
from functools import cache
from pathlib import Path
from typing import Annotated, Any, Union, get_args, get_origin, get_type_hints

import yaml
from yaml.nodes import MappingNode, Node, ScalarNode, SequenceNode

from adapters.aws.fields import KNOWN_FIELDS, parse_field_list


class ConfigError(Exception):
    """Every problem found in a config file, each one line `FILE:LINE:COL: key.path: message`, in file order."""

    def __init__(self, errors: list[str]) -> None:
        super().__init__("\n".join(errors))
        self.errors: list[str] = list(errors)


# --- durations and sizes ---------------------------------------------------------------------------------------

_DURATION_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}
_NUMBER = r"(?:\d+(?:\.\d*)?|\.\d+)"
_DURATION = re.compile(rf"(?:{_NUMBER}(?:ms|s|m|h|d))+")
_DURATION_PART = re.compile(rf"({_NUMBER})(ms|s|m|h|d)")
_SIZE = re.compile(rf"({_NUMBER})\s*([a-z]*)")
_SIZE_UNITS = {
    "": 1, "b": 1,
    "kb": 10**3, "mb": 10**6, "gb": 10**9, "tb": 10**12,
    "kib": 2**10, "mib": 2**20, "gib": 2**30, "tib": 2**40,
}  # fmt: skip


def parse_duration(v: object) -> float:
    """Seconds from a number of seconds (`10`, `2.5`, `"10"`) or a string with units (`"500ms"`, `"5m"`, `"1h30m"`).

    Units are ms, s, m, h, d; negative, infinite and unit-less-but-not-a-number values raise ValueError, whose
    message is what the operator sees.
    """
    hint = "expected seconds or a number with a unit ms, s, m, h, d (e.g. '500ms', '10s', '5m', '1h')"
    if isinstance(v, bool) or not isinstance(v, int | float | str):
        raise ValueError(f"invalid duration {v!r}: {hint}")
    if isinstance(v, str):
        text = v.strip()
        if re.fullmatch(_NUMBER, text):
            seconds = float(text)
        elif _DURATION.fullmatch(text):
            seconds = sum(float(n) * _DURATION_UNITS[u] for n, u in _DURATION_PART.findall(text))
        else:
            raise ValueError(f"invalid duration {v!r}: {hint}")
    else:
        seconds = float(v)
    if not math.isfinite(seconds) or seconds < 0:
        raise ValueError(f"invalid duration {v!r}: must be a finite number of seconds >= 0")
    return seconds


def parse_size(v: object) -> int:
    """Bytes from a number (`1024`) or a string with a unit: B, KB/MB/GB/TB (powers of 1000), KiB/MiB/GiB/TiB (1024).

    Units are case-insensitive (a `b` is always a byte); fractions are allowed when they come to whole bytes
    (`"1.5KiB"` = 1536). Anything else raises ValueError.
    """
    hint = "expected bytes or a number with a unit B, KB, MB, GB, TB, KiB, MiB, GiB, TiB (e.g. '64KiB', '128MiB')"
    if isinstance(v, bool) or not isinstance(v, int | float | str):
        raise ValueError(f"invalid size {v!r}: {hint}")
    if isinstance(v, str):
        m = _SIZE.fullmatch(v.strip().lower())
        if not m or m.group(2) not in _SIZE_UNITS:
            raise ValueError(f"invalid size {v!r}: {hint}")
        size = Fraction(m.group(1)) * _SIZE_UNITS[m.group(2)]
    elif isinstance(v, float) and not math.isfinite(v):
        raise ValueError(f"invalid size {v!r}: {hint}")
    else:
        size = Fraction(v)
    if size < 0 or size.denominator != 1:
        raise ValueError(f"invalid size {v!r}: must be a whole number of bytes >= 0")
    return int(size)


# --- field markers (used in `Annotated[...]`) ---------------------------------------------------------------------

_INVALID: Any = object()  # "this value had an error, already reported": never stored in a config


@dataclass(frozen=True)
class _Parse:
    """Marker: the scalar (a number or a string) is converted by `fn`, which raises ValueError with the message."""

    what: str
    fn: Callable[[Any], Any]

    def convert(self, walker: _Walker, node: Node, key: str) -> Any:
        value = walker.scalar(node, key, ("int", "float", "str"), self.what, retype=True)
        if value is _INVALID:
            return _INVALID
        try:
            return self.fn(value)
        except ValueError as exc:
            return walker.error(node, key, str(exc))


Duration = _Parse("a duration", parse_duration)
Size = _Parse("a size", parse_size)


class Choice:
    """Marker: the string must be one of `values` (exact match; a near miss is suggested)."""

    def __init__(self, *values: str) -> None:
        self.values = values

    def check(self, value: Any) -> str | None:
        if value in self.values:
            return None
        hint = difflib.get_close_matches(str(value).lower(), self.values, n=1)
        return f"expected one of {', '.join(self.values)}, got {value!r}" + _did_you_mean(hint)


@dataclass(frozen=True)
class Min:
    """Marker: a number must be >= `bound` (> `bound` when `exclusive`)."""

    bound: float
    exclusive: bool = False

    def check(self, value: Any) -> str | None:
        if self.exclusive and value <= self.bound:
            return f"must be greater than {self.bound:g}, got {value!r}"
        if not self.exclusive and value < self.bound:
            return f"must be at least {self.bound:g}, got {value!r}"
        return None


class _NonEmpty:
    """Marker: a string must not be empty or blank (a blank name or glob is always a mistake)."""

    def check(self, value: Any) -> str | None:
        return "must not be empty" if not str(value).strip() else None


NonEmpty = _NonEmpty()
Positive = Min(0, exclusive=True)


class _AwsFields:
    """Marker: an AWS field order, as a string (names, a LogFormat, `default`, `tgw-default`) or a list of names.

    Unknown names are allowed (the parser keeps them in `extra`, and AWS adds fields), but a name one typo away
    from a known field is an error: it would silently leave a schema column empty.
    """

    def convert(self, walker: _Walker, node: Node, key: str) -> Any:
        if isinstance(node, SequenceNode):
            items = [walker.value(item, str, f"{key}[{i}]") for i, item in enumerate(node.value)]
            if any(item is _INVALID for item in items):
                return _INVALID
            spec = " ".join(items)
        else:
            spec = walker.value(node, str, key)
            if spec is _INVALID:
                return _INVALID
        try:
            names = parse_field_list(spec)
        except ValueError:
            return walker.error(node, key, "empty field list")
        problems = []
        for name in names:
            if name not in KNOWN_FIELDS:
                hint = difflib.get_close_matches(name, KNOWN_FIELDS, n=1, cutoff=0.85)
                if hint:
                    problems.append(f"unknown AWS field {name!r}{_did_you_mean(hint)}")
        if problems:
            return walker.error(node, key, "; ".join(problems))
        return names


AwsFields = _AwsFields()


@dataclass(frozen=True, eq=False)
class _Registry:
    """Marker: a list of sections tagged by `type:` (dataclass from `types`) with unique `name:`s; at least one.

    `types` is the live registry dict, so types registered later are accepted without touching this module.
    """

    kind: str
    types: Mapping[str, type]

    def convert(self, walker: _Walker, node: Node, key: str) -> Any:
        if not isinstance(node, SequenceNode):
            return walker.error(node, key, f"expected a list of {self.kind}s, got {_kind(node)}")
        known = ", ".join(self.types)
        out: list[Any] = []
        seen: dict[str, Node] = {}
        claimed: dict[str, tuple[str, int]] = {}
        for i, item in enumerate(node.value):
            ikey = f"{key}[{i}]"
            if not isinstance(item, MappingNode):
                out.append(walker.error(item, ikey, f"expected a mapping, got {_kind(item)}"))
                continue
            pairs = walker.pairs(item, ikey)
            cls: type | None = None
            if "type" not in pairs:
                walker.error(item, ikey, f"missing required key 'type' (one of: {known})")
            else:
                tnode = pairs["type"][1]
                tname = walker.value(tnode, str, f"{ikey}.type")
                if tname is not _INVALID and tname not in self.types:
                    hint = difflib.get_close_matches(tname, self.types, n=1)
                    also = f"; did you mean {hint[0]!r}?" if hint else ""
                    walker.error(tnode, f"{ikey}.type", f"unknown {self.kind} type {tname!r} (known: {known}{also})")
                elif tname is not _INVALID:
                    cls = self.types[tname]
            name: Any = _INVALID
            if "name" not in pairs:
                walker.error(item, ikey, "missing required key 'name'")
            else:
                nnode = pairs["name"][1]
                name = walker.value(nnode, _Name, f"{ikey}.name")
                if name is not _INVALID:
                    if name in seen:
                        first = seen[name].start_mark.line + 1
                        walker.error(
                            nnode, f"{ikey}.name", f"duplicate {self.kind} name {name!r} (first at line {first})"
                        )
                        name = _INVALID
                    else:
                        seen[name] = nnode
            if cls is None:
                out.append(_INVALID)
                continue
            preset = {"type": tname, "name": "" if name is _INVALID else name}
            obj = walker.dataclass(item, cls, ikey, preset=preset, consumed=("type", "name"), pairs=pairs)
            out.append(_INVALID if name is _INVALID else obj)
            # Exclusive resources (a file sink's directory): two components claiming one would wreck each other.
            claims = getattr(obj, "claims", None) if obj is not _INVALID else None
            for field_name, resource in claims() if claims else ():
                where = pairs[field_name][1] if field_name in pairs else item
                if resource in claimed:
                    other, line = claimed[resource]
                    walker.error(
                        where,
                        f"{ikey}.{field_name}",
                        f"{resource} is already used by {self.kind} {other!r} (line {line}): each needs its own",
                    )
                else:
                    claimed[resource] = (name, where.start_mark.line + 1)
        return _INVALID if any(item is _INVALID for item in out) else tuple(out)

    def check(self, value: Any) -> str | None:
        return None if value else f"at least one {self.kind} is required"


_Name = Annotated[str, NonEmpty]


# --- the schema ---------------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class LocalSourceConfig:
    """`type: local`: flow log files in a directory (searched recursively) or a single file.

    `path` is resolved against the config file's directory when relative. `glob` is an fnmatch pattern on the file
    *name*. `aws_fields` is the field order of AWS text without a header line (None: the v2 default format).
    `settle`: in daemon mode a file must be unchanged this long before it is read, so half-copied files are not.
    """

    name: _Name
    type: str = "local"
    path: Path = Path(".")
    glob: Annotated[str, NonEmpty] = "*"
    recursive: bool = True
    provider: Annotated[str, Choice("auto", "aws", "gcp", "azure")] = "auto"
    aws_fields: Annotated[tuple[str, ...] | None, AwsFields] = None
    poll_interval: Annotated[float, Duration, Positive] = 10.0
    settle: Annotated[float, Duration] = 2.0


# Compressions each file format supports; the first is the default when `compression` is not given.
FILE_COMPRESSIONS: dict[str, tuple[str, ...]] = {
    "jsonl": ("none", "gzip"),
    "parquet": ("zstd", "snappy", "gzip", "none"),
}


class _InvalidField(ValueError):
    """Raised by a dataclass's `__post_init__` for a cross-field problem, so the loader can point at the key.

    Only for problems that span fields: `__post_init__` runs once every field converted, so a single-value check
    here would be reported only after the other errors are fixed (a marker's `check` is reported with them)."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"{field}: {message}")
        self.field = field
        self.message = message


@dataclass(frozen=True, slots=True)
class FileSinkConfig:
    """`type: file`: JSON Lines or Parquet files written into the directory `path` (relative: to the config's dir).

    `compression` None (the default) means the format's default, resolved on construction: "none" for jsonl,
    "zstd" for parquet; after construction it is always a concrete string. A compression the format does not
    support raises ValueError here, so hand-built configs are checked too.
    """

    name: _Name
    type: str = "file"
    path: Path = Path("./var/flows")
    format: Annotated[str, Choice(*FILE_COMPRESSIONS)] = "jsonl"
    rotate_bytes: Annotated[int, Size, Min(1)] = 128 * 2**20
    rotate_interval: Annotated[float, Duration, Positive] = 300.0
    compression: str | None = None
    fsync: bool = True
    flush_interval: Annotated[float, Duration, Positive] = 1.0

    def claims(self) -> tuple[tuple[str, str], ...]:
        """Recovery after a crash settles the part files of a directory by one sink's journal: one sink each."""
        return (("path", f"directory {os.path.realpath(self.path)}"),)

    def __post_init__(self) -> None:
        supported = FILE_COMPRESSIONS.get(self.format)
        if supported is None:
            raise _InvalidField("format", f"expected one of {', '.join(FILE_COMPRESSIONS)}, got {self.format!r}")
        if self.compression is None:
            object.__setattr__(self, "compression", supported[0])
        elif self.compression not in supported:
            raise _InvalidField(
                "compression",
                f"{self.compression!r} is not supported with format {self.format} "
                f"(expected one of {', '.join(supported)})",
            )


@dataclass(frozen=True, slots=True)
class StdoutSinkConfig:
    """`type: stdout`: JSON Lines on standard output."""

    name: _Name
    type: str = "stdout"


@dataclass(frozen=True, slots=True)
class PipelineConfig:
    """`queue_batches`: batches queued per sink before sources wait (bounds memory); `workers`: parse threads,
    0 = one per CPU. `give_up_after`: with `run --once`, a sink (or the checkpoint store) failing this long ends
    the run with an error (a daemon retries forever: an outage must not stop it)."""

    queue_batches: Annotated[int, Min(1)] = 8
    workers: Annotated[int, Min(0)] = 0
    give_up_after: Annotated[float, Duration, Positive] = 300.0


SourceConfig = LocalSourceConfig  # later: a Union as more adapters land
SinkConfig = FileSinkConfig | StdoutSinkConfig
SOURCE_TYPES: dict[str, type] = {"local": LocalSourceConfig}
SINK_TYPES: dict[str, type] = {"file": FileSinkConfig, "stdout": StdoutSinkConfig}


def split_listen(text: str) -> tuple[str, int]:
    """`host:port` or `[v6]:port` to listen on -> (host, port); port 0 means any free port."""
    from collector.sinks.netflow.config import parse_host_port

    host, sep, port = text.strip().rpartition(":")
    if sep and port == "0":
        return parse_host_port(f"{host}:1")[0], 0
    return parse_host_port(text)


def parse_listen(value: object) -> str:
    """`host:port` for a server to listen on, normalized; a bare port listens on localhost only."""
    text = str(value).strip() if isinstance(value, str | int) and not isinstance(value, bool) else ""
    if text.isdigit():
        text = f"127.0.0.1:{text}"
    host, port = split_listen(text)
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


Listen = _Parse("a host:port to listen on", parse_listen)


@dataclass(frozen=True, slots=True)
class Config:
    """A whole config file. `path` is the file it came from (absolute); every relative path in it, `state_dir`
    included, has been resolved against `path.parent`. `progress_interval` 0 disables progress log lines.
    `metrics_listen` ("host:port") serves Prometheus metrics at /metrics; None: no endpoint."""

    path: Path
    state_dir: Path = Path("./var/state")
    log_level: Annotated[str, Choice("debug", "info", "warning", "error")] = "info"
    progress_interval: Annotated[float, Duration] = 10.0
    metrics_listen: Annotated[str | None, Listen] = None
    pipeline: PipelineConfig = PipelineConfig()
    sources: Annotated[tuple[SourceConfig, ...], _Registry("source", SOURCE_TYPES)] = ()
    sinks: Annotated[tuple[SinkConfig, ...], _Registry("sink", SINK_TYPES)] = ()


# --- loading ------------------------------------------------------------------------------------------------------


def load_config(path: str | Path) -> Config:
    """Read and validate a config file; ConfigError lists every problem (unreadable file and YAML syntax included).

    Errors name the file as given here, so they match what the operator typed.
    """
    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError([f"{path}: cannot read config: {exc.strerror or exc}"]) from None
    except UnicodeDecodeError as exc:
        raise ConfigError([f"{path}: cannot read config: not UTF-8 text (byte {exc.start})"]) from None
    return parse_config(text, Path(path))


def parse_config(text: str, path: Path) -> Config:
    """Validate config text as if read from `path` (which need not exist): relative paths resolve against its dir."""
    display = str(path)
    try:
        root = yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.MarkedYAMLError as exc:
        raise ConfigError([_yaml_error(display, exc)]) from None
    except yaml.YAMLError as exc:
        raise ConfigError([_yaml_error(display, exc, text)]) from None
    if root is None or (isinstance(root, ScalarNode) and root.tag == _TAG + "null" and not root.value.strip()):
        raise ConfigError([f"{display}:1:1: empty config"])
    absolute = Path(os.path.abspath(path))
    walker = _Walker(display, absolute.parent, os.environ)
    config = walker.dataclass(root, Config, "", preset={"path": absolute})
    if walker.errors:
        raise ConfigError([text for *_, text in sorted(walker.errors, key=lambda e: e[:3])])
    return config


def _yaml_error(display: str, exc: yaml.YAMLError, text: str = "") -> str:
    if isinstance(exc, yaml.MarkedYAMLError):
        mark = exc.problem_mark or exc.context_mark
        message = f"invalid YAML: {exc.problem or exc.context}"
        if exc.context and exc.problem:
            message += f" ({exc.context}"
            if exc.context_mark is not None:
                message += f" at line {exc.context_mark.line + 1}, column {exc.context_mark.column + 1}"
            message += ")"
        if mark is None:
            return f"{display}: {message}"
        return f"{display}:{mark.line + 1}:{mark.column + 1}: {message}"
    position = getattr(exc, "position", None)
    if isinstance(exc, yaml.reader.ReaderError) and position is not None:
        before = text[:position]
        line, column = before.count("\n") + 1, position - (before.rfind("\n") + 1) + 1
        return f"{display}:{line}:{column}: invalid YAML: {exc.reason} (character #x{exc.character:04x})"
    return f"{display}: invalid YAML: {exc}"


# --- the walker ---------------------------------------------------------------------------------------------------

_TAG = "tag:yaml.org,2002:"
_KINDS = {
    "str": "a string", "int": "an integer", "float": "a number", "bool": "a boolean", "null": "null",
    "timestamp": "a date", "binary": "binary data",
}  # fmt: skip
_ENV_REF = re.compile(r"\$\$\{|\$\{([A-Z_][A-Z0-9_]*)(?::-([^}]*))?\}")


def _kind(node: Node, tag: str | None = None) -> str:
    """How an error message names what a node holds: `a list`, `a string ('abc')`, ..."""
    if isinstance(node, SequenceNode):
        return "a list"
    if isinstance(node, MappingNode):
        return "a mapping"
    tag = tag or node.tag
    kind = _KINDS.get(tag.removeprefix(_TAG), f"a value tagged {tag}")
    return kind if tag == _TAG + "null" else f"{kind} ({node.value!r})"


def _did_you_mean(matches: Iterable[str]) -> str:
    matches = list(matches)
    return f" (did you mean {matches[0]!r}?)" if matches else ""


def _join(key: str, name: str) -> str:
    return f"{key}.{name}" if key else name


@cache
def _hints(cls: type) -> dict[str, Any]:
    return get_type_hints(cls, include_extras=True)


def _split(tp: Any) -> tuple[Any, tuple[Any, ...], bool]:
    """A type hint -> (base type, its Annotated markers, whether None is allowed)."""
    markers: tuple[Any, ...] = ()
    if get_origin(tp) is Annotated:
        tp, *rest = get_args(tp)
        markers = tuple(rest)
    optional = False
    if get_origin(tp) in (Union, types.UnionType) and type(None) in get_args(tp):
        optional = True
        rest = [a for a in get_args(tp) if a is not type(None)]
        tp = rest[0] if len(rest) == 1 else Union[tuple(rest)]  # noqa: UP007
    return tp, markers, optional


class _Walker:
    """Converts YAML nodes to typed values by type hint; errors are collected as (line, col, seq, text)."""

    def __init__(self, display: str, base: Path, env: Mapping[str, str]) -> None:
        self.display = display
        self.base = base
        self.env = env
        self.errors: list[tuple[int, int, int, str]] = []
        self._constructor = yaml.constructor.SafeConstructor()
        self._resolver = yaml.resolver.Resolver()

    def error(self, node: Node, key: str, message: str) -> Any:
        """Record an error at `node`; returns _INVALID so converters can `return self.error(...)`."""
        line, col = node.start_mark.line + 1, node.start_mark.column + 1
        where = f"{self.display}:{line}:{col}"
        self.errors.append(
            (line, col, len(self.errors), f"{where}: {key}: {message}" if key else f"{where}: {message}")
        )
        return _INVALID

    # -- mappings

    def pairs(self, node: MappingNode, key: str) -> dict[str, tuple[Node, Node]]:
        """key -> (key node, value node), with merge keys (`<<: *defaults`) applied and duplicate keys reported."""
        own: dict[str, tuple[Node, Node]] = {}
        merged: dict[str, tuple[Node, Node]] = {}
        for knode, vnode in node.value:
            if knode.tag == _TAG + "merge":
                sources = vnode.value if isinstance(vnode, SequenceNode) else [vnode]
                if not all(isinstance(s, MappingNode) for s in sources):
                    self.error(vnode, key, "'<<' must merge a mapping or a list of mappings")
                    continue
                for source in sources:
                    for name, pair in self.pairs(source, key).items():
                        merged.setdefault(name, pair)
                continue
            if not isinstance(knode, ScalarNode) or knode.tag != _TAG + "str":
                self.error(knode, key, f"keys must be strings, got {_kind(knode)}")
                continue
            if knode.value in own:
                first = own[knode.value][0].start_mark.line + 1
                self.error(knode, _join(key, knode.value), f"duplicate key (first at line {first})")
                continue
            own[knode.value] = (knode, vnode)
        return own | {name: pair for name, pair in merged.items() if name not in own}

    def dataclass(
        self,
        node: Node,
        cls: type,
        key: str,
        preset: Mapping[str, Any] | None = None,
        consumed: tuple[str, ...] = (),
        pairs: dict[str, tuple[Node, Node]] | None = None,
    ) -> Any:
        """A dataclass from a mapping. `preset` fields are not read from YAML; `consumed` keys were read by the
        caller (allowed, skipped). Unknown keys, missing required keys and bad values are all reported."""
        if not isinstance(node, MappingNode):
            return self.error(node, key, f"expected a mapping, got {_kind(node)}")
        if pairs is None:
            pairs = self.pairs(node, key)
        preset = preset or {}
        hints = _hints(cls)
        settable = [f for f in fields(cls) if f.init and f.name not in preset]
        readable = {f.name for f in settable}
        known = sorted(readable | set(consumed))
        values = dict(preset)
        ok = True  # unknown keys are reported but do not stop the cross-field checks of construction
        for name, (knode, vnode) in pairs.items():
            if name in consumed:
                continue
            if name in readable:
                value = self.value(vnode, hints[name], _join(key, name))
                ok = ok and value is not _INVALID
                values[name] = value
                continue
            hint = difflib.get_close_matches(name, known, n=1)
            self.error(
                knode, _join(key, name), "unknown key" + (_did_you_mean(hint) or f" (known keys: {', '.join(known)})")
            )
        for f in settable:
            if f.name in pairs:
                continue
            if f.default is MISSING and f.default_factory is MISSING:
                ok = False
                self.error(node, key, f"missing required key {f.name!r}")
                continue
            value = self.default(node, f.default, hints[f.name], _join(key, f.name))
            ok = ok and value is not _INVALID
            values[f.name] = value
        if not ok:
            # `__post_init__` needs every field, so its checks wait for a file whose keys all converted: that is
            # why a check of one value belongs in a marker (it runs above), and `__post_init__` keeps only checks
            # that span fields.
            return _INVALID
        try:
            return cls(**values)
        except _InvalidField as exc:
            where = pairs[exc.field][1] if exc.field in pairs else node
            return self.error(where, _join(key, exc.field), exc.message)

    def default(self, node: Node, value: Any, tp: Any, key: str) -> Any:
        """A field's default, made concrete like a read value: paths resolved, checks applied (`sources: ()`)."""
        base, markers, _ = _split(tp)
        if base is Path and value is not None:
            value = self.base / value
        for marker in markers:
            check = getattr(marker, "check", None)
            message = check(value) if check else None
            if message:
                return self.error(node, key, message)
        return value

    # -- values

    def value(self, node: Node, tp: Any, key: str) -> Any:
        """Convert `node` to the type hint `tp` (with its markers), or report why not and return _INVALID."""
        base, markers, optional = _split(tp)
        if optional and isinstance(node, ScalarNode) and node.tag == _TAG + "null":
            return None
        converter = next((m for m in markers if hasattr(m, "convert")), None)
        value = converter.convert(self, node, key) if converter else self.typed(node, base, key)
        if value is _INVALID:
            return _INVALID
        for marker in markers:
            check = getattr(marker, "check", None)
            message = check(value) if check else None
            if message:
                return self.error(node, key, message)
        return value

    def typed(self, node: Node, tp: Any, key: str) -> Any:
        if is_dataclass(tp):
            return self.dataclass(node, tp, key)
        if tp is str:
            return self.scalar(node, key, ("str",), "a string", retype=False)
        if tp is bool:
            return self.scalar(node, key, ("bool",), "a boolean", retype=True)
        if tp is int:
            return self.scalar(node, key, ("int",), "an integer", retype=True)
        if tp is float:
            value = self.scalar(node, key, ("int", "float"), "a number", retype=True)
            if value is not _INVALID and not math.isfinite(value):
                return self.error(node, key, f"expected a finite number, got {value!r}")
            return value if value is _INVALID else float(value)
        if tp is Path:
            text = self.scalar(node, key, ("str",), "a string", retype=False)
            if text is _INVALID:
                return _INVALID
            if not text.strip():
                return self.error(node, key, "expected a path, got an empty string")
            return self.base / Path(text).expanduser()
        if get_origin(tp) is tuple and len(get_args(tp)) == 2 and get_args(tp)[1] is Ellipsis:
            if not isinstance(node, SequenceNode):
                return self.error(node, key, f"expected a list, got {_kind(node)}")
            items = [self.value(item, get_args(tp)[0], f"{key}[{i}]") for i, item in enumerate(node.value)]
            return _INVALID if any(item is _INVALID for item in items) else tuple(items)
        raise TypeError(f"config field {key}: unsupported type {tp!r}")  # a schema bug, not a config error

    def scalar(self, node: Node, key: str, tags: tuple[str, ...], what: str, retype: bool) -> Any:
        """The Python value of a scalar whose tag is one of `tags` (short names), `${VAR}` interpolated first.

        With `retype`, a string that interpolation changed is re-typed as if written unquoted (`"${N}"` -> 8).
        """
        if not isinstance(node, ScalarNode):
            return self.error(node, key, f"expected {what}, got {_kind(node)}")
        tag, text = node.tag, node.value
        if tag == _TAG + "str" and "${" in text:
            text = self.interpolate(node, key, text)
            if text is _INVALID:
                return _INVALID
            if retype and text != node.value:
                tag = self._resolver.resolve(ScalarNode, text, (True, False))
        if tag.removeprefix(_TAG) not in tags:
            return self.error(node, key, f"expected {what}, got {_kind(ScalarNode(tag, text), tag)}")
        if tag == _TAG + "str":
            return text
        try:
            return self._constructor.construct_object(ScalarNode(tag, text, node.start_mark, node.end_mark))
        except (yaml.YAMLError, ValueError) as exc:
            return self.error(node, key, f"invalid value {text!r}: {exc}")

    def interpolate(self, node: Node, key: str, text: str) -> Any:
        """`${VAR}`, `${VAR:-default}` and `$${` in `text`; each unset VAR without a default is an error.

        The default runs to the first `}` (it cannot contain one) and is not itself interpolated.
        """
        missing: list[str] = []

        def sub(m: re.Match[str]) -> str:
            name, default = m.group(1), m.group(2)
            if name is None:
                return "${"
            value = self.env.get(name)
            if default is not None and not value:
                return default
            if value is None:
                missing.append(name)
                return ""
            return value

        result = _ENV_REF.sub(sub, text)
        for name in dict.fromkeys(missing):
            self.error(node, key, f"environment variable {name} is not set")
        return _INVALID if missing else result


# Sources and sinks whose options live beside their code register themselves into SOURCE_TYPES / SINK_TYPES when
# imported; imported last because they build on the markers above (a plain module import survives either order).
import adapters.aws.config  # noqa: E402, F401
import collector.sinks.netflow.config  # noqa: E402, F401
