"""Concurrent sources, three sinks, SIGKILL at seeded random moments: every flow arrives, and is counted exactly.

The crash test that would have caught the count-based acks: several emitters at once (two `local` sources and an
`aws_s3` source on moto reading 8 objects at a time) feed a JSON Lines file sink, a Parquet file sink and a slow
`stdout` sink (a pipe the test drains in small, paced reads, so backpressure holds the sources and the sinks ack at
different paces). A real `flowcollector run` daemon is killed with SIGKILL at least 30 times, at random moments drawn
from a seeded generator: during start-up, mid-object, mid-flush, and right after a SIGTERM. Flow logs keep arriving
meanwhile (in waves, so every run starts with work to do). Then `run --once` finishes the work. Every record carries
a unique id in its `bytes` field, so loss and duplication are counted exactly:
- the file sinks (JSON Lines and Parquet) must hold every id exactly once;
- stdout must lose nothing, and may repeat only what was in flight to it at each kill (bound below);
- no hidden `.*.part` file is left, and the checkpoint store has every unit done with its exact record count.

Knobs: FLOWCOLLECTOR_CRASH_SEED (replay a run's kill moments; the seed is in every failure message),
FLOWCOLLECTOR_CRASH_KILLS (default 32; 0 runs the same harness without kills: one daemon run stopped by SIGTERM,
then --once, which must be exact in all three sinks: it proves the counting). The collectors' stderr is appended to
`collector.log` in the test's tmp directory, a header line per run; `report.txt` beside it has the figures.
"""

from __future__ import annotations

import bisect
import gzip
import io
import os
import random
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from array import array
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import IO

import boto3
import numpy as np
import orjson
import pyarrow.parquet as pq
import pytest
from services import Moto

from adapters.aws.fields import V2_FIELDS
from collector.parsing import open_stream

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parent.parent
QUEUE = 2  # pipeline.queue_batches: small, so batches of different sources interleave in the sink queues
KILLS = int(os.environ.get("FLOWCOLLECTOR_CRASH_KILLS", "32"))
# Seconds after the start for the kill. Start-up (imports, opening the sinks) takes about 1 s, so some kills land
# before "started"; the first checkpoints of a run come some 3-4 s in, and only after them can a kill lose anything
# a sink was told was delivered: so most runs are long ones.
KILL_DELAY = (0.2, 2.5)
LONG_RUN = (2.5, 8.0)
LONG_SHARE = 0.65
TERM_GRACE = (0.0, 0.3)  # SIGTERM, then SIGKILL this much later
KILL_PHASE_LIMIT = 220.0  # seconds for the kill loop, from the test's start
TIME_LIMIT = 340.0  # seconds for the whole test: past it, the test gives up with a clear failure
ONCE_ATTEMPTS = 3
# The slow stdout reader: this many bytes per read, then a pause: about 18 MB/s, some 30k records/s of JSON (the
# slowest sink by far, so the sources wait on it, yet a run between two kills gets large batches through it).
READ_CHUNK = 32 << 10
READ_PAUSE = 0.0015

BUCKET = "central-flow-logs"
ACCOUNT = "111111111111"
REGION = "us-east-1"
HEADER = " ".join(V2_FIELDS) + "\n"
# Flow logs keep arriving: before every run of the kill loop, waves of new objects are released until PENDING
# records are not yet checkpointed, so each run starts with many objects to read (many emitters waiting on the slow
# sink at once), not only the first. Most objects are small (one batch each: many batches, many acks); one per source
# and wave has 20k-100k lines, 2-11 MB of text, two or three parse batches, so restarts resume inside it. Objects are
# read in this order (local: path order; S3: arrival, then key).
WAVES = 10  # at most; a run of the test uses what its kills need
PENDING = 150_000
MEMBER = 512 << 10  # bytes of text per gzip member in the local files


def local_a(w: int) -> tuple[int, ...]:
    return (1_500 + 300 * w, 2_500, 60_000 if w % 2 == 0 else 20_000, 900)


def local_b(w: int) -> tuple[int, ...]:
    return (800 + 400 * w, 3_000, 1_200, 100_000 if w % 3 == 1 else 60_000 if w % 3 == 2 else 4_000)


