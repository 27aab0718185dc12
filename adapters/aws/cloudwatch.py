"""`aws_cloudwatch` source: VPC flow logs delivered to CloudWatch Logs, one log stream per network interface.

How it reads, and why:
- Where: every identity (one per account, adapters/aws/session.py) x region (the account's `regions`, else the
  source's `regions`, else its `region`) x log group (`log_groups` by name, and every group under
  `log_group_prefix`) x log stream. Groups and streams are listed (DescribeLogGroups, DescribeLogStreams, paged)
  at start and every `discover_interval`; a place whose listing failed is listed again at the next poll.
- A stream is a unit, named `[ACCOUNT:]REGION:GROUP:STREAM` (the account when the source lists `accounts`).
  Region and account are in the name even when a single one is configured: a unit name must not change when a
  region or an account is added later, or every stream would start over. `:` occurs in no group or stream name.
  A stream is read from its checkpoint only once no batch of it is in flight: after a supervised restart or a
  reload, the earlier run's batches may not be acked yet (a Parquet file acks when it closes), and read again
  from the older checkpoint they would reach such a sink twice. It is left unread (logged once) and tried at the
  next poll; the other streams go on.
- FilterLogEvents, not GetLogEvents. FilterLogEvents returns each event's id, which is what tells an event
  delivered from one that is not when several share a timestamp or one arrives late; it reads up to 100 streams
  per request, and the read APIs have low per-account, per-region rate quotas (FilterLogEvents: 5 requests/s), so
  one request per stream per poll (GetLogEvents, which has no ids and a forward token that repeats at the end)
  would not scale to groups of thousands of interfaces. Streams are queried in batches of up to 100 with similar
  start times, paged with nextToken to the end (empty pages with a token are normal). Events come in the API's
  order (timestamp, ingestion time, request): the same events in the same order whenever a range is read again.
- Late events. Flow log events are stamped with the flow's start and ingested minutes later, so an event older
  than what was delivered can still come. Each read of a stream starts at its newest delivered timestamp minus
  `lookback`. While running, an event is new unless its id is among those the stream delivered within the
  look-back, remembered in memory, or the checkpoint this process started from says it was delivered. The ids are
  kept whole, packed as integers (about 100 bytes each): a hash would be smaller, but a collision would make a new
  event look delivered, that is lose it. A source remembers at most SEEN_PER_SOURCE (1,000,000, ~100 MB), shared
  max-min fairly: past it, the streams holding more than a common share forget the ids of their oldest events
  (logged once per stream), and an event older than those remembered is judged as a restart would judge it, by
  what this process's checkpoints describe (everything it delivered, but what a restart would repeat too): a late
  event is still delivered (logged with a count), unless CloudWatch made it readable out of order of ingestion.
- Checkpoint (the unit's position), what survives a restart instead of that set. The part `ts`, `ids`, `ingest`
  describes everything up to the last *complete* read of the stream (all its pages): `ts` its newest timestamp,
  `ids` the event ids delivered at `ts` (left out beyond 1,000), `ingest` the newest ingestion time it went past.
  An event older than `ts` counts as delivered when it was ingested by `ingest` (a complete read would have seen
  it); one at `ts` when its id is in `ids` (by ingestion time when they were left out). A checkpoint taken in the
  middle of a read adds a `cuts` entry: that read took events in the API's order up to a key (timestamp,
  ingestion time, plus the ids at that key) among those ingested by its `bound` (the newest ingestion time it had
  passed when it took the event at that key). A single high-water mark would not do: late events are read in
  timestamp order, not in order of arrival, so a checkpoint between two of them would make the one read second
  look delivered. A read cut short (an error, a stop) keeps its cut in the checkpoints of the reads after it
  until one of them is complete: the next read skips what it delivered, so its own cut does not describe those
  events. At most 16 cuts are kept (one another covers is dropped); past that the oldest goes, and what only it
  described is delivered again after a crash: duplicates, never a gap. `newest` is the newest timestamp
  delivered (where the next read starts), `events` and `crc` count the events consumed and checksum their ids in
  order (see Progress). The version is the stream's creation time: a stream deleted and created again under its
  name is read as new.
  So a restart repeats nothing and loses nothing, except an event that became visible to readers out of order
  of ingestion while the collector was down (CloudWatch's read-after-write lag), and events later than
  `lookback`, as while running.
- Progress (which lets a sink skip what it already has after a crash) is `events << 32 | crc`. A restart reads
  again the events after the checkpoint; where a sink recorded more, the batch is cut exactly at the sink's
  count, and the CRC says whether the events read again are the ones it holds. If they are not (late events
  landed in that range meanwhile), the unit gets a new version (`CREATION.N`): those sinks receive that range
  again, duplicates rather than a silent gap. Until the count is reached, that range is held as one batch.
- Batches hold at most 10,000 events of a stream, and at most 20,000 events wait across the streams of one
  request: memory stays bounded whatever the backlog. The last batch of a stream in a poll is marked done (the
  stream is caught up), which is what the `units` metric counts.
- Messages are parsed as header-less AWS lines in `fields` order (v2 by default) by the shared text parser, in the
  given executor. An empty message, a header line, or a line the parser rejects is an error that names log group,
  stream and event id; NODATA/SKIPDATA lines are status rows.
- `start_from` is where a stream without checkpoint starts; `now` and durations are fixed at the first run and kept
  in the store (unit `\\x00start`), so a stream that appears later is read from the same instant. Nothing older
  than `start_from` is ever delivered. Without it, new streams are read from the start of their retention.
- Failures stay local: a wrong credential, a denied or missing group, or throttling beyond botocore's retries is
  logged once per poll with account, region and log group named, counted in `units_failed`, and retried at the
  next poll; the other accounts and groups go on.
- The store stays small: streams whose newest event is past the group's retention (plus a week for AWS's deletion
  delay) are neither polled nor kept, and the checkpoints of streams no longer listed are dropped a day after
  their last update. Streams idle for an hour are polled only when a listing shows new data in them.
"""

