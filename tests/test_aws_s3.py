"""`aws_s3` source against moto's S3: both key layouts, several accounts with a role each, text and Parquet, late
objects, day closing, start_from, a wrong credential, a damaged object, and SIGKILL + restart, all delivered
exactly once into a real JSON Lines file sink.

Flow log lines are built from the AWS user guide's default-format example ("accepted SSH traffic",
`2 123456789010 eni-1235b8ca123456789 172.31.16.139 172.31.16.21 20641 22 6 20 4249 1418530010 1418530070 ACCEPT
OK`), varied per line so every record is unique: its `bytes` value is a record id.
"""

from __future__ import annotations

import asyncio
import collections
import gzip
import io
import logging
import os
import signal
import subprocess
import sys
import time
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import orjson
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from services import FlakyProxy, Moto, start_proxy

from adapters.aws.config import AwsAuth
from adapters.aws.fields import V2_FIELDS
from adapters.aws.session import Identity, identities
from collector.checkpoints import CheckpointStore
from collector.config import parse_config
from collector.daemon import run

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parent.parent
BUCKET = "central-flow-logs"
A1, A2, A3 = "111111111111", "222222222222", "333333333333"
HEADER = " ".join(V2_FIELDS)


def lines(first_id: int, n: int, account: str, when: int = 1418530010) -> list[str]:
    return [
        f"2 {account} eni-1235b8ca123456789 172.31.16.139 172.31.16.{i % 250 + 1} {20641 + i % 1000} 22 6 20"
        f" {first_id + i} {when} {when + 60} ACCEPT OK"
        for i in range(n)
    ]


def gz_object(rows: list[str]) -> bytes:
    return gzip.compress((HEADER + "\n" + "\n".join(rows) + "\n").encode(), 1)


def parquet_object(first_id: int, n: int, account: str) -> bytes:
    # The Parquet flow log columns are the field names with '-' -> '_' (AWS "Parquet format" section).
    table = pa.table(
        {
            "version": pa.array([2] * n, pa.int32()),
            "account_id": [account] * n,
            "interface_id": ["eni-1235b8ca123456789"] * n,
            "srcaddr": ["172.31.16.139"] * n,
            "dstaddr": ["172.31.16.21"] * n,
            "srcport": pa.array([20641] * n, pa.int32()),
            "dstport": pa.array([22] * n, pa.int32()),
            "protocol": pa.array([6] * n, pa.int32()),
            "packets": pa.array([20] * n, pa.int64()),
            "bytes": pa.array(range(first_id, first_id + n), pa.int64()),
            "start": pa.array([1418530010] * n, pa.int64()),
            "end": pa.array([1418530070] * n, pa.int64()),
            "action": ["ACCEPT"] * n,
            "log_status": ["OK"] * n,
        }
    )
    out = io.BytesIO()
    pq.write_table(table, out)
    return out.getvalue()


def plain_key(account: str, day: date, name: str, service: str = "vpcflowlogs", region: str = "us-east-1") -> str:
    return f"AWSLogs/{account}/{service}/{region}/{day:%Y/%m/%d}/{account}_{service}_{region}_fl-1_{name}.log.gz"


def hive_key(account: str, day: date, hour: int, name: str, ext: str = "log.gz", region: str = "eu-west-1") -> str:
    return (
        f"AWSLogs/aws-account-id={account}/aws-service=vpcflowlogs/aws-region={region}/year={day:%Y}/"
        f"month={day:%m}/day={day:%d}/hour={hour:02d}/{account}_vpcflowlogs_{region}_fl-2_{name}.{ext}"
    )


class Bucket:
    """The test's own S3 client (the default moto account) to seed the central bucket."""

    def __init__(self, moto: Moto) -> None:
        self.moto = moto
        self.ident = Identity(identities(AwsAuth(region="us-east-1", endpoint_url=moto.endpoint), ())[0])

    async def __aenter__(self) -> Bucket:
        self.s3 = await self.ident.client("s3")
        await self.s3.create_bucket(Bucket=BUCKET)
        return self

    async def __aexit__(self, *exc: Any) -> None:
        await self.ident.close()

    async def put(self, key: str, body: bytes) -> None:
        await self.s3.put_object(Bucket=BUCKET, Key=key, Body=body)


