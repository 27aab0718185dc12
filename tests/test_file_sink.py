"""The file sink: what it acks is on disk and readable; what a crash leaves behind is repaired, never published
half-written."""

from __future__ import annotations

import gzip
from pathlib import Path
from types import SimpleNamespace

import orjson
import pyarrow.parquet as pq

from adapters.aws.parse import parse_text
from collector.schema import SCHEMA
from collector.sinks.file import FileSink

# Two records of the AWS documentation's default-format examples.
LINES = (
    b"2 123456789010 eni-1235b8ca123456789 172.31.16.139 172.31.16.21 20641 22 6 20 4249 1418530010 1418530070 "
    b"ACCEPT OK\n"
    b"2 123456789010 eni-1235b8ca123456789 172.31.9.69 172.31.9.12 49761 3389 6 20 4249 1418530010 1418530070 "
    b"REJECT OK\n"
)


def _batch():
    return next(parse_text([LINES], unit="t", source="s")).batch


def _cfg(path: Path, **kw):
    base = dict(
        name="f",
        type="file",
        path=path,
        format="jsonl",
        compression="none",
        rotate_bytes=1 << 30,
        rotate_interval=3600.0,
        fsync=True,
        flush_interval=1.0,
    )
    base.update(kw)
    return SimpleNamespace(**base)


async def test_jsonl_acks_on_flush_and_publishes_on_close(tmp_path: Path) -> None:
    sink = FileSink(_cfg(tmp_path))
    await sink.open()
    await sink.write(_batch())
    await sink.write(_batch())
    assert await sink.flush() == 2
    # Acked data is durable in the hidden part file, not yet visible to readers.
    assert list(tmp_path.glob("*.jsonl")) == []
    parts = list(tmp_path.glob(".*.part"))
    assert len(parts) == 1 and parts[0].read_bytes().count(b"\n") == 4
    assert await sink.close() == 2
    (published,) = tmp_path.glob("flows-*.jsonl")
    rows = [orjson.loads(line) for line in published.read_bytes().splitlines()]
    assert [r["src_addr"] for r in rows] == ["172.31.16.139", "172.31.9.69"] * 2
    assert rows[1]["action"] == "reject" and rows[1]["time_start"] == "2014-12-14T04:06:50.000Z"


async def test_jsonl_gzip_members_survive_a_torn_write(tmp_path: Path) -> None:
    sink = FileSink(_cfg(tmp_path, compression="gzip"))
    await sink.open()
    await sink.write(_batch())
    await sink.flush()
    await sink.write(_batch())
    await sink.flush()
    (part,) = tmp_path.glob(".*.part")
    data = part.read_bytes()
    # Simulate a crash in the middle of writing a third member.
    part.write_bytes(data + gzip.compress(LINES)[:15])
    sink2 = FileSink(_cfg(tmp_path, compression="gzip"))
    await sink2.open()
    (published,) = tmp_path.glob("flows-*.jsonl.gz")
    assert gzip.decompress(published.read_bytes()).count(b"\n") == 4
    assert list(tmp_path.glob(".*.part")) == []


async def test_recovery_cuts_a_partial_line(tmp_path: Path) -> None:
    part = tmp_path / ".flows-20261122T060000Z-deadbeef.jsonl.part"
    part.write_bytes(b'{"a":1}\n{"a":2}\n{"a":')
    sink = FileSink(_cfg(tmp_path))
    await sink.open()
    assert (tmp_path / "flows-20261122T060000Z-deadbeef.jsonl").read_bytes() == b'{"a":1}\n{"a":2}\n'
    assert not part.exists()


async def test_parquet_acks_only_when_file_is_closed(tmp_path: Path) -> None:
    sink = FileSink(_cfg(tmp_path, format="parquet", compression="zstd"))
    await sink.open()
    await sink.write(_batch())
    assert await sink.flush() == 0  # not readable yet, so not acked
    assert await sink.close() == 1
    (published,) = tmp_path.glob("flows-*.parquet")
    table = pq.read_table(published)
    assert table.schema.equals(SCHEMA, check_metadata=False)
    assert table.column("dst_port").to_pylist() == [22, 3389]


async def test_parquet_part_file_is_discarded_after_crash(tmp_path: Path) -> None:
    (tmp_path / ".flows-20261122T060000Z-deadbeef.parquet.part").write_bytes(b"PAR1 torn")
    sink = FileSink(_cfg(tmp_path, format="parquet", compression="zstd"))
    await sink.open()
    assert list(tmp_path.iterdir()) == []


async def test_rotation_by_size(tmp_path: Path) -> None:
    sink = FileSink(_cfg(tmp_path, rotate_bytes=100))
    await sink.open()
    for _ in range(3):
        await sink.write(_batch())
        await sink.flush()
    await sink.close()
    files = sorted(tmp_path.glob("flows-*.jsonl"))
    assert len(files) == 3
    assert all(f.read_bytes().count(b"\n") == 2 for f in files)


async def test_a_failed_write_is_undone_and_retried_whole(tmp_path: Path, monkeypatch) -> None:
    """Disk full in the middle of a write: the part file is cut back, nothing is acked, the retry writes it all."""
    import collector.sinks.file as file_mod

    real = file_mod._write_all
    state = {"fail": True}

    def half_then_fail(fh, data) -> None:
        if state["fail"]:
            state["fail"] = False
            fh.write(bytes(data)[:50])
            raise OSError(28, "No space left on device")
        real(fh, data)

    monkeypatch.setattr(file_mod, "_write_all", half_then_fail)
    sink = FileSink(_cfg(tmp_path))
    await sink.open()
    await sink.write(_batch())
    try:
        await sink.flush()
        raise AssertionError("the flush must fail")
    except OSError:
        pass
    assert sink._acked == 0
    assert await sink.flush() == 1
    await sink.close()
    (published,) = tmp_path.glob("flows-*.jsonl")
    assert [orjson.loads(line)["dst_port"] for line in published.read_bytes().splitlines()] == [22, 3389]


async def test_rotation_happens_while_idle(tmp_path: Path) -> None:
    sink = FileSink(_cfg(tmp_path, rotate_interval=0.05))
    await sink.open()
    await sink.write(_batch())
    await sink.flush()
    import asyncio

    await asyncio.sleep(0.1)
    await sink.flush()  # the pipeline flushes idle sinks on their interval
    assert len(list(tmp_path.glob("flows-*.jsonl"))) == 1
