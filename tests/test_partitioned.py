"""The shared partitioned poller (adapters/partitioned.py) over an in-memory object store: a lister and an opener
written here, a real checkpoint store, a real pipeline and a sink whose acks the test holds back. This tests the
poller's own rules; the S3 lister and opener are covered against moto in test_aws_s3.py."""

from __future__ import annotations

import asyncio
import collections
import contextlib
import io
import logging
import subprocess
import sys
from collections.abc import AsyncIterator, Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from flowdata import gzip_flows

from adapters.partitioned import (
    CURSOR_UNIT,
    Listed,
    OpenResults,
    PartitionedPoller,
    Report,
    anchor_start,
    shard,
)
from adapters.units import RetryBook
from collector.checkpoints import CheckpointStore, Commit
from collector.metrics import Metrics
from collector.parsing import ParseResult, open_stream
from collector.pipeline import Pipeline
from collector.schema import FlowBatch

SOURCE = "mem"
LOG = logging.getLogger("flowcollector.source.test_partitioned")
TODAY = datetime.now(UTC).date()
OLD = TODAY - timedelta(days=5)
HOUR = 3600.0


class ListingFailed(Exception):
    """What the in-memory store raises for a root it is told cannot be listed."""


@dataclass(frozen=True, slots=True)
class MemRoot:
    key: str


@dataclass
class MemObject:
    version: str
    modified: datetime
    body: bytes


@dataclass
class MemStore:
    """Roots of day partitions in memory, with the calls the poller made, and failures to inject."""

    roots_: list[MemRoot] = field(default_factory=list)
    days: dict[str, dict[date, dict[str, MemObject]]] = field(default_factory=dict)
    unreadable: set[str] = field(default_factory=set)  # keys whose read fails (I/O)
    unopenable: set[str] = field(default_factory=set)  # keys whose opening fails (the store refuses the request)
    unlistable: set[str] = field(default_factory=set)  # root keys whose day listings fail
    problems: list[tuple[str, str]] = field(default_factory=list)  # reported by roots() every poll
    listed: collections.Counter[tuple[str, date]] = field(default_factory=collections.Counter)
    opened: collections.Counter[str] = field(default_factory=collections.Counter)
    errors: tuple[type[BaseException], ...] = (ListingFailed,)
    read_errors: tuple[type[BaseException], ...] = ()

    def put(self, root: str, day: date, name: str, first_id: int, n: int = 10, modified: datetime | None = None) -> str:
        if MemRoot(root) not in self.roots_:
            self.roots_.append(MemRoot(root))
        key = f"{root}{day:%Y/%m/%d}/{name}.log.gz"
        when = modified or datetime.now(UTC)
        self.days.setdefault(root, {}).setdefault(day, {})[key] = MemObject(
            f"v{first_id}", when, gzip_flows(first_id, n)
        )
        return key

    # -- Lister

    async def roots(self, report: Report) -> Sequence[MemRoot]:
        for what, message in self.problems:
            report(what, message)
        return list(self.roots_)

    async def earliest_day(self, root: MemRoot) -> date | None:
        days = [d for d, objects in self.days.get(root.key, {}).items() if objects]
        return min(days) if days else None

    async def existing_days(self, root: MemRoot, since: date, until: date) -> set[date]:
        return {d for d, objects in self.days.get(root.key, {}).items() if objects and since <= d < until}

    async def list_day(self, root: MemRoot, day: date) -> AsyncIterator[Listed]:
        self.listed[(root.key, day)] += 1
        if root.key in self.unlistable:
            raise ListingFailed(f"access denied to {root.key}")
        for key, obj in sorted(self.days.get(root.key, {}).get(day, {}).items()):
            yield Listed(key, obj.version, len(obj.body), obj.modified)

    def cannot_list(self, root: MemRoot, exc: BaseException) -> str:
        return f"cannot list mem://{root.key}: {exc}"

    # -- Opener

    def label(self, root: MemRoot, obj: Listed) -> str:
        return f"mem://{obj.key}"

    async def open(self, root: MemRoot, obj: Listed, bytes_read: list[int]) -> OpenResults:
        if obj.key in self.unopenable:
            raise OSError(f"{obj.key}: the store refused to open it")
        body = next(d[obj.key].body for d in self.days[root.key].values() if obj.key in d)

        def results(resume: dict[str, Any] | None) -> Iterator[ParseResult]:
            self.opened[obj.key] += 1
            if obj.key in self.unreadable:
                raise OSError(f"{obj.key}: connection reset")
            fh = io.BufferedReader(io.BytesIO(body))
            yield from open_stream(fh, unit=obj.key, source=SOURCE, resume=resume, bytes_read=bytes_read)

        return results


