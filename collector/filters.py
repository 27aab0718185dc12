"""Per-sink filter expressions: which flows a sink receives.

A sink's `filter:` is a small boolean expression over the columns of the normalized schema (`collector/schema.py`,
the README's "normalized schema" table). It is compiled once, when the configuration is loaded: every mistake this
module can detect (an unknown column, a value of the wrong type, an operator the column does not have) is reported
then, with its position, instead of surfacing as a sink that silently receives nothing. ::

    filter: 'action == "reject" and dst_port in (22, 3389)'
    filter: 'account in ("111111111111") or not (src_addr in 10.0.0.0/8)'
    filter: 'src_addr in (10.0.0.0/8, 192.168.1.1, 2001:db8::/32) and protocol == 6'
    filter: 'log_status is not null and time_start >= 2024-05-01T00:00:00Z'

Grammar
-------
::

    expression  := or
    or          := and ( "or" and )*
    and         := not ( "and" not )*
    not         := "not" not | primary
    primary     := "(" expression ")" | predicate
    predicate   := column compare value
                 | column [ "not" ] "in" ( value | "(" value ( "," value )* ")" )
                 | column "is" [ "not" ] "null"
    compare     := "==" | "!=" | "<" | "<=" | ">" | ">="
    value       := string | integer | address | network | time

Precedence is the usual one, SQL's and Python's: ``not`` binds tighter than ``and``, which binds tighter than
``or``; a comparison binds tighter than all three (``not dst_port == 22`` is ``not (dst_port == 22)``). Keywords
(``and or not in is null``) and column names are case-insensitive; string values are not.

A predicate is always *column, operator, value*: the column comes first, and two columns cannot be compared with
each other (``src_port < dst_port``) -- a filter selects flows by what they are, not by arithmetic. Spaces are
needed only between two words (``dst_port==22 and(protocol==6)`` is fine; ``22and`` is not a number).

Values
------
- **strings** in double or single quotes; a backslash escapes the quote or a backslash (``"it\\'s"``), nothing
  else. Quoting matters because values are never bare words: ``action == reject`` is an error that tells you to
  write ``"reject"``, since a bare word looks like a (misspelt) column.
- **integers**, decimal or ``0x`` hexadecimal (``tcp_flags == 0x12``). A number is checked against the column's
  range when the filter is compiled: ``dst_port == 70000`` is an error, not a predicate that never matches.
- **addresses** ``10.1.2.3``, ``2001:db8::1``, ``::ffff:10.1.2.3`` and **networks** ``10.0.0.0/8``,
  ``2001:db8::/32``, unquoted or quoted. A network with host bits set (``10.1.0.0/8``) is an error: it is usually a
  typo for a longer prefix, and accepting it would silently widen the match.
- **times** (``time_start``, ``time_end``): RFC 3339 date-times with an offset, unquoted or quoted:
  ``2024-05-01T12:00:00Z``, ``2024-05-01T14:00:00.250+02:00``. The columns hold milliseconds, so a time with a
  finer fraction is an error, as is a time without an offset (whose meaning would depend on the host's zone).

What each column takes
----------------------
========================================================  =============================  =====================
columns                                                   operators                      values
========================================================  =============================  =====================
src_port dst_port protocol packets bytes tcp_flags        all comparisons, in, is null   integers in range
sampling_rate traffic_path
time_start time_end                                       all comparisons, in, is null   times
src_addr dst_addr pkt_src_addr pkt_dst_addr               == != in, is null              addresses; networks
                                                                                         with ``in`` only
action direction log_status                               == != in, is null              their fixed values
provider source flow_state reporter account region zone   == != in, is null              strings
vpc subnet interface instance reject_reason
========================================================  =============================  =====================

- Strings are not ordered: ``<`` on ``action`` or ``account`` is an error. Comparing identifiers by byte order
  is never what a filter means, and rejecting it keeps the rule "one obvious way" (use ``in``).
- ``action``, ``direction`` and ``log_status`` have a closed set of values in the schema, lower case
  (``accept reject``, ``ingress egress``, ``ok nodata skipdata``); any other value is an error with a suggestion,
  because ``action == "REJECT"`` would otherwise match nothing, forever, without a word.
- Every other string is compared exactly, and must be quoted even when it looks like a number: account ids are
  strings (``account == "111111111111"``), and a number there is an error that says so.
- ``extra`` (a map) cannot be filtered on.

Addresses are stored as 16 bytes, IPv4 as IPv4-mapped IPv6 (``::ffff:a.b.c.d``), so IPv4 literals and networks
match exactly the IPv4 rows: ``10.0.0.0/8`` is the same predicate as ``::ffff:10.0.0.0/104``, ``0.0.0.0/0`` matches
every IPv4 address and no IPv6 one, and ``::/0`` matches every address. ``src_addr == 10.0.0.0/8`` is an error
that points to ``in``: ``==`` takes one address.

Nulls
-----
Missing fields are null (README: "`-` and missing fields are null, never 0"), and the rules are SQL's: a comparison
with a null value is *unknown* -- neither true nor false -- and ``and``, ``or``, ``not`` follow three-valued (Kleene)
logic (``not unknown`` is unknown, ``unknown and false`` is false, ``unknown or true`` is true). A flow is kept only
when the whole expression is *true*, as in a ``WHERE`` clause. So with ``dst_port`` null (a NODATA record):

- ``dst_port == 22``, ``dst_port != 22``, ``not (dst_port == 22)``, ``dst_port not in (22, 80)`` all drop it:
  a filter that names a value never selects flows that have no value;
- ``dst_port != 22 or dst_port is null`` keeps it: say so when you want it;
- ``dst_port is null`` / ``dst_port is not null`` are never unknown.

The alternative ("null compares false, and ``not`` of false is true") would make ``not (x == 1)`` differ from
``x != 1`` and make ``not`` select rows that have no value at all; Kleene logic keeps the laws people rely on
(De Morgan, ``not (x < 5)`` == ``x >= 5``) and is what anyone who knows SQL expects.

Errors
------
`compile_filter` raises `FilterError` (a `ValueError`) at the first mistake, with ``message``, ``position`` (the
0-based offset in the text of the offending token: the unknown column, the literal of the wrong type, the operator
the column lacks, the ``(`` never closed...) and ``caret()`` (the text with a ``^`` under it). Its ``str()`` is
1-based, as editors count columns: ``action == "reject" and dst_prot == 22`` gives
``at column 24: unknown column 'dst_prot' (did you mean 'dst_port'?)``.

Implementation
--------------
The expression is rewritten into negation normal form (``not`` pushed down to the predicates by De Morgan, so each
predicate is evaluated either for "true" or for "false", nulls excluded from both), which is exactly Kleene logic
followed by "unknown is not selected" and needs no null-aware boolean arithmetic. Predicates are vectorized numpy
operations on the Arrow buffers as they are: integers and times compare their value buffer (a list of more than a
few values is a lookup table or a sorted search); dictionary columns evaluate the predicate on the (few) dictionary
values, then compare the int32 indices with the matching codes; networks compare the two 64-bit words of each
address with the network's masked words (many networks of one prefix length are one sorted search); plain strings
use Arrow's string kernels. ``and`` / ``or`` stop as soon as their result is decided, and evaluate cheap
predicates first. No Python runs per row. `Filter.apply` returns the batch itself when every row is kept, copies
the kept rows with `collector.rows.kept_rows` when it keeps a quarter of them or more (what such a filter costs is
mostly that copy; see there), and uses Arrow's filter below (not on the columns that are all null: it makes new
null columns of the kept length).
"""

