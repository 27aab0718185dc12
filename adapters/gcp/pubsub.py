"""`gcp_pubsub` source: VPC flow logs from a Pub/Sub subscription, in either of the two shapes GCP sends them.

- **LogEntry messages**: a log sink whose destination is a Pub/Sub topic publishes every flow as one message, its
  body the LogEntry JSON. Many messages (one pull, up to `max_messages`) become one batch, parsed by
  `adapters.gcp.parse.parse_entries`: a batch per message would cost a pipeline ticket, a sink write and a
  checkpoint commit per flow.
- **Cloud Storage notifications**: a bucket's notification configuration publishes a message per object event,
  its attributes naming the object (`eventType`, `bucketId`, `objectId`, `objectGeneration`). An OBJECT_FINALIZE
  names a flow log object to read, exactly as `gcp_gcs` reads objects (through the parsing seam,
  `collector.parsing.open_stream`); other events (OBJECT_DELETE, OBJECT_ARCHIVE, OBJECT_METADATA_UPDATE) are
  acked and counted as ignored. A message with an `eventType` attribute is a notification; any other is a
  LogEntry.

Why it is built this way:
- The client is the generated asyncio client (`SubscriberAsyncClient`, gRPC aio) with unary Pull, not the
  streaming-pull `Subscriber`. Unary Pull asks for exactly as many messages as this collector can take now (a
  message fetched but not worked on is held from the other collectors for nothing), and leaves every ack deadline
  to this module: the streaming Subscriber leases messages by itself on background threads and would keep
  extending a message we mean to let expire (a poison message). The async client also needs no thread per call.
- A message is acked only once its flows are checkpointed, i.e. every sink has durably taken them
  (`Pipeline.when_committed`): for a LogEntry batch, its unit (the batch) committed; for a notification, the
  object committed as done. Until then its ack deadline is extended (ModifyAckDeadline to `ack_deadline`, every
  third of it); a message pulled is first extended before the shortest deadline a subscription can have (10 s)
  runs out, so a batch the sinks commit within seconds costs no extension at all. It is held (extended, and
  known, so a copy handed out again joins it) for as long as the pipeline holds its batch and a pull may bring it
  back: a daemon until it stops, a --once run until its pulls are over; then COMMIT_GRACE more. A --once run whose
  every held message waits for a sink that commits at close pulls no more. A collector that dies stops
  extending: its messages go to any collector within `ack_deadline`.
- A LogEntry batch is a unit named by a digest of its message ids (`messages:<hex>`), so its identity (and every
  sink's idempotent insert token) is that set of messages, never reused for other content. Its checkpoint row
  lists the message ids and stays until the ack has gone through: a collector restarted after a crash between
  commit and ack (or a --once run whose sink committed only at close) acks those messages when they come back,
  without delivering them twice. A batch an earlier run of the same pipeline left with the sinks (a reload, a
  supervised restart) is in flight: its messages join it when they come back. Rows of acked batches are deleted
  at once; every FORGET_BATCHES_AFTER, ids recorded longer ago than that (found at start, or of a failed ack) and
  the rows no kept id needs. Messages Pub/Sub redelivers while this collector still holds them (a deadline
  extension lost) join the batch in progress instead of being delivered again, also during its ack call.
- An object is done by (bucket/name, generation): a notification of an object already delivered is acked without
  reading it; a new generation is a new unit. An object whose announced generation no longer exists while a
  newer one does was replaced (its own notification announces the new one): acked as superseded. One that does
  not exist at all is not skipped: reads are consistent, so it was deleted after it was announced, and the
  message stays as evidence for the dead-letter policy.
- A message that cannot be used (a body that is not a flow log record, a notification without its attributes, an
  object that cannot be read) is logged with its message id (and delivery attempt, when the subscription has a
  dead-letter policy), counted, and never acked. Pub/Sub has no per-message delay and, without a retry policy on
  the subscription, a nack (deadline 0) hands the message out again at once, a tight loop across every
  collector; so its ack deadline is set to `retry_after` (default 5 min, at most 600 s) and no longer extended:
  it comes back after that, and after the subscription's `max_delivery_attempts` it goes to the dead-letter
  topic. Without a dead-letter policy it comes back every `retry_after` for the subscription's retention (logged
  each time).
- Several collectors share one subscription: Pub/Sub hands a message to one of them at a time. Each has its own
  state directory. While notifications are arriving, a pull asks for no more messages than there are free object
  slots (`max_concurrency`); LogEntry pulls ask for `max_messages`, within `max_outstanding_messages` held.
- Objects are read in a thread pool of this source's own (`max_concurrency` threads): the Cloud Storage client is
  synchronous and blocks its thread on the network, which must not starve the shared parse executor. LogEntry
  batches are parsed in the shared executor (pure CPU).
- A missing subscription, a denied one, or credentials that do not work fail this source loudly, by subscription
  name (logged at every pull, counted in `units_failed`), retried with backoff (1 s doubling to 5 min); the other
  sources go on.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import hashlib
import logging
import os
import time
from collections.abc import Awaitable, Sequence
from concurrent.futures import Executor, ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, TypeVar

import orjson
from google.api_core import exceptions as gexc
from google.api_core import retry_async
from google.auth.exceptions import GoogleAuthError

from adapters.gcp import auth, gcsio
from adapters.gcp.config import GcpAuth, PubSubSourceConfig
from adapters.gcp.parse import parse_entries
from adapters.units import MAX_ERRORS_LOGGED, Outcome, RemoteReadError, deliver_unit
from collector.aio import sleep_or_stop
from collector.checkpoints import CheckpointStore, Commit
from collector.metrics import Metrics
from collector.parsing import ParseResult
from collector.pipeline import Delivery, Pipeline, PipelineFailed

log = logging.getLogger("flowcollector.source.gcp_pubsub")

T = TypeVar("T")
ACK_IDS_PER_REQUEST = 1000  # what Google's own subscriber sends per Acknowledge / ModifyAckDeadline
MIN_DEADLINE = 10.0  # the shortest ack deadline a subscription can have: a pulled message is extended before it
FIRST_EXTENSION = MIN_DEADLINE / 2
LEASE_TICK = 1.0  # how often held messages are looked at for extension
COMMIT_GRACE = 10.0  # seconds a --once run, or a stopping daemon, waits for the sinks to commit what was read
BACKOFF_FIRST = 1.0
BACKOFF_CAP = 300.0
BATCH_PREFIX = "messages:"
PULLS = 3  # pulls in flight at most (one, the leader, while the subscription is quiet)
MAX_BATCH_MESSAGES = 10_000  # LogEntry messages in one batch at most
BATCH_VERSION = "1"
FORGET_BATCHES_AFTER = 3600.0  # ids of delivered, unacked messages: they come back within the hour or go elsewhere
MAX_WAITING_BYTES = 64 * 1024 * 1024  # LogEntry bodies pulled and not yet parsed: no pull while they reach this
FORGET_OBJECTS_AFTER = 32 * 86400.0  # Pub/Sub keeps a message at most 31 days: older object checkpoints are no use
_NOTIFICATION_EVENTS = ("OBJECT_FINALIZE", "OBJECT_DELETE", "OBJECT_ARCHIVE", "OBJECT_METADATA_UPDATE")
_TRANSIENT = (
    gexc.ServiceUnavailable,
    gexc.InternalServerError,
    gexc.Aborted,
    gexc.Unknown,
    gexc.ResourceExhausted,
)


# -- clients -------------------------------------------------------------------------------------------------------


def _emulator(endpoint: str | None, env: str) -> str | None:
    """The `host:port` of an emulator: an `http://` endpoint, or the environment variable the client libraries read
    (PUBSUB_EMULATOR_HOST, STORAGE_EMULATOR_HOST). Emulators take no credentials."""
    if endpoint:
        return endpoint.split("://", 1)[1].rstrip("/") if endpoint.startswith("http://") else None
    value = os.environ.get(env, "").strip()
    return value.split("://", 1)[-1].rstrip("/") or None


def _pubsub_credentials(config: PubSubSourceConfig) -> Any:
    """None for an emulator (no credentials); else the source's (adapters/gcp/auth.py). Blocking: in a thread."""
    if _emulator(config.endpoint, "PUBSUB_EMULATOR_HOST") is not None:
        return None
    return auth.load(GcpAuth(credentials_file=config.credentials_file), (auth.PUBSUB,)).credentials