from __future__ import annotations

import asyncio
import logging
import time
import zlib
from collections.abc import AsyncIterator, Iterable
from concurrent.futures import Executor
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import pyarrow as pa
from botocore.exceptions import BotoCoreError, ClientError

from adapters.aws.config import CloudWatchSourceConfig, auth_of
from adapters.aws.fields import KNOWN_FIELDS
from adapters.aws.parse import parse_text
from adapters.aws.session import Identity, IdentitySpec, describe_error, error_code, identities
from adapters.units import MAX_ERRORS_LOGGED, status_rows
from collector.aio import sleep_or_stop
from collector.checkpoints import CheckpointStore, Commit
from collector.metrics import Metrics
from collector.pipeline import Delivery, Pipeline, PipelineFailed
from collector.schema import FlowBatch, empty_batch

log = logging.getLogger("flowcollector.source.aws_cloudwatch")

DEFAULT_REGION = "us-east-1"
STREAMS_PER_REQUEST = 100  # FilterLogEvents' limit on logStreamNames
BATCH_EVENTS = 10_000  # events of one stream per batch (~2 MB of text)
PENDING_EVENTS = 20_000  # events waiting across the streams of one request before the largest are emitted
SEEN_PER_SOURCE = 1_000_000  # event ids remembered across the streams of a source (~100 bytes each)
IDS_AT_TS = 1_000  # event ids at the newest timestamp kept in a checkpoint
CUTS_KEPT = 16  # reads cut short whose cuts a checkpoint keeps until a complete read supersedes them
REQUEST_SPREAD_MS = 900_000  # streams whose start times differ more are not queried together
ACTIVE_MS = 3_600_000  # a stream written to within this is polled every poll, not only after a listing
EXPIRY_MARGIN_MS = 7 * 86_400_000  # CloudWatch deletes expired events within ~72 h: a wide margin on top
FORGET_AFTER = 86_400.0  # seconds a checkpoint of a stream no longer listed is kept
SAME_TOKEN_LIMIT = 100  # consecutive identical nextTokens before a read is abandoned (a stuck server)
_CRC_BITS = 32
_MINUTE_MS = 60_000
_OFFSET_BITS = 16  # a timestamp's milliseconds within its minute
_ANCHOR = "\x00start"  # the first-run instant of `start_from: now` / a duration; ':' marks every stream unit


@dataclass(frozen=True, slots=True)
class LogGroup:
    identity: Identity
    region: str
    name: str
    unit_prefix: str  # every stream unit of the group starts with it
    retention_days: int | None

    @property
    def label(self) -> str:
        return f"{self.identity.label} region {self.region} log group {self.name}"


@dataclass(frozen=True, slots=True)
class Cut:
    """A read cut short (a checkpoint mid-read): it delivered, in the API's order, the new events up to the key
    (timestamp, ingestion time), plus those of `ids` at that very key, of the events ingested by `bound`."""

    ts: int
    ingest: int
    ids: frozenset[str] | None  # None: too many to keep; then none at that key counts as delivered
    bound: int

    def covers(self, ts: int, ingest: int, event_id: str) -> bool:
        if ingest > self.bound:
            return False  # not ingested yet when that read went by: not delivered by it
        if (ts, ingest) != (self.ts, self.ingest):
            return (ts, ingest) < (self.ts, self.ingest)
        return self.ids is not None and event_id in self.ids

    def within(self, other: Cut) -> bool:
        """Whether `other` covers every event this one does, so that this one can go without losing anything."""
        if self.bound > other.bound or (self.ts, self.ingest) > (other.ts, other.ingest):
            return False
        if (self.ts, self.ingest) < (other.ts, other.ingest) or not self.ids:
            return True  # other covers all of this key's events ingested by its bound; or this covers none at it
        return other.ids is not None and self.ids <= other.ids


@dataclass(frozen=True, slots=True)
class Delivered:
    """What a checkpoint says was delivered of a stream: everything up to the last complete read, described by its
    newest timestamp, the ids at it and its newest ingestion time, and what reads cut short took after that."""

    ts: int = -1
    ids: frozenset[str] | None = frozenset()  # None: too many to keep; then judged by ingestion time
    ingest: int = -1
    cuts: tuple[Cut, ...] = ()

    def covers(self, ts: int, ingest: int, event_id: str) -> bool:
        if ts < self.ts or (ts == self.ts and self.ids is None):
            done = ingest <= self.ingest
        else:
            done = ts == self.ts and self.ids is not None and event_id in self.ids
        return done or any(c.covers(ts, ingest, event_id) for c in self.cuts)

    @classmethod
    def of(cls, position: dict[str, Any]) -> Delivered:
        def ids(value: list[str] | None) -> frozenset[str] | None:
            return frozenset(value) if value is not None else None

        cuts = tuple(Cut(c["ts"], c["ingest"], ids(c["ids"]), c["bound"]) for c in position.get("cuts", ()))
        return cls(int(position["ts"]), ids(position["ids"]), int(position["ingest"]), cuts)


def _listed(ids: set[str] | frozenset[str] | None) -> list[str] | None:
    return sorted(ids) if ids is not None else None


