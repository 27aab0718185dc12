"""Generators of hostile GCP flow log input (issue #11's fuzz acceptance): LogEntry lines and bare records of every
documented shape, mutated, in whole objects (plain, gzip, truncated gzip, a bad trailer, concatenated members).

Shapes come from Google's record format page (https://cloud.google.com/vpc/docs/about-flow-logs-records:
connection, reporter SRC / DEST / SRC_GATEWAY / DEST_GATEWAY, InstanceDetails with managed_instance_group,
VpcDetails, GatewayDetails, GeographicDetails, GkeDetails, disposition, rtt_msec) and Cloud Logging's LogEntry
(insertId, logName, timestamps, resource.labels of gce_subnetwork), int64 counters as JSON strings as Cloud Logging
writes them. Values come from small pools, so that the fallbacks of rule 3 meet equal and differing values.

One generator, two sources of randomness: `random.Random(seed)` for the long mode (`seeded_object`: a seed is a
reproducer, and no Hypothesis cost), and Hypothesis's `st.randoms()` for the properties in `make test` (drawn,
recorded and replayable). The generators only make bytes: what they mean is for `oracle_gcp` to say.
"""

from __future__ import annotations

import gzip
import json
import random
from dataclasses import dataclass
from typing import Any

from hypothesis import strategies as st
from oracle_gcp import BOM, MAX_NESTING


class Raw:
    """JSON text put into a line as is (numbers in forms json.dumps never writes, broken values)."""

    def __init__(self, text: str) -> None:
        self.text = text


class Obj:
    """An object as a list of (name, value) pairs: a name may come twice."""

    def __init__(self, pairs: list[tuple[str, Any]]) -> None:
        self.pairs = pairs


# --- serializing -------------------------------------------------------------------------------------------------


@dataclass
class Style:
    sep: tuple[str, str] = (",", ":")
    ascii: bool = False
    escape: float = 0.0  # chance to write a string's character as a \\u escape


def _string(rng: random.Random, text: str, style: Style) -> str:
    if style.escape and text and rng.random() < style.escape:
        i = rng.randrange(len(text))
        ch = text[i]
        if ord(ch) < 0x10000:
            esc = f"\\u{ord(ch):04x}" if rng.random() < 0.5 else f"\\u{ord(ch):04X}"
        else:
            code = ord(ch) - 0x10000
            esc = f"\\u{0xD800 + (code >> 10):04x}\\u{0xDC00 + (code & 0x3FF):04x}"
        return (
            json.dumps(text[:i], ensure_ascii=style.ascii)[:-1]
            + esc
            + json.dumps(text[i + 1 :], ensure_ascii=style.ascii)[1:]
        )
    return json.dumps(text, ensure_ascii=style.ascii)


def dump(rng: random.Random, value: Any, style: Style) -> str:
    if isinstance(value, Raw):
        return value.text
    if isinstance(value, str):
        return _string(rng, value, style)
    if isinstance(value, dict):
        value = Obj(list(value.items()))
    if isinstance(value, Obj):
        comma, colon = style.sep
        return "{" + comma.join(f"{_string(rng, k, style)}{colon}{dump(rng, v, style)}" for k, v in value.pairs) + "}"
    if isinstance(value, list):
        return "[" + style.sep[0].join(dump(rng, v, style) for v in value) + "]"
    return json.dumps(value)


# --- values ------------------------------------------------------------------------------------------------------

PROJECTS = ["web-prod", "net-hub", "yoyodyne-102010", "p2"]
REGIONS = ["us-central1", "europe-west1", "us-west1"]
ZONES = ["us-central1-a", "europe-west1-b", "us-west1-a"]
VPCS = ["prod-vpc", "hub-vpc", "yoyo-vpc-1"]
SUBNETS = ["web-subnet", "sn-1", "yoyo-vpc-1"]
VMS = ["web-1", "app-1", "vm-instance-01"]
WEIRD = ["", " ", "é", "日本語", "😀", "a\u0000b", "\u2028", "x" * 30, "\\", '"', "\x7f", "\ud7ff"]
UNKNOWN_KEYS = ["src_nat_ip", "new_field", "x", "", "ü", "a.b", "rtt_msec", "cluster", "k" * 10]
WRONG = [Raw("5"), Raw("5.5"), Raw("true"), Raw("false"), Raw("null"), Raw('"x"'), Raw("[]"), Raw("[1, 2]"), Raw("{}"),
         Raw('{"a":1}'), Raw('""'), Raw("-1"), Raw("1e400")]  # fmt: skip


