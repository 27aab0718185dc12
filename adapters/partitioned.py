"""Polling an object store whose keys are partitioned by day: what every bucket-polling source does the same way.

AWS S3 today, and next GCP Cloud Storage (daily prefixes, the object generation as its version) and Azure Blob
(hourly `y=/m=/d=/h=` prefixes) lay flow logs out as *roots* (one directory per account, service, region...) holding
one partition per UTC day. What differs between them is how a root's partitions and objects are listed and how an
object is opened: a `Lister` and an `Opener`. Everything else lives here, once:

- Listing cost must not grow with the store's history. Each root keeps a cursor: the first UTC day not yet
  *closed*. A day closes when its end is older than `lookback` (late objects have had time to land) and every
  object listed in it is delivered. A poll lists only the days from the cursor to today: normally today, and
  yesterday during the look-back. The whole open day is listed every poll (not "after the last key seen"): file
  names rarely sort by arrival, so a start-after key could skip a late object.
- Partitions are days because the closing rule is about days. A layout with hourly partitions maps them into their
  day: the lister lists a day's prefix, which holds its hours (S3's Hive hourly layout, Azure's `h=`), or lists the
  hours one by one. The cursor and the closed days are then the same whatever the layout.
- An object is a unit: its key, versioned by what the store says changes with the content (an S3 ETag, a GCS
  generation). Finished objects stay in the checkpoint store until their day closes; then they are dropped (the
  cursor says the whole day is done), so the store holds about a day of keys. The cursor is saved before the keys
  are dropped: a crash in between leaves keys the cursor already covers.
- A day read to its end past the look-back is *sealed* in memory until the sinks have acked all of it (a Parquet
  sink acks when its file closes), so a crash before that finds it open in the store and lists it again.
- A backfill (no cursor yet, no `start_from`) starts at the root's earliest day and finds older days through the
  partitions that exist (`Lister.existing_days`), so years of history cost what is there, not every calendar day;
  days not found are closed as empty. Days closed after the cursor are saved with it: an object that keeps failing
  holds its own day open, not every later day too.
- `start_from` applies to a root's first run: days before it are not listed and objects last modified before it
  are skipped. `now` and durations are fixed at the first run and kept in the store (`anchor_start`), so a restart
  does not move them.
- Objects are delivered oldest day first, and within a day in order of arrival (last modified), at most
  `max_concurrency` at once (adapters/units.py `deliver_unit`, which defers a unit whose batches are still in
  flight). One that fails is reported and retried with backoff (`RetryBook`) while the others go on, and it holds
  its day open meanwhile, so it is never silently skipped.
- A listing failure (a denied root, a wrong credential) is reported once per poll, not once per day or per retry,
  and the other roots go on.
- Sharding (several collectors splitting one store): `owns(key)` keeps the objects this collector is responsible
  for. It is applied to a day's listing *before* anything else looks at it, so a day whose objects all belong to
  other shards is "fully delivered" by this one and closes like an empty day, instead of staying open for objects
  it will never read. Not configurable yet (`shard: {index, count}` would build the predicate); None keeps all.
"""

from __future__ import annotations

import asyncio
import logging
import time
import zlib
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Sequence
from concurrent.futures import Executor
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from typing import Any, Generic, Protocol, TypeVar

from adapters.units import Outcome, RetryBook, deliver_unit
from collector.checkpoints import CheckpointStore, Commit
from collector.metrics import SourceCounters
from collector.parsing import ParseResult
from collector.pipeline import Pipeline, PipelineFailed

META = "\x00"  # prefix of a source's own rows in the checkpoint store (never the start of an object key)
START_UNIT = f"{META}start"
CURSOR_UNIT = f"{META}cursor:"

OpenResults = Callable[[dict[str, Any] | None], Iterator[ParseResult]]
Report = Callable[[str, str], None]  # (what failed, for once per poll; message)


@dataclass(frozen=True, slots=True)
class Listed:
    """An object as a listing shows it. `version` changes whenever the content does (it is the unit's version)."""

    key: str
    version: str
    size: int
    modified: datetime  # aware, UTC