from __future__ import annotations

import copy
import difflib
import ipaddress
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from types import SimpleNamespace
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from collector.options import INVALID, Walker
from collector.rows import kept_rows
from collector.schema import SCHEMA, FlowBatch

__all__ = ["Filter", "FilterError", "compile_filter"]


class FilterError(ValueError):
    """A filter expression that does not compile: what is wrong, and where (0-based offset into the text)."""

    def __init__(self, message: str, position: int, text: str = "") -> None:
        super().__init__(message, position)
        self.message = message
        self.position = position
        self.text = text

    def __str__(self) -> str:
        return f"at column {self.position + 1}: {self.message}"

    def caret(self) -> str:
        """The expression and a caret under the offending position (two lines), for a CLI or a log."""
        return f"{self.text}\n{' ' * self.position}^"


# -- columns ----------------------------------------------------------------------------------------------------------
_INT, _TIME, _ADDR, _STR, _MAP = "integer", "time", "address", "string", "map"

# The schema's closed vocabularies (README, "The normalized schema"): parsers lower-case them.
VOCABULARIES: dict[str, tuple[str, ...]] = {
    "action": ("accept", "reject"),
    "direction": ("ingress", "egress"),
    "log_status": ("ok", "nodata", "skipdata"),
}


def _kind(type_: pa.DataType) -> str:
    if pa.types.is_unsigned_integer(type_) or pa.types.is_signed_integer(type_):
        return _INT
    if pa.types.is_timestamp(type_):
        return _TIME
    if pa.types.is_fixed_size_binary(type_):
        return _ADDR
    if pa.types.is_string(type_) or pa.types.is_dictionary(type_):
        return _STR
    return _MAP


_COLUMNS: dict[str, pa.DataType] = {f.name: f.type for f in SCHEMA}
_KINDS: dict[str, str] = {name: _kind(t) for name, t in _COLUMNS.items()}


# -- tokens -----------------------------------------------------------------------------------------------------------
_KEYWORDS = frozenset({"and", "or", "not", "in", "is", "null"})
_IDENT = re.compile(r"[A-Za-z_][A-Za-z0-9_]*\Z")
_INTEGER = re.compile(r"[+-]?(?:0[xX][0-9a-fA-F]+|[0-9]+)\Z")
_FLOAT = re.compile(r"[+-]?(?:[0-9]+\.[0-9]*|\.[0-9]+|[0-9]+(?:\.[0-9]*)?[eE][+-]?[0-9]+)\Z")
_DATE = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}")
_DOTTED = re.compile(r"[0-9]+(?:\.[0-9]+){2,}(?:/[0-9]*)?\Z|[0-9.]+/[0-9]*\Z")
_WORD = re.compile(r"""[^\s(),'"=!<>]+""")
_OPERATORS = ("==", "!=", "<=", ">=", "<", ">")


@dataclass(frozen=True, slots=True)
class _Token:
    kind: str  # "ident" (columns and keywords), "op", "(", ")", ",", "string", "int", "address", "time", "end"
    text: str  # as written (a string's unescaped value for "string")
    pos: int

    def describe(self) -> str:
        if self.kind == "end":
            return "the end of the expression"
        if self.kind == "string":
            return f"the string {self.text!r}"
        return f"'{self.text}'"

    def keyword(self, *words: str) -> bool:
        return self.kind == "ident" and self.text.lower() in words


