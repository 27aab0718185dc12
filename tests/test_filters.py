"""collector.filters: which rows each operator keeps, on real column values (nulls included), and every compile
error with its message and position."""

from __future__ import annotations

import ipaddress
import random
from datetime import datetime

import flowdata
import numpy as np
import pyarrow as pa
import pytest

from adapters.aws.parse import parse_text
from collector.filters import Filter, FilterError, compile_filter
from collector.schema import ADDRESS_COLUMNS, SCHEMA, TIME, address_bytes, assemble


def addrs(*texts: str | None) -> pa.Array:
    return pa.array([None if t is None else address_bytes(t) for t in texts], pa.binary(16))


def ms(text: str) -> int:
    return int(datetime.fromisoformat(text).timestamp() * 1000)


def batch(**columns: list) -> pa.RecordBatch:
    """A FlowBatch from Python values by column name (addresses as text, times as RFC 3339 text); `bytes` holds the
    row number unless given, so kept rows can be named."""
    n = len(next(iter(columns.values())))
    arrays: dict[str, pa.Array] = {"bytes": pa.array(range(n), pa.uint64())}
    for name, values in columns.items():
        assert len(values) == n
        if name in ADDRESS_COLUMNS:
            arrays[name] = addrs(*values)
        elif name in ("time_start", "time_end"):
            arrays[name] = pa.array([None if v is None else ms(v) for v in values], pa.int64()).cast(TIME)
        else:
            arrays[name] = pa.array(values, SCHEMA.field(name).type)
    return assemble(n, arrays)


def kept(expr: str | Filter, b: pa.RecordBatch) -> list[int]:
    """Rows kept (by row number), checked three ways: the mask, apply, and the mask has no nulls."""
    f = compile_filter(expr) if isinstance(expr, str) else expr
    mask = f.mask(b)
    assert isinstance(mask, pa.BooleanArray) and len(mask) == b.num_rows and mask.null_count == 0
    rows = [i for i, keep in enumerate(mask.to_pylist()) if keep]
    out = f.apply(b)
    assert out.schema == b.schema
    assert out.equals(b.filter(mask))
    return [b.column("bytes")[i].as_py() for i in rows]


# -- integers ---------------------------------------------------------------------------------------------------------
PORTS = batch(dst_port=[22, 80, None, 3389, 443, 0, 65535])


@pytest.mark.parametrize(
    ("expr", "rows"),
    [
        ("dst_port == 22", [0]),
        ("dst_port != 22", [1, 3, 4, 5, 6]),  # not the null row
        ("dst_port < 443", [0, 1, 5]),
        ("dst_port <= 443", [0, 1, 4, 5]),
        ("dst_port > 443", [3, 6]),
        ("dst_port >= 443", [3, 4, 6]),
        ("dst_port == 0", [5]),
        ("dst_port == 65535", [6]),
        ("dst_port == +22", [0]),
        ("dst_port == 0x16", [0]),
        ("dst_port in (22, 3389)", [0, 3]),
        ("dst_port in 22", [0]),
        ("dst_port not in (22, 3389)", [1, 4, 5, 6]),
        ("dst_port in (22, 22, 80)", [0, 1]),
        # more than a few values: the 16-bit lookup table
        ("dst_port in (1, 2, 3, 4, 5, 6, 7, 80, 65535, 3389)", [1, 3, 6]),
        ("dst_port not in (1, 2, 3, 4, 5, 6, 7, 80, 65535, 3389)", [0, 4, 5]),
        ("dst_port is null", [2]),
        ("dst_port is not null", [0, 1, 3, 4, 5, 6]),
    ],
)
def test_integer_operators(expr: str, rows: list[int]) -> None:
    assert kept(expr, PORTS) == rows


