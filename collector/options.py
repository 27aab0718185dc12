"""The config language every component declares its options in: markers, the YAML walker, located errors.

Provider-neutral on purpose: the core config (`collector/config.py`) and every source and sink (the AWS sources in
`adapters/aws/config.py`, the file sink in `collector/sinks/file.py`, ...) import this module and nothing of each
other, so a component's options live beside its code and the core never imports a provider.

Why it is built this way:
- Every problem is reported at once, each located as `FILE:LINE:COL: key.path: message`, so an operator fixes a
  file in one pass (`flowcollector check`) instead of one restart per typo. Locations come from the YAML node tree
  (`yaml.compose`): constructed Python objects have lost them.
- A component's dataclass *is* its schema. One small walker reads type hints, plus `Annotated` markers for
  durations, sizes, choices and bounds, so a new option is a new field and nothing else. The markers do not change
  what a field holds: `Annotated[float, Duration]` is a `float` to every reader. A marker either converts a node
  (`convert(walker, node, key)`, for values with their own syntax) or checks a converted value (`check(value)`
  returns a message or None); checks run while the file is read, so each is reported even when another key is
  wrong. `__post_init__` raises `InvalidField` only for what spans fields (it runs once all fields converted).
- `${VAR}` and `${VAR:-default}` are replaced from the environment in every string value before it is converted
  (as in sh, the default also applies when VAR is set but empty). Only upper-case names (`[A-Z_][A-Z0-9_]*`) are
  variables, so AWS LogFormat text such as `${srcaddr} ${account-id}` is left alone; `$${` writes a literal `${`.
  A value that interpolation changed is re-typed as if written unquoted, so `workers: ${WORKERS:-4}` is an integer.
- A config is read by an operator's tools and sometimes written by other programs, so reading one is bounded
  (`MAX_CONFIG_BYTES`, `MAX_VALUE_CHARS`, `MAX_DEPTH`, `MAX_NODES`): the file is refused while it is composed,
  before anything walks it, with the place the bound was crossed. Without them a 621-byte file of nested merge keys
  (`<<: [*x8, *x8, ...]`, ten levels) hung `check`, 500 nested `[` raised a RecursionError and a 20 MB value took
  13.5 s and 970 MB, then was echoed whole in the error.
"""

from __future__ import annotations

import difflib
import ipaddress
import math
import os
import re
import stat
import types
from collections.abc import Callable, Iterable, Mapping
from dataclasses import MISSING, dataclass, fields, is_dataclass
from fractions import Fraction
from functools import cache
from pathlib import Path
from typing import Annotated, Any, Union, get_args, get_origin, get_type_hints

import yaml
from yaml.events import AliasEvent, ScalarEvent
from yaml.nodes import MappingNode, Node, ScalarNode, SequenceNode


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

INVALID: Any = object()  # "this value had an error, already reported": never stored in a config


@dataclass(frozen=True)
class Parse:
    """Marker: the scalar (a number or a string) is converted by `fn`, which raises ValueError with the message."""

    what: str
    fn: Callable[[Any], Any]

    def convert(self, walker: Walker, node: Node, key: str) -> Any:
        value = walker.scalar(node, key, ("int", "float", "str"), self.what, retype=True)
        if value is INVALID:
            return INVALID
        try:
            return self.fn(value)
        except ValueError as exc:
            return walker.error(node, key, str(exc))


Duration = Parse("a duration", parse_duration)
Size = Parse("a size", parse_size)


class Choice:
    """Marker: the string must be one of `values` (exact match; a near miss is suggested)."""

    def __init__(self, *values: str) -> None:
        self.values = values

    def check(self, value: Any) -> str | None:
        if value in self.values:
            return None
        hint = difflib.get_close_matches(str(value).lower(), self.values, n=1)
        return f"expected one of {', '.join(self.values)}, got {value!r}" + did_you_mean(hint)


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