def _tokenize(text: str) -> list[_Token]:
    tokens: list[_Token] = []
    i, n = 0, len(text)
    while i < n:
        c = text[i]
        if c.isspace():
            i += 1
            continue
        if c in "(),":
            tokens.append(_Token(c, c, i))
            i += 1
            continue
        op = next((o for o in _OPERATORS if text.startswith(o, i)), None)
        if op is not None:
            tokens.append(_Token("op", op, i))
            i += len(op)
            continue
        if c == "=":
            raise FilterError("'=' is not an operator (did you mean '=='?)", i, text)
        if c == "!":
            raise FilterError("'!' is not an operator (use 'not', or '!=')", i, text)
        if c in "'\"":
            value, end = _string(text, i)
            tokens.append(_Token("string", value, i))
            i = end
            continue
        m = _WORD.match(text, i)
        assert m is not None  # every other character starts a word
        tokens.append(_word(m.group(), i, text))
        i = m.end()
    tokens.append(_Token("end", "", n))
    return tokens


def _string(text: str, start: int) -> tuple[str, int]:
    """The value of the quoted string at `start` and the offset just after its closing quote."""
    quote, out, i = text[start], [], start + 1
    while i < len(text):
        c = text[i]
        if c == quote:
            return "".join(out), i + 1
        if c == "\\":
            nxt = text[i + 1 : i + 2]
            if nxt not in ("\\", "'", '"'):
                shown = repr("\\" + nxt) if nxt else "a backslash at the end"
                raise FilterError(f"unknown escape {shown} (only \\\\, \\' and \\\" are escapes)", i, text)
            out.append(nxt)
            i += 2
            continue
        out.append(c)
        i += 1
    raise FilterError("unterminated string", start, text)


def _word(word: str, pos: int, text: str) -> _Token:
    if _IDENT.match(word):
        return _Token("ident", word, pos)
    if _INTEGER.match(word):
        return _Token("int", word, pos)
    if _DATE.match(word):
        return _Token("time", word, pos)
    if ":" in word or _DOTTED.match(word):
        return _Token("address", word, pos)
    if _FLOAT.match(word):
        raise FilterError(f"{word} is not an integer (every numeric column holds integers)", pos, text)
    hints = {"&&": "and", "&": "and", "||": "or", "|": "or"}
    if word in hints:
        raise FilterError(f"'{word}' is not an operator (use '{hints[word]}')", pos, text)
    raise FilterError(f"unexpected '{word}'", pos, text)


# -- the syntax tree --------------------------------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class _Pred:
    """A predicate, type-checked: `op` is a comparison, "in" or "null"; `values` are in the column's terms
    (ints; epoch milliseconds; 16-byte networks as (bytes, prefix); strings)."""

    column: str
    op: str
    values: tuple[object, ...]


@dataclass(frozen=True, slots=True)
class _Not:
    child: _Node


@dataclass(frozen=True, slots=True)
class _BoolOp:
    op: str  # "and" / "or"
    children: tuple[_Node, ...]


_Node = _Pred | _Not | _BoolOp