class HeldSink:
    """Keeps the ids it is given; acks everything written on each flush, unless told to hold its acks (a Parquet
    file that has not closed yet)."""

    name = "held"

    def __init__(self) -> None:
        self.ids: collections.Counter[int] = collections.Counter()
        self.written = 0
        self.acked = 0
        self.hold = False

    async def open(self) -> None:
        return None

    async def write(self, batch: FlowBatch, ident: Any = None) -> None:
        self.ids.update(batch.column("bytes").to_pylist())
        self.written += 1

    async def flush(self, force: bool = False) -> int:
        if not self.hold:
            self.acked = self.written
        return self.acked

    async def close(self) -> int:
        self.acked = self.written
        return self.acked


@dataclass
class Rig:
    mem: MemStore
    sink: HeldSink
    store: CheckpointStore
    pipeline: Pipeline
    metrics: Metrics
    executor: ThreadPoolExecutor

    def poller(self, **kw: Any) -> PartitionedPoller[MemRoot]:
        options: dict[str, Any] = {"lookback": 2 * HOUR, "max_concurrency": 2, "start_from": None, **kw}
        return PartitionedPoller(
            source=SOURCE,
            store=self.store,
            counters=self.metrics.sources[SOURCE],
            lister=self.mem,
            opener=self.mem,
            log=LOG,
            **options,
        )

    async def poll(self, poller: PartitionedPoller[MemRoot]) -> None:
        await poller.poll(self.pipeline, self.executor, asyncio.Event())

    async def committed(self, *keys: str) -> None:
        """Wait until the sink's acks have checkpointed `keys` as done."""
        async with asyncio.timeout(10):
            while not set(keys) <= set(self.store.done_versions(SOURCE)):
                await asyncio.sleep(0.01)

    async def delivered(self, expected: collections.Counter[int]) -> None:
        """The sink holds exactly `expected` once what was emitted has been written (the sink's worker writes after
        `poll` returns)."""
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(5):
                while self.sink.ids != expected:
                    await asyncio.sleep(0.01)
        assert self.sink.ids == expected

    def cursor(self, root: str) -> dict[str, Any] | None:
        ckpt = self.store.get(SOURCE, f"{CURSOR_UNIT}{root}")
        return ckpt.position if ckpt else None


@pytest.fixture
async def rig(tmp_path: Path) -> AsyncIterator[Rig]:
    store = CheckpointStore(tmp_path / "state")
    sink = HeldSink()
    metrics = Metrics()
    pipeline = Pipeline([sink], store, metrics, flush_intervals={sink.name: 0.01})  # type: ignore[list-item]
    await pipeline.start()
    executor = ThreadPoolExecutor(2)
    try:
        yield Rig(MemStore(), sink, store, pipeline, metrics, executor)
    finally:
        sink.hold = False
        await pipeline.close(10)
        executor.shutdown()
        store.close()


def ids(first: int, n: int = 10) -> collections.Counter[int]:
    return collections.Counter(range(first, first + n))


