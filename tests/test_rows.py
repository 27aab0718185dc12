"""collector.rows.kept_rows: the kept rows of a flow batch, against two references, value by value: Python (the
batch as rows, filtered with a list comprehension) and Arrow's own `RecordBatch.filter`. Every fast path is
reached on purpose (constant columns, one-entry dictionaries, strings of one length, maps of k entries a row,
shared and sparse validity bitmaps, sliced columns), and hypothesis mixes them."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from collector.rows import kept_rows
from collector.schema import SCHEMA, assemble

EXTRA = SCHEMA.field("extra").type


def check(b: pa.RecordBatch, keep: list[bool]) -> pa.RecordBatch:
    """kept_rows against both references; returns its result for further checks."""
    out = kept_rows(b, np.array(keep, dtype=bool))
    assert out.schema == b.schema
    want = [row for row, k in zip(b.to_pylist(), keep, strict=True) if k]
    assert out.to_pylist() == want
    mask = pa.array(keep, pa.bool_())
    ref = b.filter(mask)
    for name in b.schema.names:  # field by field, so a failure names its column
        got, exp = out.column(name), ref.column(name)
        assert got.null_count == exp.null_count, name
        assert got.equals(exp), name
    out.validate(full=True)
    return out


# -- hand-made cases: each fast path, with the values written out -----------------------------------------------------
def test_constant_columns_come_out_as_slices_of_the_input() -> None:
    n = 6
    b = assemble(
        n,
        {
            "provider": pa.array(["aws"] * n).dictionary_encode(),  # one dictionary entry: constant unread
            "account": pa.array(["111111111111"] * n),
            "sampling_rate": pa.array([1] * n, pa.uint32()),
            "extra": pa.array([[("version", "2")]] * n, EXTRA),
            "bytes": pa.array(range(n), pa.uint64()),
        },
    )
    out = check(b, [True, False, True, True, False, True])
    assert out.column("account").to_pylist() == ["111111111111"] * 4
    assert out.column("extra").to_pylist() == [[("version", "2")]] * 4
    assert out.column("bytes").to_pylist() == [0, 2, 3, 5]
    # Zero-copy: the constant columns share the input's buffers.
    assert out.column("account").buffers()[2].address == b.column("account").buffers()[2].address
    assert out.column("sampling_rate").buffers()[1].address == b.column("sampling_rate").buffers()[1].address


def test_almost_constant_columns_are_taken() -> None:
    """A column equal everywhere but in its last row (past the sample) is not constant."""
    n = 40
    b = assemble(
        n,
        {
            "account": pa.array(["a" * 12] * (n - 1) + ["b" * 12]),
            "sampling_rate": pa.array([1] * (n - 1) + [2], pa.uint32()),
            "action": pa.array(["accept"] * (n - 1) + ["reject"]).dictionary_encode(),
            "extra": pa.array([[("version", "2")]] * (n - 1) + [[("version", "5")]], EXTRA),
            "time_start": pa.array([0] * (n - 1) + [1], pa.int64()).cast(SCHEMA.field("time_start").type),
        },
    )
    keep = [i % 3 != 1 for i in range(n)]
    out = check(b, keep)
    assert out.column("account").to_pylist()[-2:] == ["a" * 12, "b" * 12]
    assert out.column("sampling_rate").to_pylist()[-1] == 2
    assert out.column("extra").to_pylist()[-1] == [("version", "5")]


def test_strings_of_one_length_and_of_many() -> None:
    b = assemble(
        5,
        {
            "interface": pa.array(["eni-01", "eni-02", "eni-03", "eni-04", "eni-05"]),  # one length: a byte matrix
            "vpc": pa.array(["vpc-1", "vpc-22", "", "vpc-4444", "v"]),  # lengths differ: Arrow's take
            "subnet": pa.array(["s1", None, "s3", "s4", None]),  # nulls: Arrow's take
            "zone": pa.array(["", "", "", "", ""]),  # empty strings, constant
        },
    )
    out = check(b, [False, True, True, False, True])
    assert out.column("interface").to_pylist() == ["eni-02", "eni-03", "eni-05"]
    assert out.column("vpc").to_pylist() == ["vpc-22", "", "v"]
    assert out.column("subnet").to_pylist() == [None, "s3", None]
    assert out.column("zone").to_pylist() == ["", "", ""]


def test_maps_of_k_entries_and_of_varying_entries() -> None:
    two = [[("a", str(i)), ("bb", None if i == 2 else "x" * i)] for i in range(5)]  # k = 2, a null item
    b = assemble(5, {"extra": pa.array(two, EXTRA)})
    out = check(b, [True, False, True, True, False])
    assert out.column("extra").to_pylist() == [two[0], two[2], two[3]]
    varying = [[("a", "1")], [], [("a", "2"), ("b", "3")], [("c", "4")], []]  # Arrow's take
    b = assemble(5, {"extra": pa.array(varying, EXTRA)})
    out = check(b, [False, True, True, False, True])
    assert out.column("extra").to_pylist() == [[], [("a", "2"), ("b", "3")], []]
    check(assemble(3, {"extra": pa.array([[], [], []], EXTRA)}), [True, False, True])  # k = 0


def test_shared_and_sparse_validity() -> None:
    """NODATA rows leave several columns null on the same rows: one bitmap, taken once, right for each."""
    n = 1000  # 5 nulls in 1000 rows: the sparse path (at most one null in 64 rows)
    nulls = {3, 64, 65, 150, 999}
    ports = [None if i in nulls else i for i in range(n)]
    b = assemble(
        n,
        {
            "src_port": pa.array(ports, pa.uint16()),
            "dst_port": pa.array(ports, pa.uint16()),
            "packets": pa.array([None if i in nulls else i * 10 for i in range(n)], pa.uint64()),
            "action": pa.array([None if i in nulls else "accept" for i in range(n)]).dictionary_encode(),
            "protocol": pa.array([None if i % 2 else 6 for i in range(n)], pa.uint8()),  # dense nulls
        },
    )
    keep = [i % 5 != 0 for i in range(n)]
    out = check(b, keep)
    assert out.column("src_port").null_count == 3  # rows 3, 64, 999 kept; 65 and 150 left out (multiples of 5)
    assert out.column("src_port").to_pylist()[:5] == [1, 2, None, 4, 6]
    assert out.column("protocol").null_count == sum(1 for i in range(n) if keep[i] and i % 2)


def test_sliced_columns() -> None:
    """Columns with an offset (slices of a batch, and src/dst addresses sharing one buffer) are read right."""
    n = 50
    full = assemble(
        n,
        {
            "src_port": pa.array([None if i % 7 == 3 else i for i in range(n)], pa.uint16()),
            "account": pa.array([f"{i % 3:012d}" for i in range(n)]),
            "interface": pa.array(["eni-x"] * n),
            "extra": pa.array([[("version", str(i % 2))] for i in range(n)], EXTRA),
            "log_status": pa.array(["ok"] * n).dictionary_encode(),
        },
    )
    for start, length in [(1, 40), (5, 9), (13, 37), (49, 1)]:
        part = full.slice(start, length)
        check(part, [(i * 7) % 3 != 0 for i in range(length)])


# -- hypothesis: any mix --------------------------------------------------------------------------------------------
def _column(draw: st.DrawFn, name: str, n: int) -> pa.Array:
    t = SCHEMA.field(name).type
    shape = draw(st.sampled_from(["constant", "few", "many", "nulls", "all null"]))
    if shape == "all null":
        return pa.nulls(n, t)
    if pa.types.is_map(t):
        k = draw(st.sampled_from([0, 1, 2, None]))  # None: a varying number of entries

        def entry(i: int) -> list[tuple[str, str | None]]:
            count = k if k is not None else i % 3
            value = "v" if shape == "constant" else str(i % (2 if shape == "few" else 1000))
            return [(f"k{j}", None if shape == "nulls" and i % 4 == 0 else value) for j in range(count)]

        return pa.array([entry(i) for i in range(n)], t)
    if pa.types.is_fixed_size_binary(t):
        values: list[object] = [bytes([i % 256]) * 16 for i in range(256)]
    elif pa.types.is_string(t) or pa.types.is_dictionary(t):
        same_length = draw(st.booleans())
        values = [f"{i:05d}" if same_length else "x" * (i % 7) + str(i) for i in range(300)]
    elif pa.types.is_timestamp(t):
        values = list(range(0, 10**6, 997))
    else:
        values = list(range(min(1000, 1 << t.bit_width)))
    pool = {"constant": values[:1], "few": values[:3]}.get(shape, values)
    items = draw(st.lists(st.sampled_from(pool), min_size=n, max_size=n))
    if shape == "nulls":
        holes = draw(st.lists(st.booleans(), min_size=n, max_size=n))
        items = [None if h else v for v, h in zip(items, holes, strict=True)]
    if pa.types.is_dictionary(t):
        return pa.array(items, pa.string()).dictionary_encode()
    if pa.types.is_timestamp(t):
        return pa.array(items, pa.int64()).cast(t)
    return pa.array(items, t)


@st.composite
def batches(draw: st.DrawFn) -> tuple[pa.RecordBatch, list[bool]]:
    n = draw(st.integers(1, 90))
    lead = draw(st.integers(0, 9))  # rows sliced off the front, so that columns have an offset
    names = draw(st.lists(st.sampled_from([f.name for f in SCHEMA]), min_size=1, max_size=8, unique=True))
    b = assemble(lead + n, {name: _column(draw, name, lead + n) for name in names}).slice(lead, n)
    keep = draw(st.lists(st.booleans(), min_size=n, max_size=n))
    return b, keep


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(batches())
def test_kept_rows_equals_python_and_arrow(case: tuple[pa.RecordBatch, list[bool]]) -> None:
    b, keep = case
    check(b, keep)
