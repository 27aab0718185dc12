"""Units that grow (issue #9): files appended to while they are read, as growing units of the `local` source
(adapters/units.py `Growth`), and the parser option `complete=False` that leaves a line still being written for the
next read (collector/parsing.py, "Growing objects")."""

from __future__ import annotations

import asyncio
import gzip
import io
import logging
import os
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from flowdata import HEADER, jsonl_ids, varied_records

import adapters.local
from adapters.aws.parse import MAX_LINE, parse_text
from adapters.local import LocalSource, LocalSourceConfig, file_identity
from adapters.units import HEAD_BYTES, Growth, Outcome, growing_version, head_of, object_identity, same_object
from collector.checkpoints import Checkpoint, CheckpointStore, Commit
from collector.config import load_config
from collector.metrics import Metrics
from collector.parsing import ParseResult, appendable, open_stream
from collector.pipeline import Delivery, Pipeline
from collector.sinks.file import FileSink, FileSinkConfig

RECORDS = [r + "\n" for r in varied_records(1, 9)]  # ids 1..9 in `bytes`
TEXT = HEADER + "\n" + "".join(RECORDS)


def ids_of(results: list[ParseResult]) -> list[int]:
    return [v for r in results for v in r.batch.column("bytes").to_pylist()]


def rows_of(results: list[ParseResult]) -> pa.Table:
    return pa.Table.from_batches([r.batch for r in results if r.batch.num_rows])


def text_parse(data: bytes, step: int = 7, **kw: Any) -> list[ParseResult]:
    """Chunked oddly by default: cuts never depend on how the input was chunked."""
    chunks = [data[i : i + step] for i in range(0, len(data), step)]
    return list(parse_text(chunks, unit="u", source="s", **kw))


# --- the parser option ------------------------------------------------------------------------------------------


def test_incomplete_parse_holds_back_a_trailing_partial_line() -> None:
    partial = RECORDS[3][:25]  # record 4, cut inside its interface id
    data = (HEADER + "\n" + "".join(RECORDS[:3]) + partial).encode()
    results = text_parse(data, complete=False)
    held = len(partial)
    assert ids_of(results) == [1, 2, 3]
    assert results[-1].final and not results[-1].errors
    assert results[-1].position == {"offset": len(data) - held, "line": 4, "fields": HEADER.split()}
    # The same bytes read as complete: the partial line is a line (one error: too few fields), consumed to the end.
    complete = text_parse(data)
    assert ids_of(complete) == [1, 2, 3]
    assert complete[-1].position["offset"] == len(data) and complete[-1].position["line"] == 5
    assert [e.line for r in complete for e in r.errors] == [5]


def test_incomplete_parse_of_text_ending_at_a_line_end_is_the_complete_parse() -> None:
    data = TEXT.encode()
    incomplete, complete = text_parse(data, complete=False), text_parse(data)
    assert [r.position for r in incomplete] == [r.position for r in complete]
    assert [r.lines for r in incomplete] == [r.lines for r in complete] == [10]
    assert rows_of(incomplete).equals(rows_of(complete))
    assert incomplete[-1].position == {"offset": len(data), "line": 10, "fields": HEADER.split()}


def test_nothing_but_a_partial_first_line_consumes_nothing() -> None:
    results = text_parse(b"2 123456789010 eni-", complete=False)
    assert len(results) == 1 and results[0].batch.num_rows == 0
    assert results[0].position["offset"] == 0 and results[0].position["line"] == 0


def test_resumed_incomplete_reads_concatenate_to_one_complete_read() -> None:
    """For points the writer could have reached (every fifth byte, and each byte around a line end), a caught-up read of what existed
    then, resumed over the whole object, gives exactly the records, errors and final position of a single complete
    read; small blocks so that reads span several batches. A second caught-up read in the middle too."""
    data = (TEXT + "garbage line\n" + "".join(RECORDS[:2]).replace("\n", "\r\n")).encode()
    one = text_parse(data, block_size=300)
    expected_ids = ids_of(one)
    expected_errors = [(e.line, e.reason) for r in one for e in r.errors]
    assert expected_ids == [1, 2, 3, 4, 5, 6, 7, 8, 9, 1, 2] and expected_errors[0][0] == 11
    around_line_ends = {i + d for i, c in enumerate(data) if c == 0x0A for d in (-1, 0, 1, 2)}
    for k in sorted((set(range(0, len(data) + 1, 5)) | around_line_ends) & set(range(len(data) + 1))):
        first = text_parse(data[:k], block_size=300, complete=False)
        offset = first[-1].position["offset"]
        assert offset == data.rfind(b"\n", 0, k) + 1  # exactly the last line end before k
        middle = (k + len(data)) // 2
        second = text_parse(data[:middle], block_size=300, complete=False, resume=first[-1].position)
        rest = text_parse(data, block_size=300, resume=second[-1].position)
        reads = first + second + rest
        assert ids_of(reads) == expected_ids, k
        assert [(e.line, e.reason) for r in reads for e in r.errors] == expected_errors, k
        assert rest[-1].position == one[-1].position, k