def _kept(cuts: tuple[Cut, ...], new: Cut, label: str) -> tuple[Cut, ...]:
    """`cuts` and `new`, less those another covers entirely, and at most CUTS_KEPT: past that the oldest goes, so
    that a stream whose reads keep failing does not grow its checkpoint without end. What only the forgotten cut
    described is delivered again after a crash (duplicates, never a gap: a cut only ever says "delivered")."""
    cuts = (*cuts, new)

    def redundant(i: int, c: Cut) -> bool:  # of two that cover the same events, the newer stays
        return any(c.within(o) and (j > i or not o.within(c)) for j, o in enumerate(cuts) if j != i)

    kept = tuple(c for i, c in enumerate(cuts) if not redundant(i, c))
    if len(kept) > CUTS_KEPT:
        log.warning(
            "%s: more than %d reads in a row cut short; the checkpoint forgets the oldest (after a crash, what it "
            "delivered is delivered again)",
            label,
            CUTS_KEPT,
        )
        kept = kept[-CUTS_KEPT:]
    return kept


def _id_key(event_id: str) -> int:
    """An event id as one integer that is the whole id, not a hash of it: remembered ids tell delivered events from
    new ones, and a hash collision would make a new event look delivered, that is lose it. CloudWatch's ids are
    strings of 56 decimal digits: read as the number they spell (behind a 1, which keeps leading zeros) they take
    188 bits, a quarter of the string's size; any other id is taken as its UTF-8 bytes (behind a 1 byte). The
    lowest bit tells the two forms apart."""
    if event_id.isascii() and event_id.isdigit() and len(event_id) <= 200:
        return int("1" + event_id) << 1
    return int.from_bytes(b"\x01" + event_id.encode(), "big") << 1 | 1


class RememberedIds:
    """The ids of the events a stream delivered within the look-back, grouped by the minute of their timestamp, so
    that forgetting the oldest (out of the look-back, or beyond the stream's share of SEEN_PER_SOURCE) drops whole
    minutes instead of going through every id. Each id is kept with its milliseconds in the minute, as one int, in
    a dict rather than a set: CPython's dicts are compact (measured: about 100 bytes per id all told, a set of the
    same ints up to 140 when small sets grow fourfold; a dict of the id strings, as before, about 170)."""

    __slots__ = ("_minutes", "count")

    def __init__(self) -> None:
        self._minutes: dict[int, dict[int, None]] = {}
        self.count = 0

    def __len__(self) -> int:
        return self.count

    def add(self, ts: int, key: int) -> None:
        minute, offset = divmod(ts, _MINUTE_MS)
        ids = self._minutes.get(minute)
        if ids is None:
            ids = self._minutes[minute] = {}
        before = len(ids)
        ids[key << _OFFSET_BITS | offset] = None
        self.count += len(ids) - before

    def has(self, ts: int, key: int) -> bool:
        minute, offset = divmod(ts, _MINUTE_MS)
        ids = self._minutes.get(minute)
        return ids is not None and (key << _OFFSET_BITS | offset) in ids

    def oldest(self) -> int | None:
        """The oldest minute held (epoch ms), a bound below every timestamp held."""
        return min(self._minutes) * _MINUTE_MS if self._minutes else None

    def forget_before(self, ts: int) -> None:
        minute, offset = divmod(ts, _MINUTE_MS)
        mask = (1 << _OFFSET_BITS) - 1
        for m in [m for m in self._minutes if m <= minute]:
            ids = self._minutes.pop(m)
            self.count -= len(ids)
            if m == minute:
                rest = {k: None for k in ids if k & mask >= offset}
                if rest:
                    self._minutes[m] = rest
                    self.count += len(rest)

    def keep_from(self, share: int) -> int | None:
        """The oldest timestamp from which on at most `share` ids are held (every id of a timestamp, or none of
        it: a timestamp half remembered would let its forgotten ids be taken for new); None if all fit."""
        if self.count <= share:
            return None
        mask = (1 << _OFFSET_BITS) - 1
        kept = 0
        newer: int | None = None  # the minute before (newer than) the one looked at
        for minute in sorted(self._minutes, reverse=True):
            ids = self._minutes[minute]
            if kept + len(ids) <= share:
                kept += len(ids)
                newer = minute
                continue
            offsets = sorted((k & mask for k in ids), reverse=True)
            i = share - kept  # offsets[:i] would fit, unless offsets[i] shares their last timestamp
            while i > 0 and offsets[i] == offsets[i - 1]:
                i -= 1
            if i > 0:
                return minute * _MINUTE_MS + offsets[i - 1]
            if newer is None:
                return minute * _MINUTE_MS + offsets[0] + 1  # its newest timestamp alone is too many: forget all
            return newer * _MINUTE_MS + min(k & mask for k in self._minutes[newer])
        raise AssertionError("more ids counted than held")