def test_integer_widths_and_lookup_paths() -> None:
    b = batch(
        protocol=[6, 17, 1, None, 58],
        tcp_flags=[0x12, 2, 0, 0xFF, None],
        packets=[1, 2**64 - 1, None, 1000, 2**63],
        sampling_rate=[1, 4294967295, 10, None, 1],
    )
    assert kept("protocol == 6", b) == [0]
    assert kept("protocol in (1, 2, 3, 4, 5, 17, 58, 200)", b) == [1, 2, 4]  # 8-bit lookup table
    assert kept("tcp_flags == 0x12", b) == [0]
    assert kept("tcp_flags >= 0xff", b) == [3]
    assert kept("packets == 18446744073709551615", b) == [1]
    assert kept("packets > 9223372036854775807", b) == [1, 4]  # unsigned, not wrapped to negative
    assert kept("packets in (1000, 18446744073709551615)", b) == [1, 3]
    # more values than a chain on a 64-bit column: a sorted search
    assert kept("packets in (3, 4, 5, 6, 7, 8, 9, 1000, 9223372036854775808)", b) == [3, 4]
    assert kept("packets not in (3, 4, 5, 6, 7, 8, 9, 1000, 9223372036854775808)", b) == [0, 1]
    assert kept("sampling_rate == 4294967295", b) == [1]
    assert kept("sampling_rate < 10", b) == [0, 4]


# -- times ------------------------------------------------------------------------------------------------------------
TIMES = batch(
    time_start=["2024-05-01T12:00:00+00:00", "2024-05-01T12:00:00.250+00:00", None, "2024-05-01T11:59:59.999+00:00"]
)


@pytest.mark.parametrize(
    ("expr", "rows"),
    [
        ("time_start == 2024-05-01T12:00:00Z", [0]),
        ("time_start >= 2024-05-01T12:00:00Z", [0, 1]),
        ("time_start > 2024-05-01T12:00:00Z", [1]),
        ("time_start < 2024-05-01T12:00:00Z", [3]),
        ("time_start == 2024-05-01T12:00:00.250Z", [1]),
        ("time_start == 2024-05-01T12:00:00.25z", [1]),
        ("time_start == 2024-05-01t12:00:00.250000Z", [1]),  # trailing zeros are not finer than ms
        ("time_start == 2024-05-01T14:00:00.250+02:00", [1]),  # an offset
        ("time_start == 2024-05-01T07:59:59.999-04:00", [3]),
        ("time_start == '2024-05-01T12:00:00Z'", [0]),  # quoted
        ("time_start == '2024-05-01 12:00:00Z'", [0]),  # RFC 3339 allows a space
        ("time_start in (2024-05-01T12:00:00Z, 2024-05-01T11:59:59.999Z)", [0, 3]),
        ("time_start != 2024-05-01T12:00:00Z", [1, 3]),
        ("time_start is null", [2]),
    ],
)
def test_time_operators(expr: str, rows: list[int]) -> None:
    assert kept(expr, TIMES) == rows


# -- strings ----------------------------------------------------------------------------------------------------------
ACTIONS = batch(action=["reject", "accept", None, "reject", "accept"])


@pytest.mark.parametrize(
    ("expr", "rows"),
    [
        ('action == "reject"', [0, 3]),
        ("action == 'reject'", [0, 3]),
        ('action != "reject"', [1, 4]),
        ('action in ("reject", "accept")', [0, 1, 3, 4]),
        ('action not in ("reject")', [1, 4]),
        ('not action == "reject"', [1, 4]),
        ("action is null", [2]),
        ("action is not null", [0, 1, 3, 4]),
    ],
)
def test_dictionary_column(expr: str, rows: list[int]) -> None:
    assert kept(expr, ACTIONS) == rows


def test_dictionary_with_duplicate_unused_and_null_entries() -> None:
    # Code 0 and 2 are both "reject"; "accept" (1) is unused; code 3 is a null entry: a null value.
    codes = pa.array([0, 2, 3, None, 0, 2], pa.int32())
    action = pa.DictionaryArray.from_arrays(codes, pa.array(["reject", "accept", "reject", None]))
    b = assemble(6, {"action": action, "bytes": pa.array(range(6), pa.uint64())})
    assert kept('action == "reject"', b) == [0, 1, 4, 5]
    assert kept('action == "accept"', b) == []
    assert kept('action != "reject"', b) == []
    assert kept('action != "accept"', b) == [0, 1, 4, 5]
    assert kept("action is null", b) == [2, 3]
    assert kept("action is not null", b) == [0, 1, 4, 5]


def test_dictionary_many_codes_uses_a_table() -> None:
    # More matching codes than a chain of ==: a lookup table over the dictionary.
    names = [f"src{i}" for i in range(20)]
    values = [names[i % 20] for i in range(40)] + [None]
    b = assemble(41, {"source": pa.array(values).dictionary_encode(), "bytes": pa.array(range(41), pa.uint64())})
    wanted = ", ".join(f'"src{i}"' for i in range(0, 20, 2))  # 10 values
    assert kept(f"source in ({wanted})", b) == [i for i in range(40) if i % 2 == 0]
    assert kept(f"source not in ({wanted})", b) == [i for i in range(40) if i % 2 == 1]


