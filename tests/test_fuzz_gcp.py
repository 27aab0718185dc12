"""Fuzz: the GCP parser, through the parsing seam and `parse_entries`, against an independent oracle (issue #11,
acceptance: 0 crashes and 0 disagreements over 1,000,000 mutated inputs in `make fuzz`).

Every generated object (tests/fuzz_gcp.py) goes through `collector.parsing.open_stream(provider="auto")` as a source
hands it over (format detection, gzip, the BOM), and through `tests/oracle_gcp.py`, a reader written from the rules
of `adapters/gcp/parse.py`'s docstring. They must agree row by row, every column (`extra` as a dict: its order is
not part of the contract, but no key may come twice), and error line by error line (the line numbers and their
count; the wording is the parser's). The same lines as Pub/Sub message bodies go through `parse_entries`: the same
rows, and the same bodies reported bad. And batch boundaries must not depend on how the bytes arrive: the same
bytes chunked differently, and resumed from every position a batch ends at, give identical batches.

`make test` runs a bounded number of Hypothesis examples (derandomized under CI) and a few seeds of the long
mode's generator; `FLOWCOLLECTOR_FUZZ=long` (`make fuzz`) runs `test_long_fuzz` instead: seeded objects from
FLOWCOLLECTOR_FUZZ_SEED on until FLOWCOLLECTOR_FUZZ_INPUTS generated lines (default 1,000,000), counting crashes
and disagreements, keeping reproducers (named by seed) in FLOWCOLLECTOR_FUZZ_DIR (default var/fuzz), and printing
inputs/s, CPU time and peak RSS.
"""

from __future__ import annotations

import io
import json
import os
import random
import resource
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
from fuzz_gcp import ObjectCase, message_bodies, objects, seeded_object, valid_objects
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st
from oracle_aws import OracleResult, gunzip
from oracle_gcp import BOM, MAX_LINE, cut_alternatives, read_entries, read_object

import adapters.gcp.parse as gcp_parse
from collector.parsing import ParseResult, open_stream

LONG = os.environ.get("FLOWCOLLECTOR_FUZZ") == "long"

SHORT = settings(
    max_examples=60,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
    phases=list(Phase)
    if os.environ.get("FLOWCOLLECTOR_FUZZ_SHRINK")
    else [Phase.explicit, Phase.reuse, Phase.generate],
    derandomize=bool(os.environ.get("CI")),
    database=None if os.environ.get("CI") else settings.default.database,
)
short_only = pytest.mark.skipif(LONG, reason="FLOWCOLLECTOR_FUZZ=long runs test_long_fuzz instead")


@contextmanager
def max_line(limit: int) -> Iterator[None]:
    """The parser's MAX_LINE for one object (small limits make overlong lines cheap to generate)."""
    saved = gcp_parse.MAX_LINE
    gcp_parse.MAX_LINE = limit
    try:
        yield
    finally:
        gcp_parse.MAX_LINE = saved


# --- comparing ---------------------------------------------------------------------------------------------------


def _rows_difference(got: list[dict], want: list[dict]) -> str | None:
    for i, row in enumerate(got):
        pairs = row.get("extra") or []
        names = [k for k, _ in pairs]
        if len(set(names)) != len(names):
            return f"row {i}: a key twice in extra: {sorted(k for k in names if names.count(k) > 1)}"
    if len(got) != len(want):
        return f"rows: parser {len(got)}, oracle {len(want)}"
    for i, (g, w) in enumerate(zip(got, want, strict=True)):
        cols = {k: (g[k], w[k]) for k in w if k != "extra" and g[k] != w[k]}
        ge, we = dict(g["extra"] or []), dict(w["extra"] or [])
        if ge != we:
            cols["extra"] = (
                {k: v for k, v in ge.items() if we.get(k) != v},
                {k: v for k, v in we.items() if ge.get(k) != v},
            )
        if cols:
            return f"row {i}: parser vs oracle {cols}"
    return None


def _difference(got: OracleResult, want: OracleResult) -> str | None:
    problems = []
    rows = _rows_difference(got.records, want.records)
    if rows:
        problems.append(rows)
    if sorted(got.error_lines) != sorted(want.error_lines):
        wrong = sorted(set(got.error_lines) ^ set(want.error_lines))[:3]
        problems.append(f"error lines: parser {sorted(got.error_lines)[:20]}, oracle {sorted(want.error_lines)[:20]}")
        problems.append(f"oracle reasons {[e for e in want.errors if e[0] in wrong]}")
        problems.append(f"parser reasons {[(ln, r[:120]) for ln, r in got.errors if ln in wrong]}")
    if len(got.stream_errors) != len(want.stream_errors):
        problems.append(f"object errors: parser {got.stream_errors}, oracle {want.stream_errors}")
    return "; ".join(problems) or None


