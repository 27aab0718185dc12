"""FlowBatch -> JSON Lines, column-wise.

The JSON form of a flow (ARCHITECTURE.md): column names as keys, times as RFC 3339 UTC with milliseconds, addresses
as text, null as null, `extra` as an object. Each column becomes a string array of `"name":value` fragments, and
one Arrow kernel joins the fragments of a row. Values are formatted once per distinct value (flow logs repeat
accounts, interfaces, addresses and interval times heavily), so there is no Python object per record and no list of
small bytes objects (the heap-trim trap in ARCHITECTURE.md's performance notes).
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import numpy as np
import orjson
import pyarrow as pa
import pyarrow.compute as pc

from collector.schema import ADDRESS_COLUMNS, SCHEMA, TIME_COLUMNS, FlowBatch, address_text

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def format_time_ms(ms: int) -> str:
    """RFC 3339 UTC with milliseconds: 2026-11-22T06:00:00.000Z (years 0001-9999; parsers reject others)."""
    dt = _EPOCH + timedelta(milliseconds=ms)
    return f"{dt:%Y-%m-%dT%H:%M:%S}.{ms % 1000:03d}Z"


def _by_value(arr: pa.Array, prefix: str, render: object) -> pa.Array:
    """`prefix + render(value)` for each distinct value, `prefix + null` for nulls, taken back to every row."""
    denc = arr if pa.types.is_dictionary(arr.type) else pc.dictionary_encode(arr)
    uniques = denc.dictionary.to_pylist()
    literals = [prefix + render(v) for v in uniques]  # type: ignore[operator]
    literals.append(prefix + "null")
    indices = denc.indices
    if indices.null_count:
        indices = indices.fill_null(len(uniques))
    return pa.array(literals, pa.string()).take(indices)


def _json_str(v: object) -> str:
    return orjson.dumps(v).decode()


def _time_literal(ms: int) -> str:
    return '"' + format_time_ms(ms) + '"'


def _numbers(arr: pa.Array) -> pa.Array:
    text = arr.cast(pa.string())
    return text.fill_null("null") if text.null_count else text


def _map(arr: pa.MapArray) -> pa.Array:
    keys = _by_value(arr.keys, "", _json_str)
    pairs = pc.binary_join_element_wise(keys, _by_value(arr.items, "", _json_str), ":")
    offsets = arr.offsets
    if arr.null_count:
        # A null map owns no entries; give it an empty list so it prints as {}.
        offsets = pc.fill_null(offsets, 0)
    joined = pc.binary_join(pa.ListArray.from_arrays(offsets, pairs), ",")
    if arr.null_count:
        # A null map prints as {} even if its offsets span entries (Arrow allows that).
        joined = pc.if_else(arr.is_null(), "", joined)
    if joined.null_count:
        joined = joined.fill_null("")
    return pc.binary_join_element_wise("{", joined, "}", "")


def _column(batch: FlowBatch, i: int) -> pa.Array:
    field = SCHEMA.field(i)
    col = batch.column(i)
    if field.name in TIME_COLUMNS:
        return _by_value(col.cast(pa.int64()), "", _time_literal)
    if field.name in ADDRESS_COLUMNS:
        return _by_value(address_text(col), "", _json_str)
    if field.name == "extra":
        return _map(col)
    if pa.types.is_integer(field.type):
        return _numbers(col)
    return _by_value(col, "", _json_str)


def dumps_batch(batch: FlowBatch) -> memoryview:
    """The whole batch as JSON Lines, each record ending with a newline: a view on Arrow's buffer, not a copy."""
    n = batch.num_rows
    if n == 0:
        return memoryview(b"")
    # One kernel call joins, per row: '{"time_start":' v0 ',"time_end":' v1 ... '}\n'. The keys are scalars, which
    # Arrow broadcasts without materializing them per row.
    args: list[pa.Array | str] = []
    for i, name in enumerate(SCHEMA.names):
        args.append(("{" if i == 0 else ",") + f'"{name}":')
        args.append(_column(batch, i))
    args.append("}\n")
    lines = pc.binary_join_element_wise(*args, "")
    # A string array without nulls stores its values back to back: slice the data buffer, no per-row copies.
    off = np.frombuffer(lines.buffers()[1], dtype=np.int32, count=n + 1, offset=lines.offset * 4)
    return memoryview(lines.buffers()[2])[off[0] : off[-1]]


CHUNK_ROWS = 65_536  # rows rendered at once: Arrow's string arrays hold at most 2 GiB, whatever the batch size


def dumps_chunks(batch: FlowBatch) -> list[memoryview]:
    """The batch as JSON Lines in pieces of at most CHUNK_ROWS rows, so that a batch of any size renders (one big
    Parquet row group can hold more than 2 GiB of JSON)."""
    if batch.num_rows <= CHUNK_ROWS:
        return [dumps_batch(batch)] if batch.num_rows else []
    return [dumps_batch(batch.slice(i, CHUNK_ROWS)) for i in range(0, batch.num_rows, CHUNK_ROWS)]