def test_dictionary_without_the_value_and_large_dictionaries() -> None:
    b = batch(action=["accept", "accept", None])
    assert kept('action == "reject"', b) == []
    assert kept('action != "reject"', b) == [0, 1]
    # A dictionary too large to scan in Python: Arrow's lookup on the dictionary.
    names = [f"s{i}" for i in range(300)]
    b = assemble(
        301, {"source": pa.array(names + [None]).dictionary_encode(), "bytes": pa.array(range(301), pa.uint64())}
    )
    assert kept('source in ("s7", "s299", "nope")', b) == [7, 299]
    assert kept('source not in ("s7", "s299", "nope")', b) == [i for i in range(300) if i not in (7, 299)]


def test_string_columns_in_either_encoding() -> None:
    """A batch built elsewhere may carry a dictionary column as plain strings, or the reverse, or other indices."""
    schema = pa.schema(
        [("action", pa.string()), ("account", pa.dictionary(pa.int8(), pa.string())), ("bytes", pa.uint64())]
    )
    b = pa.RecordBatch.from_arrays(
        [
            pa.array(["reject", None, "accept"]),
            pa.array(["1", "2", None]).dictionary_encode().cast(schema.field("account").type),
            pa.array([0, 1, 2], pa.uint64()),
        ],
        schema=schema,
    )
    assert kept('action == "reject"', b) == [0]
    assert kept('action != "reject"', b) == [2]
    assert kept('account == "2"', b) == [1]
    assert kept('account not in ("2")', b) == [0]
    assert kept("account is null", b) == [2]


def test_plain_string_columns() -> None:
    b = batch(account=["111111111111", "222222222222", None, "111111111111", ""], region=["a", "b", "c", "d", "e"])
    assert kept('account == "111111111111"', b) == [0, 3]
    assert kept('account != "111111111111"', b) == [1, 4]
    assert kept('account in ("111111111111", "")', b) == [0, 3, 4]
    assert kept('account not in ("111111111111", "")', b) == [1]
    assert kept('account == ""', b) == [4]  # the empty string is a value, not null
    assert kept("account is null", b) == [2]
    # more than three values: Arrow's hash lookup
    assert kept('region in ("a", "c", "e", "x", "y")', b) == [0, 2, 4]
    assert kept('region not in ("a", "c", "e", "x", "y")', b) == [1, 3]
    assert kept('region == "A"', b) == []  # exact, case-sensitive


def test_string_escapes() -> None:
    b = batch(instance=['say "hi"', "it's", "back\\slash", "plain"])
    assert kept(r'instance == "say \"hi\""', b) == [0]
    assert kept("instance == 'say \"hi\"'", b) == [0]
    assert kept(r"instance == 'it\'s'", b) == [1]
    assert kept('instance == "it\'s"', b) == [1]
    assert kept(r'instance == "back\\slash"', b) == [2]
    assert kept('instance == "plain" or instance == "(not, a ) token"', b) == [3]


# -- addresses --------------------------------------------------------------------------------------------------------
ADDRS = batch(
    src_addr=[
        "10.1.2.3",  # 0
        "10.255.255.255",  # 1
        "11.0.0.1",  # 2
        "192.168.1.1",  # 3
        "192.168.1.2",  # 4
        "2001:db8::5",  # 5
        "2001:db9::1",  # 6
        "::a01:203",  # 7: IPv4-compatible (not mapped) 10.1.2.3: an IPv6 address
        None,  # 8
        "::",  # 9
        "0.0.0.0",  # 10
    ]
)