async def test_a_day_closes_only_past_the_lookback_and_once_fully_checkpointed(rig: Rig) -> None:
    yesterday = TODAY - timedelta(days=1)
    a = rig.mem.put("r/", OLD, "a", 1_000)
    b = rig.mem.put("r/", OLD, "b", 2_000)
    y = rig.mem.put("r/", yesterday, "y", 3_000)
    poller = rig.poller(lookback=48 * HOUR)  # yesterday ends inside the look-back
    open_from = (datetime.now(UTC) - timedelta(hours=48, days=1)).date() + timedelta(days=1)
    empty = [(OLD + timedelta(days=k)).isoformat() for k in range(1, (open_from - OLD).days)]
    await poller.start()
    rig.sink.hold = True
    await rig.poll(poller)
    await rig.delivered(ids(1_000) + ids(2_000) + ids(3_000))
    # Read to its end and old enough, but the sink has not acked it: the old day must not close yet (a crash now
    # must find it open and list it again). The empty days after it are closed already.
    assert empty and rig.cursor("r/") == {"day": OLD.isoformat(), "closed": empty}
    rig.sink.hold = False
    await rig.committed(a, b, y)
    await rig.poll(poller)
    # Closed: the cursor moved past it (to the first day inside the look-back) and its keys left the store;
    # yesterday is fully checkpointed too, but inside the look-back, so it stays open with its keys.
    assert rig.cursor("r/") == {"day": open_from.isoformat(), "closed": []}
    assert set(rig.store.done_versions(SOURCE)) == {y}
    # A closed day is not listed again: an object landing there now is past the look-back, by design.
    before = rig.mem.listed[("r/", OLD)]
    rig.mem.put("r/", OLD, "too-late", 4_000)
    await rig.poll(poller)
    assert rig.mem.listed[("r/", OLD)] == before
    assert rig.mem.listed[("r/", yesterday)] == 3  # the open day, every poll
    await rig.delivered(ids(1_000) + ids(2_000) + ids(3_000))
    # The days between the old one and the look-back held nothing: the walk closed them without listing them.
    assert all(rig.mem.listed[("r/", OLD + timedelta(days=k))] == 0 for k in range(1, (open_from - OLD).days))


async def test_a_late_object_in_an_open_day_is_read_and_nothing_twice(rig: Rig) -> None:
    first = rig.mem.put("r/", TODAY, "first", 1_000)
    poller = rig.poller()
    await poller.start()
    await rig.poll(poller)
    await rig.committed(first)
    late = rig.mem.put("r/", TODAY, "late", 2_000, modified=datetime.now(UTC) - timedelta(hours=6))
    await rig.poll(poller)
    await rig.committed(late)
    await rig.poll(poller)
    await rig.delivered(ids(1_000) + ids(2_000))
    assert rig.mem.opened == {first: 1, late: 1}


async def test_a_failing_object_is_retried_with_backoff_and_holds_only_its_day(rig: Rig) -> None:
    day1, day2 = OLD, OLD + timedelta(days=1)
    bad = rig.mem.put("r/", day1, "bad", 1_000)
    good = rig.mem.put("r/", day1, "good", 2_000)
    later = rig.mem.put("r/", day2, "later", 3_000)
    rig.mem.unreadable.add(bad)
    poller = rig.poller(retry=RetryBook(first=0.4, cap=0.8), lookback=HOUR)
    await poller.start()
    rig.sink.hold = True  # acks held during a poll (here and below): the test sees the keys before their day closes
    await rig.poll(poller)
    await rig.delivered(ids(2_000) + ids(3_000))  # the others went on
    assert rig.metrics.sources[SOURCE].units_failed == 1
    rig.sink.hold = False
    await rig.committed(good, later)
    await rig.poll(poller)  # within the backoff: not tried again
    assert rig.mem.opened[bad] == 1
    # Day 1 is held open by the object that failed; day 2 and the empty days after it closed anyway.
    cursor = rig.cursor("r/")
    assert cursor is not None and cursor["day"] == day1.isoformat() and day2.isoformat() in cursor["closed"]
    assert set(rig.store.done_versions(SOURCE)) == {good}
    await asyncio.sleep(0.5)
    await rig.poll(poller)  # the backoff passed: tried again, fails again, waits twice as long
    assert rig.mem.opened[bad] == 2
    await asyncio.sleep(0.5)
    await rig.poll(poller)
    assert rig.mem.opened[bad] == 2
    rig.mem.unreadable.clear()
    await asyncio.sleep(0.4)
    rig.sink.hold = True
    await rig.poll(poller)
    assert rig.mem.opened[bad] == 3
    await rig.delivered(ids(1_000) + ids(2_000) + ids(3_000))
    rig.sink.hold = False
    await rig.committed(bad)
    await rig.poll(poller)
    cursor = rig.cursor("r/")
    assert cursor is not None and date.fromisoformat(cursor["day"]) > day2 and cursor["closed"] == []
    assert rig.store.done_versions(SOURCE) == {}


