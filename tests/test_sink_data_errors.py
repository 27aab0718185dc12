"""A batch a sink cannot encode is a data error, not an outage: the offending rows are rejected for that sink
(logged with their unit, counted), the rest is delivered, and the pipeline moves on.

Issue #8: a Parquet object with invalid UTF-8 in a string column made the JSON Lines sink fail on every retry
(`'utf-8' codec can't decode byte`), forever, and every source waited with it; so did a batch whose JSON passed
2 GiB (`array cannot contain more than 2147483646 bytes`).
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import orjson
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

import adapters.aws.parse as aws_parse
import collector.jsonl as jsonl
from adapters.aws.parse import parse_text
from collector.config import load_config
from collector.daemon import run
from collector.sinks import RejectedRows, encode_or_reject


def _bad_utf8_parquet(path: Path) -> None:
    """Three flows in AWS's Parquet layout (columns named with `_`), the second with an account id that is not
    UTF-8. pyarrow validates nothing when building from buffers or reading Parquet: such files exist."""
    values = [b"123456789012", b"12345\xff789012", b"123456789013"]
    offsets = np.cumsum([0] + [len(v) for v in values]).astype(np.int32)
    account = pa.Array.from_buffers(
        pa.string(), 3, [None, pa.py_buffer(offsets.tobytes()), pa.py_buffer(b"".join(values))]
    )
    n = 3
    table = pa.table(
        {
            "version": pa.array([2] * n, pa.int32()),
            "account_id": account,
            "interface_id": ["eni-1"] * n,
            "srcaddr": ["10.0.0.1"] * n,
            "dstaddr": ["10.0.0.2"] * n,
            "srcport": pa.array([1, 2, 3], pa.int32()),
            "dstport": pa.array([443] * n, pa.int32()),
            "protocol": pa.array([6] * n, pa.int32()),
            "packets": pa.array([1, 2, 3], pa.int64()),
            "bytes": pa.array([10, 20, 30], pa.int64()),
            "start": pa.array([1418530010] * n, pa.int64()),
            "end": pa.array([1418530070] * n, pa.int64()),
            "action": ["ACCEPT"] * n,
            "log_status": ["OK"] * n,
        }
    )
    pq.write_table(table, path)


async def test_rows_a_sink_cannot_encode_are_rejected_for_it_alone(
    tmp_path: Path, caplog, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Since issue #10 the AWS Parquet parser rejects a row holding invalid UTF-8, so this input no longer reaches a
    # sink. The sinks' safety net is for whatever a parser lets through: the check is turned off here to keep a
    # real un-encodable batch as its input (tests/test_aws_parquet_types.py covers the check).
    monkeypatch.setattr(aws_parse, "_utf8", lambda arr: (arr, arr, None))
    (tmp_path / "in").mkdir()
    _bad_utf8_parquet(tmp_path / "in" / "bad.parquet")
    cfg = tmp_path / "cfg.yaml"
    cfg.write_text(
        "state_dir: state\nprogress_interval: 0\n"
        "sources:\n  - {name: in, type: local, path: in}\n"
        "sinks:\n"
        "  - {name: j, type: file, path: out/j, format: jsonl, flush_interval: 50ms}\n"
        "  - {name: p, type: file, path: out/p, format: parquet, flush_interval: 50ms}\n"
    )
    caplog.set_level(logging.ERROR, logger="flowcollector.pipeline")
    metrics = await run(load_config(cfg), once=True)
    assert metrics.failed is None
    assert metrics.sources["in"].units == 1  # the unit is done: the pipeline moved on
    assert (metrics.sinks["j"].rejected, metrics.sinks["j"].records) == (1, 2)
    assert (metrics.sinks["p"].rejected, metrics.sinks["p"].records) == (0, 3)
    (jfile,) = (tmp_path / "out/j").glob("flows-*.jsonl")
    assert [orjson.loads(line)["bytes"] for line in jfile.read_bytes().splitlines()] == [10, 30]
    (pfile,) = (tmp_path / "out/p").glob("flows-*.parquet")
    assert pq.read_table(pfile).column("bytes").to_pylist() == [10, 20, 30]
    (message,) = [r.getMessage() for r in caplog.records if "rejected" in r.getMessage()]
    assert message.startswith("sink=j source=in unit=bad.parquet rejected 1 of 3 rows (first row 1): ")
    assert "can't decode byte 0xff" in message


def _five() -> pa.RecordBatch:
    line = "2 123456789010 eni-1 10.0.0.1 10.0.0.2 {p} 443 6 1 {p} 1418530010 1418530070 ACCEPT OK\n"
    return next(parse_text(["".join(line.format(p=p) for p in range(1, 6)).encode()], unit="u", source="s")).batch


def test_a_batch_renders_in_pieces_so_no_size_overflows(monkeypatch: pytest.MonkeyPatch) -> None:
    """Arrow string arrays hold at most 2 GiB: a batch is rendered CHUNK_ROWS rows at a time (2 here)."""
    batch = _five()
    whole = bytes(jsonl.dumps_batch(batch))
    monkeypatch.setattr(jsonl, "CHUNK_ROWS", 2)
    pieces = jsonl.dumps_chunks(batch)
    assert [bytes(p).count(b"\n") for p in pieces] == [2, 2, 1]
    assert b"".join(bytes(p) for p in pieces) == whole


def test_encode_or_reject_names_the_failing_rows() -> None:
    batch = _five()

    def encode(part: pa.RecordBatch) -> int:
        if 3 in part.column("src_port").to_pylist() or 5 in part.column("src_port").to_pylist():
            raise ValueError("row says no")
        return part.num_rows

    assert encode_or_reject(batch.slice(0, 2), encode) == 2
    with pytest.raises(RejectedRows) as info:
        encode_or_reject(batch, encode)
    assert info.value.rows == [2, 4] and info.value.reason == "ValueError: row says no"

    def too_big(part: pa.RecordBatch) -> int:
        if part.num_rows > 1:
            raise pa.ArrowCapacityError("array cannot contain more than 2147483646 bytes")
        return 1

    # No row fails alone (the batch as a whole is too big): the whole batch is rejected rather than looping.
    with pytest.raises(RejectedRows) as info:
        encode_or_reject(batch, too_big)
    assert info.value.rows == [0, 1, 2, 3, 4] and "2147483646" in info.value.reason
