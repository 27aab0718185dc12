"""The `aws_sqs` source against a real moto server.

S3 notifications reach the queue the three ways AWS sends them (directly, through SNS, through EventBridge), and
the objects go through the real pipeline into a JSON Lines `file` sink. Also: a duplicate notification, messages
left in the queue (unreadable object, not a notification, received too often), visibility kept while the sinks
have not committed, rejected credentials, two `flowcollector run` processes sharing one queue, and SIGKILL of a
collector that holds a message.
"""

from __future__ import annotations

import asyncio
import collections
import gzip
import io
import json
import logging
import os
import re
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import boto3
import orjson
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from flowdata import gzip_flows, jsonl_ids, parquet_ids, tally
from services import Moto, Process, _http_ok, free_tcp_port

import adapters.aws.sqs
from adapters.aws.s3io import RemoteReadError
from adapters.aws.sqs import S3Object, SqsSource, decode_message
from collector import daemon
from collector.checkpoints import CheckpointStore
from collector.config import parse_config
from collector.metrics import Metrics
from collector.pipeline import Pipeline
from collector.registry import create_sink

pytestmark = pytest.mark.integration

BUCKET = "flow-logs-bucket"
HEADER = (
    "version account-id interface-id srcaddr dstaddr srcport dstport protocol packets bytes start end action log-status"
)

# Records from the AWS VPC user guide's flow log record examples (flow-logs-records-examples.md; byte for byte as in
# tests/fixtures/conformance/raw/aws/awsdocs-x__default-format-examples.log), with what the collector makes of them.
DOCS_RECORDS = [
    # "Accepted and rejected traffic": SSH accepted
    (
        "2 123456789010 eni-1235b8ca123456789 172.31.16.139 172.31.16.21 20641 22 6 20 4249 1418530010 1418530070 ACCEPT OK",
        {"time_start": "2014-12-14T04:06:50.000Z", "time_end": "2014-12-14T04:07:50.000Z", "account": "123456789010",
         "interface": "eni-1235b8ca123456789", "src_addr": "172.31.16.139", "dst_addr": "172.31.16.21",
         "src_port": 20641, "dst_port": 22, "protocol": 6, "packets": 20, "bytes": 4249, "action": "accept",
         "log_status": "ok"},
    ),
    # "Accepted and rejected traffic": RDP rejected
    (
        "2 123456789010 eni-1235b8ca123456789 172.31.9.69 172.31.9.12 49761 3389 6 20 4249 1418530010 1418530070 REJECT OK",
        {"time_start": "2014-12-14T04:06:50.000Z", "time_end": "2014-12-14T04:07:50.000Z", "account": "123456789010",
         "interface": "eni-1235b8ca123456789", "src_addr": "172.31.9.69", "dst_addr": "172.31.9.12",
         "src_port": 49761, "dst_port": 3389, "protocol": 6, "packets": 20, "bytes": 4249, "action": "reject",
         "log_status": "ok"},
    ),
    # "No data and skipped records": NODATA
    (
        "2 123456789010 eni-1235b8ca123456789 - - - - - - - 1431280876 1431280934 - NODATA",
        {"time_start": "2015-05-10T18:01:16.000Z", "time_end": "2015-05-10T18:02:14.000Z", "account": "123456789010",
         "interface": "eni-1235b8ca123456789", "src_addr": None, "dst_addr": None, "src_port": None, "dst_port": None,
         "protocol": None, "packets": None, "bytes": None, "action": None, "log_status": "nodata"},
    ),
    # "No data and skipped records": SKIPDATA
    (
        "2 123456789010 eni-11111111aaaaaaaaa - - - - - - - 1431280876 1431280934 - SKIPDATA",
        {"time_start": "2015-05-10T18:01:16.000Z", "time_end": "2015-05-10T18:02:14.000Z", "account": "123456789010",
         "interface": "eni-11111111aaaaaaaaa", "src_addr": None, "dst_addr": None, "src_port": None, "dst_port": None,
         "protocol": None, "packets": None, "bytes": None, "action": None, "log_status": "skipdata"},
    ),
    # "Security group and network ACL rules": ICMP ping in, accepted
    (
        "2 123456789010 eni-1235b8ca123456789 203.0.113.12 172.31.16.139 0 0 1 4 336 1432917027 1432917142 ACCEPT OK",
        {"time_start": "2015-05-29T16:30:27.000Z", "time_end": "2015-05-29T16:32:22.000Z", "account": "123456789010",
         "interface": "eni-1235b8ca123456789", "src_addr": "203.0.113.12", "dst_addr": "172.31.16.139",
         "src_port": 0, "dst_port": 0, "protocol": 1, "packets": 4, "bytes": 336, "action": "accept",
         "log_status": "ok"},
    ),
    # "Security group and network ACL rules": the ping's response, rejected by the network ACL
    (
        "2 123456789010 eni-1235b8ca123456789 172.31.16.139 203.0.113.12 0 0 1 4 336 1432917094 1432917142 REJECT OK",
        {"time_start": "2015-05-29T16:31:34.000Z", "time_end": "2015-05-29T16:32:22.000Z", "account": "123456789010",
         "interface": "eni-1235b8ca123456789", "src_addr": "172.31.16.139", "dst_addr": "203.0.113.12",
         "src_port": 0, "dst_port": 0, "protocol": 1, "packets": 4, "bytes": 336, "action": "reject",
         "log_status": "ok"},
    ),
    # "IPv6 traffic": SSH over IPv6
    (
        "2 123456789010 eni-1235b8ca123456789 2001:db8:1234:a100:8d6e:3477:df66:f105 2001:db8:1234:a102:3304:8879:34cf:4071 34892 22 6 54 8855 1477913708 1477913820 ACCEPT OK",
        {"time_start": "2016-10-31T11:35:08.000Z", "time_end": "2016-10-31T11:37:00.000Z", "account": "123456789010",
         "interface": "eni-1235b8ca123456789", "src_addr": "2001:db8:1234:a100:8d6e:3477:df66:f105",
         "dst_addr": "2001:db8:1234:a102:3304:8879:34cf:4071", "src_port": 34892, "dst_port": 22, "protocol": 6,
         "packets": 54, "bytes": 8855, "action": "accept", "log_status": "ok"},
    ),
]  # fmt: skip