def s3_objects(w: int) -> tuple[int, ...]:
    """8 per wave, read 8 at a time (max_concurrency); 3 waves or more make at least 24 objects."""
    return (500 + 500 * w, 1_500 + 300 * w, 10_000, 100_000 if w % 2 else 40_000, 2_000, 3_500, 1_000 + 200 * w, 4_000)


@dataclass(frozen=True, slots=True)
class Span:
    """The ids of one input object: first_id .. first_id + rows - 1, in line order."""

    first_id: int
    rows: int
    source: str
    unit: str


@dataclass(slots=True)
class Run:
    n: int
    mode: str  # "kill", "term+kill", "term" (graceful, no-kill mode), "once"
    planned: float  # seconds after the start for the signal (kill modes)
    pid: int = 0
    rc: int | None = None
    started: bool = False  # the "started" log line came before the end
    killed: bool = False  # died by a signal: a SIGKILL, or a SIGTERM that came before the handler was installed
    committed: int = 0  # records checkpointed when the run ended
    stdout: Path | None = None

    def describe(self) -> str:
        when = f" at {self.planned:.2f}s" if self.mode != "once" else ""
        phase = "running" if self.started else "START-UP"
        return f"#{self.n} {self.mode}{when} {phase} rc={self.rc} committed={self.committed}"


def _v2_lines(first_id: int, rows: int, eni: int) -> bytes:
    out = [HEADER]
    for i in range(rows):
        out.append(
            f"2 {ACCOUNT} eni-{eni:08x} 10.0.{i % 250}.{i % 7 + 1} 198.51.100.{i % 200} {1024 + i % 60000} 443 6 "
            f"{i % 90 + 1} {first_id + i} 1763791200 1763791260 ACCEPT OK\n"
        )
    return "".join(out).encode()


class Inputs:
    """Every input object, written wave by wave into two local directories and the bucket."""

    def __init__(self, tmp: Path, s3: object) -> None:
        self.tmp = tmp
        self.s3 = s3
        self.day = datetime.now(UTC).date()
        self.spans: list[Span] = []  # of the waves released so far
        self.largest_batch = 0  # rows of the largest batch the collector's parser makes of them
        self.released = 0

    @property
    def total(self) -> int:
        return self.spans[-1].first_id + self.spans[-1].rows - 1 if self.spans else 0

    def release(self) -> None:
        w = self.released
        plan = [("a", k, n) for k, n in enumerate(local_a(w))] + [("b", k, n) for k, n in enumerate(local_b(w))]
        plan += [("s3", k, n) for k, n in enumerate(s3_objects(w))]
        for source, k, rows in plan:
            first = self.total + 1
            text = _v2_lines(first, rows, len(self.spans))
            if source == "s3":
                body = gzip.compress(text, 1)  # one gzip member, as AWS writes them
            else:
                # Local files as concatenated gzip members (`cat *.log.gz > day.log.gz`, valid gzip): the collector
                # decompresses member by member, so its chunks, and its batches, are smaller than of one member.
                body = b"".join(gzip.compress(text[i : i + MEMBER], 1) for i in range(0, len(text), MEMBER))
            # Batches as the collector's own parser cuts this object: a block of BLOCK_SIZE bytes of text, ended at a
            # line end after the decompressed chunk that filled it (a chunk: one read of 1 MiB of gzip decompressed,
            # ~7 MB for these lines in one member, at most MEMBER bytes for the local files).
            reader = io.BufferedReader(io.BytesIO(body))
            self.largest_batch = max(
                self.largest_batch, *(r.batch.num_rows for r in open_stream(reader, unit="x", source="x"))
            )
            if source == "s3":
                unit = (
                    f"AWSLogs/{ACCOUNT}/vpcflowlogs/{REGION}/{self.day:%Y/%m/%d}/"
                    f"{ACCOUNT}_vpcflowlogs_{REGION}_fl-0crash_{self.day:%Y%m%d}T0005Z_w{w}_{k}.log.gz"
                )
                self.s3.put_object(Bucket=BUCKET, Key=unit, Body=body)  # type: ignore[attr-defined]
            else:
                unit = f"2026/11/22/w{w}/obj{k}.log.gz"
                path = self.tmp / f"in_{source}" / unit
                path.parent.mkdir(parents=True, exist_ok=True)
                hidden = path.with_name(f".{path.name}.tmp")  # the local source skips hidden names
                hidden.write_bytes(body)
                os.replace(hidden, path)  # complete when it appears, as `aws s3 sync` does it
            self.spans.append(Span(first, rows, source, unit))
        self.released += 1

    def keep_pending(self, committed: int) -> None:
        while self.released < WAVES and self.total - committed < PENDING:
            self.release()


