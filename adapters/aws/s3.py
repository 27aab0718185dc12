"""`aws_s3` source: VPC and Transit Gateway flow logs delivered to S3, found by polling the bucket.

What is S3's own here; the day cursors, closing after the look-back, retries and delivery are the shared poller's
(adapters/partitioned.py, which explains them):
- Keys follow AWS's delivery layout, plain or Hive-compatible, with daily or hourly partitions:
    {prefix}AWSLogs/{account}/{service}/{region}/{yyyy}/{mm}/{dd}/[{hh}/]{file}
    {prefix}AWSLogs/aws-account-id={account}/aws-service={service}/aws-region={region}/year={yyyy}/month={mm}/
        day={dd}/[hour={hh}/]{file}
  with service `vpcflowlogs` or `transitgatewayflowlogs`. A *root* is one (account, service, region) directory in
  one layout; accounts and regions are listed in the config or discovered with delimiter listings, again every
  `discover_interval`. Its prefix names its cursor in the checkpoint store.
- A day is listed with ListObjectsV2 on the day's prefix, so hourly partitions come with it; that costs one request
  per 1,000 objects of the day, whatever the bucket holds. The partitions that exist (for a backfill) are found
  with delimiter listings of the years, months and days.
- An object is a unit: its key, versioned by ETag, streamed (adapters/aws/s3io.py) and parsed in this source's own
  threads (`max_concurrency`), which block on the network.
- A denied or missing bucket, or a wrong credential, is reported with the account, bucket and prefix named.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Sequence
from concurrent.futures import Executor, ThreadPoolExecutor
from dataclasses import dataclass
from datetime import date
from typing import Any

from botocore.exceptions import BotoCoreError, ClientError

from adapters.aws.config import S3SourceConfig, auth_of
from adapters.aws.s3io import ObjectReader, RemoteReadError, S3Object, bare_etag
from adapters.aws.session import Identity, describe_error, identities
from adapters.partitioned import Listed, OpenResults, PartitionedPoller, Report, first_day
from collector.aio import sleep_or_stop
from collector.checkpoints import CheckpointStore
from collector.metrics import Metrics
from collector.pipeline import Pipeline

log = logging.getLogger("flowcollector.source.aws_s3")

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

    @property
    def key(self) -> str:
        return self.prefix

    def day_prefix(self, day: date) -> str:
        if self.layout == _HIVE:
            return f"{self.prefix}year={day:%Y}/month={day:%m}/day={day:%d}/"
        return f"{self.prefix}{day:%Y}/{day:%m}/{day:%d}/"

    @property
    def label(self) -> str:
        return f"account={self.account} service={self.service} region={self.region} prefix={self.prefix}"


def _component(part: str, name: str) -> str | None:
    """`aws-account-id=123` -> `123` (Hive); None when the part is not `name=...`."""
    head, sep, value = part.partition("=")
    return value if sep and head == name else None


class _Bucket:
    """The bucket as the poller sees it: its roots, their partitions and objects (a Lister), and how an object is
    read (an Opener)."""

    errors: tuple[type[BaseException], ...] = (ClientError, BotoCoreError)
    read_errors: tuple[type[BaseException], ...] = (ClientError, BotoCoreError, RemoteReadError)

    def __init__(self, config: S3SourceConfig) -> None:
        self.config = config
        self.name = config.name
        prefix = config.prefix.strip("/")
        self.base = f"{prefix}/AWSLogs/" if prefix else "AWSLogs/"
        self.identities: list[Identity] = []
        self._roots: list[Root] = []
        self._discovered_at = 0.0

    def use(self, idents: list[Identity]) -> None:
        """A (re)started run: its roots must use the new identities, not the closed ones."""
        self.identities = idents
        self._roots = []

    # -- Lister

    async def roots(self, report: Report) -> Sequence[Root]:
        if time.monotonic() - self._discovered_at >= self.config.discover_interval or not self._roots:
            roots, failed = await self._discover(report)
            # An identity whose listing failed keeps the roots it had (a blip must not hide an account until the
            # next discovery), and discovery runs again next poll.
            self._roots = roots + [r for r in self._roots if r.identity.label in failed]
            if not failed:
                self._discovered_at = time.monotonic()
            log.info("source=%s roots=%d %s", self.name, len(self._roots), " ".join(r.prefix for r in self._roots))
        return self._roots

    async def earliest_day(self, root: Root) -> date | None:
        client = await root.identity.client("s3")
        names = ("year", "month", "day")

        def value_of(level: int, sub: str) -> str | None:
            return _component(sub, names[level]) if root.layout == _HIVE else sub

        return await first_day(lambda prefix: self._subdirs(client, prefix), root.prefix, value_of)

    async def existing_days(self, root: Root, since: date, until: date) -> set[date]:
        """Delimiter listings of the years, then of the months and days in range (one request each)."""
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

    async def list_day(self, root: Root, day: date) -> AsyncIterator[Listed]:
        client = await root.identity.client("s3")
        paginator = client.get_paginator("list_objects_v2")
        async for page in paginator.paginate(Bucket=self.config.bucket, Prefix=root.day_prefix(day)):
            for item in page.get("Contents", ()):
                key = item["Key"]
                if key.endswith("/"):
                    continue  # a folder marker written by a console or a sync tool
                yield Listed(key, bare_etag(item["ETag"]) or "", int(item["Size"]), item["LastModified"])

    def cannot_list(self, root: Root, exc: BaseException) -> str:
        where = f"s3://{self.config.bucket}/{root.prefix}"
        return f"{root.identity.label} cannot list {where}: {describe_error(exc)}"

    # -- Opener

    def label(self, root: Root, obj: Listed) -> str:
        return f"s3://{self.config.bucket}/{obj.key}"

    async def open(self, root: Root, obj: Listed, bytes_read: list[int]) -> OpenResults:
        client = await root.identity.client("s3")
        s3obj = S3Object(self.config.bucket, obj.key, obj.size, obj.version, root.region, obj.modified.timestamp())
        return ObjectReader(client, s3obj, self.name, asyncio.get_running_loop(), bytes_read)

    # -- listing

    async def _discover(self, report: Report) -> tuple[list[Root], set[str]]:
        """Every (account, service, region) root the identities can see, in both layouts; and the labels of the
        identities whose listing failed."""
        roots: list[Root] = []
        failed: set[str] = set()
        for ident in self.identities:
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
                where = f"s3://{self.config.bucket}/{self.base}"
                report(f"discover:{ident.label}", f"{ident.label} cannot list {where}: {describe_error(exc)}")
        return roots, failed

    async def _subdirs(self, client: Any, prefix: str) -> list[str]:
        """Names of the 'directories' right under `prefix` (delimiter listing), sorted."""
        out = []
        paginator = client.get_paginator("list_objects_v2")
        async for page in paginator.paginate(Bucket=self.config.bucket, Prefix=prefix, Delimiter="/"):
            out += [p["Prefix"][len(prefix) :].rstrip("/") for p in page.get("CommonPrefixes", ())]
        return sorted(out)


class S3Source:
    def __init__(
        self, config: S3SourceConfig, store: CheckpointStore, metrics: Metrics, executor: Executor | None = None
    ) -> None:
        self.config = config
        self.name = config.name
        self.store = store
        self.counters = metrics.sources[config.name]
        self._specs = identities(auth_of(config), config.accounts)
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
        executor = ThreadPoolExecutor(self.config.max_concurrency, thread_name_prefix=f"s3-{self.name}")
        idents = [Identity(spec) for spec in self._specs]
        self._bucket.use(idents)
        try:
            await self.poller.start()
            while not stop.is_set():
                await self.poller.poll(pipeline, executor, stop)
                if once:
                    return
                await sleep_or_stop(stop, self.config.poll_interval)
        finally:
            for ident in idents:
                await ident.close()
            executor.shutdown(wait=False, cancel_futures=True)