class Stream:
    """One log stream: its checkpoint state, the ids delivered within the look-back, and events not yet emitted."""

    def __init__(self, group: LogGroup, name: str, creation: int, last_ingest: int | None) -> None:
        self.group = group
        self.name = name
        self.unit = group.unit_prefix + name
        self.creation = creation
        self.last_ingest = last_ingest  # as of the last listing
        self.loaded = False
        self.waiting = False  # left unloaded while batches of an earlier run are in flight (said once)
        self.version = str(creation)
        self.newest = -1  # the newest timestamp delivered
        self.at_newest: set[str] | None = set()  # the ids delivered at it (None: more than IDS_AT_TS)
        # As of the last complete read: its newest timestamp, the ids at it, and the newest ingestion time.
        self.complete = Delivered()
        # Reads cut short since the last complete one (and those of the checkpoint this process started from).
        self.inherited: tuple[Cut, ...] = ()
        self.cut: tuple[int, int] | None = None  # the key of the last event taken in the current read
        self.cut_ids: set[str] | None = set()
        self.cut_bound = -1  # the newest ingestion time the current read had seen when it took that event
        self.bound = -1  # the newest ingestion time seen in the current read
        self.events = 0
        self.crc = 0
        self.records = 0
        self.before = Delivered()  # what runs before this process delivered
        self.seen = RememberedIds()  # delivered by this process within the look-back
        self.floor = -1  # below this timestamp ids may be forgotten (beyond the stream's share of SEEN_PER_SOURCE)
        self.late_below_floor = 0  # events taken below the floor in the current read (said after it)
        self.checked = -1  # the listing's last ingestion time this process has read up to
        self.pending: list[tuple[int, str, str]] = []  # (timestamp, event id, message) not yet emitted
        self.sink_marks: list[tuple[int, int]] = []  # (events, crc) sinks recorded beyond the checkpoint
        self.took = False  # events taken in the current read
        self.emitted = 0  # the progress the last batch emitted ended at (where the next one starts)

    @property
    def label(self) -> str:
        return f"{self.group.label} stream {self.name}"

    @property
    def progress(self) -> int:
        return self.events << _CRC_BITS | self.crc

    def restore(self, version: str, position: dict[str, Any], records: int) -> None:
        self.version = version
        self.before = Delivered.of(position)
        self.complete = Delivered(self.before.ts, self.before.ids, self.before.ingest)
        self.inherited = self.before.cuts
        self.newest = int(position.get("newest", self.before.ts))
        ids = self.before.ids if self.newest == self.before.ts else None
        self.at_newest = set(ids) if ids is not None else None
        self.events = int(position["events"])
        self.crc = int(position["crc"])
        self.records = records
        self.checked = self.before.ingest
        self.emitted = self.progress

    def position(self) -> dict[str, Any]:
        done = self.complete
        out: dict[str, Any] = {"ts": done.ts, "ids": _listed(done.ids), "ingest": done.ingest}
        if self.newest != done.ts:
            out["newest"] = self.newest
        cuts = [{"ts": c.ts, "ingest": c.ingest, "ids": _listed(c.ids), "bound": c.bound} for c in self.inherited]
        if self.cut is not None:
            cut = self.cut
            cuts.append({"ts": cut[0], "ingest": cut[1], "ids": _listed(self.cut_ids), "bound": self.cut_bound})
        if cuts:
            out["cuts"] = cuts
        out.update(events=self.events, crc=self.crc)
        return out

    def begin_read(self) -> None:
        """A new read of the stream. What the previous one took, if it did not end, stays described by its cut:
        this read's own cut only says what this read took (it skips what the other delivered), so without it the
        checkpoints from now on would not cover those events, and a restart would deliver them again to every
        sink. A complete read supersedes the kept cuts (`end_read`)."""
        if self.cut is not None:
            ids = frozenset(self.cut_ids) if self.cut_ids is not None else None
            self.inherited = _kept(self.inherited, Cut(self.cut[0], self.cut[1], ids, self.cut_bound), self.label)
        self.cut = None
        self.bound = -1
        self.took = False

    def end_read(self) -> None:
        """The read went to the end: what it took is now described by the complete part alone."""
        ids = frozenset(self.at_newest) if self.at_newest is not None else None
        self.complete = Delivered(self.newest, ids, max(self.complete.ingest, self.bound))
        self.inherited = ()
        self.cut = None
        self.checked = max(self.checked, self.last_ingest or -1)

    def start(self, anchor: int | None, lookback_ms: int) -> int | None:
        """Where this stream's next read starts (epoch ms; None: the start of retention)."""
        if self.newest < 0:
            return anchor
        start = self.newest - lookback_ms
        return start if anchor is None else max(start, anchor)

    def due(self, now_ms: int) -> bool:
        if self.last_ingest is None:
            return now_ms - self.creation < ACTIVE_MS  # new and still empty: its first events may come any time
        return self.last_ingest > self.checked or now_ms - self.last_ingest < ACTIVE_MS

    def delivered(self, ts: int, ingest: int, event_id: str, key: int) -> bool:
        if self.seen.has(ts, key) or self.before.covers(ts, ingest, event_id):
            return True
        if ts >= self.floor:
            return False
        # Its id may have been forgotten: judged as a restart would, by what this process's checkpoints say was
        # delivered (everything it delivered: the last complete read, and the cuts of the reads since).
        if self.complete.covers(ts, ingest, event_id) or any(c.covers(ts, ingest, event_id) for c in self.inherited):
            return True
        self.late_below_floor += 1
        return False

    def take(self, ts: int, ingest: int, event_id: str, key: int, message: str) -> None:
        self.pending.append((ts, event_id, message))
        self.seen.add(ts, key)
        if ts > self.newest:
            self.newest = ts
            self.at_newest = {event_id}
        elif ts == self.newest and self.at_newest is not None:
            self.at_newest.add(event_id)
            if len(self.at_newest) > IDS_AT_TS:
                self.at_newest = None
        if self.cut != (ts, ingest):
            self.cut = (ts, ingest)
            self.cut_ids = {event_id}
        elif self.cut_ids is not None:
            self.cut_ids.add(event_id)
            if len(self.cut_ids) > IDS_AT_TS:
                self.cut_ids = None
        # Not the bound at checkpoint time: events passed after this one lie beyond the cut's key, and a bigger
        # bound would also claim events before it ingested since (which this read went past before they came).
        self.cut_bound = self.bound
        self.events += 1
        self.crc = zlib.crc32(event_id.encode() + b"\n", self.crc)
        self.took = True

    def at_sink_mark(self) -> bool:
        """True when the events consumed end exactly where a sink's recorded progress does, with the same ids: the
        batch must end here so that the sink skips it. A different sequence gives the unit a new version."""
        cut = False
        while self.sink_marks and self.events >= self.sink_marks[0][0]:
            events, crc = self.sink_marks.pop(0)
            if events != self.events or crc != self.crc:
                self.resequence()
                return False
            cut = True
        return cut

    def resequence(self) -> None:
        creation, _, n = self.version.partition(".")
        self.version = f"{creation}.{int(n or 0) + 1}"
        self.sink_marks.clear()
        log.warning(
            "%s: the events after the checkpoint are not those a sink recorded before the restart (late events "
            "landed among them): that range is delivered again to it (version %s)",
            self.label,
            self.version,
        )

    def trim(self, lookback_ms: int) -> None:
        """Forget the ids older than the look-back: no read goes there again."""
        low = self.newest - lookback_ms
        oldest = self.seen.oldest()
        if oldest is not None and oldest < low:
            self.seen.forget_before(low)

    def shrink(self, share: int) -> bool:
        """Keep at most `share` ids, the newest; True the first time this stream has to forget some. Below the
        floor, the oldest timestamp still remembered whole, `delivered` judges by the checkpoints' description,
        which covers what this process delivered and no event a read has not passed yet."""
        start = self.seen.keep_from(share)
        if start is None:
            return False
        first = self.floor < 0
        self.seen.forget_before(start)
        self.floor = max(self.floor, start)
        return first


