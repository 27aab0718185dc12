"""`aws_cloudwatch` source against moto's CloudWatch Logs: two accounts (a role each) x log groups (by name and by
prefix) x streams, late events, new streams, start_from, malformed messages, a wrong credential, SIGKILL +
restart, and a sink that was ahead of the checkpoint, all through the real pipeline into JSON Lines files.

Messages are the AWS VPC user guide's flow log record examples ("Flow log record examples",
https://docs.aws.amazon.com/vpc/latest/userguide/flow-logs-records-examples.html), varied so that every record is
unique: its `bytes` value is a record id. Event timestamps are the record's start time, as the guide says for
CloudWatch Logs ("the timestamp field corresponds to the start time"), and recent: moto, like AWS, refuses events
older than 14 days.
"""

from __future__ import annotations

import asyncio
import collections
import logging
import os
import signal
import sqlite3
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import orjson
import pyarrow.parquet as pq
import pytest
from services import FlakyProxy, Moto, start_proxy

from adapters.aws import cloudwatch
from adapters.aws.config import AccountConfig, AwsAuth
from adapters.aws.session import Identity, identities
from collector.checkpoints import CheckpointStore
from collector.config import parse_config
from collector.daemon import run
from collector.metrics import Metrics
from collector.pipeline import Delivery, Pipeline, PipelineFailed
from collector.registry import create_sink

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parent.parent
A1, A2 = "111111111111", "222222222222"
ROLE = "arn:aws:iam::{account}:role/reader"
PROD = "/flowlogs/prod"
NOW_MS = int(time.time()) * 1000
T0 = NOW_MS - 3_600_000  # an hour ago: the first events of every test


def accept(record_id: int, ts: int, account: str = "123456789010", eni: str = "eni-1235b8ca123456789") -> str:
    """The guide's "accepted traffic" record (SSH to 172.31.16.21), with `bytes` as the record id."""
    start = ts // 1000
    return f"2 {account} {eni} 172.31.16.139 172.31.16.21 20641 22 6 20 {record_id} {start} {start + 60} ACCEPT OK"


class Logs:
    """The test's own CloudWatch Logs client in one account: moto 5 acts in the account of an assumed role."""

    def __init__(self, moto: Moto, account: str | None = None, region: str = "us-east-1") -> None:
        accounts = (AccountConfig(account),) if account else ()
        auth = AwsAuth(region=region, endpoint_url=moto.endpoint, role_arn=ROLE if account else None)
        self.ident = Identity(identities(auth, accounts)[0])
        self.region = region

    async def __aenter__(self) -> Logs:
        self.client = await self.ident.client("logs", self.region)
        return self

    async def __aexit__(self, *exc: Any) -> None:
        await self.ident.close()

    async def put(self, group: str, stream: str, events: list[tuple[int, str]]) -> None:
        """Create the group and stream if needed, then put `(timestamp ms, message)` events in time order."""
        groups = await self.client.describe_log_groups(logGroupNamePrefix=group)
        if not any(g["logGroupName"] == group for g in groups["logGroups"]):
            await self.client.create_log_group(logGroupName=group)
        streams = await self.client.describe_log_streams(logGroupName=group, logStreamNamePrefix=stream)
        if not any(s["logStreamName"] == stream for s in streams["logStreams"]):
            await self.client.create_log_stream(logGroupName=group, logStreamName=stream)
        ordered = sorted(events, key=lambda e: e[0])
        for i in range(0, len(ordered), 10_000):
            chunk = [{"timestamp": ts, "message": m} for ts, m in ordered[i : i + 10_000]]
            await self.client.put_log_events(logGroupName=group, logStreamName=stream, logEvents=chunk)


def records(
    first_id: int, n: int, account: str, t: int = T0, eni: str = "eni-1235b8ca123456789", step: int = 1000
) -> list[tuple[int, str]]:
    """n events `step` ms apart from `t`, with record ids from `first_id`."""
    return [(t + i * step, accept(first_id + i, t + i * step, account, eni)) for i in range(n)]


def config_text(tmp: Path, moto: Moto, sinks: str = "", **source: Any) -> str:
    options = {"endpoint_url": moto.endpoint, "region": "us-east-1", "poll_interval": "200ms", **source}
    body = "\n".join(f"    {k}: {orjson.dumps(v).decode()}" for k, v in options.items())
    sinks = sinks or f"  - name: out\n    type: file\n    path: {tmp}/out\n    format: jsonl\n    rotate_interval: 1h\n"
    return (
        f"state_dir: {tmp}/state\nprogress_interval: 0\n"
        f"sources:\n  - name: cw\n    type: aws_cloudwatch\n{body}\n"
        f"sinks:\n{sinks}"
    )


async def run_once(tmp: Path, moto: Moto, **source: Any) -> Metrics:
    cfg = tmp / "c.yaml"
    cfg.write_text(config_text(tmp, moto, **source))
    return await run(parse_config(cfg.read_text(), cfg), once=True)


def delivered(tmp: Path, sub: str = "out") -> list[dict[str, Any]]:
    return [orjson.loads(line) for f in sorted((tmp / sub).glob("*.jsonl")) for line in f.read_bytes().splitlines()]


def ids(rows: list[dict[str, Any]]) -> collections.Counter[int]:
    return collections.Counter(r["bytes"] for r in rows)


def once_each(*ranges: range) -> collections.Counter[int]:
    return collections.Counter(i for r in ranges for i in r)


