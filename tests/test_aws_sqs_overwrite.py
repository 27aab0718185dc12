"""SQS: Pipeline.when_committed is keyed by (source, unit), not version. An object overwritten (v1 -> v2) whose v2
message arrives while v1's done batch is still unacked (open Parquet file) registers its watch, is DEFERRED, and the
v1 commit resolves the v2 watch. The v2 message is then deleted right after v2 is read, before any sink has acked it.
A crash then loses v2 for good (the queue no longer has its message). Found in review of issue #8's fix: after
waiting for the earlier batches, the source watches again for its own read."""

from __future__ import annotations

import asyncio
import contextlib
from pathlib import Path

from flowdata import gzip_flows, parquet_ids, tally
from test_aws_sqs import BUCKET, aws, config_text, make_queue, s3_event

from adapters.aws.sqs import SqsSource
from collector.checkpoints import CheckpointStore
from collector.config import parse_config
from collector.metrics import Metrics
from collector.pipeline import Pipeline
from collector.registry import create_sink

KEY = "AWSLogs/123456789012/vpcflowlogs/us-east-1/2026/11/22/x.log.gz"


async def test_v2_message_deleted_before_v2_is_committed(moto, tmp_path: Path) -> None:
    c = aws(moto)
    c.s3.create_bucket(Bucket=BUCKET)
    url, _ = make_queue(c, "q")
    body1 = gzip_flows(1, 1000)
    put1 = c.s3.put_object(Bucket=BUCKET, Key=KEY, Body=body1)
    c.sqs.send_message(QueueUrl=url, MessageBody=s3_event(BUCKET, KEY, len(body1), put1["ETag"].strip('"')))
    # Only a Parquet sink, rotated every 4 s: v1's done batch stays unacked for a while.
    text = config_text(tmp_path, moto, url, visibility_timeout="30s").split("sinks:")[0] + (
        f"sinks:\n  - {{name: p, type: file, path: {tmp_path}/parquet, format: parquet, flush_interval: 100ms,"
        " rotate_interval: 4s}\n"
    )
    config = parse_config(text, tmp_path / "config.yaml")
    store = CheckpointStore(config.state_dir)
    sinks = [create_sink(s) for s in config.sinks]
    pipeline = Pipeline(sinks, store, Metrics(), flush_intervals={"p": 0.1})
    await pipeline.start()
    source = SqsSource(config.sources[0], store, Metrics())
    deletions = []
    real_delete = source._delete

    async def delete(identity, mid, receipt):
        ck = store.get("sqs", f"{BUCKET}/{KEY}")
        deletions.append((mid, ck and (ck.version, ck.done)))
        await real_delete(identity, mid, receipt)

    source._delete = delete
    stop = asyncio.Event()
    task = asyncio.create_task(source.run(pipeline, False, stop))
    unit = f"{BUCKET}/{KEY}"
    async with asyncio.timeout(30):
        while unit not in source._emitted:  # v1 read to its end, not committed (Parquet file open)
            await asyncio.sleep(0.02)
    body2 = gzip_flows(100_001, 1000)
    put2 = c.s3.put_object(Bucket=BUCKET, Key=KEY, Body=body2)
    v2 = put2["ETag"].strip('"')
    c.sqs.send_message(QueueUrl=url, MessageBody=s3_event(BUCKET, KEY, len(body2), v2))
    async with asyncio.timeout(30):
        while len(deletions) < 2:
            await asyncio.sleep(0.01)
    # Simulated crash right after the second delete: no drain.
    print("deletions (message, checkpoint at deletion time):", deletions, "v2 =", v2)
    stop.set()
    await pipeline.abort()
    task.cancel()
    with contextlib.suppress(BaseException):
        await task
    store.close()
    v2_deleted_uncommitted = [d for d in deletions[1:] if d[1] != (v2, True)]  # deletions[0] is v1's message
    ids = parquet_ids(tmp_path / "parquet")
    print("v2 ids in parquet:", tally(ids, range(100_001, 101_001)))
    assert len(v2_deleted_uncommitted) == 0, f"message deleted before its object was committed: {deletions}"