class _Parser:
    def __init__(self, text: str) -> None:
        self.text = text
        self.tokens = _tokenize(text)
        self.i = 0

    def error(self, message: str, token: _Token) -> FilterError:
        return FilterError(message, token.pos, self.text)

    @property
    def tok(self) -> _Token:
        return self.tokens[self.i]

    def take(self) -> _Token:
        t = self.tokens[self.i]
        if t.kind != "end":  # the end token stays current: every caller reports it rather than reading past it
            self.i += 1
        return t

    def parse(self) -> _Node:
        if self.tok.kind == "end":
            raise self.error("empty expression", self.tok)
        node = self.or_()
        t = self.tok
        if t.kind == ")":
            raise self.error("unmatched ')'", t)
        if t.kind != "end":
            raise self.error(f"expected 'and', 'or' or the end of the expression, found {t.describe()}", t)
        return node

    def or_(self) -> _Node:
        children = [self.and_()]
        while self.tok.keyword("or"):
            self.take()
            children.append(self.and_())
        return children[0] if len(children) == 1 else _BoolOp("or", tuple(children))

    def and_(self) -> _Node:
        children = [self.not_()]
        while self.tok.keyword("and"):
            self.take()
            children.append(self.not_())
        return children[0] if len(children) == 1 else _BoolOp("and", tuple(children))

    def not_(self) -> _Node:
        if self.tok.keyword("not"):
            self.take()
            return _Not(self.not_())
        return self.primary()

    def primary(self) -> _Node:
        t = self.tok
        if t.kind == "(":
            self.take()
            if self.tok.kind == ")":
                raise self.error("empty parentheses", self.tok)
            node = self.or_()
            if self.tok.kind == ")":
                self.take()
                return node
            if self.tok.kind == "end":
                raise self.error("'(' is not closed", t)
            raise self.error(f"expected ')', 'and' or 'or', found {self.tok.describe()}", self.tok)
        return self.predicate()

    def column(self) -> str:
        t = self.take()
        if t.kind != "ident" or t.text.lower() in _KEYWORDS:
            extra = " (a predicate is: column, operator, value)" if t.kind in ("int", "string", "address") else ""
            raise self.error(f"expected a column name, found {t.describe()}{extra}", t)
        name = t.text.lower()
        if name not in _COLUMNS:
            close = difflib.get_close_matches(name, _COLUMNS, n=1)
            hint = f" (did you mean '{close[0]}'?)" if close else ""
            raise self.error(f"unknown column '{t.text}'{hint}", t)
        if _KINDS[name] == _MAP:
            raise self.error(f"column '{name}' is a map and cannot be filtered on", t)
        return name

    def predicate(self) -> _Node:
        name = self.column()
        kind = _KINDS[name]
        t = self.take()
        if t.kind == "op":
            if t.text not in ("==", "!=") and kind not in (_INT, _TIME):
                what = " with a network" if kind == _ADDR else ""
                article = "an" if kind == _ADDR else "a"
                raise self.error(
                    f"'{t.text}' does not apply to {name}, {article} {kind} column (use ==, != or in{what})", t
                )
            return _Pred(name, t.text, (self.value(name, single=True),))
        if t.keyword("not"):
            nxt = self.take()
            if not nxt.keyword("in"):
                raise self.error(f"expected 'in' after 'not', found {nxt.describe()}", nxt)
            return _Not(self.in_list(name))
        if t.keyword("in"):
            return self.in_list(name)
        if t.keyword("is"):
            negate = self.tok.keyword("not")
            if negate:
                self.take()
            nxt = self.take()
            if not nxt.keyword("null"):
                raise self.error(f"expected 'null', found {nxt.describe()}", nxt)
            pred = _Pred(name, "null", ())
            return _Not(pred) if negate else pred
        raise self.error(f"expected an operator after '{name}', found {t.describe()}", t)

    def in_list(self, name: str) -> _Pred:
        if self.tok.kind != "(":
            return _Pred(name, "in", (self.value(name, single=False),))
        self.take()
        if self.tok.kind == ")":
            raise self.error("empty list", self.tok)
        values = [self.value(name, single=False)]
        while self.tok.kind == ",":
            self.take()
            values.append(self.value(name, single=False))
        t = self.take()
        if t.kind != ")":
            raise self.error(f"expected ',' or ')' in the list, found {t.describe()}", t)
        return _Pred(name, "in", tuple(dict.fromkeys(values)))

    def value(self, name: str, single: bool) -> object:
        t = self.take()
        if t.keyword("null"):
            raise self.error(f"null is not a value: use '{name} is null' or '{name} is not null'", t)
        if t.kind == "ident":
            hint = f' (strings are quoted: "{t.text}")' if _KINDS[name] == _STR else ""
            raise self.error(f"expected a value, found '{t.text}'{hint}", t)
        if t.kind not in ("string", "int", "address", "time"):
            raise self.error(f"expected a value, found {t.describe()}", t)
        return _CHECKS[_KINDS[name]](self, name, t, single)

    # One type check per column kind: the literal in the column's own terms, or an error at the literal.
    def int_value(self, name: str, t: _Token, single: bool) -> int:
        if t.kind != "int":
            what = {"string": "a string", "address": "an address", "time": "a time"}[t.kind]
            hint = " (protocol numbers: icmp 1, tcp 6, udp 17, icmpv6 58)" if name == "protocol" else ""
            raise self.error(f"{name} is an integer, not {what}{hint}", t)
        digits = t.text.lstrip("+-")
        value = int(digits, 16 if digits[:2].lower() == "0x" else 10) * (-1 if t.text.startswith("-") else 1)
        info = np.iinfo(_COLUMNS[name].to_pandas_dtype())
        if not info.min <= value <= info.max:
            raise self.error(f"{t.text} is out of range for {name} ({info.min}..{info.max})", t)
        return value

    def time_value(self, name: str, t: _Token, single: bool) -> int:
        if t.kind not in ("time", "string"):
            raise self.error(f"{name} takes an RFC 3339 time like 2024-05-01T12:00:00Z", t)
        m = _RFC3339.match(t.text.strip())
        if m is None:
            if re.fullmatch(r"[0-9]{4}-[0-9]{2}-[0-9]{2}", t.text.strip()):
                raise self.error(f"time {t.text} needs a time of day and an offset: {t.text.strip()}T00:00:00Z", t)
            if _RFC3339.match(t.text.strip() + "Z"):
                raise self.error(f"time {t.text} has no offset (add Z for UTC, or +hh:mm)", t)
            raise self.error(f"invalid time {t.text!r} (RFC 3339, e.g. 2024-05-01T12:00:00Z)", t)
        date, clock, fraction, offset = m.groups(default="")
        if len(fraction.rstrip("0")) > 3:
            raise self.error(f"time {t.text} is finer than the columns' millisecond precision", t)
        try:
            when = datetime.fromisoformat(f"{date}T{clock}{'+00:00' if offset in 'Zz' else offset}")
        except ValueError:
            raise self.error(f"invalid time {t.text!r} (RFC 3339, e.g. 2024-05-01T12:00:00Z)", t) from None
        return (when - _EPOCH) // timedelta(milliseconds=1) + int((fraction + "000")[:3])

    def addr_value(self, name: str, t: _Token, single: bool) -> tuple[bytes, int]:
        if t.kind not in ("address", "string"):
            what = {"int": "an integer", "time": "a time"}[t.kind]
            raise self.error(f"{name} is an address, not {what}", t)
        text = t.text.strip()
        try:
            if "/" in text:
                net = ipaddress.ip_network(text, strict=True)
                network = True
            else:
                net = ipaddress.ip_network(ipaddress.ip_address(text))
                network = False
        except ValueError as exc:
            if "/" in text and "host bits set" in str(exc):
                fixed = ipaddress.ip_network(text, strict=False)
                raise self.error(f"network {text} has host bits set (did you mean {fixed}?)", t) from None
            raise self.error(f"invalid {'network' if '/' in text else 'address'} {text!r}", t) from None
        if isinstance(net, ipaddress.IPv6Network) and net.network_address.scope_id:
            raise self.error(f"address {text!r} has a scope id, which flow logs do not carry", t)
        if network and single:
            raise self.error(f"a network needs 'in': {name} in {text}", t)
        if net.version == 4:
            return _V4_MAPPED + net.network_address.packed, 96 + net.prefixlen
        return net.network_address.packed, net.prefixlen

    def str_value(self, name: str, t: _Token, single: bool) -> str:
        if t.kind != "string":
            raise self.error(f'{name} is a string: quote the value ("{t.text}")', t)
        vocabulary = VOCABULARIES.get(name)
        if vocabulary is not None and t.text not in vocabulary:
            close = difflib.get_close_matches(t.text.lower(), vocabulary, n=1)
            hint = f"did you mean {close[0]!r}? " if close else ""
            raise self.error(f"{name} is never {t.text!r} ({hint}its values are {', '.join(map(repr, vocabulary))})", t)
        return t.text


