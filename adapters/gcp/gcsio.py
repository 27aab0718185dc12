"""A Cloud Storage object as a seekable read-only file for parsers running in worker threads: streamed, never slurped.

Why it is built this way:
- google-cloud-storage is synchronous (requests underneath), and the parsers already run in worker threads
  (adapters/units.py `deliver_unit` steps them in the source's executor). So the file simply blocks its thread on
  HTTP: no hand-off to the event loop is needed (as adapters/aws/s3io.py must do for aiobotocore), and an async
  client would only add a second HTTP stack. The event loop never waits on it.
- A read streams one media GET (`alt=media`, `Range: bytes=POS-`) from the current position and reads it as the
  parser asks, so memory is the parser's window plus one read (`READ_SIZE`), whatever the object's size: the
  client library's own `download_as_bytes` holds the object, and its `BlobReader` costs one request per chunk. A
  seek elsewhere (the parsing seam seeks to a resume point, Parquet to its footer) starts a new ranged GET there.
  The session is google-auth's `AuthorizedSession`, which adds and refreshes the token.
- Every GET carries `ifGenerationMatch=<generation>`, and the response's `x-goog-generation` must be that
  generation: an object replaced while it is read fails (`ObjectChanged`, HTTP 412) instead of splicing two
  generations into one stream; the poller lists the new generation as a new version. (fake-gcs-server ignores the
  precondition but sends the header, so the check holds there too.)
- Bytes are read as stored (`Accept-Encoding: gzip`, no decoding): an object uploaded with `Content-Encoding: gzip`
  comes as its gzip bytes, which the seam unwraps, and offsets are those of the stored object, as ranges need. A
  whole object read in one pass is checked against the listing's CRC32C, so a response corrupted on the way fails.
- A connection that drops mid-object (or a 429/5xx) is reopened at the current offset, a few times, so a long
  object survives a blip; then, and for a denied or vanished object, `RemoteReadError`: the unit fails and is
  tried again later (never "damaged"). A token refresh that fails is one too.
- Both GCP sources read objects the same way (polling, `gcp_gcs`; Cloud Storage notifications, `gcp_pubsub`), so
  the object record (`GcsObject`) and the opener handed to `deliver_unit` (`ObjectReader`) live here once.
"""

from __future__ import annotations

import base64
import io
import logging
import time
import urllib.parse
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any

import google.auth.exceptions
import google_crc32c
import requests
import urllib3.exceptions
from google.auth.credentials import Credentials
from google.auth.transport.requests import AuthorizedSession
from requests.adapters import HTTPAdapter

from adapters.units import RemoteReadError
from collector.parsing import ParseResult, open_stream

log = logging.getLogger("flowcollector.gcp.gcs")

READ_SIZE = 1 << 20
REOPEN_ATTEMPTS = 4
DEFAULT_ENDPOINT = "https://storage.googleapis.com"
TIMEOUT = (30.0, 120.0)  # connect, and between two reads of a response


class ObjectChanged(RemoteReadError):
    """The object's generation changed while it was being read: read it again as its new version."""


@dataclass(frozen=True, slots=True)
class GcsObject:
    """One object generation to read. `crc32c` is the listing's (base64, big-endian), None if unknown; `updated`
    is when that generation was written, in epoch seconds, for the source's lag."""

    bucket: str
    name: str
    generation: int
    size: int
    updated: float | None = None
    crc32c: str | None = None

    @property
    def label(self) -> str:
        return f"gs://{self.bucket}/{self.name}"


def session(credentials: Credentials, connections: int) -> AuthorizedSession:
    """An HTTP session for media downloads, with a connection pool as large as the reads run at once."""
    http = AuthorizedSession(credentials)
    adapter = HTTPAdapter(pool_connections=1, pool_maxsize=max(connections, 1))
    http.mount("https://", adapter)
    http.mount("http://", adapter)
    return http


def media_url(endpoint: str | None, obj: GcsObject) -> str:
    base = (endpoint or DEFAULT_ENDPOINT).rstrip("/")
    bucket = urllib.parse.quote(obj.bucket, safe="")
    name = urllib.parse.quote(obj.name, safe="")
    return f"{base}/download/storage/v1/b/{bucket}/o/{name}?alt=media&ifGenerationMatch={obj.generation}"


def _api_message(response: requests.Response) -> str:
    """The JSON API's error message (`{"error": {"message": ...}}`), else the start of the body."""
    try:
        body = response.json()
        message = body["error"]["message"]
    except (ValueError, KeyError, TypeError):
        message = response.text[:200]
    return " ".join(str(message).split())