@pytest.mark.parametrize(
    ("expr", "rows"),
    [
        ("src_addr == 10.1.2.3", [0]),
        ("src_addr == '10.1.2.3'", [0]),
        ("src_addr == ::ffff:10.1.2.3", [0]),  # the same bytes
        ("src_addr == ::ffff:a01:203", [0]),
        ("src_addr != 10.1.2.3", [1, 2, 3, 4, 5, 6, 7, 9, 10]),
        ("src_addr in 10.0.0.0/8", [0, 1]),  # IPv4-mapped only: not row 7
        ("src_addr in '10.0.0.0/8'", [0, 1]),
        ("src_addr in ::ffff:10.0.0.0/104", [0, 1]),
        ("src_addr not in 10.0.0.0/8", [2, 3, 4, 5, 6, 7, 9, 10]),
        ("src_addr in 10.1.2.3/32", [0]),
        ("src_addr in 0.0.0.0/0", [0, 1, 2, 3, 4, 10]),  # every IPv4 address, no IPv6 one
        ("src_addr in ::/0", [0, 1, 2, 3, 4, 5, 6, 7, 9, 10]),  # every address
        ("src_addr in 2001:db8::/32", [5]),
        ("src_addr in 2000::/3", [5, 6]),
        ("src_addr in ::/96", [7, 9]),
        ("src_addr in 128.0.0.0/1", [3, 4]),
        ("src_addr in (10.0.0.0/8, 192.168.1.1, 2001:db8::/32)", [0, 1, 3, 5]),
        ("src_addr not in (10.0.0.0/8, 192.168.1.1, 2001:db8::/32)", [2, 4, 6, 7, 9, 10]),
        ("src_addr in (192.168.1.1, 192.168.1.2, 10.1.2.3, ::)", [0, 3, 4, 9]),
        ("src_addr in (10.0.0.0/8, 10.1.0.0/16)", [0, 1]),  # overlapping
        ("src_addr is null", [8]),
    ],
)
def test_address_operators(expr: str, rows: list[int]) -> None:
    assert kept(expr, ADDRS) == rows


def _reference(addr: bytes | None, nets: list[ipaddress.IPv4Network | ipaddress.IPv6Network]) -> bool:
    """An IPv4 network holds the IPv4-mapped addresses of its IPv4 addresses; an IPv6 network its addresses."""
    if addr is None:
        return False
    ip = ipaddress.IPv6Address(addr)
    v4 = ip.ipv4_mapped
    return any((v4 is not None and v4 in net) if net.version == 4 else ip in net for net in nets)


@pytest.mark.parametrize("seed", range(12))
def test_networks_against_ipaddress(seed: int) -> None:
    """Random networks of every prefix length, one to fifty per list (every evaluation path: chains, sorted search
    on one word, the shared-upper-word IPv4 case, hash lookup of many long IPv6 prefixes), against ipaddress."""
    rnd = random.Random(seed)
    pool_v4 = [ipaddress.IPv4Address(rnd.getrandbits(32)) for _ in range(40)]
    pool_v6 = [ipaddress.IPv6Address(rnd.getrandbits(128)) for _ in range(40)]
    texts = []
    for _ in range(400):
        base = rnd.choice(pool_v4 + pool_v6)
        if rnd.random() < 0.7:  # near a pooled address, so that prefixes match something
            flip = 1 << rnd.randrange(base.max_prefixlen)
            base = type(base)(int(base) ^ flip)
        texts.append(None if rnd.random() < 0.05 else str(base))
    b = batch(dst_addr=texts)
    column = b.column("dst_addr").to_pylist()
    for _ in range(8):
        nets: list[ipaddress.IPv4Network | ipaddress.IPv6Network] = []
        same_length = rnd.random() < 0.5
        length4, length6 = rnd.randrange(33), rnd.randrange(129)
        for _ in range(rnd.choice([1, 2, 7, 20, 50])):
            ip = rnd.choice(pool_v4 + pool_v6)
            length = (length4 if ip.version == 4 else length6) if same_length else rnd.randrange(ip.max_prefixlen + 1)
            nets.append(ipaddress.ip_network(f"{ip}/{length}", strict=False))
        expr = f"dst_addr in ({', '.join(map(str, nets))})"
        want = [i for i, a in enumerate(column) if _reference(a, nets)]
        assert kept(expr, b) == want, expr
        unwanted = [i for i, a in enumerate(column) if a is not None and i not in set(want)]
        assert kept(expr.replace(" in (", " not in (", 1), b) == unwanted, expr


# -- nulls, logic, precedence -----------------------------------------------------------------------------------------
# x = dst_port, y = src_port; rows: (1, 1) (1, 2) (null, 1) (null, 2) (2, null) (null, null)
XY = batch(dst_port=[1, 1, None, None, 2, None], src_port=[1, 2, 1, 2, None, None])