def _text(rng: random.Random, pool: list[str]) -> str:
    return rng.choice(WEIRD) if rng.random() < 0.05 else rng.choice(pool)


def _ipv4(rng: random.Random) -> str:
    return ".".join(str(rng.choice([0, 1, 10, 127, 192, 203, 255, rng.randrange(256)])) for _ in range(4))


def _ipv6(rng: random.Random) -> str:
    groups = [f"{rng.randrange(0x10000):x}" for _ in range(8)]
    r = rng.random()
    if r < 0.3:
        return ":".join(groups)
    if r < 0.6:
        return "2001:db8::" + groups[0]
    if r < 0.7:
        return "::ffff:" + _ipv4(rng)
    return rng.choice(["::1", "::", "fe80::1", "2001:DB8::1"])


BAD_ADDRESSES = ["300.0.0.1", "10.0.0", "010.0.0.1", "1.2.3.4 ", "fe80::1%eth0", "::g", "", "١.٢.٣.٤", "1.2.3.4/32",
                 "localhost", "2001:db8:::1"]  # fmt: skip


def address(rng: random.Random) -> Any:
    r = rng.random()
    if r < 0.05:
        return rng.choice(BAD_ADDRESSES)
    if r < 0.07:
        return rng.choice(WRONG)
    return _ipv4(rng) if r < 0.7 else _ipv6(rng)


def number(rng: random.Random, value: int, high: int) -> Any:
    """`value` in one of rule 4's forms, or mutated: out of range, signed, fractional, huge, the wrong type."""
    r = rng.random()
    if r < 0.35:
        return value
    if r < 0.55:
        return str(value)
    if r < 0.62:
        return float(value)
    if r < 0.67:
        return f"{value}." + "0" * rng.randrange(4)
    if r < 0.70:
        return "0" * rng.choice([1, 3, 20, 5000]) + str(value)
    if r < 0.74:
        return Raw(rng.choice([f"{value}e0", f"{value}.0E+0", f"{value * 10}e-1", f"{value}.000", "-0", "-0.0", "1e-400",
                               f"{value}.0000000000000001", "0e5"]))  # fmt: skip
    if r < 0.78:
        return rng.choice([high, high + 1, -1, -high, 2**63 - 1, 2**63, 2**64, 10**30])
    if r < 0.82:
        return Raw(rng.choice(["1" + "0" * 5000, "1e400", "-1e400", "9.223372036854775807e18", "9223372036854775807.0",
                               "65535.0", "65536.0", "255.0", "256e0", "1.5e1", "3389.5"]))  # fmt: skip
    if r < 0.88:
        return rng.choice([f"{value}.5", f"-{value}", f"+{value}", f" {value}", f"{value}e0", "0x1bb", "", "١٢", "1_0",
                           "NaN", "inf", str(2**63), "9" * 30, "0" * 30])  # fmt: skip
    if r < 0.92:
        return rng.choice([True, False])
    return rng.choice(WRONG)


def _fraction(rng: random.Random) -> str:
    n = rng.choice([0, 0, 1, 3, 6, 9, 9, 10])
    return "." + "".join(rng.choice("0123456789") for _ in range(n)) if n else ""


