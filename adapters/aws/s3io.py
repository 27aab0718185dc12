"""An S3 object as a seekable read-only file for parsers running in worker threads: streamed, never slurped.

Why it is built this way:
- The parsers are synchronous generators (pure, tested on files); the S3 client is asynchronous (aiobotocore). The
  file's methods run in the parser's worker thread and hand each request to the event loop
  (`run_coroutine_threadsafe`), blocking only that thread. One request moves up to `READ_SIZE` bytes, so the
  hand-off costs nothing next to the data.
- Sequential reads (text, gzip) stream a single GET from the current position. A seek elsewhere (Parquet reads its
  footer, then column chunks) starts a ranged GET there. Memory is the parser's window plus one read.
- Every GET carries `If-Match: <ETag>`: an object replaced while being read fails (412) instead of splicing two
  versions into one stream. A connection that drops mid-object is reopened at the current offset, a few times,
  so a long object survives a network blip.
- Both S3 sources (polling, `aws_s3`; notifications, `aws_sqs`) read objects the same way, so the object record
  (`S3Object`), how an ETag is kept (`bare_etag`: unquoted, as checkpoints store it) and the opener handed to
  `deliver_unit` (`ObjectReader`) live here once.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import io
import logging
from collections.abc import Callable, Coroutine, Iterator
from dataclasses import dataclass
from typing import Any, TypeVar

from botocore.exceptions import BotoCoreError, ClientError

from adapters.units import RemoteReadError
from collector.parsing import ParseResult, open_stream

log = logging.getLogger("flowcollector.aws.s3")

READ_SIZE = 1 << 20
REOPEN_ATTEMPTS = 4
T = TypeVar("T")


class ObjectChanged(RemoteReadError):
    """The object's ETag changed while it was being read (HTTP 412): read it again as its new version."""


class S3ObjectFile(io.RawIOBase):
    def __init__(
        self,
        client: Any,
        bucket: str,
        key: str,
        size: int,
        etag: str | None,
        loop: asyncio.AbstractEventLoop,
        timeout: float = 300.0,
    ) -> None:
        super().__init__()
        self._client = client
        self.bucket = bucket
        self.key = key
        self.size = size
        # If-Match takes an entity tag as HTTP writes it, quoted (RFC 9110 sec. 8.8.3); listings give it quoted,
        # checkpoints keep it bare.
        self.etag = etag if not etag or etag.startswith(('"', 'W/"')) else f'"{etag}"'
        self._loop = loop
        self._timeout = timeout
        self._pos = 0
        self._body: Any = None
        self._body_pos = -1  # offset the open body will return next
        self.requests = 0  # GETs issued, for tests and metrics

    # -- io.RawIOBase

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def tell(self) -> int:
        return self._pos

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        if whence == io.SEEK_SET:
            pos = offset
        elif whence == io.SEEK_CUR:
            pos = self._pos + offset
        elif whence == io.SEEK_END:
            pos = self.size + offset
        else:
            raise ValueError(f"invalid whence {whence}")
        if pos < 0:
            raise OSError(f"negative seek position {pos}")
        self._pos = pos
        return pos

    def readinto(self, buffer: Any) -> int:
        want = min(len(buffer), self.size - self._pos)
        if want <= 0:
            return 0
        data = self._run(self._read(want))
        n = len(data)
        memoryview(buffer)[:n] = data
        self._pos += n
        return n

    def close(self) -> None:
        if not self.closed and self._body is not None:
            body, self._body = self._body, None
            if self._on_loop_thread():
                # Garbage collection of an abandoned parser can close us on the loop's own thread: waiting for the
                # loop there would block it for good, so the response is closed by a task instead.
                self._loop.create_task(self._close_body(body))
            else:
                try:
                    self._run(self._close_body(body))
                except Exception:  # noqa: BLE001 -- closing a half-read response must not mask the real outcome
                    log.debug("closing s3://%s/%s failed", self.bucket, self.key, exc_info=True)
        super().close()

    def _on_loop_thread(self) -> bool:
        try:
            return asyncio.get_running_loop() is self._loop
        except RuntimeError:
            return False

    # -- the event loop side

    def _run(self, coro: Coroutine[Any, Any, T]) -> T:
        if self._loop.is_closed() or self._on_loop_thread():
            coro.close()
            raise RemoteReadError("event loop closed" if self._loop.is_closed() else "read on the event loop's thread")
        future = asyncio.run_coroutine_threadsafe(coro, self._loop)
        try:
            return future.result(self._timeout)
        except concurrent.futures.TimeoutError:
            future.cancel()  # so a reopen cannot race the abandoned request on the body
            raise RemoteReadError(f"s3://{self.bucket}/{self.key}: no answer in {self._timeout:.0f}s") from None

    async def _open(self, pos: int) -> None:
        if self._body is not None:
            await self._close_body(self._body)
            self._body = None
        kwargs: dict[str, Any] = {"Bucket": self.bucket, "Key": self.key, "Range": f"bytes={pos}-"}
        if self.etag:
            kwargs["IfMatch"] = self.etag
        self.requests += 1
        try:
            response = await self._client.get_object(**kwargs)
        except ClientError as exc:
            code = str(exc.response.get("Error", {}).get("Code", ""))
            status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode")
            if code == "PreconditionFailed" or status == 412:
                where = f"s3://{self.bucket}/{self.key}"
                raise ObjectChanged(f"{where} changed while being read (ETag no longer {self.etag})") from None
            raise
        self._body = response["Body"]
        self._body_pos = pos

    async def _read(self, want: int) -> bytes:
        for attempt in range(REOPEN_ATTEMPTS + 1):
            try:
                if self._body is None or self._body_pos != self._pos:
                    await self._open(self._pos)
                data = await self._body.read(want)
                if not data and self._pos < self.size:
                    where = f"s3://{self.bucket}/{self.key}"
                    raise RemoteReadError(f"{where}: response ended at byte {self._pos} of {self.size}")
                self._body_pos += len(data)
                return bytes(data)
            except (ObjectChanged, ClientError):
                raise
            except (TimeoutError, OSError, BotoCoreError, RemoteReadError) as exc:
                # aiohttp's ClientPayloadError / ServerDisconnectedError are OSError-like; botocore wraps others.
                if attempt == REOPEN_ATTEMPTS:
                    where = f"s3://{self.bucket}/{self.key}"
                    raise RemoteReadError(f"{where}: read failed at byte {self._pos}: {exc}") from exc
                log.warning("s3://%s/%s: read failed at byte %d (%s); reopening", self.bucket, self.key, self._pos, exc)
                if self._body is not None:
                    await self._close_body(self._body)
                self._body = None
                await asyncio.sleep(0.2 * 2**attempt)
            except Exception as exc:
                if "aiohttp" in type(exc).__module__ and attempt < REOPEN_ATTEMPTS:
                    log.warning("s3://%s/%s: %s at byte %d; reopening", self.bucket, self.key, exc, self._pos)
                    self._body = None
                    await asyncio.sleep(0.2 * 2**attempt)
                    continue
                raise
        raise AssertionError("unreachable")

    @staticmethod
    async def _close_body(body: Any) -> None:
        close = getattr(body, "close", None)
        if close is not None:
            result = close()
            if asyncio.iscoroutine(result):
                await result