def _config(tmp: Path, endpoint: str) -> Path:
    cfg = tmp / "cfg.yaml"
    local = "\n".join(
        f"""  - name: {name}
    type: local
    path: {tmp}/in_{name}
    poll_interval: 200ms
    settle: 0s"""
        for name in ("a", "b")
    )
    cfg.write_text(
        f"""state_dir: {tmp}/state
progress_interval: 1s
pipeline:
  queue_batches: {QUEUE}
  workers: 2
sources:
{local}
  - name: s3
    type: aws_s3
    bucket: {BUCKET}
    endpoint_url: {endpoint}
    region: {REGION}
    regions: [{REGION}]
    start_from: 1h
    poll_interval: 200ms
    max_concurrency: 8
sinks:
  - name: j
    type: file
    path: {tmp}/out/jsonl
    format: jsonl
    flush_interval: 100ms
    rotate_interval: 1s
  - name: p
    type: file
    path: {tmp}/out/parquet
    format: parquet
    flush_interval: 100ms
    rotate_interval: 500ms
  - name: o
    type: stdout
"""
    )
    return cfg


class SlowReader(threading.Thread):
    """Drains one run's stdout in small reads with pauses (a slow consumer: the pipe fills, the sink waits) and
    keeps every byte it got, in a file per run."""

    def __init__(self, stream: IO[bytes], out: Path) -> None:
        super().__init__(daemon=True)
        self.stream = stream
        self.out = out

    def run(self) -> None:
        fd = self.stream.fileno()
        with open(self.out, "wb") as fh:
            while chunk := os.read(fd, READ_CHUNK):
                fh.write(chunk)
                time.sleep(READ_PAUSE)
        self.stream.close()


def _checkpoints(tmp: Path) -> dict[tuple[str, str], tuple[int, int]]:
    """(source, unit) -> (done, records) of every unit (the sources' own bookkeeping rows left out)."""
    db = tmp / "state" / "checkpoints.sqlite"
    if not db.exists():
        return {}
    with sqlite3.connect(db, timeout=5) as c:
        rows = c.execute("SELECT source, unit, done, records FROM units").fetchall()
    return {(s, u): (d, r) for s, u, d, r in rows if not u.startswith("\x00")}


def _checkpoint_problems(tmp: Path, spans: list[Span]) -> list[str]:
    units = _checkpoints(tmp)
    want = {(s.source, s.unit): (1, s.rows) for s in spans}
    problems = [f"{k[0]}:{k[1]} is {units.get(k, 'missing')}, expected done with {v[1]} records"
                for k, v in want.items() if units.get(k) != v]  # fmt: skip
    problems += [f"unexpected unit {k}" for k in units if k not in want]
    return problems


