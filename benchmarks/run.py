"""Benchmarks: records per CPU-second and peak memory of the parse and sink paths.

    .venv/bin/python -m benchmarks.run                  # every case (generates benchmarks/.data/ the first time)
    .venv/bin/python -m benchmarks.run --quick          # 200k-record variants, a smoke test
    .venv/bin/python -m benchmarks.run --case "parse v5 gzip" --profile

Each case runs in its own subprocess, so its peak RSS (`ru_maxrss`) is its own; the child reports records,
`time.process_time()` (CPU of all its threads: pyarrow and the sink's worker threads count) and wall time as JSON.
Linux carries `ru_maxrss` across fork + exec, so this parent stays small: it imports neither numpy nor pyarrow and
generates data in a subprocess too ("start RSS" is a child's peak before its case starts: interpreter + imports).
Targets are printed next to the results and never fail the run.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import platform
import resource
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from importlib.metadata import version
from pathlib import Path
from typing import Any

from benchmarks import datasets as D

ROOT = Path(__file__).resolve().parent.parent
READ_SIZE = 1 << 20
RESULT_MARK = "@@bench-result "
SKIPPED_SINK = "skipped (file sink not available)"


@dataclass(frozen=True, slots=True)
class Target:
    # "rate" (records per CPU-second, at least), "rss" (peak MB, below), or "relative" (at least `value` times the
    # rate of the case named `of`, run in the same invocation)
    metric: str
    value: float
    of: str = ""

    def met(self, result: dict[str, Any], others: dict[str, dict[str, Any]] | None = None) -> bool | None:
        rate = result["records"] / max(result["cpu"], 1e-9)
        if self.metric == "rate":
            return rate >= self.value
        if self.metric == "relative":
            base = (others or {}).get(self.of)
            if base is None or "records" not in base:
                return None  # the reference case did not run
            return rate >= self.value * base["records"] / max(base["cpu"], 1e-9)
        return result["rss_mb"] < self.value

    def __str__(self) -> str:
        if self.metric == "rate":
            return f">= {self.value / 1e6:.2f} M rec/CPU-s"
        if self.metric == "relative":
            return f">= {self.value:.0%} of '{self.of}'"
        return f"peak RSS < {self.value:.0f} MB"


@dataclass(frozen=True, slots=True)
class Case:
    name: str
    run: str  # name of a worker function below
    full: D.Dataset
    quick: D.Dataset
    target: Target | None = None
    arg: str = ""


CASES: tuple[Case, ...] = (
    Case("parse v2 gzip", "parse", D.V2_2M, D.V2_200K, Target("rate", 1_500_000)),
    Case("parse v5 gzip", "parse", D.V5_2M, D.V5_200K, Target("rate", 700_000)),
    Case("parse v2 1GB gzip (memory)", "parse", D.V2_1G, D.V2_200K, Target("rss", 300)),
    Case("v2 -> jsonl encode only", "encode_jsonl", D.V2_2M, D.V2_200K),
    Case("v2 -> file jsonl", "file_sink", D.V2_2M, D.V2_200K, arg="jsonl"),
    Case("v2 -> file parquet", "file_sink", D.V2_2M, D.V2_200K, arg="parquet"),
    Case("IPFIX encode + send (parsed batches)", "netflow", D.V2_2M, D.V2_200K, Target("rate", 5_000_000), "encode"),
    Case("v2 gzip -> IPFIX end to end", "netflow", D.V2_2M, D.V2_200K, Target("rate", 1_000_000), "e2e"),
    # A sink's filter costs < 5 % of the parse: at least 20x the parse rate (the arg is the filter expression).
    Case(
        "filter 2 predicates (parsed batches)",
        "filter",
        D.V2_2M,
        D.V2_200K,
        Target("relative", 20, "parse v2 gzip"),
        'action == "reject" and dst_port in (22, 3389)',
    ),
    Case(
        "filter CIDR list, keeps 70% (parsed batches)",
        "filter",
        D.V2_2M,
        D.V2_200K,
        Target("relative", 20, "parse v2 gzip"),
        "src_addr in (10.0.0.0/8, 192.168.0.0/16, 2001:db8::/32)",
    ),
    Case("daemon: local source -> file parquet", "daemon", D.V2_2M, D.V2_200K, arg="local"),
    Case(
        "daemon: aws_s3 source on moto -> file parquet",
        "daemon",
        D.V2_2M,
        D.V2_200K,
        Target("relative", 0.7, "daemon: local source -> file parquet"),
        "s3",
    ),
    # GCP (issue #11): Cloud Logging LogEntry JSON lines as a log sink writes them to Cloud Storage (plain, not gzip;
    # benchmarks/gcp_data.py). The parser through the seam with `--provider gcp`, and the whole process.
    Case("parse gcp", "parse", D.GCP_500K, D.GCP_200K, Target("rate", 500_000), "gcp"),
    Case("parse gcp 1GB (memory)", "parse", D.GCP_1G, D.GCP_200K, Target("rss", 300), "gcp"),
    Case("daemon: local source, gcp -> file parquet", "daemon", D.GCP_500K, D.GCP_200K, arg="local-gcp"),
    Case(
        "daemon: local source, gcp 1GB -> file parquet (memory)",
        "daemon",
        D.GCP_1G,
        D.GCP_200K,
        Target("rss", 300),
        "local-gcp",
    ),
    # Two `flowcollector run --once` processes sharing one subscription of the Pub/Sub emulator, LogEntry messages
    # into JSON Lines: CPU is the two collectors' (the emulator's JVM is not counted), wall is until both end.
    Case("daemon: gcp_pubsub, 2 collectors, emulator -> file jsonl", "pubsub", D.GCP_PUBSUB_200K, D.GCP_PUBSUB_20K),
)


# -- the work, run inside the child process ------------------------------------------------------------------------
def _parse(path: Path, provider: str = "auto") -> Iterator[Any]:
    # The collector's own read path (hand-driven isal inflate, format detection), as the local source runs it.
    from collector.parsing import open_unit

    return open_unit(path, unit=path.name, source="bench", provider=provider)


def work_parse(path: Path, arg: str) -> dict[str, Any]:
    """The parser alone through the parsing seam; `arg` is the provider (`flowcollector parse --provider`), or
    empty for format detection."""
    records = errors = 0
    for result in _parse(path, arg or "auto"):
        records += result.batch.num_rows
        errors += len(result.errors)
    return {"records": records, "errors": errors}


def work_encode_jsonl(path: Path, arg: str) -> dict[str, Any]:
    from collector.jsonl import dumps_batch

    records = out_bytes = 0
    with tempfile.TemporaryDirectory(prefix="bench-jsonl-") as tmp, open(Path(tmp) / "flows.jsonl", "wb") as fh:
        for result in _parse(path):
            records += result.batch.num_rows
            data = dumps_batch(result.batch)
            out_bytes += len(data)
            fh.write(data)
    return {"records": records, "out_mb": out_bytes / 1e6}


def work_file_sink(path: Path, arg: str) -> dict[str, Any]:
    try:
        from collector.sinks.file import FileSink, FileSinkConfig
    except ImportError as exc:
        return {"skipped": f"{SKIPPED_SINK}: {exc}"}

    async def main(tmp: Path) -> dict[str, Any]:
        sink = FileSink(FileSinkConfig(name="bench", path=tmp, format=arg))
        await sink.open()
        records = batches = 0
        for result in _parse(path):
            await sink.write(result.batch)
            records += result.batch.num_rows
            batches += 1  # noqa: SIM113 (counted next to the records on purpose)
            # As the pipeline does: flush when enough JSON is pending, and now and then anyway.
            pending = getattr(sink, "pending_bytes", lambda: 0)()
            if pending >= 8 << 20 or batches % 8 == 0:
                await sink.flush()
        await sink.close()
        out = sum(p.stat().st_size for p in tmp.iterdir() if p.is_file())
        return {"records": records, "out_mb": out / 1e6}

    with tempfile.TemporaryDirectory(prefix=f"bench-{arg}-") as tmp:
        return asyncio.run(main(Path(tmp)))


def work_netflow(path: Path, arg: str) -> dict[str, Any]:
    """`encode`: IPFIX encode + send of already parsed batches (the parse is not timed); `e2e`: gzip object -> parse
    -> IPFIX datagrams. The receiver is a bound socket nobody reads: the kernel drops what overflows, so only the
    sender's work is measured, as the issue's target asks (a collector reading would run in its own process)."""
    import socket

    from collector.sinks.netflow.config import NetflowSinkConfig
    from collector.sinks.netflow.sink import NetflowSink

    rx = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    rx.bind(("127.0.0.1", 0))
    cfg = NetflowSinkConfig(
        name="bench", version=10, address=f"127.0.0.1:{rx.getsockname()[1]}", max_packets_per_second=0
    )

    async def main() -> dict[str, Any]:
        sink = NetflowSink(cfg)
        await sink.open()
        records = 0
        if arg == "encode":
            batches = [r.batch for r in _parse(path)]
            cpu0, wall0 = time.process_time(), time.perf_counter()
            for b in batches:
                await sink.write(b)
                records += b.num_rows
            cpu, wall = time.process_time() - cpu0, time.perf_counter() - wall0
        else:
            cpu0, wall0 = time.process_time(), time.perf_counter()
            for r in _parse(path):
                await sink.write(r.batch)
                records += r.batch.num_rows
            cpu, wall = time.process_time() - cpu0, time.perf_counter() - wall0
        await sink.close()
        return {"records": records, "cpu": cpu, "wall": wall, "datagrams": sink.metrics.packets}

    try:
        return asyncio.run(main())
    finally:
        rx.close()


def work_filter(path: Path, arg: str) -> dict[str, Any]:
    """A sink's filter (`arg`) on already parsed batches (the parse is not timed): `Filter.apply`, the mask and the
    copy of the kept rows, as a sink pays it. The mask alone is printed too (ten passes: it is too quick for one)."""
    from collector.filters import compile_filter

    f = compile_filter(arg)
    batches = [r.batch for r in _parse(path)]
    records = sum(b.num_rows for b in batches)
    cpu0, wall0 = time.process_time(), time.perf_counter()
    kept = sum(f.apply(b).num_rows for b in batches)
    cpu, wall = time.process_time() - cpu0, time.perf_counter() - wall0
    mask0 = time.process_time()
    for _ in range(10):
        for b in batches:
            f.mask(b)
    mask_cpu = (time.process_time() - mask0) / 10
    rows = max(b.num_rows for b in batches)
    print(f"  kept {kept / records:.1%}; mask only: {records / max(mask_cpu, 1e-9):,.0f} rec/CPU-s "
          f"({mask_cpu / records * rows * 1e6:,.0f} us per batch of {rows:,} rows)")  # fmt: skip
    return {"records": records, "cpu": cpu, "wall": wall, "kept": kept}


def _moto(port: int) -> subprocess.Popen[bytes]:
    import urllib.request

    exe = Path(sys.executable).parent / "moto_server"
    proc = subprocess.Popen([str(exe), "-H", "127.0.0.1", "-p", str(port)], stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)  # fmt: skip
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            urllib.request.urlopen(f"http://127.0.0.1:{port}/moto-api/", timeout=1).close()
            return proc
        except OSError:
            time.sleep(0.1)
    proc.kill()
    raise RuntimeError("moto_server did not start")


def work_daemon(path: Path, arg: str) -> dict[str, Any]:
    """The whole collector (`run --once`: source, pipeline, checkpoints, Parquet file sink) over one object, read
    from a local directory (`local`; `local-gcp`: with `provider: gcp`) or from S3 on moto's server (`s3`). moto
    runs in its own process: only the collector's CPU is counted, as it would be against AWS. The upload is not
    timed."""
    import socket

    from collector.config import parse_config
    from collector.daemon import run

    with tempfile.TemporaryDirectory(prefix="bench-daemon-") as tmp_name:
        tmp = Path(tmp_name)
        moto = None
        if arg == "s3":
            with socket.socket() as sock:
                sock.bind(("127.0.0.1", 0))
                port = sock.getsockname()[1]
            moto = _moto(port)
            os.environ.update(AWS_ACCESS_KEY_ID="bench", AWS_SECRET_ACCESS_KEY="bench", AWS_EC2_METADATA_DISABLED="1")
            key = "AWSLogs/123456789012/vpcflowlogs/us-east-1/" + time.strftime("%Y/%m/%d", time.gmtime())
            key += "/123456789012_vpcflowlogs_us-east-1_fl-1_bench.log.gz"

            async def upload() -> None:
                from aiobotocore.session import AioSession

                async with AioSession().create_client(
                    "s3", region_name="us-east-1", endpoint_url=f"http://127.0.0.1:{port}"
                ) as s3:
                    await s3.create_bucket(Bucket="bench")
                    await s3.put_object(Bucket="bench", Key=key, Body=path.read_bytes())

            asyncio.run(upload())
            source = f"type: aws_s3, bucket: bench, region: us-east-1, endpoint_url: 'http://127.0.0.1:{port}'"
        else:
            (tmp / "in").mkdir()
            (tmp / "in" / path.name).symlink_to(path)
            source = f"type: local, path: {tmp / 'in'}"
            if arg == "local-gcp":
                source += ", provider: gcp"
        text = (
            f"state_dir: {tmp}/state\nprogress_interval: 0\nsources:\n  - {{name: bench, {source}}}\n"
            f"sinks:\n  - {{name: out, type: file, path: {tmp}/out, format: parquet}}\n"
        )
        try:
            config = parse_config(text, tmp / "c.yaml")
            cpu0, wall0 = time.process_time(), time.perf_counter()
            metrics = asyncio.run(run(config, once=True))
            cpu, wall = time.process_time() - cpu0, time.perf_counter() - wall0
        finally:
            if moto is not None:
                moto.kill()
                moto.wait()
        c = metrics.sources["bench"]
        return {"records": c.records, "errors": c.errors, "cpu": cpu, "wall": wall}


PUBSUB_LAUNCHER = "/usr/lib/google-cloud-sdk/platform/pubsub-emulator/bin/cloud-pubsub-emulator"


def pubsub_publish(host: str, topic: str, subscription: str, count: int) -> None:
    """Create the topic and subscription on the emulator at `host`, and publish `count` LogEntry messages (the
    GCP parser test's VM record, `bytes_sent` made unique)."""
    import json as _json

    os.environ["PUBSUB_EMULATOR_HOST"] = host
    from google.cloud import pubsub_v1

    pub = pubsub_v1.PublisherClient(batch_settings=pubsub_v1.types.BatchSettings(max_messages=1000))
    pub.create_topic(name=topic)
    pubsub_v1.SubscriberClient().create_subscription(name=subscription, topic=topic, ack_deadline_seconds=60)
    entry = {
        "insertId": "bench", "logName": "projects/web-prod/logs/compute.googleapis.com%2Fvpc_flows",
        "resource": {"type": "gce_subnetwork", "labels": {"project_id": "web-prod", "subnetwork_name": "web",
                                                            "subnetwork_id": "4455", "location": "us-central1-a"}},
        "timestamp": "2024-06-01T12:00:31.1Z",
        "jsonPayload": {
            "bytes_sent": "BYTES", "packets_sent": "20", "reporter": "SRC", "rtt_msec": "61",
            "connection": {"src_ip": "10.128.0.7", "dest_ip": "203.0.113.9", "src_port": 51234, "dest_port": 443,
                           "protocol": 6},
            "src_instance": {"project_id": "web-prod", "vm_name": "web-1", "region": "us-central1",
                             "zone": "us-central1-a"},
            "src_vpc": {"project_id": "web-prod", "vpc_name": "prod", "subnetwork_name": "web"},
            "dest_location": {"continent": "America", "country": "usa", "region": "California"},
            "start_time": "2024-06-01T12:00:00.000Z", "end_time": "2024-06-01T12:00:05.123Z",
        },
    }  # fmt: skip
    head, _, tail = _json.dumps(entry, separators=(",", ":")).encode().partition(b"BYTES")
    for start in range(1, count + 1, 10_000):
        futures = [
            pub.publish(topic, head + str(i).encode() + tail) for i in range(start, min(start + 10_000, count + 1))
        ]
        for f in futures:
            f.result()


def work_pubsub(path: Path, arg: str) -> dict[str, Any]:
    """LogEntry messages (the GCP parser test's VM record, `bytes_sent` made unique) published to the emulator, then
    read by two collector processes sharing the subscription. Publishing is not timed; the collectors' CPU is
    theirs alone (RUSAGE_CHILDREN of the two), the emulator runs in its own JVM."""
    import signal
    import socket
    import urllib.request

    count = D.BY_NAME[path.name].records or 0
    launcher = PUBSUB_LAUNCHER
    if not os.access(launcher, os.X_OK):
        return {"skipped": "skipped (Pub/Sub emulator not installed: google-cloud-cli-pubsub-emulator)"}
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    host = f"127.0.0.1:{port}"
    emulator = subprocess.Popen([launcher, "--host=127.0.0.1", f"--port={port}"], stdout=subprocess.DEVNULL,
                                stderr=subprocess.DEVNULL, start_new_session=True)  # fmt: skip
    try:
        deadline = time.monotonic() + 90
        while True:
            try:
                urllib.request.urlopen(f"http://{host}/v1/projects/bench/topics", timeout=1).close()
                break
            except OSError:
                if time.monotonic() > deadline:
                    raise RuntimeError("the Pub/Sub emulator did not start") from None
                time.sleep(0.2)
        topic, subscription = "projects/bench/topics/flows", "projects/bench/subscriptions/flows"
        # Published by a process of its own: this one stays small, and the collectors it starts inherit its peak
        # RSS (ru_maxrss survives fork + exec), which is what the table shows for them.
        code = (
            f"from benchmarks.run import pubsub_publish; pubsub_publish({host!r}, {topic!r}, {subscription!r}, {count})"
        )
        subprocess.run([sys.executable, "-c", code], cwd=ROOT, check=True)
        with tempfile.TemporaryDirectory(prefix="bench-pubsub-") as tmp_name:
            tmp = Path(tmp_name)
            procs = []
            for tag in ("a", "b"):
                cfg = tmp / f"{tag}.yaml"
                cfg.write_text(
                    f"state_dir: {tmp}/state-{tag}\nprogress_interval: 0\nsources:\n"
                    f"  - {{name: bench, type: gcp_pubsub, subscription: {subscription}, endpoint: 'http://{host}',"
                    " wait_time: 2s}\n"
                    f"sinks:\n  - {{name: out, type: file, path: {tmp}/out-{tag}, format: jsonl}}\n"
                )
                procs.append(cfg)
            ru0 = resource.getrusage(resource.RUSAGE_CHILDREN)
            wall0 = time.perf_counter()
            running = []
            for c in procs:
                argv = [sys.executable, "-m", "collector.cli", "run", "-c", str(c), "--once"]
                running.append(subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
            peak = 0  # kB: the larger collector's VmHWM, read while it runs (ru_maxrss would be the publisher's)
            while any(p.poll() is None for p in running):
                for p in running:
                    with contextlib.suppress(OSError), open(f"/proc/{p.pid}/status") as fh:
                        hwm = [line for line in fh if line.startswith("VmHWM:")]
                        peak = max([peak] + [int(line.split()[1]) for line in hwm])
                time.sleep(0.05)
            wall = time.perf_counter() - wall0
            ru = resource.getrusage(resource.RUSAGE_CHILDREN)
            records = sum(f.read_bytes().count(b"\n") for f in tmp.glob("out-*/*.jsonl"))
        cpu = (ru.ru_utime - ru0.ru_utime) + (ru.ru_stime - ru0.ru_stime)
        return {"records": records, "cpu": cpu, "wall": wall, "published": count, "rss_mb": peak / 1024}
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(emulator.pid, signal.SIGKILL)
        emulator.wait()


WORKERS: dict[str, Callable[[Path, str], dict[str, Any]]] = {
    "pubsub": work_pubsub,
    "daemon": work_daemon,
    "netflow": work_netflow,
    "parse": work_parse,
    "encode_jsonl": work_encode_jsonl,
    "file_sink": work_file_sink,
    "filter": work_filter,
}


def _rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: KiB


def child(run: str, path: Path, arg: str, profile: bool) -> None:
    # Import what the cases use before the clock starts: the measure is the work, not the imports.
    import adapters.aws.parse  # noqa: F401
    import collector.jsonl  # noqa: F401

    if "gcp" in arg:
        import adapters.gcp.formats  # noqa: F401

    fn = WORKERS[run]
    rss0 = _rss_mb()
    prof = None
    if profile:
        import cProfile

        prof = cProfile.Profile()
        prof.enable()
    ru0 = resource.getrusage(resource.RUSAGE_SELF)
    cpu0, wall0 = time.process_time(), time.perf_counter()
    out = fn(path, arg)
    cpu, wall = time.process_time() - cpu0, time.perf_counter() - wall0
    ru = resource.getrusage(resource.RUSAGE_SELF)
    out.update(user=ru.ru_utime - ru0.ru_utime, sys=ru.ru_stime - ru0.ru_stime, minflt=ru.ru_minflt - ru0.ru_minflt)
    if prof is not None:
        import pstats

        prof.disable()
        pstats.Stats(prof, stream=sys.stderr).sort_stats("tottime").print_stats(15)
    # A case may time only part of its work (the netflow encode case leaves its parse out).
    out.update(cpu=out.get("cpu", cpu), wall=out.get("wall", wall), rss_mb=out.get("rss_mb", _rss_mb()), rss0_mb=rss0)
    print(RESULT_MARK + json.dumps(out), flush=True)


# -- the parent: data, subprocesses, the table ---------------------------------------------------------------------
def run_case(case: Case, quick: bool, profile: bool) -> dict[str, Any]:
    ds = case.quick if quick else case.full
    cmd = [sys.executable, "-m", "benchmarks.run", "--child", case.run, str(ds.path), case.arg]
    if profile:
        cmd.append("--profile")
    proc = subprocess.run(cmd, cwd=ROOT, stdout=subprocess.PIPE, text=True, check=False)
    for line in proc.stdout.splitlines():
        if line.startswith(RESULT_MARK):
            return json.loads(line[len(RESULT_MARK) :])
        print(line)
    return {"failed": f"exit status {proc.returncode}"}


def best_of(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """The run with the least CPU (other load on the machine only ever adds), with the highest peak RSS seen."""
    done = [r for r in runs if "records" in r]
    if not done:
        return runs[-1]
    best = dict(min(done, key=lambda r: r["cpu"]))
    best["rss_mb"] = max(r["rss_mb"] for r in done)
    return best


def _fmt_row(cells: list[str], widths: list[int]) -> str:
    return "  ".join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(cells, widths, strict=True)))


def table(rows: list[tuple[Case, D.Dataset, dict[str, Any]]]) -> str:
    head = ["case", "records", "CPU s", "rec/CPU-s", "wall s", "peak RSS MB", "start RSS MB", "target", ""]
    cells: list[list[str] | tuple[str, str]] = []  # a full row, or (case, why it has no numbers)
    for case, ds, res in rows:
        name = f"{case.name} [{ds.name}]"
        if "records" not in res:
            cells.append((name, res.get("skipped") or res.get("failed", "?")))
            continue
        rate = res["records"] / max(res["cpu"], 1e-9)
        met = case.target.met(res, {c.name: r for c, _, r in rows}) if case.target else None
        verdict = "" if met is None else "met" if met else "MISSED"
        cells.append(
            [
                name,
                f"{res['records']:,}",
                f"{res['cpu']:.2f}",
                f"{rate:,.0f}",
                f"{res['wall']:.2f}",
                f"{res['rss_mb']:.0f}",
                f"{res['rss0_mb']:.0f}",
                str(case.target or ""),
                verdict,
            ]
        )
    full = [head] + [r for r in cells if isinstance(r, list)]
    widths = [max(len(r[i]) for r in full) for i in range(len(head))]
    widths[0] = max(widths[0], *(len(r[0]) for r in cells))
    out = [_fmt_row(head, widths), _fmt_row(["-" * w for w in widths], widths)]
    for r in cells:
        out.append(_fmt_row(r, widths) if isinstance(r, list) else f"{r[0].ljust(widths[0])}  {r[1]}")
    return "\n".join(line.rstrip() for line in out)


def select(names: list[str] | None) -> list[Case]:
    if not names:
        return list(CASES)
    out = []
    for want in names:
        exact = [c for c in CASES if c.name.lower() == want.lower()]
        found = exact or [c for c in CASES if want.lower() in c.name.lower()]
        if len(found) != 1:
            choices = ", ".join(repr(c.name) for c in CASES)
            raise SystemExit(f"--case {want!r} matches {len(found)} cases; choose one of {choices}")
        out.append(found[0])
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="200k-record variants (smoke test)")
    ap.add_argument("--case", action="append", metavar="NAME", help="run this case (exact or unique part of a name)")
    ap.add_argument("--repeat", type=int, default=1, metavar="N", help="run each case N times, report the best CPU")
    ap.add_argument("--profile", action="store_true", help="cProfile each case; top 15 by tottime on stderr")
    ap.add_argument("--list", action="store_true", help="list the cases")
    ap.add_argument("--child", nargs=3, metavar=("RUN", "PATH", "ARG"), help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.child:
        child(args.child[0], Path(args.child[1]), args.child[2], args.profile)
        return 0
    if args.list:
        print("\n".join(c.name for c in CASES))
        return 0
    cases = select(args.case)

    load = ", ".join(f"{v:.2f}" for v in os.getloadavg())
    print(
        f"load average {load} (other work on the machine slows the cases; --repeat N keeps the best), "
        f"python {platform.python_version()}, pyarrow {version('pyarrow')}, numpy {version('numpy')}, "
        f"isal {version('isal')}, {os.cpu_count()} CPUs, {platform.machine()}"
    )
    datasets = {(c.quick if args.quick else c.full) for c in cases}
    for ds in sorted(datasets, key=lambda d: d.name):
        if ds.made_by_case:
            print(f"data {ds.name}: {ds.records:,} records, made by the case")
            continue
        t0 = time.perf_counter()
        meta = D.cached(ds)
        if meta is None:
            subprocess.run([sys.executable, "-m", "benchmarks.data", ds.name], cwd=ROOT, check=True)
            meta = D.cached(ds)
            assert meta is not None
        took = time.perf_counter() - t0
        print(
            f"data {ds.name}: {meta['records']:,} records, {meta['raw_bytes'] / 1e6:,.0f} MB text, "
            + (f"{meta['gzip_bytes'] / 1e6:,.0f} MB gzip" if meta["gzip_bytes"] else "not compressed")
            + (f" (generated in {took:.1f} s)" if took > 1 else "")
        )
    rows = []
    for case in cases:
        ds = case.quick if args.quick else case.full
        print(f"running {case.name} [{ds.name}] ...", flush=True)
        runs = []
        for _ in range(args.repeat):
            res = run_case(case, args.quick, args.profile)
            if res.get("errors"):
                print(f"  note: the parser reported {res['errors']} errors")
            if "user" in res:
                out = f", output {res['out_mb']:,.0f} MB" if "out_mb" in res else ""
                print(f"  user {res['user']:.2f} s, sys {res['sys']:.2f} s, {res['minflt']:,} minor page faults{out}")
            runs.append(res)
            if "records" not in res:
                break
        rows.append((case, ds, best_of(runs)))
    print()
    print(table(rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
