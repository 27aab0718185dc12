"""Resuming by seeking (collector/parsing.py): a resumed plain, seekable stream is read from its resume point on,
not from byte 0, and gives exactly the batches and positions a read skipping to that point gives; gzip streams,
streams that cannot seek and formats that do not opt in are still read from the start and skipped.

The input is AWS flow log text built from the user guide's default-format example record (`2 123456789010
eni-1235b8ca123456789 172.31.16.139 172.31.16.21 20641 22 6 20 4249 1418530010 1418530070 ACCEPT OK`), its `bytes`
value replaced by a record id, so each batch can be compared by its ids.
"""

from __future__ import annotations

import gzip
import io
from pathlib import Path
from typing import Any

from adapters.aws.fields import V2_FIELDS
from collector.parsing import READ_SIZE, UTF8_BOM, ParseResult, open_stream, open_unit

LINES = 120_000  # ~14 MB


def text(n: int = LINES) -> bytes:
    rows = [
        f"2 123456789010 eni-1235b8ca123456789 172.31.16.139 172.31.16.{i % 250 + 1} {20641 + i % 1000} 22 6 20"
        f" {i} 1418530010 1418530070 ACCEPT OK\n"
        for i in range(n)
    ]
    return (" ".join(V2_FIELDS) + "\n" + "".join(rows)).encode()


def summary(results: list[ParseResult]) -> list[tuple[list[int], dict[str, Any], bool]]:
    return [(r.batch.column("bytes").to_pylist(), r.position, r.final) for r in results]


def parse(path: Path, resume: dict[str, Any] | None = None) -> tuple[list[ParseResult], int]:
    counter = [0]
    results = list(open_unit(path, unit=str(path), source="t", resume=resume, bytes_read=counter))
    return results, counter[0]


def test_a_plain_file_resumes_at_its_offset(tmp_path: Path) -> None:
    path = tmp_path / "flows.log"
    path.write_bytes(data := text())
    full, read_all = parse(path)
    assert read_all == len(data) and len(full) == 4  # 14 MB: three 4 MiB blocks and the rest
    resume = full[0].position
    assert resume["offset"] > READ_SIZE  # past the head read for recognizing the format
    resumed, read = parse(path, resume)
    assert summary(resumed) == summary(full[1:])
    # The head (one read of READ_SIZE) for the sniff, then only what follows the resume point.
    assert read == READ_SIZE + len(data) - resume["offset"]


def test_a_byte_order_mark_is_not_counted_in_the_offset(tmp_path: Path) -> None:
    path = tmp_path / "bom.log"
    path.write_bytes(UTF8_BOM + (data := text()))
    full, _ = parse(path)
    resume = full[1].position
    resumed, read = parse(path, resume)
    assert summary(resumed) == summary(full[2:])
    assert resumed[0].batch.column("bytes").to_pylist()[0] == full[2].batch.column("bytes").to_pylist()[0]
    assert read == READ_SIZE + (len(UTF8_BOM) + len(data)) - (len(UTF8_BOM) + resume["offset"])


def test_gzip_is_decompressed_from_the_start_and_skipped(tmp_path: Path) -> None:
    path = tmp_path / "flows.log.gz"
    path.write_bytes(compressed := gzip.compress(text(), 1))
    full, _ = parse(path)
    resumed, read = parse(path, full[0].position)
    assert summary(resumed) == summary(full[1:])
    assert read == len(compressed)


class _Pipe(io.RawIOBase):
    """A stream that cannot seek (as a pipe or /dev/stdin)."""

    def __init__(self, data: bytes) -> None:
        self._data = io.BytesIO(data)

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        return self._data.readinto(buffer)


def test_a_stream_that_cannot_seek_is_read_from_the_start_and_skipped(tmp_path: Path) -> None:
    path = tmp_path / "flows.log"
    path.write_bytes(data := text())
    full, _ = parse(path)
    counter = [0]
    fh = io.BufferedReader(_Pipe(data))
    resumed = list(open_stream(fh, unit="pipe", source="t", resume=full[0].position, bytes_read=counter))
    assert summary(resumed) == summary(full[1:])
    assert counter[0] == len(data)


def test_a_resume_at_the_end_gives_one_final_empty_result(tmp_path: Path) -> None:
    path = tmp_path / "flows.log"
    path.write_bytes(data := text(1000))
    full, _ = parse(path)
    assert full[-1].position["offset"] == len(data)
    resumed, _ = parse(path, full[-1].position)
    assert summary(resumed) == [([], full[-1].position, True)]


def test_gcp_lines_resume_at_their_offset(tmp_path: Path) -> None:
    """The GCP LogEntry line parser opts in too: a log sink's Cloud Storage export (one LogEntry per line, shaped
    like Google's documented VPC Flow Logs record; `bytes_sent` is a record id)."""
    line = (
        '{"insertId":"x%d","jsonPayload":{"bytes_sent":"%d","connection":{"dest_ip":"198.51.100.7","dest_port":443,'
        '"protocol":6,"src_ip":"10.132.0.2","src_port":40000},"packets_sent":"3","reporter":"SRC",'
        '"src_instance":{"project_id":"shop-prod-1","region":"europe-west1","vm_name":"web-1","zone":"europe-west1-b"},'
        '"start_time":"2026-01-05T10:00:00.123Z","end_time":"2026-01-05T10:00:05.987Z"},'
        '"logName":"projects/shop-prod-1/logs/compute.googleapis.com%%2Fvpc_flows"}\n'
    )
    path = tmp_path / "00:00:00_00:59:59_S0.json"
    path.write_bytes(data := "".join(line % (i, i) for i in range(40_000)).encode())
    full, _ = parse(path)
    assert len(full) >= 3 and full[0].provider == "gcp"
    resume = full[1].position
    resumed, read = parse(path, resume)
    assert summary(resumed) == summary(full[2:])
    assert read == READ_SIZE + len(data) - resume["offset"]
