"""`aws_s3` source: VPC and Transit Gateway flow logs delivered to S3, found by polling the bucket.

How the bucket is read, and why:
- Keys follow AWS's delivery layout, plain or Hive-compatible, with daily or hourly partitions:
    {prefix}AWSLogs/{account}/{service}/{region}/{yyyy}/{mm}/{dd}/[{hh}/]{file}
    {prefix}AWSLogs/aws-account-id={account}/aws-service={service}/aws-region={region}/year={yyyy}/month={mm}/
        day={dd}/[hour={hh}/]{file}
  with service `vpcflowlogs` or `transitgatewayflowlogs`. A *root* is one (account, service, region) directory in
  one layout; accounts and regions are listed in the config or discovered with delimiter listings, again every
  `discover_interval`.
- Listing cost must not grow with the bucket's history. Each root keeps a cursor: the first UTC day not yet
  *closed*. A day closes when its end is older than `lookback` (late objects have had time to land) and every
  object listed in it is delivered. A poll lists only the days from the cursor to today (ListObjectsV2 on the
  day's prefix, so hourly partitions come with it): normally today, and yesterday during the look-back. File names
  sort by flow log id before time, so a single StartAfter key per day could skip a late object of another flow
  log; re-listing the open day costs one request per 1,000 objects of that day, whatever the bucket holds.
- An object is a unit: key, versioned by ETag. Finished objects are in the checkpoint store until their day
  closes; then they are dropped (the cursor says the whole day is done), so the store holds about a day of keys.
- `start_from` applies to a root's first run: days before it are not listed and objects last modified before it
  are skipped. `now` and durations are fixed at the first run and kept in the store, so a restart does not move
  them. Without `start_from`, the first run starts at the root's earliest day (a backfill).
- Objects are delivered in order of arrival (LastModified) within a poll, at most `max_concurrency` at once, each
  streamed (adapters/aws/s3io.py) and parsed in this source's own threads, which block on the network.
- Failures stay local: a denied or missing bucket, or a wrong credential, is reported once per poll with the
  account, bucket and prefix named, and the other roots go on; a damaged object is reported with its key and
  retried with backoff (`RetryBook`), and holds its day open meanwhile, so it is never silently skipped.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Iterator
from concurrent.futures import Executor, ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from typing import Any

from botocore.exceptions import BotoCoreError, ClientError

from adapters.aws.config import S3SourceConfig, auth_of
from adapters.aws.s3io import RemoteReadError, open_object
from adapters.aws.session import Identity, describe_error, identities
from adapters.units import Outcome, RetryBook, deliver_unit
from collector.aio import sleep_or_stop
from collector.checkpoints import CheckpointStore, Commit
from collector.metrics import Metrics
from collector.parsing import ParseResult, open_stream
from collector.pipeline import Pipeline, PipelineFailed

log = logging.getLogger("flowcollector.source.aws_s3")

_META = "\x00"  # prefix of the source's own rows in the checkpoint store (never a valid S3 key start)
_HIVE = "hive"
_PLAIN = "plain"


@dataclass(frozen=True, slots=True)
class Root:
    """One (account, service, region) directory of flow logs in one key layout."""

    identity: Identity
    account: str
    service: str
    region: str
    layout: str
    prefix: str  # ends with "/"

    def day_prefix(self, day: date) -> str:
        if self.layout == _HIVE:
            return f"{self.prefix}year={day:%Y}/month={day:%m}/day={day:%d}/"
        return f"{self.prefix}{day:%Y}/{day:%m}/{day:%d}/"

    @property
    def label(self) -> str:
        return f"account={self.account} service={self.service} region={self.region} prefix={self.prefix}"


@dataclass(frozen=True, slots=True)
class S3Object:
    root: Root
    key: str
    etag: str
    size: int
    modified: datetime


def _etag(raw: str) -> str:
    return raw.strip('"')


def _component(part: str, name: str) -> str | None:
    """`aws-account-id=123` -> `123` (Hive); None when the part is not `name=...`."""
    head, sep, value = part.partition("=")
    return value if sep and head == name else None


class S3Source:
    def __init__(
        self, config: S3SourceConfig, store: CheckpointStore, metrics: Metrics, executor: Executor | None = None
    ) -> None:
        self.config = config
        self.name = config.name
        self.store = store
        self.counters = metrics.sources[config.name]
        prefix = config.prefix.strip("/")
        self.base = f"{prefix}/AWSLogs/" if prefix else "AWSLogs/"
        self._specs = identities(auth_of(config), config.accounts)
        self._identities: list[Identity] = []
        self._roots: list[Root] = []
        self._discovered_at = 0.0
        # Per root prefix, saved in the store: the first day not closed, and days after it already closed (a day
        # held open by an object that keeps failing must not keep every later day open too).
        self._cursors: dict[str, date] = {}
        self._closed: dict[str, set[date]] = {}
        # Per root prefix, in memory: days read to the end and past the look-back, awaiting their checkpoints.
        self._sealed: dict[str, dict[date, dict[str, str]]] = {}
        self._walked: set[str] = set()  # roots whose empty days the last partition walk closed (to be saved)
        self._start: datetime | None = None
        self._active: dict[str, str] = {}  # key -> etag: being read now
        self._emitted: dict[str, str] = {}  # key -> etag: read to the end, checkpoint not yet committed
        self._retry = RetryBook()
        self._reported: set[str] = set()  # problems already logged this poll

    # -- the loop

    async def run(self, pipeline: Pipeline, once: bool, stop: asyncio.Event) -> None:
        executor = ThreadPoolExecutor(self.config.max_concurrency, thread_name_prefix=f"s3-{self.name}")
        self._identities = [Identity(spec) for spec in self._specs]
        self._roots = []  # after a supervised restart: roots must use the new identities, not the closed ones
        try:
            await self._load_meta()
            while not stop.is_set():
                await self.poll(pipeline, executor, stop)
                if once:
                    return
                await sleep_or_stop(stop, self.config.poll_interval)
        finally:
            for ident in self._identities:
                await ident.close()
            executor.shutdown(wait=False, cancel_futures=True)

    async def poll(self, pipeline: Pipeline, executor: Executor, stop: asyncio.Event) -> None:
        self._reported.clear()
        if time.monotonic() - self._discovered_at >= self.config.discover_interval or not self._roots:
            roots, failed = await self._discover()
            # An identity whose listing failed keeps the roots it had (a blip must not hide an account until the
            # next discovery), and discovery runs again next poll.
            self._roots = roots + [r for r in self._roots if r.identity.label in failed]
            if not failed:
                self._discovered_at = time.monotonic()
            log.info("source=%s roots=%d %s", self.name, len(self._roots), " ".join(r.prefix for r in self._roots))
        await self._close_days()
        now = datetime.now(UTC)
        cutoff = now - timedelta(seconds=self.config.lookback)
        # The first day whose end is inside the look-back: days before it are old enough to close.
        open_from = (cutoff - timedelta(days=1)).date() + timedelta(days=1)
        visit: dict[str, set[date]] = {}
        for root in self._roots:
            try:
                first = await self._cursor(root)
                if first is not None:
                    visit[root.prefix] = await self._days_to_visit(root, first, open_from, now.date())
            except (ClientError, BotoCoreError) as exc:
                self._report(root, exc)
        await self._close_days()  # days found empty by the partition walk
        # Day by day, oldest first (memory holds one day's listing), every root's objects of the day in order of
        # arrival; then the day is sealed if the look-back has passed and everything in it was read.
        for day in sorted(set().union(*visit.values())):
            if stop.is_set():
                break
            done = await asyncio.to_thread(self.store.done_versions, self.name)
            self._emitted = {k: v for k, v in self._emitted.items() if done.get(k) != v}
            listed: list[tuple[Root, list[S3Object]]] = []
            for root in self._roots:
                p = root.prefix
                if day not in visit.get(p, ()) or self._is_closed_or_sealed(p, day):
                    continue
                try:
                    listed.append((root, [o async for o in self._list_day(root, day)]))
                except (ClientError, BotoCoreError) as exc:
                    self._report(root, exc)
            end = datetime(day.year, day.month, day.day, tzinfo=UTC) + timedelta(days=1)
            old_enough = end <= cutoff
            todo = [o for _, objects in listed for o in objects if self._wanted(o, done)]
            todo.sort(key=lambda o: (o.modified, o.key))
            await self._deliver_all(pipeline, executor, stop, todo)
            for root, objects in listed:
                wanted = {o.key: o.etag for o in objects if self._start is None or o.modified >= self._start}
                read = all(self._emitted.get(k) == v or done.get(k) == v for k, v in wanted.items())
                if old_enough and read and not stop.is_set():
                    self._sealed.setdefault(root.prefix, {})[day] = wanted
            # Checkpoints of earlier polls (or runs: `--once` returns before its last acks) close days right away.
            await self._close_days()

    async def _days_to_visit(self, root: Root, first: date, open_from: date, today: date) -> set[date]:
        """Days of `root` to list, from `first` on. Days still in the look-back are always listed (late objects may
        land in them). Older days are found with a walk of the year / month / day partitions that exist, so a
        backfill over years of history lists what is there, not every calendar day; days the walk did not find
        are closed as empty. A caught-up root skips the walk: its only days are the open ones."""
        begin = max(first, open_from)
        days = {begin + timedelta(days=k) for k in range((today - begin).days + 1)}
        if first < open_from:
            existing = await self._existing_days(root, first, open_from)
            closed = self._closed.setdefault(root.prefix, set())
            sealed = self._sealed.get(root.prefix, {})
            for k in range((open_from - first).days):
                day = first + timedelta(days=k)
                if day in existing:
                    days.add(day)
                elif day not in sealed:
                    closed.add(day)  # nothing was ever delivered there: saved by _close_days
            self._walked.add(root.prefix)
        return days

    async def _existing_days(self, root: Root, since: date, until: date) -> set[date]:
        """Day partitions that exist under `root` in [since, until): delimiter listings of the years, then of the
        months and days in range (one request each)."""
        client = await root.identity.client("s3")
        names = ("year", "month", "day")

        def number(sub: str, level: int) -> int | None:
            value = _component(sub, names[level]) if root.layout == _HIVE else sub
            return int(value) if value is not None and value.isdigit() else None

        found: set[date] = set()
        for year_sub in await self._subdirs(client, root.prefix):
            year = number(year_sub, 0)
            if year is None or not since.year <= year <= until.year:
                continue
            for month_sub in await self._subdirs(client, f"{root.prefix}{year_sub}/"):
                month = number(month_sub, 1)
                if month is None or not (since.year, since.month) <= (year, month) <= (until.year, until.month):
                    continue
                for day_sub in await self._subdirs(client, f"{root.prefix}{year_sub}/{month_sub}/"):
                    value = number(day_sub, 2)
                    if value is None:
                        continue
                    try:
                        day = date(year, month, value)
                    except ValueError:
                        continue
                    if since <= day < until:
                        found.add(day)
        return found

    def _is_closed_or_sealed(self, prefix: str, day: date) -> bool:
        return day in self._closed.get(prefix, ()) or day in self._sealed.get(prefix, {})

    def _wanted(self, obj: S3Object, done: dict[str, str]) -> bool:
        if done.get(obj.key) == obj.etag or self._emitted.get(obj.key) == obj.etag or obj.key in self._active:
            return False
        if self._start is not None and obj.modified < self._start:
            return False
        return not self._retry.waiting(obj.key, obj.etag)

    async def _deliver_all(
        self, pipeline: Pipeline, executor: Executor, stop: asyncio.Event, objects: list[S3Object]
    ) -> None:
        slots = asyncio.Semaphore(self.config.max_concurrency)

        async def one(obj: S3Object) -> None:
            try:
                await self._deliver(pipeline, executor, stop, obj)
            finally:
                slots.release()

        try:
            async with asyncio.TaskGroup() as tg:
                for obj in objects:
                    await slots.acquire()
                    if stop.is_set():
                        slots.release()
                        break
                    self._active[obj.key] = obj.etag
                    tg.create_task(one(obj))
        except BaseExceptionGroup as group:
            # A sink failed for good: say so plainly (the daemon stops), not as a crash of this source.
            failed = group.subgroup(PipelineFailed)
            if failed is not None:
                raise failed.exceptions[0] from None
            raise

    async def _deliver(self, pipeline: Pipeline, executor: Executor, stop: asyncio.Event, obj: S3Object) -> None:
        loop = asyncio.get_running_loop()
        label = f"s3://{self.config.bucket}/{obj.key}"
        bytes_read = [0]
        try:
            client = await obj.root.identity.client("s3")

            def open_results(resume: dict[str, Any] | None) -> Iterator[ParseResult]:
                fh = open_object(client, self.config.bucket, obj.key, obj.size, obj.etag, loop)
                try:
                    yield from open_stream(fh, unit=label, source=self.name, resume=resume, bytes_read=bytes_read,
                                           size=obj.size)  # fmt: skip
                finally:
                    fh.close()

            outcome = await deliver_unit(
                pipeline,
                source=self.name,
                unit=obj.key,
                version=obj.etag,
                label=label,
                open_results=open_results,
                store=self.store,
                counters=self.counters,
                executor=executor,
                stop=stop,
                log=log,
                bytes_read=bytes_read,
                read_errors=(ClientError, BotoCoreError, RemoteReadError),
            )
        finally:
            self._active.pop(obj.key, None)
        if outcome is Outcome.DONE:
            self._emitted[obj.key] = obj.etag
            self._retry.succeeded(obj.key)
            self.counters.newest_object_time = max(self.counters.newest_object_time, obj.modified.timestamp())
        elif outcome is Outcome.FAILED:
            delay = self._retry.failed(obj.key, obj.etag)
            log.warning("source=%s unit=%s will be tried again in %.0fs (or when it changes)", self.name, label, delay)

    # -- days and cursors

    async def _cursor(self, root: Root) -> date | None:
        """The first day of `root` still to list: its saved cursor, else where the first run starts."""
        cursor = self._cursors.get(root.prefix)
        if cursor is None:
            if self._start is not None:
                cursor = self._start.date()
            else:
                cursor = await self._earliest_day(root)
                if cursor is None:
                    return None  # nothing delivered under this root yet
            self._cursors[root.prefix] = cursor
        return cursor

    async def _close_days(self) -> None:
        """Close sealed days whose objects are all checkpointed, and days a partition walk found empty: save the
        cursor (and the closed days after it), then forget the closed days' objects.

        Sealed days wait in memory until the sinks have acked them (a Parquet sink acks when its file closes), so a
        crash before that finds them open in the store and lists them again: nothing is skipped."""
        if not any(self._sealed.values()) and not self._walked:
            return
        done = await asyncio.to_thread(self.store.done_versions, self.name) if any(self._sealed.values()) else {}
        commits = []
        forget: list[str] = []
        for prefix in sorted(set(self._sealed) | self._walked):
            sealed = self._sealed.get(prefix, {})
            closed = self._closed.setdefault(prefix, set())
            ready = [day for day, objects in sealed.items() if all(done.get(k) == v for k, v in objects.items())]
            for day in ready:
                forget += list(sealed.pop(day))
                closed.add(day)
            cursor = before = self._cursors[prefix]
            while cursor in closed:
                closed.discard(cursor)
                cursor += timedelta(days=1)
            if not ready and cursor == before and prefix not in self._walked:
                continue
            self._cursors[prefix] = cursor
            position = {"day": cursor.isoformat(), "closed": sorted(d.isoformat() for d in closed)}
            commits.append(Commit(self.name, f"{_META}cursor:{prefix}", "", position, False, 0))
            if ready or cursor != before:
                days = ",".join(map(str, sorted(ready))) or "empty days"
                log.info("source=%s prefix=%s closed %s; open from %s", self.name, prefix, days, cursor)
        self._walked.clear()
        if commits:
            # The cursor first, then the keys: a crash in between leaves keys the cursor already covers.
            await asyncio.to_thread(self.store.commit, commits)
            await asyncio.to_thread(self.store.forget_units, self.name, forget, time.time() + 1)
            for key in forget:
                self._emitted.pop(key, None)

    async def _load_meta(self) -> None:
        """The first-run instant (for `now` and durations) and the cursors saved by earlier runs."""
        start = self.config.start_from
        if start is not None:
            saved = await asyncio.to_thread(self.store.get, self.name, f"{_META}start")
            if saved is not None and saved.position and saved.version == start:
                self._start = datetime.fromisoformat(saved.position["at"])
            else:
                if start == "now":
                    at = datetime.now(UTC)
                elif start.startswith("ago:"):
                    at = datetime.now(UTC) - timedelta(seconds=float(start[4:]))
                else:
                    at = datetime.fromisoformat(start)
                # S3 lists LastModified in whole seconds: an object written in the same second as the first run
                # must not look older than it.
                at = at.replace(microsecond=0)
                self._start = at
                row = Commit(self.name, f"{_META}start", start, {"at": at.isoformat()}, False, 0)
                await asyncio.to_thread(self.store.commit, [row])
            log.info("source=%s starting from %s", self.name, self._start.isoformat())
        for root_prefix, (day, closed) in (await asyncio.to_thread(self._saved_cursors)).items():
            self._cursors[root_prefix] = day
            self._closed[root_prefix] = closed

    def _saved_cursors(self) -> dict[str, tuple[date, set[date]]]:
        out = {}
        marker = f"{_META}cursor:"
        for unit in self.store.units_with_prefix(self.name, marker):
            ckpt = self.store.get(self.name, unit)
            if ckpt is not None and ckpt.position:
                closed = {date.fromisoformat(d) for d in ckpt.position.get("closed", ())}
                out[unit[len(marker) :]] = (date.fromisoformat(ckpt.position["day"]), closed)
        return out

    # -- listing

    async def _discover(self) -> tuple[list[Root], set[str]]:
        """Every (account, service, region) root the identities can see, in both layouts; and the labels of the
        identities whose listing failed."""
        roots: list[Root] = []
        failed: set[str] = set()
        for ident in self._identities:
            try:
                client = await ident.client("s3")
                if ident.spec.account is not None:
                    accounts = [(ident.spec.account, _PLAIN), (ident.spec.account, _HIVE)]
                else:
                    accounts = []
                    for part in await self._subdirs(client, self.base):
                        hive = _component(part, "aws-account-id")
                        accounts.append((hive, _HIVE) if hive is not None else (part, _PLAIN))
                for account, layout in accounts:
                    top = f"{self.base}aws-account-id={account}/" if layout == _HIVE else f"{self.base}{account}/"
                    for service_part in await self._subdirs(client, top):
                        service = _component(service_part, "aws-service") if layout == _HIVE else service_part
                        if service not in self.config.services:
                            continue
                        regions = ident.spec.regions or self.config.regions
                        for region_part in await self._subdirs(client, f"{top}{service_part}/"):
                            region = _component(region_part, "aws-region") if layout == _HIVE else region_part
                            if region is None or (regions and region not in regions):
                                continue
                            prefix = f"{top}{service_part}/{region_part}/"
                            roots.append(Root(ident, account, service, region, layout, prefix))
            except (ClientError, BotoCoreError) as exc:
                failed.add(ident.label)
                roots = [r for r in roots if r.identity is not ident]
                key = f"discover:{ident.label}"
                if key not in self._reported:
                    self._reported.add(key)
                    self.counters.units_failed += 1
                    log.error(
                        "source=%s %s cannot list s3://%s/%s: %s",
                        self.name,
                        ident.label,
                        self.config.bucket,
                        self.base,
                        describe_error(exc),
                    )
        return roots, failed

    async def _subdirs(self, client: Any, prefix: str) -> list[str]:
        """Names of the 'directories' right under `prefix` (delimiter listing), sorted."""
        out = []
        paginator = client.get_paginator("list_objects_v2")
        async for page in paginator.paginate(Bucket=self.config.bucket, Prefix=prefix, Delimiter="/"):
            out += [p["Prefix"][len(prefix) :].rstrip("/") for p in page.get("CommonPrefixes", ())]
        return sorted(out)

    async def _earliest_day(self, root: Root) -> date | None:
        """The first day with objects under `root`: three delimiter listings (years, months, days)."""
        client = await root.identity.client("s3")
        parts = []
        prefix = root.prefix
        for name in ("year", "month", "day"):
            subdirs = await self._subdirs(client, prefix)
            values = [(_component(s, name) if root.layout == _HIVE else s, s) for s in subdirs]
            values = [(v, s) for v, s in values if v is not None and v.isdigit()]
            if not values:
                return None
            value, sub = min(values, key=lambda vs: int(vs[0]))
            parts.append(int(value))
            prefix = f"{prefix}{sub}/"
        try:
            return date(*parts)
        except ValueError:
            return None

    async def _list_day(self, root: Root, day: date) -> AsyncIterator[S3Object]:
        client = await root.identity.client("s3")
        paginator = client.get_paginator("list_objects_v2")
        async for page in paginator.paginate(Bucket=self.config.bucket, Prefix=root.day_prefix(day)):
            for item in page.get("Contents", ()):
                key = item["Key"]
                if key.endswith("/"):
                    continue  # a folder marker written by a console or a sync tool
                yield S3Object(root, key, _etag(item["ETag"]), int(item["Size"]), item["LastModified"])

    def _report(self, root: Root, exc: BaseException) -> None:
        if root.prefix in self._reported:
            return
        self._reported.add(root.prefix)
        self.counters.units_failed += 1
        log.error(
            "source=%s %s cannot list s3://%s/%s: %s",
            self.name,
            root.identity.label,
            self.config.bucket,
            root.prefix,
            describe_error(exc),
        )
