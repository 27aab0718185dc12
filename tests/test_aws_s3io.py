"""S3 objects read as streams from moto's server: the same parse results as the local file, bounded requests,
and a replaced object detected instead of spliced."""

from __future__ import annotations

import asyncio
import gzip
import io
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from services import Moto

from adapters.aws.config import AwsAuth
from adapters.aws.s3io import READ_SIZE, ObjectChanged, S3ObjectFile, open_object
from adapters.aws.session import Identity, identities
from collector.parsing import open_stream, open_unit

pytestmark = pytest.mark.integration

HEADER = (
    "version account-id interface-id srcaddr dstaddr srcport dstport protocol packets bytes start end action log-status"
)


def v2_lines(n: int) -> str:
    # The AWS user guide's accepted-SSH example record, varied per row.
    rows = [
        f"2 123456789010 eni-1235b8ca123456789 172.31.16.139 172.31.{i // 250 % 250}.{i % 250 + 1} {1024 + i % 60000}"
        f" 22 6 {i % 50 + 1} {4249 + i} 1418530010 1418530070 ACCEPT OK"
        for i in range(n)
    ]
    return HEADER + "\n" + "\n".join(rows) + "\n"


async def client_for(moto: Moto):
    ident = Identity(identities(AwsAuth(region="us-east-1", endpoint_url=moto.endpoint), ())[0])
    return ident, await ident.client("s3")


def rows(results) -> list[dict]:
    return [r for res in results for r in res.batch.to_pylist()]


async def test_gzip_text_streams_in_a_few_requests_and_parses_like_the_file(moto: Moto, tmp_path: Path) -> None:
    ident, s3 = await client_for(moto)
    try:
        await s3.create_bucket(Bucket="logs")
        body = gzip.compress(v2_lines(60_000).encode(), 1)  # ~5 MB of text: several READ_SIZE reads
        assert len(body) > 2 * READ_SIZE or len(v2_lines(60_000)) > 4 * READ_SIZE
        head = await s3.put_object(Bucket="logs", Key="a/b.log.gz", Body=body)
        (tmp_path / "b.log.gz").write_bytes(body)
        loop = asyncio.get_running_loop()

        def parse_remote() -> tuple[list[dict], int]:
            raw = S3ObjectFile(s3, "logs", "a/b.log.gz", len(body), head["ETag"], loop)
            with io.BufferedReader(raw, READ_SIZE) as fh:
                out = rows(open_stream(fh, unit="s3://logs/a/b.log.gz", source="s", size=len(body)))
            return out, raw.requests

        remote, requests = await asyncio.to_thread(parse_remote)
        local = rows(open_unit(tmp_path / "b.log.gz", unit="s3://logs/a/b.log.gz", source="s"))
        assert len(remote) == 60_000 and remote == local
        assert requests == 1  # one streamed GET for a sequential read
    finally:
        await ident.close()


async def test_parquet_is_read_with_ranged_gets(moto: Moto, tmp_path: Path) -> None:
    ident, s3 = await client_for(moto)
    try:
        await s3.create_bucket(Bucket="logs")
        table = pa.table(
            {
                "version": pa.array([5] * 3000, pa.int32()),
                "account_id": ["123456789010"] * 3000,
                "srcaddr": [f"10.0.{i // 250}.{i % 250}" for i in range(3000)],
                "dstaddr": ["10.1.0.1"] * 3000,
                "packets": pa.array(range(3000), pa.int64()),
                "start": pa.array([1418530010] * 3000, pa.int64()),
                "end": pa.array([1418530070] * 3000, pa.int64()),
                "log_status": ["OK"] * 3000,
            }
        )
        sink = io.BytesIO()
        pq.write_table(table, sink, row_group_size=1000)
        data = sink.getvalue()
        head = await s3.put_object(Bucket="logs", Key="p.parquet", Body=data)
        (tmp_path / "p.parquet").write_bytes(data)
        loop = asyncio.get_running_loop()

        def parse_remote() -> list[dict]:
            with open_object(s3, "logs", "p.parquet", len(data), head["ETag"], loop) as fh:
                return rows(open_stream(fh, unit="p", source="s", size=len(data)))

        remote = await asyncio.to_thread(parse_remote)
        assert remote == rows(open_unit(tmp_path / "p.parquet", unit="p", source="s"))
        assert [r["packets"] for r in remote] == list(range(3000))
    finally:
        await ident.close()


async def test_an_object_replaced_mid_read_is_detected(moto: Moto) -> None:
    ident, s3 = await client_for(moto)
    try:
        await s3.create_bucket(Bucket="logs")
        text = v2_lines(200_000).encode()
        head = await s3.put_object(Bucket="logs", Key="k.log", Body=text)
        loop = asyncio.get_running_loop()
        raw = S3ObjectFile(s3, "logs", "k.log", len(text), head["ETag"], loop)

        def first_read() -> bytes:
            return raw.read(1000)

        assert (await asyncio.to_thread(first_read)) == text[:1000]
        await s3.put_object(Bucket="logs", Key="k.log", Body=text.replace(b"ACCEPT", b"REJECT"))
        raw.seek(5 * READ_SIZE)  # a new ranged GET: must not read the new version into the old stream
        with pytest.raises(ObjectChanged):
            await asyncio.to_thread(raw.read, 1000)
        await asyncio.to_thread(raw.close)
    finally:
        await ident.close()