class Harness:
    def __init__(self, tmp: Path, cfg: Path, seed: int) -> None:
        self.tmp = tmp
        self.cfg = cfg
        self.seed = seed
        self.log = tmp / "collector.log"
        self.runs: list[Run] = []
        self.resumes = 0  # "resuming at" lines: a unit restarted inside, from its checkpoint
        self.t0 = time.monotonic()
        (tmp / "stdout").mkdir()

    def remaining(self) -> float:
        return self.t0 + TIME_LIMIT - time.monotonic()

    def log_tail(self, chars: int = 4000) -> str:
        return self.log.read_text(errors="replace")[-chars:] if self.log.exists() else "(no log)"

    def fail(self, message: str) -> None:
        runs = " | ".join(r.describe() for r in self.runs)
        pytest.fail(
            f"{message}\nseed={self.seed} (replay: FLOWCOLLECTOR_CRASH_SEED={self.seed}); runs: {runs}\n"
            f"log {self.log} (tail):\n{self.log_tail()}",
            pytrace=False,
        )

    def start(self, run: Run, *extra: str) -> tuple[subprocess.Popen[bytes], SlowReader, int]:
        with open(self.log, "ab") as fh:
            fh.write(f"\n===== test: run #{run.n} {run.mode} planned={run.planned:.2f}s seed={self.seed}\n".encode())
            offset = fh.tell()
            proc = subprocess.Popen(
                [sys.executable, "-m", "collector.cli", "run", "-c", str(self.cfg), *extra],
                cwd=ROOT,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=fh,
                start_new_session=True,  # a Ctrl-C of the test run does not reach it; the test stops it by PID
            )
        assert proc.stdout is not None
        run.pid = proc.pid
        run.stdout = self.tmp / "stdout" / f"run{run.n:03d}.jsonl"
        reader = SlowReader(proc.stdout, run.stdout)
        reader.start()
        self.runs.append(run)
        return proc, reader, offset

    def finish(self, run: Run, proc: subprocess.Popen[bytes], reader: SlowReader, offset: int) -> None:
        try:
            run.rc = proc.wait(max(5.0, self.remaining()))
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(10)
            self.fail(f"run #{run.n} ({run.mode}) did not end within the time limit: killed")
        reader.join(30)
        if reader.is_alive():
            self.fail(f"run #{run.n}: its stdout did not reach EOF after the process ended")
        with open(self.log, "rb") as fh:
            fh.seek(offset)
            text = fh.read()
        run.started = b" started sources=" in text
        self.resumes += text.count(b" resuming at ")
        run.committed = sum(records for _, records in _checkpoints(self.tmp).values())

    def crash_run(self, n: int, rng: random.Random) -> Run:
        """One daemon run ended by SIGKILL at a random moment (sometimes right after a SIGTERM)."""
        if n % 8 == 0:
            planned = rng.uniform(KILL_DELAY[0], 0.6)  # certainly during start-up (imports, opening the sinks)
        else:
            planned = rng.uniform(*(LONG_RUN if rng.random() < LONG_SHARE else KILL_DELAY))
        term = n % 5 == 2 or rng.random() < 0.1
        run = Run(n, "term+kill" if term else "kill", planned)
        proc, reader, offset = self.start(run)
        start = time.monotonic()
        while proc.poll() is None and time.monotonic() - start < planned:
            time.sleep(0.005)
        if proc.poll() is None:
            if term:
                proc.send_signal(signal.SIGTERM)
                until = time.monotonic() + rng.uniform(*TERM_GRACE)
                while proc.poll() is None and time.monotonic() < until:
                    time.sleep(0.002)
            if proc.poll() is None:
                proc.send_signal(signal.SIGKILL)
                run.killed = True
        self.finish(run, proc, reader, offset)
        # A SIGTERM before the daemon installed its handler (still importing) kills it as abruptly as a SIGKILL.
        run.killed = run.killed or run.rc == -signal.SIGTERM
        return run

    def graceful_run(self, n: int, seconds: float) -> Run:
        """No-kill mode: a daemon run stopped by SIGTERM, which drains and exits by itself."""
        run = Run(n, "term", seconds)
        proc, reader, offset = self.start(run)
        time.sleep(seconds)
        proc.send_signal(signal.SIGTERM)
        self.finish(run, proc, reader, offset)
        if run.rc != 0:
            self.fail(f"run #{n}: SIGTERM should drain and exit 0, got {run.rc}")
        return run

    def once_run(self, n: int) -> Run:
        run = Run(n, "once", 0.0)
        proc, reader, offset = self.start(run, "--once")
        self.finish(run, proc, reader, offset)
        return run


def _ids_of_lines(data: bytes) -> tuple[array[int], bool]:
    """The `bytes` id of every complete JSON line, and whether the data ended inside a line."""
    lines = data.split(b"\n")
    ids = array("q", (orjson.loads(line)["bytes"] for line in lines[:-1]))
    return ids, bool(lines[-1])


class Count:
    """How many times each id 1..total was delivered, plus ids outside that range (there must be none)."""

    def __init__(self, total: int) -> None:
        self.total = total
        self.per_id = np.zeros(total + 1, np.int64)
        self.unknown: list[int] = []

    def add(self, ids: np.ndarray) -> None:
        ids = np.asarray(ids, np.int64)
        inside = (ids >= 1) & (ids <= self.total)
        self.unknown += ids[~inside][:10].tolist()
        self.per_id += np.bincount(ids[inside], minlength=self.total + 1)