class _Secret:
    """Marker: a credential (a secret key, a token, an external id, a password). Its value is never echoed: a config
    error is printed, logged on reload and pasted into tickets, so a wrongly typed secret is reported by its kind
    alone. `secret_values(config)` finds every such value, so the log redaction (`collector.redact`) can hide it
    whatever form a library prints it in."""

    def convert(self, walker: Walker, node: Node, key: str) -> Any:
        if isinstance(node, ScalarNode) and node.tag == _TAG + "str":
            return walker.scalar(node, key, ("str",), "a string", retype=False)
        if isinstance(node, ScalarNode):
            kind = _KINDS.get(node.tag.removeprefix(_TAG), "a tagged value")
            return walker.error(
                node, key, f"expected a string, got {kind} (not shown: the key holds a secret; quote it)"
            )
        return walker.error(node, key, f"expected a string, got {describe(node)}")  # a list or mapping: no value


Secret = _Secret()


def secret_values(value: Any) -> list[str]:
    """The values of every `Secret` field in a config (dataclasses, tuples of them), for the log redaction."""
    out: list[str] = []
    if isinstance(value, tuple | list):
        for item in value:
            out.extend(secret_values(item))
    elif is_dataclass(value) and not isinstance(value, type):
        hints = _hints(type(value))
        for f in fields(value):
            item = getattr(value, f.name)
            _, markers, _ = _split(hints[f.name])
            if any(m is Secret for m in markers):
                if isinstance(item, str):
                    out.append(item)
            else:
                out.extend(secret_values(item))
    return out


def _not_a_directory(path: str) -> str:
    """How an error names what is at `path` where a directory should be."""
    try:
        mode = os.stat(path).st_mode
    except OSError:
        return "a symbolic link to nothing" if os.path.islink(path) else "not a directory"
    return "a regular file" if stat.S_ISREG(mode) else "a special file"


def _writable(path: str) -> bool:
    """Whether this process (its effective ids, which write the files) may create files in the directory `path`."""
    if os.access in os.supports_effective_ids:
        return os.access(path, os.W_OK | os.X_OK, effective_ids=True)
    return os.access(path, os.W_OK | os.X_OK)


def directory_problem(path: Path) -> str | None:
    """Why `path` cannot be the directory the collector writes in, or None.

    An existing directory is accepted even if it cannot be written to now: that is an outage (a read-only remount, a
    full disk), which a daemon outlives by retrying and `run --once` ends after `give_up_after`, naming the path. A
    missing one must be creatable, as the current user: `run` makes it at start and cannot start otherwise (so
    `check` run as another user than the daemon may pass where `run` fails)."""
    text = os.fspath(path)
    if os.path.isdir(text):
        return None
    if os.path.lexists(text):
        return f"{text} is {_not_a_directory(text)}, not a directory"
    for parent in map(os.fspath, path.parents):
        if os.path.isdir(parent):
            if _writable(parent):
                return None
            return f"{text} cannot be created: {parent} is a directory this user cannot write to"
        if os.path.lexists(parent):
            return f"{text} cannot be created: {parent} is {_not_a_directory(parent)}, not a directory"
    return None


class _Directory:
    """Marker: a path the collector creates if missing and writes files in (the state directory, a file sink's):
    it must be a directory, or be creatable (`directory_problem`).

    Checked when the file is read, so `check` (and `run`, before anything starts) names the key; otherwise `run`
    failed at start with `[Errno 17] File exists` and no key. Declared beside the option, so a new component's
    directory is checked by writing `Annotated[Path, Directory]`."""

    def check(self, value: Any) -> str | None:
        return directory_problem(Path(value))


Directory = _Directory()