def open_object(
    client: Any, bucket: str, key: str, size: int, etag: str | None, loop: asyncio.AbstractEventLoop
) -> io.BufferedReader:
    """A buffered reader (with `peek`, as format detection needs) over the object."""
    return io.BufferedReader(S3ObjectFile(client, bucket, key, size, etag, loop), buffer_size=READ_SIZE)


# -- the object record and its opener, shared by the S3 sources


def bare_etag(value: Any) -> str | None:
    """An ETag as checkpoints keep it: without the quotes listings, HeadObject and events may put around it (HTTP
    writes entity tags quoted); None when there is none. S3ObjectFile quotes it again for If-Match."""
    return (value.strip('"') or None) if isinstance(value, str) else None


@dataclass(frozen=True, slots=True)
class S3Object:
    """One object to read. `etag` is unquoted; `size` and `etag` are None when whoever announced the object did not
    say (an event without them: ask S3). `event_time` is when it landed, in epoch seconds, for the source's lag."""

    bucket: str
    key: str
    size: int | None
    etag: str | None
    region: str | None
    event_time: float | None

    @property
    def unit(self) -> str:
        return f"{self.bucket}/{self.key}"

    @property
    def label(self) -> str:
        return f"s3://{self.bucket}/{self.key}"


class ObjectReader:
    """`open_results(resume)` for `deliver_unit`: the object streamed (`open_object`) and parsed by
    `collector.parsing.open_stream`, in the worker thread that calls it (the file blocks that thread on requests run
    by `loop`). Counts what it reads into `bytes_read[0]`; `changed` tells a read that failed because the object was
    replaced (HTTP 412 on If-Match) from any other failure, which the caller may treat differently.

    `obj` must have its size (a seekable file needs it); without an ETag the object is read without If-Match.
    `open_file` (`open_object`'s signature) is how a caller or a test puts something between the reader and S3, such
    as a connection that breaks mid-object."""

    def __init__(
        self,
        client: Any,
        obj: S3Object,
        source: str,
        loop: asyncio.AbstractEventLoop,
        bytes_read: list[int] | None = None,
        open_file: Callable[..., io.BufferedReader] | None = None,
    ) -> None:
        if obj.size is None:
            raise ValueError(f"{obj.label}: the size must be known to read it")
        self.client = client
        self.obj = obj
        self.size = obj.size
        self.source = source
        self.loop = loop
        self.bytes_read = bytes_read if bytes_read is not None else [0]
        self.changed = False
        self._open_file = open_file or open_object

    def __call__(self, resume: dict[str, Any] | None) -> Iterator[ParseResult]:
        obj = self.obj
        fh = self._open_file(self.client, obj.bucket, obj.key, self.size, obj.etag, self.loop)
        try:
            yield from open_stream(
                fh, unit=obj.label, source=self.source, resume=resume, bytes_read=self.bytes_read, size=self.size
            )
        except ObjectChanged:
            self.changed = True
            raise
        finally:
            fh.close()