_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_RFC3339 = re.compile(
    r"([0-9]{4}-[0-9]{2}-[0-9]{2})[Tt ]([0-9]{2}:[0-9]{2}:[0-9]{2})(?:\.([0-9]+))?([Zz]|[+-][0-9]{2}:[0-9]{2})\Z"
)
_V4_MAPPED = b"\x00" * 10 + b"\xff\xff"
_CHECKS: dict[str, Callable[[_Parser, str, _Token, bool], object]] = {
    _INT: _Parser.int_value,
    _TIME: _Parser.time_value,
    _ADDR: _Parser.addr_value,
    _STR: _Parser.str_value,
}


# -- evaluation -------------------------------------------------------------------------------------------------------
# Every evaluator returns a numpy bool array with nulls resolved: a predicate evaluated for "true" (negated=False) or
# for "false" (negated=True); a null value is in neither. That is Kleene logic in negation normal form.

_CHAIN = 6  # up to this many values, an `in` is a chain of == (a few us each); beyond, a lookup table / search
_COMPLEMENT = {"==": "!=", "!=": "==", "<": ">=", ">=": "<", ">": "<=", "<=": ">"}
_NUMPY_OPS: dict[str, Callable[[np.ndarray, object], np.ndarray]] = {
    "==": np.equal,
    "!=": np.not_equal,
    "<": np.less,
    "<=": np.less_equal,
    ">": np.greater,
    ">=": np.greater_equal,
}


def _values(arr: pa.Array, dtype: type[np.generic]) -> np.ndarray:
    """The value buffer of a fixed-width array as numpy, zero-copy (null slots hold arbitrary values)."""
    item = np.dtype(dtype).itemsize
    return np.frombuffer(arr.buffers()[1], dtype=dtype, count=len(arr), offset=arr.offset * item)


def _indices(arr: pa.DictionaryArray) -> np.ndarray:
    """The indices of a dictionary array as numpy (int32 in the schema; any integer type works)."""
    return _values(arr.indices, arr.type.index_type.to_pandas_dtype())


def _bits(buf: pa.Buffer, offset: int, n: int) -> np.ndarray:
    """n bits of an Arrow bitmap from bit `offset`, as numpy bools (a view of a fresh unpacked array)."""
    bits = np.unpackbits(np.frombuffer(buf, dtype=np.uint8), count=offset + n, bitorder="little")
    return bits[offset:].view(bool)


def _validity(arr: pa.Array) -> np.ndarray | None:
    """True where the value is not null, or None when nothing is null."""
    if arr.null_count == 0:
        return None
    buf = arr.buffers()[0]
    if buf is None:  # a null-typed array has no bitmap
        return np.zeros(len(arr), dtype=bool)
    return _bits(buf, arr.offset, len(arr))


def _arrow_bits(arr: pa.BooleanArray) -> np.ndarray:
    """The value bits of an Arrow boolean array (nulls not applied)."""
    return _bits(arr.buffers()[1], arr.offset, len(arr))


def _keep_valid(result: np.ndarray, valid: np.ndarray | None) -> np.ndarray:
    if valid is None:
        return result
    return np.logical_and(result, valid, out=result) if result.flags.writeable else result & valid


def _any_of(values: np.ndarray, targets: Sequence[object]) -> np.ndarray:
    out = values == targets[0]
    for t in targets[1:]:
        out |= values == t
    return out


class _Leaf:
    """A compiled predicate; `cost` orders the children of an and/or (cheap first)."""

    cost = 1

    def __init__(self, pred: _Pred) -> None:
        self.column = pred.column

    def evaluate(self, batch: FlowBatch, negated: bool) -> np.ndarray:
        arr = batch.column(self.column)
        if arr.null_count == len(arr):  # a column the format lacks: nothing is true or false
            return np.zeros(len(arr), dtype=bool)
        return self.run(arr, negated)

    def run(self, arr: pa.Array, negated: bool) -> np.ndarray:
        raise NotImplementedError