class InvalidField(ValueError):
    """Raised by a dataclass's `__post_init__` for a cross-field problem, so the loader can point at the key.

    Only for problems that span fields: `__post_init__` runs once every field converted, so a single-value check
    here would be reported only after the other errors are fixed (a marker's `check` is reported with them)."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"{field}: {message}")
        self.field = field
        self.message = message


@dataclass(frozen=True, eq=False)
class ComponentList:
    """Marker: a list of sections tagged by `type:` (dataclass from `types`) with unique `name:`s; at least one.

    `types` maps a type name to its config dataclass: the registry's live view (`collector.registry`), which
    imports a component's module only when a section names its type, so a config with no AWS source loads no AWS
    code, and types registered later are accepted without touching this module.
    """

    kind: str
    types: Mapping[str, type]

    def convert(self, walker: Walker, node: Node, key: str) -> Any:
        if not isinstance(node, SequenceNode):
            return walker.error(node, key, f"expected a list of {self.kind}s, got {describe(node)}")
        known = ", ".join(self.types)
        out: list[Any] = []
        seen: dict[str, Node] = {}
        claimed: dict[str, tuple[str, int]] = {}
        for i, item in enumerate(node.value):
            ikey = f"{key}[{i}]"
            if not isinstance(item, MappingNode):
                out.append(walker.error(item, ikey, f"expected a mapping, got {describe(item)}"))
                continue
            pairs = walker.pairs(item, ikey)
            cls: type | None = None
            if "type" not in pairs:
                walker.error(item, ikey, f"missing required key 'type' (one of: {known})")
            else:
                tnode = pairs["type"][1]
                tname = walker.value(tnode, str, f"{ikey}.type")
                if tname is not INVALID and tname not in self.types:
                    hint = difflib.get_close_matches(tname, self.types, n=1)
                    also = f"; did you mean {hint[0]!r}?" if hint else ""
                    walker.error(tnode, f"{ikey}.type", f"unknown {self.kind} type {tname!r} (known: {known}{also})")
                elif tname is not INVALID:
                    try:
                        cls = self.types[tname]
                    except ImportError as exc:  # a component whose module (or a library it needs) is missing
                        walker.error(tnode, f"{ikey}.type", f"{self.kind} type {tname!r} cannot be loaded: {exc}")
            name: Any = INVALID
            if "name" not in pairs:
                walker.error(item, ikey, "missing required key 'name'")
            else:
                nnode = pairs["name"][1]
                name = walker.value(nnode, Name, f"{ikey}.name")
                if name is not INVALID:
                    if name in seen:
                        first = seen[name].start_mark.line + 1
                        walker.error(
                            nnode, f"{ikey}.name", f"duplicate {self.kind} name {name!r} (first at line {first})"
                        )
                        name = INVALID
                    else:
                        seen[name] = nnode
            if cls is None:
                out.append(INVALID)
                continue
            preset = {"type": tname, "name": "" if name is INVALID else name}
            obj = walker.dataclass(item, cls, ikey, preset=preset, consumed=("type", "name"), pairs=pairs)
            out.append(INVALID if name is INVALID else obj)
            # Exclusive resources (a file sink's directory): two components claiming one would wreck each other.
            claims = getattr(obj, "claims", None) if obj is not INVALID else None
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
        return INVALID if any(item is INVALID for item in out) else tuple(out)

    def check(self, value: Any) -> str | None:
        return None if value else f"at least one {self.kind} is required"


Name = Annotated[str, NonEmpty]


def parse_host_port(text: str) -> tuple[str, int]:
    """`host:port`, `a.b.c.d:port` or `[v6]:port` -> (host, port). A bare IPv6 address is refused: its last group
    would be taken for a port."""
    text = text.strip()
    if text.startswith("["):
        host, sep, port = text[1:].partition("]:")
        if not sep:
            raise ValueError(f"invalid address {text!r}: expected [IPv6]:port, e.g. [::1]:2055")
        try:
            ipaddress.IPv6Address(host)
        except ValueError:
            raise ValueError(f"invalid address {text!r}: {host!r} is not an IPv6 address") from None
    else:
        host, sep, port = text.rpartition(":")
        if not sep or not host:
            raise ValueError(f"invalid address {text!r}: expected host:port, e.g. 127.0.0.1:2055")
        if ":" in host:
            raise ValueError(f"invalid address {text!r}: write an IPv6 address in brackets, e.g. [::1]:2055")
        if any(c.isspace() for c in host):
            raise ValueError(f"invalid address {text!r}: the host contains whitespace")
    if not port.isdigit() or not 1 <= int(port) <= 65535:
        raise ValueError(f"invalid address {text!r}: port must be 1..65535")
    return host, int(port)


# --- reading a file ---------------------------------------------------------------------------------------------

# Bounds on what a config file may make the loader do. Each is far beyond a real config (config.example.yaml is
# 12 KB and 76 nodes; the deepest option, sources[0].accounts[0].regions[0], is at level 7; a list of 50,000 AWS
# account ids is 800 KB and 50,000 nodes) and low enough that the worst file within them is read in about 10 s and
# under 200 MB (the pure-Python scanner took ~100 us a node on a loaded 2-core machine: nodes bound the time).
MAX_CONFIG_BYTES = 1 << 20  # the whole file (UTF-8), 1 MiB
MAX_VALUE_CHARS = 64 << 10  # one scalar (a key or a value), 64 Ki characters
MAX_DEPTH = 64  # mappings and lists inside each other, aliases expanded; Python's recursion stays far from its limit
MAX_NODES = 100_000  # keys, values and list items, every alias and merge key counted as a copy of what it names
_QUOTED = 32  # characters of an over-long value quoted in its error
# An error line is cut here: any message quoting a value of up to MAX_VALUE_CHARS (a 60 KB `log_level` is quoted by
# "expected one of ...") stays readable; the collector's own messages are far shorter.
MAX_ERROR_CHARS = 1000


class _LimitExceeded(yaml.MarkedYAMLError):
    """A bound crossed while composing: reported as `problem` at `problem_mark`, not as invalid YAML."""


class _BoundedLoader(yaml.SafeLoader):
    """SafeLoader whose composer counts what the document would be with every alias expanded, and stops at a bound.

    The walker (and anything else reading the node graph) follows an alias as if its target were written out
    again, so the work is the size of the expanded tree, which nested aliases make exponential in the file size.
    Counting while composing is linear: a node's expanded size and height are known when it is complete, and kept for
    anchored nodes, so an alias adds its target's figures in one step. An alias to a node still being composed is a
    cycle (infinite when expanded) and refused. Depth is checked before descending, so the composer's own recursion
    is bounded too.
    """

    def __init__(self, stream: str) -> None:
        super().__init__(stream)
        self._nodes = 0  # nodes so far, aliases expanded
        self._open: list[list[int]] = []  # per node being composed: [self._nodes before it, deepest level inside]
        self._measured: dict[str, tuple[int, int]] = {}  # anchor -> (nodes, levels) of its node, once complete

    def compose_node(self, parent: Node | None, index: Any) -> Node:
        event = self.peek_event()
        depth = len(self._open) + 1
        if isinstance(event, AliasEvent):
            if event.anchor in self._measured:
                nodes, levels = self._measured[event.anchor]
                alias = f"alias *{event.anchor}"
                self._count(nodes, event, f"{alias} expands the config to")
                self._reach(depth + levels - 1, event, f"{alias} nests values")
            elif event.anchor in self.anchors:
                raise _LimitExceeded(problem=f"alias *{event.anchor} is inside the node it names (a cycle)",
                                     problem_mark=event.start_mark)  # fmt: skip
            return super().compose_node(parent, index)  # type: ignore[no-any-return]
        if depth > MAX_DEPTH:
            raise _LimitExceeded(
                problem=f"values nested more than {MAX_DEPTH} levels deep (the limit)", problem_mark=event.start_mark
            )
        if isinstance(event, ScalarEvent) and len(event.value) > MAX_VALUE_CHARS:
            raise _LimitExceeded(
                problem=f"a value of {len(event.value)} characters, more than {MAX_VALUE_CHARS} (the limit): "
                f"{event.value[:_QUOTED]!r}...",
                problem_mark=event.start_mark,
            )
        self._count(1, event, "the config has")
        self._open.append([self._nodes - 1, depth])
        node = super().compose_node(parent, index)
        before, deepest = self._open.pop()
        if self._open:
            self._open[-1][1] = max(self._open[-1][1], deepest)
        if event.anchor is not None:
            self._measured[event.anchor] = (self._nodes - before, deepest - depth + 1)
        return node  # type: ignore[no-any-return]

    def _count(self, nodes: int, event: Any, what: str) -> None:
        self._nodes += nodes
        if self._nodes > MAX_NODES:
            raise _LimitExceeded(
                problem=f"{what} more than {MAX_NODES} nodes (the limit; keys, values and list items, "
                "counted with every alias expanded)",
                problem_mark=event.start_mark,
            )

    def _reach(self, level: int, event: Any, what: str) -> None:
        if level > MAX_DEPTH:
            raise _LimitExceeded(problem=f"{what} more than {MAX_DEPTH} levels deep (the limit)",
                                 problem_mark=event.start_mark)  # fmt: skip
        if self._open:
            self._open[-1][1] = max(self._open[-1][1], level)


def too_large(display: str, data: bytes) -> str | None:
    """The error for a config of more than MAX_CONFIG_BYTES, at the line and column where the limit falls."""
    if len(data) <= MAX_CONFIG_BYTES:
        return None
    head = data[:MAX_CONFIG_BYTES].decode("utf-8", errors="ignore")
    line, column = head.count("\n") + 1, len(head) - (head.rfind("\n") + 1) + 1
    return f"{display}:{line}:{column}: the config file is larger than {MAX_CONFIG_BYTES} bytes (1 MiB, the limit)"


def parse_document(text: str, path: Path, cls: type, preset: Mapping[str, Any] | None = None) -> Any:
    """Validate YAML text as `cls` as if read from `path` (which need not exist): relative paths resolve against its
    directory, errors name `path` as given. ConfigError lists every problem, in file order.

    Options marked `Directory` are checked against the file system as it is now (they are where `run` writes)."""
    display = str(path)
    if len(text) > MAX_CONFIG_BYTES // 4 and (error := too_large(display, text.encode("utf-8", "surrogatepass"))):
        raise ConfigError([error])
    try:
        root = yaml.compose(text, Loader=_BoundedLoader)
    except _LimitExceeded as exc:
        mark = exc.problem_mark
        raise ConfigError([f"{display}:{mark.line + 1}:{mark.column + 1}: {exc.problem}"]) from None
    except yaml.MarkedYAMLError as exc:
        raise ConfigError([yaml_error(display, exc)]) from None
    except yaml.YAMLError as exc:
        raise ConfigError([yaml_error(display, exc, text)]) from None
    if root is None or (isinstance(root, ScalarNode) and root.tag == _TAG + "null" and not root.value.strip()):
        raise ConfigError([f"{display}:1:1: empty config"])
    absolute = Path(os.path.abspath(path))
    walker = Walker(display, absolute.parent, os.environ)
    value = walker.dataclass(root, cls, "", preset=preset)
    if walker.errors:
        raise ConfigError([text for *_, text in sorted(walker.errors, key=lambda e: e[:3])])
    return value


def yaml_error(display: str, exc: yaml.YAMLError, text: str = "") -> str:
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


def describe(node: Node, tag: str | None = None) -> str:
    """How an error message names what a node holds: `a list`, `a string ('abc')`, ..."""
    if isinstance(node, SequenceNode):
        return "a list"
    if isinstance(node, MappingNode):
        return "a mapping"
    tag = tag or node.tag
    kind = _KINDS.get(tag.removeprefix(_TAG), f"a value tagged {tag}")
    return kind if tag == _TAG + "null" else f"{kind} ({node.value!r})"


def did_you_mean(matches: Iterable[str]) -> str:
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


class Walker:
    """Converts YAML nodes to typed values by type hint; errors are collected as (line, col, seq, text)."""

    def __init__(self, display: str, base: Path, env: Mapping[str, str]) -> None:
        self.display = display
        self.base = base
        self.env = env
        self.errors: list[tuple[int, int, int, str]] = []
        self._constructor = yaml.constructor.SafeConstructor()
        self._resolver = yaml.resolver.Resolver()

    def error(self, node: Node, key: str, message: str) -> Any:
        """Record an error at `node`; returns INVALID so converters can `return self.error(...)`."""
        line, col = node.start_mark.line + 1, node.start_mark.column + 1
        where = f"{self.display}:{line}:{col}"
        text = f"{where}: {key}: {message}" if key else f"{where}: {message}"
        if len(text) > MAX_ERROR_CHARS:  # a long value (or key) quoted in the message: the start is enough
            text = f"{text[:MAX_ERROR_CHARS]}... ({len(text)} characters)"
        self.errors.append((line, col, len(self.errors), text))
        return INVALID

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
                self.error(knode, key, f"keys must be strings, got {describe(knode)}")
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
            return self.error(node, key, f"expected a mapping, got {describe(node)}")
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
                ok = ok and value is not INVALID
                values[name] = value
                continue
            hint = difflib.get_close_matches(name, known, n=1)
            self.error(
                knode, _join(key, name), "unknown key" + (did_you_mean(hint) or f" (known keys: {', '.join(known)})")
            )
        for f in settable:
            if f.name in pairs:
                continue
            if f.default is MISSING and f.default_factory is MISSING:
                ok = False
                self.error(node, key, f"missing required key {f.name!r}")
                continue
            value = self.default(node, f.default, hints[f.name], _join(key, f.name))
            ok = ok and value is not INVALID
            values[f.name] = value
        if not ok:
            # `__post_init__` needs every field, so its checks wait for a file whose keys all converted: that is
            # why a check of one value belongs in a marker (it runs above), and `__post_init__` keeps only checks
            # that span fields.
            return INVALID
        try:
            return cls(**values)
        except InvalidField as exc:
            where = pairs[exc.field][1] if exc.field in pairs else node
            return self.error(where, _join(key, exc.field), exc.message)

    def default(self, node: Node, value: Any, tp: Any, key: str) -> Any:
        """A field's default, made concrete like a read value: paths resolved, checks applied (`sources: ()`)."""
        base, markers, _ = _split(tp)
        if value is None:
            return None  # an optional field left unset: its markers check a value given, not the absence of one
        if base is Path:
            value = self.base / value
        for marker in markers:
            check = getattr(marker, "check", None)
            message = check(value) if check else None
            if message:
                return self.error(node, key, message)
        return value

    # -- values

    def value(self, node: Node, tp: Any, key: str) -> Any:
        """Convert `node` to the type hint `tp` (with its markers), or report why not and return INVALID."""
        base, markers, optional = _split(tp)
        if optional and isinstance(node, ScalarNode) and node.tag == _TAG + "null":
            return None
        converter = next((m for m in markers if hasattr(m, "convert")), None)
        value = converter.convert(self, node, key) if converter else self.typed(node, base, key)
        if value is INVALID:
            return INVALID
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
            if value is not INVALID and not math.isfinite(value):
                return self.error(node, key, f"expected a finite number, got {value!r}")
            return value if value is INVALID else float(value)
        if tp is Path:
            text = self.scalar(node, key, ("str",), "a string", retype=False)
            if text is INVALID:
                return INVALID
            if not text.strip():
                return self.error(node, key, "expected a path, got an empty string")
            return self.base / Path(text).expanduser()
        if get_origin(tp) is tuple and len(get_args(tp)) == 2 and get_args(tp)[1] is Ellipsis:
            if not isinstance(node, SequenceNode):
                return self.error(node, key, f"expected a list, got {describe(node)}")
            items = [self.value(item, get_args(tp)[0], f"{key}[{i}]") for i, item in enumerate(node.value)]
            return INVALID if any(item is INVALID for item in items) else tuple(items)
        raise TypeError(f"config field {key}: unsupported type {tp!r}")  # a schema bug, not a config error

    def scalar(self, node: Node, key: str, tags: tuple[str, ...], what: str, retype: bool) -> Any:
        """The Python value of a scalar whose tag is one of `tags` (short names), `${VAR}` interpolated first.

        With `retype`, a string that interpolation changed is re-typed as if written unquoted (`"${N}"` -> 8).
        """
        if not isinstance(node, ScalarNode):
            return self.error(node, key, f"expected {what}, got {describe(node)}")
        tag, text = node.tag, node.value
        if tag == _TAG + "str" and "${" in text:
            text = self.interpolate(node, key, text)
            if text is INVALID:
                return INVALID
            if retype and text != node.value:
                tag = self._resolver.resolve(ScalarNode, text, (True, False))
        if tag.removeprefix(_TAG) not in tags:
            return self.error(node, key, f"expected {what}, got {describe(ScalarNode(tag, text), tag)}")
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
        return INVALID if missing else result