async def seed_two_accounts(moto: Moto, big: int = 25_000) -> dict[str, list[range]]:
    """Per account: PROD (named in the config) with two streams, one of `big` events (25,000: three FilterLogEvents
    pages, three batches), and two groups found by the prefix /flowlogs/team-; plus groups no config asks for."""
    out = {}
    for k, account in enumerate((A1, A2)):
        base = (k + 1) * 100_000
        async with Logs(moto, account) as logs:
            await logs.put(PROD, "eni-big-all", records(base, big, account, eni="eni-0big", step=100))
            await logs.put(PROD, "eni-small-all", records(base + 30_000, 10, account))
            await logs.put("/flowlogs/team-a", "eni-a-all", records(base + 40_000, 20, account, T0 + 500))
            await logs.put("/flowlogs/team-b", "eni-b-all", records(base + 50_000, 30, account, T0 + 700))
            await logs.put("/other", "eni-other-all", records(base + 90_000, 5, account))
        out[account] = [range(base, base + big), range(base + 30_000, base + 30_010),
                        range(base + 40_000, base + 40_020), range(base + 50_000, base + 50_030)]  # fmt: skip
    async with Logs(moto) as default:  # moto's default account, not listed in the config
        await default.put(PROD, "eni-default-all", records(900_000, 5, "123456789012"))
    return out


async def test_two_accounts_groups_and_streams_exactly_once(moto: Moto, tmp_path: Path) -> None:
    expected = await seed_two_accounts(moto)
    options = {"accounts": [A1, A2], "role_arn": ROLE, "log_groups": [PROD], "log_group_prefix": "/flowlogs/team-"}
    metrics = await run_once(tmp_path, moto, **options)
    rows = delivered(tmp_path)
    want = once_each(*expected[A1], *expected[A2])
    assert ids(rows) == want  # every record once; /other and the default account never read
    c = metrics.sources["cw"]
    assert (c.records, c.errors, c.units_failed, c.status_rows) == (2 * 25_060, 0, 0, 0)
    assert c.units == 8  # every stream caught up once
    assert c.newest_object_time == (T0 + 2_499_900) / 1000  # the newest event: the big stream's last

    # Field by field, the guide's accepted-SSH record as account 2's first small-stream event carries it.
    row = next(r for r in rows if r["bytes"] == 230_000)
    start = time.strftime("%Y-%m-%dT%H:%M:%S.000Z", time.gmtime(T0 / 1000))
    end = time.strftime("%Y-%m-%dT%H:%M:%S.000Z", time.gmtime(T0 / 1000 + 60))
    assert {k: row[k] for k in ("provider", "source", "account", "interface", "src_addr", "dst_addr", "src_port",
            "dst_port", "protocol", "packets", "bytes", "time_start", "time_end", "action", "log_status",
            "sampling_rate")} == {
        "provider": "aws", "source": "cw", "account": A2, "interface": "eni-1235b8ca123456789",
        "src_addr": "172.31.16.139", "dst_addr": "172.31.16.21", "src_port": 20641, "dst_port": 22, "protocol": 6,
        "packets": 20, "bytes": 230_000, "time_start": start, "time_end": end, "action": "accept",
        "log_status": "ok", "sampling_rate": 1,
    }  # fmt: skip
    # Within a stream, records arrive in event order.
    big = [r["bytes"] for r in rows if r["interface"] == "eni-0big" and r["account"] == A1]
    assert big == list(expected[A1][0])

    again = await run_once(tmp_path, moto, **options)  # a restart: nothing new, nothing repeated
    assert (again.sources["cw"].records, again.sources["cw"].units) == (0, 0)
    assert ids(delivered(tmp_path)) == want


async def test_late_events_new_streams_and_restarts(moto: Moto, tmp_path: Path) -> None:
    async with Logs(moto, A1) as logs:
        await logs.put(PROD, "eni-1-all", records(1_000, 10, A1))  # T0 .. T0+9s
        await logs.put(PROD, "eni-2-all", records(2_000, 10, A1))
        options = {"accounts": [A1], "role_arn": ROLE, "log_groups": [PROD]}
        await run_once(tmp_path, moto, **options)
        newest = T0 + 9_000
        # After the first run: an event 2 minutes older than the newest delivered (inside the 10-minute
        # look-back), one at the very timestamp of the newest delivered, one newer, one an hour older (outside the
        # look-back: not looked for, by design), and a new stream.
        await logs.put(PROD, "eni-1-all", [(newest - 120_000, accept(1_100, newest - 120_000, A1))])
        await logs.put(PROD, "eni-1-all", [(newest, accept(1_101, newest, A1))])
        await logs.put(PROD, "eni-1-all", [(newest + 5_000, accept(1_102, newest + 5_000, A1))])
        await logs.put(PROD, "eni-2-all", [(newest - 3_600_000, accept(2_100, newest - 3_600_000, A1))])
        await logs.put(PROD, "eni-3-all", records(3_000, 5, A1))
        second = await run_once(tmp_path, moto, **options)
        assert second.sources["cw"].records == 3 + 5
        third = await run_once(tmp_path, moto, **options)
        assert third.sources["cw"].records == 0
    assert ids(delivered(tmp_path)) == once_each(range(1_000, 1_010), range(2_000, 2_010), range(1_100, 1_103),
                                                 range(3_000, 3_005))  # fmt: skip


async def test_late_events_while_running(moto: Moto, tmp_path: Path) -> None:
    """In daemon mode the ids delivered within the look-back are remembered: a late event is delivered at the next
    poll, once, and the others are not delivered again."""
    cfg = tmp_path / "c.yaml"
    cfg.write_text(config_text(tmp_path, moto, accounts=[A1], role_arn=ROLE, log_groups=[PROD], discover_interval=1))
    metrics = Metrics()
    c = metrics.sources["cw"]

    async def until(condition: Callable[[], bool]) -> None:
        deadline = time.monotonic() + 30
        while not condition():
            assert time.monotonic() < deadline, "the daemon did not get there"
            await asyncio.sleep(0.05)

    async with Logs(moto, A1) as logs:
        await logs.put(PROD, "eni-1-all", records(1_000, 10, A1))
        daemon = asyncio.create_task(run(parse_config(cfg.read_text(), cfg), once=False, metrics=metrics))
        try:
            await until(lambda: c.records == 10)
            await logs.put(PROD, "eni-1-all", [(T0 + 4_500, accept(1_100, T0 + 4_500, A1))])  # late
            await until(lambda: c.records == 11)
            await logs.put(PROD, "eni-1-all", [(T0 + 9_000, accept(1_101, T0 + 9_000, A1))])  # at the newest ts
            await logs.put(PROD, "eni-9-all", records(9_000, 3, A1))  # a new stream, found by the next listing
            await until(lambda: c.records == 15)
        finally:
            os.kill(os.getpid(), signal.SIGTERM)  # the daemon's handler: drain and stop
            await daemon
    assert ids(delivered(tmp_path)) == once_each(range(1_000, 1_010), range(1_100, 1_102), range(9_000, 9_003))