@pytest.mark.parametrize(
    ("expr", "rows"),
    [
        # A comparison on null is unknown, and unknown is not selected...
        ("dst_port == 1", [0, 1]),
        ("dst_port != 1", [4]),
        ("not (dst_port == 1)", [4]),  # ...whether negated or not: not unknown is unknown
        ("not not (dst_port == 1)", [0, 1]),
        ("not dst_port != 1", [0, 1]),
        ("not (dst_port not in (1))", [0, 1]),
        ("dst_port != 1 or dst_port is null", [2, 3, 4, 5]),  # how to ask for the nulls
        # Kleene logic: unknown or true is true, unknown and false is false, unknown and true is unknown
        ("dst_port == 1 or src_port == 1", [0, 1, 2]),
        ("dst_port == 1 and src_port == 1", [0]),
        # rows 3 and 4: unknown and false is false, so "not" makes them true; row 2: unknown and true stays unknown
        ("not (dst_port == 1 and src_port == 1)", [1, 3, 4]),
        # row 3: unknown or false is unknown, and so is its negation
        ("not (dst_port == 1 or src_port == 1)", []),
        ("not (dst_port == 1 or src_port == 2)", []),
        ("not (dst_port == 2 or src_port == 2)", [0]),  # row 2: unknown or false is unknown
        ("not (dst_port < 2)", [4]),  # De Morgan and complements hold: same as dst_port >= 2
        ("dst_port >= 2", [4]),
        ("dst_port is null and src_port is null", [5]),
        ("not (dst_port is null or src_port is null)", [0, 1]),
    ],
)
def test_null_semantics(expr: str, rows: list[int]) -> None:
    assert kept(expr, XY) == rows


P = batch(dst_port=[1, 1, 1, 1, 2, 2, 2, 2], src_port=[1, 1, 2, 2, 1, 1, 2, 2], protocol=[6, 17, 6, 17, 6, 17, 6, 17])


@pytest.mark.parametrize(
    ("expr", "rows"),
    [
        # and binds tighter than or
        ("dst_port == 2 or src_port == 2 and protocol == 6", [2, 4, 5, 6, 7]),
        ("(dst_port == 2 or src_port == 2) and protocol == 6", [2, 4, 6]),
        ("protocol == 6 and src_port == 2 or dst_port == 2", [2, 4, 5, 6, 7]),
        # not binds tighter than and
        ("not dst_port == 2 and protocol == 6", [0, 2]),
        ("not (dst_port == 2 and protocol == 6)", [0, 1, 2, 3, 5, 7]),
        ("not dst_port == 2 or protocol == 6", [0, 1, 2, 3, 4, 6]),
        ("((dst_port == 1))", [0, 1, 2, 3]),
        ("dst_port == 1 and src_port == 1 and protocol == 17", [1]),
        ("dst_port == 9 or src_port == 9 or protocol == 17", [1, 3, 5, 7]),
        # keywords and column names are case-insensitive
        ("DST_PORT == 1 AND Src_Port == 2 Or NOT protocol IN (6)", [1, 2, 3, 5, 7]),
        ("dst_port IS NOT NULL and protocol NOT IN (17)", [0, 2, 4, 6]),
        # whitespace is optional around operators and parentheses
        ("dst_port==1and(src_port==2)", None),
        ("(dst_port==1)and(src_port==2)", [2, 3]),
        ("dst_port in(1)", [0, 1, 2, 3]),
    ],
)
def test_precedence(expr: str, rows: list[int] | None) -> None:
    if rows is None:  # "1and" is one word: not a number
        with pytest.raises(FilterError):
            compile_filter(expr)
        return
    assert kept(expr, P) == rows


def test_and_or_stop_early_with_the_right_answer() -> None:
    b = batch(dst_port=[1, 2, 3], src_addr=["10.0.0.1", None, "::1"])
    assert kept("dst_port == 9 and src_addr in 10.0.0.0/8", b) == []  # nothing left after the first: stop
    assert kept("src_addr in 10.0.0.0/8 and dst_port == 9", b) == []
    assert kept("dst_port is not null or src_addr in 10.0.0.0/8", b) == [0, 1, 2]  # everything after the first
    assert kept("dst_port > 1 or src_addr in 10.0.0.0/8", b) == [0, 1, 2]


def test_all_null_column_selects_nothing_but_is_null() -> None:
    b = batch(dst_port=[1, 2, 3])  # every other column is null, as for a format without it
    for expr in ['region == "x"', 'region != "x"', "not (region == 'x')", "src_addr in ::/0", "tcp_flags >= 0"]:
        assert kept(expr, b) == [], expr
    assert kept("region is null", b) == [0, 1, 2]
    assert kept("region is not null", b) == []
    assert kept("region is null and dst_port > 1", b) == [1, 2]


