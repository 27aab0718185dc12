"""`gcp_gcs` source: VPC flow logs a Cloud Logging sink exports to a Cloud Storage bucket, found by polling it.

What is Cloud Storage's own here; the day cursors, closing after the look-back, retries and delivery are the shared
poller's (adapters/partitioned.py, which explains them):
- A log sink writes `{prefix}YYYY/MM/DD/HH:00:00_HH:59:59_S{n}.json` (`A{n}` for objects written later for the
  same hour), the prefix being the log id, `compute.googleapis.com/vpc_flows/` by default. There is one root, the
  prefix in the bucket (`gs://bucket/prefix/` names its cursor); its day partitions are `YYYY/MM/DD/`, and the hours
  are in the object names, so a day's listing (one request per PAGE_SIZE objects, `maxResults` / `pageToken`)
  holds them all. The days that exist (a backfill) are found with delimiter listings of years, months and days.
- An object is a unit: its name, versioned by its generation, which Cloud Storage changes whenever the content is
  written, so a rewritten object is read again as a new version. It is streamed with bounded memory and read from
  its resume point after a restart (adapters/gcp/gcsio.py) and parsed as GCP flow logs (`provider: gcp`) with the
  options `projects` and `sampling_rate`, in this source's own threads (`max_concurrency`), which block on HTTP.
- The client library is synchronous: listings run in one thread of their own, so the event loop never waits on
  them and a listing never queues behind the parsers.
- Credentials (adapters/gcp/auth.py) are loaded at the first poll and again after a poll that failed, so a fixed
  key file is picked up without a restart. Missing or unusable credentials, a missing bucket, a denied listing
  fail this source, once per poll, by name, counted in `units_failed`; a denied object fails that object. The
  other sources go on.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Callable, Sequence
from concurrent.futures import Executor, ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, date, datetime
from typing import Any, TypeVar

import google.auth.exceptions
import requests
from google.api_core import retry
from google.api_core.exceptions import GoogleAPIError
from google.cloud import storage

from adapters.gcp import auth
from adapters.gcp.config import GcsSourceConfig
from adapters.gcp.gcsio import GcsObject, ObjectReader, session
from adapters.partitioned import Listed, OpenResults, PartitionedPoller, Report, first_day
from adapters.units import RemoteReadError
from collector.aio import sleep_or_stop
from collector.checkpoints import CheckpointStore
from collector.metrics import Metrics
from collector.pipeline import Pipeline

log = logging.getLogger("flowcollector.source.gcp_gcs")

PAGE_SIZE = 1000  # objects per listing request (the JSON API's maximum); tests page over fewer
LIST_TIMEOUT = 60.0  # seconds per listing request


def _transient(exc: BaseException) -> bool:
    """What a listing request is retried on: 429, 5xx and broken connections, as the client library does, but not
    a credential that cannot get a token (also a connection error when the token endpoint is out of reach): that is
    reported at once and tried again next poll, instead of holding the poll for the retry's two minutes."""
    if isinstance(exc, google.auth.exceptions.GoogleAuthError):
        return False
    return isinstance(exc, _TRANSIENT) or retry.if_transient_error(exc)


_TRANSIENT = (ConnectionError, requests.ConnectionError, requests.Timeout, requests.exceptions.ChunkedEncodingError)
# A listing is retried for this long, then reported and tried again next poll.
LIST_RETRY = retry.Retry(predicate=_transient, initial=1.0, maximum=30.0, multiplier=2.0, timeout=120.0)
OBJECT_FIELDS = "items(name,generation,size,updated,crc32c),prefixes,nextPageToken"
T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class Root:
    bucket: str
    prefix: str  # "" or ends with "/"

    @property
    def key(self) -> str:
        return f"gs://{self.bucket}/{self.prefix}"

    def day_prefix(self, day: date) -> str:
        return f"{self.prefix}{day:%Y}/{day:%m}/{day:%d}/"


@dataclass(frozen=True, slots=True)
class GcsListed(Listed):
    """A listed object with its CRC32C (checked when the object is read whole)."""

    crc32c: str | None = None