def time_text(rng: random.Random) -> Any:
    r = rng.random()
    year = rng.choice([2018, 2024, 2024, 2000, 1900, 1970, 1969, 1, 9999, 0])
    month = rng.choice([1, 2, 2, 6, 12, 4, 13, 0])
    day = rng.choice([1, 28, 29, 30, 31, 15, 0, 32])
    hms = rng.choice([(12, 0, 0), (23, 59, 59), (0, 0, 0), (24, 0, 0), (23, 59, 60), (12, 60, 0), (13, 47, 37)])
    if r < 0.5:  # what Cloud Logging writes
        year, month, day, hms = rng.choice([2018, 2024]), rng.randint(1, 12), rng.randint(1, 28), (13, 47, 37)
    offset = rng.choice(["Z", "Z", "Z", "+00:00", "-00:00", "+05:30", "-08:00", "+23:59", "+24:00", "+01:60", "z", "",
                         "+0100", "+01", " Z"])  # fmt: skip
    sep = "T" if rng.random() < 0.95 else rng.choice(["t", " ", "_"])
    text = f"{year:04d}-{month:02d}-{day:02d}{sep}{hms[0]:02d}:{hms[1]:02d}:{hms[2]:02d}{_fraction(rng)}{offset}"
    if r < 0.5 and rng.random() < 0.9:
        text = f"{year:04d}-{month:02d}-{day:02d}T13:47:37{_fraction(rng)}Z"
    q = rng.random()
    if q < 0.03:
        return rng.choice(["0001-01-01T00:00:00+00:01", "0001-01-01T00:00:00-00:01", "9999-12-31T23:59:59.999999999Z",
                           "9999-12-31T23:59:59-00:01", "9999-12-31T23:59:59+00:01", "1970-01-01T00:00:00Z",
                           "1969-12-31T23:59:59.9999Z", "２０２４-01-01T00:00:00Z", "2024-01-01T00:00:00.Z",
                           "2024-01-01T00:00:00Z\n", "2024-1-01T00:00:00Z"])  # fmt: skip
    if q < 0.06:
        return rng.choice(WRONG)
    return text


def _maybe(rng: random.Random, p: float = 0.8) -> bool:
    return rng.random() < p


def _fields(rng: random.Random, spec: dict[str, Any], mutate: float) -> dict[str, Any]:
    """Some of `spec`'s fields; with chance `mutate` per field, a wrong type, null, or an unknown key added."""
    out: dict[str, Any] = {}
    for key, make in spec.items():
        if not _maybe(rng, 0.85):
            continue
        out[key] = make() if callable(make) else make
        if rng.random() < mutate:
            out[key] = rng.choice(WRONG + [None])
    if rng.random() < mutate * 2:
        out[rng.choice(UNKNOWN_KEYS)] = other_value(rng, 1)
    return out


def other_value(rng: random.Random, level: int) -> Any:
    """A value for a key the rules do not name: any JSON, objects nested to any depth."""
    r = rng.random()
    if r < 0.3:
        return _text(rng, ["v", "GKE", "61", "x y"])
    if r < 0.45:
        return rng.choice([0, -0.0, 1.50, 15169, 2**70, True, False, None])
    if r < 0.5:
        return Raw(
            rng.choice(["-0", "1.50", "1E3", "1e400", "[ 1 , 2 ]", "[]", "{}", '{"a":null}', "[{}]", "1" * 5000])
        )
    if r < 0.6:
        return [other_value(rng, level + 1) for _ in range(rng.randrange(3))]
    if r < 0.65:
        return nested(rng)
    if level > 4:
        return "deep"
    return {rng.choice(UNKNOWN_KEYS + ["name", "a", "b"]): other_value(rng, level + 1) for _ in range(rng.randrange(4))}


def nested(rng: random.Random) -> Any:
    """Objects or arrays nested around the limits (MAX_DEPTH 16 levels of flattening, MAX_NESTING 64)."""
    depth = rng.choice([14, 15, 16, 17, 30, MAX_NESTING - 4, MAX_NESTING - 3, MAX_NESTING - 2, MAX_NESTING - 1,
                        MAX_NESTING, MAX_NESTING + 1, 100, 1000, 5000])  # fmt: skip
    if rng.random() < 0.5:
        return Raw('{"a":' * depth + '"x"' + "}" * depth)
    return Raw("[" * depth + "1" + "]" * depth)


def instance(rng: random.Random, mutate: float) -> dict[str, Any]:
    spec: dict[str, Any] = {
        "project_id": lambda: _text(rng, PROJECTS),
        "vm_name": lambda: _text(rng, VMS),
        "region": lambda: _text(rng, REGIONS),
        "zone": lambda: _text(rng, ZONES),
    }
    if rng.random() < 0.3:
        spec["managed_instance_group"] = lambda: _fields(
            rng, {"name": "web-mig", "region": lambda: _text(rng, REGIONS), "zone": lambda: _text(rng, ZONES)}, mutate
        )
    return _fields(rng, spec, mutate)