class _IsNull(_Leaf):
    cost = 0

    def evaluate(self, batch: FlowBatch, negated: bool) -> np.ndarray:
        arr = batch.column(self.column)
        valid = _validity(arr)
        if pa.types.is_dictionary(arr.type) and arr.dictionary.null_count:
            # An index to a null dictionary entry is a null value too.
            bad = _DictIn.codes_where(arr.dictionary, lambda v: v is None)
            in_bad = np.isin(_indices(arr), bad)
            valid = ~in_bad if valid is None else valid & ~in_bad
        if valid is None:
            return np.full(len(arr), negated, dtype=bool)
        return valid.copy() if negated else ~valid


class _Compare(_Leaf):
    """Integers and times: a comparison on the value buffer."""

    def __init__(self, pred: _Pred) -> None:
        super().__init__(pred)
        type_ = _COLUMNS[pred.column]
        self.dtype = np.int64 if pa.types.is_timestamp(type_) else type_.to_pandas_dtype()
        self.op = pred.op
        self.value = self.dtype(pred.values[0])

    def run(self, arr: pa.Array, negated: bool) -> np.ndarray:
        op = _COMPLEMENT[self.op] if negated else self.op
        return _keep_valid(_NUMPY_OPS[op](_values(arr, self.dtype), self.value), _validity(arr))


class _IntIn(_Leaf):
    """Integers and times in a list: a chain of ==, a lookup table (8 and 16 bits) or a sorted search."""

    def __init__(self, pred: _Pred) -> None:
        super().__init__(pred)
        type_ = _COLUMNS[pred.column]
        self.dtype = np.int64 if pa.types.is_timestamp(type_) else type_.to_pandas_dtype()
        self.targets = np.array(sorted(pred.values), dtype=self.dtype)
        self.table: np.ndarray | None = None
        if len(self.targets) > _CHAIN and np.dtype(self.dtype).itemsize <= 2 and np.dtype(self.dtype).kind == "u":
            self.table = np.zeros(1 << (8 * np.dtype(self.dtype).itemsize), dtype=bool)
            self.table[self.targets] = True

    def run(self, arr: pa.Array, negated: bool) -> np.ndarray:
        values = _values(arr, self.dtype)
        if len(self.targets) <= _CHAIN:
            found = _any_of(values, self.targets)
        elif self.table is not None:
            found = np.take(self.table, values)
        else:
            at = np.searchsorted(self.targets, values)
            np.minimum(at, len(self.targets) - 1, out=at)
            found = self.targets[at] == values
        if negated:
            np.logical_not(found, out=found)
        return _keep_valid(found, _validity(arr))


class _DictIn(_Leaf):
    """A string column, == / != / in, on dictionary arrays through their dictionary: the predicate runs on the few
    distinct values, then the indices are compared with the matching codes. Plain strings use Arrow's kernels."""

    cost = 1

    def __init__(self, pred: _Pred) -> None:
        super().__init__(pred)
        self.targets = frozenset(str(v) for v in pred.values)
        self.negate = pred.op == "!="
        self.value_set = pa.array(sorted(self.targets), pa.string())
        self.scalars = [pa.scalar(v, pa.string()) for v in sorted(self.targets)]

    @staticmethod
    def codes_where(dictionary: pa.Array, test: Callable[[object], bool]) -> np.ndarray:
        return np.array([i for i, v in enumerate(dictionary.to_pylist()) if test(v)], dtype=np.int32)

    def matching(self, dictionary: pa.Array, want: bool) -> np.ndarray:
        """Codes of the dictionary entries whose value is (want=True) or is not (want=False) a target; null
        entries are neither."""
        if len(dictionary) <= 256:
            targets = self.targets
            return self.codes_where(dictionary, lambda v: v is not None and (v in targets) == want)
        hit = pc.is_in(dictionary, value_set=self.value_set)
        keep = hit if want else pc.invert(hit)
        keep = pc.and_(keep, pc.is_valid(dictionary)).fill_null(False)
        return np.flatnonzero(keep.to_numpy(zero_copy_only=False)).astype(np.int32)

    def run(self, arr: pa.Array, negated: bool) -> np.ndarray:
        want = negated == self.negate
        if not pa.types.is_dictionary(arr.type):
            return self.run_plain(arr, want)
        dictionary = arr.dictionary
        codes = self.matching(dictionary, want)
        n = len(arr)
        if len(codes) == 0:
            return np.zeros(n, dtype=bool)
        indices = _indices(arr)
        if len(codes) <= _CHAIN:
            found = _any_of(indices, codes)
        else:
            table = np.zeros(len(dictionary), dtype=bool)
            table[codes] = True
            found = np.take(table, indices, mode="clip")  # null slots may hold any index: masked just below
        return _keep_valid(found, _validity(arr.indices))

    def run_plain(self, arr: pa.Array, want: bool) -> np.ndarray:
        if len(self.targets) <= 3:
            hit = None
            for target in self.scalars:
                eq = pc.equal(arr, target)
                hit = eq if hit is None else pc.or_(hit, eq)
        else:
            hit = pc.is_in(arr, value_set=self.value_set)
        found = _arrow_bits(hit)
        if not want:
            np.logical_not(found, out=found)
        return _keep_valid(found, _validity(arr))


_FULL = np.uint64(0xFFFFFFFFFFFFFFFF)