class _Bucket:
    """The bucket as the poller sees it: one root, its day partitions and objects (a Lister), and how an object is
    read (an Opener)."""

    errors: tuple[type[BaseException], ...] = (
        GoogleAPIError,
        requests.RequestException,
        auth.CredentialsUnavailable,
        *auth.ERRORS,
    )
    read_errors: tuple[type[BaseException], ...] = (RemoteReadError,)

    def __init__(self, config: GcsSourceConfig) -> None:
        self.config = config
        self.name = config.name
        self.root = Root(config.bucket, config.prefix)
        self.where = f"gs://{config.bucket}/{config.prefix}"
        self.control: Executor | None = None  # the run's listing thread
        self._client: storage.Client | None = None
        self._http: requests.Session | None = None
        self.who = ""
        options: dict[str, Any] = {}
        if config.projects:
            options["projects"] = frozenset(config.projects)
        if config.sampling_rate is not None:
            options["sampling_rate"] = config.sampling_rate
        self.options = options

    def close(self) -> None:
        if self._http is not None:
            self._http.close()
        if self._client is not None:
            self._client.close()
        self._client = self._http = None

    async def _call(self, fn: Callable[[], T]) -> T:
        return await asyncio.get_running_loop().run_in_executor(self.control, fn)

    def _connect(self) -> None:
        loaded = auth.load(self.config, (auth.STORAGE_READ,))
        options = {"api_endpoint": self.config.endpoint} if self.config.endpoint else None
        self.close()
        self._client = storage.Client(project=loaded.project, credentials=loaded.credentials, client_options=options)
        self._http = session(loaded.credentials, self.config.max_concurrency)
        self.who = loaded.who

    # -- Lister

    async def roots(self, report: Report) -> Sequence[Root]:
        if self._client is None:
            try:
                await self._call(self._connect)
            except auth.CredentialsUnavailable as exc:
                report("credentials", f"cannot list {self.where}: {exc}")
                return []
            log.info("source=%s bucket=%s prefix=%s credentials: %s", self.name, self.root.bucket, self.root.prefix,
                     self.who)  # fmt: skip
        return [self.root]

    async def earliest_day(self, root: Root) -> date | None:
        return await first_day(self._subdirs, root.prefix)

    async def existing_days(self, root: Root, since: date, until: date) -> set[date]:
        """Delimiter listings of the years, then of the months and days in range (one request each)."""
        found: set[date] = set()
        for year_sub in await self._subdirs(root.prefix):
            if not year_sub.isdigit() or not since.year <= int(year_sub) <= until.year:
                continue
            year = int(year_sub)
            for month_sub in await self._subdirs(f"{root.prefix}{year_sub}/"):
                if not month_sub.isdigit() or not (since.year, since.month) <= (year, int(month_sub)) <= (
                    until.year,
                    until.month,
                ):
                    continue
                for day_sub in await self._subdirs(f"{root.prefix}{year_sub}/{month_sub}/"):
                    if not day_sub.isdigit():
                        continue
                    try:
                        day = date(year, int(month_sub), int(day_sub))
                    except ValueError:
                        continue
                    if since <= day < until:
                        found.add(day)
        return found

    async def list_day(self, root: Root, day: date) -> AsyncIterator[Listed]:
        pages = self._pages(prefix=root.day_prefix(day))
        while (page := await self._call(lambda: next(pages, None))) is not None:
            for item in page[0]:
                if item.name.endswith("/"):
                    continue  # a folder placeholder written by the console or a sync tool
                modified = item.updated or datetime.fromtimestamp(0, UTC)
                yield GcsListed(item.name, str(item.generation), int(item.size or 0), modified, item.crc32c)

    def cannot_list(self, root: Root, exc: BaseException) -> str:
        self._client = None  # connect again (credentials too) next poll
        return f"{self.who or 'credentials'} cannot list {root.key}: {auth.describe(exc)}"

    # -- Opener

    def label(self, root: Root, obj: Listed) -> str:
        return f"gs://{root.bucket}/{obj.key}"

    async def open(self, root: Root, obj: Listed, bytes_read: list[int]) -> OpenResults:
        if self._http is None:
            raise RemoteReadError(f"gs://{root.bucket}/{obj.key}: no connection (credentials failed)")
        crc = obj.crc32c if isinstance(obj, GcsListed) else None
        gcs = GcsObject(root.bucket, obj.key, int(obj.version), obj.size, obj.modified.timestamp(), crc)
        return ObjectReader(self._http, self.config.endpoint, gcs, self.name, self.options, bytes_read, "gcp")

    # -- listing

    def _pages(self, **kwargs: Any) -> Any:
        """An iterator of (blobs, prefixes) per listing page; each `next` is one request (call it in a thread)."""
        client = self._client
        if client is None:
            raise auth.CredentialsUnavailable("not connected")
        iterator = client.list_blobs(
            self.config.bucket,
            page_size=PAGE_SIZE,
            fields=OBJECT_FIELDS,
            timeout=LIST_TIMEOUT,
            retry=LIST_RETRY,
            **kwargs,
        )
        return ((list(page), set(page.prefixes)) for page in iterator.pages)

    async def _subdirs(self, prefix: str) -> list[str]:
        """Names of the 'directories' right under `prefix` (delimiter listing), sorted."""
        out: set[str] = set()
        pages = self._pages(prefix=prefix, delimiter="/")
        while (page := await self._call(lambda: next(pages, None))) is not None:
            out.update(p[len(prefix) :].rstrip("/") for p in page[1])
        return sorted(out)


class GcsSource:
    def __init__(
        self, config: GcsSourceConfig, store: CheckpointStore, metrics: Metrics, executor: Executor | None = None
    ) -> None:
        self.config = config
        self.name = config.name
        self.store = store
        self.counters = metrics.sources[config.name]
        self._bucket = _Bucket(config)
        self.poller: PartitionedPoller[Root] = PartitionedPoller(
            source=config.name,
            store=store,
            counters=self.counters,
            lister=self._bucket,
            opener=self._bucket,
            lookback=config.lookback,
            max_concurrency=config.max_concurrency,
            start_from=config.start_from,
            log=log,
        )

    async def run(self, pipeline: Pipeline, once: bool, stop: asyncio.Event) -> None:
        executor = ThreadPoolExecutor(self.config.max_concurrency, thread_name_prefix=f"gcs-{self.name}")
        control = ThreadPoolExecutor(1, thread_name_prefix=f"gcs-list-{self.name}")
        self._bucket.control = control
        try:
            await self.poller.start()
            while not stop.is_set():
                await self.poller.poll(pipeline, executor, stop)
                if once:
                    return
                await sleep_or_stop(stop, self.config.poll_interval)
        finally:
            executor.shutdown(wait=False, cancel_futures=True)
            await asyncio.get_running_loop().run_in_executor(control, self._bucket.close)
            control.shutdown(wait=False)