# The user guide's "Traffic path" example (version 5 custom format: an S3 download through a gateway endpoint), as
# the two records AWS writes into a Parquet object (INT32 ports/protocol/tcp-flags/traffic-path/version, INT64
# counters and times, strings for the rest; `-` is null; columns named with `_`).
V5_HEADER = (
    "version srcaddr dstaddr srcport dstport protocol start end type packets bytes account-id vpc-id subnet-id "
    "instance-id interface-id region az-id sublocation-type sublocation-id action tcp-flags pkt-srcaddr pkt-dstaddr "
    "pkt-src-aws-service pkt-dst-aws-service traffic-path flow-direction log-status"
)
V5_FIELDS = V5_HEADER.split()
V5_RECORDS = [
    "5 52.95.128.179 10.0.0.71 80 34210 6 1616729292 1616729349 IPv4 14 15044 123456789012 vpc-abcdefab012345678 subnet-aaaaaaaa012345678 i-0c50d5961bcb2d47b eni-1235b8ca123456789 ap-southeast-2 apse2-az3 - - ACCEPT 19 52.95.128.179 10.0.0.71 S3 - - ingress OK",
    "5 10.0.0.71 52.95.128.179 34210 80 6 1616729292 1616729349 IPv4 7 471 123456789012 vpc-abcdefab012345678 subnet-aaaaaaaa012345678 i-0c50d5961bcb2d47b eni-1235b8ca123456789 ap-southeast-2 apse2-az3 - - ACCEPT 3 10.0.0.71 52.95.128.179 - S3 8 egress OK",
]
V5_EXPECTED = [
    {"time_start": "2021-03-26T03:28:12.000Z", "time_end": "2021-03-26T03:29:09.000Z", "account": "123456789012",
     "region": "ap-southeast-2", "zone": "apse2-az3", "vpc": "vpc-abcdefab012345678",
     "subnet": "subnet-aaaaaaaa012345678", "interface": "eni-1235b8ca123456789", "instance": "i-0c50d5961bcb2d47b",
     "src_addr": "52.95.128.179", "dst_addr": "10.0.0.71", "src_port": 80, "dst_port": 34210, "protocol": 6,
     "packets": 14, "bytes": 15044, "action": "accept", "direction": "ingress", "tcp_flags": 19,
     "log_status": "ok", "pkt_src_addr": "52.95.128.179", "pkt_dst_addr": "10.0.0.71", "traffic_path": None},
    {"time_start": "2021-03-26T03:28:12.000Z", "time_end": "2021-03-26T03:29:09.000Z", "account": "123456789012",
     "region": "ap-southeast-2", "zone": "apse2-az3", "vpc": "vpc-abcdefab012345678",
     "subnet": "subnet-aaaaaaaa012345678", "interface": "eni-1235b8ca123456789", "instance": "i-0c50d5961bcb2d47b",
     "src_addr": "10.0.0.71", "dst_addr": "52.95.128.179", "src_port": 34210, "dst_port": 80, "protocol": 6,
     "packets": 7, "bytes": 471, "action": "accept", "direction": "egress", "tcp_flags": 3,
     "log_status": "ok", "pkt_src_addr": "10.0.0.71", "pkt_dst_addr": "52.95.128.179", "traffic_path": 8},
]  # fmt: skip

# Keys as AWS lays flow logs out (FORMATS.md): the plain layout, and the Hive-compatible one, whose `=` (and here a
# space) the S3 event URL-encodes.
KEY_TEXT = (
    "AWSLogs/123456789010/vpcflowlogs/us-east-1/2026/11/22/"
    "123456789010_vpcflowlogs_us-east-1_fl-1234abcd_20261122T0000Z_a1b2c3d4.log.gz"
)
KEY_HIVE = (
    "AWSLogs/aws-account-id=123456789010/aws-service=vpcflowlogs/aws-region=us-east-1/year=2026/month=11/day=22/"
    "123456789010_vpcflowlogs_us-east-1_fl-1234abcd_20261122T0005Z_e5f6 copy.log.gz"
)
KEY_PARQUET = (
    "AWSLogs/123456789012/vpcflowlogs/ap-southeast-2/2021/03/26/"
    "123456789012_vpcflowlogs_ap-southeast-2_fl-5678efgh_20210326T0325Z_0a1b2c3d.parquet"
)


def gz_text(*lines: str) -> bytes:
    return gzip.compress((HEADER + "\n" + "\n".join(lines) + "\n").encode())


def v5_parquet() -> bytes:
    ints32 = {"version", "srcport", "dstport", "protocol", "tcp-flags", "traffic-path"}
    ints64 = {"packets", "bytes", "start", "end"}
    rows = [r.split() for r in V5_RECORDS]
    columns = {}
    for i, name in enumerate(V5_FIELDS):
        values = [None if r[i] == "-" else r[i] for r in rows]
        kind = pa.int32() if name in ints32 else pa.int64() if name in ints64 else pa.string()
        if kind != pa.string():
            values = [None if v is None else int(v) for v in values]
        columns[name.replace("-", "_")] = pa.array(values, kind)
    out = io.BytesIO()
    pq.write_table(pa.table(columns), out)
    return out.getvalue()


# --- AWS side --------------------------------------------------------------------------------------------------


def aws(moto: Moto) -> SimpleNamespace:
    kw = {"endpoint_url": moto.endpoint, "region_name": "us-east-1"}
    return SimpleNamespace(**{name: boto3.client(name, **kw) for name in ("s3", "sqs", "sns", "events")})


def make_queue(c: SimpleNamespace, name: str, **attributes: str) -> tuple[str, str]:
    url = c.sqs.create_queue(QueueName=name, Attributes=attributes)["QueueUrl"]
    arn = c.sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
    return url, arn