def _subscriber(config: PubSubSourceConfig, credentials: Any) -> Any:
    """The Pub/Sub client: over a plain channel to an emulator (`credentials` None), else with `credentials` to
    `endpoint` or Pub/Sub's own. Created on the event loop's thread (a gRPC aio channel belongs to its loop)."""
    from google.pubsub_v1.services.subscriber import SubscriberAsyncClient

    host = _emulator(config.endpoint, "PUBSUB_EMULATOR_HOST")
    if credentials is None and host is not None:
        import grpc
        from google.pubsub_v1.services.subscriber.transports import SubscriberGrpcAsyncIOTransport

        channel = grpc.aio.insecure_channel(host)
        return SubscriberAsyncClient(transport=SubscriberGrpcAsyncIOTransport(channel=channel))
    options = {"api_endpoint": config.endpoint.split("://", 1)[1].rstrip("/")} if config.endpoint else None
    return SubscriberAsyncClient(credentials=credentials, client_options=options)


@dataclass(frozen=True, slots=True)
class Storage:
    """How notified objects are read: a media session (gcsio) and a metadata client (sizes, live generations)."""

    http: Any
    endpoint: str | None
    client: Any


def _storage(config: PubSubSourceConfig, project: str) -> Storage:
    """Cloud Storage with the source's credentials, or an emulator (`storage_endpoint`, STORAGE_EMULATOR_HOST)
    anonymously unless `credentials_file` is given (auth.load's rule). Blocking: in a thread."""
    from google.cloud import storage

    host = _emulator(config.storage_endpoint, "STORAGE_EMULATOR_HOST")
    endpoint = config.storage_endpoint or (f"http://{host}" if host else None)
    loaded = auth.load(GcpAuth(credentials_file=config.credentials_file, endpoint=endpoint), (auth.STORAGE_READ,))
    client = storage.Client(
        project=project,
        credentials=loaded.credentials,
        client_options={"api_endpoint": endpoint} if endpoint else None,
    )
    return Storage(gcsio.session(loaded.credentials, config.max_concurrency), endpoint, client)


@dataclass(frozen=True, slots=True)
class Announced:
    """An object a notification names; `generation` as GCS writes it (decimal text), `size` if the body said."""

    bucket: str
    name: str
    generation: str
    size: int | None

    @property
    def unit(self) -> str:
        return f"{self.bucket}/{self.name}"

    @property
    def label(self) -> str:
        return f"gs://{self.bucket}/{self.name}#{self.generation}"


def object_size(client: Any, obj: Announced) -> int | None:
    """The announced generation's size, None if it does not exist (runs in a worker thread)."""
    blob = client.bucket(obj.bucket).get_blob(obj.name, generation=int(obj.generation))
    return None if blob is None else int(blob.size or 0)


def live_generation(client: Any, obj: Announced) -> str | None:
    """The generation the object has now, None if it does not exist (runs in a worker thread)."""
    blob = client.bucket(obj.bucket).get_blob(obj.name)
    return None if blob is None else str(blob.generation)


# -- what a message says --------------------------------------------------------------------------------------------


class NotUsable(ValueError):
    """A message this source cannot take: said why, with its id, and left for the dead-letter policy."""


@dataclass(frozen=True, slots=True)
class Notification:
    event: str
    obj: Announced | None  # None for events that announce nothing to read


def is_notification(attributes: Any) -> bool:
    return "eventType" in attributes


def decode_notification(attributes: Any, body: bytes) -> Notification:
    """A Cloud Storage notification (attributes as GCS publishes them; the body, with payloadFormat JSON_API_V1,
    is the object's metadata, of which only `size` is used). NotUsable if the attributes are incomplete."""
    event = str(attributes.get("eventType", ""))
    if event != "OBJECT_FINALIZE":
        return Notification(event, None)
    bucket, name, generation = (str(attributes.get(k, "")) for k in ("bucketId", "objectId", "objectGeneration"))
    if not bucket or not name:
        raise NotUsable("a Cloud Storage OBJECT_FINALIZE notification without bucketId or objectId")
    if not (generation.isascii() and generation.isdigit()):  # "²" is a digit to str.isdigit, not to int()
        raise NotUsable(f"a Cloud Storage notification whose objectGeneration is not a number: {generation!r}")
    size = None
    if body and attributes.get("payloadFormat") == "JSON_API_V1":
        with contextlib.suppress(orjson.JSONDecodeError, TypeError, ValueError):
            meta = orjson.loads(body)
            if isinstance(meta, dict) and str(meta.get("generation", generation)) == generation:
                size = int(meta["size"]) if "size" in meta else None
    return Notification(event, Announced(bucket, name, generation, size))