def vpc(rng: random.Random, mutate: float) -> dict[str, Any]:
    spec = {
        "project_id": lambda: _text(rng, PROJECTS),
        "vpc_name": lambda: _text(rng, VPCS),
        "subnetwork_name": lambda: _text(rng, SUBNETS),
        "subnetwork_region": lambda: _text(rng, REGIONS),
    }
    return _fields(rng, spec, mutate)


def gateway(rng: random.Random, mutate: float) -> dict[str, Any]:
    spec = {
        "type": lambda: rng.choice(["VPN_TUNNEL", "INTERCONNECT_ATTACHMENT", "CLOUD_NAT"]),
        "project_id": lambda: _text(rng, PROJECTS),
        "location": lambda: _text(rng, REGIONS),
        "name": lambda: rng.choice(["tunnel-a", "attach-1", "web-1"]),
        "vpc": lambda: _fields(
            rng, {"project_id": lambda: _text(rng, PROJECTS), "vpc_name": lambda: _text(rng, VPCS)}, mutate
        ),
    }
    return _fields(rng, spec, mutate)


def location(rng: random.Random, mutate: float) -> dict[str, Any]:
    spec = {
        "continent": "America",
        "country": lambda: rng.choice(["usa", "deu"]),
        "region": "California",
        "city": lambda: _text(rng, ["Mountain View", "Santa Teresa"]),
        "asn": lambda: rng.choice([15169, "15169", 15169.0, Raw("15169.0"), Raw("-0")]),
    }
    return _fields(rng, spec, mutate)


def gke(rng: random.Random) -> dict[str, Any]:
    return {
        "cluster": {"cluster_location": rng.choice(REGIONS), "cluster_name": "gke-1"},
        "pod": {
            "pod_name": "p-1",
            "pod_namespace": "default",
            "pod_workload": {"workload_name": "w", "workload_type": "DEPLOYMENT"},
        },
        "service": [{"service_name": "svc", "service_namespace": "default"}],
    }


REPORTERS = ["SRC", "DEST", "SRC_GATEWAY", "DEST_GATEWAY"]


def record(rng: random.Random, mutate: float) -> dict[str, Any]:
    """One jsonPayload: a VM or a gateway reporting, the other side perhaps a VM too, with any optional part."""
    reporter: Any = rng.choice(REPORTERS)
    if rng.random() < mutate:
        reporter = rng.choice(["INTERNAL", "", "src", None] + WRONG)
    protocol = rng.choice([6, 17, 1, 58, 6])
    conn: dict[str, Any] = {"src_ip": address(rng), "dest_ip": address(rng), "protocol": number(rng, protocol, 255)}
    if protocol not in (1, 58) or rng.random() < 0.2:
        conn["src_port"] = number(rng, rng.choice([443, 3389, 49444, 0, 65535]), 65535)
        conn["dest_port"] = number(rng, rng.choice([22, 80, 65535, 1]), 65535)
    if rng.random() < mutate:
        conn[rng.choice(UNKNOWN_KEYS)] = other_value(rng, 1)
    for key in list(conn):
        if rng.random() < mutate / 4:
            del conn[key]
    rec: dict[str, Any] = {
        "connection": conn,
        "reporter": reporter,
        "bytes_sent": number(rng, rng.choice([491, 1020, 0, 2**40]), 2**63 - 1),
        "packets_sent": number(rng, rng.choice([4, 20, 1]), 2**63 - 1),
        "start_time": time_text(rng),
        "end_time": time_text(rng),
    }
    if rng.random() < 0.7:
        rec["disposition"] = rng.choice(
            ["ALLOWED", "DROPPED", "ALLOWED", "UNKNOWN", "allowed"] + ([5] if mutate else [])
        )
    for side in ("src", "dest"):
        r = rng.random()
        if r < 0.55:
            rec[f"{side}_instance"] = instance(rng, mutate)
            if rng.random() < 0.85:
                rec[f"{side}_vpc"] = vpc(rng, mutate)
        elif r < 0.7:
            rec[f"{side}_gateway"] = gateway(rng, mutate)
            if rng.random() < 0.3:
                rec[f"{side}_vpc"] = vpc(rng, mutate)
        elif r < 0.75:
            rec[f"{side}_instance"] = instance(rng, mutate)
            rec[f"{side}_gateway"] = gateway(rng, mutate)
            rec[f"{side}_vpc"] = vpc(rng, mutate)
        elif r < 0.9:
            rec[f"{side}_location"] = location(rng, mutate)
        if rng.random() < 0.1:
            rec[f"{side}_gke_details"] = gke(rng)
    if rng.random() < 0.5:
        rec["rtt_msec"] = rng.choice(["61", 61, 61.5, Raw("-0"), None])
    if rng.random() < mutate * 2:
        key = rng.choice(UNKNOWN_KEYS + ["src_location.city", "insertId", "resource.labels.location", "connection.x",
                                         "src_vpc.subnetwork_region", "disposition.x"])  # fmt: skip
        rec[key] = other_value(rng, 1)
    for key in list(rec):
        if rng.random() < mutate / 3:
            rec[key] = rng.choice(WRONG + [None])
        elif rng.random() < mutate / 6:
            del rec[key]
    return rec