def _file_counts(tmp: Path, total: int) -> tuple[Count, Count]:
    jsonl = Count(total)
    for f in sorted((tmp / "out/jsonl").glob("*.jsonl")):
        ids, partial = _ids_of_lines(f.read_bytes())
        assert not partial, f"{f} ends inside a line"
        jsonl.add(np.frombuffer(ids, np.int64))
    parquet = Count(total)
    for f in sorted((tmp / "out/parquet").glob("*.parquet")):
        parquet.add(pq.read_table(f, columns=["bytes"]).column("bytes").to_numpy())
    return jsonl, parquet


def _stdout_count(runs: list[Run], total: int) -> tuple[Count, list[int], int]:
    """Ids printed on stdout over all runs; per run, how many of its lines repeat an id printed before; and how many
    runs ended inside a line (a kill mid-write: that line is not counted, its batch was not acked)."""
    count = Count(total)
    repeats = []
    partial = 0
    for run in runs:
        assert run.stdout is not None
        ids, cut = _ids_of_lines(run.stdout.read_bytes() if run.stdout.exists() else b"")
        partial += cut
        before = count.per_id.copy()
        count.add(np.frombuffer(ids, np.int64))
        first_time = np.count_nonzero((before == 0) & (count.per_id > 0))
        repeats.append(len(ids) - first_time)
    return count, repeats, partial


class Tally:
    """Lost and duplicated ids of one sink, with examples located in their input object."""

    def __init__(self, name: str, count: Count, spans: list[Span]) -> None:
        self.name = name
        self.spans = spans
        self.starts = [s.first_id for s in spans]
        per_id = count.per_id[1:]
        self.lost = (np.flatnonzero(per_id == 0) + 1).tolist()
        self.doubled = (np.flatnonzero(per_id > 1) + 1).tolist()
        self.duplicates = int(np.maximum(per_id - 1, 0).sum())  # extra copies
        self.unknown = count.unknown

    def span(self, rid: int) -> Span:
        return self.spans[bisect.bisect_right(self.starts, rid) - 1]

    def where(self, rid: int) -> str:
        s = self.span(rid)
        return f"{rid} ({s.source}:{s.unit} line {rid - s.first_id + 1}/{s.rows})"

    def by_unit(self, ids: list[int]) -> str:
        count: dict[Span, int] = {}
        for i in ids:
            s = self.span(i)
            count[s] = count.get(s, 0) + 1
        top = sorted(count.items(), key=lambda kv: -kv[1])[:6]
        return ", ".join(f"{s.source}:{s.unit.rsplit('/', 1)[-1] if s.source == 's3' else s.unit}={n}" for s, n in top)

    def summary(self) -> str:
        out = f"{self.name}: lost={len(self.lost)} duplicated={self.duplicates} (ids={len(self.doubled)})"
        if self.unknown:
            out += f" UNKNOWN ids e.g. {self.unknown[:5]}"
        for what, ids in (("lost", self.lost), ("doubled", self.doubled)):
            if ids:
                out += f"\n  {what} e.g. {[self.where(i) for i in ids[:3]]}; by object: {self.by_unit(ids)}"
        return out