def config_text(tmp: Path, moto: Moto, **source: Any) -> str:
    options = {
        "bucket": BUCKET,
        "endpoint_url": moto.endpoint,
        "region": "us-east-1",
        "poll_interval": "200ms",
        **source,
    }
    body = "\n".join(f"    {k}: {orjson.dumps(v).decode()}" for k, v in options.items())
    return (
        f"state_dir: {tmp}/state\nprogress_interval: 0\n"
        f"sources:\n  - name: s3\n    type: aws_s3\n{body}\n"
        f"sinks:\n  - name: out\n    type: file\n    path: {tmp}/out\n    format: jsonl\n    rotate_interval: 1h\n"
    )


async def run_once(tmp: Path, moto: Moto, **source: Any) -> Any:
    cfg = tmp / "c.yaml"
    cfg.write_text(config_text(tmp, moto, **source))
    return await run(parse_config(cfg.read_text(), cfg), once=True)


def delivered(tmp: Path) -> list[dict[str, Any]]:
    return [orjson.loads(line) for f in sorted((tmp / "out").glob("*.jsonl")) for line in f.read_bytes().splitlines()]


def ids(rows: list[dict[str, Any]]) -> collections.Counter[int]:
    return collections.Counter(r["bytes"] for r in rows)


TODAY = datetime.now(UTC).date()
OLD = TODAY - timedelta(days=3)


async def seed_multi_account(b: Bucket) -> dict[str, range]:
    """Account 1 in the plain layout (VPC and Transit Gateway logs, an old day and today), account 2 in the Hive
    layout with hourly partitions (text and Parquet), account 3 not listed in the config."""
    await b.put(plain_key(A1, OLD, "20261119T0005Z_a"), gz_object(lines(1_000, 100, A1)))
    await b.put(plain_key(A1, TODAY, "t0005Z_b"), gz_object(lines(2_000, 100, A1)))
    tgw = f"AWSLogs/{A1}/transitgatewayflowlogs/us-east-1/{TODAY:%Y/%m/%d}/{A1}_transitgatewayflowlogs_tgw.log.gz"
    await b.put(tgw, gz_object(lines(3_000, 50, A1)))
    await b.put(hive_key(A2, TODAY, 0, "a"), gz_object(lines(4_000, 100, A2)))
    await b.put(hive_key(A2, TODAY, 1, "b", ext="log.parquet"), parquet_object(5_000, 100, A2))
    await b.put(plain_key(A3, TODAY, "c"), gz_object(lines(9_000, 10, A3)))
    return {"a1": range(1_000, 1_100), "a1today": range(2_000, 2_100), "tgw": range(3_000, 3_050),
            "a2": range(4_000, 4_100), "a2parquet": range(5_000, 5_100)}  # fmt: skip


async def test_accounts_layouts_text_parquet_tgw_exactly_once(moto: Moto, tmp_path: Path) -> None:
    async with Bucket(moto) as b:
        expected = await seed_multi_account(b)
    role = "arn:aws:iam::{account}:role/FlowLogsReader"
    metrics = await run_once(tmp_path, moto, accounts=[A1, A2], role_arn=role)
    got = ids(delivered(tmp_path))
    want = collections.Counter(i for r in expected.values() for i in r)
    assert got == want  # every record once; account 3 (not listed) never read
    c = metrics.sources["s3"]
    assert (c.units, c.records, c.errors, c.units_failed) == (5, 450, 0, 0)
    assert c.newest_object_time > time.time() - 600

    # Field by field: one text record and one Parquet record, as the docs' example describes them.
    rows = {r["bytes"]: r for r in delivered(tmp_path)}
    text, parquet = rows[2_000], rows[5_000]
    assert {k: text[k] for k in ("provider", "account", "interface", "src_addr", "dst_addr", "src_port", "dst_port",
            "protocol", "packets", "action", "log_status", "time_start", "time_end", "source")} == {
        "provider": "aws", "account": A1, "interface": "eni-1235b8ca123456789", "src_addr": "172.31.16.139",
        "dst_addr": "172.31.16.1", "src_port": 20641, "dst_port": 22, "protocol": 6, "packets": 20,
        "action": "accept", "log_status": "ok", "time_start": "2014-12-14T04:06:50.000Z",
        "time_end": "2014-12-14T04:07:50.000Z", "source": "s3",
    }  # fmt: skip
    assert (parquet["account"], parquet["src_addr"], parquet["dst_addr"], parquet["action"]) == (
        A2, "172.31.16.139", "172.31.16.21", "accept",
    )  # fmt: skip

    # A second run finds nothing new.
    again = await run_once(tmp_path, moto, accounts=[A1, A2], role_arn=role)
    assert again.sources["s3"].records == 0
    assert ids(delivered(tmp_path)) == want