def entry(rng: random.Random, rec: Any, mutate: float) -> dict[str, Any]:
    """A LogEntry around `rec`, as a log sink writes it."""
    labels = _fields(
        rng,
        {
            "project_id": lambda: _text(rng, PROJECTS),
            "subnetwork_id": lambda: rng.choice(["4455", 4455]),
            "subnetwork_name": lambda: _text(rng, SUBNETS),
            "location": lambda: _text(rng, ZONES),
        },
        mutate,
    )
    out: dict[str, Any] = {"insertId": f"{rng.randrange(1 << 40):x}", "jsonPayload": rec}
    out["logName"] = "projects/web-prod/logs/compute.googleapis.com%2Fvpc_flows"
    out["receiveTimestamp"] = "2024-06-01T12:00:31.123456789Z"
    out["resource"] = {"labels": labels, "type": "gce_subnetwork"}
    out["timestamp"] = "2024-06-01T12:00:31.1Z"
    if rng.random() < 0.05:
        out["severity"] = "DEFAULT"
    if rng.random() < mutate:
        where = rng.choice(["top", "resource", "insertId", "resource-wrong", "labels-wrong", "timestamp"])
        if where == "top":
            out[rng.choice(UNKNOWN_KEYS + ["labels", "connection", "httpRequest"])] = other_value(rng, 1)
        elif where == "resource":
            out["resource"][rng.choice(UNKNOWN_KEYS)] = other_value(rng, 1)
        elif where == "insertId":
            out["insertId"] = rng.choice(WRONG + [None])
        elif where == "resource-wrong":
            out["resource"] = rng.choice(WRONG + [None])
        elif where == "labels-wrong":
            out["resource"]["labels"] = rng.choice(WRONG + [None])
        else:
            out[rng.choice(["timestamp", "logName", "receiveTimestamp"])] = rng.choice(WRONG)
    return out


def valid_line(rng: random.Random) -> bytes:
    """A line Cloud Logging could write: a LogEntry (or its bare jsonPayload), compact JSON."""
    rec = record(rng, 0.0)
    value = rec if rng.random() < 0.2 else entry(rng, rec, 0.0)
    return dump(rng, value, Style(ascii=True)).encode()


def _style(rng: random.Random) -> Style:
    return Style(
        sep=rng.choice([(",", ":"), (", ", ": "), (" ,\t", " :\r")]),
        ascii=rng.random() < 0.5,
        escape=rng.choice([0.0, 0.0, 0.3]),
    )


def _dup(value: Any, rng: random.Random) -> Any:
    """A name twice in some object (the last should win)."""
    if isinstance(value, dict) and value:
        key = rng.choice(list(value))
        pairs = list(value.items())
        if rng.random() < 0.5:
            pairs.insert(0, (key, rng.choice(WRONG + ["SRC"])))
        else:
            pairs.append((key, rng.choice(WRONG + ["DEST"])))
        return Obj(pairs)
    return value


