"""The file sink: what it acks is on disk and readable; files are published in two phases, so what a crash leaves
behind is cut back to what was recorded, never published half-written or doubled."""

from __future__ import annotations

import asyncio
import gzip
import os
from pathlib import Path
from types import SimpleNamespace

import orjson
import pyarrow.parquet as pq

from adapters.aws.parse import parse_text
from collector.schema import SCHEMA
from collector.sinks.file import FileSink, _part_tag

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


def _visible(path: Path, pattern: str = "flows-*") -> list[Path]:
    return sorted(path.glob(pattern))


async def test_jsonl_acks_on_flush_and_publishes_in_two_phases(tmp_path: Path) -> None:
    sink = FileSink(_cfg(tmp_path))
    await sink.open()
    await sink.write(_batch())
    await sink.write(_batch())
    assert await sink.flush() == 2
    # Acked data is durable in the hidden part file, and journaled with its size; not yet visible to readers.
    (part,) = tmp_path.glob(".*.part")
    assert part.read_bytes().count(b"\n") == 4
    assert part.name.endswith(f".{_part_tag('f')}.part")  # the sink's own part file: its name is in it
    assert sink.journal() == [(part.name[1:].removesuffix(f".{_part_tag('f')}.part"), part.stat().st_size)]
    assert await sink.close() == 2
    assert _visible(tmp_path) == [] and len(sink.sealed()) == 1  # sealed: complete, waiting for the record
    await sink.publish_sealed()
    (published,) = _visible(tmp_path)
    rows = [orjson.loads(line) for line in published.read_bytes().splitlines()]
    assert [r["src_addr"] for r in rows] == ["172.31.16.139", "172.31.9.69"] * 2
    assert rows[1]["action"] == "reject" and rows[1]["time_start"] == "2014-12-14T04:06:50.000Z"


async def test_recovery_cuts_back_to_the_recorded_size(tmp_path: Path) -> None:
    """Crash after more was written than recorded: the part file is cut to the journaled size and published."""
    part = tmp_path / ".flows-20261122T060000Z-deadbeef.jsonl.part"
    part.write_bytes(b'{"a":1}\n{"a":2}\n{"a":3}\n{"a":')
    sink = FileSink(_cfg(tmp_path))
    sink.journal_in_store = {"flows-20261122T060000Z-deadbeef.jsonl": 16}
    await sink.open()
    assert (tmp_path / "flows-20261122T060000Z-deadbeef.jsonl").read_bytes() == b'{"a":1}\n{"a":2}\n'
    assert not part.exists()


async def test_gzip_part_is_cut_at_the_recorded_member(tmp_path: Path) -> None:
    sink = FileSink(_cfg(tmp_path, compression="gzip"))
    await sink.open()
    await sink.write(_batch())
    await sink.flush()
    ((name, size),) = sink.journal()
    await sink.write(_batch())
    await sink.flush()  # a second member, written but (in this story) never recorded
    (part,) = tmp_path.glob(".*.part")
    part.write_bytes(part.read_bytes() + gzip.compress(LINES)[:15])  # and a torn third one
    again = FileSink(_cfg(tmp_path, compression="gzip"))
    again.journal_in_store = {name: size}
    await again.open()
    (published,) = _visible(tmp_path, "flows-*.jsonl.gz")
    assert gzip.decompress(published.read_bytes()).count(b"\n") == 2
    assert list(tmp_path.glob(".*.part")) == []


async def test_unrecorded_part_files_are_removed_and_other_sinks_files_left_alone(tmp_path: Path) -> None:
    """Recovery touches only this sink's part files. Issue #8: a Parquet sink's recovery deleted the part file of a
    JSON Lines sink in the same directory, whose acked flows were then never published."""
    mine = tmp_path / f".flows-20261122T060000Z-deadbeef.parquet.{_part_tag('f')}.part"
    mine.write_bytes(b"PAR1 torn")
    other = tmp_path / f".flows-20261122T060000Z-cafecafe.jsonl.{_part_tag('other')}.part"
    other.write_bytes(b'{"a":1}\n')
    legacy = tmp_path / ".flows-20261122T060000Z-0badf00d.jsonl.part"  # an older release's name, not journaled
    legacy.write_bytes(b'{"a":2}\n')
    sink = FileSink(_cfg(tmp_path, format="parquet", compression="zstd"))
    await sink.open()
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([other.name, legacy.name])
    assert other.read_bytes() == b'{"a":1}\n'