def seam_results(blob: bytes, options: dict[str, Any]) -> list[ParseResult]:
    fh = io.BufferedReader(io.BytesIO(blob))
    return list(open_stream(fh, unit="u", source="s", provider="auto", options=options))


def disagreement(case: ObjectCase) -> str | None:
    """None if the parser (through the seam) and the oracle agree on this object, else the first difference."""
    limit = case.text.max_line
    want = read_object(case.blob, options=case.options, max_line=limit)
    with max_line(limit):
        results = seam_results(case.blob, case.options)
    providers = {r.provider for r in results}
    if want.unrecognized:
        if "gcp" in providers:
            return f"the oracle does not recognize GCP flow logs, the seam read them as {providers}"
        return None
    if providers != {"gcp"}:
        return f"the oracle recognizes GCP flow logs, the seam read them as {providers}: {results[0].errors[:2]}"
    got = OracleResult()
    for r in results:
        got.records.extend(r.batch.to_pylist())
        got.errors.extend((e.line, e.reason) for e in r.errors)
    problem = _difference(got, want)
    if problem is not None:
        for alt in cut_alternatives(case.blob, options=case.options, max_line=limit):
            if _difference(got, alt) is None:
                return None
    return problem


def entries_disagreement(bodies: list[bytes], options: dict[str, Any], limit: int = MAX_LINE) -> str | None:
    """`parse_entries` against the oracle's reading of each body as one JSON text."""
    want = read_entries(bodies, options=options, max_line=limit)
    names = [f"m{i}" for i in range(len(bodies))]
    with max_line(limit):
        result, bad = gcp_parse.parse_entries(bodies, unit="sub", source="s", names=names, options=options)
    problems = []
    rows = _rows_difference(result.batch.to_pylist(), want.records)
    if rows:
        problems.append(rows)
    if bad != want.bad:
        problems.append(f"bad bodies: parser {bad}, oracle {want.bad}")
    if sorted(e.unit for e in result.errors) != sorted(names[i] for i in want.bad):
        problems.append(f"errors name {sorted(e.unit for e in result.errors)}, bad bodies {want.bad}")
    if any(e.line is not None for e in result.errors):
        problems.append("an error of a message has a line number")
    return "; ".join(problems) or None


def _outcome(results: list[ParseResult]) -> list[tuple[Any, ...]]:
    return [
        (r.position, r.batch.to_pylist(), [(e.line, e.reason) for e in r.errors], r.lines, r.final) for r in results
    ]