def batch_unit(message_ids: Sequence[str]) -> str:
    """A LogEntry batch's unit: a digest of its message ids (unique per topic), so a unit name is never reused for
    other content (a sink's insert token is built from it)."""
    digest = hashlib.blake2b("\n".join(message_ids).encode(), digest_size=12).hexdigest()
    return f"{BATCH_PREFIX}{digest}"


# -- bookkeeping ----------------------------------------------------------------------------------------------------


@dataclass(slots=True)
class _Held:
    """A message pulled and not yet acked or let go: when its deadline must next be extended (monotonic)."""

    message_id: str
    due: float


@dataclass(slots=True)
class _Batch:
    """A LogEntry batch with the sinks: the messages to ack once it is committed. Copies Pub/Sub hands out again
    meanwhile join `ack_ids`, also while the ack call is in flight (they are acked in a further round)."""

    unit: str
    ack_ids: list[str]
    message_ids: list[str]
    newest: float  # publish time (epoch seconds) of its newest message
    # Message ids no ack id of this run has come for: a batch an earlier run (a reload, a supervised restart) left
    # with the sinks. Those still to come back are acked then (`_done_ids`) once it commits.
    missing: set[str] = field(default_factory=set)


@dataclass
class SubscriptionStats:
    """What happened to the messages, for the end-of-run log line and tests."""

    messages: int = 0  # pulled (a message pulled again counts again)
    acked: int = 0
    entries: int = 0  # LogEntry messages delivered (or left out by `projects`)
    batches: int = 0  # LogEntry batches emitted
    objects: int = 0  # objects read to their end
    duplicates: int = 0  # messages, or objects, delivered before and announced again: acked without delivering
    ignored: int = 0  # notifications of other events, and objects outside `prefix`: acked
    superseded: int = 0  # objects replaced before they could be read: acked (the new generation has its message)
    poison: int = 0  # messages that cannot be parsed: left for the dead-letter policy
    left: int = 0  # notifications whose object could not be read: retried after `retry_after`
    pull_errors: int = 0