# -- the API ----------------------------------------------------------------------------------------------------------
def test_apply_returns_the_same_batch_when_everything_is_kept() -> None:
    f = compile_filter("dst_port is not null")
    b = batch(dst_port=[1, 2, 3])
    assert f.apply(b) is b


def test_apply_partial_and_empty() -> None:
    b = batch(dst_port=[5, 6, 7], action=["accept", "reject", "accept"], src_addr=["10.0.0.1", None, "::1"])
    out = compile_filter('action == "accept"').apply(b)
    assert out.schema == SCHEMA
    assert out.column("dst_port").to_pylist() == [5, 7]
    assert out.column("action").to_pylist() == ["accept", "accept"]
    assert out.column("src_addr").to_pylist() == [address_bytes("10.0.0.1"), address_bytes("::1")]
    assert out.column("region").to_pylist() == [None, None]  # all-null columns come out null, right length
    assert out.column("extra").type == SCHEMA.field("extra").type
    none = compile_filter("dst_port > 100").apply(b)
    assert none.num_rows == 0 and none.schema == SCHEMA


def test_apply_with_every_column_present() -> None:
    n = 4
    columns = {}
    for field in SCHEMA:
        t = field.type
        if pa.types.is_dictionary(t):
            columns[field.name] = pa.array(["ok", "x", "ok", "y"]).dictionary_encode()
        elif pa.types.is_timestamp(t):
            columns[field.name] = pa.array([0, 1000, 2000, 3000], pa.int64()).cast(t)
        elif pa.types.is_fixed_size_binary(t):
            columns[field.name] = addrs("10.0.0.1", "10.0.0.2", "::1", "::2")
        elif pa.types.is_map(t):
            columns[field.name] = pa.array([[("k", str(i))] for i in range(n)], t)
        elif pa.types.is_string(t):
            columns[field.name] = pa.array(["a", "b", "c", "d"])
        else:
            columns[field.name] = pa.array(range(n), t)
    b = assemble(n, columns)
    assert all(c.null_count == 0 for c in b.columns)
    out = compile_filter("src_addr in 10.0.0.0/8 and time_start > 1970-01-01T00:00:00Z").apply(b)
    assert out.equals(b.slice(1, 1))
    assert out.column("extra").to_pylist() == [[("k", "1")]]


def test_empty_batch() -> None:
    b = assemble(0, {})
    f = compile_filter('action == "reject"')
    assert len(f.mask(b)) == 0
    assert f.apply(b).num_rows == 0


def test_sliced_batches() -> None:
    """Columns with an offset (a slice of a batch, as retries and splits make) are read from the right place."""
    b = batch(
        dst_port=[1, 2, 3, None, 5, 6, 7, 8, 9, 10, 11],
        action=["accept", "reject"] * 5 + [None],
        src_addr=["10.0.0.1", "11.0.0.1", None, "2001:db8::1"] * 2 + ["10.0.0.2", "10.0.0.3", "1.1.1.1"],
        account=["a", "b", "c", None, "e", "f", "g", "h", "i", "j", "k"],
    )
    part = b.slice(3, 7)  # rows 3..9
    assert kept("dst_port > 5", part) == [5, 6, 7, 8, 9]
    assert kept("dst_port is null", part) == [3]
    assert kept('action == "reject"', part) == [3, 5, 7, 9]
    assert kept("src_addr in 10.0.0.0/8", part) == [4, 8, 9]
    assert kept("src_addr is null", part) == [6]
    assert kept('account in ("e", "j", "z")', part) == [4, 9]


def test_parsed_flow_logs() -> None:
    """On the parser's own output (its dictionaries, its batches), against the same test in Python."""
    text = (flowdata.HEADER + "\n" + "\n".join(flowdata.varied_records(1000, 3000)) + "\n").encode()
    for result in parse_text([text], unit="t", source="s"):
        b = result.batch
        f = compile_filter('action == "accept" and (dst_port < 100 or src_addr in 10.0.0.0/16) and packets >= 500')
        rows = b.to_pylist()
        want = [
            r["bytes"]
            for r in rows
            if r["action"] == "accept"
            and (
                r["dst_port"] < 100
                or ipaddress.IPv6Address(r["src_addr"]).ipv4_mapped in ipaddress.ip_network("10.0.0.0/16")
            )
            and r["packets"] >= 500
        ]
        assert want and len(want) < len(rows)
        assert kept(f, b) == want