def test_a_caught_up_read_cuts_blocks_like_a_complete_read_up_to_its_end() -> None:
    """Batch boundaries of one read depend only on the resume point: a caught-up read ends its last batch at the
    last line end, every batch before it is the complete read's."""
    data = TEXT.encode()
    complete = text_parse(data, block_size=300)
    cut = len(data) - 10  # inside the last record
    caught_up = text_parse(data[:cut], block_size=300, complete=False)
    assert len(complete) >= 3
    boundaries = [r.position["offset"] for r in complete]
    assert [r.position["offset"] for r in caught_up] == boundaries[:-1] + [data.rfind(b"\n", 0, cut) + 1]


def test_a_line_longer_than_max_line_is_skipped_across_reads() -> None:
    """A growing read that ends inside an overlong line resumes skipping it: the records after it are delivered, the
    rest of the line is not taken for a record."""
    long_line = b"9" * (2 * MAX_LINE) + b"\n"
    body = b"".join(r.encode() for r in RECORDS[:2])
    data = HEADER.encode() + b"\n" + body + long_line + RECORDS[2].encode()
    k = len(HEADER) + 1 + len(body) + MAX_LINE * 3 // 2  # inside the long line, past MAX_LINE
    first = text_parse(data[:k], 4093, block_size=64, complete=False)
    assert first[-1].position.get("skip_line") is True and first[-1].position["offset"] > len(HEADER) + len(body)
    rest = text_parse(data, 4093, block_size=64, resume=first[-1].position)
    reads = first + rest
    assert ids_of(reads) == [1, 2, 3]
    assert [e.line for r in reads for e in r.errors] == [4]
    assert rest[-1].position["offset"] == len(data) and rest[-1].position["line"] == 5


def test_cuts_end_batches_where_earlier_reads_ended_them() -> None:
    """`cuts` in the resume position (the sinks' recorded progress): batches end at each, and the rest is cut as a
    read resumed there cuts it."""
    data = TEXT.encode()
    ends = [data.index(b"\n", 200) + 1, data.index(b"\n", 700) + 1]
    cut = text_parse(data, block_size=300, resume={"cuts": ends})
    first = text_parse(data[: ends[0]], block_size=300, complete=False)
    second = text_parse(data[: ends[1]], block_size=300, complete=False, resume=first[-1].position)
    rest = text_parse(data, block_size=300, resume=second[-1].position)
    assert [r.position for r in cut] == [r.position for r in first + second + rest]
    assert [r.position["offset"] for r in cut if r.position["offset"] in ends] == ends
    assert ids_of(cut) == list(range(1, 10))


def test_open_stream_complete_false_holds_back_gzip_and_parquet() -> None:
    """Neither gzip nor Parquet can be read in part: while incomplete, one empty result at the resume point."""
    gz = gzip.compress(TEXT.encode())
    table = pa.table({"version": [2], "bytes": [5]})
    buf = io.BytesIO()
    pq.write_table(table, buf)
    for blob in (gz, buf.getvalue()):
        assert not appendable(blob[:4])
        resume = {"offset": 7, "line": 1, "fields": []}
        for pos in (None, resume):
            results = list(
                open_stream(
                    io.BufferedReader(io.BytesIO(blob)), unit="u", source="s", options={"complete": False}, resume=pos
                )
            )
            assert len(results) == 1 and results[0].final and results[0].batch.num_rows == 0
            assert results[0].position == (pos or {}) and not results[0].errors
    assert appendable(TEXT.encode()[:4])
    # AWS text through the seam honours it.
    data = (TEXT + RECORDS[0][:30]).encode()
    results = list(open_stream(io.BufferedReader(io.BytesIO(data)), unit="u", source="s", options={"complete": False}))
    assert ids_of(results) == list(range(1, 10)) and results[-1].position["offset"] == len(TEXT)


def test_versions_of_growing_units() -> None:
    assert object_identity("2049:77") == "2049:77"
    assert object_identity("2049:77#3") == "2049:77"
    assert object_identity("a#b") == "a#b"  # a '#' not followed by a generation number is part of the identity
    assert same_object("2049:77#1", "2049:77") and not same_object("2049:78", "2049:77") and not same_object(None, "x")