class _EmitFailed(Exception):
    """Handing a batch to the pipeline failed (the checkpoint store could not be read, say) after its events were
    taken from the stream's memory: the stream's state is ahead of what was delivered. The source restarts (its
    streams reload from their checkpoints) rather than go on and let a later checkpoint cover the lost events."""


class _StuckPaging(Exception):
    """The server keeps answering with the same nextToken."""


class CloudWatchSource:
    def __init__(
        self,
        config: CloudWatchSourceConfig,
        store: CheckpointStore,
        metrics: Metrics,
        executor: Executor | None = None,
    ) -> None:
        self.config = config
        self.name = config.name
        self.store = store
        self.counters = metrics.sources[config.name]
        self.executor = executor
        self._specs = identities(auth_of(config), config.accounts)
        self._identities: dict[int, Identity] = {}  # spec index -> identity, made when first needed
        self._places = [(i, region) for i, spec in enumerate(self._specs) for region in self._regions(spec)]
        self._listed_at: dict[int, float] = {}  # place index -> monotonic time of its last complete listing
        self._streams: dict[str, Stream] = {}  # unit -> stream
        self._anchor: int | None = None
        self._lookback_ms = int(config.lookback * 1000)
        self._reported: set[str] = set()  # problems logged this poll
        self._remembered = 0  # ids in the streams' `seen`, at least (counted up as taken, exact after a fit)

    async def run(self, pipeline: Pipeline, once: bool, stop: asyncio.Event) -> None:
        # A supervised restart (after a crash) starts from the checkpoints, with new identities: no stream may
        # keep a client of the closed ones.
        self._listed_at.clear()
        self._streams.clear()
        self._remembered = 0
        try:
            self._anchor = await self._load_anchor()
            while not stop.is_set():
                await self.poll(pipeline, stop)
                if once:
                    return
                await sleep_or_stop(stop, self.config.poll_interval)
        finally:
            for ident in self._identities.values():
                await ident.close()
            self._identities.clear()

    def remembered_ids(self) -> int:
        """Event ids held in memory across the streams (at most SEEN_PER_SOURCE)."""
        return sum(len(s.seen) for s in self._streams.values())

    def _fit_remembered(self) -> None:
        """Bring the ids remembered to 7/8 of SEEN_PER_SOURCE (room for the next SEEN_PER_SOURCE / 8 before this
        runs again): first those out of the look-back, then, fairly (max-min: the streams under a common share keep
        all theirs), the oldest of the streams over it."""
        streams = list(self._streams.values())
        for stream in streams:
            stream.trim(self._lookback_ms)
        sizes = [len(s.seen) for s in streams]
        target = SEEN_PER_SOURCE - SEEN_PER_SOURCE // 8
        if sum(sizes) > target:
            share = _share(sizes, target)
            first = [s for s in streams if len(s.seen) > share and s.shrink(share)]
            if first:
                busiest = sorted(first, key=lambda s: s.floor, reverse=True)[:3]
                log.warning(
                    "source=%s remembers at most %d event ids: streams over their share (%d) forget their oldest, "
                    "and their late events older than those remembered are judged by ingestion time, as after a "
                    "restart: %s%s",
                    self.name,
                    SEEN_PER_SOURCE,
                    share,
                    "; ".join(f"{s.label} from {_iso(s.floor)}" for s in busiest),
                    f"; and {len(first) - len(busiest)} more streams" if len(first) > len(busiest) else "",
                )
        self._remembered = self.remembered_ids()

    def _regions(self, spec: IdentitySpec) -> tuple[str, ...]:
        return spec.regions or self.config.regions or (self.config.region or DEFAULT_REGION,)

    async def poll(self, pipeline: Pipeline, stop: asyncio.Event) -> None:
        self._reported.clear()
        for index, (spec_index, region) in enumerate(self._places):
            listed = self._listed_at.get(index)
            stale = listed is None or time.monotonic() - listed >= self.config.discover_interval
            if stale and await self._discover(spec_index, region):
                self._listed_at[index] = time.monotonic()
        now_ms = int(time.time() * 1000)
        by_group: dict[str, list[Stream]] = {}
        for stream in self._streams.values():
            if stream.due(now_ms):
                by_group.setdefault(stream.group.unit_prefix, []).append(stream)
        slots = asyncio.Semaphore(self.config.max_concurrency)

        async def one(prefix: str, streams: list[Stream]) -> None:
            async with slots:
                if not stop.is_set():
                    await self._poll_group(pipeline, streams[0].group, streams, stop)

        results = await asyncio.gather(*(one(p, s) for p, s in by_group.items()), return_exceptions=True)
        for result in results:
            if isinstance(result, BaseException):
                raise result  # PipelineFailed (or a cancellation): everything else is handled per group

    # -- listing

    async def _discover(self, spec_index: int, region: str) -> bool:
        """List the groups and streams of one (account, region); False when the listing failed."""
        spec = self._specs[spec_index]
        place = self._place(spec, region)
        try:
            ident = self._identities.get(spec_index)
            if ident is None:
                # Made here, not at start: a profile that does not exist fails this account, not the source.
                ident = self._identities[spec_index] = Identity(spec)
            client = await ident.client("logs", region)
            groups = await self._list_groups(client, ident, region, place)
        except (ClientError, BotoCoreError) as exc:
            wanted = [*self.config.log_groups]
            if self.config.log_group_prefix is not None:
                wanted.append(f"prefix {self.config.log_group_prefix!r}")
            self._report(f"{spec.label} region {region} log groups {', '.join(wanted)}", "cannot list", exc)
            return False
        complete = True
        present: set[str] = set()
        unlisted: set[str] = set()  # groups whose streams could not be listed: kept as they were
        for group in groups:
            try:
                listed = [s async for s in self._list_streams(client, group)]
            except (ClientError, BotoCoreError) as exc:
                self._report(group.label, "cannot list streams", exc)
                complete = False
                unlisted.add(group.unit_prefix)
                continue
            present |= self._update_streams(group, listed)
        for unit, stream in list(self._streams.items()):
            if unit.startswith(place) and unit not in present and stream.group.unit_prefix not in unlisted:
                del self._streams[unit]  # deleted, expired, or its group is gone
        if complete:
            stored = await asyncio.to_thread(self.store.units_with_prefix, self.name, place)
            gone = [u for u in stored if u not in present]
            if gone:
                await asyncio.to_thread(self.store.forget_units, self.name, gone, time.time() - FORGET_AFTER)
        return complete

    def _place(self, spec: IdentitySpec, region: str) -> str:
        """The start of the unit names of one (account, region)."""
        return f"{spec.account}:{region}:" if self.config.accounts else f"{region}:"

    async def _list_groups(self, client: Any, ident: Identity, region: str, place: str) -> list[LogGroup]:
        found: dict[str, dict[str, Any]] = {}
        paginator = client.get_paginator("describe_log_groups")
        for name in self.config.log_groups:
            # Groups come sorted by name, and a name sorts first among those it prefixes.
            async for page in paginator.paginate(logGroupNamePrefix=name):
                groups = page.get("logGroups", ())
                found.update((g["logGroupName"], g) for g in groups if g["logGroupName"] == name)
                if name in found or any(g["logGroupName"] > name for g in groups):
                    break
            if name not in found:
                self._report(f"{ident.label} region {region} log group {name}", "cannot read", "no such log group")
        if self.config.log_group_prefix is not None:
            async for page in paginator.paginate(logGroupNamePrefix=self.config.log_group_prefix):
                found.update((g["logGroupName"], g) for g in page.get("logGroups", ()))
        return [
            LogGroup(ident, region, name, f"{place}{name}:", info.get("retentionInDays"))
            for name, info in sorted(found.items())
        ]

    async def _list_streams(self, client: Any, group: LogGroup) -> AsyncIterator[tuple[str, int, int | None]]:
        paginator = client.get_paginator("describe_log_streams")
        async for page in paginator.paginate(logGroupName=group.name):
            for s in page.get("logStreams", ()):
                yield s["logStreamName"], int(s.get("creationTime", 0)), s.get("lastIngestionTime")

    def _update_streams(self, group: LogGroup, listed: list[tuple[str, int, int | None]]) -> set[str]:
        """Take a complete listing of a group: new streams are added; the units of those worth reading returned."""
        expired = None
        if group.retention_days:
            expired = int(time.time() * 1000) - group.retention_days * 86_400_000 - EXPIRY_MARGIN_MS
        present = set()
        for name, creation, last_ingest in listed:
            if expired is not None and max(creation, last_ingest or 0) < expired:
                continue  # every event of it has expired: nothing to read, and its checkpoint may go
            unit = group.unit_prefix + name
            present.add(unit)
            stream = self._streams.get(unit)
            if stream is None or stream.creation != creation:
                self._streams[unit] = Stream(group, name, creation, last_ingest)
            else:
                stream.group = group
                stream.last_ingest = last_ingest
        return present

    # -- reading

    async def _poll_group(
        self, pipeline: Pipeline, group: LogGroup, streams: list[Stream], stop: asyncio.Event
    ) -> None:
        try:
            ready: list[Stream] = []
            for stream in streams:
                if not stream.loaded and pipeline.has_pending(self.name, stream.unit):
                    # Batches of an earlier run (a supervised restart, a reload) are with the sinks but not yet
                    # checkpointed: read from the checkpoint, they would reach a sink that has not acked them (a
                    # Parquet file still open) a second time. Loaded once they are checkpointed.
                    if not stream.waiting:
                        stream.waiting = True
                        log.info(
                            "source=%s %s: batches of an earlier run are still in flight; read once they are "
                            "checkpointed",
                            self.name,
                            stream.label,
                        )
                    continue
                if not stream.loaded:
                    await self._load(pipeline, stream)
                ready.append(stream)
            keyed = sorted(((s.start(self._anchor, self._lookback_ms), s) for s in ready), key=_by_start)
            requests: list[list[tuple[int | None, Stream]]] = []
            for start, stream in keyed:
                current = requests[-1] if requests else None
                if (
                    current is None
                    or len(current) == STREAMS_PER_REQUEST
                    or (start or 0) - (current[0][0] or 0) > REQUEST_SPREAD_MS
                ):
                    requests.append([(start, stream)])
                else:
                    current.append((start, stream))
            for request in requests:
                if stop.is_set():
                    return
                await self._read(pipeline, group, {s.name: (start, s) for start, s in request}, stop)
        except PipelineFailed:
            raise
        except _EmitFailed:  # the source restarts (supervised): its streams reload from their checkpoints
            self.counters.units_failed += 1
            raise
        except Exception:  # a bug must not stop the other groups: report it with where it happened
            self.counters.units_failed += 1
            log.exception("source=%s %s: reading failed unexpectedly", self.name, group.label)

    async def _load(self, pipeline: Pipeline, stream: Stream) -> None:
        """The stream's checkpoint, and the progress sinks recorded beyond it (a crash came in between)."""
        ckpt = await asyncio.to_thread(self.store.get, self.name, stream.unit)
        if ckpt is not None and ckpt.position and ckpt.version.partition(".")[0] == str(stream.creation):
            stream.restore(ckpt.version, ckpt.position, ckpt.records)
            held = await asyncio.to_thread(self.store.sink_progress, self.name, stream.unit)
            marks = {
                (p >> _CRC_BITS, p & ((1 << _CRC_BITS) - 1))
                for version, p in held.values()
                if version == stream.version and p >> _CRC_BITS > stream.events
            }
            stream.sink_marks = sorted(marks)
        pipeline.begin_unit(self.name, stream.unit)
        stream.loaded = True

    async def _read(
        self, pipeline: Pipeline, group: LogGroup, streams: dict[str, tuple[int | None, Stream]], stop: asyncio.Event
    ) -> None:
        """One FilterLogEvents query over up to 100 streams, paged to the end; each stream's new events emitted."""
        starts = [start for start, _ in streams.values()]
        request: dict[str, Any] = {"logGroupName": group.name, "logStreamNames": sorted(streams)}
        if None not in starts:
            request["startTime"] = min(s for s in starts if s is not None)
        for _, stream in streams.values():
            stream.begin_read()
        finished = False
        failure: BaseException | None = None
        try:
            client = await group.identity.client("logs", group.region)
            token = None
            repeats = 0
            while True:
                page = await client.filter_log_events(**request, **({"nextToken": token} if token else {}))
                await self._take(pipeline, page.get("events", ()), streams)
                await self._bound_pending(pipeline, [s for _, s in streams.values()])
                following = page.get("nextToken")
                if not following:
                    finished = True
                    break
                repeats = repeats + 1 if following == token else 0
                if repeats >= SAME_TOKEN_LIMIT:
                    raise _StuckPaging(f"the same nextToken came back {repeats} times")
                token = following
                if stop.is_set():
                    break
        except (ClientError, BotoCoreError, _StuckPaging) as exc:
            failure = exc
        for _, stream in streams.values():
            if stream.sink_marks and stream.pending:
                stream.resequence()  # the range a sink holds was not read to its end: it cannot be verified
            if finished:
                stream.end_read()
            if stream.pending or (stream.took and finished):
                await self._emit(pipeline, stream, finished)
            stream.trim(self._lookback_ms)
            if stream.late_below_floor:
                log.info(
                    "source=%s %s: %d late events older than the ids remembered (from %s) delivered, judged by "
                    "ingestion time",
                    self.name,
                    stream.label,
                    stream.late_below_floor,
                    _iso(stream.floor),
                )
                stream.late_below_floor = 0
        if failure is not None:
            names = ", ".join(sorted(streams)) if len(streams) <= 3 else f"{len(streams)} streams"
            self._report(group.label, f"cannot read ({names}); retrying next poll", failure)
            if error_code(failure) == "ResourceNotFoundException":
                self._listed_at.clear()  # a group or stream is gone: list again

    async def _take(
        self, pipeline: Pipeline, events: Iterable[dict[str, Any]], streams: dict[str, tuple[int | None, Stream]]
    ) -> None:
        for event in events:
            entry = streams.get(event.get("logStreamName", ""))
            if entry is None:
                continue
            start, stream = entry
            ts = int(event["timestamp"])
            event_id = str(event["eventId"])
            ingest = int(event.get("ingestionTime", 0))
            if start is not None and ts < start:
                continue  # before this stream's window (the request starts at the earliest of its streams)
            # Every event the read passes, delivered or not, bounds what it can have seen (see `Cut`).
            stream.bound = max(stream.bound, ingest)
            key = _id_key(event_id)
            if stream.delivered(ts, ingest, event_id, key):
                continue
            stream.take(ts, ingest, event_id, key, event.get("message", ""))
            self._remembered += 1
            if self._remembered > SEEN_PER_SOURCE:
                self._fit_remembered()
            if stream.sink_marks:
                if stream.at_sink_mark():
                    await self._emit(pipeline, stream, False)
            elif len(stream.pending) >= BATCH_EVENTS:
                await self._emit(pipeline, stream, False)

    async def _bound_pending(self, pipeline: Pipeline, streams: list[Stream]) -> None:
        """Interleaved streams each hold a few events; past PENDING_EVENTS in all, the largest are emitted."""
        total = sum(len(s.pending) for s in streams)
        if total <= PENDING_EVENTS:
            return
        for stream in sorted(streams, key=lambda s: len(s.pending), reverse=True):
            if total <= PENDING_EVENTS // 2:
                break
            if stream.pending and not stream.sink_marks:
                total -= len(stream.pending)
                await self._emit(pipeline, stream, False)

    async def _emit(self, pipeline: Pipeline, stream: Stream, done: bool) -> None:
        events, stream.pending = stream.pending, []
        position, progress, version = stream.position(), stream.progress, stream.version
        loop = asyncio.get_running_loop()
        batch, problems, size, statuses = await loop.run_in_executor(self.executor, self._parse, stream, events)
        c = self.counters
        for problem in problems[:MAX_ERRORS_LOGGED]:
            log.warning("source=%s %s %s", self.name, stream.label, problem)
        if len(problems) > MAX_ERRORS_LOGGED:
            more = len(problems) - MAX_ERRORS_LOGGED
            log.warning("source=%s %s: %d more errors not shown", self.name, stream.label, more)
        c.errors += len(problems)
        c.records += batch.num_rows
        c.bytes_read += size
        c.status_rows += statuses
        if events:
            c.newest_object_time = max(c.newest_object_time, max(e[0] for e in events) / 1000)
        stream.records += batch.num_rows
        start, stream.emitted = stream.emitted, progress
        try:
            await pipeline.emit(
                Delivery(self.name, stream.unit, version, batch, position, done, stream.records, progress, start)
            )
        except PipelineFailed:
            raise
        except Exception as exc:
            raise _EmitFailed(f"{stream.label}: handing a batch to the sinks failed: {exc}") from exc

    def _parse(self, stream: Stream, events: list[tuple[int, str, str]]) -> tuple[FlowBatch, list[str], int, int]:
        """Messages -> one batch, and the errors, each naming its event (runs in the executor)."""
        lines: list[str] = []
        line_ids: list[str] = []
        problems: list[str] = []
        size = 0
        for _, event_id, message in events:
            size += len(message)
            text = message.replace("\r", " ").replace("\n", " ").strip()
            if not text:
                problems.append(f"event {event_id}: empty message")
            elif text.split(None, 1)[0] in KNOWN_FIELDS:
                # CloudWatch events carry no header; the parser would take this one as a new field order.
                problems.append(f"event {event_id}: a header line, not a record: {text[:200]!r}")
            else:
                lines.append(text)
                line_ids.append(event_id)
        batches = []
        statuses = 0
        if lines:
            data = ("\n".join(lines) + "\n").encode()
            results = parse_text(
                [data],
                unit=stream.label,
                source=self.name,
                fields=self.config.fields,
                block_size=len(data) + 1,
                max_rows=len(data) + 1,
                headers=False,
            )
            for result in results:
                if result.batch.num_rows:
                    batches.append(result.batch)
                    statuses += status_rows(result)
                for err in result.errors:
                    event_id = line_ids[err.line - 1] if err.line and err.line <= len(line_ids) else "?"
                    problems.append(f"event {event_id}: {err.reason}" + (f": {err.raw!r}" if err.raw else ""))
        if not batches:
            return empty_batch(), problems, size, statuses
        return (batches[0] if len(batches) == 1 else pa.concat_batches(batches)), problems, size, statuses

    # -- bookkeeping

    async def _load_anchor(self) -> int | None:
        """`start_from` in epoch ms; `now` and durations are fixed at the first run and kept in the store."""
        start = self.config.start_from
        if start is None:
            return None
        if start != "now" and not start.startswith("ago:"):
            return int(datetime.fromisoformat(start).timestamp() * 1000)
        saved = await asyncio.to_thread(self.store.get, self.name, _ANCHOR)
        if saved is not None and saved.version == start and saved.position:
            anchor = int(saved.position["ms"])
        else:
            back = 0.0 if start == "now" else float(start[4:])
            anchor = int((time.time() - back) * 1000)
            await asyncio.to_thread(self.store.commit, [Commit(self.name, _ANCHOR, start, {"ms": anchor}, False, 0)])
        log.info(
            "source=%s new streams start from %s", self.name, datetime.fromtimestamp(anchor / 1000, UTC).isoformat()
        )
        return anchor

    def _report(self, where: str, what: str, problem: BaseException | str) -> None:
        if where in self._reported:
            return
        self._reported.add(where)
        self.counters.units_failed += 1
        reason = problem if isinstance(problem, str) else describe_error(problem)
        log.error("source=%s %s: %s: %s", self.name, where, what, reason)


def _share(sizes: list[int], total: int) -> int:
    """The largest share c with sum(min(size, c)) <= total: the streams under it keep everything."""
    left = total
    ordered = sorted(sizes)
    for i, size in enumerate(ordered):
        if size * (len(ordered) - i) > left:
            return left // (len(ordered) - i)
        left -= size
    return ordered[-1] if ordered else total


def _iso(ms: int) -> str:
    return datetime.fromtimestamp(ms / 1000, UTC).isoformat(timespec="milliseconds")


def _by_start(item: tuple[int | None, Stream]) -> tuple[int, str]:
    start, stream = item
    return (-1 if start is None else start, stream.unit)