async def test_two_sinks_in_one_directory_recover_their_own_files(tmp_path: Path) -> None:
    """Both sinks crashed with acked data in part files: each cuts and publishes its own, by its own journal."""
    j = FileSink(_cfg(tmp_path, name="j"))
    p = FileSink(_cfg(tmp_path, name="p", format="parquet", compression="zstd"))
    for s in (j, p):
        await s.open()
        await s.write(_batch())
    assert await j.flush() == 1
    await p.close()
    j_journal, p_journal = dict(j.journal()), dict(p.journal())
    # Crash: nothing published. Restart p first (its recovery must not take j's part file), then j.
    p2 = FileSink(_cfg(tmp_path, name="p", format="parquet", compression="zstd"))
    p2.journal_in_store = p_journal
    await p2.open()
    j2 = FileSink(_cfg(tmp_path, name="j"))
    j2.journal_in_store = j_journal
    await j2.open()
    assert list(tmp_path.glob(".*.part")) == []
    (jsonl,) = _visible(tmp_path, "flows-*.jsonl")
    (parquet,) = _visible(tmp_path, "flows-*.parquet")
    assert [orjson.loads(line)["dst_port"] for line in jsonl.read_bytes().splitlines()] == [22, 3389]
    assert pq.read_table(parquet).column("dst_port").to_pylist() == [22, 3389]


async def test_parquet_acks_only_when_file_is_sealed(tmp_path: Path) -> None:
    sink = FileSink(_cfg(tmp_path, format="parquet", compression="zstd"))
    await sink.open()
    await sink.write(_batch())
    assert await sink.flush() == 0  # not readable yet, so not acked
    assert sink.journal() == []
    assert await sink.close() == 1
    assert _visible(tmp_path) == [] and sink.sealed()
    await sink.publish_sealed()
    (published,) = _visible(tmp_path)
    table = pq.read_table(published)
    assert table.schema.equals(SCHEMA, check_metadata=False)
    assert table.column("dst_port").to_pylist() == [22, 3389]


async def test_sealed_parquet_recorded_before_a_crash_is_published_on_open(tmp_path: Path) -> None:
    """Crash between recording the ack and the rename: the journal names the file, so open() finishes the
    publish; a sealed file the journal does not name was never recorded, so it is removed (and delivered again)."""
    first = FileSink(_cfg(tmp_path, format="parquet", compression="zstd"))
    await first.open()
    await first.write(_batch())
    await first.close()
    ((recorded, size),) = first.journal()
    second = FileSink(_cfg(tmp_path, format="parquet", compression="zstd"))
    second.journal_in_store = {recorded: size}
    await second.open()
    await second.write(_batch())
    await second.close()
    assert second.sealed() != [recorded]
    third = FileSink(_cfg(tmp_path, format="parquet", compression="zstd"))
    await third.open()  # the journal was forgotten after the second open settled it
    assert [p.name for p in tmp_path.iterdir()] == [recorded]
    assert pq.read_table(tmp_path / recorded).num_rows == 2


async def test_rotation_by_size(tmp_path: Path) -> None:
    sink = FileSink(_cfg(tmp_path, rotate_bytes=100))
    await sink.open()
    for _ in range(3):
        await sink.write(_batch())
        await sink.flush()
    await sink.close()
    await sink.publish_sealed()
    files = _visible(tmp_path)
    assert len(files) == 3
    assert all(f.read_bytes().count(b"\n") == 2 for f in files)


async def test_a_failed_write_is_undone_and_retried_whole(tmp_path: Path, monkeypatch) -> None:
    """Disk full in the middle of a write: the part file is cut back, nothing is acked, the retry writes it all."""
    import collector.sinks.file as file_mod

    real = file_mod._write_all
    state = {"fail": True}

    def half_then_fail(fd, data) -> None:
        if state["fail"]:
            state["fail"] = False
            os.write(fd, bytes(data)[:50])
            raise OSError(28, "No space left on device")
        real(fd, data)

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
    await sink.publish_sealed()
    (published,) = _visible(tmp_path)
    assert [orjson.loads(line)["dst_port"] for line in published.read_bytes().splitlines()] == [22, 3389]


async def test_rotation_happens_while_idle(tmp_path: Path) -> None:
    sink = FileSink(_cfg(tmp_path, rotate_interval=0.05))
    await sink.open()
    await sink.write(_batch())
    await sink.flush()
    await asyncio.sleep(0.1)
    await sink.flush()  # the pipeline flushes idle sinks on their interval
    assert len(sink.sealed()) == 1