def test_a_growing_unit_whose_first_bytes_changed_is_a_new_version() -> None:
    """The head a checkpoint recorded against the object's first bytes now: appended to, it is the same object;
    other first bytes, or fewer of them than were recorded, make it another one (a new generation); no head recorded
    (an older checkpoint) or none given trusts the identity."""
    old = TEXT.encode()  # 1.2 KB: under HEAD_BYTES, so the head is all of it
    ckpt = Checkpoint("2049:77", {"offset": 500, "line": 4, "head": head_of(old)}, False, 3)
    grown = old + RECORDS[0].encode() * 40  # past HEAD_BYTES now
    assert len(grown) > HEAD_BYTES
    assert growing_version("2049:77", ckpt, Growth(False, len(grown), grown[:HEAD_BYTES])) == ("2049:77", None)
    other = (HEADER + "\n" + "".join(r + "\n" for r in varied_records(101, 12))).encode()
    assert other[: len(HEADER)] == old[: len(HEADER)] and len(other) > len(old)  # the same header line
    version, reason = growing_version("2049:77", ckpt, Growth(False, len(other), other[:HEAD_BYTES]))
    assert version == "2049:77#1"
    assert reason == f"rewritten (its first {len(old)} bytes are not those of identity 2049:77 any more)"
    shorter = old[:-1]  # the same first bytes, but fewer than were recorded: not an object that only grew
    assert growing_version("2049:77", ckpt, Growth(False, len(shorter), shorter))[0] == "2049:77#1"
    assert growing_version("2049:77", ckpt, Growth(False, len(other), None)) == ("2049:77", None)
    headless = Checkpoint("2049:77#2", {"offset": 500, "line": 4}, False, 3)
    assert growing_version("2049:77", headless, Growth(False, len(other), other)) == ("2049:77#2", None)
    # A done unit found smaller than where it was done was truncated after it went final: a new generation too.
    done = Checkpoint("2049:77", {"offset": len(old), "line": 10, "head": head_of(old)}, True, 9)
    assert growing_version("2049:77", done, Growth(False, 100, old[:100]))[0] == "2049:77#1"
    assert growing_version("2049:77", done, Growth(False, len(grown), grown[:HEAD_BYTES])) == ("2049:77", None)


# --- the local source -------------------------------------------------------------------------------------------


class Harness:
    """A LocalSource with `growing: true` on a real pipeline, checkpoint store and JSON Lines file sink; counts the
    reads (resume position of each) and records every Delivery and outcome."""

    def __init__(self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, **options: Any) -> None:
        self.tmp = tmp_path
        self.dir = tmp_path / "in"
        self.dir.mkdir(exist_ok=True)  # a second Harness on the same tmp_path is the next run of the collector
        self.out = tmp_path / "out"
        self.config = LocalSourceConfig(name="s", path=self.dir, poll_interval=0.1, **{"growing": True, **options})
        self.store = CheckpointStore(tmp_path / "state")
        self.metrics = Metrics()
        self.sink = FileSink(FileSinkConfig(name="out", path=self.out, format="jsonl", rotate_interval=0.2))
        self.pipeline = Pipeline([self.sink], self.store, self.metrics, flush_intervals={"out": 0.05})
        self.source = LocalSource(self.config, self.store, self.metrics)
        self.opens: list[dict[str, Any] | None] = []
        self.deliveries: list[Delivery] = []
        self.outcomes: list[str] = []
        real_open, real_deliver = adapters.local.open_unit, adapters.local.deliver_unit

        def counting_open_unit(path: Path, **kw: Any) -> Iterator[Any]:
            self.opens.append(kw.get("resume"))
            return real_open(path, **kw)

        async def recording_deliver_unit(*args: Any, **kw: Any) -> Outcome:
            outcome = await real_deliver(*args, **kw)
            self.outcomes.append(outcome.value)
            return outcome

        monkeypatch.setattr(adapters.local, "open_unit", counting_open_unit)
        monkeypatch.setattr(adapters.local, "deliver_unit", recording_deliver_unit)
        real_emit = self.pipeline.emit

        async def recording_emit(delivery: Delivery) -> None:
            self.deliveries.append(delivery)
            await real_emit(delivery)

        monkeypatch.setattr(self.pipeline, "emit", recording_emit)

    async def poll(self, unit: str = "flows.log", once: bool = False) -> None:
        """One poll, then wait until everything it emitted is checkpointed."""
        await self.source.poll(self.pipeline, once, asyncio.Event())
        async with asyncio.timeout(10):
            await self.pipeline.settled("s", unit)

    def restart(self) -> None:
        self.source = LocalSource(self.config, self.store, self.metrics)