class PubSubSource:
    def __init__(
        self, config: PubSubSourceConfig, store: CheckpointStore, metrics: Metrics, executor: Executor | None = None
    ) -> None:
        self.config = config
        self.name: str = config.name
        self.subscription: str = config.subscription
        self.project = config.subscription.split("/")[1]
        self.store = store
        self.counters = metrics.sources[config.name]
        self.stats = SubscriptionStats()
        self.executor = executor  # the shared parse executor: LogEntry batches (pure CPU)
        self.deadline = int(config.ack_deadline)
        self.retry_after = int(config.retry_after)
        options: dict[str, Any] = {}
        if config.projects:
            options["projects"] = frozenset(config.projects)
        if config.sampling_rate is not None:
            options["sampling_rate"] = config.sampling_rate
        self.options = options
        self._client: Any = None
        self._storage: Any = None
        self._held: dict[str, _Held] = {}  # ack id -> its lease
        self._pending: dict[str, _Batch] = {}  # message id -> the batch with the sinks that holds it
        # message id -> (batch unit, when recorded): committed but not acked (an ack failed, or an earlier run's)
        self._done_ids: dict[str, tuple[str, float]] = {}
        self._forget: list[str] = []  # batch units acked: their rows go at the next lease tick
        self._reading: dict[str, asyncio.Event] = {}  # object unit -> set when its reader is done
        self._emitted: dict[str, str] = {}  # object unit -> generation read to the end, commit pending
        self._busy = 0  # notifications being handled (each takes an object slot)
        self._objects_mode = False  # the last pull held notifications: pull no more than free slots
        self._changed = asyncio.Event()  # a slot or room was freed
        self._tasks: set[asyncio.Task[None]] = set()
        self._slots: asyncio.Semaphore | None = None
        self._inbox: list[Any] = []  # LogEntry messages pulled, waiting for the batcher
        self._waiting_bytes = 0  # their bodies' size, and that of the batch being parsed (MAX_WAITING_BYTES)
        self._pull_failing = False  # the last pull failed: messages cannot come back, ids are not forgotten
        self._inbox_added = asyncio.Event()
        self._asked = 0  # messages the pulls in flight asked for
        self._delivering = False  # the batcher is delivering a batch
        self._pulls_over = asyncio.Event()  # the leading puller is done (a --once run found nothing, or a stop)
        self._flowing = asyncio.Event()  # the leader's last pull had messages: the helpers pull too
        self._last_batch = asyncio.Event()  # no puller is left: the batcher ends once the inbox is empty

    # -- the pull loop

    async def run(self, pipeline: Pipeline, once: bool, stop: asyncio.Event) -> None:
        # A restarted run (the daemon restarts a source that crashed) starts with nothing held.
        self._held.clear()
        self._pending.clear()
        self._reading.clear()
        self._tasks.clear()
        self._busy = 0
        self._inbox.clear()
        self._waiting_bytes = 0
        self._pull_failing = False
        self._asked = 0
        self._delivering = False
        self._pulls_over = asyncio.Event()
        self._last_batch = asyncio.Event()
        self._flowing = asyncio.Event()
        self._slots = asyncio.Semaphore(self.config.max_concurrency)
        readers = ThreadPoolExecutor(self.config.max_concurrency, thread_name_prefix=f"pubsub-{self.name}")
        closing = asyncio.Event()
        try:
            in_flight = await self._load_done_batches(pipeline)
            async with asyncio.TaskGroup() as tasks:
                tasks.create_task(self._keep_leased(closing), name=f"source:{self.name}:leases")
                for batch, watch in in_flight:
                    task = tasks.create_task(self._ack_when_committed(pipeline, batch, watch))
                    self._tasks.add(task)
                    task.add_done_callback(self._tasks.discard)
                batcher = tasks.create_task(self._batcher(pipeline, tasks, stop), name=f"source:{self.name}:batches")
                helpers = [
                    tasks.create_task(self._help_pull(readers, pipeline, tasks, stop), name=f"source:{self.name}:pull")
                    for _ in range(PULLS - 1)
                ]
                try:
                    await self._pull_loop(readers, pipeline, tasks, once, stop)
                    self._pulls_over.set()
                    if helpers:
                        await asyncio.wait(helpers)  # a pull of theirs in flight still brings messages
                    self._last_batch.set()
                    await asyncio.wait([batcher])
                    if self._tasks:
                        await asyncio.wait(self._tasks)
                finally:
                    self._pulls_over.set()
                    self._last_batch.set()
                    closing.set()
                    if self._inbox:  # stopping: not delivered, they come back after their deadline
                        self._unhold([m.ack_id for m in self._inbox])
                        self._inbox.clear()
                        self._waiting_bytes = 0
            if self._forget:  # rows of the batches acked since the last lease tick
                units, self._forget = self._forget, []
                await asyncio.to_thread(self.store.forget_units, self.name, units, time.time() + 1)
        except* PipelineFailed as group:
            raise group.exceptions[0] from None
        finally:
            readers.shutdown(wait=False, cancel_futures=True)
            client, self._client = self._client, None
            if client is not None:
                with contextlib.suppress(Exception):
                    await client.transport.close()
            s = self.stats
            log.info(
                "source=%s subscription=%s messages=%d acked=%d entries=%d batches=%d objects=%d duplicates=%d "
                "ignored=%d superseded=%d poison=%d left=%d pull_errors=%d",
                self.name,
                self.subscription,
                s.messages,
                s.acked,
                s.entries,
                s.batches,
                s.objects,
                s.duplicates,
                s.ignored,
                s.superseded,
                s.poison,
                s.left,
                s.pull_errors,
            )

    async def _load_done_batches(self, pipeline: Pipeline) -> list[tuple[_Batch, asyncio.Future[None]]]:
        """Batches of an earlier run whose messages may come back: their ids are acked then without being delivered
        again. A batch still with the sinks (a reload or a supervised restart: the same pipeline; a late-acking sink
        has it) is in flight: returned with the future of its commit, its messages joining it when they come back
        (acked once it commits, never delivered again: a unit is not read again while batches of it are in
        flight). A batch's row is written (not done) before it goes to the sinks and made done by the commit, so
        any other row is one of:
        - done: committed, the ack perhaps not through (a crash in between, a --once run whose sink committed
          only at close);
        - not done, and every sink recorded all of it: delivered, the commit did not land (a crash in between);
          committed now;
        - not done otherwise: not delivered (the sinks cut back what they had not recorded), so its messages are
          delivered again when they come back; a sink that had recorded it (with several sinks) gets them twice."""
        units = await asyncio.to_thread(self.store.units_with_prefix, self.name, BATCH_PREFIX)
        sinks = {w.sink.name for w in pipeline.workers}
        # Watched before the store is read (no await in between): a commit landing meanwhile resolves the watch.
        watches = {
            unit: pipeline.when_committed(self.name, unit, BATCH_VERSION)
            for unit in units
            if pipeline.has_pending(self.name, unit)
        }
        in_flight: list[tuple[_Batch, asyncio.Future[None]]] = []
        commits, partial = [], []
        now = time.time()
        for unit in units:
            ckpt = await asyncio.to_thread(self.store.get, self.name, unit)
            if (watch := watches.get(unit)) is not None:
                ids = [str(mid) for mid in ckpt.position.get("ids", ())] if ckpt is not None and ckpt.position else []
                if not ids:
                    pipeline.forget_watch(self.name, unit, watch)
                    continue
                batch = _Batch(unit, [], ids, 0.0, set(ids))
                for mid in ids:
                    self._pending[mid] = batch
                in_flight.append((batch, watch))
                continue
            if ckpt is None or not ckpt.position:
                continue
            ids = [str(mid) for mid in ckpt.position.get("ids", ())]
            n = int(ckpt.position.get("messages", len(ids)))
            if not ckpt.done:
                held = await asyncio.to_thread(self.store.sink_progress, self.name, unit)
                holding = {s for s, (v, p) in held.items() if s in sinks and v == ckpt.version and p >= n}
                if holding != sinks:
                    if holding:
                        partial.append(f"{unit} ({', '.join(sorted(holding))})")
                    ids = []
                commits.append(
                    Commit(self.name, unit, ckpt.version, {"messages": n, "ids": ids}, True, ckpt.records, n)
                )
                if not ids:
                    self._forget.append(unit)
            for mid in ids:
                self._done_ids[mid] = (unit, now)
        if commits:
            await asyncio.to_thread(self.store.commit, commits)
        if partial:
            log.warning(
                "source=%s %d batches were with some sinks only when the collector stopped: those sinks receive their "
                "messages again when they come back: %s",
                self.name,
                len(partial),
                "; ".join(partial[:10]),
            )
        if self._done_ids:
            log.info(
                "source=%s %d messages of earlier batches, delivered, are acked without delivering them if they come "
                "back",
                self.name,
                len(self._done_ids),
            )
        if in_flight:
            log.info(
                "source=%s %d messages of %d batches of an earlier run are still with the sinks: acked once they "
                "commit, not delivered again",
                self.name,
                sum(len(b.message_ids) for b, _ in in_flight),
                len(in_flight),
            )
        return in_flight

    def _room(self) -> int:
        """How many messages the next pull may ask for: within `max_outstanding_messages` held (counting what
        pulls in flight asked for), and while notifications arrive, within the free object slots."""
        count = min(self.config.max_messages, self.config.max_outstanding_messages - len(self._held) - self._asked)
        if len(self._inbox) + self._asked >= MAX_BATCH_MESSAGES or self._waiting_bytes >= MAX_WAITING_BYTES:
            return 0  # the batcher is behind: what is pulled must not pile up in memory (bodies are held until parsed)
        if self._objects_mode:
            count = min(count, self.config.max_concurrency - self._busy - self._asked)
        return count

    def _idle(self) -> bool:
        """Nothing pulled is waiting to be worked on: no object being read, no LogEntry waiting for its batch."""
        return not self._busy and not self._inbox and not self._delivering

    async def _pull_loop(
        self, readers: Executor, pipeline: Pipeline, tasks: asyncio.TaskGroup, once: bool, stop: asyncio.Event
    ) -> None:
        """The leading puller: reports pull errors (once per attempt) and decides when a --once run is over."""
        delay = BACKOFF_FIRST
        while not stop.is_set():
            count = self._room()
            if count <= 0:
                self._changed.clear()
                # --once, and every message held waits for a sink that commits later (at close): this run can take
                # no more; the rest is the next run's.
                stuck = once and self._idle()
                try:
                    async with asyncio.timeout(COMMIT_GRACE if stuck else None):
                        await _first(self._changed.wait(), stop.wait())
                except TimeoutError:
                    log.info(
                        "source=%s holds %d messages waiting for the sinks to commit (max_outstanding_messages): "
                        "this --once run pulls no more",
                        self.name,
                        len(self._held),
                    )
                    return
                continue
            try:
                if self._client is None:
                    credentials = await asyncio.to_thread(_pubsub_credentials, self.config)
                    self._client = _subscriber(self.config, credentials)
                received = await self._pull_some(count, readers, pipeline, tasks, stop)
            except (gexc.GoogleAPIError, GoogleAuthError, auth.CredentialsUnavailable, OSError) as exc:
                self._flowing.clear()
                self._pull_failing = True
                self.stats.pull_errors += 1
                self.counters.units_failed += 1  # seen in the summary, and `run --once` exits non-zero
                self._report_pull_error(exc, None if once else delay)
                if once or await sleep_or_stop(stop, delay):
                    return
                delay = min(delay * 2, BACKOFF_CAP)
                continue
            delay = BACKOFF_FIRST
            self._pull_failing = False
            if received is None:  # stopping
                return
            if received:
                self._flowing.set()
                continue
            self._flowing.clear()
            if not once:
                continue
            if self._idle():
                return  # --once: a pull found nothing and nothing pulled is still being worked on
            while not self._idle():  # an object being read may fail and come back later: look again after it
                self._changed.clear()
                await self._changed.wait()

    async def _help_pull(
        self, readers: Executor, pipeline: Pipeline, tasks: asyncio.TaskGroup, stop: asyncio.Event
    ) -> None:
        """Another puller, while messages are flowing (the leader's last pull had some): Pull returns a few dozen
        messages at a time, so pulls overlap to keep the batcher fed. Its errors are the leader's to report."""
        while not stop.is_set() and not self._pulls_over.is_set():
            if not self._flowing.is_set() or self._objects_mode:
                await _first(self._flowing.wait(), _first(stop.wait(), self._pulls_over.wait()))
                if self._objects_mode:
                    self._changed.clear()
                    await _first(self._changed.wait(), _first(stop.wait(), self._pulls_over.wait()))
                continue
            count = self._room()
            if count <= 0:
                self._changed.clear()
                await _first(self._changed.wait(), _first(stop.wait(), self._pulls_over.wait()))
                continue
            try:
                received = await self._pull_some(count, readers, pipeline, tasks, stop)
            except (gexc.GoogleAPIError, GoogleAuthError, auth.CredentialsUnavailable, OSError) as exc:
                log.debug("source=%s helper pull failed: %s", self.name, _describe(exc))
                self._flowing.clear()
                continue
            if not received:
                self._flowing.clear()

    async def _pull_some(
        self,
        count: int,
        readers: Executor,
        pipeline: Pipeline,
        tasks: asyncio.TaskGroup,
        stop: asyncio.Event,
    ) -> list[Any] | None:
        """One pull: notifications go to a handler each, LogEntry messages to the batcher's inbox. None if stopping."""
        pulled_at = time.monotonic()
        self._asked += count
        try:
            response = await _first(self._pull(count), stop.wait())
        finally:
            self._asked -= count
        if response is None:
            return None
        received = list(response.received_messages)
        if not received:
            return received
        self.stats.messages += len(received)
        entries = 0
        notes = []
        for m in received:
            self._held[m.ack_id] = _Held(m.message.message_id, pulled_at + FIRST_EXTENSION)
            if is_notification(m.message.attributes):
                notes.append(m)
            else:
                self._inbox.append(m)
                self._waiting_bytes += len(m.message.data)
                entries += 1
        self._objects_mode = bool(notes)
        for m in notes:
            self._busy += 1
            task = tasks.create_task(self._handle_notification(readers, pipeline, m, stop))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)
        if entries:
            self._inbox_added.set()
        return received

    async def _batcher(self, pipeline: Pipeline, tasks: asyncio.TaskGroup, stop: asyncio.Event) -> None:
        """LogEntry messages into batches: everything that arrived while the previous batch was being delivered
        (up to MAX_BATCH_MESSAGES), so a batch grows with the load and a quiet subscription waits for nothing."""
        while not stop.is_set():
            if not self._inbox:
                if self._last_batch.is_set():
                    return
                self._inbox_added.clear()
                await _first(self._inbox_added.wait(), _first(stop.wait(), self._last_batch.wait()))
                continue
            taken = self._inbox[:MAX_BATCH_MESSAGES]
            del self._inbox[:MAX_BATCH_MESSAGES]
            self._delivering = True
            try:
                await self._deliver_entries(pipeline, tasks, taken)
            finally:
                self._delivering = False
                self._waiting_bytes = max(0, self._waiting_bytes - sum(len(m.message.data) for m in taken))
                self._changed.set()

    async def _pull(self, count: int) -> Any:
        """One Pull of up to `count` messages, waiting up to `wait_time` for some; an answer past the deadline is
        an empty one. Returns the raw protobuf response (the proto-plus wrappers cost a lot per message)."""
        from google.pubsub_v1.types import PullResponse

        retry = retry_async.AsyncRetry(
            initial=0.25,
            maximum=5.0,
            multiplier=2.0,
            timeout=30.0,
            predicate=retry_async.if_exception_type(*_TRANSIENT),
        )
        try:
            response = await self._client.pull(
                subscription=self.subscription, max_messages=count, retry=retry, timeout=self.config.wait_time
            )
        except gexc.DeadlineExceeded:
            return PullResponse.pb(PullResponse())
        return PullResponse.pb(response)

    def _report_pull_error(self, exc: BaseException, retry_in: float | None) -> None:
        then = f"retrying in {retry_in:.0f}s" if retry_in is not None else "giving up (--once)"
        if isinstance(exc, gexc.RetryError) and exc.cause is not None:
            exc = exc.cause
        if isinstance(exc, gexc.NotFound):
            log.error(
                "source=%s subscription=%s does not exist (404 from Pub/Sub): check the name "
                "(projects/PROJECT/subscriptions/NAME); %s",
                self.name,
                self.subscription,
                then,
            )
        elif isinstance(exc, gexc.PermissionDenied | gexc.Unauthenticated | gexc.Forbidden | gexc.Unauthorized):
            log.error(
                "source=%s subscription=%s: CREDENTIALS REJECTED: %s. The source's identity needs "
                "roles/pubsub.subscriber on the subscription (and roles/storage.objectViewer on the buckets its "
                "notifications name); %s",
                self.name,
                self.subscription,
                _describe(exc),
                then,
            )
        elif isinstance(exc, auth.CredentialsUnavailable):
            log.error("source=%s subscription=%s: %s; %s", self.name, self.subscription, exc, then)
        else:
            log.error(
                "source=%s subscription=%s: pull failed: %s; %s", self.name, self.subscription, _describe(exc), then
            )

    # -- LogEntry messages

    async def _deliver_entries(self, pipeline: Pipeline, tasks: asyncio.TaskGroup, received: list[Any]) -> None:
        """One batch of every LogEntry message of a pull that is not delivered already; acked when committed."""
        fresh: list[Any] = []
        seen: set[str] = set()
        again: list[tuple[str, str, tuple[str, float]]] = []  # (ack id, message id, its done entry): ack now
        for m in received:
            mid = m.message.message_id
            if (done := self._done_ids.pop(mid, None)) is not None:
                again.append((m.ack_id, mid, done))  # delivered before, committed
            elif (batch := self._pending.get(mid)) is not None:
                batch.ack_ids.append(m.ack_id)  # redelivered while its batch is with the sinks: acked with it
                batch.missing.discard(mid)
                self.stats.duplicates += 1
            elif mid in seen:
                fresh.append(m)  # the same message twice in one pull: parsed once, both acked
            else:
                seen.add(mid)
                fresh.append(m)
        if again:
            self.stats.duplicates += len(again)
            if not await self._ack([ack_id for ack_id, _, _ in again]):  # they come back: still delivered
                for _, mid, done in again:
                    self._done_ids[mid] = done
        if not fresh:
            return
        first: dict[str, int] = {}
        bodies, ids, order = [], [], []
        for i, m in enumerate(fresh):
            mid = m.message.message_id
            if mid not in first:
                first[mid] = len(ids)
                bodies.append(m.message.data)
                ids.append(mid)
            order.append((i, first[mid]))
        unit = batch_unit(ids)
        loop = asyncio.get_running_loop()
        parse = functools.partial(parse_entries, bodies, unit=unit, source=self.name, names=ids, options=self.options)
        result, bad = await loop.run_in_executor(self.executor, parse)
        bad_set = set(bad)
        self._report_parse_errors(result, fresh, order, bad_set)
        good_acks = [fresh[i].ack_id for i, j in order if j not in bad_set]
        if bad_set:
            self.stats.poison += len(bad_set)
            await self._let_go([fresh[i].ack_id for i, j in order if j in bad_set])
        good_ids = [mid for j, mid in enumerate(ids) if j not in bad_set]
        self.stats.entries += len(good_ids)
        self.stats.duplicates += len(fresh) - len(ids)
        newest = max((_publish_time(fresh[i]) for i, j in order if j not in bad_set), default=0.0)
        n = result.batch.num_rows
        self.counters.errors += len(result.errors)
        if not good_ids:
            return
        if n == 0:  # every flow left out by `projects`: nothing for the sinks, the messages are done
            await self._ack(good_acks)
            self._lag(newest)
            return
        batch = _Batch(unit, good_acks, good_ids, newest)
        for mid in good_ids:
            self._pending[mid] = batch
        watch = pipeline.when_committed(self.name, unit, BATCH_VERSION)
        position = {"messages": len(good_ids), "ids": good_ids}
        try:
            # Its ids, before any sink has it: a restart tells a batch the sinks had from one they did not
            # (`_load_done_batches`).
            await asyncio.to_thread(
                self.store.commit, [Commit(self.name, unit, BATCH_VERSION, position, False, 0, len(good_ids))]
            )
            done = Delivery(self.name, unit, BATCH_VERSION, result.batch, position, True, n, len(good_ids), 0)
            await pipeline.emit(done)
        except BaseException:
            pipeline.forget_watch(self.name, unit, watch)
            self._drop_pending(batch)
            raise
        self.stats.batches += 1
        self.counters.records += n
        self.counters.bytes_read += sum(len(b) for b in bodies)
        task = tasks.create_task(self._ack_when_committed(pipeline, batch, watch))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def _report_parse_errors(
        self, result: ParseResult, fresh: list[Any], order: list[tuple[int, int]], bad: set[int]
    ) -> None:
        attempts = {j: fresh[i].delivery_attempt for i, j in order}
        for k, err in enumerate(result.errors):
            if k >= MAX_ERRORS_LOGGED:
                log.warning("source=%s %d more errors in this pull not shown", self.name, len(result.errors) - k)
                break
            log.warning("source=%s message %s", self.name, err)
        if bad:
            ids = sorted(fresh[i].message.message_id for i, j in order if j in bad)
            tries = [attempts[j] for j in bad]
            log.error(
                "source=%s subscription=%s: %d messages cannot be parsed (%s%s): not acked, they come back after "
                "retry_after (%ds); %s",
                self.name,
                self.subscription,
                len(ids),
                ", ".join(ids[:10]),
                ", ..." if len(ids) > 10 else "",
                self.retry_after,
                _fate(tries),
            )

    async def _ack_when_committed(self, pipeline: Pipeline, batch: _Batch, watch: asyncio.Future[None]) -> None:
        """Hold the batch's messages (extended, known in `_pending`) while the pipeline holds the batch; ack them
        once it is committed."""
        try:
            if await self._committed(pipeline, batch.unit, watch):
                ok = True
                while batch.ack_ids:  # copies redelivered while an ack call is in flight join: a further round
                    ack_ids, batch.ack_ids = batch.ack_ids, []
                    ok = await self._ack(ack_ids) and ok
                # No await from here on: a copy arriving now finds the ids in `_done_ids`.
                now = time.time()
                for mid in batch.message_ids if not ok else batch.missing:
                    self._done_ids[mid] = (batch.unit, now)  # they come back: acked then, not delivered again
                if ok and not batch.missing:
                    self._forget.append(batch.unit)
                self._lag(batch.newest)
            else:
                log.info(
                    "source=%s %d messages read, not yet committed by the sinks: not acked (they come back after "
                    "the ack deadline)",
                    self.name,
                    len(batch.ack_ids),
                )
                self._unhold(batch.ack_ids)
        finally:
            self._drop_pending(batch)

    async def _committed(self, pipeline: Pipeline, unit: str, watch: asyncio.Future[None]) -> bool:
        """Wait for a unit's commit for as long as the pipeline holds it and a pull may bring its messages back
        (a daemon: until it stops; --once: until its pulls are over), then COMMIT_GRACE more: what is not committed
        by then is not acked (a sink that commits at close: the next run acks it). A unit the pipeline dropped
        (abandoned, nothing of it left in flight) is not waited for. PipelineFailed if a sink failed for good."""
        dropped = pipeline.settled(self.name, unit)
        try:
            either = [watch, dropped]
            await _first(asyncio.wait(either, return_when=asyncio.FIRST_COMPLETED), self._last_batch.wait())
            if not watch.done() and not dropped.done():
                await asyncio.wait(either, timeout=COMMIT_GRACE, return_when=asyncio.FIRST_COMPLETED)
        finally:
            dropped.cancel()
        if watch.done():
            watch.result()  # PipelineFailed if a sink failed for good
            return True
        return False

    def _drop_pending(self, batch: _Batch) -> None:
        for mid in batch.message_ids:
            if self._pending.get(mid) is batch:
                del self._pending[mid]

    # -- Cloud Storage notifications

    async def _handle_notification(self, readers: Executor, pipeline: Pipeline, m: Any, stop: asyncio.Event) -> None:
        """Read the object the notification names, wait for the sinks, ack; leave the message otherwise."""
        mid = m.message.message_id
        busy = True

        def release() -> None:
            """The notification's object slot is free: reading is over (waiting for the sinks holds none)."""
            nonlocal busy
            if busy:
                busy = False
                self._busy -= 1
                self._changed.set()

        try:
            assert self._slots is not None
            async with self._slots:
                try:
                    note = decode_notification(m.message.attributes, m.message.data)
                except NotUsable as exc:
                    self.stats.poison += 1
                    self.counters.errors += 1
                    log.error(
                        "source=%s subscription=%s message %s: %s; not acked: it comes back after retry_after "
                        "(%ds); %s",
                        self.name,
                        self.subscription,
                        mid,
                        exc,
                        self.retry_after,
                        _fate([m.delivery_attempt]),
                    )
                    await self._let_go([m.ack_id])
                    return
                obj = note.obj
                if obj is None or not obj.name.startswith(self.config.prefix):
                    self.stats.ignored += 1
                    await self._ack([m.ack_id])
                    return
                watch = await self._read_object(readers, pipeline, obj, mid, m.delivery_attempt, stop)
            release()
            if watch is None:
                await self._ack([m.ack_id])  # done before, or superseded
                return
            if isinstance(watch, Outcome):
                if watch is Outcome.FAILED:
                    self.stats.left += 1
                    await self._let_go([m.ack_id])
                return  # STOPPED: it comes back after its deadline (this collector resumes from its checkpoint)
            if not await self._committed(pipeline, obj.unit, watch):
                log.info("source=%s message %s: %s read, not yet committed; not acked", self.name, mid, obj.label)
                return
            await self._ack([m.ack_id])
            self._lag(_publish_time(m))
        except PipelineFailed:
            raise
        except Exception:  # a bug must not take the other messages down: the message comes back later
            self.counters.errors += 1
            log.exception("source=%s message %s failed unexpectedly; not acked", self.name, mid)
            await self._let_go([m.ack_id])
        finally:
            release()
            self._unhold([m.ack_id])

    async def _read_object(
        self,
        readers: Executor,
        pipeline: Pipeline,
        obj: Announced,
        mid: str,
        attempt: int,
        stop: asyncio.Event,
    ) -> asyncio.Future[None] | Outcome | None:
        """Deliver one object: the future of its commit, None when there is nothing to deliver (done before,
        superseded), or Outcome.FAILED / STOPPED (not acked)."""
        unit, version = obj.unit, obj.generation
        while (other := self._reading.get(unit)) is not None:
            await other.wait()  # the same object from another message: one reader, then look at the checkpoint
        self._reading[unit] = mine = asyncio.Event()
        try:
            watch = pipeline.when_committed(self.name, unit, version)  # before the store: a commit may land between
            if await self._done(unit, version):
                pipeline.forget_watch(self.name, unit, watch)
                self.stats.duplicates += 1
                return None
            if self._emitted.get(unit) == version:
                self.stats.duplicates += 1
                return watch  # read to the end for another message; its commit is on the way
            loop = asyncio.get_running_loop()
            try:
                if self._storage is None:
                    self._storage = await asyncio.to_thread(_storage, self.config, self.project)
                size = obj.size
                if size is None:  # a notification without the object's metadata (payloadFormat NONE)
                    size = await loop.run_in_executor(readers, object_size, self._storage.client, obj)
            except (auth.CredentialsUnavailable, gexc.GoogleAPIError, GoogleAuthError, OSError) as exc:
                pipeline.forget_watch(self.name, unit, watch)
                self.counters.units_failed += 1
                log.error("source=%s unit=%s cannot be read: %s", self.name, obj.label, auth.describe(exc))
                return Outcome.FAILED
            if size is None:
                pipeline.forget_watch(self.name, unit, watch)
                self.counters.units_failed += 1
                return await self._gone(readers, obj, mid, attempt)
            target = gcsio.GcsObject(obj.bucket, obj.name, int(obj.generation), size)
            opener = gcsio.ObjectReader(
                self._storage.http, self._storage.endpoint, target, self.name, self.options, provider="gcp"
            )
            while True:
                outcome = await deliver_unit(
                    pipeline,
                    source=self.name,
                    unit=unit,
                    version=version,
                    label=obj.label,
                    open_results=opener,
                    store=self.store,
                    counters=self.counters,
                    executor=readers,
                    stop=stop,
                    log=log,
                    bytes_read=opener.bytes_read,
                    read_errors=(RemoteReadError,),
                )
                if outcome is not Outcome.DEFERRED:
                    break
                # An earlier read's batches (a redelivered message) are still with the sinks: wait for them.
                await _first(pipeline.settled(self.name, unit), stop.wait())
                if stop.is_set():
                    outcome = Outcome.STOPPED
                    break
                pipeline.forget_watch(self.name, unit, watch)
                watch = pipeline.when_committed(self.name, unit, version)
                if await self._done(unit, version):
                    pipeline.forget_watch(self.name, unit, watch)
                    self.stats.duplicates += 1
                    return None
            if outcome is Outcome.DONE:
                self.stats.objects += 1
                self._emitted[unit] = version
                watch.add_done_callback(functools.partial(self._forget_emitted, unit, version))
                return watch
            pipeline.forget_watch(self.name, unit, watch)
            if outcome is Outcome.FAILED:
                # Reads name a generation: one that is gone was replaced (superseded) or deleted (not skipped).
                gone = await self._gone(readers, obj, mid, attempt, after_read=True)
                if gone is not Outcome.FAILED:
                    return gone

                log.warning(
                    "source=%s message %s not acked: %s is retried after retry_after (%ds); %s",
                    self.name,
                    mid,
                    obj.label,
                    self.retry_after,
                    _fate([attempt]),
                )
            return outcome
        finally:
            del self._reading[unit]
            mine.set()

    async def _gone(
        self, readers: Executor, obj: Announced, mid: str, attempt: int, after_read: bool = False
    ) -> Outcome | None:
        """After a failed read: None if a newer generation exists (superseded: it has its own notification);
        Outcome.FAILED otherwise, logged as "does not exist" when there is no generation at all (deleted after it
        was announced, or a wrong notification: not skipped), and `after_read` when it still exists (the read
        failed for another reason, logged by the read)."""
        assert self._storage is not None
        loop = asyncio.get_running_loop()
        try:
            live = await loop.run_in_executor(readers, live_generation, self._storage.client, obj)
        except Exception as exc:
            log.warning("source=%s unit=%s: cannot look up its live generation: %s", self.name, obj.label, exc)
            return Outcome.FAILED
        if live is not None and live.isdigit() and int(live) > int(obj.generation):
            self.stats.superseded += 1
            log.warning(
                "source=%s unit=%s was replaced (generation %s) before it could be read; the new generation is "
                "announced by its own notification",
                self.name,
                obj.label,
                live,
            )
            return None
        if live is None:
            log.error(
                "source=%s message %s: %s does not exist; not acked: it comes back after retry_after (%ds); %s",
                self.name,
                mid,
                obj.label,
                self.retry_after,
                _fate([attempt]),
            )
        elif after_read:
            log.warning(
                "source=%s message %s not acked: %s is retried after retry_after (%ds); %s",
                self.name,
                mid,
                obj.label,
                self.retry_after,
                _fate([attempt]),
            )
        return Outcome.FAILED

    async def _done(self, unit: str, version: str) -> bool:
        ckpt = await asyncio.to_thread(self.store.get, self.name, unit)
        return ckpt is not None and ckpt.done and ckpt.version == version

    def _forget_emitted(self, unit: str, version: str, future: asyncio.Future[None]) -> None:
        if not future.cancelled() and future.exception() is None and self._emitted.get(unit) == version:
            del self._emitted[unit]

    def _lag(self, publish_time: float) -> None:
        self.counters.newest_object_time = max(self.counters.newest_object_time, publish_time)

    # -- acks and deadlines

    def _unhold(self, ack_ids: list[str]) -> None:
        """No longer extended (acked, let go, or left to expire); makes room for the next pull."""
        for ack_id in ack_ids:
            self._held.pop(ack_id, None)
        self._changed.set()

    async def _ack(self, ack_ids: list[str]) -> bool:
        """Acknowledge; False if it failed (the messages come back, and are then found delivered)."""
        self._unhold(ack_ids)
        ok = True
        for start in range(0, len(ack_ids), ACK_IDS_PER_REQUEST):
            chunk = ack_ids[start : start + ACK_IDS_PER_REQUEST]
            try:
                await self._client.acknowledge(subscription=self.subscription, ack_ids=chunk, timeout=60.0)
            except gexc.GoogleAPIError as exc:
                ok = False
                self.counters.units_failed += 1
                log.warning(
                    "source=%s subscription=%s: acknowledging %d messages failed: %s (they come back and are acked "
                    "then without being delivered again)",
                    self.name,
                    self.subscription,
                    len(chunk),
                    _describe(exc),
                )
                continue
            self.stats.acked += len(chunk)
        return ok

    async def _let_go(self, ack_ids: list[str]) -> None:
        """Stop holding messages not to be acked: they come back after `retry_after`, never at once (a nack would
        hand them out again immediately, to every collector in turn)."""
        self._unhold(ack_ids)
        await self._modify(ack_ids, self.retry_after, "setting the retry delay of")

    async def _modify(self, ack_ids: list[str], seconds: int, what: str) -> None:
        for start in range(0, len(ack_ids), ACK_IDS_PER_REQUEST):
            chunk = ack_ids[start : start + ACK_IDS_PER_REQUEST]
            try:
                await self._client.modify_ack_deadline(
                    subscription=self.subscription, ack_ids=chunk, ack_deadline_seconds=seconds, timeout=60.0
                )
            except gexc.GoogleAPIError as exc:
                log.warning(
                    "source=%s subscription=%s: %s %d messages failed: %s",
                    self.name,
                    self.subscription,
                    what,
                    len(chunk),
                    _describe(exc),
                )

    async def _keep_leased(self, closing: asyncio.Event) -> None:
        """Extend the deadline of every held message that is due (every third of `ack_deadline`, the first time
        before the shortest subscription deadline ends), delete the rows of acked batches, and every
        FORGET_BATCHES_AFTER what is no longer needed (`_forget_old`)."""
        interval = self.deadline / 3
        next_forget = time.monotonic() + FORGET_BATCHES_AFTER
        while not await sleep_or_stop(closing, LEASE_TICK):
            now = time.monotonic()
            due = [ack_id for ack_id, h in self._held.items() if h.due <= now]
            if due:
                for ack_id in due:
                    self._held[ack_id].due = now + interval
                await self._modify(due, self.deadline, "extending the ack deadline of")
            if self._forget:
                units, self._forget = self._forget, []
                await asyncio.to_thread(self.store.forget_units, self.name, units, time.time() + 1)
            if time.monotonic() >= next_forget and not self._pull_failing:
                next_forget = time.monotonic() + FORGET_BATCHES_AFTER
                await self._forget_old()

    async def _forget_old(self) -> None:
        """Ids of delivered messages recorded more than FORGET_BATCHES_AFTER ago (a message not acked comes back
        within its deadline to whichever collector pulls: after that long of pulling it came back here and was
        acked, or went to another collector), rows of batches no id of which is still kept, and checkpoints of
        objects older than Pub/Sub's longest retention. Not while pulls fail (nothing can come back then)."""
        horizon = time.time() - FORGET_BATCHES_AFTER
        self._done_ids = {mid: done for mid, done in self._done_ids.items() if done[1] >= horizon}
        keep = {unit for unit, _ in self._done_ids.values()} | {b.unit for b in self._pending.values()}
        batches = await asyncio.to_thread(self.store.units_with_prefix, self.name, BATCH_PREFIX)
        await asyncio.to_thread(self.store.forget_units, self.name, [u for u in batches if u not in keep], horizon)
        forgotten = await asyncio.to_thread(self.store.forget_before, self.name, time.time() - FORGET_OBJECTS_AFTER)
        if forgotten:
            log.info("source=%s forgot %d object checkpoints older than 32 days", self.name, forgotten)


def _publish_time(m: Any) -> float:
    t = m.message.publish_time
    return float(t.seconds) + t.nanos / 1e9


def _fate(attempts: Sequence[int]) -> str:
    """What becomes of a message not acked, from the delivery attempts Pub/Sub reports (0: no dead-letter policy)."""
    if not attempts or all(v == 0 for v in attempts):
        return "the subscription has no dead-letter policy: it comes back every retry_after for its whole retention"
    tries = ", ".join(str(v) for v in sorted(set(attempts)))
    return f"delivery attempt {tries}: the dead-letter topic takes it after the subscription's max_delivery_attempts"


def _describe(exc: BaseException) -> str:
    if isinstance(exc, gexc.GoogleAPICallError):
        return f"{exc.code} {exc.message}".strip()
    return f"{type(exc).__name__}: {exc}"


async def _first(main: Awaitable[T], other: Awaitable[Any]) -> T | None:
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
