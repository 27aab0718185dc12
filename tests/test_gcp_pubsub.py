"""The `gcp_pubsub` source against Google's Pub/Sub emulator (and fake-gcs-server for Cloud Storage notifications).

Both message shapes go through the real pipeline into a JSON Lines `file` sink: LogEntry messages (a log sink's
topic: many messages, one batch) and Cloud Storage OBJECT_FINALIZE notifications (the object is read). Also:
duplicates, other events, poison messages (counted, not acked, handed out again only after `retry_after`, then
dead-lettered), a subscription that does not exist, two collector processes sharing one subscription, and SIGKILL
of a collector holding messages.

Where the records come from: the LogEntries are written from Google's record format page
(https://cloud.google.com/vpc/docs/about-flow-logs-records: connection, reporter, InstanceDetails, VpcDetails,
GeographicDetails) and Cloud Logging's LogEntry (insertId, logName, resource.labels of gce_subnetwork), int64
fields as JSON strings as Cloud Logging writes them; the ICMP one is payload 4 of obsrvbl-oss/gcp-flowlogs-reader's
SAMPLE_PAYLOADS (tests/fixtures/conformance/SOURCES.md) wrapped in such a LogEntry. A Cloud Storage notification is
what https://cloud.google.com/storage/docs/pubsub-notifications documents: attributes eventType, bucketId,
objectId, objectGeneration, payloadFormat=JSON_API_V1, and the object's metadata as the body.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import json
import logging
import re
import signal
import sqlite3
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, NamedTuple

import orjson
import pytest
from google.cloud import pubsub_v1
from services import FakeGcs, PubSubEmulator

from collector import daemon
from collector.config import parse_config
from collector.metrics import Metrics

pytestmark = pytest.mark.integration

PROJECT = "flow-project"
PREFIX = "compute.googleapis.com/vpc_flows/"


def ts(*args: int, ms: int = 0) -> str:
    """A time as the JSON Lines sink writes it."""
    return datetime(*args, microsecond=ms * 1000, tzinfo=UTC).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"


def log_entry(payload: dict[str, Any], insert_id: str, project: str = "web-prod") -> dict[str, Any]:
    return {
        "insertId": insert_id,
        "jsonPayload": payload,
        "logName": f"projects/{project}/logs/compute.googleapis.com%2Fvpc_flows",
        "receiveTimestamp": "2024-06-01T12:00:31.123456789Z",
        "resource": {
            "labels": {
                "location": "us-central1-a",
                "project_id": project,
                "subnetwork_id": "4455",
                "subnetwork_name": "web-subnet",
            },
            "type": "gce_subnetwork",
        },
        "timestamp": "2024-06-01T12:00:31.1Z",
    }


# A VM in web-prod reporting its egress connection to a public address.
EGRESS = log_entry(
    {
        "bytes_sent": "1020",
        "connection": {"dest_ip": "203.0.113.9", "dest_port": 443, "protocol": 6, "src_ip": "10.128.0.7", "src_port": 51234},
        "dest_location": {"city": "Mountain View", "continent": "America", "country": "usa", "region": "California"},
        "end_time": "2024-06-01T12:00:05.123456789Z",
        "packets_sent": "20",
        "reporter": "SRC",
        "rtt_msec": "61",
        "src_instance": {"project_id": "web-prod", "region": "us-central1", "vm_name": "web-1", "zone": "us-central1-a"},
        "src_vpc": {"project_id": "web-prod", "subnetwork_name": "web-subnet", "vpc_name": "prod-vpc"},
        "start_time": "2024-06-01T12:00:00.000999999Z",
    },
    "egress-1",
)  # fmt: skip
# The same VM reporting an SSH connection it received (counters as floats in strings, as some exports have them).
INGRESS = log_entry(
    {
        "bytes_sent": "3389.0",
        "connection": {"dest_ip": "10.128.0.7", "dest_port": 22, "protocol": 6, "src_ip": "198.51.100.75", "src_port": 49444},
        "dest_instance": {"project_id": "web-prod", "region": "us-central1", "vm_name": "web-1", "zone": "us-central1-a"},
        "dest_vpc": {"project_id": "web-prod", "subnetwork_name": "web-subnet", "vpc_name": "prod-vpc"},
        "disposition": "ALLOWED",
        "end_time": "2024-06-01T12:01:00Z",
        "packets_sent": "7",
        "reporter": "DEST",
        "start_time": "2024-06-01T12:00:30.5Z",
    },
    "ingress-1",
)  # fmt: skip
# SAMPLE_PAYLOADS[3] of gcp-flowlogs-reader: ICMP, no ports, no start_time.
ICMP = log_entry(
    {
        "bytes_sent": "1020",
        "connection": {"dest_ip": "192.0.2.3", "protocol": 1.0, "src_ip": "192.0.2.2"},
        "end_time": "2018-04-03T13:48:33.937764566Z",
        "packets_sent": "20",
        "reporter": "SRC",
        "src_instance": {"project_id": "yoyodyne-102010", "region": "us-west1", "vm_name": "vm-instance-01", "zone": "us-west1-a"},
        "src_vpc": {"project_id": "yoyodyne-102010", "subnetwork_name": "yoyo-vpc-1", "vpc_name": "yoyo-vpc-1"},
        "dest_instance": {"project_id": "yoyodyne-102010", "region": "us-west1", "vm_name": "vm-instance-02", "zone": "us-west1-a"},
        "dest_vpc": {"project_id": "yoyodyne-102010", "subnetwork_name": "yoyo-vpc-1", "vpc_name": "yoyo-vpc-1"},
    },
    "icmp-1",
    project="yoyodyne-102010",
)  # fmt: skip
# A project the source is not told to keep (an organisation-level sink publishes every project).
OTHER_PROJECT = log_entry(
    {**EGRESS["jsonPayload"], "src_instance": {**EGRESS["jsonPayload"]["src_instance"], "project_id": "sandbox-7"},
     "src_vpc": {**EGRESS["jsonPayload"]["src_vpc"], "project_id": "sandbox-7"}},
    "other-1",
    project="sandbox-7",
)  # fmt: skip

EXPECTED = {
    "egress-1": {
        "time_start": ts(2024, 6, 1, 12, 0, 0, ms=0), "time_end": ts(2024, 6, 1, 12, 0, 5, ms=123),
        "provider": "gcp", "account": "web-prod", "region": "us-central1", "zone": "us-central1-a",
        "vpc": "prod-vpc", "subnet": "web-subnet", "interface": "web-1", "instance": "web-1",
        "src_addr": "10.128.0.7", "dst_addr": "203.0.113.9", "src_port": 51234, "dst_port": 443, "protocol": 6,
        "packets": 20, "bytes": 1020, "action": None, "direction": "egress", "reporter": "SRC", "log_status": None,
    },
    "ingress-1": {
        "time_start": ts(2024, 6, 1, 12, 0, 30, ms=500), "time_end": ts(2024, 6, 1, 12, 1, 0),
        "provider": "gcp", "account": "web-prod", "region": "us-central1", "zone": "us-central1-a",
        "vpc": "prod-vpc", "subnet": "web-subnet", "interface": "web-1", "instance": "web-1",
        "src_addr": "198.51.100.75", "dst_addr": "10.128.0.7", "src_port": 49444, "dst_port": 22, "protocol": 6,
        "packets": 7, "bytes": 3389, "action": "accept", "direction": "ingress", "reporter": "DEST",
        "log_status": None,
    },
    "icmp-1": {
        "time_start": None, "time_end": ts(2018, 4, 3, 13, 48, 33, ms=937),
        "provider": "gcp", "account": "yoyodyne-102010", "region": "us-west1", "zone": "us-west1-a",
        "vpc": "yoyo-vpc-1", "subnet": "yoyo-vpc-1", "interface": "vm-instance-01", "instance": "vm-instance-01",
        "src_addr": "192.0.2.2", "dst_addr": "192.0.2.3", "src_port": None, "dst_port": None, "protocol": 1,
        "packets": 20, "bytes": 1020, "action": None, "direction": "egress", "reporter": "SRC", "log_status": None,
    },
}  # fmt: skip
KEYS = list(EXPECTED["egress-1"])


def body(entry: dict[str, Any]) -> bytes:
    return json.dumps(entry, separators=(",", ":")).encode()


# --- the emulator side -----------------------------------------------------------------------------------------


class Sub(NamedTuple):
    topic: str
    subscription: str
    dead_letter: str | None  # a subscription on the dead-letter topic, when there is one


def clients() -> tuple[pubsub_v1.PublisherClient, pubsub_v1.SubscriberClient]:
    """Clients of the emulator PUBSUB_EMULATOR_HOST names (the `pubsub` fixture sets it)."""
    batching = pubsub_v1.types.BatchSettings(max_messages=1000, max_latency=0.01)
    return pubsub_v1.PublisherClient(batch_settings=batching), pubsub_v1.SubscriberClient()


def make_subscription(tag: str, *, ack_deadline: int = 10, max_delivery_attempts: int | None = None) -> Sub:
    """A fresh topic and subscription (the emulator keeps both for the session: every test names its own)."""
    pub, sub = clients()
    name = f"{tag}-{uuid.uuid4().hex[:8]}"
    topic, subscription = f"projects/{PROJECT}/topics/{name}", f"projects/{PROJECT}/subscriptions/{name}"
    pub.create_topic(name=topic)
    request: dict[str, Any] = {"name": subscription, "topic": topic, "ack_deadline_seconds": ack_deadline}
    dead = None
    if max_delivery_attempts is not None:
        dead_topic = f"{topic}-dead"
        dead = f"{subscription}-dead"
        pub.create_topic(name=dead_topic)
        sub.create_subscription(name=dead, topic=dead_topic)
        request["dead_letter_policy"] = {
            "dead_letter_topic": dead_topic,
            "max_delivery_attempts": max_delivery_attempts,
        }
    sub.create_subscription(request=request)
    return Sub(topic, subscription, dead)


def publish(topic: str, bodies: list[bytes], attributes: list[dict[str, str]] | None = None) -> list[str]:
    pub, _ = clients()
    futures = [pub.publish(topic, b, **(attributes[i] if attributes else {})) for i, b in enumerate(bodies)]
    return [f.result() for f in futures]


def pull_now(subscription: str, wait: float = 1.0) -> list[Any]:
    """What the subscription hands out within `wait` seconds (acked at once: the caller sees each message once)."""
    from google.api_core.exceptions import DeadlineExceeded

    _, sub = clients()
    try:
        response = sub.pull(subscription=subscription, max_messages=1000, timeout=max(wait, 0.5))
    except DeadlineExceeded:
        return []
    messages = list(response.received_messages)
    if messages:
        sub.acknowledge(subscription=subscription, ack_ids=[m.ack_id for m in messages])
    return messages


# --- Cloud Storage (fake-gcs-server: the `fake_gcs` fixture) -----------------------------------------------------


def upload(gcs: FakeGcs, bucket: str, name: str, data: bytes) -> Any:
    client = gcs.client()
    b = client.bucket(bucket)
    if not b.exists():
        client.create_bucket(bucket)
    blob = b.blob(name)
    blob.upload_from_string(data, content_type="application/json")
    blob.reload()
    return blob


def notification(blob: Any, event: str = "OBJECT_FINALIZE") -> tuple[bytes, dict[str, str]]:
    """A Cloud Storage notification of `blob` as GCS publishes it (JSON_API_V1: the object's metadata as body)."""
    meta = {
        "kind": "storage#object",
        "bucket": blob.bucket.name,
        "name": blob.name,
        "generation": str(blob.generation),
        "size": str(blob.size),
        "contentType": blob.content_type,
    }
    attributes = {
        "eventType": event,
        "bucketId": blob.bucket.name,
        "objectId": blob.name,
        "objectGeneration": str(blob.generation),
        "payloadFormat": "JSON_API_V1",
        "notificationConfig": f"projects/_/buckets/{blob.bucket.name}/notificationConfigs/1",
        "eventTime": "2024-06-01T12:05:00.000000Z",
    }
    return json.dumps(meta).encode(), attributes


# --- the collector side -----------------------------------------------------------------------------------------


def config_text(tmp: Path, pubsub: PubSubEmulator, subscription: str, *, tag: str = "", **source: Any) -> str:
    """A config with one gcp_pubsub source and one JSON Lines sink; `source` overrides the source's options."""
    options = {"wait_time": "2s", "ack_deadline": "10s", **source}
    lines = "".join(f"    {k}: {json.dumps(v) if not isinstance(v, str) else v}\n" for k, v in options.items())
    return f"""
state_dir: {tmp}/state{tag}
progress_interval: 0
sources:
  - name: ps
    type: gcp_pubsub
    subscription: {subscription}
    endpoint: {pubsub.endpoint}
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


def by_insert_id(rows: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    found: dict[str, dict[str, Any]] = {}
    for r in rows:
        key = r["extra"]["insertId"]
        assert key not in found, f"{key} delivered twice"
        found[key] = {k: r[k] for k in KEYS}
    return found


def summary(caplog: pytest.LogCaptureFixture) -> dict[str, int]:
    """The counters of the source's last end-of-run log line."""
    lines = [
        r.getMessage()
        for r in caplog.records
        if r.name == "flowcollector.source.gcp_pubsub" and " messages=" in r.getMessage()
    ]
    assert lines, "no end-of-run line"
    return {k: int(v) for k, v in (w.split("=") for w in lines[-1].split() if "=" in w and w.split("=")[1].isdigit())}


def batch_rows(state: Path) -> list[str]:
    with sqlite3.connect(state / "checkpoints.sqlite") as conn:
        return [u for (u,) in conn.execute("SELECT unit FROM units WHERE unit LIKE 'messages:%'")]


# --- tests --------------------------------------------------------------------------------------------------------


async def test_log_entries_are_delivered_in_one_batch_and_acked_once_committed(
    pubsub: PubSubEmulator, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    s = make_subscription("entries")
    bodies = [body(EGRESS), body(INGRESS), body(ICMP), body(OTHER_PROJECT)]
    ids = publish(s.topic, bodies)

    text = config_text(tmp_path, pubsub, s.subscription, projects=["web-prod", "yoyodyne-102010"])
    metrics = await run_once(tmp_path, text)

    rows = output(tmp_path / "out")
    assert by_insert_id(rows) == EXPECTED  # sandbox-7 left out by `projects`
    egress = next(r for r in rows if r["extra"]["insertId"] == "egress-1")
    assert egress["source"] == "ps"
    assert egress["extra"]["rtt_msec"] == "61"
    assert egress["extra"]["resource.labels.subnetwork_id"] == "4455"
    stats = summary(caplog)
    assert {k: stats[k] for k in ("messages", "acked", "entries", "batches", "poison", "duplicates")} == {
        "messages": 4, "acked": 4, "entries": 4, "batches": 1, "poison": 0, "duplicates": 0,
    }  # fmt: skip
    c = metrics.sources["ps"]
    assert (c.records, c.errors, c.units, c.units_failed) == (3, 0, 1, 0)
    assert batch_rows(tmp_path / "state") == []  # the batch's row goes once its messages are acked
    # Acked: nothing comes back, even after the subscription's 10 s deadline.
    assert pull_now(s.subscription, wait=12) == []
    assert len(ids) == 4


class Running(NamedTuple):
    source: Any
    task: asyncio.Task[None]


@contextlib.asynccontextmanager
async def running_source(tmp: Path, text: str) -> Any:
    """The source run as a daemon (not --once) in this process, with a real pipeline; stopped on exit."""
    from adapters.gcp.pubsub import PubSubSource
    from collector.checkpoints import CheckpointStore
    from collector.pipeline import Pipeline
    from collector.registry import create_sink

    config = parse_config(text, tmp / "config.yaml")
    store = CheckpointStore(config.state_dir)
    metrics = Metrics()
    sinks = [create_sink(s) for s in config.sinks]
    pipeline = Pipeline(sinks, store, metrics, flush_intervals={s.name: s.flush_interval for s in config.sinks})
    await pipeline.start()
    source = PubSubSource(config.sources[0], store, metrics)
    stop = asyncio.Event()
    task = asyncio.create_task(source.run(pipeline, False, stop))
    try:
        yield Running(source, task)
    finally:
        stop.set()
        await task
        await pipeline.close()
        store.close()


async def until(what: str, ready: Any, task: asyncio.Task[None] | None = None, timeout: float = 90) -> None:
    async with asyncio.timeout(timeout):
        while not ready():
            assert task is None or not task.done(), f"the source ended before {what}: {task}"
            await asyncio.sleep(0.05)


async def test_poison_messages_are_counted_not_acked_and_dead_lettered_without_a_tight_loop(
    pubsub: PubSubEmulator, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Two bodies that are no flow record (broken JSON; a port of 70000) among a good one. Each is logged with its
    message id and delivery attempt, counted, and never acked; it comes back only after `retry_after` (its ack
    deadline is set to it: no nack, which would hand it out again at once), and after the subscription's 5
    delivery attempts Pub/Sub moves it to the dead-letter topic."""
    caplog.set_level(logging.INFO, logger="flowcollector")
    s = make_subscription("poison", max_delivery_attempts=5)
    bad_port = json.loads(body(EGRESS))
    bad_port["jsonPayload"]["connection"]["dest_port"] = 70000
    good, broken, port = publish(s.topic, [body(EGRESS), b'{"jsonPayload": {"connection": ', body(bad_port)])
    assert s.dead_letter is not None
    dead: list[Any] = []
    async with running_source(tmp_path, config_text(tmp_path, pubsub, s.subscription, retry_after="1s")) as run:
        await until("both poison messages to be dead-lettered", lambda: dead.extend(pull_now(s.dead_letter, 0)) or len(dead) == 2, run.task)  # fmt: skip
        stats = run.source.stats

    assert [r["extra"]["insertId"] for r in output(tmp_path / "out")] == ["egress-1"]
    # The dead-letter topic republishes them (new message ids), the source subscription's delivery count attached.
    assert sorted(m.message.data for m in dead) == sorted([b'{"jsonPayload": {"connection": ', body(bad_port)])
    assert {m.message.attributes["CloudPubSubDeadLetterSourceDeliveryCount"] for m in dead} == {"5"}
    assert (stats.poison, stats.acked, stats.entries) == (10, 1, 1)
    # Every receipt of a poison message is one error line naming it; the same message is received again only
    # after retry_after (1 s), with the next delivery attempt.
    seen: dict[str, list[tuple[float, int]]] = collections.defaultdict(list)
    for r in caplog.records:
        m = re.search(r"messages cannot be parsed \(([^)]*)\).*; delivery attempt ([\d, ]+):", r.getMessage())
        if m:
            ids, attempts = m.group(1).split(", "), [int(a) for a in m.group(2).split(", ")]
            for mid in ids:
                seen[mid].append((r.created, max(attempts) if len(ids) > 1 else attempts[0]))
    assert sorted(seen) == sorted([broken, port])
    for mid, receipts in seen.items():
        assert len(receipts) == 5, (mid, receipts)
        times = [t for t, _ in receipts]
        assert all(b - a >= 1.0 for a, b in zip(times, times[1:], strict=False)), (mid, times)
    errors = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING and "message " in r.getMessage()]
    assert any(broken in e for e in errors) and any(port in e and "dest_port" in e for e in errors), errors


async def test_a_subscription_that_does_not_exist_fails_that_source_by_name(
    pubsub: PubSubEmulator, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """The other source of the config (a local directory of GCP flow logs) is delivered all the same."""
    missing = f"projects/{PROJECT}/subscriptions/no-such-subscription"
    (tmp_path / "logs").mkdir()
    (tmp_path / "logs" / "flows.json").write_bytes(body(EGRESS) + b"\n")
    text = config_text(tmp_path, pubsub, missing).replace(
        "sinks:\n", f"  - name: files\n    type: local\n    path: {tmp_path}/logs\nsinks:\n"
    )
    metrics = await run_once(tmp_path, text)
    assert (metrics.sources["ps"].units_failed, metrics.sources["ps"].records) == (1, 0)
    assert metrics.sources["files"].records == 1
    errors = [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]
    assert any(f"source=ps subscription={missing} does not exist" in e for e in errors), errors


async def test_credentials_that_cannot_be_loaded_fail_that_source_by_name(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("PUBSUB_EMULATOR_HOST", raising=False)
    subscription = f"projects/{PROJECT}/subscriptions/flows"
    text = f"""
state_dir: {tmp_path}/state
sources:
  - {{name: ps, type: gcp_pubsub, subscription: {subscription}, credentials_file: {tmp_path}/missing-key.json}}
sinks:
  - {{name: j, type: file, path: {tmp_path}/out, format: jsonl}}
"""
    metrics = await run_once(tmp_path, text)
    assert metrics.sources["ps"].units_failed == 1
    errors = [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]
    assert any(f"subscription={subscription}" in e and "missing-key.json" in e for e in errors), errors


def lines(*entries: dict[str, Any]) -> bytes:
    """Objects as a log sink writes them to Cloud Storage: one LogEntry per line."""
    return b"".join(body(e) + b"\n" for e in entries)


OBJECT = PREFIX + "2024/06/01/12:00:00_12:59:59_S0.json"


async def test_storage_notifications_name_objects_that_are_read_once(
    pubsub: PubSubEmulator, fake_gcs: FakeGcs, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """OBJECT_FINALIZE notifications: the object is read and the message acked once it is committed; the same
    notification again (Pub/Sub and GCS are at-least-once) is acked without reading; other events and objects
    outside `prefix` are acked as ignored; a notification without its object is poison. Then a new generation of
    the object is a new unit, and a late notification of the old generation is superseded."""
    caplog.set_level(logging.INFO, logger="flowcollector")
    bucket = f"flows-{uuid.uuid4().hex[:8]}"
    s = make_subscription("notes")
    blob = upload(fake_gcs, bucket, OBJECT, lines(EGRESS, INGRESS, ICMP))
    readme = upload(fake_gcs, bucket, "README.txt", b"not flow logs\n")
    finalize = notification(blob)
    no_object = (finalize[0], {k: v for k, v in finalize[1].items() if k != "objectId"})
    published = [finalize, finalize, notification(blob, "OBJECT_DELETE"), notification(readme), no_object]
    publish(s.topic, [b for b, _ in published], [a for _, a in published])
    text = config_text(tmp_path, pubsub, s.subscription, storage_endpoint=fake_gcs.endpoint, max_concurrency=2)

    metrics = await run_once(tmp_path, text)

    assert by_insert_id(output(tmp_path / "out")) == EXPECTED
    stats = summary(caplog)
    assert {k: stats[k] for k in ("messages", "acked", "objects", "duplicates", "ignored", "poison", "left")} == {
        "messages": 5, "acked": 4, "objects": 1, "duplicates": 1, "ignored": 2, "poison": 1, "left": 0,
    }  # fmt: skip
    c = metrics.sources["ps"]
    assert (c.records, c.errors, c.units, c.units_failed) == (3, 1, 1, 0)
    errors = [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]
    assert any("without bucketId or objectId" in e for e in errors), errors

    # A new generation of the object: a new unit, read in full.
    caplog.clear()
    newer_entry = {**EGRESS, "insertId": "egress-2"}
    newer = upload(fake_gcs, bucket, OBJECT, lines(newer_entry))
    assert newer.generation != blob.generation
    publish(s.topic, [notification(newer)[0]], [notification(newer)[1]])
    await run_once(tmp_path, text)
    assert [r["extra"]["insertId"] for r in output(tmp_path / "out")].count("egress-2") == 1
    assert summary(caplog)["objects"] == 1

    # The old generation announced again (a late redelivery): it cannot be read any more, and a newer generation
    # exists, so it is acked as superseded.
    caplog.clear()
    publish(s.topic, [finalize[0]], [finalize[1]])
    await run_once(tmp_path, text)
    stats = summary(caplog)
    assert (stats["superseded"], stats["acked"], stats["objects"]) == (1, 1, 0)
    assert len(output(tmp_path / "out")) == 4


async def test_a_deleted_object_is_not_skipped(
    pubsub: PubSubEmulator, fake_gcs: FakeGcs, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Reads are consistent, so an announced object that is gone was deleted after it was announced (or the
    notification is wrong): logged with its gs:// name, counted, not acked; it comes back after retry_after."""
    caplog.set_level(logging.INFO, logger="flowcollector")
    bucket = f"flows-{uuid.uuid4().hex[:8]}"
    s = make_subscription("deleted")
    blob = upload(fake_gcs, bucket, OBJECT, lines(EGRESS))
    note = notification(blob)
    blob.delete()
    (mid,) = publish(s.topic, [note[0]], [note[1]])
    text = config_text(tmp_path, pubsub, s.subscription, storage_endpoint=fake_gcs.endpoint, retry_after="2s")
    metrics = await run_once(tmp_path, text)
    assert output(tmp_path / "out") == []
    assert (summary(caplog)["left"], summary(caplog)["acked"], metrics.sources["ps"].units_failed) == (1, 0, 1)
    errors = [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]
    assert any(mid in e and f"gs://{bucket}/{OBJECT}#{blob.generation} does not exist" in e for e in errors), errors
    assert [m.message.message_id for m in pull_now(s.subscription, wait=5)] == [mid]  # back after retry_after


# --- collectors as processes ---------------------------------------------------------------------------------------


def generated(first: int, count: int) -> list[bytes]:
    """EGRESS as message bodies, `bytes_sent` a unique id (so loss and duplication can be counted)."""
    head, sep, tail = body(EGRESS).partition(b'"bytes_sent":"1020"')
    assert sep
    return [b'%s"bytes_sent":"%d"%s' % (head, first + i, tail) for i in range(count)]


def publish_many(topic: str, bodies: list[bytes]) -> None:
    pub, _ = clients()
    futures = [pub.publish(topic, b) for b in bodies]
    for f in futures:
        f.result()


def ids(out: Path, parts: bool = False) -> collections.Counter[int]:
    """How often each record id (its `bytes`) is in a collector's published output (`parts`: and in the hidden
    part files a killed collector left, which hold more than its next start keeps)."""
    found: collections.Counter[int] = collections.Counter()
    for f in [*out.glob("*.jsonl"), *(out.glob(".*.part") if parts else ())]:
        found.update(map(int, re.findall(rb'"bytes":(\d+)', f.read_bytes())))
    return found


def collector(cfg: Path, *extra: str) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [sys.executable, "-m", "collector.cli", "run", "-c", str(cfg), *extra],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )


def write_config(tmp: Path, pubsub: PubSubEmulator, subscription: str, tag: str, **source: Any) -> Path:
    cfg = tmp / f"config{tag}.yaml"
    cfg.write_text(config_text(tmp, pubsub, subscription, tag=tag, **source))
    return cfg


def wait_for(what: str, ready: Any, procs: list[subprocess.Popen[bytes]], timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while not ready():
        for p in procs:
            if p.poll() is not None:
                err = p.stderr.read().decode() if p.stderr else ""
                raise AssertionError(f"collector exited ({p.returncode}) before {what}: {err[-3000:]}")
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.05)


@pytest.fixture
def procs() -> Iterator[list[subprocess.Popen[bytes]]]:
    started: list[subprocess.Popen[bytes]] = []
    yield started
    for p in started:
        if p.poll() is None:
            p.kill()
        p.wait()


def test_two_collectors_share_one_subscription_and_deliver_every_flow_once(
    pubsub: PubSubEmulator, tmp_path: Path, procs: list[subprocess.Popen[bytes]]
) -> None:
    s = make_subscription("shared")
    total = 30_000
    publish_many(s.topic, generated(1, total))
    # Each holds at most 500 messages: neither can take the whole subscription before the other starts.
    options = {"max_messages": 100, "max_outstanding_messages": 500}
    cfgs = [write_config(tmp_path, pubsub, s.subscription, tag, **options) for tag in ("-a", "-b")]
    procs += [collector(cfg, "--once") for cfg in cfgs]
    for p in procs:
        _, err = p.communicate(timeout=180)
        assert p.returncode == 0, err.decode()[-3000:]

    a, b = ids(tmp_path / "out-a"), ids(tmp_path / "out-b")
    assert a and b, "one collector took every message: the subscription did not share the work"
    assert not set(a) & set(b)
    union = a + b
    assert set(union) == set(range(1, total + 1))
    assert max(union.values()) == 1
    assert batch_rows(tmp_path / "state-a") == batch_rows(tmp_path / "state-b") == []
    assert pull_now(s.subscription, wait=12) == []  # all acked: nothing comes back after the 10 s deadline


def test_sigkill_while_holding_messages(
    pubsub: PubSubEmulator, tmp_path: Path, procs: list[subprocess.Popen[bytes]]
) -> None:
    """Collector A is killed twice while it holds messages (10 s ack deadline: they come back). The first time A
    itself (same state) gets them back: batches its sink had recorded are acked without being delivered again, the
    rest the JSON Lines sink cut back and A delivers anew: every flow exactly once. The second time collector B
    (its own state) gets them: the only duplicates are flows A's sink had recorded but A had not acked, at most
    what A held (`max_outstanding_messages`), and nothing is lost."""
    s = make_subscription("sigkill")
    total, held = 40_000, 2000
    options = {"max_messages": 200, "max_outstanding_messages": held}
    cfg_a = write_config(tmp_path, pubsub, s.subscription, "-a", **options)
    cfg_b = write_config(tmp_path, pubsub, s.subscription, "-b", **options)

    # 1. A is killed mid-way, restarted on its own state, and finishes.
    publish_many(s.topic, generated(1, total))
    procs.append(collector(cfg_a))
    wait_for("A to deliver part of the messages", lambda: len(ids(tmp_path / "out-a")) > 4000, procs)
    procs[-1].send_signal(signal.SIGKILL)
    procs[-1].wait()
    assert len(ids(tmp_path / "out-a")) < total, "A delivered everything before the kill: publish more"
    procs.append(collector(cfg_a))
    wait_for("A to deliver the rest", lambda: len(ids(tmp_path / "out-a")) == total, procs[-1:])
    time.sleep(12)  # what A held at the kill and had not delivered came back: nothing more is delivered
    procs[-1].send_signal(signal.SIGTERM)
    _, err = procs[-1].communicate(timeout=60)
    assert procs[-1].returncode == 0, err.decode()[-3000:]
    first = ids(tmp_path / "out-a")
    assert set(first) == set(range(1, total + 1)) and max(first.values()) == 1

    # 2. A is killed mid-way again; B, with its own state, gets what A held after the ack deadline.
    publish_many(s.topic, generated(total + 1, total))
    procs.append(collector(cfg_a))
    wait_for("A to deliver part of the second lot", lambda: len(ids(tmp_path / "out-a")) > total + 4000, procs[-1:])
    procs[-1].send_signal(signal.SIGKILL)
    procs[-1].wait()
    procs.append(collector(cfg_b))
    second = range(total + 1, 2 * total + 1)
    wait_for("A and B to have everything", lambda: set(ids(tmp_path / "out-a", parts=True) + ids(tmp_path / "out-b")) >= set(second), procs[-1:])  # fmt: skip
    time.sleep(12)  # what A held and its sink had not recorded is back by now, and delivered by B
    procs[-1].send_signal(signal.SIGTERM)
    _, err = procs[-1].communicate(timeout=60)
    assert procs[-1].returncode == 0, err.decode()[-3000:]
    # A once more, to settle its output after the kill (what its sink recorded is published, the rest cut), and
    # to ack what it had committed: nothing is left in the subscription.
    final = collector(cfg_a, "--once")
    procs.append(final)
    _, err = final.communicate(timeout=60)
    assert final.returncode == 0, err.decode()[-3000:]

    a, b = ids(tmp_path / "out-a"), ids(tmp_path / "out-b")
    assert set(a + b) >= set(second)  # nothing lost
    assert all(a[i] <= 1 and b[i] <= 1 for i in second)
    duplicates = [i for i in second if a[i] and b[i]]
    assert len(duplicates) <= held
    assert set(b) <= set(second)
    assert pull_now(s.subscription, wait=12) == []


async def test_a_source_restarted_while_its_batch_is_with_a_late_sink_does_not_deliver_it_twice(
    pubsub: PubSubEmulator, tmp_path: Path
) -> None:
    """A reload (SIGHUP with the source's config changed) or a supervised restart starts a new run on the same
    pipeline while a batch of the old run is still with a sink that acks late (JSON Lines flushed only at close,
    as a Parquet file acks when it closes). The old run lets its messages go; they come back to the new run,
    which must recognise them once the old batch commits, not deliver them to the file sink a second time
    (ARCHITECTURE "Delivery semantics": a unit is never read again while batches of it are in flight)."""
    from adapters.gcp.pubsub import PubSubSource
    from collector.checkpoints import CheckpointStore
    from collector.pipeline import Pipeline
    from collector.registry import create_sink

    s = make_subscription("restart")
    publish(s.topic, [body(EGRESS), body(INGRESS)])
    text = config_text(tmp_path, pubsub, s.subscription).replace("flush_interval: 100ms", "flush_interval: 1h")
    text = text.replace("rotate_interval: 1s", "rotate_interval: 1h")
    config = parse_config(text, tmp_path / "config.yaml")
    store = CheckpointStore(config.state_dir)
    metrics = Metrics()
    sinks = [create_sink(x) for x in config.sinks]
    pipeline = Pipeline(sinks, store, metrics, flush_intervals={x.name: x.flush_interval for x in config.sinks})
    await pipeline.start()
    try:
        first = PubSubSource(config.sources[0], store, metrics)
        stop_first = asyncio.Event()
        task = asyncio.create_task(first.run(pipeline, False, stop_first))
        await until("the first run to emit its batch", lambda: first.stats.batches == 1, task)
        stop_first.set()
        await task  # its batch is still with the sink: not acked, let go

        second = PubSubSource(config.sources[0], store, metrics)
        stop_second = asyncio.Event()
        task = asyncio.create_task(second.run(pipeline, False, stop_second))
        await until("the messages to come back", lambda: second.stats.messages >= 2, task)
        await asyncio.sleep(3)  # let the second run deliver them, if it does
        stop_second.set()
        await task
    finally:
        await pipeline.close()
        store.close()
    delivered = collections.Counter(r["extra"]["insertId"] for r in output(tmp_path / "out"))
    assert delivered == {"egress-1": 1, "ingress-1": 1}


async def test_a_once_run_longer_than_grace_and_deadline_with_a_late_sink_does_not_deliver_twice(
    pubsub: PubSubEmulator, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """--once with a sink that commits only when it closes (Parquet; here JSON Lines flushed only at close): a
    batch not committed within COMMIT_GRACE is let go (no longer extended) while the run goes on pulling. Once its
    ack deadline passes, Pub/Sub hands its messages to the same run again, which must not deliver them twice."""
    import threading

    s = make_subscription("once-late")
    publish_many(s.topic, generated(0, 5))
    done = threading.Event()

    def trickle() -> None:  # keeps the run's pulls non-empty for ~35 s
        pub, _ = clients()
        for i in range(200):
            if done.is_set():
                return
            pub.publish(s.topic, generated(1000 + i, 1)[0]).result()
            time.sleep(0.3)

    caplog.set_level(logging.INFO)
    feeder = threading.Thread(target=trickle, daemon=True)
    feeder.start()
    text = config_text(tmp_path, pubsub, s.subscription, wait_time="10s")
    text = text.replace("flush_interval: 100ms", "flush_interval: 1h").replace(
        "rotate_interval: 1s", "rotate_interval: 1h"
    )
    try:
        await run_once(tmp_path, text)
    finally:
        done.set()
        feeder.join()
    found = ids(tmp_path / "out")
    assert {k: v for k, v in found.items() if v > 1} == {}
    assert all(found[i] == 1 for i in range(5))


async def test_a_copy_redelivered_while_its_batch_is_being_acked_is_acked_too(
    pubsub: PubSubEmulator, tmp_path: Path
) -> None:
    """Pub/Sub hands a message out again (its lease expired) just while the Acknowledge of its committed batch is
    in flight. The copy joins the batch (it is not delivered again) and must be acked in a further round, not held
    and extended for the life of the process. The lease is expired from outside, as a lost extension would: the
    emulator's ModifyAckDeadline to 0, sent while the source's first Acknowledge call waits."""
    s = make_subscription("ack-race")
    async with running_source(tmp_path, config_text(tmp_path, pubsub, s.subscription)) as run:
        src = run.source
        await until("the source's client", lambda: src._client is not None, run.task)
        real = src._client.acknowledge
        calls: list[list[str]] = []

        async def acknowledge(*, subscription: str, ack_ids: list[str], timeout: float) -> None:
            calls.append(list(ack_ids))
            if len(calls) == 1:
                _, sub = clients()
                await asyncio.to_thread(
                    sub.modify_ack_deadline, subscription=subscription, ack_ids=ack_ids, ack_deadline_seconds=0
                )
                await until("the copy to join its batch", lambda: src.stats.duplicates == 1)
            return await real(subscription=subscription, ack_ids=ack_ids, timeout=timeout)

        src._client.acknowledge = acknowledge
        (mid,) = publish(s.topic, [body(EGRESS)])
        await until("the copy to be acked", lambda: len(calls) == 2 and not src._held, run.task)
        stats = src.stats
    assert len(calls[0]) == len(calls[1]) == 1 and calls[0] != calls[1]  # the first receipt, then the copy's
    assert (stats.messages, stats.batches, stats.duplicates) == (2, 1, 1)
    assert [r["extra"]["insertId"] for r in output(tmp_path / "out")] == ["egress-1"]
    assert pull_now(s.subscription, wait=12) == []  # acked: nothing comes back after the 10 s deadline
    assert mid


async def test_a_notification_whose_generation_is_not_an_ascii_number_is_poison(
    pubsub: PubSubEmulator, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """`"²".isdigit()` is true but `int("²")` raises: such an objectGeneration is a bad message (logged with its
    message id, counted as poison, not acked), not a failure of the source's own code."""
    caplog.set_level(logging.INFO, logger="flowcollector")
    s = make_subscription("generation")
    attributes = {"eventType": "OBJECT_FINALIZE", "bucketId": "flows", "objectId": OBJECT, "objectGeneration": "²"}
    (mid,) = publish(s.topic, [b""], [attributes])
    metrics = await run_once(tmp_path, config_text(tmp_path, pubsub, s.subscription))
    stats = summary(caplog)
    assert (stats["messages"], stats["poison"], stats["acked"], stats["objects"]) == (1, 1, 0, 0)
    c = metrics.sources["ps"]
    assert (c.errors, c.units_failed) == (1, 0)
    messages = [r.getMessage() for r in caplog.records]
    assert any(mid in m and "objectGeneration is not a number: '²'" in m for m in messages), messages
    assert not any("failed unexpectedly" in m for m in messages)


def make_old(state: Path, unit: str) -> None:
    """Date a checkpoint row back two hours (as if committed then)."""
    with sqlite3.connect(state / "checkpoints.sqlite") as conn:
        conn.execute("UPDATE units SET updated = updated - 7200 WHERE unit = ?", (unit,))


async def test_ids_of_delivered_messages_are_forgotten_periodically_and_only_once_not_needed(
    pubsub: PubSubEmulator, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A daemon forgets, every FORGET_BATCHES_AFTER (here 2 s instead of an hour), the ids of delivered messages
    recorded longer ago than that (found at start, or of an ack that failed) and the rows of their batches: not
    once per run. A row whose ids are still kept stays: its messages, when they come back, are acked without being
    delivered again."""
    import adapters.gcp.pubsub as module
    from collector.checkpoints import CheckpointStore, Commit

    monkeypatch.setattr(module, "FORGET_BATCHES_AFTER", 2.0)
    s = make_subscription("forget")
    text = config_text(tmp_path, pubsub, s.subscription)
    state = tmp_path / "state"
    store = CheckpointStore(state)
    store.commit([Commit("ps", "messages:old", "1", {"messages": 1, "ids": ["m-old"]}, True, 1, 1)])
    store.close()
    make_old(state, "messages:old")
    violations: list[str] = []

    def kept_rows_for_kept_ids(src: Any) -> list[str]:
        rows = batch_rows(state)
        violations.extend(f"{mid} kept, its row gone" for mid, (u, _) in src._done_ids.items() if u not in rows)
        return rows

    async with running_source(tmp_path, text) as run:
        src = run.source
        await until("the earlier batch's ids to be loaded", lambda: "m-old" in src._done_ids, run.task)
        await until("the earlier batch to be forgotten", lambda: kept_rows_for_kept_ids(src) == [], run.task)
        assert "m-old" not in src._done_ids
        # An ack that failed later in the same run: its ids recorded now, its row there (dated back, so only the
        # ids' age keeps it).
        src.store.commit([Commit("ps", "messages:later", "1", {"messages": 1, "ids": ["m-later"]}, True, 1, 1)])
        make_old(state, "messages:later")
        src._done_ids["m-later"] = ("messages:later", time.time())
        await until("the later batch to be forgotten", lambda: kept_rows_for_kept_ids(src) == [], run.task)
        assert src._done_ids == {}
    assert violations == []


async def test_bodies_waiting_to_be_parsed_are_bounded_in_bytes(
    pubsub: PubSubEmulator, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """No pull is made while the LogEntry bodies pulled and not yet parsed reach MAX_WAITING_BYTES (here 1 byte,
    instead of 64 MiB: a pull waits until what the earlier ones brought is parsed); every flow still goes out once."""
    import adapters.gcp.pubsub as module

    monkeypatch.setattr(module, "MAX_WAITING_BYTES", 1)
    s = make_subscription("bytes")
    publish_many(s.topic, generated(0, 40))
    asked: list[tuple[int, int]] = []  # (bytes waiting, messages the next pull may ask for)
    async with running_source(tmp_path, config_text(tmp_path, pubsub, s.subscription)) as run:
        src = run.source
        room = src._room

        def recorded() -> int:
            count = room()
            asked.append((src._waiting_bytes, count))
            return count

        src._room = recorded
        await until("every message to be acked", lambda: src.stats.acked == 40, run.task)
    assert any(waiting > 0 for waiting, _ in asked)  # the bound was reached ...
    assert all(count == 0 for waiting, count in asked if waiting > 0)  # ... and no pull asked for more then
    assert ids(tmp_path / "out") == {i: 1 for i in range(40)}