class _Networks:
    """Networks of one prefix length, as native-order 64-bit words: (address & mask) == network, word by word."""

    def __init__(self, length: int, nets: list[bytes]) -> None:
        mask = np.frombuffer(((1 << 128) - (1 << (128 - length))).to_bytes(16, "big"), dtype=np.uint64)
        self.mask_hi, self.mask_lo = mask[0], mask[1]
        words = np.frombuffer(b"".join(nets), dtype=np.uint64).reshape(-1, 2)
        self.hi, self.lo = np.unique(words[:, 0]), words[:, 1].copy()
        self.pairs = [(words[k, 0], words[k, 1]) for k in range(len(words))]
        self.shared_hi = len(self.hi) == 1  # e.g. IPv4 networks: the upper word of every IPv4-mapped address is 0
        if self.shared_hi:
            self.lo = np.unique(self.lo)
        self.value_set = pa.array(nets, pa.binary(16))

    def match(self, hi: np.ndarray, lo: np.ndarray | None, upper_is: dict[int, np.ndarray]) -> np.ndarray:
        """`hi`, `lo`: the upper and lower words of the column; `upper_is` caches `hi == value` across groups."""
        whi = hi if self.mask_hi == _FULL else hi & self.mask_hi
        if self.mask_lo == 0:  # prefix of 64 bits or less: the upper word decides
            return _any_of(whi, self.hi) if len(self.hi) <= _CHAIN else _sorted_in(whi, self.hi)
        assert lo is not None
        wlo = lo if self.mask_lo == _FULL else lo & self.mask_lo
        if self.shared_hi:
            found = _any_of(wlo, self.lo) if len(self.lo) <= _CHAIN else _sorted_in(wlo, self.lo)
            key = int(self.hi[0])
            if key not in upper_is:
                upper_is[key] = hi == self.hi[0]  # mask_hi is full here: the prefix is longer than 64 bits
            return np.logical_and(found, upper_is[key], out=found)
        if len(self.pairs) <= _CHAIN:
            out = (whi == self.pairs[0][0]) & (wlo == self.pairs[0][1])
            for upper, lower in self.pairs[1:]:
                out |= (whi == upper) & (wlo == lower)
            return out
        # Many long prefixes with different upper words (a list of IPv6 hosts): hash lookup of the masked bytes.
        masked = np.empty((len(hi), 2), dtype=np.uint64)
        masked[:, 0], masked[:, 1] = whi, wlo
        keys = pa.FixedSizeBinaryArray.from_buffers(pa.binary(16), len(hi), [None, pa.py_buffer(masked)])
        return _arrow_bits(pc.is_in(keys, value_set=self.value_set))


class _AddrIn(_Leaf):
    """Addresses: ==, != and in (addresses and networks). Each 16-byte address is read as two 64-bit words in
    native byte order, and the masks and networks are converted the same way, so no byte swapping is needed (masking
    and equality are bytewise). An address is a /128 network. Networks of one prefix length are one `_Networks`: a
    few are a chain of comparisons, more are one sorted search on a masked word."""

    cost = 2

    def __init__(self, pred: _Pred) -> None:
        super().__init__(pred)
        self.negate = pred.op == "!="
        by_length: dict[int, list[bytes]] = {}
        for packed, length in pred.values:  # type: ignore[misc]
            by_length.setdefault(length, []).append(packed)
        self.groups = [_Networks(length, nets) for length, nets in sorted(by_length.items())]
        self.uses_lo = any(g.mask_lo != 0 for g in self.groups)

    def run(self, arr: pa.Array, negated: bool) -> np.ndarray:
        n = len(arr)
        words = np.frombuffer(arr.buffers()[1], dtype=np.uint64, count=2 * n, offset=arr.offset * 16).reshape(n, 2)
        # Contiguous copies of the two words (16 us each for 64k rows) make every operation after them 2x faster.
        hi = np.ascontiguousarray(words[:, 0])
        lo = np.ascontiguousarray(words[:, 1]) if self.uses_lo else None
        upper_is: dict[int, np.ndarray] = {}
        found = self.groups[0].match(hi, lo, upper_is)
        for group in self.groups[1:]:
            np.logical_or(found, group.match(hi, lo, upper_is), out=found)
        if negated != self.negate:
            np.logical_not(found, out=found)
        return _keep_valid(found, _validity(arr))


def _sorted_in(values: np.ndarray, targets: np.ndarray) -> np.ndarray:
    """values in targets (sorted, unique): one binary search per value, no hashing."""
    at = np.searchsorted(targets, values)
    np.minimum(at, len(targets) - 1, out=at)
    return targets[at] == values


def _leaf(pred: _Pred) -> _Leaf:
    kind = _KINDS[pred.column]
    if pred.op == "null":
        return _IsNull(pred)
    if kind == _ADDR:
        return _AddrIn(pred)
    if kind == _STR:
        return _DictIn(pred)
    if pred.op == "in":
        return _IntIn(pred)
    return _Compare(pred)


@dataclass(frozen=True, slots=True)
class _Term:
    """Negation normal form: a leaf evaluated for true or for false, or an and/or of terms."""

    leaf: _Leaf | None = None
    negated: bool = False
    op: str = ""
    children: tuple[_Term, ...] = ()

    @property
    def cost(self) -> int:
        return self.leaf.cost if self.leaf is not None else max(c.cost for c in self.children) + 1

    def evaluate(self, batch: FlowBatch) -> np.ndarray:
        if self.leaf is not None:
            return self.leaf.evaluate(batch, self.negated)
        first, *rest = self.children
        out = first.evaluate(batch)  # a fresh array from every evaluator: combined in place
        for child in rest:
            if self.op == "and":
                if not out.any():
                    break
                np.logical_and(out, child.evaluate(batch), out=out)
            else:
                if out.all():
                    break
                np.logical_or(out, child.evaluate(batch), out=out)
        return out