class GcsObjectFile(io.RawIOBase):
    def __init__(
        self, http: requests.Session, endpoint: str | None, obj: GcsObject, timeout: tuple[float, float] = TIMEOUT
    ) -> None:
        super().__init__()
        self._http = http
        self.obj = obj
        self.size = obj.size
        self._url = media_url(endpoint, obj)
        self._timeout = timeout
        self._pos = 0
        self._response: requests.Response | None = None
        self._response_pos = -1  # offset the open response returns next
        self.opened: list[int] = []  # where each GET started, for tests and logs
        # CRC32C of bytes [0, _crc_pos) while the object is read in one pass from its start (None: not checkable).
        self._crc: int | None = 0 if obj.crc32c else None
        self._crc_pos = 0

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
        data = self._read(want)
        n = len(data)
        memoryview(buffer)[:n] = data
        if self._crc is not None:
            if self._pos == self._crc_pos:
                self._crc = google_crc32c.extend(self._crc, data)
                self._crc_pos += n
                if self._crc_pos == self.size:
                    self._check_crc()
            elif self._pos > self._crc_pos:
                self._crc = None  # a seek forward: bytes skipped, the sum cannot be checked
        self._pos += n
        return n

    def close(self) -> None:
        if not self.closed:
            self._drop()
        super().close()

    # -- HTTP

    def _check_crc(self) -> None:
        want = self.obj.crc32c
        got = base64.b64encode((self._crc or 0).to_bytes(4, "big")).decode()
        if want and got != want:
            raise RemoteReadError(f"{self.obj.label}: the bytes read do not match its CRC32C ({got}, not {want})")

    def _drop(self) -> None:
        if self._response is not None:
            response, self._response = self._response, None
            response.close()

    def _open(self, pos: int) -> requests.Response:
        self._drop()
        self.opened.append(pos)
        where = self.obj.label
        headers = {"Range": f"bytes={pos}-", "Accept-Encoding": "gzip"}
        try:
            response = self._http.get(self._url, headers=headers, stream=True, timeout=self._timeout)
        except google.auth.exceptions.GoogleAuthError as exc:
            raise RemoteReadError(f"{where}: credentials refused or unavailable: {exc}") from None
        status = response.status_code
        if status in (200, 206):
            generation = response.headers.get("x-goog-generation")
            if generation is not None and generation != str(self.obj.generation):
                response.close()
                raise ObjectChanged(
                    f"{where} changed while being read (generation {generation}, not {self.obj.generation})"
                )
            if status == 200 and pos:
                response.close()
                raise RemoteReadError(f"{where}: the server ignored the range starting at byte {pos}")
            self._response, self._response_pos = response, pos
            return response
        message = _api_message(response)
        response.close()
        if status == 412:
            raise ObjectChanged(f"{where} changed while being read (generation no longer {self.obj.generation})")
        if status == 429 or status >= 500:
            raise _Transient(f"HTTP {status} {message}")
        if status == 404:
            raise RemoteReadError(f"{where}: not found (deleted, or generation {self.obj.generation} replaced)")
        raise RemoteReadError(f"{where}: HTTP {status} {message}")

    def _read(self, want: int) -> bytes:
        for attempt in range(REOPEN_ATTEMPTS + 1):
            try:
                response = self._response
                if response is None or self._response_pos != self._pos:
                    response = self._open(self._pos)
                data = response.raw.read(want, decode_content=False)
                if not data:
                    raise _Transient(f"the response ended at byte {self._pos} of {self.size}")
                self._response_pos += len(data)
                return bytes(data)
            except RemoteReadError:
                raise
            except (_Transient, OSError, urllib3.exceptions.HTTPError) as exc:
                # requests' errors are OSErrors; urllib3's ProtocolError / ReadTimeoutError come from reading the
                # body of a connection that broke.
                self._drop()
                if attempt == REOPEN_ATTEMPTS:
                    raise RemoteReadError(f"{self.obj.label}: read failed at byte {self._pos}: {exc}") from exc
                log.warning("%s: read failed at byte %d (%s); reopening", self.obj.label, self._pos, exc)
                time.sleep(0.2 * 2**attempt)
        raise AssertionError("unreachable")


class _Transient(Exception):
    """A failure worth reopening the download for (a 5xx, a 429, a response cut short)."""


def open_object(http: requests.Session, endpoint: str | None, obj: GcsObject) -> io.BufferedReader:
    """A buffered reader (with `peek`, as format detection needs) over the object."""
    return io.BufferedReader(GcsObjectFile(http, endpoint, obj), buffer_size=READ_SIZE)


class ObjectReader:
    """`open_results(resume)` for `deliver_unit`: the object streamed (`open_object`) and parsed by
    `collector.parsing.open_stream` with the source's parser `options` (`projects`, `sampling_rate`), in the worker
    thread that calls it. A resumed plain object is read from its resume point on (the seam seeks: collector/
    parsing.py, "Resuming by seeking"). Counts what it reads into `bytes_read[0]`; `changed` tells a read that
    failed because the object was replaced from any other failure. `open_file` (`open_object`'s signature) is how a
    test puts something between the reader and the server."""

    def __init__(
        self,
        http: requests.Session,
        endpoint: str | None,
        obj: GcsObject,
        source: str,
        options: Mapping[str, Any] | None = None,
        bytes_read: list[int] | None = None,
        provider: str = "auto",
        open_file: Callable[[requests.Session, str | None, GcsObject], io.BufferedReader] | None = None,
    ) -> None:
        self.http = http
        self.endpoint = endpoint
        self.obj = obj
        self.source = source
        self.options = dict(options or {})
        self.bytes_read = bytes_read if bytes_read is not None else [0]
        self.provider = provider
        self.changed = False
        self._open_file = open_file or open_object

    def __call__(self, resume: dict[str, Any] | None) -> Iterator[ParseResult]:
        obj = self.obj
        fh = self._open_file(self.http, self.endpoint, obj)
        try:
            yield from open_stream(
                fh,
                unit=obj.label,
                source=self.source,
                provider=self.provider,
                options=self.options,
                resume=resume,
                bytes_read=self.bytes_read,
                size=obj.size,
            )
        except ObjectChanged:
            self.changed = True
            raise
        finally:
            fh.close()