async def test_an_object_that_cannot_be_opened_fails_alone(rig: Rig) -> None:
    """Review of issue #9: an opener raising (not the read) cancelled every delivery beside it and crashed the
    source; it is now that object's failure, retried with backoff, and its day stays open."""
    bad = rig.mem.put("r/", OLD, "bad", 1_000)
    good = rig.mem.put("r/", OLD, "good", 2_000)
    rig.mem.unopenable.add(bad)
    poller = rig.poller(lookback=HOUR)
    await poller.start()
    await rig.poll(poller)
    await rig.delivered(ids(2_000))
    await rig.committed(good)
    assert rig.metrics.sources[SOURCE].units_failed == 1
    assert set(rig.store.done_versions(SOURCE)) == {good}
    cursor = rig.cursor("r/")
    assert cursor is not None and cursor["day"] == OLD.isoformat()


async def test_a_failed_read_of_a_changed_object_is_tried_at_once(rig: Rig) -> None:
    bad = rig.mem.put("r/", TODAY, "bad", 1_000)
    rig.mem.unreadable.add(bad)
    poller = rig.poller()
    await poller.start()
    await rig.poll(poller)
    rig.mem.unreadable.clear()
    rig.mem.put("r/", TODAY, "bad", 5_000)  # a new version: no waiting for the backoff
    await rig.poll(poller)
    assert rig.mem.opened[bad] == 2
    await rig.delivered(ids(5_000))


async def test_a_listing_error_is_reported_once_per_poll(rig: Rig, caplog: pytest.LogCaptureFixture) -> None:
    rig.mem.put("denied/", TODAY - timedelta(days=2), "x", 1_000)
    rig.mem.put("denied/", TODAY, "y", 2_000)
    rig.mem.put("fine/", TODAY, "z", 3_000)
    rig.mem.unlistable.add("denied/")
    rig.mem.problems.append(("account 1", "account 1 cannot list mem://: no such profile"))
    poller = rig.poller(lookback=48 * HOUR)  # several open days, each listed (and failing) every poll
    await poller.start()
    with caplog.at_level(logging.ERROR, LOG.name):
        await rig.poll(poller)
        first = [r.getMessage() for r in caplog.records]
        caplog.clear()
        await rig.poll(poller)
        second = [r.getMessage() for r in caplog.records]
    assert sum(rig.mem.listed[("denied/", TODAY - timedelta(days=k))] for k in range(3)) == 6
    for messages in (first, second):
        assert messages == [
            f"source={SOURCE} account 1 cannot list mem://: no such profile",
            f"source={SOURCE} cannot list mem://denied/: access denied to denied/",
        ]
    assert rig.metrics.sources[SOURCE].units_failed == 4
    await rig.delivered(ids(3_000))  # the other root went on