class RootLike(Protocol):
    """A directory of day partitions. `key` names it in the checkpoint store (its cursor row): it must stay the same
    across runs and versions, or the root starts over."""

    @property
    def key(self) -> str: ...


R = TypeVar("R", bound=RootLike)


class Lister(Protocol[R]):
    """How one store lists roots, partitions and objects. Every listing may raise one of `errors`, which the poller
    reports (once per poll, with `cannot_list`) and retries next poll."""

    errors: tuple[type[BaseException], ...]

    async def roots(self, report: Report) -> Sequence[R]:
        """The roots to poll now. Problems are passed to `report` (which logs each once per poll), not raised."""
        ...

    async def earliest_day(self, root: R) -> date | None:
        """The first day with objects under `root`, None if there is none yet."""
        ...

    async def existing_days(self, root: R, since: date, until: date) -> set[date]:
        """The day partitions that exist under `root` in [since, until)."""
        ...

    def list_day(self, root: R, day: date) -> AsyncIterator[Listed]:
        """Every object of the day (of all its hours, for an hourly layout)."""
        ...

    def cannot_list(self, root: R, exc: BaseException) -> str:
        """How a failed listing of `root` is reported: who could not list what, and why."""
        ...


class Opener(Protocol[R]):
    """How one store opens an object for `deliver_unit`. `read_errors` are its I/O exceptions besides OSError."""

    read_errors: tuple[type[BaseException], ...]

    def label(self, root: R, obj: Listed) -> str:
        """How logs name the object (`s3://bucket/key`)."""
        ...

    async def open(self, root: R, obj: Listed, bytes_read: list[int]) -> OpenResults:
        """`open_results(resume)` for the object's version (parse results via collector.parsing.open_stream),
        counting the bytes it reads into `bytes_read[0]`."""
        ...


async def anchor_start(store: CheckpointStore, source: str, start: str | None) -> datetime | None:
    """The instant `start_from` means, fixed at the first run: `now` and durations (`ago:SECONDS`) would otherwise
    move at every restart and skip what arrived while the collector was down. Kept in the store with the setting
    it came from, so changing `start_from` anchors again."""
    if start is None:
        return None
    saved = await asyncio.to_thread(store.get, source, START_UNIT)
    if saved is not None and saved.position and saved.version == start:
        return datetime.fromisoformat(saved.position["at"])
    if start == "now":
        at = datetime.now(UTC)
    elif start.startswith("ago:"):
        at = datetime.now(UTC) - timedelta(seconds=float(start[4:]))
    else:
        at = datetime.fromisoformat(start)
    # Listings give last-modified times in whole seconds (S3): an object written in the same second as the first
    # run must not look older than it.
    at = at.replace(microsecond=0)
    await asyncio.to_thread(store.commit, [Commit(source, START_UNIT, start, {"at": at.isoformat()}, False, 0)])
    return at


def shard(index: int, count: int) -> Callable[[str], bool]:
    """The `owns` predicate of shard `index` of `count` (what a `shard: {index, count}` setting would build). The
    key's CRC-32, not `hash()`, which differs between processes: every collector, restarted or upgraded, must agree
    on who reads an object. Checkpoints are per collector, so changing `count` while days are open hands their
    objects to new owners, who read them again."""
    if not 0 <= index < count:
        raise ValueError(f"shard index {index} is not in 0..{count - 1}")
    return lambda key: zlib.crc32(key.encode()) % count == index


async def first_day(
    subdirs: Callable[[str], Awaitable[list[str]]],
    prefix: str,
    value_of: Callable[[int, str], str | None] = lambda _level, name: name,
) -> date | None:
    """The earliest YYYY/MM/DD folder under `prefix` (a backfill's first day), by delimiter listings, smallest first.

    A folder that leads to no valid date (a stray `2019/notes.json`, a month `13/`, a `0/` day) is passed over and
    the next candidate tried: taking only the smallest name at each level would end the search there, and a source
    without `start_from` would then never read anything, silently. `value_of(level, name)` is the number a folder
    name stands for (S3's Hive layout: `year=2026`), None for a folder that is no date part."""

    async def walk(at: str, level: int, parts: tuple[int, ...]) -> date | None:
        candidates = []
        for name in await subdirs(at):
            value = value_of(level, name)
            if value is not None and value.isdigit():
                candidates.append((int(value), name))
        for value, name in sorted(candidates):
            if level == 2:
                try:
                    return date(parts[0], parts[1], value)
                except ValueError:
                    continue
            if not (1 <= value <= 9999 if level == 0 else 1 <= value <= 12):
                continue
            found = await walk(f"{at}{name}/", level + 1, (*parts, value))
            if found is not None:
                return found
        return None

    return await walk(prefix, 0, ())