async def test_discovers_accounts_and_regions_without_a_list(moto: Moto, tmp_path: Path) -> None:
    async with Bucket(moto) as b:
        expected = await seed_multi_account(b)
    await run_once(tmp_path, moto, services=["vpcflowlogs"], regions=["us-east-1", "eu-west-1"])
    want = [i for k in ("a1", "a1today", "a2", "a2parquet") for i in expected[k]] + list(range(9_000, 9_010))
    assert ids(delivered(tmp_path)) == collections.Counter(want)  # TGW excluded by `services`


async def test_late_objects_and_day_closing(moto: Moto, tmp_path: Path) -> None:
    yesterday = TODAY - timedelta(days=1)
    cursor_unit = f"\x00cursor:AWSLogs/{A1}/vpcflowlogs/us-east-1/"
    async with Bucket(moto) as b:
        await b.put(plain_key(A1, OLD, "old"), gz_object(lines(1_000, 10, A1)))
        await b.put(plain_key(A1, yesterday, "y1"), gz_object(lines(2_000, 10, A1)))
        await run_once(tmp_path, moto, lookback="48h")  # yesterday is inside the look-back: it stays open
        # Late objects: one in yesterday's (open) partition, one in the old day, whose checkpoints the first run
        # had not yet seen committed when it ended, so the old day is not closed yet either.
        await b.put(plain_key(A1, yesterday, "y2"), gz_object(lines(3_000, 10, A1)))
        await b.put(plain_key(A1, OLD, "late"), gz_object(lines(4_000, 10, A1)))
        second = await run_once(tmp_path, moto, lookback="48h")
        assert second.sources["s3"].records == 20
        third = await run_once(tmp_path, moto, lookback="48h")  # everything of the old day is checkpointed: closed
        assert third.sources["s3"].records == 0
        store = CheckpointStore(tmp_path / "state")
        assert store.get("s3", cursor_unit).position == {"day": (OLD + timedelta(days=1)).isoformat(), "closed": []}
        done = store.done_versions("s3")
        assert not any(f"/{OLD:%Y/%m/%d}/" in k for k in done) and len(done) == 2  # only yesterday's two objects
        store.close()
        # A closed day is not listed again: an object landing there now is past the look-back, by design.
        await b.put(plain_key(A1, OLD, "after-close"), gz_object(lines(5_000, 10, A1)))
        fourth = await run_once(tmp_path, moto, lookback="48h")
        assert fourth.sources["s3"].records == 0
    assert ids(delivered(tmp_path)) == collections.Counter([*range(1_000, 1_010), *range(2_000, 2_010),
                                                            *range(3_000, 3_010), *range(4_000, 4_010)])  # fmt: skip


async def test_start_from_now_skips_what_was_there(moto: Moto, tmp_path: Path) -> None:
    async with Bucket(moto) as b:
        await b.put(plain_key(A1, TODAY, "before"), gz_object(lines(1_000, 10, A1)))
        await asyncio.sleep(1.1)  # LastModified has whole seconds
        await run_once(tmp_path, moto, start_from="now")
        await asyncio.sleep(1.1)
        await b.put(plain_key(A1, TODAY, "after"), gz_object(lines(2_000, 10, A1)))
        await run_once(tmp_path, moto, start_from="now")  # "now" was fixed at the first run
    assert ids(delivered(tmp_path)) == collections.Counter(range(2_000, 2_010))