BROKEN = [b"{", b"}", b"[1,]", b'{"a":1,}', b"not json", b"{'a': 1}", b'{"a":01}', b'{"a":NaN}', b'{"a":.5}', b"null",
          b"true", b"123", b'"text"', b"[]", b"{}", b'{"textPayload":"hello"}', b'{"jsonPayload":null}',
          b'{"jsonPayload":[1]}', b'{"jsonPayload":{}}', b'{"connection":null}', b'{"connection":"x"}',
          b'{"jsonPayload":{"connection":{}}}{"x":1}', b'{"a":"\\x"}', b'{"a":"\\ud800"}', b'{"a":"\\udc00\\ud800"}',
          b'{"a":"\\ud83d\\ude00","connection":{},"reporter":"SRC"}', b'{"jsonPayload":{"connection":{"src_ip":"\\ud800"}}}',
          b'{"a":"tab\there","connection":{}}', b'\x0c{"connection":{}}', b'{"connection":{}}\x0c']  # fmt: skip


def hostile_line(rng: random.Random, max_line: int) -> bytes:
    """A mutated line: wrong types, nulls, unknown keys, odd forms, broken JSON, bad bytes, or a line near the limit."""
    r = rng.random()
    if r < 0.06:
        return rng.choice(BROKEN)
    mutate = rng.choice([0.05, 0.15, 0.4])
    rec: Any = record(rng, mutate)
    value: Any = rec if rng.random() < 0.25 else entry(rng, rec, mutate)
    if rng.random() < 0.1:
        value = _dup(value, rng)
    if rng.random() < 0.05 and isinstance(value, dict):
        value["jsonPayload" if "jsonPayload" in value else "connection"] = _dup(rec, rng)
    if rng.random() < 0.05:
        value = rng.choice([[value], Raw("[]"), value])
    text = dump(rng, value, _style(rng)).encode()
    q = rng.random()
    if q < 0.06:  # broken by a cut, a missing or an extra byte
        i = rng.randrange(len(text) + 1)
        text = rng.choice(
            [text[:i], text[:i] + text[i + 1 :], text[:i] + rng.choice([b",", b"}", b'"', b"\\", b" "]) + text[i:]]
        )
    elif q < 0.09:  # bytes that are not UTF-8, or a raw control character
        i = rng.randrange(len(text) + 1)
        text = (
            text[:i]
            + rng.choice([b"\xff", b"\xc3", b"\xed\xa0\x80", b"\xc0\x80", b"\x00", b"\r", b"\x1f", BOM])
            + text[i:]
        )
    elif q < 0.12:  # whitespace around the value, any kind
        text = (
            rng.choice([b" ", b"\t", b"\r", b"\x0b", b" \r"]) + text + rng.choice([b"", b" ", b"\r", b"\t\r", b"\x0c"])
        )
    elif q < 0.15 and max_line <= 4096:  # a line at the length limit (the real limit: see text_stream)
        pad = max_line - len(text) - 12 + rng.choice([-1, 0, 1, 2, 3, 13, 14])
        if pad > 0 and text.endswith(b"}"):
            text = text[:-1] + b',"pad":"' + b"p" * pad + b'"}'
    return text


BLANKS = [b"", b" ", b"\t", b"\r", b"  \r", b"\x0b", b"\x0c", b" \x0c "]


@dataclass
class TextCase:
    data: bytes  # decompressed, as the parser sees it after the seam
    lines: int  # generated lines (the fuzz's input count)
    max_line: int


def text_stream(rng: random.Random, max_lines: int = 30, max_line: int = 1 << 20) -> TextCase:
    n = rng.randrange(max_lines + 1)
    hostile = rng.choice([0.0, 0.1, 0.3, 0.7])
    out: list[bytes] = []
    if rng.random() < 0.9:
        out.append(valid_line(rng))  # most objects start like GCP's, so the sniff lets the rest through
    for _ in range(n):
        r = rng.random()
        if r < 0.05:
            out.append(rng.choice(BLANKS))
        elif r < 0.05 + hostile:
            out.append(hostile_line(rng, max_line))
        else:
            out.append(valid_line(rng))
    if max_line > 4096 and out and rng.random() < 0.02:  # a line at the real limit, now and then (1 MiB is slow)
        out.append(
            hostile_line(rng, 4096).rstrip(b"}")
            + b',"pad":"'
            + b"p" * (max_line - rng.choice([-1, 0, 1, 14]) - 4096)
            + b'"}'
        )
    eol = rng.choice([b"\n", b"\n", b"\r\n"])
    data = b"".join(line + (eol if rng.random() < 0.97 else rng.choice([b"\n", b"\r\n"])) for line in out)
    if data and rng.random() < 0.1:
        data = data.rstrip(b"\n")  # no LF after the last line
    if rng.random() < 0.05:
        data = BOM + data
    if rng.random() < 0.03:
        data = rng.choice([b"\n\n  \n", b"   ", b"\r\n"]) + data
    return TextCase(data, max(len(out), 1), max_line)