def day_end(day: date) -> datetime:
    return datetime(day.year, day.month, day.day, tzinfo=UTC) + timedelta(days=1)


class PartitionedPoller(Generic[R]):
    """The day cursors, look-back closing, retries and delivery of one source (see the module docstring)."""

    def __init__(
        self,
        *,
        source: str,
        store: CheckpointStore,
        counters: SourceCounters,
        lister: Lister[R],
        opener: Opener[R],
        lookback: float,
        max_concurrency: int,
        start_from: str | None,
        log: logging.Logger,
        owns: Callable[[str], bool] | None = None,
        retry: RetryBook | None = None,
    ) -> None:
        self.source = source
        self.store = store
        self.counters = counters
        self.lister = lister
        self.opener = opener
        self.lookback = lookback
        self.max_concurrency = max_concurrency
        self.start_from = start_from
        self.log = log
        self.owns = owns
        # Per root key, saved in the store: the first day not closed, and days after it already closed (a day
        # held open by an object that keeps failing must not keep every later day open too).
        self._cursors: dict[str, date] = {}
        self._closed: dict[str, set[date]] = {}
        # Per root key, in memory: days read to the end and past the look-back, awaiting their checkpoints.
        self._sealed: dict[str, dict[date, dict[str, str]]] = {}
        self._walked: set[str] = set()  # roots whose empty days the last partition walk closed (to be saved)
        self._start: datetime | None = None
        self._active: dict[str, str] = {}  # key -> version: being read now
        self._emitted: dict[str, str] = {}  # key -> version: read to the end, checkpoint not yet committed
        self._retry = retry if retry is not None else RetryBook()
        self._reported: set[str] = set()  # problems already logged this poll
        self._roots: Sequence[R] = ()

    # -- the source's side

    async def start(self) -> None:
        """The first-run instant (for `now` and durations) and the cursors saved by earlier runs."""
        self._start = await anchor_start(self.store, self.source, self.start_from)
        if self._start is not None:
            self.log.info("source=%s starting from %s", self.source, self._start.isoformat())
        for root_key, (day, closed) in (await asyncio.to_thread(self._saved_cursors)).items():
            self._cursors[root_key] = day
            self._closed[root_key] = closed

    def report(self, what: str, message: str) -> None:
        """Log a problem once per poll (a root that cannot be listed would otherwise be logged for every day)."""
        if what in self._reported:
            return
        self._reported.add(what)
        self.counters.units_failed += 1
        self.log.error("source=%s %s", self.source, message)

    async def poll(self, pipeline: Pipeline, executor: Executor, stop: asyncio.Event) -> None:
        self._reported.clear()
        self._roots = roots = await self.lister.roots(self.report)
        await self._close_days()
        now = datetime.now(UTC)
        cutoff = now - timedelta(seconds=self.lookback)
        # The first day whose end is inside the look-back: days before it are old enough to close.
        open_from = (cutoff - timedelta(days=1)).date() + timedelta(days=1)
        visit: dict[str, set[date]] = {}
        for root in roots:
            try:
                first = await self._cursor(root)
                if first is not None:
                    visit[root.key] = await self._days_to_visit(root, first, open_from, now.date())
            except self.lister.errors as exc:
                self._report_listing(root, exc)
        await self._close_days()  # days found empty by the partition walk
        # Day by day, oldest first (memory holds one day's listing), every root's objects of the day in order of
        # arrival; then the day is sealed if the look-back has passed and everything in it was read.
        for day in sorted(set().union(*visit.values())):
            if stop.is_set():
                break
            done = await asyncio.to_thread(self.store.done_versions, self.source)
            self._emitted = {k: v for k, v in self._emitted.items() if done.get(k) != v}
            listed: list[tuple[R, list[Listed]]] = []
            for root in roots:
                if day not in visit.get(root.key, ()) or self._is_closed_or_sealed(root.key, day):
                    continue
                try:
                    objects = [o async for o in self.lister.list_day(root, day)]
                except self.lister.errors as exc:
                    self._report_listing(root, exc)
                    continue
                if self.owns is not None:
                    # Before anything decides from the listing: another shard's objects are not this one's to wait
                    # for, so they must not hold the day open.
                    objects = [o for o in objects if self.owns(o.key)]
                listed.append((root, objects))
            old_enough = day_end(day) <= cutoff
            todo = [(root, o) for root, objects in listed for o in objects if self._wanted(o, done)]
            todo.sort(key=lambda ro: (ro[1].modified, ro[1].key))
            await self._deliver_all(pipeline, executor, stop, todo)
            for root, objects in listed:
                wanted = {o.key: o.version for o in objects if self._start is None or o.modified >= self._start}
                read = all(self._emitted.get(k) == v or done.get(k) == v for k, v in wanted.items())
                if old_enough and read and not stop.is_set():
                    self._sealed.setdefault(root.key, {})[day] = wanted
            # Checkpoints of earlier polls (or runs: `--once` returns before its last acks) close days right away.
            await self._close_days()

    # -- days and cursors

    async def _cursor(self, root: R) -> date | None:
        """The first day of `root` still to list: its saved cursor, else where the first run starts."""
        cursor = self._cursors.get(root.key)
        if cursor is None:
            if self._start is not None:
                cursor = self._start.date()
            else:
                cursor = await self.lister.earliest_day(root)
                if cursor is None:
                    return None  # nothing delivered under this root yet
            self._cursors[root.key] = cursor
        return cursor

    async def _days_to_visit(self, root: R, first: date, open_from: date, today: date) -> set[date]:
        """Days of `root` to list, from `first` on. Days still in the look-back are always listed (late objects may
        land in them). Older days are those the lister finds in the partitions that exist; days it did not find are
        closed as empty. A caught-up root skips that walk: its only days are the open ones."""
        begin = max(first, open_from)
        days = {begin + timedelta(days=k) for k in range((today - begin).days + 1)}
        if first < open_from:
            existing = await self.lister.existing_days(root, first, open_from)
            closed = self._closed.setdefault(root.key, set())
            sealed = self._sealed.get(root.key, {})
            for k in range((open_from - first).days):
                day = first + timedelta(days=k)
                if day in existing:
                    days.add(day)
                elif day not in sealed:
                    closed.add(day)  # nothing was ever delivered there: saved by _close_days
            self._walked.add(root.key)
        return days

    def _is_closed_or_sealed(self, root_key: str, day: date) -> bool:
        return day in self._closed.get(root_key, ()) or day in self._sealed.get(root_key, {})

    def _wanted(self, obj: Listed, done: dict[str, str]) -> bool:
        if done.get(obj.key) == obj.version or self._emitted.get(obj.key) == obj.version or obj.key in self._active:
            return False
        if self._start is not None and obj.modified < self._start:
            return False
        return not self._retry.waiting(obj.key, obj.version)

    async def _close_days(self) -> None:
        """Close sealed days whose objects are all checkpointed, and days a partition walk found empty: save the
        cursor (and the closed days after it), then forget the closed days' objects."""
        if not any(self._sealed.values()) and not self._walked:
            return
        done = await asyncio.to_thread(self.store.done_versions, self.source) if any(self._sealed.values()) else {}
        commits = []
        forget: list[str] = []
        for root_key in sorted(set(self._sealed) | self._walked):
            sealed = self._sealed.get(root_key, {})
            closed = self._closed.setdefault(root_key, set())
            ready = [day for day, objects in sealed.items() if all(done.get(k) == v for k, v in objects.items())]
            for day in ready:
                forget += list(sealed.pop(day))
                closed.add(day)
            cursor = before = self._cursors[root_key]
            while cursor in closed:
                closed.discard(cursor)
                cursor += timedelta(days=1)
            if not ready and cursor == before and root_key not in self._walked:
                continue
            self._cursors[root_key] = cursor
            position = {"day": cursor.isoformat(), "closed": sorted(d.isoformat() for d in closed)}
            commits.append(Commit(self.source, f"{CURSOR_UNIT}{root_key}", "", position, False, 0))
            if ready or cursor != before:
                days = ",".join(map(str, sorted(ready))) or "empty days"
                self.log.info("source=%s prefix=%s closed %s; open from %s", self.source, root_key, days, cursor)
        self._walked.clear()
        if commits:
            # The cursor first, then the keys: a crash in between leaves keys the cursor already covers.
            await asyncio.to_thread(self.store.commit, commits)
            await asyncio.to_thread(self.store.forget_units, self.source, forget, time.time() + 1)
            for key in forget:
                self._emitted.pop(key, None)

    def _saved_cursors(self) -> dict[str, tuple[date, set[date]]]:
        out = {}
        for unit in self.store.units_with_prefix(self.source, CURSOR_UNIT):
            ckpt = self.store.get(self.source, unit)
            if ckpt is not None and ckpt.position:
                closed = {date.fromisoformat(d) for d in ckpt.position.get("closed", ())}
                out[unit[len(CURSOR_UNIT) :]] = (date.fromisoformat(ckpt.position["day"]), closed)
        return out

    def _report_listing(self, root: R, exc: BaseException) -> None:
        self.report(root.key, self.lister.cannot_list(root, exc))

    # -- delivery

    async def _deliver_all(
        self, pipeline: Pipeline, executor: Executor, stop: asyncio.Event, objects: list[tuple[R, Listed]]
    ) -> None:
        slots = asyncio.Semaphore(self.max_concurrency)

        async def one(root: R, obj: Listed) -> None:
            try:
                await self._deliver(pipeline, executor, stop, root, obj)
            finally:
                slots.release()

        try:
            async with asyncio.TaskGroup() as tg:
                for root, obj in objects:
                    await slots.acquire()
                    if stop.is_set():
                        slots.release()
                        break
                    self._active[obj.key] = obj.version
                    tg.create_task(one(root, obj))
        except BaseExceptionGroup as group:
            # A sink failed for good: say so plainly (the daemon stops), not as a crash of this source.
            failed = group.subgroup(PipelineFailed)
            if failed is not None:
                raise failed.exceptions[0] from None
            raise

    async def _deliver(self, pipeline: Pipeline, executor: Executor, stop: asyncio.Event, root: R, obj: Listed) -> None:
        label = self.opener.label(root, obj)
        bytes_read = [0]
        try:
            try:
                open_results = await self.opener.open(root, obj, bytes_read)
            except (OSError, *self.opener.read_errors) as exc:  # this object fails; its neighbours go on
                self.counters.units_failed += 1
                self.log.error("source=%s unit=%s cannot be opened: %s", self.source, label, exc)
                outcome = Outcome.FAILED
            else:
                outcome = await deliver_unit(
                    pipeline,
                    source=self.source,
                    unit=obj.key,
                    version=obj.version,
                    label=label,
                    open_results=open_results,
                    store=self.store,
                    counters=self.counters,
                    executor=executor,
                    stop=stop,
                    log=self.log,
                    bytes_read=bytes_read,
                    read_errors=self.opener.read_errors,
                )
        finally:
            self._active.pop(obj.key, None)
        if outcome is Outcome.DONE:
            self._emitted[obj.key] = obj.version
            self._retry.succeeded(obj.key)
            self.counters.newest_object_time = max(self.counters.newest_object_time, obj.modified.timestamp())
        elif outcome is Outcome.FAILED:
            delay = self._retry.failed(obj.key, obj.version)
            self.log.warning(
                "source=%s unit=%s will be tried again in %.0fs (or when it changes)", self.source, label, delay
            )
