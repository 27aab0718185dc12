"""The conformance record shape (../shared/conformance/README.md): what `flowcollector parse --format conformance`
prints and the conformance tests compare. Per-record Python is fine here: it is a debugging and testing form."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from collector.jsonl import format_time_ms  # noqa: F401  (re-exported for tests that print times)
from collector.schema import FlowBatch, ParseError, address_text

KEYS = (
    "provider", "account", "interface", "src_addr", "dst_addr", "src_port", "dst_port", "protocol",
    "packets", "bytes", "start", "end", "action", "direction", "tcp_flags", "log_status",
)  # fmt: skip


def records(batch: FlowBatch) -> Iterator[dict[str, Any]]:
    """One dict per flow with the conformance keys; start/end as floored Unix seconds."""
    cols: dict[str, list[Any]] = {}
    for key in KEYS:
        if key in ("start", "end"):
            ms = batch.column("time_" + key).cast("int64").to_pylist()
            cols[key] = [None if v is None else v // 1000 for v in ms]
        elif key in ("src_addr", "dst_addr"):
            cols[key] = address_text(batch.column(key)).to_pylist()
        else:
            cols[key] = batch.column(key).to_pylist()
    for i in range(batch.num_rows):
        yield {k: cols[k][i] for k in KEYS}


def error_record(err: ParseError, provider: str) -> dict[str, Any]:
    return {
        "provider": provider,
        "_kind": "error",
        "error": err.reason,
        "_input": err.unit,
        "_line": err.line,
    }