async def test_wrong_credential_fails_one_account_only(
    moto: Moto, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    async with Bucket(moto) as b:
        expected = await seed_multi_account(b)
    accounts = [{"id": A1, "profile": "no-such-profile"}, A2]
    with caplog.at_level(logging.ERROR, "flowcollector.source.aws_s3"):
        metrics = await run_once(tmp_path, moto, accounts=accounts)
    assert ids(delivered(tmp_path)) == collections.Counter([*expected["a2"], *expected["a2parquet"]])
    errors = [r.getMessage() for r in caplog.records]
    assert any(f"account {A1}" in e and "no-such-profile" in e for e in errors), errors
    assert metrics.sources["s3"].units_failed >= 1


async def test_damaged_object_is_reported_and_the_rest_delivered(
    moto: Moto, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    good = gz_object(lines(1_000, 100, A1))
    async with Bucket(moto) as b:
        await b.put(plain_key(A1, TODAY, "good"), good)
        await b.put(plain_key(A1, TODAY, "truncated"), gz_object(lines(2_000, 100, A1))[:-30])
        await b.put(plain_key(A1, TODAY, "bad"), gz_object(["2 x y"]))  # a malformed line
        with caplog.at_level(logging.WARNING, "flowcollector.source.aws_s3"):
            metrics = await run_once(tmp_path, moto)
    got = ids(delivered(tmp_path))
    assert all(got[i] == 1 for i in range(1_000, 1_100)) and max(got.values()) == 1
    messages = "\n".join(r.getMessage() for r in caplog.records)
    assert f"s3://{BUCKET}/{plain_key(A1, TODAY, 'truncated')}" in messages and "gzip" in messages
    assert f"s3://{BUCKET}/{plain_key(A1, TODAY, 'bad')}:2:" in messages
    # The truncated object: its 98 complete lines delivered, the cut line and the truncation reported (3 errors
    # with the malformed line of the other object).
    assert sorted(i for i in got if 2_000 <= i < 3_000) == list(range(2_000, 2_098))
    assert metrics.sources["s3"].errors == 3


async def test_sigkill_and_restart_deliver_every_record_once(moto: Moto, tmp_path: Path) -> None:
    """A real `flowcollector run` daemon killed with SIGKILL while it reads, then run to the end: every record of
    the bucket is in the JSON Lines output exactly once (the file sink cuts back what was not recorded)."""
    per, objects = 40_000, 6
    async with Bucket(moto) as b:
        for k in range(objects):
            await b.put(plain_key(A1, TODAY, f"{k:02d}"), gz_object(lines(k * per, per, A1)))
    cfg = tmp_path / "c.yaml"
    cfg.write_text(config_text(tmp_path, moto, max_concurrency=2).replace("rotate_interval: 1h", "rotate_interval: 1s"))
    cmd = [sys.executable, "-m", "collector.cli", "run", "-c", str(cfg)]
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    for kill_after in (1.5, 2.5):
        proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        time.sleep(kill_after)
        proc.send_signal(signal.SIGKILL)
        proc.wait(30)
    final = subprocess.run([*cmd, "--once"], cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert final.returncode == 0, final.stderr[-3000:]
    got = ids(delivered(tmp_path))
    assert got == collections.Counter(range(per * objects))


async def run_through(proxy_port: int, tmp: Path, moto: Moto, **source: Any) -> Any:
    cfg = tmp / "c.yaml"
    cfg.write_text(config_text(tmp, moto, **source).replace(moto.endpoint, f"http://127.0.0.1:{proxy_port}"))
    return await run(parse_config(cfg.read_text(), cfg), once=True)


async def test_throttling_and_5xx_are_retried(moto: Moto, tmp_path: Path) -> None:
    async with Bucket(moto) as b:
        await b.put(plain_key(A1, TODAY, "a"), gz_object(lines(1_000, 100, A1)))
    proxy = FlakyProxy(moto.endpoint, failures=2)
    runner, port = await start_proxy(proxy)
    try:
        metrics = await run_through(port, tmp_path, moto)
    finally:
        await runner.cleanup()
    assert proxy.failed == 2 and proxy.requests > 2
    assert ids(delivered(tmp_path)) == collections.Counter(range(1_000, 1_100))
    assert (metrics.sources["s3"].units_failed, metrics.sources["s3"].errors) == (0, 0)


async def test_an_unreadable_object_holds_its_day_open_but_not_the_days_after(moto: Moto, tmp_path: Path) -> None:
    """An object the identity may not read (say, a KMS key it cannot use) is reported and retried; its day stays
    open, and later days still close and are not listed again."""
    day1, day2 = OLD, OLD + timedelta(days=1)
    async with Bucket(moto) as b:
        await b.put(plain_key(A1, day1, "stuck"), gz_object(lines(1_000, 10, A1)))
        await b.put(plain_key(A1, day1, "ok1"), gz_object(lines(2_000, 10, A1)))
        await b.put(plain_key(A1, day2, "ok2"), gz_object(lines(3_000, 10, A1)))
    proxy = FlakyProxy(moto.endpoint, failures=0, deny="_stuck")
    runner, port = await start_proxy(proxy)
    try:
        first = await run_through(port, tmp_path, moto, lookback="1h")
        second = await run_through(port, tmp_path, moto, lookback="1h")  # day 2 is checkpointed now: it closes
        store = CheckpointStore(tmp_path / "state")
        cursor = store.get("s3", f"\x00cursor:AWSLogs/{A1}/vpcflowlogs/us-east-1/").position
        done = set(store.done_versions("s3"))
        store.close()
        proxy.paths.clear()
        await run_through(port, tmp_path, moto, lookback="1h")
    finally:
        await runner.cleanup()
    assert (first.sources["s3"].units_failed, second.sources["s3"].units_failed) == (1, 1)
    assert ids(delivered(tmp_path)) == collections.Counter([*range(2_000, 2_010), *range(3_000, 3_010)])
    # Day 2 and the empty days after it closed (those ended more than the look-back ago); day 1 stays open.
    cutoff = datetime.now(UTC) - timedelta(hours=1)
    later = [day2 + timedelta(days=k) for k in range((TODAY - day2).days)]
    closed = [
        d.isoformat() for d in later if datetime(d.year, d.month, d.day, tzinfo=UTC) + timedelta(days=1) <= cutoff
    ]
    assert cursor == {"day": day1.isoformat(), "closed": closed} and day2.isoformat() in closed
    assert done == {plain_key(A1, day1, "ok1")}  # day 2's keys forgotten; day 1 still open
    listed = [p for p in proxy.paths if "list-type=2" in p]
    assert any(f"{day1:%Y}%2F{day1:%m}%2F{day1:%d}" in p for p in listed)
    assert not any(f"{day2:%Y}%2F{day2:%m}%2F{day2:%d}" in p for p in listed)


async def test_a_backfill_over_years_lists_only_the_partitions_that_exist(moto: Moto, tmp_path: Path) -> None:
    """An object of August 2019 (the date of the AWS docs' v3 example) and one of today, in both layouts: the first
    run walks the year / month / day partitions instead of listing ~2,600 calendar days, and closes the empty ones."""
    old_day = date(2019, 8, 26)
    async with Bucket(moto) as b:
        await b.put(plain_key(A1, old_day, "2019"), gz_object(lines(1_000, 10, A1, when=1566848875)))
        await b.put(plain_key(A1, TODAY, "now"), gz_object(lines(2_000, 10, A1)))
        await b.put(hive_key(A2, old_day, 7, "2019"), gz_object(lines(3_000, 10, A2, when=1566848875)))
    proxy = FlakyProxy(moto.endpoint, failures=0)
    runner, port = await start_proxy(proxy)
    try:
        await run_through(port, tmp_path, moto)
        first_run = len([p for p in proxy.paths if "list-type=2" in p])
        proxy.paths.clear()
        await run_through(port, tmp_path, moto)  # the 2019 days are checkpointed now: cursors move to today
        second_run = len([p for p in proxy.paths if "list-type=2" in p])
    finally:
        await runner.cleanup()
    assert ids(delivered(tmp_path)) == collections.Counter([*range(1_000, 1_010), *range(2_000, 2_010),
                                                            *range(3_000, 3_010)])  # fmt: skip
    assert first_run < 60 and second_run < 40  # discovery + the walk + a few days, per root
    store = CheckpointStore(tmp_path / "state")
    open_from = (datetime.now(UTC) - timedelta(hours=2, days=1)).date() + timedelta(days=1)
    for prefix in (f"AWSLogs/{A1}/vpcflowlogs/us-east-1/", f"AWSLogs/aws-account-id={A2}/aws-service=vpcflowlogs/"
                   "aws-region=eu-west-1/"):  # fmt: skip
        assert store.get("s3", f"\x00cursor:{prefix}").position == {"day": open_from.isoformat(), "closed": []}
    store.close()