def _normal(node: _Node, negated: bool = False) -> _Term:
    """Push `not` down to the leaves (De Morgan), flatten nested and/or, order children cheap-first."""
    if isinstance(node, _Not):
        return _normal(node.child, not negated)
    if isinstance(node, _Pred):
        return _Term(leaf=_leaf(node), negated=negated)
    op = node.op if not negated else ("or" if node.op == "and" else "and")
    children: list[_Term] = []
    for child in node.children:
        term = _normal(child, negated)
        children.extend(term.children if term.op == op else (term,))
    return _Term(op=op, children=tuple(sorted(children, key=lambda t: t.cost)))


def _columns(node: _Node) -> set[str]:
    if isinstance(node, _Pred):
        return {node.column}
    if isinstance(node, _Not):
        return _columns(node.child)
    return set().union(*(_columns(c) for c in node.children))


# -- the API ----------------------------------------------------------------------------------------------------------
class Filter:
    """A compiled filter expression. Two filters are equal when their texts are (a configuration reload compares
    sink configurations)."""

    __slots__ = ("text", "columns", "_term")

    def __init__(self, text: str, term: _Term, columns: frozenset[str]) -> None:
        self.text = text
        self.columns = columns  # the columns the expression reads
        self._term = term

    def __repr__(self) -> str:
        return f"Filter({self.text!r})"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Filter) and other.text == self.text

    def __hash__(self) -> int:
        return hash(self.text)

    def selected(self, batch: FlowBatch) -> np.ndarray:
        """The rows to keep as a numpy bool array (true = keep)."""
        if batch.num_rows == 0:
            return np.zeros(0, dtype=bool)
        return self._term.evaluate(batch)

    def mask(self, batch: FlowBatch) -> pa.BooleanArray:
        """The rows to keep (true = keep), without nulls: an unknown result is not kept."""
        keep = self.selected(batch)
        bits = pa.py_buffer(np.packbits(keep, bitorder="little"))
        return pa.BooleanArray.from_buffers(pa.bool_(), len(keep), [None, bits])

    def apply(self, batch: FlowBatch) -> FlowBatch:
        """The rows of `batch` the filter keeps: `batch` itself when it keeps them all."""
        keep = self.selected(batch)
        kept = int(np.count_nonzero(keep))
        if kept == batch.num_rows:
            return batch
        if kept == 0:
            return batch.slice(0, 0)
        # Arrow's filter costs more per row the more rows it keeps; `kept_rows` (collector/rows.py) costs about the
        # same per row whatever it keeps, plus a fixed cost per column. On the benchmark's batches the two cost the
        # same at 20-30 % kept; below, Arrow's filter is the cheaper (less than half at 1 %), above, `kept_rows`.
        n = batch.num_rows
        if kept * 4 >= n:
            return kept_rows(batch, keep)
        bits = pa.py_buffer(np.packbits(keep, bitorder="little"))
        mask = pa.BooleanArray.from_buffers(pa.bool_(), len(keep), [None, bits])
        # Columns a format does not have are all null (half the schema for AWS's default format): a new null array
        # of the kept length is cheap, where filtering one costs about as much as filtering a column of values
        # (below 5 % kept, filtering them is the cheaper). The other columns are filtered together, so Arrow turns
        # the mask into a selection once.
        if kept * 20 < n:
            return batch.filter(mask)
        columns = batch.columns
        live = [i for i, column in enumerate(columns) if column.null_count != n]
        if len(live) == len(columns):
            return batch.filter(mask)
        filtered = iter(batch.select(live).filter(mask).columns)
        out = [next(filtered) if c.null_count != n else pa.nulls(kept, c.type) for c in columns]
        return pa.RecordBatch.from_arrays(out, schema=batch.schema)


def compile_filter(text: str) -> Filter:
    """Parse and type-check `text` (see the module documentation); raises FilterError at the first mistake."""
    if not isinstance(text, str):
        raise FilterError(f"a filter is a string, not {type(text).__name__}", 0, str(text))
    node = _Parser(text).parse()
    return Filter(text, _normal(node), frozenset(_columns(node)))


class _FilterExpr:
    """Config marker: a `filter:` string, compiled when the file is read, so `check` reports every mistake with the
    file, the line of the key, and the column within the expression."""

    def convert(self, walker: Walker, node: Any, key: str) -> Any:
        text = walker.value(node, str, key)
        if text is INVALID:
            return INVALID
        try:
            return compile_filter(text)
        except FilterError as exc:
            return walker.error(_at(node, text, exc.position), key, f"invalid filter: {exc}")


def _at(node: Any, text: str, position: int) -> Any:
    """Where in the file character `position` of the expression is, when the scalar as written maps onto the
    expression one to one (one line, no escapes, no `${VAR}`: the written text is the value plus its quotes);
    else the start of the value."""
    mark = node.start_mark
    quote = {"'": 1, '"': 1, None: 0}.get(node.style)
    buffer = getattr(mark, "buffer", None)
    if quote is None or buffer is None or node.value != text:
        return node
    written = buffer[mark.pointer : node.end_mark.pointer]
    if "\n" in written or len(written) != len(text) + 2 * quote:
        return node
    moved = copy.copy(mark)
    moved.column = mark.column + quote + position
    return SimpleNamespace(start_mark=moved)


FilterExpr = _FilterExpr()