def boundary_disagreement(data: bytes, options: dict[str, Any], rng: random.Random, limit: int) -> str | None:
    """Batches of `data` (decompressed) with a small block: the same whatever the chunking, the same from every
    resume point, and together the oracle's rows and errors."""
    # Small blocks, so that lines cross them and overlong lines take the skipping path; about 12 batches at most, as
    # resuming from every position costs batches^2.
    block = max(rng.choice([64, 500, 4096, 20000]), len(data) // 12)

    def run(chunks: list[bytes], resume: dict[str, Any] | None = None) -> list[ParseResult]:
        with max_line(limit):
            return list(
                gcp_parse.parse_lines(chunks, unit="u", source="s", options=options, resume=resume, block_size=block)
            )

    whole = run([data])
    want = _outcome(whole)
    for size in (1 if len(data) < 5000 else rng.randint(2, 50), rng.randint(51, 5000), 65536):
        again = _outcome(run([data[i : i + size] for i in range(0, len(data), size)] + [b""]))
        if again != want:
            diff = next(i for i, (a, b) in enumerate(zip(again, want, strict=False)) if a != b) if again else 0
            return f"block {block}, chunks of {size}: batch {diff} differs ({len(again)} vs {len(want)} batches)"
    for k, r in enumerate(whole[:-1]):
        resumed = _outcome(run([data], resume=r.position))
        if resumed != want[k + 1 :]:
            return f"block {block}: resumed at {r.position} (after batch {k}) the batches differ"
    got = OracleResult()
    for r in whole:
        got.records.extend(r.batch.to_pylist())
        got.errors.extend((e.line, e.reason) for e in r.errors)
    from oracle_gcp import read_lines

    body = data[len(BOM) :] if data.startswith(BOM) else data
    return _difference(got, read_lines(body, options=options, max_line=limit))


def check(case: ObjectCase, rng: random.Random | None = None) -> None:
    problem = disagreement(case)
    assert problem is None, f"{problem}\ncontainer={case.container} options={case.options}\n{case.text.data[:600]!r}"
    rng = rng or random.Random(len(case.blob))
    lines = [ln for ln in case.text.data.split(b"\n") if ln][:50]
    problem = entries_disagreement(lines, case.options, case.text.max_line)
    assert problem is None, f"parse_entries: {problem}\n{lines[:5]!r}"
    data = gunzip(case.blob)[0] if case.blob[:2] == b"\x1f\x8b" else case.blob
    if data.startswith(BOM):
        data = data[len(BOM) :]
    problem = boundary_disagreement(data, case.options, rng, case.text.max_line)
    assert problem is None, f"batch boundaries: {problem}\n{data[:600]!r}"


# --- the oracle itself on hand-checked values (a wrong oracle would make the fuzz vacuous) ------------------------


def _line(value: Any) -> bytes:
    return json.dumps(value, separators=(",", ":")).encode()


def test_oracle_on_hand_checked_lines():
    from oracle_gcp import read_lines

    rec = {
        "connection": {"src_ip": "10.0.0.1", "src_port": "0443", "dest_ip": "2001:db8::1", "dest_port": 22.0},
        "reporter": "SRC_GATEWAY",
        "bytes_sent": "1e3",
        "src_gateway": {"project_id": "hub", "name": "t", "location": "eu", "vpc": {"project_id": "other"}},
        "src_vpc": {"project_id": "hub", "subnetwork_region": "us"},
        "start_time": "2024-06-01T12:00:00.9999999+01:00",
        "src_location": {"asn": -0, "city": "X", "nested": {"a": {}}},
    }
    out = read_lines(_line({"jsonPayload": rec, "insertId": "i"}) + b"\n")
    assert [ln for ln, _ in out.errors] == [1]  # "1e3" is not digits
    rec["bytes_sent"] = 1e3
    (row,) = read_lines(_line({"jsonPayload": rec, "insertId": "i"}) + b"\n").records
    assert (row["src_port"], row["dst_port"], row["bytes"], row["direction"]) == (443, 22, 1000, "egress")
    assert (row["account"], row["interface"], row["region"], row["vpc"]) == ("hub", "t", "eu", None)
    assert row["time_start"].isoformat() == "2024-06-01T11:00:00.999000+00:00"
    assert dict(row["extra"]) == {
        "insertId": "i",
        "src_vpc.subnetwork_region": "us",  # region is the gateway's location, the VPC's fallback differs
        "src_gateway.vpc.project_id": "other",  # account is the gateway's project: the gateway VPC's differs
        "src_location.asn": "0",
        "src_location.city": "X",
    }
    bad = [
        b'{"jsonPayload":{"connection":{"protocol":256}}}',
        b'{"jsonPayload":{"connection":{},"start_time":"2023-02-29T00:00:00Z"}}',
        b'{"jsonPayload":{"connection":{},"start_time":"2016-12-31T23:59:60Z"}}',
        b'{"jsonPayload":{"connection":{},"start_time":"0001-01-01T00:00:00+00:01"}}',
        b'{"jsonPayload":{"connection":{"src_ip":"\\ud800"}}}',
        b'{"jsonPayload":{"src_location":{"city":"a"},"src_location.city":"b"}}',
        b'{"jsonPayload":{"x":' + b"[" * 63 + b"]" * 63 + b"}}",
        b'{"jsonPayload":{"connection":{"src_port":' + b"1" + b"0" * 5000 + b"}}}",
        b'{"jsonPayload":{"connection":{"src_port":1e400}}}',
        b'{"jsonPayload":{"connection":{},"reporter":true}}',
        b'{"jsonPayload":{}, "insertId": 5}',
        b"\x0c{}",
    ]
    good = [
        b'{"jsonPayload":{"x":' + b"[" * 62 + b"]" * 62 + b"}}",  # 64 deep
        b'{"jsonPayload":{"connection":{"src_port":"' + b"0" * 5000 + b'1"}}}',
        b'{"jsonPayload":{"connection":{"src_port":1e-400, "dest_port": -0.0}}}',
        b'{"jsonPayload":{"reporter":"SRC","reporter":"DEST"}}',
        b'{"connection":null}',
        b"\x0c",
    ]
    out = read_lines(b"\n".join(bad + good) + b"\n")
    assert [ln for ln, _ in out.errors] == list(range(1, len(bad) + 1))
    assert len(out.records) == len(good) - 1
    assert out.records[3]["reporter"] == "DEST"


# --- properties (make test) ----------------------------------------------------------------------------------------


@short_only
@SHORT
@given(valid_objects())
def test_valid_lines_agree(case: ObjectCase) -> None:
    check(case)


@short_only
@SHORT
@given(objects())
def test_hostile_objects_agree(case: ObjectCase) -> None:
    check(case)


@short_only
@SHORT
@given(st.randoms(use_true_random=False))
def test_message_bodies_agree(rng: random.Random) -> None:
    bodies = message_bodies(rng, rng.randint(0, 20))
    assert entries_disagreement(bodies, {}) is None


@short_only
@pytest.mark.parametrize("seed", range(15))
def test_seeded_generator_agrees(seed: int) -> None:
    """The long mode's generator in `make test`, a few seeds, so that it cannot rot."""
    check(seeded_object(seed, max_lines=80), random.Random(seed))


# --- long mode -----------------------------------------------------------------------------------------------------


class _Tally:
    def __init__(self, out: Path) -> None:
        self.files = self.inputs = self.crashes = self.disagreements = self.unrecognized = 0
        self.boundary_checks = 0
        self.out = out
        self.kept = 0

    def keep(self, kind: str, seed: int, blob: bytes, detail: str, max_line: int, options: dict[str, Any]) -> None:
        if self.kept >= 50:
            return
        self.kept += 1
        self.out.mkdir(parents=True, exist_ok=True)
        stem = self.out / f"gcp-{kind}-seed{seed}"
        stem.with_suffix(".bin").write_bytes(blob)
        meta = {"seed": seed, "max_line": max_line, "options": {k: sorted(v) if isinstance(v, frozenset) else v
                                                               for k, v in options.items()}, "detail": detail[:4000]}  # fmt: skip
        stem.with_suffix(".json").write_text(json.dumps(meta, indent=1))


def _one_seed(tally: _Tally, seed: int) -> None:
    case = seeded_object(seed)
    rng = random.Random(-seed - 1)
    tally.files += 1
    tally.inputs += case.text.lines
    limit = case.text.max_line
    for kind, run in (
        ("seam", lambda: disagreement(case)),
        ("entries", lambda: entries_disagreement(message_bodies(rng, rng.randint(0, 40)), case.options, limit)),
        ("boundaries", lambda: _boundaries(case, rng, tally) if seed % 5 == 0 else None),
    ):
        try:
            problem = run()
        except Exception as exc:  # a crash of either side is what the long mode counts
            tally.crashes += 1
            tally.keep(f"crash-{kind}", seed, case.blob, f"{type(exc).__name__}: {exc}", limit, case.options)
        else:
            if problem is not None:
                tally.disagreements += 1
                tally.keep(f"disagreement-{kind}", seed, case.blob, problem, limit, case.options)


def _boundaries(case: ObjectCase, rng: random.Random, tally: _Tally) -> str | None:
    tally.boundary_checks += 1
    data = gunzip(case.blob)[0] if case.blob[:2] == b"\x1f\x8b" else case.blob
    if data.startswith(BOM):
        data = data[len(BOM) :]
    return boundary_disagreement(data, case.options, rng, case.text.max_line)


@pytest.mark.skipif(not LONG, reason="long fuzz: FLOWCOLLECTOR_FUZZ=long (make fuzz)")
def test_long_fuzz() -> None:
    """Seeded objects until FLOWCOLLECTOR_FUZZ_INPUTS lines, from seed FLOWCOLLECTOR_FUZZ_SEED on (so that several
    processes can share a run); message bodies for every seed, batch boundaries for one seed in five."""
    target = int(os.environ.get("FLOWCOLLECTOR_FUZZ_INPUTS", "1000000"))
    seed = first = int(os.environ.get("FLOWCOLLECTOR_FUZZ_SEED", "0"))
    tally = _Tally(Path(os.environ.get("FLOWCOLLECTOR_FUZZ_DIR", "var/fuzz")))
    began = last = time.monotonic()
    while tally.inputs < target:
        _one_seed(tally, seed)
        seed += 1
        now = time.monotonic()
        if now - last > 60:
            last = now
            print(
                f"gcp fuzz: {tally.inputs} inputs, {tally.inputs / (now - began):.0f}/s, crashes={tally.crashes} "
                f"disagreements={tally.disagreements}",
                flush=True,
            )
    elapsed = time.monotonic() - began
    use = resource.getrusage(resource.RUSAGE_SELF)
    print(
        f"\ngcp fuzz summary: seeds={first}..{seed - 1} inputs={tally.inputs} (lines) files={tally.files} "
        f"boundary_checks={tally.boundary_checks} crashes={tally.crashes} disagreements={tally.disagreements} "
        f"wall_s={elapsed:.0f} cpu_s={use.ru_utime + use.ru_stime:.0f} inputs_per_s={tally.inputs / elapsed:.0f} "
        f"peak_rss_mb={use.ru_maxrss // 1024} reproducers={tally.out}",
        flush=True,
    )
    assert (tally.crashes, tally.disagreements) == (0, 0)