@dataclass
class ObjectCase:
    blob: bytes  # as stored
    text: TextCase
    container: str
    options: dict[str, Any]


def _gz(data: bytes, level: int) -> bytes:
    return gzip.compress(data, compresslevel=level, mtime=0)


def r_object(rng: random.Random, max_lines: int = 400) -> ObjectCase:
    max_line = (1 << 20) if rng.random() < 0.6 else rng.choice([600, 1000, 1500, 3000])
    text = text_stream(rng, max_lines, max_line)
    data = text.data
    r = rng.random()
    if r < 0.55:
        blob, kind = data, "plain"
    elif r < 0.8:
        blob, kind = _gz(data, rng.choice([1, 6, 9])), "gzip"
    elif r < 0.88:
        full = _gz(data, 6)
        blob, kind = full[: rng.randrange(10, max(11, len(full)))], "gzip-truncated"
    elif r < 0.94:
        full = _gz(data, 6)
        trailer = bytearray(full[-8:])
        trailer[rng.randrange(8)] ^= 1 << rng.randrange(8)
        blob, kind = full[:-8] + bytes(trailer), "gzip-bad-trailer"
    else:
        cut = rng.randrange(len(data) + 1)
        blob, kind = _gz(data[:cut], 6) + _gz(data[cut:], 1), "gzip-members"
        if rng.random() < 0.3:
            blob += rng.choice([b"\0" * 4, b"garbage"])
    options: dict[str, Any] = {}
    if rng.random() < 0.15:
        options["projects"] = frozenset(rng.sample(PROJECTS, rng.randint(1, 2)))
    if rng.random() < 0.15:
        options["sampling_rate"] = rng.choice([1, 30, 1000])
    return ObjectCase(blob, text, kind, options)


def seeded_object(seed: int, max_lines: int = 400) -> ObjectCase:
    return r_object(random.Random(seed), max_lines)


def objects(max_lines: int = 30) -> st.SearchStrategy[ObjectCase]:
    """Hypothesis's view of the same generator: its randomness drawn (recorded, replayable, shrinkable)."""
    return st.randoms(use_true_random=False).map(lambda rng: r_object(rng, max_lines))


def valid_objects(max_lines: int = 30) -> st.SearchStrategy[ObjectCase]:
    def make(rng: random.Random) -> ObjectCase:
        data = b"".join(valid_line(rng) + b"\n" for _ in range(rng.randint(1, max_lines)))
        blob = _gz(data, 6) if rng.random() < 0.5 else data
        return ObjectCase(blob, TextCase(data, data.count(b"\n"), 1 << 20), "gzip" if blob != data else "plain", {})

    return st.randoms(use_true_random=False).map(make)


def message_bodies(rng: random.Random, n: int) -> list[bytes]:
    """Pub/Sub message bodies: one LogEntry each, some hostile, some pretty-printed over several lines."""
    out = []
    for _ in range(n):
        r = rng.random()
        if r < 0.6:
            body = valid_line(rng)
        elif r < 0.9:
            body = hostile_line(rng, 1 << 20)
        else:
            line = valid_line(rng)
            try:
                body = json.dumps(json.loads(line), indent=rng.choice([None, 2])).encode()
            except ValueError:  # an integer of 5,000 digits: Python's int() refuses it
                body = line
        if rng.random() < 0.05:
            body = rng.choice([b"", b"  ", b"\n", BOM]) + body
        out.append(body)
    return out


__all__ = ["ObjectCase", "TextCase", "message_bodies", "objects", "r_object", "seeded_object", "valid_objects"]