def test_concurrent_sources_survive_random_sigkills(
    moto: Moto, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    seed = int(os.environ.get("FLOWCOLLECTOR_CRASH_SEED") or random.SystemRandom().randrange(1 << 32))
    rng = random.Random(seed)
    s3 = boto3.client("s3", endpoint_url=moto.endpoint, region_name=REGION)
    s3.create_bucket(Bucket=BUCKET)
    inputs = Inputs(tmp_path, s3)
    h = Harness(tmp_path, _config(tmp_path, moto.endpoint), seed)

    n = 0
    if KILLS == 0:
        inputs.keep_pending(0)
        h.graceful_run(n, 4.0)
        n += 1
        inputs.release()  # and some arrive while it is down
    while sum(r.killed for r in h.runs) < KILLS:
        if time.monotonic() - h.t0 > KILL_PHASE_LIMIT:
            h.fail(f"only {sum(r.killed for r in h.runs)} of {KILLS} kills within {KILL_PHASE_LIMIT:.0f}s")
        inputs.keep_pending(h.runs[-1].committed if h.runs else 0)
        run = h.crash_run(n, rng)
        n += 1
        if not run.killed and (run.mode == "kill" or run.rc not in (0, 130)):
            h.fail(f"run #{run.n} ({run.mode}): the daemon exited by itself with {run.rc} before it was killed")
    crashes = [r for r in h.runs if r.killed]
    at_startup = sum(not r.started for r in crashes)
    after_term = sum(r.mode == "term+kill" for r in crashes)
    resumed_in_loop = h.resumes
    if KILLS and (at_startup == 0 or after_term == 0 or at_startup == len(crashes) or not resumed_in_loop):
        h.fail(
            f"kill plan did not cover start-up ({at_startup}), SIGTERM+SIGKILL ({after_term}), running, and restarts "
            f"resuming inside an object ({resumed_in_loop})"
        )

    spans, total, largest_batch = inputs.spans, inputs.total, inputs.largest_batch
    for _ in range(ONCE_ATTEMPTS):
        last = h.once_run(n)
        n += 1
        if last.rc == 0 and not _checkpoint_problems(tmp_path, spans):
            break
    else:
        problems = _checkpoint_problems(tmp_path, spans)
        h.fail(f"run --once did not finish in {ONCE_ATTEMPTS} attempts (rc={last.rc}): {problems[:5]}")

    jsonl, parquet = _file_counts(tmp_path, total)
    printed, repeats, partial = _stdout_count(h.runs, total)
    tallies = [Tally("jsonl", jsonl, spans), Tally("parquet", parquet, spans), Tally("stdout", printed, spans)]
    # stdout cannot take anything back. What it may repeat after a kill is what was in flight to it: at most the
    # batches in its queue plus the one being written plus the one written but not yet recorded as acked, each at
    # most the parser's largest batch of these inputs (a batch never spans two objects).
    per_kill = (QUEUE + 2) * largest_batch
    bound = len(crashes) * per_kill
    elapsed = time.monotonic() - h.t0
    report = (
        f"seed={seed} kills={len(crashes)} (start-up {at_startup}, SIGTERM+SIGKILL {after_term}) runs={len(h.runs)} "
        f"records={total} objects={len(spans)} waves={inputs.released} mid-object resumes={resumed_in_loop} during "
        f"the kills, {h.resumes} in all; elapsed={elapsed:.0f}s\n"
        f"committed records after each run: {[r.committed for r in h.runs]}\n"
        + "\n".join(t.summary() for t in tallies)
        + f"\nstdout duplicates={tallies[2].duplicates} bound={bound} ({len(crashes)} kills x {QUEUE + 2} batches x "
        f"{largest_batch} rows); repeated lines per run: max={max(repeats)} runs with repeats="
        f"{sum(1 for r in repeats if r)}; runs ending inside a line={partial}"
    )
    (tmp_path / "report.txt").write_text(report + "\n")
    with capsys.disabled():  # shown in every run, passed or failed, for the team to document the figures
        print(f"\n[test_crash_multi] {report}", flush=True)

    problems = []
    for t in tallies:
        if t.lost or t.unknown:
            problems.append(f"{t.name} lost {len(t.lost)} records")
    for t in tallies[:2]:
        if t.duplicates:
            problems.append(f"{t.name} holds {t.duplicates} duplicates (must be exactly once)")
    if tallies[2].duplicates > bound:
        problems.append(f"stdout repeated {tallies[2].duplicates} records, more than the in-flight bound {bound}")
    for sub in ("jsonl", "parquet"):
        left = sorted(p.name for p in (tmp_path / "out" / sub).glob(".*.part"))
        if left:
            problems.append(f"hidden part files left in out/{sub}: {left[:5]}")
    checkpoint = _checkpoint_problems(tmp_path, spans)
    if checkpoint:
        problems.append(f"checkpoints: {len(checkpoint)} units not done right, e.g. {checkpoint[:3]}")
    if problems:
        h.fail("; ".join(problems) + "\n" + report)