async def test_malformed_messages_are_counted_with_their_place(
    moto: Moto, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    ts = T0
    messages = [
        # From the guide: accepted and rejected traffic, no data, skipped records, IPv6.
        "2 123456789010 eni-1235b8ca123456789 172.31.16.139 172.31.16.21 20641 22 6 20 4249 1418530010 1418530070 ACCEPT OK",
        "2 123456789010 eni-1235b8ca123456789 172.31.9.69 172.31.9.12 49761 3389 6 20 4250 1418530010 1418530070 REJECT OK",
        "2 123456789010 eni-1235b8ca123456789 - - - - - - - 1431280876 1431280934 - NODATA",
        "2 123456789010 eni-11111111aaaaaaaaa - - - - - - - 1431280876 1431280934 - SKIPDATA",
        "2 123456789010 eni-1235b8ca123456789 2001:db8:1234:a100:8d6e:3477:df66:f105 2001:db8:1234:a102:3304:8879:34cf:4071 34892 22 6 54 8855 1477913708 1477913820 ACCEPT OK",
        "bogus!",  # flowlogs-reader's test of a message that is not a record
        "2 123456789010 eni-1235b8ca123456789 172.31.16.139 172.31.16.21 http 22 6 20 4251 1418530010 1418530070 ACCEPT OK",
        "version account-id interface-id srcaddr dstaddr srcport dstport protocol packets bytes start end action log-status",
        "2 123456789010 eni-1235b8ca123456789 172.31.16.139 172.31.16.21 20641 22 6 20 4252 1418530010 1418530070 ACCEPT OK",
    ]  # fmt: skip
    async with Logs(moto) as logs:
        await logs.put(PROD, "eni-1235b8ca123456789-all", [(ts + i, m) for i, m in enumerate(messages)])
        events = (await logs.client.filter_log_events(logGroupName=PROD))["events"]
    event_id = {e["message"]: e["eventId"] for e in events}
    with caplog.at_level(logging.WARNING, "flowcollector.source.aws_cloudwatch"):
        metrics = await run_once(tmp_path, moto, log_groups=[PROD])
    rows = delivered(tmp_path)
    assert [r["bytes"] for r in rows] == [4249, 4250, None, None, 8855, 4252]
    assert [r["log_status"] for r in rows] == ["ok", "ok", "nodata", "skipdata", "ok", "ok"]
    nodata = rows[2]
    assert (nodata["interface"], nodata["src_addr"], nodata["packets"], nodata["action"]) == (
        "eni-1235b8ca123456789", None, None, None,
    )  # fmt: skip
    assert nodata["time_start"] == "2015-05-10T18:01:16.000Z" and nodata["time_end"] == "2015-05-10T18:02:14.000Z"
    assert (rows[4]["src_addr"], rows[4]["dst_addr"], rows[4]["packets"]) == (
        "2001:db8:1234:a100:8d6e:3477:df66:f105", "2001:db8:1234:a102:3304:8879:34cf:4071", 54,
    )  # fmt: skip
    c = metrics.sources["cw"]
    assert (c.records, c.status_rows, c.errors, c.units_failed) == (6, 2, 3, 0)
    warnings = [r.getMessage() for r in caplog.records]
    place = f"source credentials region us-east-1 log group {PROD} stream eni-1235b8ca123456789-all"
    for message in (messages[5], messages[6], messages[7]):
        assert any(place in w and f"event {event_id[message]}:" in w for w in warnings), (message, warnings)
    assert any("srcport: invalid value 'http'" in w for w in warnings), warnings
    assert any("a header line" in w for w in warnings), warnings


async def test_custom_format_from_the_flow_logs_log_format(moto: Moto, tmp_path: Path) -> None:
    # The guide's "traffic path" example: its custom format (as the flow log's LogFormat) and its two records.
    log_format = (
        "${version} ${srcaddr} ${dstaddr} ${srcport} ${dstport} ${protocol} ${start} ${end} ${type} ${packets} "
        "${bytes} ${account-id} ${vpc-id} ${subnet-id} ${instance-id} ${interface-id} ${region} ${az-id} "
        "${sublocation-type} ${sublocation-id} ${action} ${tcp-flags} ${pkt-srcaddr} ${pkt-dstaddr} "
        "${pkt-src-aws-service} ${pkt-dst-aws-service} ${traffic-path} ${flow-direction} ${log-status}"
    )
    messages = [
        "5 52.95.128.179 10.0.0.71 80 34210 6 1616729292 1616729349 IPv4 14 15044 123456789012 vpc-abcdefab012345678 subnet-aaaaaaaa012345678 i-0c50d5961bcb2d47b eni-1235b8ca123456789 ap-southeast-2 apse2-az3 - - ACCEPT 19 52.95.128.179 10.0.0.71 S3 - - ingress OK",
        "5 10.0.0.71 52.95.128.179 34210 80 6 1616729292 1616729349 IPv4 7 471 123456789012 vpc-abcdefab012345678 subnet-aaaaaaaa012345678 i-0c50d5961bcb2d47b eni-1235b8ca123456789 ap-southeast-2 apse2-az3 - - ACCEPT 3 10.0.0.71 52.95.128.179 - S3 8 egress OK",
    ]  # fmt: skip
    async with Logs(moto) as logs:
        await logs.put(PROD, "eni-1235b8ca123456789-all", [(T0, messages[0]), (T0 + 1, messages[1])])
    metrics = await run_once(tmp_path, moto, log_groups=[PROD], fields=log_format)
    assert metrics.sources["cw"].errors == 0
    egress = delivered(tmp_path)[1]
    assert {k: egress[k] for k in ("account", "region", "zone", "vpc", "subnet", "instance", "interface", "src_addr",
            "dst_addr", "src_port", "dst_port", "protocol", "packets", "bytes", "action", "direction", "tcp_flags",
            "traffic_path", "pkt_src_addr", "pkt_dst_addr", "time_start")} == {
        "account": "123456789012", "region": "ap-southeast-2", "zone": "apse2-az3", "vpc": "vpc-abcdefab012345678",
        "subnet": "subnet-aaaaaaaa012345678", "instance": "i-0c50d5961bcb2d47b", "interface": "eni-1235b8ca123456789",
        "src_addr": "10.0.0.71", "dst_addr": "52.95.128.179", "src_port": 34210, "dst_port": 80, "protocol": 6,
        "packets": 7, "bytes": 471, "action": "accept", "direction": "egress", "tcp_flags": 3, "traffic_path": 8,
        "pkt_src_addr": "10.0.0.71", "pkt_dst_addr": "52.95.128.179", "time_start": "2021-03-26T03:28:12.000Z",
    }  # fmt: skip
    assert egress["extra"]["pkt-dst-aws-service"] == "S3"


async def test_wrong_credential_fails_one_account_only(
    moto: Moto, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    expected = await seed_two_accounts(moto, big=100)
    accounts = [{"id": A1, "profile": "no-such-profile"}, A2]
    groups = [PROD, "/flowlogs/missing"]
    with caplog.at_level(logging.ERROR, "flowcollector.source.aws_cloudwatch"):
        metrics = await run_once(tmp_path, moto, accounts=accounts, role_arn=ROLE, log_groups=groups)
    assert ids(delivered(tmp_path)) == once_each(*expected[A2][:2])
    errors = [r.getMessage() for r in caplog.records]
    assert len(errors) == 2, errors
    assert f"account {A1} region us-east-1 log groups {PROD}, /flowlogs/missing: cannot list" in errors[0]
    assert "no-such-profile" in errors[0]
    assert f"account {A2} region us-east-1 log group /flowlogs/missing: cannot read: no such log group" in errors[1]
    assert metrics.sources["cw"].units_failed == 2


async def test_start_from_now_is_fixed_at_the_first_run(moto: Moto, tmp_path: Path) -> None:
    async with Logs(moto) as logs:
        await logs.put(PROD, "eni-1-all", records(1_000, 5, "123456789010", t=NOW_MS - 60_000))  # before
        options = {"log_groups": [PROD], "start_from": "now"}
        assert (await run_once(tmp_path, moto, **options)).sources["cw"].records == 0
        store = CheckpointStore(tmp_path / "state")
        anchor = store.get("cw", "\x00start")
        store.close()
        assert anchor is not None and anchor.position is not None and anchor.position["ms"] >= NOW_MS
        # Events stamped after the first run's start, in the old stream and in a stream created since: the
        # second run, later, still starts from the first run's instant.
        start = anchor.position["ms"]
        await logs.put(PROD, "eni-1-all", [(start - 1, accept(1_999, start - 1))] + records(2_000, 3, "1", t=start))
        await logs.put(PROD, "eni-2-all", records(3_000, 3, "123456789010", t=start + 1))
        assert (await run_once(tmp_path, moto, **options)).sources["cw"].records == 6
    assert ids(delivered(tmp_path)) == once_each(range(2_000, 2_003), range(3_000, 3_003))


async def test_a_checkpoint_between_two_late_events_loses_neither(
    moto: Moto, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Late events are read in timestamp order, not in order of arrival. A checkpoint taken between two of them,
    the first read being the last to arrive, must not make the restart take the other for delivered."""
    async with Logs(moto) as logs:
        await logs.put(PROD, "eni-1-all", records(1_000, 10, "123456789010"))  # T0 .. T0+9s
        await run_once(tmp_path, moto, log_groups=[PROD])
        await logs.put(PROD, "eni-1-all", [(T0 + 5_500, accept(1_101, T0 + 5_500))])  # arrives first
        await asyncio.sleep(0.01)  # the next one gets a later ingestion time (milliseconds)
        await logs.put(PROD, "eni-1-all", [(T0 + 5_200, accept(1_100, T0 + 5_200))])  # arrives last, read first
    # A run that crashes right after its first batch (one event per batch): its checkpoint lands between the two.
    cfg = parse_config((tmp_path / "c.yaml").read_text(), tmp_path / "c.yaml")
    store, metrics = CheckpointStore(cfg.state_dir), Metrics()
    pipeline = Pipeline([create_sink(c) for c in cfg.sinks], store, metrics)
    await pipeline.start()
    emitted = []
    emit = pipeline.emit

    async def emit_then_crash(delivery: Delivery) -> None:
        await emit(delivery)
        emitted.append(delivery)
        raise PipelineFailed("crash after the first batch")

    with monkeypatch.context() as patch:
        patch.setattr(cloudwatch, "BATCH_EVENTS", 1)
        patch.setattr(pipeline, "emit", emit_then_crash)
        with pytest.raises(PipelineFailed):
            await cloudwatch.CloudWatchSource(cfg.sources[0], store, metrics).run(pipeline, True, asyncio.Event())
    await pipeline.close()
    position = store.get("cw", f"us-east-1:{PROD}:eni-1-all").position
    store.close()
    assert [d.batch.column("bytes").to_pylist() for d in emitted] == [[1_100]]
    assert position is not None and [c["ts"] for c in position["cuts"]] == [T0 + 5_200]
    assert (await run_once(tmp_path, moto, log_groups=[PROD])).sources["cw"].records == 1
    assert ids(delivered(tmp_path)) == once_each(range(1_000, 1_010), range(1_100, 1_102))


async def run_polls(
    cfg_path: Path, monkeypatch: pytest.MonkeyPatch, after: Callable[[int, Any], Awaitable[bool]]
) -> tuple[Any, Metrics, CheckpointStore]:
    """One collector process in the test's own event loop: the config's store, pipeline and CloudWatch source run
    as the daemon runs them, and `after(n, source)` runs after poll n, in place of the wait for the next poll
    (returning False stops the source). The pipeline is closed at the end; the store is the caller's to close."""
    cfg = parse_config(cfg_path.read_text(), cfg_path)
    store, metrics = CheckpointStore(cfg.state_dir), Metrics()
    pipeline = Pipeline([create_sink(c) for c in cfg.sinks], store, metrics)
    await pipeline.start()
    source = cloudwatch.CloudWatchSource(cfg.sources[0], store, metrics)
    stop = asyncio.Event()
    polls = 0

    async def between_polls(_stop: asyncio.Event, _seconds: float) -> None:
        nonlocal polls
        polls += 1
        if not await after(polls, source):
            stop.set()

    try:
        with monkeypatch.context() as patch:
            patch.setattr(cloudwatch, "sleep_or_stop", between_polls)
            await source.run(pipeline, False, stop)
    finally:
        await pipeline.close()
    return source, metrics, store


class RefusePages(FlakyProxy):
    """The real proxy in front of moto, answering every FilterLogEvents request for a page after the first (those
    carrying a nextToken) with AccessDeniedException while `refusing`: a read that fails half-way, after its first
    page was delivered. Not retried by botocore, so each read fails at once."""

    def __init__(self, upstream: str) -> None:
        super().__init__(upstream, failures=0, json=True)
        self.refusing = True
        self.refused = 0

    async def handle(self, request: Any) -> Any:
        from aiohttp import web

        if self.refusing and b'"nextToken"' in await request.read():
            self.refused += 1
            body = '{"__type": "AccessDeniedException", "message": "injected"}'
            headers = {"x-amzn-ErrorType": "AccessDeniedException"}
            return web.Response(status=400, body=body, content_type="application/x-amz-json-1.1", headers=headers)
        return await super().handle(request)


async def test_a_read_cut_short_stays_in_the_checkpoints_of_the_reads_after_it(
    moto: Moto, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A read fails after its first page (10,000 events) was delivered; the next read delivers a late event older
    than all of them and fails at the same place; then the process stops. The checkpoint the second read left must
    still say what the first one delivered: the restart delivers the remaining 5,000 events, and nothing twice."""
    async with Logs(moto) as logs:
        await logs.put(PROD, "eni-1-all", records(0, 15_000, "123456789010", step=100))  # pages of 10,000 + 5,000
        proxy = RefusePages(moto.endpoint)
        runner, port = await start_proxy(proxy)
        cfg_path = tmp_path / "c.yaml"
        text = config_text(tmp_path, moto, log_groups=[PROD], lookback="2h")
        cfg_path.write_text(text.replace(moto.endpoint, f"http://127.0.0.1:{port}"))

        async def after(poll: int, _source: Any) -> bool:
            if poll == 1:  # a late event, older than every event of the stream, lands between the two reads
                await logs.put(PROD, "eni-1-all", [(T0 - 1_000, accept(99_999, T0 - 1_000))])
            return poll == 1

        try:
            _, metrics, store = await run_polls(cfg_path, monkeypatch, after)
        finally:
            await runner.cleanup()
        position = store.get("cw", f"us-east-1:{PROD}:eni-1-all").position
        store.close()
    assert proxy.refused == 2 and metrics.sources["cw"].records == 10_001
    restart = await run_once(tmp_path, moto, log_groups=[PROD], lookback="2h")  # the crash: a new process
    assert restart.sources["cw"].records == 5_000
    assert ids(delivered(tmp_path)) == once_each(range(15_000), [99_999])
    # The second read's checkpoint: the first read's cut (up to its last event, T0 + 999.9 s), then its own.
    assert position is not None and [c["ts"] for c in position["cuts"]] == [T0 + 999_900, T0 - 1_000]


def test_kept_cuts_drop_only_what_another_covers(caplog: pytest.LogCaptureFixture) -> None:
    """A cut is dropped from a checkpoint only when another covers every event it does (checked against every
    event of a small grid of keys), or past CUTS_KEPT, where the oldest goes and that is logged."""
    import random

    Cut = cloudwatch.Cut
    rng = random.Random(8)
    grid = [(ts, ingest, i) for ts in range(4) for ingest in range(4) for i in "abc"]

    def some_cut() -> Cut:
        ids = rng.choice([None, frozenset(), frozenset("a"), frozenset("ab"), frozenset("abc")])
        return Cut(rng.randrange(4), rng.randrange(4), ids, rng.randrange(4))

    for _ in range(2_000):
        cuts = tuple(some_cut() for _ in range(rng.randrange(4)))
        new = some_cut()
        kept = cloudwatch._kept(cuts, new, "stream")
        for ts, ingest, i in grid:
            before = any(c.covers(ts, ingest, i) for c in (*cuts, new))
            assert before == any(c.covers(ts, ingest, i) for c in kept), (cuts, new, kept, ts, ingest, i)
        assert all(kept.count(c) == 1 for c in kept)
    # None covers another (later keys, older bounds): past CUTS_KEPT the oldest go, said each time.
    cuts: tuple[Cut, ...] = ()
    with caplog.at_level(logging.WARNING, "flowcollector.source.aws_cloudwatch"):
        for k in range(cloudwatch.CUTS_KEPT + 2):
            cuts = cloudwatch._kept(cuts, Cut(k, 0, frozenset("a"), 100 - k), "stream s")
    assert [c.ts for c in cuts] == list(range(2, cloudwatch.CUTS_KEPT + 2))
    assert [r.getMessage() for r in caplog.records] == [
        f"stream s: more than {cloudwatch.CUTS_KEPT} reads in a row cut short; the checkpoint forgets the oldest "
        "(after a crash, what it delivered is delivered again)"
    ] * 2


def test_remembered_ids_forget_by_timestamp_and_never_mix_two_ids() -> None:
    """Against a plain set of (timestamp, id): what is held after adds and forgets, and `keep_from`, the oldest
    timestamp from which at most `share` ids are held, every id of a timestamp or none."""
    import random

    odd = ["007", "7", "0", "", "00", "\u00b2", "7a", "a7", "\u0660", "x" * 300, "1" * 300, "9" * 56, "0" * 56]
    keys = [cloudwatch._id_key(i) for i in odd]
    assert len(set(keys)) == len(odd)  # leading zeros, non-ASCII digits, long ids: all different
    rng = random.Random(2)
    for _ in range(300):
        seen, plain = cloudwatch.RememberedIds(), set()
        for _ in range(rng.randrange(60)):
            ts = T0 + rng.choice([rng.randrange(-90_000, 300_000), 0, 59_999, 60_000])
            event_id = str(rng.randrange(10**55, 10**56))
            seen.add(ts, cloudwatch._id_key(event_id))
            plain.add((ts, event_id))
            if rng.random() < 0.1:
                low = T0 + rng.randrange(-90_000, 300_000)
                seen.forget_before(low)
                plain = {(t, e) for t, e in plain if t >= low}
        assert len(seen) == len(plain)
        assert all(seen.has(t, cloudwatch._id_key(e)) for t, e in plain)
        assert not any(seen.has(t + 1, cloudwatch._id_key(e)) for t, e in plain if (t + 1, e) not in plain)
        share = rng.randrange(len(plain) + 2)
        start = seen.keep_from(share)
        stamps = sorted({t for t, _ in plain})
        fits = [t for t in [*stamps, (stamps[-1] + 1 if stamps else 0)] if sum(u >= t for u, _ in plain) <= share]
        assert start == (None if len(plain) <= share else fits[0])


def test_share_is_max_min_fair() -> None:
    assert cloudwatch._share([10, 10, 200], 100) == 80
    assert cloudwatch._share([10, 10, 200], 20) == 6
    assert cloudwatch._share([1, 2, 3], 100) == 3  # everything fits
    assert cloudwatch._share([], 100) == 100


async def test_remembered_ids_stay_within_the_source_budget(
    moto: Moto, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """With room for 80 ids in all, a stream of 100 events and six of 5 each: the quiet streams keep all their ids,
    the busy one forgets its oldest (logged once, with the instant), and the total never exceeds 80. A late event
    older than the busy stream's remembered ids is still delivered, judged by ingestion time (logged with its
    count), and the events whose ids were forgotten are not delivered again."""
    budget = 80
    monkeypatch.setattr(cloudwatch, "SEEN_PER_SOURCE", budget)
    quiet = [f"eni-q{k}-all" for k in range(6)]
    async with Logs(moto) as logs:
        await logs.put(PROD, "eni-busy-all", records(0, 100, "123456789010"))  # T0 .. T0 + 99 s
        for k, name in enumerate(quiet):  # later than every busy event: read after them in any order
            await logs.put(PROD, name, records(1_000 + 10 * k, 5, "123456789010", t=T0 + 200_000))
        cfg_path = tmp_path / "c.yaml"
        cfg_path.write_text(config_text(tmp_path, moto, log_groups=[PROD]))
        streams: list[Any] = []  # every Stream made (none is dropped in this test)
        most = 0  # the most ids held when one more was about to be taken
        init, take = cloudwatch.Stream.__init__, cloudwatch.Stream.take

        def registering_init(stream: Any, *args: Any) -> None:
            init(stream, *args)
            streams.append(stream)

        def counting_take(stream: Any, *args: Any) -> None:
            nonlocal most
            most = max(most, sum(len(s.seen) for s in streams))
            take(stream, *args)

        monkeypatch.setattr(cloudwatch.Stream, "__init__", registering_init)
        monkeypatch.setattr(cloudwatch.Stream, "take", counting_take)
        state: dict[str, Any] = {}

        async def after(poll: int, source: Any) -> bool:
            assert source.remembered_ids() <= budget
            if poll == 1:
                by_name = {s.name: s for s in source._streams.values()}
                state["floor"] = by_name["eni-busy-all"].floor
                state["held"] = {n: len(s.seen) for n, s in by_name.items()}
                await logs.put(PROD, "eni-busy-all", [(T0 + 10_500, accept(500, T0 + 10_500))])  # below its floor
                await logs.put(PROD, "eni-busy-all", [(T0 + 98_500, accept(501, T0 + 98_500))])  # remembered part
                await logs.put(PROD, quiet[0], [(T0 + 200_500, accept(502, T0 + 200_500))])
            return poll == 1

        with caplog.at_level(logging.INFO, "flowcollector.source.aws_cloudwatch"):
            _, metrics, store = await run_polls(cfg_path, monkeypatch, after)
        store.close()
    quiet_ids = [1_000 + 10 * k + i for k in range(6) for i in range(5)]
    assert ids(delivered(tmp_path)) == once_each(range(100), quiet_ids, [500, 501, 502])
    assert metrics.sources["cw"].records == 133
    assert 0 < most <= budget
    held, floor = state["held"], state["floor"]
    assert {n: held[n] for n in quiet} == dict.fromkeys(quiet, 5)  # under the share: all kept
    # The busy stream holds its newest ids only, all of them from the floor on.
    assert held["eni-busy-all"] < 70 and held["eni-busy-all"] + 30 <= budget
    assert floor == T0 + 1_000 * (100 - held["eni-busy-all"])
    messages = [r.getMessage() for r in caplog.records if r.levelno >= logging.INFO]
    busy_label = f"source credentials region us-east-1 log group {PROD} stream eni-busy-all"
    first = T0 + 11_000  # the first fit, at the 81st id: the newest 70 (7/8 of 80) of the busy stream kept
    assert [m for m in messages if "over their share" in m] == [
        "source=cw remembers at most 80 event ids: streams over their share (70) forget their oldest, and their late "
        "events older than those remembered are judged by ingestion time, as after a restart: "
        f"{busy_label} from {cloudwatch._iso(first)}"
    ]
    assert [m for m in messages if "delivered, judged" in m] == [
        f"source=cw {busy_label}: 1 late events older than the ids remembered (from {cloudwatch._iso(floor)}) "
        "delivered, judged by ingestion time"
    ]


async def test_a_restarted_source_waits_for_the_batches_in_flight(
    moto: Moto, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """Parquet acks only when its file rotates (4 s here, polls every 200 ms). A source stopped after its first
    page of stream A, as a SIGHUP reload stops it, leaves 10 batches in flight and nothing checkpointed; the new
    source object on the same pipeline and store must not read A from that stale checkpoint (Parquet would get
    those batches twice) but wait until they are checkpointed, reading B meanwhile. Parquet holds every event once."""
    monkeypatch.setattr(cloudwatch, "BATCH_EVENTS", 1_000)
    async with Logs(moto) as logs:
        await logs.put(PROD, "eni-a-all", records(0, 25_000, "123456789010", step=100))  # 3 pages
        await logs.put(PROD, "eni-b-all", records(50_000, 100, "123456789010", t=T0 + 2_600_000))  # after A
    sink = (
        f"  - name: p\n    type: file\n    path: {tmp_path}/p\n    format: parquet\n    rotate_interval: 4s\n"
        "    flush_interval: 100ms\n"
    )
    cfg_path = tmp_path / "c.yaml"
    cfg_path.write_text(config_text(tmp_path, moto, sink, log_groups=[PROD]))
    cfg = parse_config(cfg_path.read_text(), cfg_path)
    store, metrics = CheckpointStore(cfg.state_dir), Metrics()
    pipeline = Pipeline([create_sink(c) for c in cfg.sinks], store, metrics, flush_intervals={"p": 0.1})
    await pipeline.start()
    unit_a, unit_b = f"us-east-1:{PROD}:eni-a-all", f"us-east-1:{PROD}:eni-b-all"
    emitted: list[tuple[int, str, int]] = []  # (run, unit, rows) of each batch
    emit, run = pipeline.emit, 1
    stop = asyncio.Event()

    async def recording_emit(delivery: Delivery) -> None:
        await emit(delivery)
        emitted.append((run, delivery.unit, delivery.batch.num_rows))
        if run == 1:
            stop.set()  # the first run stops at the end of the page under way

    monkeypatch.setattr(pipeline, "emit", recording_emit)
    try:
        await cloudwatch.CloudWatchSource(cfg.sources[0], store, metrics).run(pipeline, False, stop)
        assert emitted == [(1, unit_a, 1_000)] * 10 and pipeline.has_pending("cw", unit_a)
        assert store.get("cw", unit_a) is None  # Parquet has acked nothing
        run, stop = 2, asyncio.Event()
        second = cloudwatch.CloudWatchSource(cfg.sources[0], store, metrics)
        with caplog.at_level(logging.INFO, "flowcollector.source.aws_cloudwatch"):
            task = asyncio.create_task(second.run(pipeline, False, stop))
            deadline = time.monotonic() + 60
            while not ((a := store.get("cw", unit_a)) and a.done and a.records == 25_000):
                assert time.monotonic() < deadline and not task.done(), "the second run did not finish A"
                await asyncio.sleep(0.05)
            stop.set()
            await task
    finally:
        await pipeline.close()
    b = store.get("cw", unit_b)
    store.close()
    parquet = collections.Counter(
        i for f in (tmp_path / "p").glob("*.parquet") for i in pq.read_table(f, columns=["bytes"])["bytes"].to_pylist()
    )
    assert parquet == once_each(range(25_000), range(50_000, 50_100))
    assert b is not None and b.done and b.records == 100
    # B first: A waited for its batches in flight (said once), then went on from their checkpoint.
    assert emitted[10] == (2, unit_b, 100)
    assert sum(rows for run, unit, rows in emitted if (run, unit) == (2, unit_a)) == 15_000
    waiting = [r.getMessage() for r in caplog.records if "in flight" in r.getMessage()]
    assert waiting == [
        f"source=cw source credentials region us-east-1 log group {PROD} stream eni-a-all: batches of an earlier "
        "run are still in flight; read once they are checkpointed"
    ]


# -- crashes


def _daemon(cfg: Path, *extra: str) -> subprocess.Popen[bytes]:
    """`flowcollector run` as a subprocess; its log goes to daemon.log beside the config (a pipe nobody reads
    while waiting could fill and block it)."""
    cmd = [sys.executable, "-m", "collector.cli", "run", "-c", str(cfg), *extra]
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    with open(cfg.parent / "daemon.log", "ab") as err:
        return subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=err)


def _finish(cfg: Path) -> str:
    """Run to the end with --once; its log."""
    (cfg.parent / "daemon.log").unlink(missing_ok=True)
    proc = _daemon(cfg, "--once")
    proc.wait(300)
    text = (cfg.parent / "daemon.log").read_text()
    assert proc.returncode == 0, text[-3000:]
    return text


def _query(tmp: Path, sql: str) -> int:
    db = tmp / "state" / "checkpoints.sqlite"
    if not db.exists():
        return 0
    try:
        with sqlite3.connect(db, timeout=1) as c:
            return int(c.execute(sql).fetchone()[0] or 0)
    except sqlite3.Error:
        return 0


def _kill_when(proc: subprocess.Popen[bytes], reached: Callable[[], bool]) -> None:
    deadline = time.monotonic() + 60
    while not reached() and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.01)
    assert proc.poll() is None, "the collector exited before it could be killed"
    assert reached(), "the collector did not get there"
    proc.send_signal(signal.SIGKILL)
    proc.wait(30)


async def test_sigkill_mid_run_then_restart_delivers_every_record_once(moto: Moto, tmp_path: Path) -> None:
    """A real `flowcollector run` daemon killed with SIGKILL twice while it delivers (by checkpointed records), then
    run to the end: every record exactly once in the JSON Lines output."""
    per, streams = 30_000, 3
    async with Logs(moto, A1) as logs:
        for k in range(streams):
            await logs.put(PROD, f"eni-{k}-all", records(k * per, per, A1, eni=f"eni-{k}", step=100))
    cfg = tmp_path / "c.yaml"
    sink = (
        f"  - name: out\n    type: file\n    path: {tmp_path}/out\n    format: jsonl\n    rotate_interval: 1s\n"
        "    flush_interval: 100ms\n"
    )
    cfg.write_text(config_text(tmp_path, moto, sink, accounts=[A1], role_arn=ROLE, log_groups=[PROD]))
    committed = "SELECT SUM(records) FROM units WHERE unit LIKE '%:%'"
    at_kill = []
    for _ in range(2):
        before = _query(tmp_path, committed)
        _kill_when(_daemon(cfg), lambda b=before: _query(tmp_path, committed) > b)
        at_kill.append(_query(tmp_path, committed))
    assert at_kill[-1] < per * streams, "the collector finished before it could be killed: make the input larger"
    _finish(cfg)
    assert ids(delivered(tmp_path)) == once_each(range(per * streams))


async def test_sink_ahead_of_the_checkpoint_skips_exactly_or_gets_the_range_again(moto: Moto, tmp_path: Path) -> None:
    """JSON Lines acks as it goes, Parquet only when a file closes (rotate_interval 1h): a SIGKILL leaves JSON Lines
    ahead of the checkpoint. Read again unchanged, the range JSON Lines holds is skipped for it exactly; with a late
    event landed inside it, it is delivered to it again (duplicates, never a gap); Parquet gets everything once."""
    sinks = (
        f"  - name: j\n    type: file\n    path: {tmp_path}/j\n    format: jsonl\n    flush_interval: 50ms\n"
        f"  - name: p\n    type: file\n    path: {tmp_path}/p\n    format: parquet\n    rotate_interval: 1h\n"
    )
    cfg = tmp_path / "c.yaml"
    cfg.write_text(config_text(tmp_path, moto, sinks, accounts=[A1], role_arn=ROLE, log_groups=[PROD]))
    jsonl_ahead = "SELECT SUM(progress >> 32) FROM sink_units WHERE sink='j'"

    def parquet_ids() -> collections.Counter[int]:
        return collections.Counter(i for f in (tmp_path / "p").glob("*.parquet")
                                   for i in pq.read_table(f, columns=["bytes"]).column("bytes").to_pylist())  # fmt: skip

    async with Logs(moto, A1) as logs:
        await logs.put(PROD, "eni-1-all", records(0, 20_000, A1, step=100))  # T0 .. T0 + 33 min
        _kill_when(_daemon(cfg), lambda: _query(tmp_path, jsonl_ahead) > 0)
        assert _query(tmp_path, "SELECT COUNT(*) FROM units") == 0  # Parquet has acked nothing
        _finish(cfg)
        assert ids(delivered(tmp_path, "j")) == once_each(range(20_000))
        assert parquet_ids() == once_each(range(20_000))

        # Again, and this time an event older than all of the new ones lands before the restart.
        await logs.put(PROD, "eni-1-all", records(50_000, 20_000, A1, t=T0 + 2_400_000, step=50))
        _kill_when(_daemon(cfg), lambda: _query(tmp_path, jsonl_ahead) > 0)
        await logs.put(PROD, "eni-1-all", [(T0 + 2_340_000, accept(99_999, T0 + 2_340_000, A1))])
        err = _finish(cfg)
    want = once_each(range(20_000), range(50_000, 70_000), [99_999])
    assert parquet_ids() == want
    jsonl = ids(delivered(tmp_path, "j"))
    assert set(jsonl) == set(want) and sum(jsonl.values()) > len(want)
    assert "delivered again" in err


async def test_throttling_is_retried(moto: Moto, tmp_path: Path) -> None:
    """CloudWatch Logs' read quotas are low: a 400 ThrottlingException (from a real proxy in front of moto, on the
    first requests: the listings and the first FilterLogEvents) is retried, and every record still arrives once."""
    async with Logs(moto) as logs:
        await logs.put(PROD, "eni-1235b8ca123456789-all", records(1_000, 50, "123456789010"))
    proxy = FlakyProxy(moto.endpoint, failures=3, json=True)
    runner, port = await start_proxy(proxy)
    try:
        cfg = tmp_path / "c.yaml"
        cfg.write_text(
            config_text(tmp_path, moto, log_groups=[PROD]).replace(moto.endpoint, f"http://127.0.0.1:{port}")
        )
        metrics = await run(parse_config(cfg.read_text(), cfg), once=True)
    finally:
        await runner.cleanup()
    assert proxy.failed == 3 and proxy.requests > 3
    assert ids(delivered(tmp_path)) == once_each(range(1_000, 1_050))
    assert (metrics.sources["cw"].units_failed, metrics.sources["cw"].errors) == (0, 0)