def test_filter_object() -> None:
    f = compile_filter('action == "reject" and src_addr in 10.0.0.0/8 or dst_port is null')
    assert f.text == 'action == "reject" and src_addr in 10.0.0.0/8 or dst_port is null'
    assert f.columns == {"action", "src_addr", "dst_port"}
    assert f == compile_filter(f.text) and hash(f) == hash(compile_filter(f.text))
    assert f != compile_filter("dst_port is null")
    assert repr(f) == "Filter('action == \"reject\" and src_addr in 10.0.0.0/8 or dst_port is null')"


def test_mask_is_numpy_compatible() -> None:
    f = compile_filter("dst_port in (22, 80)")
    b = batch(dst_port=list(np.arange(100) % 90))
    assert kept(f, b) == [22, 80]
    assert f.selected(b).dtype == bool


# -- errors -----------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("expr", "at", "message"),
    [
        ('action == "reject" and dst_prot == 22', "dst_prot", "unknown column 'dst_prot' (did you mean 'dst_port'?)"),
        ("prot == 6", "prot", "unknown column 'prot' (did you mean 'protocol'?)"),
        ("zzz == 1", "zzz", "unknown column 'zzz'"),
        ("extra == 'x'", "extra", "column 'extra' is a map and cannot be filtered on"),
        ('dst_port == "22"', '"22"', "dst_port is an integer, not a string"),
        (
            'protocol == "tcp"',
            '"tcp"',
            "protocol is an integer, not a string (protocol numbers: icmp 1, tcp 6, udp 17, icmpv6 58)",
        ),
        ("dst_port == 10.0.0.1", "10.0", "dst_port is an integer, not an address"),
        ("dst_port == 65536", "65536", "65536 is out of range for dst_port (0..65535)"),
        ("dst_port in (22, -1)", "-1", "-1 is out of range for dst_port (0..65535)"),
        ("protocol == 256", "256", "256 is out of range for protocol (0..255)"),
        (
            "packets == 18446744073709551616",
            "1844",
            "18446744073709551616 is out of range for packets (0..18446744073709551615)",
        ),
        ("dst_port == 22.5", "22.5", "22.5 is not an integer (every numeric column holds integers)"),
        ("src_addr in 10.0.0.1/8", "10.0.0.1/8", "network 10.0.0.1/8 has host bits set (did you mean 10.0.0.0/8?)"),
        ("src_addr in 10.0.0.0/33", "10.0.0.0/33", "invalid network '10.0.0.0/33'"),
        ("src_addr in (10.0.0.0/8, 2001:db8::/129)", "2001", "invalid network '2001:db8::/129'"),
        ("src_addr == 10.0.0.256", "10.0.0.256", "invalid address '10.0.0.256'"),
        ("src_addr == 10.0.0", "10.0.0", "invalid address '10.0.0'"),
        ("src_addr == 'host'", "'host'", "invalid address 'host'"),
        ("src_addr == 10.0.0.0/8", "10.0.0.0/8", "a network needs 'in': src_addr in 10.0.0.0/8"),
        ("src_addr == 167772161", "1677", "src_addr is an address, not an integer"),
        ("src_addr == fe80::1%eth0", "fe80", "address 'fe80::1%eth0' has a scope id, which flow logs do not carry"),
        (
            "src_addr < 10.0.0.1",
            "<",
            "'<' does not apply to src_addr, an address column (use ==, != or in with a network)",
        ),
        ('action < "reject"', "<", "'<' does not apply to action, a string column (use ==, != or in)"),
        ('account >= "1"', ">=", "'>=' does not apply to account, a string column (use ==, != or in)"),
        (
            'action == "REJECT"',
            '"REJECT"',
            "action is never 'REJECT' (did you mean 'reject'? its values are 'accept', 'reject')",
        ),
        ('direction == "inbound"', '"inbound"', "direction is never 'inbound' (its values are 'ingress', 'egress')"),
        ("action == reject", "reject", "expected a value, found 'reject' (strings are quoted: \"reject\")"),
        ("account == 111111111111", "1111", 'account is a string: quote the value ("111111111111")'),
        ("time_start > 1718000000", "1718", "time_start takes an RFC 3339 time like 2024-05-01T12:00:00Z"),
        ("time_start > 2024-05-01", "2024", "time 2024-05-01 needs a time of day and an offset: 2024-05-01T00:00:00Z"),
        (
            "time_start > 2024-05-01T12:00:00",
            "2024",
            "time 2024-05-01T12:00:00 has no offset (add Z for UTC, or +hh:mm)",
        ),
        (
            "time_start > 2024-05-01T12:00:00.0001Z",
            "2024",
            "time 2024-05-01T12:00:00.0001Z is finer than the columns' millisecond precision",
        ),
        (
            "time_start > 2024-13-01T12:00:00Z",
            "2024",
            "invalid time '2024-13-01T12:00:00Z' (RFC 3339, e.g. 2024-05-01T12:00:00Z)",
        ),
        ("dst_port == null", "null", "null is not a value: use 'dst_port is null' or 'dst_port is not null'"),
        ("dst_port is 1", "1", "expected 'null', found '1'"),
        ("dst_port is not", None, "expected 'null', found the end of the expression"),
        ("dst_port not (1)", "(", "expected 'in' after 'not', found '('"),
        ("dst_port 22", "22", "expected an operator after 'dst_port', found '22'"),
        ("dst_port", None, "expected an operator after 'dst_port', found the end of the expression"),
        ("dst_port ==", None, "expected a value, found the end of the expression"),
        ("dst_port == )", ")", "expected a value, found ')'"),
        ("dst_port in ()", ")", "empty list"),
        ("dst_port in (1 2)", "2", "expected ',' or ')' in the list, found '2'"),
        ("dst_port in (1,)", ")", "expected a value, found ')'"),
        ("dst_port in (1", None, "expected ',' or ')' in the list, found the end of the expression"),
        ("22 == dst_port", "22", "expected a column name, found '22' (a predicate is: column, operator, value)"),
        ("src_port == dst_port", "dst_port", "expected a value, found 'dst_port'"),
        ("dst_port == 1 and", None, "expected a column name, found the end of the expression"),
        ("and dst_port == 1", "and", "expected a column name, found 'and'"),
        (
            "dst_port == 1 protocol == 6",
            "protocol",
            "expected 'and', 'or' or the end of the expression, found 'protocol'",
        ),
        ("dst_port == 1)", ")", "unmatched ')'"),
        ("(dst_port == 1", "(", "'(' is not closed"),
        ("((dst_port == 1)", "(", "'(' is not closed"),
        ("(dst_port == 1 protocol == 6)", "protocol", "expected ')', 'and' or 'or', found 'protocol'"),
        ("()", ")", "empty parentheses"),
        ("", None, "empty expression"),
        ("   ", None, "empty expression"),
        ("dst_port = 22", "=", "'=' is not an operator (did you mean '=='?)"),
        ("!(dst_port == 22)", "!", "'!' is not an operator (use 'not', or '!=')"),
        ("dst_port == 1 && protocol == 6", "&&", "'&&' is not an operator (use 'and')"),
        ("dst_port == 1 || protocol == 6", "||", "'||' is not an operator (use 'or')"),
        ('account == "abc', '"abc', "unterminated string"),
        (r'account == "a\nb"', "\\", "unknown escape '\\\\n' (only \\\\, \\' and \\\" are escapes)"),
        ("dst_port == 1 $", "$", "unexpected '$'"),
        ('dst_port == 1 "x"', '"x"', "expected 'and', 'or' or the end of the expression, found the string 'x'"),
        ("time_start > 'yesterday'", "'y", "invalid time 'yesterday' (RFC 3339, e.g. 2024-05-01T12:00:00Z)"),
    ],
)
def test_errors(expr: str, at: str | None, message: str) -> None:
    with pytest.raises(FilterError) as info:
        compile_filter(expr)
    err = info.value
    position = len(expr) if at is None else expr.index(at)
    assert (err.message, err.position) == (message, position)
    assert str(err) == f"at column {position + 1}: {message}"
    assert isinstance(err, ValueError)


def test_error_str_and_caret() -> None:
    with pytest.raises(FilterError) as info:
        compile_filter('action == "reject" and dst_prot == 22')
    assert str(info.value) == "at column 24: unknown column 'dst_prot' (did you mean 'dst_port'?)"
    assert info.value.position == 23
    assert info.value.caret() == 'action == "reject" and dst_prot == 22\n                       ^'


def test_not_a_string() -> None:
    with pytest.raises(FilterError, match="a filter is a string, not int"):
        compile_filter(22)  # type: ignore[arg-type]
