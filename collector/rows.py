"""The kept rows of a flow batch: what Arrow's `RecordBatch.filter` returns, for less of the CPU a filter pays.

A per-sink filter that keeps most rows pays mostly for copying them (issue #9: a filter costs under 5 % of the
parse). Arrow's filter costs more per row the more rows it keeps (on the benchmark's batches, twice as much at
70 % kept as at 20 %), and copies each column null-aware. On flow batches most of that can be avoided:

- the mask becomes indices once (`np.flatnonzero`), and fixed-width columns (times, ports, counters, addresses,
  dictionary indices) are taken with numpy, values and validity separately;
- the few nulls of a column (the NODATA rows leave eight columns null on the same rows) are found from the bytes
  of its bitmap that are not 0xFF, and each distinct bitmap is taken once for all the columns that share it;
- a column that holds one value in every row (`provider`, `source`, `sampling_rate`, often `account`, and `extra`
  when it carries only `version`) comes out as the first rows of itself: a zero-copy slice, which keeps that
  column's buffers alive as long as the result. A dictionary column with one entry is such a column without being
  read; the others are compared in place (one memcmp of the values against themselves shifted by one value),
  after a sample of their first rows, where most columns already differ;
- strings of one length (account ids, interface ids) are taken as the rows of a byte matrix, and a map with the
  same number of entries in every row (what the AWS parser builds when every field is present) through its keys
  and items.

Every other column goes to Arrow's `take`. The result equals `batch.filter(mask)` column for column (values,
validity, dictionaries, types; tests/test_rows.py); only the bytes under null slots may differ, which no reader
sees.
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa

from collector.schema import FlowBatch

__all__ = ["kept_rows"]

_WORDS: dict[int, type[np.generic]] = {1: np.uint8, 2: np.uint16, 4: np.uint32, 8: np.uint64}
_SAMPLE = 16  # rows compared before a whole column is: a column of many values is ruled out after reading these


def kept_rows(batch: FlowBatch, keep: np.ndarray) -> FlowBatch:
    """The rows of `batch` where `keep` (a numpy bool array, one per row) is true, in order."""
    take = _Take(np.flatnonzero(keep))
    return pa.RecordBatch.from_arrays([take.column(c) for c in batch.columns], schema=batch.schema)


class _Take:
    """Rows `idx` of the columns of one batch; remembers the validity bitmaps it has taken (columns share them)."""

    def __init__(self, idx: np.ndarray) -> None:
        self.idx = idx
        self.n = len(idx)
        self._arrow_idx: pa.Array | None = None
        self._validity: dict[tuple[int, bytes], tuple[pa.Buffer, int]] = {}
        self._nulls: dict[pa.DataType, pa.Array] = {}

    def arrow(self, arr: pa.Array) -> pa.Array:
        if self._arrow_idx is None:
            self._arrow_idx = pa.array(self.idx)
        return arr.take(self._arrow_idx)

    def column(self, arr: pa.Array) -> pa.Array:
        t, length = arr.type, len(arr)
        nulls = arr.null_count
        if nulls == length:  # a column the format lacks (half the schema for AWS's default format)
            if t not in self._nulls:  # one (immutable) array for every such column of a type
                self._nulls[t] = pa.nulls(self.n, t)
            return self._nulls[t]
        kind = _kind(t)
        if kind == _STRING and not nulls:
            shape = _string_shape(arr)
            if shape is None:
                return self.arrow(arr)
            if _periodic(arr.buffers()[2], *shape, length):
                return arr.slice(0, self.n)  # one value throughout: any n rows of it are its first n
            return self.strings(arr, *shape)
        if not nulls and _constant(arr, kind):
            return arr.slice(0, self.n)
        if kind == _DICT:
            validity, nulls = self.validity(arr.indices)
            indices = [validity, self.values(arr.indices)]
            return pa.DictionaryArray.from_buffers(t, self.n, indices, arr.dictionary, nulls)
        if kind == _FIXED:
            validity, nulls = self.validity(arr)
            return pa.Array.from_buffers(t, self.n, [validity, self.values(arr)], nulls)
        if kind == _MAP and not nulls:
            return self.map(arr)
        return self.arrow(arr)

    def validity(self, arr: pa.Array) -> tuple[pa.Buffer | None, int]:
        """The kept rows' validity bitmap and null count, once per distinct bitmap: the key is the bytes holding the
        column's bits with the bits outside it cleared, and where in the first byte they start."""
        if arr.null_count == 0:
            return None, 0
        buf, offset, length = arr.buffers()[0], arr.offset, len(arr)
        packed = np.frombuffer(buf, dtype=np.uint8)[offset // 8 : (offset + length + 7) // 8]
        shift, tail = offset % 8, (offset + length) % 8
        key_bytes = packed.copy()
        key_bytes[0] &= 0xFF << shift & 0xFF
        if tail:
            key_bytes[-1] &= (1 << tail) - 1
        key = (shift, key_bytes.tobytes())
        hit = self._validity.get(key)
        if hit is None:
            valid = self._sparse_validity(packed, shift, length, arr.null_count)
            if valid is None:
                bits = np.unpackbits(packed, count=shift + length, bitorder="little")
                valid = bits[shift:].view(bool)[self.idx]
            hit = (pa.py_buffer(np.packbits(valid, bitorder="little")), self.n - int(np.count_nonzero(valid)))
            self._validity[key] = hit
        return hit

    def _sparse_validity(self, packed: np.ndarray, shift: int, length: int, nulls: int) -> np.ndarray | None:
        """The kept rows' validity when there are few nulls (the usual case), or None: only the bytes with a zero
        bit are unpacked, and the null rows are looked up in the (sorted) kept indices."""
        if nulls * 64 > length:
            return None
        holes = np.flatnonzero(packed != 0xFF)
        bits = np.unpackbits(packed[holes], bitorder="little").reshape(-1, 8)
        where = (holes[:, None] * 8 + np.arange(8))[bits == 0] - shift
        null_rows = where[(where >= 0) & (where < length)]
        if len(null_rows) != nulls:  # a null count that disagrees with the bitmap: read it all
            return None
        at = np.searchsorted(self.idx, null_rows)
        inside = at < self.n
        at, null_rows = at[inside], null_rows[inside]
        valid = np.ones(self.n, dtype=bool)
        valid[at[self.idx[at] == null_rows]] = False
        return valid

    def values(self, arr: pa.Array) -> pa.Buffer:
        """The kept values of a fixed-width column (null slots included: their validity bit says what they are)."""
        width = arr.type.byte_width
        length, data = len(arr), arr.buffers()[1]
        if width in _WORDS:
            words = np.frombuffer(data, dtype=_WORDS[width], count=length, offset=arr.offset * width)
            return pa.py_buffer(words.take(self.idx))
        words = np.frombuffer(data, dtype=np.uint64, count=2 * length, offset=arr.offset * width)  # addresses
        return pa.py_buffer(words.reshape(length, 2).take(self.idx, axis=0))

    def strings(self, arr: pa.StringArray, start: int, size: int) -> pa.Array:
        """Strings without nulls, all `size` bytes long (ids), as the rows of a byte matrix."""
        length = len(arr)
        rows = np.frombuffer(arr.buffers()[2], dtype=np.uint8, count=size * length, offset=start)
        out = pa.py_buffer(rows.reshape(length, size).take(self.idx, axis=0))
        return pa.Array.from_buffers(arr.type, self.n, [None, pa.py_buffer(_steps(self.n, size)), out], 0)

    def map(self, arr: pa.MapArray) -> pa.Array:
        """A map with k entries in every row: the kept rows' entries are taken from its keys and items (with k = 1,
        at the rows' own indices)."""
        length = len(arr)
        offsets = arr.offsets.to_numpy()
        start, k = int(offsets[0]), int(offsets[1] - offsets[0])
        if int(offsets[-1]) - start != k * length or not _strided(offsets, k):
            return self.arrow(arr)
        keys, items = arr.keys.slice(start, k * length), arr.items.slice(start, k * length)
        inner = self if k == 1 else _Take((self.idx[:, None] * k + np.arange(k)).ravel())
        out_offsets = pa.array(_steps(self.n, k))
        return pa.MapArray.from_arrays(out_offsets, inner.column(keys), inner.column(items), type=arr.type)


_DICT, _FIXED, _STRING, _MAP, _OTHER = "dictionary", "fixed", "string", "map", "other"
_KINDS: dict[pa.DataType, str] = {}


def _kind(t: pa.DataType) -> str:
    """How `_Take` handles a type (remembered: the `pa.types` tests cost more than a dictionary lookup, per column
    and per batch). Fixed: the schema's integers, times and 16-byte addresses, the widths `_Take.values` knows."""
    kind = _KINDS.get(t)
    if kind is None:
        if pa.types.is_dictionary(t):
            kind = _DICT
        elif (
            pa.types.is_integer(t)
            or pa.types.is_timestamp(t)
            or (pa.types.is_fixed_size_binary(t) and t.byte_width == 16)
        ):
            kind = _FIXED
        elif pa.types.is_string(t):
            kind = _STRING
        elif pa.types.is_map(t):
            kind = _MAP
        else:
            kind = _OTHER
        _KINDS[t] = kind
    return kind


def _steps(n: int, step: int) -> np.ndarray:
    """The offsets of n rows of `step` items each (no overflow: the column they come from had more)."""
    return np.arange(n + 1, dtype=np.int32) * np.int32(step)


def _strided(offsets: np.ndarray, step: int) -> bool:
    """Every row `step` long (the caller has checked the total). A sample first, in Python (a few numpy calls on
    17 numbers cost more), then every offset, differences compared in one memcmp."""
    head = offsets[: _SAMPLE + 1].tolist()
    if head != [head[0] + step * i for i in range(len(head))]:
        return False
    steps = offsets[1:] - offsets[:-1]
    return len(steps) < 2 or _periodic(pa.py_buffer(steps), 0, steps.itemsize, len(steps))


def _constant(arr: pa.Array, kind: str) -> bool:
    """Every value of `arr` (no nulls) equal. Each test reads a sample of the first values first and stops there
    for most columns; a dictionary column of one entry is constant without reading it."""
    length = len(arr)
    if length < 2:
        return False
    if kind == _DICT:
        return len(arr.dictionary) == 1 or _constant(arr.indices, _FIXED)
    if kind == _FIXED:
        width = arr.type.byte_width
        return _periodic(arr.buffers()[1], arr.offset * width, width, length)
    if kind == _STRING:
        shape = _string_shape(arr)
        return shape is not None and _periodic(arr.buffers()[2], shape[0], shape[1], length)
    if kind == _MAP:  # one entry a row, the same one (AWS's `extra` when it holds only `version`)
        offsets = np.frombuffer(arr.buffers()[1], np.int32, length + 1, arr.offset * 4)
        start = int(offsets[0])
        if int(offsets[-1]) - start != length or not _strided(offsets, 1):
            return False
        keys, items = arr.keys.slice(start, length), arr.items.slice(start, length)
        return all(not part.null_count and _constant(part, _kind(part.type)) for part in (keys, items))
    return False


def _string_shape(arr: pa.StringArray) -> tuple[int, int] | None:
    """Where the values start in the data buffer and their length in bytes, when they all have one length."""
    length = len(arr)
    offsets = np.frombuffer(arr.buffers()[1], dtype=np.int32, count=length + 1, offset=arr.offset * 4)
    start, size = int(offsets[0]), int(offsets[1] - offsets[0])
    if int(offsets[-1]) - start != size * length or not _strided(offsets, size):
        return None
    return start, size


def _periodic(data: pa.Buffer, start: int, size: int, count: int) -> bool:
    """The `count` values of `size` bytes from `start` in `data` all equal: each byte equals the one `size` bytes
    after it (two views of the buffer, one memcmp, no copy). The first few values first: most columns differ early."""
    if size == 0 or count < 2:
        return True
    head = min(count, _SAMPLE) - 1
    if not data.slice(start, size * head).equals(data.slice(start + size, size * head)):
        return False
    span = size * (count - 1)
    return data.slice(start, span).equals(data.slice(start + size, span))