def append(path: Path, text: str) -> None:
    with open(path, "a") as fh:
        fh.write(text)


def age(path: Path, seconds: float) -> None:
    t = time.time() - seconds
    os.utime(path, (t, t))


async def test_a_file_appended_in_three_steps_is_delivered_exactly_once(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Written in three appends, the second ending in the middle of a record that the third completes: each poll
    delivers what is complete, the checkpoint stays caught up (not done, not among the done versions) at the last
    line end, every read resumes exactly where the previous one stopped, an unchanged file is not read, and once
    unchanged for `final_after` it is done and never read again. The sink holds every record once."""
    h = Harness(tmp_path, monkeypatch)
    path = h.dir / "flows.log"
    identity = file_identity(path.touch() or path.stat())
    await h.pipeline.start()
    try:
        first = HEADER + "\n" + "".join(RECORDS[:3])
        append(path, first)
        await h.poll()
        ckpt = h.store.get("s", "flows.log")
        assert (ckpt.version, ckpt.done, ckpt.records, ckpt.position["offset"]) == (identity, False, 3, len(first))
        assert h.store.done_versions("s") == {}
        assert h.outcomes == ["caught-up"] and h.opens == [None]

        second = "".join(RECORDS[3:5]) + RECORDS[5][:40]  # records 4, 5 and the first 40 bytes of record 6
        append(path, second)
        await h.poll()
        ckpt = h.store.get("s", "flows.log")
        held = len(first) + len(RECORDS[3]) + len(RECORDS[4])
        assert (ckpt.version, ckpt.done, ckpt.records, ckpt.position["offset"]) == (identity, False, 5, held)
        assert h.opens[1]["offset"] == len(first)
        assert h.deliveries[-1].start == len(first) and h.deliveries[-1].progress == held

        await h.poll()  # unchanged: not read
        assert len(h.opens) == 2 and h.outcomes == ["caught-up", "caught-up"]

        append(path, RECORDS[5][40:] + "".join(RECORDS[6:8]))  # the rest of record 6, records 7 and 8
        await h.poll()
        ckpt = h.store.get("s", "flows.log")
        size = path.stat().st_size
        assert (ckpt.done, ckpt.records, ckpt.position["offset"]) == (False, 8, size)
        assert h.opens[2]["offset"] == held and h.deliveries[-1].start == held

        append(path, RECORDS[8].rstrip("\n"))  # record 9 without its line end: held back while not final
        await h.poll()
        assert h.store.get("s", "flows.log").records == 8
        age(path, 3601)  # unchanged for longer than final_after (1h): final
        await h.poll()
        ckpt = h.store.get("s", "flows.log")
        assert (ckpt.version, ckpt.done, ckpt.records, ckpt.position["offset"]) == (
            identity,
            True,
            9,
            size + len(RECORDS[8]) - 1,
        )
        assert h.store.done_versions("s") == {"flows.log": identity}
        assert h.deliveries[-1].done and h.deliveries[-1].start == size
        reads = len(h.opens)
        await h.poll()
        h.restart()
        await h.poll()
        assert len(h.opens) == reads  # done and unchanged: never read again, also by a new source object
        # ... which looks at it once (its checkpoint and first bytes: the same file, no larger than when done).
        assert h.outcomes == ["caught-up"] * 4 + ["done", "done"]
        assert [d.done for d in h.deliveries] == [False] * (len(h.deliveries) - 1) + [True]
    finally:
        await h.pipeline.close()
    found = jsonl_ids(h.out)
    assert found == {i: 1 for i in range(1, 10)}
    assert h.metrics.sources["s"].records == 9 and h.metrics.sources["s"].units == 1
    h.store.close()


async def test_a_restarted_source_resumes_a_caught_up_file_at_its_offset(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A new LocalSource object on the same store (a restart) reads a caught-up file from its checkpoint: its first
    batch starts at the checkpoint's offset, nothing before it is read again."""
    h = Harness(tmp_path, monkeypatch)
    path = h.dir / "flows.log"
    first = HEADER + "\n" + "".join(RECORDS[:4])
    path.write_text(first + RECORDS[4][:10])
    await h.pipeline.start()
    try:
        await h.poll()
        position = h.store.get("s", "flows.log").position
        assert position["offset"] == len(first)
        h.restart()
        append(path, RECORDS[4][10:] + RECORDS[5])
        await h.poll()
        assert h.opens == [None, {k: v for k, v in position.items() if k != "head"}]
        assert position["head"] == head_of((first + RECORDS[4][:10]).encode())  # the whole file, under 4 KiB
        later = h.deliveries[1:]
        assert later[0].start == len(first) and later[-1].progress == len(first) + len(RECORDS[4]) + len(RECORDS[5])
        ckpt = h.store.get("s", "flows.log")
        assert (ckpt.done, ckpt.records) == (False, 6)
    finally:
        await h.pipeline.close()
    assert jsonl_ids(h.out) == {i: 1 for i in range(1, 7)}
    h.store.close()


async def test_after_a_crash_a_sink_is_not_sent_again_what_it_recorded(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A crash after the sink recorded a caught-up read (its progress at that read's end) but before the checkpoint
    moved: the file has grown meanwhile. The read from the checkpoint (none: the start) ends a batch exactly where
    the sink's progress is, so the sink skips what it holds and gets the rest, each record once."""
    h = Harness(tmp_path, monkeypatch)
    path = h.dir / "flows.log"
    first = HEADER + "\n" + "".join(RECORDS[:3])
    path.write_text(first)
    identity = file_identity(path.stat())
    h.store.commit_sink("out", [("s", "flows.log", identity, len(first))])  # records 1-3 are in the sink already
    append(path, "".join(RECORDS[3:6]))
    await h.pipeline.start()
    try:
        await h.poll()
    finally:
        await h.pipeline.close()
    size = path.stat().st_size
    assert [(d.start, d.progress, d.batch.num_rows) for d in h.deliveries] == [
        (0, len(first), 3),
        (len(first), size, 3),
    ]
    ckpt = h.store.get("s", "flows.log")
    assert (ckpt.done, ckpt.records, ckpt.position["offset"]) == (False, 6, size)
    assert "cuts" not in ckpt.position
    assert jsonl_ids(h.out) == {4: 1, 5: 1, 6: 1}
    h.store.close()


async def test_truncated_or_replaced_growing_file_is_a_new_version(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """Truncated in place and written again (smaller than its checkpoint): the same inode, a new version
    `IDENTITY#1`, read from the start. Then replaced by another file (a new inode): a new version again. Both are
    logged; every record of every content is delivered once."""
    caplog.set_level(logging.INFO, "flowcollector.source.local")
    h = Harness(tmp_path, monkeypatch)
    path = h.dir / "flows.log"
    path.write_text(HEADER + "\n" + "".join(RECORDS[:6]))
    identity = file_identity(path.stat())
    await h.pipeline.start()
    try:
        await h.poll()
        assert h.store.get("s", "flows.log").records == 6
        with open(path, "r+") as fh:  # truncate in place: same inode
            fh.truncate(0)
        new = [r + "\n" for r in varied_records(101, 2)]
        append(path, HEADER + "\n" + "".join(new))
        assert file_identity(path.stat()) == identity
        await h.poll()
        ckpt = h.store.get("s", "flows.log")
        assert (ckpt.version, ckpt.done, ckpt.records, ckpt.position["offset"]) == (
            f"{identity}#1",
            False,
            2,
            path.stat().st_size,
        )
        assert h.opens[-1] is None and h.deliveries[-1].start == 0
        assert "shrank below its checkpoint" in caplog.text and f"as version {identity}#1" in caplog.text

        replacement = h.tmp / "replacement.log"
        replacement.write_text(HEADER + "\n" + "".join(r + "\n" for r in varied_records(201, 3)))
        os.replace(replacement, path)
        other = file_identity(path.stat())
        assert other != identity
        await h.poll()
        ckpt = h.store.get("s", "flows.log")
        assert (ckpt.version, ckpt.done, ckpt.records) == (other, False, 3)
        assert h.opens[-1] is None
        assert f"replaced (identity {identity} -> {other})" in caplog.text
    finally:
        await h.pipeline.close()
    ids = jsonl_ids(h.out)
    assert ids == {i: 1 for i in [*range(1, 7), 101, 102, 201, 202, 203]}
    h.store.close()


async def test_run_once_leaves_a_young_file_caught_up_and_finishes_an_old_one(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`run --once`: every growing file is read to its current end; one unchanged for `final_after` is done (its last
    line without line end delivered), a younger one is left caught up with its partial line held back."""
    h = Harness(tmp_path, monkeypatch, final_after=60.0)
    old, young = h.dir / "old.log", h.dir / "young.log"
    old.write_text(HEADER + "\n" + "".join(RECORDS[:2]) + RECORDS[2].rstrip("\n"))
    young.write_text(HEADER + "\n" + "".join(RECORDS[3:5]) + RECORDS[5][:20])
    age(old, 61)
    await h.pipeline.start()
    try:
        await h.source.poll(h.pipeline, True, asyncio.Event())
        async with asyncio.timeout(10):
            await h.pipeline.settled("s", "old.log")
            await h.pipeline.settled("s", "young.log")
    finally:
        await h.pipeline.close()
    assert h.store.done_versions("s") == {"old.log": file_identity(old.stat())}
    ckpt = h.store.get("s", "young.log")
    assert (ckpt.done, ckpt.records, ckpt.position["offset"]) == (False, 2, young.stat().st_size - 20)
    assert sorted(h.outcomes) == ["caught-up", "done"]
    assert jsonl_ids(h.out) == {i: 1 for i in range(1, 6)}
    h.store.close()


async def test_gzip_files_of_a_growing_source_are_read_as_complete_files(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A gzip file cannot be read while it is written: with `growing: true` it is read as without it, versioned by
    size and mtime, and done at once (a rotated, compressed log beside the file being written)."""
    h = Harness(tmp_path, monkeypatch, settle=0.0)
    gz = h.dir / "flows.log.1.gz"
    gz.write_bytes(gzip.compress(TEXT.encode()))
    st = gz.stat()
    await h.pipeline.start()
    try:
        await h.poll("flows.log.1.gz")
        await h.poll("flows.log.1.gz")
    finally:
        await h.pipeline.close()
    assert h.store.done_versions("s") == {"flows.log.1.gz": f"{st.st_size}:{st.st_mtime_ns}"}
    assert h.outcomes == ["done"] and len(h.opens) == 1
    assert jsonl_ids(h.out) == {i: 1 for i in range(1, 10)}
    h.store.close()


def test_growing_options_in_the_config(tmp_path: Path) -> None:
    path = tmp_path / "cfg.yaml"
    path.write_text(
        "sources:\n"
        "  - {name: a, type: local, path: ., growing: true, final_after: 30m}\n"
        "  - {name: b, type: local, path: .}\n"
        "sinks: [{name: o, type: stdout}]\n"
    )
    config = load_config(path)
    a, b = config.sources
    assert (a.growing, a.final_after) == (True, 1800.0)
    assert (b.growing, b.final_after) == (False, 3600.0)


def records(first_id: int, n: int) -> str:
    return "".join(r + "\n" for r in varied_records(first_id, n))


async def test_a_done_file_deleted_and_created_again_is_read_from_the_start(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """A file done (final), deleted, and a new one created at once under its name: Linux usually gives it the freed
    inode, so it has the old one's identity, and was taken for it (skipped: done). Its first bytes are not those
    the checkpoint recorded: a new version, read from the start. Should the file system give another inode, it is
    a replaced file: read from the start too. Either way each record of both files is delivered once."""
    caplog.set_level(logging.INFO, "flowcollector.source.local")
    h = Harness(tmp_path, monkeypatch)
    path = h.dir / "flows.log"
    path.write_text(TEXT[: len(HEADER) + 1] + records(1, 6))
    age(path, 3601)
    identity = file_identity(path.stat())
    await h.pipeline.start()
    try:
        await h.poll()
        assert h.store.done_versions("s") == {"flows.log": identity}
        path.unlink()
        path.write_text(HEADER + "\n" + records(101, 8))  # the same header line, other records, larger
        again = file_identity(path.stat())
        await h.poll()
        ckpt = h.store.get("s", "flows.log")
        if again == identity:  # the inode was reused
            assert ckpt.version == f"{identity}#1"
            assert "rewritten (its first" in caplog.text and f"as version {identity}#1" in caplog.text
        else:
            assert ckpt.version == again and f"replaced (identity {identity} -> {again})" in caplog.text
        assert (ckpt.done, ckpt.records, ckpt.position["offset"]) == (False, 8, path.stat().st_size)
        assert h.opens[-1] is None and h.deliveries[-1].start == 0
    finally:
        await h.pipeline.close()
    assert jsonl_ids(h.out) == {i: 1 for i in [*range(1, 7), *range(101, 109)]}
    h.store.close()


async def test_a_file_rewritten_in_place_while_the_collector_was_down_is_read_from_the_start(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """Caught up at its checkpoint; then, between two runs on the same state directory, truncated and written again
    with other, longer content (same inode): never seen smaller than its checkpoint. The next run finds other
    first bytes: a new version read from the start, every record once (before heads, the new content up to the old
    offset was skipped)."""
    caplog.set_level(logging.INFO, "flowcollector.source.local")
    h = Harness(tmp_path, monkeypatch)
    path = h.dir / "flows.log"
    path.write_text(HEADER + "\n" + records(1, 5))
    identity = file_identity(path.stat())
    await h.pipeline.start()
    try:
        await h.poll()
        offset = h.store.get("s", "flows.log").position["offset"]
    finally:
        await h.pipeline.close()
    h.store.close()
    with open(path, "r+") as fh:  # in place: the same inode
        fh.truncate(0)
        fh.write(HEADER + "\n" + records(101, 9))
    assert file_identity(path.stat()) == identity and path.stat().st_size > offset
    h = Harness(tmp_path, monkeypatch)  # the next run
    await h.pipeline.start()
    try:
        await h.poll()
        ckpt = h.store.get("s", "flows.log")
        assert (ckpt.version, ckpt.done, ckpt.records) == (f"{identity}#1", False, 9)
        assert h.opens == [None] and h.deliveries[0].start == 0
        assert f"rewritten (its first {offset} bytes are not those of identity {identity} any more)" in caplog.text
    finally:
        await h.pipeline.close()
    assert jsonl_ids(h.out) == {i: 1 for i in [*range(1, 6), *range(101, 110)]}
    h.store.close()


async def test_copytruncate_regrown_past_the_checkpoint_while_down_is_read_from_the_start(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """logrotate's copytruncate while the collector is down: the writer appended records 5-6, the file was copied
    away (to a name outside the source: `glob` names the live file) and truncated, and the writer went on appending
    records 11-30 (no header line: the writer wrote it once, at creation) past the checkpoint. The next run reads
    the file from the start: records 11-30 once each. Records 5-6 are only in the rotated copy, which this source
    does not read."""
    caplog.set_level(logging.INFO, "flowcollector.source.local")
    h = Harness(tmp_path, monkeypatch, glob="flows.log")
    path = h.dir / "flows.log"
    path.write_text(HEADER + "\n" + records(1, 4))
    await h.pipeline.start()
    try:
        await h.poll()
        offset = h.store.get("s", "flows.log").position["offset"]
    finally:
        await h.pipeline.close()
    h.store.close()
    append(path, records(5, 2))
    (tmp_path / "flows.log.1").write_bytes(path.read_bytes())  # copy ...
    with open(path, "r+") as fh:  # ... truncate
        fh.truncate(0)
    append(path, records(11, 20))
    assert path.stat().st_size > offset
    h = Harness(tmp_path, monkeypatch, glob="flows.log")
    await h.pipeline.start()
    try:
        await h.poll()
        ckpt = h.store.get("s", "flows.log")
        assert (ckpt.done, ckpt.records, ckpt.position["offset"]) == (False, 20, path.stat().st_size)
        assert ckpt.version.endswith("#1") and h.opens == [None]
        assert "rewritten (its first" in caplog.text
    finally:
        await h.pipeline.close()
    assert jsonl_ids(h.out) == {i: 1 for i in [*range(1, 5), *range(11, 31)]}
    h.store.close()


async def test_a_file_appended_to_after_it_was_done_is_read_on_from_there(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """Done (unchanged for final_after), then appended to (a writer that paused longer than final_after), after a
    restart: read on from where it was done, under the same version, a warning logged; caught up again, and done
    again once final. A done file only touched (mtime changed, no bytes added) is not read. Each record once."""
    caplog.set_level(logging.INFO, "flowcollector.source.local")
    h = Harness(tmp_path, monkeypatch)
    path = h.dir / "flows.log"
    path.write_text(HEADER + "\n" + records(1, 6))
    age(path, 3601)
    identity = file_identity(path.stat())
    await h.pipeline.start()
    try:
        await h.poll()
        done_at = path.stat().st_size
        assert h.store.get("s", "flows.log").done
        age(path, 3700)  # touched: a new mtime, the same bytes
        await h.poll()
        assert len(h.opens) == 1 and h.outcomes == ["done", "done"]
        h.restart()
        append(path, records(7, 3))
        await h.poll()
        ckpt = h.store.get("s", "flows.log")
        assert (ckpt.version, ckpt.done, ckpt.records, ckpt.position["offset"]) == (
            identity,
            False,
            9,
            path.stat().st_size,
        )
        assert h.opens[-1]["offset"] == done_at and h.deliveries[-1].start == done_at
        assert f"grew after it was final (done at {done_at}, now {path.stat().st_size} bytes)" in caplog.text
        assert h.store.done_versions("s") == {}
        age(path, 3601)
        await h.poll()
        ckpt = h.store.get("s", "flows.log")
        assert (ckpt.version, ckpt.done, ckpt.records) == (identity, True, 9)
        assert h.outcomes == ["done", "done", "caught-up", "done"]
    finally:
        await h.pipeline.close()
    assert jsonl_ids(h.out) == {i: 1 for i in range(1, 10)}
    h.store.close()


async def test_a_checkpoint_without_a_head_trusts_the_identity_and_records_one(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Checkpoints written before heads were recorded (hand-made here as that version wrote them): a caught-up file
    resumes at its offset, not from the start, and its next position records the head; a done file that did not
    grow is not read."""
    h = Harness(tmp_path, monkeypatch)
    live, old = h.dir / "flows.log", h.dir / "old.log"
    first = HEADER + "\n" + "".join(RECORDS[:3])
    live.write_text(first + "".join(RECORDS[3:6]))
    old.write_text(TEXT)
    age(old, 3601)
    fields = HEADER.split()
    position = {"offset": len(first), "line": 4, "fields": fields}
    h.store.commit(
        [
            Commit("s", "flows.log", file_identity(live.stat()), position, False, 3),
            Commit(
                "s", "old.log", file_identity(old.stat()), {"offset": len(TEXT), "line": 10, "fields": fields}, True, 9
            ),
        ]
    )
    await h.pipeline.start()
    try:
        await h.poll()
        await h.pipeline.settled("s", "old.log")
    finally:
        await h.pipeline.close()
    assert h.opens == [position]  # old.log is not opened
    ckpt = h.store.get("s", "flows.log")
    assert (ckpt.done, ckpt.records, ckpt.position["offset"]) == (False, 6, live.stat().st_size)
    assert ckpt.position["head"] == head_of(live.read_bytes())
    assert "head" not in h.store.get("s", "old.log").position  # nothing was delivered: nothing was recorded
    assert sorted(h.outcomes) == ["caught-up", "done"]
    assert jsonl_ids(h.out) == {4: 1, 5: 1, 6: 1}
    h.store.close()


async def test_turning_growing_on_does_not_read_finished_files_again(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Files read whole without `growing` (versioned by size and mtime), then the source restarted with it: those
    unchanged are not read again. (One appended to after that is read again from the start: README, known gaps.)"""
    h = Harness(tmp_path, monkeypatch, growing=False, settle=0.0)
    (h.dir / "a.log").write_text(TEXT)
    (h.dir / "b.log").write_text(HEADER + "\n" + records(101, 3))
    await h.pipeline.start()
    try:
        await h.poll("a.log")
        await h.pipeline.settled("s", "b.log")
    finally:
        await h.pipeline.close()
    assert len(h.opens) == 2
    h.store.close()
    h = Harness(tmp_path, monkeypatch)  # growing: true
    await h.pipeline.start()
    try:
        await h.poll("a.log")
        await h.pipeline.settled("s", "b.log")
    finally:
        await h.pipeline.close()
    assert h.opens == [] and h.outcomes == []
    st = (h.dir / "a.log").stat()
    assert h.store.done_versions("s")["a.log"] == f"{st.st_size}:{st.st_mtime_ns}"
    assert jsonl_ids(h.out) == {**{i: 1 for i in range(1, 10)}, 101: 1, 102: 1, 103: 1}
    h.store.close()


async def test_turning_growing_off_reads_on_from_the_growing_checkpoints(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Files read as growing units, one caught up (its last line still being written), one done, then the source
    restarted without `growing`: the caught-up file, once settled, is read on from its offset as a final growing
    unit (its last line included), and done; the done one, unchanged, is not read. Each record once."""
    h = Harness(tmp_path, monkeypatch)
    live, old = h.dir / "live.log", h.dir / "old.log"
    first = HEADER + "\n" + "".join(RECORDS[:3])
    live.write_text(first + RECORDS[3][:30])
    old.write_text(HEADER + "\n" + records(101, 3))
    age(old, 3601)
    await h.pipeline.start()
    try:
        await h.poll("live.log")
        await h.pipeline.settled("s", "old.log")
    finally:
        await h.pipeline.close()
    h.store.close()
    append(live, RECORDS[3][30:] + RECORDS[4].rstrip("\n"))  # record 5 without its line end
    identity = file_identity(live.stat())
    h = Harness(tmp_path, monkeypatch, growing=False, settle=0.0)
    await h.pipeline.start()
    try:
        await h.poll("live.log")
        await h.pipeline.settled("s", "old.log")
        await h.poll("live.log")  # unchanged: neither is read
    finally:
        await h.pipeline.close()
    assert h.opens == [{"offset": len(first), "line": 4, "fields": HEADER.split()}]
    assert h.outcomes == ["done", "done"]  # old.log looked at (no read), live.log read on to its end
    ckpt = h.store.get("s", "live.log")
    assert (ckpt.version, ckpt.done, ckpt.records, ckpt.position["offset"]) == (identity, True, 5, live.stat().st_size)
    assert jsonl_ids(h.out) == {**{i: 1 for i in range(1, 6)}, 101: 1, 102: 1, 103: 1}
    h.store.close()
