"""`aws_sqs` source: flow log objects announced by S3 ObjectCreated notifications on an SQS queue.

Any number of collectors can read one queue: SQS hands each message to one of them at a time (it is invisible to
the others for the visibility timeout), so the queue shares the work out and no collector has to list buckets.

Why it is built this way:
- One message is worked on per free slot (`max_concurrency`), and a receive never asks for more messages than there
  are free slots: a message fetched but waiting for a slot would stay invisible to the other collectors for nothing.
  A slot is held while the message's objects are read; waiting for the sinks' acks holds no slot (a Parquet sink
  acks when its file closes, minutes later, and must not throttle reading).
- A message is deleted only once every object it names is checkpointed as done, i.e. every sink has durably taken
  all of it (`Pipeline.when_committed`). Until then its visibility is extended every third of the timeout, so no
  other collector receives it while it is in progress; a collector that dies stops extending, and the message comes
  back to any collector after the timeout. The checkpoint store is per collector: one that reads the object again
  resumes where *it* stopped; another reads it from the start (duplicates are what the dead one had delivered).
- Duplicate notifications are normal (SQS is at-least-once, S3 may notify twice): an object already done with the
  same ETag is not read again, the message is just deleted. Two messages for one object in one process never read
  it at the same time.
- Nothing is deleted that was not delivered. A message that cannot be decoded, an object that cannot be read
  (NoSuchKey, AccessDenied, I/O), and a message received more than `max_receive_count` times are logged with the
  message id (and bucket/key) and left in the queue: the failed ones come back after the visibility timeout, and the
  queue's redrive policy moves them to a dead-letter queue, where an operator can see and replay them.
  A NoSuchKey is not taken as "nothing to do": S3 is read-after-write consistent, so it means the object was
  deleted after it was announced, or its key was decoded wrongly; silently dropping either would hide lost data.
  The one exception is an object replaced while queued (its ETag no longer matches, HTTP 412): that version can
  never be read again and the new one is announced by its own notification, so the message is done.
- A stop (SIGTERM) ends reading at the next batch boundary and leaves that message (it comes back after the
  visibility timeout; this collector resumes from its checkpoint). Messages whose objects were read wait up to
  COMMIT_GRACE for the sinks to commit them, so they can be deleted rather than read again by another collector; a
  --once run ends the same way once a receive finds nothing.
- `key_filter` is an fnmatch pattern on the whole key (`*` matches `/` too): a pattern says everything a prefix
  says (`AWSLogs/*`) and also suffixes (`*.log.gz`). Objects outside it are counted as ignored and their message is
  deleted: a bucket notifies for every object, and those are not flow logs.
- Keys are URL-encoded in S3 event notifications ("red flower.jpg" arrives as "red+flower.jpg"; moto also encodes
  `/`), so they go through `unquote_plus`. EventBridge events carry the key as it is, so it is taken verbatim
  (decoding it would break keys holding `+` or `%`).
- Objects are parsed in a thread pool of this source's own (`max_concurrency` threads): an S3 object's file blocks
  its thread on network reads, which must not starve the shared parse executor of the other sources.
- The identity of the source reads both the queue and the buckets: it needs sqs:ReceiveMessage,
  sqs:ChangeMessageVisibility, sqs:DeleteMessage on the queue and s3:GetObject on the buckets. Credentials that do
  not work are logged with the queue named and retried with backoff (another process may fix a role or a policy);
  the collector keeps running.
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import fnmatch
import functools
import logging
import math
import re
import time
from concurrent.futures import Executor, ThreadPoolExecutor
from dataclasses import dataclass, replace
from datetime import datetime
from typing import Any
from urllib.parse import unquote_plus

import aiohttp
import orjson
from botocore.exceptions import (
    BotoCoreError,
    ClientError,
    CredentialRetrievalError,
    NoCredentialsError,
    PartialCredentialsError,
    ProfileNotFound,
)

from adapters.aws.config import SqsSourceConfig, auth_of
from adapters.aws.s3io import ObjectReader, RemoteReadError, S3Object, bare_etag, open_object
from adapters.aws.session import AUTH_ERRORS, Identity, describe_error, error_code, identities
from adapters.units import Outcome, deliver_unit
from collector.aio import sleep_or_stop
from collector.checkpoints import CheckpointStore
from collector.metrics import Metrics
from collector.pipeline import Pipeline, PipelineFailed

log = logging.getLogger("flowcollector.source.aws_sqs")

MAX_MESSAGES = 10  # ReceiveMessage returns at most 10 messages
MAX_VISIBILITY = 43200  # SQS keeps a received message invisible for at most 12 hours in all
COMMIT_GRACE = 10.0  # seconds a --once run, or a stopping daemon, waits for the sinks to commit read objects
BACKOFF_FIRST = 1.0
BACKOFF_CAP = 300.0
FORGET_AFTER = 15 * 86400.0  # SQS keeps a message at most 14 days: older checkpoints are never needed again
_QUEUE_REGION = re.compile(r"https?://(?:sqs\.)?([a-z]{2}(?:-[a-z]+)+-\d+)\.(?:queue\.)?amazonaws\.com", re.I)
_CREDENTIAL_ERRORS = (NoCredentialsError, PartialCredentialsError, ProfileNotFound, CredentialRetrievalError)
_NETWORK_ERRORS = (ClientError, BotoCoreError, OSError, TimeoutError, aiohttp.ClientError)


class NotANotification(ValueError):
    """A queue message that is none of the S3 notification shapes this source reads."""


@dataclass(frozen=True, slots=True)
class Notification:
    """What a message says: `envelope` is "s3", "sns" or "eventbridge"; `ignored` counts its events that announce
    no new object (deletions, restores...)."""

    envelope: str
    objects: tuple[S3Object, ...]
    ignored: int = 0
    test: bool = False


def _epoch(value: Any) -> float | None:
    """An event time (ISO 8601, or epoch seconds as moto's EventBridge sends) as epoch seconds."""
    if isinstance(value, int | float):
        return float(value)
    if isinstance(value, str):
        try:
            return datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp()
        except ValueError:
            return None
    return None


def _size(value: Any) -> int | None:
    try:
        return int(value) if value is not None else None
    except (TypeError, ValueError):
        return None


def _field(doc: Any, *path: str) -> Any:
    for name in path:
        if not isinstance(doc, dict) or name not in doc:
            raise NotANotification(f"no {'.'.join(path)}")
        doc = doc[name]
    return doc


def _s3_records(records: Any, envelope: str) -> Notification:
    """The S3 event notification shape: `Records[].s3`, keys URL-encoded (form encoding: space as `+`)."""
    if not isinstance(records, list) or not records:
        raise NotANotification("Records is not a non-empty list")
    objects = []
    ignored = 0
    for record in records:
        if not isinstance(record, dict) or record.get("eventSource") != "aws:s3":
            raise NotANotification("a record that is not an S3 event")
        name = record.get("eventName")
        if not isinstance(name, str):
            raise NotANotification("a record without eventName")
        if not name.removeprefix("s3:").startswith("ObjectCreated:"):
            ignored += 1
            continue
        bucket, key = _field(record, "s3", "bucket", "name"), _field(record, "s3", "object", "key")
        if not isinstance(bucket, str) or not isinstance(key, str) or not bucket or not key:
            raise NotANotification("a record without bucket name or object key")
        obj = record["s3"]["object"]
        objects.append(
            S3Object(
                bucket,
                unquote_plus(key),
                _size(obj.get("size")),
                bare_etag(obj.get("eTag")),
                record.get("awsRegion") if isinstance(record.get("awsRegion"), str) else None,
                _epoch(record.get("eventTime")),
            )
        )
    return Notification(envelope, tuple(objects), ignored)


def _eventbridge(doc: dict[str, Any], envelope: str) -> Notification:
    """An EventBridge event from S3 (`source` aws.s3): one object in `detail`, the key as it is (not encoded)."""
    if doc.get("detail-type") != "Object Created":
        return Notification(envelope, (), 1)
    bucket, key = _field(doc, "detail", "bucket", "name"), _field(doc, "detail", "object", "key")
    if not isinstance(bucket, str) or not isinstance(key, str) or not bucket or not key:
        raise NotANotification("an event without bucket name or object key")
    obj = doc["detail"]["object"]
    etag = obj.get("etag", obj.get("eTag"))  # AWS documents "etag"; moto sends "eTag"
    region = doc.get("region") if isinstance(doc.get("region"), str) else None
    return Notification(
        envelope, (S3Object(bucket, key, _size(obj.get("size")), bare_etag(etag), region, _epoch(doc.get("time"))),)
    )


def decode_message(body: str) -> Notification:
    """The objects a queue message announces, from any of: an S3 event notification sent to the queue directly, the
    same wrapped in an SNS envelope (`Message` holds it as a JSON string; raw delivery is the direct shape), or an
    EventBridge "Object Created" event (directly, or through SNS). Raises NotANotification for anything else."""
    try:
        doc = orjson.loads(body)
    except orjson.JSONDecodeError:
        raise NotANotification("not JSON") from None
    envelope = "s3"
    if isinstance(doc, dict) and doc.get("Type") == "SubscriptionConfirmation":
        raise NotANotification("an SNS subscription confirmation: confirm it by its SubscribeURL")
    if isinstance(doc, dict) and doc.get("Type") == "Notification" and isinstance(doc.get("Message"), str):
        envelope = "sns"
        try:
            doc = orjson.loads(doc["Message"])
        except orjson.JSONDecodeError:
            raise NotANotification("an SNS notification whose Message is not JSON") from None
    if not isinstance(doc, dict):
        raise NotANotification("not a JSON object")
    if doc.get("Event") == "s3:TestEvent":  # sent once when a bucket's notifications are configured
        return Notification(envelope, (), test=True)
    if "Records" in doc:
        return _s3_records(doc["Records"], envelope)
    if doc.get("source") == "aws.s3" and "detail-type" in doc:
        return _eventbridge(doc, "eventbridge" if envelope == "s3" else envelope)
    raise NotANotification("neither S3 event Records nor an EventBridge aws.s3 event")


@dataclass(frozen=True, slots=True)
class _Watch:
    """An object read to its end (by this message or another), and the future of its commit."""

    obj: S3Object
    version: str
    future: asyncio.Future[None]


@dataclass
class QueueStats:
    """What happened to the messages, for the end-of-run log line and tests."""

    messages: int = 0  # received (a message received again counts again)
    deleted: int = 0
    test_events: int = 0
    ignored: int = 0  # events skipped: not ObjectCreated, or the key does not match key_filter
    duplicates: int = 0  # objects already delivered when announced again
    superseded: int = 0  # objects replaced before they could be read (their new version has its own message)
    poison: int = 0  # messages received more than max_receive_count times, left for the dead-letter queue
    unrecognized: int = 0  # messages that are not S3 notifications, left for the dead-letter queue
    left: int = 0  # messages left in the queue because an object could not be read (retried after the timeout)
    receive_errors: int = 0


class Skipped(enum.Enum):
    """An object of a message that needs neither reading nor a commit to wait for."""

    ALREADY = "already"  # delivered before (a duplicate notification)
    SUPERSEDED = "superseded"  # replaced since it was announced: that version cannot be read any more


class SqsSource:
    def __init__(
        self, config: SqsSourceConfig, store: CheckpointStore, metrics: Metrics, executor: Executor | None = None
    ) -> None:
        self.config = config
        self.name: str = config.name
        self.store = store
        self.counters = metrics.sources[config.name]
        self.stats = QueueStats()
        self.queue_url: str = config.queue_url
        match = _QUEUE_REGION.match(config.queue_url)
        self.region: str | None = config.region or (match.group(1).lower() if match else None)
        self.visibility = min(MAX_VISIBILITY, max(1, math.ceil(config.visibility_timeout)))
        self.wait = min(20, max(0, round(config.wait_time)))
        # The shared parse executor is not used (see the module docstring): `executor` is accepted for the factory.
        self._reading: dict[str, asyncio.Event] = {}  # unit -> set when the reader of that unit is done
        self._emitted: dict[str, str] = {}  # unit -> version read to the end whose commit is pending
        self._held: dict[str, tuple[str, float]] = {}  # message id -> (receipt handle, monotonic time received)
        self._busy = 0  # messages whose objects are being read (each holds a slot)
        self._slot_freed = asyncio.Event()
        self._handlers: set[asyncio.Task[None]] = set()
        self._expired: set[str] = set()  # messages held 12 hours, reported once

    # -- the receive loop

    async def run(self, pipeline: Pipeline, once: bool, stop: asyncio.Event) -> None:
        # A restarted run (the daemon restarts a source that crashed) starts with nothing held or being read.
        self._busy = 0
        self._held.clear()
        self._reading.clear()
        self._handlers.clear()
        identity = Identity(identities(auth_of(self.config), ())[0])
        executor = ThreadPoolExecutor(self.config.max_concurrency, thread_name_prefix=f"sqs-{self.name}")
        await self._forget_old()
        closing = asyncio.Event()
        try:
            async with asyncio.TaskGroup() as tasks:
                tasks.create_task(self._keep_invisible(identity, closing), name=f"source:{self.name}:visibility")
                try:
                    await self._receive_loop(identity, executor, pipeline, tasks, once, stop)
                    # Handlers end by themselves: on stop, reading ends at a batch boundary and commits get a grace.
                    if self._handlers:
                        await asyncio.wait(self._handlers)
                finally:
                    closing.set()
        except* PipelineFailed as group:
            raise group.exceptions[0] from None
        finally:
            executor.shutdown(wait=False, cancel_futures=True)
            await identity.close()
            s = self.stats
            log.info(
                "source=%s queue=%s messages=%d deleted=%d duplicates=%d ignored=%d test_events=%d left=%d "
                "poison=%d unrecognized=%d superseded=%d receive_errors=%d",
                self.name,
                self.queue_url,
                s.messages,
                s.deleted,
                s.duplicates,
                s.ignored,
                s.test_events,
                s.left,
                s.poison,
                s.unrecognized,
                s.superseded,
                s.receive_errors,
            )

    async def _receive_loop(
        self,
        identity: Identity,
        executor: Executor,
        pipeline: Pipeline,
        tasks: asyncio.TaskGroup,
        once: bool,
        stop: asyncio.Event,
    ) -> None:
        delay = BACKOFF_FIRST
        forgot = time.monotonic()
        while not stop.is_set():
            if time.monotonic() - forgot > 3600:
                forgot = time.monotonic()
                await self._forget_old()
            free = self.config.max_concurrency - self._busy
            if free <= 0:
                self._slot_freed.clear()
                await _first(self._slot_freed.wait(), stop.wait())
                continue
            try:
                sqs = await identity.client("sqs", self.region)
                messages = await _first(self._receive(sqs, min(MAX_MESSAGES, free), once), stop.wait())
            except _NETWORK_ERRORS as exc:
                self.stats.receive_errors += 1
                self.counters.units_failed += 1  # seen in the summary, and `run --once` exits non-zero
                self._report_receive_error(exc, None if once else delay)
                if once or await sleep_or_stop(stop, delay):
                    return
                delay = min(delay * 2, BACKOFF_CAP)
                continue
            delay = BACKOFF_FIRST
            if messages is None:  # stopping
                return
            if not messages:
                if not once:
                    continue
                if not self._busy:
                    return  # --once: a receive found nothing and nothing is being read
                while self._busy:  # what is being read may fail and come back later: look again after it
                    self._slot_freed.clear()
                    await self._slot_freed.wait()
                continue
            for message in messages:
                self._busy += 1
                task = tasks.create_task(self._handle(identity, executor, pipeline, message, once, stop))
                self._handlers.add(task)
                task.add_done_callback(self._handlers.discard)

    async def _forget_old(self) -> None:
        """The store's horizon: an object is announced again only within the queue's retention (at most 14 days),
        so checkpoints of objects done longer ago than that are of no use."""
        forgotten = await asyncio.to_thread(self.store.forget_before, self.name, time.time() - FORGET_AFTER)
        if forgotten:
            log.info("source=%s forgot %d checkpoints older than %.0f days", self.name, forgotten, FORGET_AFTER / 86400)

    async def _receive(self, sqs: Any, count: int, once: bool) -> list[dict[str, Any]]:
        # A long poll asks every SQS server; a short one (0 s) only some, so its empty answer does not mean "empty":
        # --once ends on an empty answer, so it always long-polls.
        wait = max(1, self.wait) if once else self.wait
        members = sqs.meta.service_model.operation_model("ReceiveMessage").input_shape.members
        attributes = "MessageSystemAttributeNames" if "MessageSystemAttributeNames" in members else "AttributeNames"
        response = await sqs.receive_message(
            QueueUrl=self.queue_url,
            MaxNumberOfMessages=count,
            WaitTimeSeconds=wait,
            VisibilityTimeout=self.visibility,
            **{attributes: ["ApproximateReceiveCount"]},
        )
        messages: list[dict[str, Any]] = response.get("Messages", [])
        self.stats.messages += len(messages)
        return messages

    def _report_receive_error(self, exc: BaseException, retry_in: float | None) -> None:
        then = f"retrying in {retry_in:.0f}s" if retry_in is not None else "giving up (--once)"
        code = error_code(exc)
        status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode") if isinstance(exc, ClientError) else 0
        if code in AUTH_ERRORS or status == 403 or isinstance(exc, _CREDENTIAL_ERRORS):
            log.error(
                "source=%s queue=%s: CREDENTIALS REJECTED: %s. The source's identity needs sqs:ReceiveMessage, "
                "sqs:ChangeMessageVisibility and sqs:DeleteMessage on the queue and s3:GetObject on the buckets; %s",
                self.name,
                self.queue_url,
                describe_error(exc),
                then,
            )
        elif code in ("AWS.SimpleQueueService.NonExistentQueue", "QueueDoesNotExist"):
            log.error("source=%s queue=%s does not exist (%s); %s", self.name, self.queue_url, code, then)
        else:
            log.error(
                "source=%s queue=%s: receive failed: %s; %s", self.name, self.queue_url, describe_error(exc), then
            )

    # -- one message

    async def _handle(
        self,
        identity: Identity,
        executor: Executor,
        pipeline: Pipeline,
        message: dict[str, Any],
        once: bool,
        stop: asyncio.Event,
    ) -> None:
        """Read what the message announces, wait for the sinks, delete it; leave it in the queue otherwise."""
        mid = str(message.get("MessageId", "?"))
        receipt = str(message.get("ReceiptHandle", ""))
        reading = True

        def release() -> None:
            nonlocal reading
            if reading:
                reading = False
                self._busy -= 1
                self._slot_freed.set()

        try:
            count = int(message.get("Attributes", {}).get("ApproximateReceiveCount", 1))
            try:
                note = decode_message(str(message.get("Body", "")))
            except NotANotification as exc:
                self.stats.unrecognized += 1
                self.counters.errors += 1
                log.error(
                    "source=%s queue=%s message %s is not an S3 notification (%s); left for the queue's redrive "
                    "policy (receive count %d)",
                    self.name,
                    self.queue_url,
                    mid,
                    exc,
                    count,
                )
                return
            if note.test:
                self.stats.test_events += 1
                await self._delete(identity, mid, receipt)
                return
            objects = [o for o in note.objects if self._wanted(o)]
            self.stats.ignored += note.ignored + len(note.objects) - len(objects)
            if count > self.config.max_receive_count:
                await self._poison(identity, mid, receipt, count, objects)
                return
            self._held[mid] = (receipt, time.monotonic())
            watches: list[_Watch] = []
            for obj in objects:
                result = await self._read_object(identity, executor, pipeline, obj, stop)
                if isinstance(result, _Watch):
                    watches.append(result)
                elif result is Skipped.ALREADY:
                    self.stats.duplicates += 1
                elif result is Skipped.SUPERSEDED:
                    self.stats.superseded += 1
                else:
                    if result is Outcome.FAILED:
                        self.stats.left += 1
                        log.warning(
                            "source=%s message %s left in the queue: %s is retried after the visibility timeout "
                            "(receive count %d of at most %d)",
                            self.name,
                            mid,
                            obj.label,
                            count,
                            self.config.max_receive_count,
                        )
                    return  # FAILED or STOPPED: not deleted; it comes back after the visibility timeout
            release()
            if watches and not await self._committed(watches, once, stop):
                log.info("source=%s message %s: objects read, not yet committed; left in the queue", self.name, mid)
                return
            for w in watches:
                if w.obj.event_time is not None:
                    self.counters.newest_object_time = max(self.counters.newest_object_time, w.obj.event_time)
            await self._delete(identity, mid, receipt)
        except PipelineFailed:
            raise
        except Exception:  # a bug must not take the other messages down: the message stays for a later try
            self.counters.errors += 1
            log.exception("source=%s message %s failed unexpectedly; left in the queue", self.name, mid)
        finally:
            self._held.pop(mid, None)
            release()

    def _wanted(self, obj: S3Object) -> bool:
        pattern = self.config.key_filter
        return not pattern or fnmatch.fnmatchcase(obj.key, pattern)

    async def _poison(self, identity: Identity, mid: str, receipt: str, count: int, objects: list[S3Object]) -> None:
        """Received too often: report it and leave it for the dead-letter queue, unless it is all delivered already
        (only its deletion failed), in which case deleting it is all there is to do."""
        undone = [o for o in objects if not (o.etag and await self._done(o.unit, o.etag))]
        if not undone:
            await self._delete(identity, mid, receipt)
            return
        self.stats.poison += 1
        self.counters.units_failed += len(undone)
        for obj in undone:
            log.error(
                "source=%s queue=%s message %s received %d times (max_receive_count %d): %s not processed; left for "
                "the queue's redrive policy (dead-letter queue)",
                self.name,
                self.queue_url,
                mid,
                count,
                self.config.max_receive_count,
                obj.label,
            )

    async def _done(self, unit: str, version: str) -> bool:
        ckpt = await asyncio.to_thread(self.store.get, self.name, unit)
        return ckpt is not None and ckpt.done and ckpt.version == version

    async def _read_object(
        self, identity: Identity, executor: Executor, pipeline: Pipeline, obj: S3Object, stop: asyncio.Event
    ) -> _Watch | Skipped | Outcome:
        """Deliver one object: its commit to wait for, Skipped, or Outcome.FAILED / STOPPED (left in the queue)."""
        unit = obj.unit
        while (other := self._reading.get(unit)) is not None:
            await other.wait()  # the same object from another message: one reader, then look at the checkpoint
        self._reading[unit] = mine = asyncio.Event()
        try:
            version, size = obj.etag, obj.size
            try:
                s3 = await identity.client("s3", obj.region or self.region)
                if version is None or size is None:  # an event without them: ask S3
                    head = await s3.head_object(Bucket=obj.bucket, Key=obj.key)
                    version, size = bare_etag(head.get("ETag")) or "", int(head.get("ContentLength", 0))
            except _NETWORK_ERRORS as exc:
                self.counters.units_failed += 1
                log.error("source=%s unit=%s cannot be read: %s", self.name, obj.label, describe_error(exc))
                return Outcome.FAILED
            # Registered before looking at the store: a commit landing in between resolves it.
            watch = pipeline.when_committed(self.name, unit, version)
            if await self._done(unit, version):
                pipeline.forget_watch(self.name, unit, watch)
                return Skipped.ALREADY
            if self._emitted.get(unit) == version:
                return _Watch(obj, version, watch)  # read to the end for another message; its commit is on the way
            known = replace(obj, size=size, etag=version)
            # `open_object` as this module names it now, not the reader's default: a test breaks its connections.
            reader = ObjectReader(s3, known, self.name, asyncio.get_running_loop(), open_file=open_object)

            while True:
                outcome = await deliver_unit(
                    pipeline,
                    source=self.name,
                    unit=unit,
                    version=version,
                    label=obj.label,
                    open_results=reader,
                    store=self.store,
                    counters=self.counters,
                    executor=executor,
                    stop=stop,
                    log=log,
                    bytes_read=reader.bytes_read,
                    read_errors=(ClientError, BotoCoreError, aiohttp.ClientError, RemoteReadError),
                )
                if outcome is not Outcome.DEFERRED:
                    break
                # An earlier attempt's batches (a redelivered message) are still with the sinks: the message is
                # held (kept invisible) until they are checkpointed, then read on from there.
                await _first(pipeline.settled(self.name, unit), stop.wait())
                if stop.is_set():
                    outcome = Outcome.STOPPED
                    break
                # The earlier batches' commit may have resolved the watch, and they can be of another version (the
                # object was overwritten): watch again, for this read, before looking at the store.
                pipeline.forget_watch(self.name, unit, watch)
                watch = pipeline.when_committed(self.name, unit, version)
                if await self._done(unit, version):
                    pipeline.forget_watch(self.name, unit, watch)
                    return Skipped.ALREADY
            if outcome is Outcome.DONE:
                self._emitted[unit] = version
                watch.add_done_callback(functools.partial(self._forget_emitted, unit, version))
                return _Watch(obj, version, watch)
            pipeline.forget_watch(self.name, unit, watch)
            if reader.changed:
                log.warning(
                    "source=%s unit=%s was replaced before it could be read (ETag %s); its new version is announced "
                    "by its own notification",
                    self.name,
                    obj.label,
                    version,
                )
                return Skipped.SUPERSEDED
            return outcome
        finally:
            del self._reading[unit]
            mine.set()

    def _forget_emitted(self, unit: str, version: str, future: asyncio.Future[None]) -> None:
        """The unit's commit landed: from now on the store says it is done."""
        if not future.cancelled() and future.exception() is None and self._emitted.get(unit) == version:
            del self._emitted[unit]

    async def _committed(self, watches: list[_Watch], once: bool, stop: asyncio.Event) -> bool:
        """Wait until every object of the message is committed. A daemon waits as long as the sinks take (a Parquet
        file acks when it closes) until it is told to stop; a --once run, or a stopping daemon, waits COMMIT_GRACE
        more while the sinks still flush: what is not committed by then is left, and whoever receives the message
        again finds the objects done (this collector) or reads them again (another one)."""
        # asyncio.wait, not gather: giving up must not cancel the futures, whose commit still clears `_emitted`.
        futures = [w.future for w in watches]
        if not once:
            await _first(asyncio.wait(futures), stop.wait())
        if not all(f.done() for f in futures):
            await asyncio.wait(futures, timeout=COMMIT_GRACE)
        for f in futures:
            if f.done():
                f.result()  # PipelineFailed if a sink failed for good
        return all(f.done() for f in futures)

    async def _delete(self, identity: Identity, mid: str, receipt: str) -> None:
        try:
            sqs = await identity.client("sqs", self.region)
            await sqs.delete_message(QueueUrl=self.queue_url, ReceiptHandle=receipt)
        except _NETWORK_ERRORS as exc:
            # It comes back after the visibility timeout and is found done then: no data is lost or repeated.
            self.counters.units_failed += 1
            log.warning("source=%s message %s could not be deleted: %s", self.name, mid, describe_error(exc))
            return
        self.stats.deleted += 1

    # -- visibility

    async def _keep_invisible(self, identity: Identity, closing: asyncio.Event) -> None:
        """Every third of the visibility timeout, extend every held message by a whole timeout (10 per request), so
        a message in progress is never handed to another collector, and one abandoned comes back within one."""
        interval = max(0.5, self.visibility / 3)
        while not await sleep_or_stop(closing, interval):
            held = list(self._held.items())
            now = time.monotonic()
            for start in range(0, len(held), 10):
                entries = []
                for i, (mid, (receipt, received)) in enumerate(held[start : start + 10]):
                    # SQS refuses to keep a message invisible past 12 hours from its receipt.
                    left = int(MAX_VISIBILITY - (now - received)) - 1
                    if left <= 0:
                        if mid not in self._expired:
                            self._expired.add(mid)
                            log.warning(
                                "source=%s message %s has been held 12 hours, SQS's limit: it becomes visible again "
                                "(its objects are committed by now or read again)",
                                self.name,
                                mid,
                            )
                        continue
                    entries.append(
                        {"Id": str(i), "ReceiptHandle": receipt, "VisibilityTimeout": min(left, self.visibility)}
                    )
                if entries:
                    await self._extend(identity, entries, held[start : start + 10])

    async def _extend(
        self, identity: Identity, entries: list[dict[str, Any]], held: list[tuple[str, tuple[str, float]]]
    ) -> None:
        try:
            sqs = await identity.client("sqs", self.region)
            response = await sqs.change_message_visibility_batch(QueueUrl=self.queue_url, Entries=entries)
        except _NETWORK_ERRORS as exc:
            log.warning(
                "source=%s queue=%s: extending the visibility of %d messages failed: %s (they may be received by "
                "another collector after the timeout)",
                self.name,
                self.queue_url,
                len(entries),
                describe_error(exc),
            )
            return
        for failure in response.get("Failed", []):
            mid = held[int(failure["Id"])][0]
            if mid in self._held:  # not deleted or released meanwhile
                log.warning(
                    "source=%s message %s: visibility not extended: %s %s",
                    self.name,
                    mid,
                    failure.get("Code"),
                    failure.get("Message", ""),
                )


async def _first(main: Any, other: Any) -> Any:
    """Run `main` until it ends or `other` does (a stop): its result, or None if `other` came first (then `main` is
    cancelled)."""
    main_task = asyncio.ensure_future(main)
    other_task = asyncio.ensure_future(other)
    try:
        done, _ = await asyncio.wait({main_task, other_task}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for t in (other_task, main_task):
            if not t.done():
                t.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await t
    return main_task.result() if main_task in done else None