async def test_start_from_is_anchored_at_the_first_run(rig: Rig) -> None:
    store = rig.store
    now = await anchor_start(store, SOURCE, "now")
    assert now is not None and now.microsecond == 0 and abs((datetime.now(UTC) - now).total_seconds()) < 2
    await asyncio.sleep(1.1)
    assert await anchor_start(store, SOURCE, "now") == now  # a restart does not move it
    ago = await anchor_start(store, SOURCE, "ago:86400")  # a new setting anchors again
    assert ago is not None and abs((now - timedelta(days=1) - ago).total_seconds()) < 3
    assert await anchor_start(store, SOURCE, "ago:86400") == ago
    assert await anchor_start(store, SOURCE, "2026-11-01T06:00:00+00:00") == datetime(2026, 11, 1, 6, tzinfo=UTC)
    assert await anchor_start(store, SOURCE, None) is None


async def test_start_from_skips_older_days_and_objects_and_survives_a_restart(rig: Rig) -> None:
    rig.mem.put("r/", OLD, "history", 1_000, modified=datetime.now(UTC) - timedelta(days=5))
    rig.mem.put("r/", TODAY, "before", 2_000, modified=datetime.now(UTC) - timedelta(minutes=5))
    poller = rig.poller(start_from="now")
    await poller.start()
    anchor = rig.store.get(SOURCE, "\x00start")
    assert anchor is not None and anchor.version == "now"
    at = datetime.fromisoformat(anchor.position["at"])  # type: ignore[index]
    after = rig.mem.put("r/", TODAY, "after", 3_000, modified=at + timedelta(seconds=1))
    await rig.poll(poller)
    await rig.delivered(ids(3_000))
    assert rig.mem.listed[("r/", OLD)] == 0  # days before the start are not listed at all
    await rig.committed(after)
    # A restart later: "now" is still the first run's, so what landed meanwhile (after the anchor) is read.
    meanwhile = rig.mem.put("r/", TODAY, "meanwhile", 4_000, modified=at + timedelta(seconds=2))
    await asyncio.sleep(1.1)
    again = rig.poller(start_from="now")
    await again.start()
    await rig.poll(again)
    await rig.committed(meanwhile)
    await rig.delivered(ids(3_000) + ids(4_000))


async def test_the_shard_hook_filters_before_a_day_decides_to_close(rig: Rig) -> None:
    """Objects of another shard are not this collector's to wait for: a day holding only those closes like an
    empty one, and a mixed day closes once this shard's objects are checkpointed, neither ever opening the others."""
    day1, day2 = OLD, OLD + timedelta(days=1)
    theirs1 = rig.mem.put("r/", day1, "theirs-1", 1_000)
    mine = rig.mem.put("r/", day2, "mine-2", 2_000)
    theirs2 = rig.mem.put("r/", day2, "theirs-2", 3_000)
    owns: Callable[[str], bool] = lambda key: "/mine-" in key  # noqa: E731
    poller = rig.poller(owns=owns, lookback=HOUR)
    await poller.start()
    rig.sink.hold = True
    await rig.poll(poller)
    # Day 1 closed at once (nothing of this shard's in it); day 2 waits for its one object's checkpoint.
    cursor = rig.cursor("r/")
    assert cursor is not None and cursor["day"] == day2.isoformat()
    rig.sink.hold = False
    await rig.committed(mine)
    await rig.poll(poller)
    cursor = rig.cursor("r/")
    assert cursor is not None and date.fromisoformat(cursor["day"]) > day2
    await rig.delivered(ids(2_000))
    assert rig.mem.opened == {mine: 1} and theirs1 not in rig.mem.opened and theirs2 not in rig.mem.opened
    assert rig.store.done_versions(SOURCE) == {}