def notify_queue(c: SimpleNamespace, bucket: str, queue_arn: str) -> None:
    c.s3.put_bucket_notification_configuration(
        Bucket=bucket,
        NotificationConfiguration={"QueueConfigurations": [{"QueueArn": queue_arn, "Events": ["s3:ObjectCreated:*"]}]},
    )


def depth(c: SimpleNamespace, url: str) -> tuple[int, int]:
    """(visible, in flight) messages of a queue."""
    a = c.sqs.get_queue_attributes(
        QueueUrl=url, AttributeNames=["ApproximateNumberOfMessages", "ApproximateNumberOfMessagesNotVisible"]
    )["Attributes"]
    return int(a["ApproximateNumberOfMessages"]), int(a["ApproximateNumberOfMessagesNotVisible"])


def s3_event(bucket: str, key: str, size: int, etag: str, name: str = "ObjectCreated:Put") -> str:
    """An S3 event notification shaped as the S3 user guide's "Event message structure" (version 2.1), key
    URL-encoded as S3 does ("red flower.jpg" -> "red+flower.jpg")."""
    from urllib.parse import quote_plus

    return json.dumps(
        {
            "Records": [
                {
                    "eventVersion": "2.1",
                    "eventSource": "aws:s3",
                    "awsRegion": "us-east-1",
                    "eventTime": "2026-11-22T00:10:00.000Z",
                    "eventName": name,
                    "userIdentity": {"principalId": "AWS:AROAEXAMPLE:delivery.logs.amazonaws.com"},
                    "requestParameters": {"sourceIPAddress": "192.0.2.1"},
                    "responseElements": {"x-amz-request-id": "C3D13FE58DE4C810", "x-amz-id-2": "FMyUVURIY8/IgAtTv8x"},
                    "s3": {
                        "s3SchemaVersion": "1.0",
                        "configurationId": "flow-logs",
                        "bucket": {
                            "name": bucket,
                            "ownerIdentity": {"principalId": "A3NL1KOZZKExample"},
                            "arn": f"arn:aws:s3:::{bucket}",
                        },
                        "object": {
                            "key": quote_plus(key, safe="/"),
                            "size": size,
                            "eTag": etag,
                            "sequencer": "0055AED6DCD90281E5",
                        },
                    },
                }
            ]
        }
    )


# --- the collector side -------------------------------------------------------------------------------------------


def config_text(tmp: Path, moto: Moto, queue_url: str, *, tag: str = "", **source: Any) -> str:
    """A config with one aws_sqs source and one JSON Lines sink; `source` overrides the source's options."""
    options = {"wait_time": "1s", "visibility_timeout": "30s", **source}
    lines = "".join(f"    {k}: {json.dumps(v) if not isinstance(v, str) else v}\n" for k, v in options.items())
    return f"""
state_dir: {tmp}/state{tag}
progress_interval: 0
sources:
  - name: sqs
    type: aws_sqs
    queue_url: {queue_url}
    endpoint_url: {moto.endpoint}
    region: us-east-1
{lines}sinks:
  - name: j
    type: file
    path: {tmp}/out{tag}
    format: jsonl
    flush_interval: 100ms
    rotate_interval: 1s
"""


async def run_once(tmp: Path, text: str) -> Metrics:
    path = tmp / "config.yaml"
    path.write_text(text)
    return await daemon.run(parse_config(text, path), once=True)


def output(out: Path) -> list[dict[str, Any]]:
    return [orjson.loads(line) for f in sorted(out.glob("*.jsonl")) for line in f.read_bytes().splitlines()]


def pick(rows: list[dict[str, Any]], keys: Any) -> list[str]:
    """Rows cut to `keys`, as sortable JSON: compares multisets of rows field by field."""
    return sorted(json.dumps({k: r[k] for k in keys}, sort_keys=True) for r in rows)


def summary(caplog: pytest.LogCaptureFixture) -> dict[str, int]:
    """The counters of the source's last end-of-run log line."""
    lines = [
        r.getMessage()
        for r in caplog.records
        if r.name == "flowcollector.source.aws_sqs" and " messages=" in r.getMessage()
    ]
    assert lines, "no end-of-run line"
    return {k: int(v) for k, v in (w.split("=") for w in lines[-1].split() if "=" in w and w.split("=")[1].isdigit())}


TEXT_KEYS = list(DOCS_RECORDS[0][1])


# --- tests --------------------------------------------------------------------------------------------------------


