"""adapters/gcp/gcsio.py against fake-gcs-server through a real TCP proxy that cuts the first download after N
bytes: the reader reopens at the right offset and the records are exactly those of an uncut read (from the review
of #11; the CRC32C limit it also found is stated in the README: a resumed read is not checked)."""

from __future__ import annotations

import contextlib
import socket
import threading
from typing import Any

import pytest
from google.auth.credentials import AnonymousCredentials
from services import FakeGcs
from test_gcp_gcs import TODAY, Bucket, lines, name

from adapters.gcp.gcsio import ObjectReader, session

pytestmark = pytest.mark.integration


def _ids(results: list[Any]) -> list[int]:
    return [i for r in results for i in r.batch.column("bytes").to_pylist()]


class _CuttingProxy:
    """Forwards TCP to `target`; the first connection whose response passes `cut_after` bytes is closed there."""

    def __init__(self, target: tuple[str, int], cut_after: int) -> None:
        self.target, self.cut_after = target, cut_after
        self.cut = False
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self.sock.accept()
            except OSError:
                return
            upstream = socket.create_connection(self.target)
            threading.Thread(target=self._pipe, args=(client, upstream, False), daemon=True).start()
            threading.Thread(target=self._pipe, args=(upstream, client, True), daemon=True).start()

    def _pipe(self, src: socket.socket, dst: socket.socket, downstream: bool) -> None:
        sent = 0
        try:
            while data := src.recv(65536):
                if downstream and not self.cut and sent + len(data) > self.cut_after:
                    self.cut = True
                    dst.sendall(data[: self.cut_after - sent])
                    break
                dst.sendall(data)
                sent += len(data)
        except OSError:
            pass
        for s in (src, dst):
            with contextlib.suppress(OSError):
                s.shutdown(socket.SHUT_RDWR)
            s.close()


def test_a_download_cut_mid_object_is_reopened_at_its_offset(fake_gcs: FakeGcs) -> None:
    b = Bucket(fake_gcs)
    key = name(TODAY, 0)
    b.put(key, lines(0, 14_000))
    obj = b.obj(key)
    host, port = fake_gcs.endpoint.split("//", 1)[1].rstrip("/").split(":")
    proxy = _CuttingProxy((host, int(port)), cut_after=3_000_001)
    http = session(AnonymousCredentials(), 1)
    results = list(ObjectReader(http, f"http://127.0.0.1:{proxy.port}", obj, "gcs")(None))
    assert proxy.cut
    assert _ids(results) == list(range(14_000))  # none twice, none missing; the CRC32C of the whole read held
    proxy.sock.close()