def test_shards_split_keys_between_them_stably() -> None:
    keys = [f"r/2026/12/02/{k:04d}.log.gz" for k in range(3000)]
    owners = [[i for i in range(3) if shard(i, 3)(key)] for key in keys]
    assert all(len(o) == 1 for o in owners)  # every key read by exactly one collector
    assert all(900 < sum(o == [i] for o in owners) < 1100 for i in range(3))
    # The same owners in every process and version (Python's hash() is salted per process): a golden value.
    assert [o[0] for o in owners[:8]] == [1, 0, 1, 0, 0, 2, 1, 1]
    with pytest.raises(ValueError):
        shard(3, 3)


async def test_rows_written_by_the_s3_source_before_the_poller_are_taken_as_they_are(rig: Rig) -> None:
    """An upgrade must not re-read or skip anything: the rows aws_s3 wrote before it used this poller (spelled out
    here as they were stored) are its anchor and cursor."""
    at = datetime.now(UTC).replace(microsecond=0) - timedelta(days=3)
    cursor_day, closed_day = OLD + timedelta(days=1), OLD + timedelta(days=3)
    rig.store.commit(
        [
            Commit(SOURCE, "\x00start", "now", {"at": at.isoformat()}, False, 0),
            Commit(
                SOURCE,
                "\x00cursor:r/",
                "",
                {"day": cursor_day.isoformat(), "closed": [closed_day.isoformat()]},
                False,
                0,
            ),
        ]
    )
    rig.mem.put("r/", OLD, "closed-before", 1_000, modified=at + timedelta(hours=1))
    rig.mem.put("r/", closed_day, "closed-after", 2_000, modified=at + timedelta(hours=1))
    rig.mem.put("r/", cursor_day, "old", 3_000, modified=at - timedelta(seconds=1))
    rig.mem.put("r/", cursor_day, "new", 4_000, modified=at + timedelta(seconds=1))
    poller = rig.poller(start_from="now", lookback=HOUR)
    await poller.start()
    await rig.poll(poller)
    await rig.delivered(ids(4_000))
    assert rig.mem.listed[("r/", OLD)] == 0 and rig.mem.listed[("r/", closed_day)] == 0


def test_the_poller_is_provider_neutral() -> None:
    """GCS and Azure sources build on it: importing it must not load an AWS library or module."""
    code = "import adapters.partitioned, sys; print('\\n'.join(sorted(sys.modules)))"
    root = Path(__file__).resolve().parent.parent
    loaded = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=root)
    tops = {m.split(".")[0] for m in loaded.stdout.split()}
    assert not tops & {"aiobotocore", "botocore", "boto3", "aiohttp"}
    assert not [m for m in loaded.stdout.split() if m.startswith("adapters.aws")]


def test_first_day_passes_over_folders_that_lead_to_no_date():
    """A stray `2019/notes.json`, a month `13/` or a day `0/` must not end a backfill's search (review of #11: the
    smallest name at each level was taken, so such a folder made the source read nothing, silently)."""
    from adapters.partitioned import first_day

    tree = {
        "p/": ["2019", "2020", "logs"],
        "p/2019/": [],  # only a file (notes.json) below 2019: no month folders
        "p/2020/": ["00", "13", "02", "03"],
        "p/2020/00/": ["01"],
        "p/2020/13/": ["01"],
        "p/2020/02/": ["30", "31"],  # no such days
        "p/2020/03/": ["x", "05", "04"],
    }

    async def subdirs(prefix: str) -> list[str]:
        return tree.get(prefix, [])

    assert asyncio.run(first_day(subdirs, "p/")) == date(2020, 3, 4)
    assert asyncio.run(first_day(subdirs, "q/")) is None
    hive = {"h/": ["year=2021"], "h/year=2021/": ["month=7"], "h/year=2021/month=7/": ["day=9", "day=10"]}

    async def hive_subdirs(prefix: str) -> list[str]:
        return hive.get(prefix, [])

    def value_of(level: int, name: str) -> str | None:
        key, _, value = name.partition("=")
        return value if key == ("year", "month", "day")[level] else None

    assert asyncio.run(first_day(hive_subdirs, "h/", value_of)) == date(2021, 7, 9)