async def test_s3_notifications_deliver_every_object_once_then_duplicates_are_skipped(
    moto: Moto, tmp_path: Path, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    caplog.set_level(logging.INFO)
    asked: list[tuple[int, int]] = []  # (messages asked for, messages being read) at each receive
    receive = SqsSource._receive

    async def spy(self: SqsSource, sqs: Any, count: int, once: bool) -> list[dict[str, Any]]:
        asked.append((count, self._busy))
        return await receive(self, sqs, count, once)

    monkeypatch.setattr(SqsSource, "_receive", spy)
    c = aws(moto)
    c.s3.create_bucket(Bucket=BUCKET)
    url, arn = make_queue(c, "flow-log-objects")
    notify_queue(c, BUCKET, arn)  # S3 sends its s3:TestEvent now
    before = time.time()
    bodies = {
        KEY_TEXT: gz_text(*(line for line, _ in DOCS_RECORDS[:4])),
        KEY_HIVE: gz_text(*(line for line, _ in DOCS_RECORDS[4:])),
        KEY_PARQUET: v5_parquet(),
        "exports/2026-11-22/summary.csv": b"not,a,flow,log\n",  # outside key_filter: ignored
    }
    etags = {key: c.s3.put_object(Bucket=BUCKET, Key=key, Body=body)["ETag"] for key, body in bodies.items()}
    after = time.time()

    # What moto queued, decoded: the keys come back from their URL encoding, with size and ETag.
    got = c.sqs.receive_message(QueueUrl=url, MaxNumberOfMessages=10, VisibilityTimeout=0)["Messages"]
    notes = [decode_message(m["Body"]) for m in got]
    assert [n.test for n in notes] == [True, False, False, False, False]
    decoded = {n.objects[0].key: n.objects[0] for n in notes[1:]}
    for key, body in bodies.items():
        obj = decoded[key]
        assert (obj.bucket, obj.key, obj.size, obj.etag, obj.region) == (
            BUCKET, key, len(body), etags[key].strip('"'), "us-east-1"
        )  # fmt: skip
        assert before - 1 <= obj.event_time <= after + 1
    assert '"key": "AWSLogs%2Faws-account-id%3D123456789010%2F' in "".join(m["Body"] for m in got)
    duplicate = next(m["Body"] for m, n in zip(got, notes, strict=True) if not n.test and n.objects[0].key == KEY_TEXT)

    metrics = await run_once(tmp_path, config_text(tmp_path, moto, url, key_filter="AWSLogs/*", max_concurrency=2))

    # Never more messages received than there are free slots: the others stay visible to other collectors.
    assert asked[0] == (2, 0) and all(count + busy <= 2 for count, busy in asked), asked
    rows = output(tmp_path / "out")
    assert pick(rows, TEXT_KEYS) == pick([e for _, e in DOCS_RECORDS] + V5_EXPECTED, TEXT_KEYS)
    assert pick([r for r in rows if r["account"] == "123456789012"], V5_EXPECTED[0]) == pick(
        V5_EXPECTED, V5_EXPECTED[0]
    )
    assert {r["source"] for r in rows} == {"sqs"}
    assert depth(c, url) == (0, 0)  # every message deleted: the TestEvent, the three objects, the ignored one
    s = metrics.sources["sqs"]
    assert (s.units, s.records, s.status_rows, s.units_failed, s.errors) == (3, 9, 2, 0, 0)
    assert before - 1 <= s.newest_object_time <= after + 1
    assert s.bytes_read >= sum(len(b) for k, b in bodies.items() if k.startswith("AWSLogs/"))
    stats = summary(caplog)
    assert (stats["messages"], stats["deleted"], stats["test_events"], stats["ignored"]) == (5, 5, 1, 1)

    # S3 and SQS may both deliver a notification twice: the same real message again is deleted, not read again.
    c.sqs.send_message(QueueUrl=url, MessageBody=duplicate)
    caplog.clear()
    metrics = await run_once(tmp_path, config_text(tmp_path, moto, url, key_filter="AWSLogs/*"))
    assert len(output(tmp_path / "out")) == len(rows)
    assert (metrics.sources["sqs"].units, metrics.sources["sqs"].records) == (0, 0)
    assert depth(c, url) == (0, 0)
    stats = summary(caplog)
    assert (stats["messages"], stats["duplicates"], stats["deleted"]) == (1, 1, 1)


async def test_sns_and_eventbridge_envelopes(moto: Moto, tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO)
    before = time.time()
    c = aws(moto)
    url, arn = make_queue(c, "flow-log-objects")
    # S3 -> SNS -> SQS: the S3 event is the JSON string in the SNS envelope's Message (raw delivery off).
    c.s3.create_bucket(Bucket="via-sns")
    topic = c.sns.create_topic(Name="flow-log-objects")["TopicArn"]
    c.sns.subscribe(TopicArn=topic, Protocol="sqs", Endpoint=arn)
    c.s3.put_bucket_notification_configuration(
        Bucket="via-sns",
        NotificationConfiguration={"TopicConfigurations": [{"TopicArn": topic, "Events": ["s3:ObjectCreated:*"]}]},
    )
    c.s3.put_object(Bucket="via-sns", Key=KEY_HIVE, Body=gz_text(DOCS_RECORDS[0][0]))
    # S3 -> EventBridge -> SQS: a rule on "Object Created" targets the queue; the key is not URL-encoded.
    c.s3.create_bucket(Bucket="via-eventbridge")
    c.s3.put_bucket_notification_configuration(
        Bucket="via-eventbridge", NotificationConfiguration={"EventBridgeConfiguration": {}}
    )
    pattern = {"source": ["aws.s3"], "detail-type": ["Object Created"]}
    c.events.put_rule(Name="flow-log-objects", EventPattern=json.dumps(pattern))
    c.events.put_targets(Rule="flow-log-objects", Targets=[{"Id": "queue", "Arn": arn}])
    c.s3.put_object(Bucket="via-eventbridge", Key="AWSLogs/a b/c=d.log.gz", Body=gz_text(DOCS_RECORDS[1][0]))
    # The S3 user guide's EventBridge "Object created" example as AWS documents it ("etag" in lower case), for an
    # object whose key would change if it were URL-decoded ("+" and "%41").
    c.s3.create_bucket(Bucket="amzn-s3-demo-bucket1")
    put = c.s3.put_object(Bucket="amzn-s3-demo-bucket1", Key="AWSLogs/x+y %41.log.gz", Body=gz_text(DOCS_RECORDS[6][0]))
    docs_event = {
        "version": "0",
        "id": "17793124-05d4-b198-2fde-7ededc63b103",
        "detail-type": "Object Created",
        "source": "aws.s3",
        "account": "111122223333",
        "time": "2021-11-12T00:00:00Z",
        "region": "us-east-1",
        "resources": ["arn:aws:s3:::amzn-s3-demo-bucket1"],
        "detail": {
            "version": "0",
            "bucket": {"name": "amzn-s3-demo-bucket1"},
            "object": {
                "key": "AWSLogs/x+y %41.log.gz",
                "size": len(gz_text(DOCS_RECORDS[6][0])),
                "etag": put["ETag"].strip('"'),
                "version-id": "IYV3p45BT0ac8hjHg1houSdS1a.Mro8e",
                "sequencer": "617f08299329d189",
            },
            "request-id": "N4N7GDK58NMKJ12R",
            "requester": "123456789012",
            "source-ip-address": "1.2.3.4",
            "reason": "PutObject",
        },
    }
    c.sqs.send_message(QueueUrl=url, MessageBody=json.dumps(docs_event))
    # The guide's "Object Deleted" example: an S3 event, but nothing to read: deleted, counted as ignored.
    deleted_event = {**docs_event, "detail-type": "Object Deleted"}
    deleted_event["detail"] = {**docs_event["detail"], "reason": "DeleteObject", "deletion-type": "Permanently Deleted"}
    c.sqs.send_message(QueueUrl=url, MessageBody=json.dumps(deleted_event))
    # An event without ETag and size (trimmed by hand, say): HeadObject supplies them.
    c.s3.put_object(Bucket="amzn-s3-demo-bucket1", Key="AWSLogs/no-etag.log.gz", Body=gz_text(DOCS_RECORDS[4][0]))
    trimmed = {
        **docs_event,
        "detail": {"bucket": {"name": "amzn-s3-demo-bucket1"}, "object": {"key": "AWSLogs/no-etag.log.gz"}},
    }
    c.sqs.send_message(QueueUrl=url, MessageBody=json.dumps(trimmed))

    got = c.sqs.receive_message(QueueUrl=url, MaxNumberOfMessages=10, VisibilityTimeout=0)["Messages"]
    envelopes = collections.Counter(
        (n.envelope, n.test, len(n.objects)) for n in map(decode_message, (m["Body"] for m in got))
    )
    assert envelopes == {
        ("sns", True, 0): 1,  # the SNS-wrapped s3:TestEvent
        ("sns", False, 1): 1,
        ("eventbridge", False, 1): 3,
        ("eventbridge", False, 0): 1,  # Object Deleted
    }
    docs = decode_message(json.dumps(docs_event)).objects[0]
    assert docs == S3Object(
        "amzn-s3-demo-bucket1", "AWSLogs/x+y %41.log.gz", len(gz_text(DOCS_RECORDS[6][0])), put["ETag"].strip('"'),
        "us-east-1", 1636675200.0,
    )  # fmt: skip

    metrics = await run_once(tmp_path, config_text(tmp_path, moto, url))

    rows = output(tmp_path / "out")
    assert pick(rows, TEXT_KEYS) == pick([DOCS_RECORDS[i][1] for i in (0, 1, 4, 6)], TEXT_KEYS)
    assert depth(c, url) == (0, 0)
    assert metrics.sources["sqs"].units == 4
    assert before - 1 <= metrics.sources["sqs"].newest_object_time <= time.time()  # moto's events: put time
    stats = summary(caplog)
    assert (stats["test_events"], stats["ignored"], stats["deleted"]) == (1, 1, 6)


async def test_unreadable_object_and_foreign_messages_are_left_in_the_queue(
    moto: Moto, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    c = aws(moto)
    c.s3.create_bucket(Bucket=BUCKET)
    url, _ = make_queue(c, "flow-log-objects")
    body = gz_text(DOCS_RECORDS[0][0])
    put = c.s3.put_object(Bucket=BUCKET, Key=KEY_TEXT, Body=body)
    c.sqs.send_message(QueueUrl=url, MessageBody=s3_event(BUCKET, KEY_TEXT, len(body), put["ETag"].strip('"')))
    # Announced, but gone (deleted since, or never there): NoSuchKey.
    gone = "AWSLogs/123456789010/vpcflowlogs/us-east-1/2026/11/22/gone now.log.gz"
    c.sqs.send_message(QueueUrl=url, MessageBody=s3_event(BUCKET, gone, 1234, "0123456789abcdef0123456789abcdef"))
    not_json = c.sqs.send_message(QueueUrl=url, MessageBody="hello, world")["MessageId"]
    foreign = c.sqs.send_message(QueueUrl=url, MessageBody='{"alarm": "CPU high"}')["MessageId"]

    metrics = await run_once(tmp_path, config_text(tmp_path, moto, url))

    assert pick(output(tmp_path / "out"), TEXT_KEYS) == pick([DOCS_RECORDS[0][1]], TEXT_KEYS)
    assert depth(c, url) == (0, 3)  # the three others are left, in flight until their visibility timeout
    s = metrics.sources["sqs"]
    assert (s.units, s.units_failed, s.errors) == (1, 1, 2)
    errors = [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]
    assert any(f"s3://{BUCKET}/{gone}" in e and "NoSuchKey" in e for e in errors), errors
    assert any(not_json in e and "not an S3 notification (not JSON)" in e for e in errors), errors
    assert any(foreign in e and "not an S3 notification" in e for e in errors), errors
    assert any(
        f"s3://{BUCKET}/{gone} is retried after the visibility timeout" in r.getMessage() for r in caplog.records
    )


async def test_an_object_replaced_before_it_is_read_is_not_retried(
    moto: Moto, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """The event names the ETag of the version it announces; once replaced, that version cannot be read (HTTP 412)
    and never will be: its message is done. The new version has its own event."""
    caplog.set_level(logging.INFO)
    c = aws(moto)
    c.s3.create_bucket(Bucket=BUCKET)
    url, _ = make_queue(c, "flow-log-objects")
    old, new = gz_text(DOCS_RECORDS[0][0]), gz_text(DOCS_RECORDS[1][0])
    for body in (old, new):
        put = c.s3.put_object(Bucket=BUCKET, Key=KEY_TEXT, Body=body)
        c.sqs.send_message(QueueUrl=url, MessageBody=s3_event(BUCKET, KEY_TEXT, len(body), put["ETag"].strip('"')))

    metrics = await run_once(tmp_path, config_text(tmp_path, moto, url, max_concurrency=1))

    assert pick(output(tmp_path / "out"), TEXT_KEYS) == pick([DOCS_RECORDS[1][1]], TEXT_KEYS)
    assert depth(c, url) == (0, 0)
    assert metrics.sources["sqs"].units == 1
    stats = summary(caplog)
    assert (stats["superseded"], stats["deleted"], stats["left"]) == (1, 2, 0)


async def test_poison_message_is_reported_and_left_for_the_dead_letter_queue(
    moto: Moto, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    c = aws(moto)
    c.s3.create_bucket(Bucket=BUCKET)
    dlq_url, dlq_arn = make_queue(c, "flow-log-objects-dlq")
    # The README's advice: the queue's maxReceiveCount one above the source's max_receive_count, so the collector
    # reports the message once before SQS moves it to the dead-letter queue.
    redrive = json.dumps({"deadLetterTargetArn": dlq_arn, "maxReceiveCount": 3})
    url, _ = make_queue(c, "flow-log-objects", RedrivePolicy=redrive)
    body = gz_text(DOCS_RECORDS[0][0])
    put = c.s3.put_object(Bucket=BUCKET, Key=KEY_HIVE, Body=body)
    event = s3_event(BUCKET, KEY_HIVE, len(body), put["ETag"].strip('"'))
    mid = c.sqs.send_message(QueueUrl=url, MessageBody=event)["MessageId"]
    for _ in range(2):  # two receives that did not finish it (collectors that died, say)
        assert len(c.sqs.receive_message(QueueUrl=url, VisibilityTimeout=0)["Messages"]) == 1

    metrics = await run_once(tmp_path, config_text(tmp_path, moto, url, max_receive_count=2, visibility_timeout="2s"))

    assert output(tmp_path / "out") == []  # not read
    assert depth(c, url) == (0, 1)  # not deleted
    assert (metrics.sources["sqs"].units_failed, metrics.sources["sqs"].units) == (1, 0)
    errors = [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]
    assert any(mid in e and "received 3 times" in e and f"s3://{BUCKET}/{KEY_HIVE}" in e for e in errors), errors
    # Its next receive, by anyone, once the visibility timeout is over, moves it to the dead-letter queue.
    deadline = time.monotonic() + 30
    moved: list[dict[str, Any]] = []
    while not moved and time.monotonic() < deadline:
        assert c.sqs.receive_message(QueueUrl=url, WaitTimeSeconds=1).get("Messages", []) == []
        moved = c.sqs.receive_message(QueueUrl=dlq_url).get("Messages", [])
    assert [(m["MessageId"], m["Body"]) for m in moved] == [(mid, event)]


async def test_visibility_is_extended_until_the_sinks_have_the_object(moto: Moto, tmp_path: Path) -> None:
    """A 1 s visibility timeout, and a sink that acks every 3 s: another consumer polling all along never gets the
    message, which is deleted once the object is committed."""
    c = aws(moto)
    c.s3.create_bucket(Bucket=BUCKET)
    url, arn = make_queue(c, "flow-log-objects")
    body = gz_text(*(line for line, _ in DOCS_RECORDS))
    put = c.s3.put_object(Bucket=BUCKET, Key=KEY_TEXT, Body=body)
    c.sqs.send_message(QueueUrl=url, MessageBody=s3_event(BUCKET, KEY_TEXT, len(body), put["ETag"].strip('"')))
    text = config_text(tmp_path, moto, url, visibility_timeout="1s").replace(
        "flush_interval: 100ms", "flush_interval: 3s"
    )
    run = asyncio.create_task(run_once(tmp_path, text))
    while depth(c, url) != (0, 1):  # received by the collector
        assert not run.done()
        await asyncio.sleep(0.02)
    stolen: list[dict[str, Any]] = []
    done = threading.Event()

    def other_consumer() -> None:
        while not done.is_set():
            stolen.extend(c.sqs.receive_message(QueueUrl=url, WaitTimeSeconds=1).get("Messages", []))

    thief = asyncio.create_task(asyncio.to_thread(other_consumer))
    metrics = await run
    done.set()
    await thief
    assert stolen == []
    assert pick(output(tmp_path / "out"), TEXT_KEYS) == pick([e for _, e in DOCS_RECORDS], TEXT_KEYS)
    assert depth(c, url) == (0, 0)
    assert metrics.sources["sqs"].units == 1


async def test_a_message_redelivered_while_its_first_attempt_is_in_flight_waits_and_resumes(
    moto: Moto, tmp_path: Path, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Issue #8's SQS case. The first attempt at an object fails half-way (a read error after its first batch), so
    its message is left and comes back after the 1 s visibility timeout, while that first batch is still in an open
    Parquet file (rotated every 4 s, so not acked yet). The redelivered message must not read the object from its
    checkpoint (none yet) meanwhile: it waits, held invisible, until the batch is committed, then resumes after it.
    Every record is then exactly once in the Parquet files and in the JSON Lines files, and the message is
    deleted."""
    caplog.set_level(logging.DEBUG, logger="flowcollector")
    c = aws(moto)
    c.s3.create_bucket(Bucket=BUCKET)
    url, _ = make_queue(c, "flow-log-objects")
    total = 200_000  # 4 parse batches, of 2 MiB of gzip each
    body = gzip_flows(1, total)
    put = c.s3.put_object(Bucket=BUCKET, Key=KEY_TEXT, Body=body)
    c.sqs.send_message(QueueUrl=url, MessageBody=s3_event(BUCKET, KEY_TEXT, len(body), put["ETag"].strip('"')))

    opened: list[io.BufferedReader] = []
    real_open = adapters.aws.sqs.open_object

    def failing_once(
        client: Any, bucket: str, key: str, size: int, etag: str | None, loop: asyncio.AbstractEventLoop
    ) -> io.BufferedReader:
        """The first attempt's connection breaks once 2 MiB have been read: after the first batch."""
        fh = real_open(client, bucket, key, size, etag, loop)
        opened.append(fh)
        if len(opened) == 1:
            raw = fh.raw
            read = raw.readinto

            def broken(buffer: Any) -> int:
                if raw.tell() >= 2 << 20:
                    raise RemoteReadError(f"s3://{bucket}/{key}: connection reset at byte {raw.tell()} (injected)")
                return int(read(buffer))

            raw.readinto = broken  # type: ignore[method-assign]
        return fh

    monkeypatch.setattr(adapters.aws.sqs, "open_object", failing_once)
    text = config_text(tmp_path, moto, url, visibility_timeout="1s") + (
        f"  - {{name: p, type: file, path: {tmp_path}/parquet, format: parquet, flush_interval: 100ms,"
        " rotate_interval: 4s}\n"
    )
    config = parse_config(text, tmp_path / "config.yaml")
    store = CheckpointStore(config.state_dir)
    metrics = Metrics()
    sinks = [create_sink(s) for s in config.sinks]
    pipeline = Pipeline(sinks, store, metrics, flush_intervals={s.name: s.flush_interval for s in config.sinks})
    await pipeline.start()
    source = SqsSource(config.sources[0], store, metrics)
    stop = asyncio.Event()
    task = asyncio.create_task(source.run(pipeline, False, stop))
    try:
        async with asyncio.timeout(60):
            while source.stats.deleted < 1:
                assert not task.done(), task
                await asyncio.sleep(0.05)
    finally:
        stop.set()
        await task
        await pipeline.close()
        store.close()

    expected = range(1, total + 1)
    assert tally(parquet_ids(tmp_path / "parquet"), expected) == (total, 0, total)
    assert tally(jsonl_ids(tmp_path / "out"), expected) == (total, 0, total)
    assert depth(c, url) == (0, 0)
    s = source.stats
    assert (s.messages, s.left, s.deleted) == (2, 1, 1)
    # Two reads: the one that broke, and the redelivery's once the first batch was committed, from after it.
    assert len(opened) == 2
    assert metrics.sources["sqs"].records == total
    logged = [r.getMessage() for r in caplog.records if r.name == "flowcollector.source.aws_sqs"]
    assert [m for m in logged if "connection reset" in m and "cannot be read" in m]
    deferred = [i for i, m in enumerate(logged) if m.endswith("an earlier read is still in flight; deferred")]
    resumed = [i for i, m in enumerate(logged) if f"unit=s3://{BUCKET}/{KEY_TEXT} resuming at offset=" in m]
    assert len(deferred) == 1 and len(resumed) == 1 and deferred[0] < resumed[0]


async def test_rejected_credentials_are_reported_with_the_queue_and_retried(
    moto: Moto, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A moto server that checks credentials (INITIAL_NO_AUTH_ACTION_COUNT=0) rejects the dummy keys with 403."""
    port = free_tcp_port()
    env = {**os.environ, "INITIAL_NO_AUTH_ACTION_COUNT": "0"}
    exe = str(Path(sys.executable).parent / "moto_server")
    proc = Process("moto_server (auth)", [exe, "-H", "127.0.0.1", "-p", str(port)], tmp_path / "moto.log", env)
    try:
        endpoint = f"http://127.0.0.1:{port}"
        assert proc.wait_until(lambda: _http_ok(f"{endpoint}/moto-api/"), timeout=30), proc.describe()
        url = f"{endpoint}/123456789012/flow-log-objects"
        config = parse_config(config_text(tmp_path, moto, url).replace(moto.endpoint, endpoint), tmp_path / "c.yaml")
        store = CheckpointStore(tmp_path / "state")
        source = SqsSource(config.sources[0], store, Metrics())
        stop = asyncio.Event()
        caplog.set_level(logging.INFO)

        def rejected() -> list[str]:
            return [r.getMessage() for r in caplog.records if "CREDENTIALS REJECTED" in r.getMessage()]

        task = asyncio.create_task(source.run(None, False, stop))  # type: ignore[arg-type] -- never reaches it
        while len(rejected()) < 2:
            assert not task.done(), task
            await asyncio.sleep(0.05)
        stop.set()
        await task  # returns: a rejected credential is not a crash
        first, second = rejected()[:2]
        assert url in first and "403" in first and first.endswith("retrying in 1s")
        assert second.endswith("retrying in 2s")
        assert source.stats.receive_errors >= 2
        # --once gives up after reporting it.
        caplog.clear()
        await SqsSource(config.sources[0], store, Metrics()).run(None, True, asyncio.Event())  # type: ignore[arg-type]
        assert rejected()[-1].endswith("giving up (--once)")
        store.close()
    finally:
        proc.stop()


# --- collectors as processes ---------------------------------------------------------------------------------------

GEN = "2 123456789010 eni-1235b8ca123456789 172.31.16.139 172.31.16.21 {port} 22 6 20 {rid} 1418530010 1418530070 ACCEPT OK"


def generated(first: int, count: int) -> bytes:
    """The guide's accepted-SSH record, its `bytes` field a unique id (so loss and duplication can be counted)."""
    lines = [GEN.format(port=1024 + i % 60000, rid=first + i) for i in range(count)]
    return gzip.compress((HEADER + "\n" + "\n".join(lines) + "\n").encode(), 1)


def ids(out: Path) -> collections.Counter[int]:
    """How often each record id (its `bytes`) is in a collector's output; a regex, as a million JSON rows would
    take seconds to load."""
    found: collections.Counter[int] = collections.Counter()
    for f in out.glob("*.jsonl"):
        found.update(map(int, re.findall(rb'"bytes":(\d+)', f.read_bytes())))
    return found


def collector(cfg: Path, *extra: str) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [sys.executable, "-m", "collector.cli", "run", "-c", str(cfg), *extra],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )


def write_config(tmp: Path, moto: Moto, url: str, tag: str, **source: Any) -> Path:
    cfg = tmp / f"config{tag}.yaml"
    cfg.write_text(config_text(tmp, moto, url, tag=tag, **source))
    return cfg


def unit_rows(state: Path) -> dict[str, tuple[int, int]]:
    """unit -> (done, records) in a collector's checkpoint store."""
    db = state / "checkpoints.sqlite"
    if not db.exists():
        return {}
    try:
        with sqlite3.connect(db, timeout=1) as conn:
            return {u: (d, r) for u, d, r in conn.execute("SELECT unit, done, records FROM units")}
    except sqlite3.Error:
        return {}


def wait_for(what: str, ready: Any, procs: list[subprocess.Popen[bytes]], timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while not ready():
        for p in procs:
            if p.poll() is not None:
                err = p.stderr.read().decode() if p.stderr else ""
                raise AssertionError(f"collector exited ({p.returncode}) before {what}: {err[-3000:]}")
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.02)


@pytest.fixture
def procs() -> Iterator[list[subprocess.Popen[bytes]]]:
    started: list[subprocess.Popen[bytes]] = []
    yield started
    for p in started:
        if p.poll() is None:
            p.kill()
        p.wait()


def test_two_collectors_share_one_queue_and_deliver_every_record_once(
    moto: Moto, tmp_path: Path, procs: list[subprocess.Popen[bytes]]
) -> None:
    c = aws(moto)
    c.s3.create_bucket(Bucket=BUCKET)
    url, arn = make_queue(c, "flow-log-objects")
    notify_queue(c, BUCKET, arn)
    objects, per_object = 16, 20_000
    for n in range(objects):
        c.s3.put_object(
            Bucket=BUCKET, Key=f"AWSLogs/obj {n:02d}.log.gz", Body=generated(n * per_object + 1, per_object)
        )
    # One object at a time each: neither can take the whole queue before the other starts.
    cfgs = [write_config(tmp_path, moto, url, tag, max_concurrency=1) for tag in ("-a", "-b")]
    procs += [collector(cfg, "--once") for cfg in cfgs]
    for p in procs:
        _, err = p.communicate(timeout=120)
        assert p.returncode == 0, err.decode()[-3000:]

    a, b = ids(tmp_path / "out-a"), ids(tmp_path / "out-b")
    assert a and b, "one collector took every object: the queue did not share the work"
    assert not set(a) & set(b)
    union = a + b
    assert set(union) == set(range(1, objects * per_object + 1))
    assert max(union.values()) == 1
    units = [unit_rows(tmp_path / f"state{tag}") for tag in ("-a", "-b")]
    assert sorted(units[0] | units[1]) == sorted(f"{BUCKET}/AWSLogs/obj {n:02d}.log.gz" for n in range(objects))
    assert all(row == (1, per_object) for u in units for row in u.values())
    assert depth(c, url) == (0, 0)


def test_sigkill_while_holding_a_message(moto: Moto, tmp_path: Path, procs: list[subprocess.Popen[bytes]]) -> None:
    """Collector A is killed twice while reading a large object (3 s visibility timeout: the message comes back).
    The first time A itself (same state) gets it back: it resumes from its checkpoint, and the JSON Lines sink cuts
    its file back to what was recorded, so the object lands exactly once. The second time collector B (its own
    state) gets it and reads it from the start: the duplicates are exactly the part A had delivered, and nothing of
    any other object is repeated or lost."""
    c = aws(moto)
    c.s3.create_bucket(Bucket=BUCKET)
    url, arn = make_queue(c, "flow-log-objects")
    notify_queue(c, BUCKET, arn)
    big = 600_000
    x1, x2 = f"{BUCKET}/AWSLogs/big-1.log.gz", f"{BUCKET}/AWSLogs/big-2.log.gz"
    cfg_a = write_config(tmp_path, moto, url, "-a", visibility_timeout="3s", max_concurrency=1)
    cfg_b = write_config(tmp_path, moto, url, "-b", visibility_timeout="3s")
    state_a = tmp_path / "state-a"

    def reading(unit: str) -> bool:
        done, records = unit_rows(state_a).get(unit, (0, 0))
        return records > 0 or bool(done)

    # 1. A is killed mid-object, restarted on its own state, and resumes.
    c.s3.put_object(Bucket=BUCKET, Key="AWSLogs/big-1.log.gz", Body=generated(1, big))
    procs.append(collector(cfg_a))
    wait_for("A to commit part of the first object", lambda: reading(x1), procs)
    procs[-1].send_signal(signal.SIGKILL)
    procs[-1].wait()
    assert unit_rows(state_a)[x1][0] == 0, "A finished the object before the kill: make it larger"
    procs.append(collector(cfg_a))
    wait_for("A to finish the first object", lambda: unit_rows(state_a).get(x1, (0, 0))[0] == 1, procs[-1:])

    # 2. A is killed mid-object again; B, with its own state, gets the message after the visibility timeout.
    c.s3.put_object(Bucket=BUCKET, Key="AWSLogs/big-2.log.gz", Body=generated(big + 1, big))
    wait_for("A to commit part of the second object", lambda: reading(x2), procs[-1:])
    procs[-1].send_signal(signal.SIGKILL)
    procs[-1].wait()
    done, committed = unit_rows(state_a)[x2]
    assert done == 0, "A finished the object before the kill: make it larger"
    small = [(f"AWSLogs/small {n}.log.gz", 2 * big + 1 + n * 1000) for n in range(6)]
    for key, first in small:
        c.s3.put_object(Bucket=BUCKET, Key=key, Body=generated(first, 1000))
    procs.append(collector(cfg_b))
    b_done = {x2, *(f"{BUCKET}/{key}" for key, _ in small)}
    wait_for(
        "B to deliver the rest",
        lambda: {u for u, r in unit_rows(tmp_path / "state-b").items() if r[0]} >= b_done,
        procs[-1:],
    )
    wait_for("the queue to empty", lambda: depth(c, url) == (0, 0), procs[-1:])
    procs[-1].send_signal(signal.SIGTERM)
    _, err = procs[-1].communicate(timeout=60)
    assert procs[-1].returncode == 0, err.decode()[-3000:]
    # A once more, to settle its output files after the kill (what its sink recorded is published, the rest cut).
    final = collector(cfg_a, "--once")
    procs.append(final)
    _, err = final.communicate(timeout=60)
    assert final.returncode == 0, err.decode()[-3000:]

    a, b = ids(tmp_path / "out-a"), ids(tmp_path / "out-b")
    everything = set(range(1, 2 * big + 1)) | {first + i for _, first in small for i in range(1000)}
    assert set(a + b) == everything  # nothing lost
    # First object: A alone, exactly once (the in-flight batches after the checkpoint were cut back and redone).
    assert all(a[i] == 1 and i not in b for i in range(1, big + 1))
    # Second object: all of it in B once; in A, the prefix A had delivered when it was killed, at least what its
    # checkpoint recorded, and never all of it. Those are the only duplicates.
    assert all(b[i] == 1 for i in range(big + 1, 2 * big + 1))
    prefix = sorted(i for i in a if i > big)
    delivered = len(prefix)
    assert prefix == list(range(big + 1, big + 1 + delivered)) and all(a[i] == 1 for i in prefix)
    assert committed <= delivered < big
    assert sum((a + b).values()) - len(everything) == delivered
