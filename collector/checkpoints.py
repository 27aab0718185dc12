"""Where every source stands: embedded SQLite (WAL) in the state directory.

One row per (source, unit): the unit's version (local file: size and mtime; S3: ETag), how far it has been
delivered (a parser position, JSON) and whether it is done. A row is only ever written after every sink has acked
the data up to that position, so a restart resumes exactly there: nothing lost, and repeated only what was in
flight. WAL with synchronous=FULL makes each commit durable before the pipeline moves on.
"""

from __future__ import annotations

import sqlite3
import threading
import time
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson

_SCHEMA = """
CREATE TABLE IF NOT EXISTS units (
    source   TEXT NOT NULL,
    unit     TEXT NOT NULL,
    version  TEXT NOT NULL,
    position BLOB,
    done     INTEGER NOT NULL DEFAULT 0,
    records  INTEGER NOT NULL DEFAULT 0,
    updated  REAL NOT NULL,
    PRIMARY KEY (source, unit)
) WITHOUT ROWID;
-- How far each sink has durably taken a unit that is not yet done for every sink. On a restart, batches a sink
-- already has are not sent to it again: duplicates stay confined to what that sink had in flight.
CREATE TABLE IF NOT EXISTS sink_units (
    sink     TEXT NOT NULL,
    source   TEXT NOT NULL,
    unit     TEXT NOT NULL,
    version  TEXT NOT NULL,
    progress INTEGER NOT NULL,
    PRIMARY KEY (source, unit, sink)
) WITHOUT ROWID;
-- A file sink's unpublished files and how many of their bytes hold recorded (acked) data: after a crash the sink
-- cuts each file back to that size and publishes it (two-phase publish, collector/sinks/file.py).
CREATE TABLE IF NOT EXISTS sink_journal (
    sink TEXT NOT NULL,
    name TEXT NOT NULL,
    size INTEGER NOT NULL,
    PRIMARY KEY (sink, name)
) WITHOUT ROWID;
"""


@dataclass(frozen=True, slots=True)
class Checkpoint:
    version: str
    position: dict[str, Any] | None
    done: bool
    records: int


@dataclass(frozen=True, slots=True)
class Commit:
    """Progress of one unit to record: delivered up to `position`, `records` rows so far, `done` at the end."""

    source: str
    unit: str
    version: str
    position: dict[str, Any] | None
    done: bool
    records: int
    # How far into the unit `position` is (the pipeline's progress). A unit done for every sink forgets the sinks'
    # progress rows up to here; a row *ahead* of it (a continuous unit such as a log stream, "done" for now while a
    # fast sink is already further) is kept, so that sink is not sent again what it has.
    progress: int = 1 << 62


class CheckpointStore:
    def __init__(self, state_dir: Path) -> None:
        state_dir.mkdir(parents=True, exist_ok=True)
        self.path = state_dir / "checkpoints.sqlite"
        # One connection shared by the event loop and worker threads, serialized by a lock: commits are few
        # (one per acked batch group), so contention does not matter and ordering stays simple.
        self._db = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None)
        self._lock = threading.Lock()
        with self._lock:
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=FULL")
            self._db.executescript(_SCHEMA)

    @contextmanager
    def _transaction(self) -> Iterator[None]:
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                yield
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
            self._db.execute("COMMIT")

    def get(self, source: str, unit: str) -> Checkpoint | None:
        with self._lock:
            row = self._db.execute(
                "SELECT version, position, done, records FROM units WHERE source=? AND unit=?", (source, unit)
            ).fetchone()
        if row is None:
            return None
        return Checkpoint(row[0], orjson.loads(row[1]) if row[1] else None, bool(row[2]), row[3])

    def done_versions(self, source: str) -> dict[str, str]:
        """unit -> version of every finished unit of a source, to skip them in one lookup per poll."""
        with self._lock:
            rows = self._db.execute("SELECT unit, version FROM units WHERE source=? AND done=1", (source,)).fetchall()
        return dict(rows)

    def commit(self, items: Iterable[Commit]) -> None:
        """Record progress of several units in one durable transaction."""
        now = time.time()
        items = list(items)
        rows = [
            (c.source, c.unit, c.version, orjson.dumps(c.position) if c.position else None, int(c.done), c.records, now)
            for c in items
        ]
        if not rows:
            return
        with self._transaction():
            self._db.executemany(
                "INSERT INTO units (source, unit, version, position, done, records, updated)"
                " VALUES (?, ?, ?, ?, ?, ?, ?)"
                " ON CONFLICT(source, unit) DO UPDATE SET version=excluded.version, position=excluded.position,"
                " done=excluded.done, records=excluded.records, updated=excluded.updated",
                rows,
            )
            # A unit done for every sink needs no per-sink progress up to where it is done.
            self._db.executemany(
                "DELETE FROM sink_units WHERE source=? AND unit=? AND NOT (version=? AND progress>?)",
                [(c.source, c.unit, c.version, c.progress) for c in items if c.done],
            )

    def sink_progress(self, source: str, unit: str) -> dict[str, tuple[str, int]]:
        """sink -> (version, progress) for one unit: what each sink already holds of it."""
        with self._lock:
            rows = self._db.execute(
                "SELECT sink, version, progress FROM sink_units WHERE source=? AND unit=?", (source, unit)
            ).fetchall()
        return {sink: (version, progress) for sink, version, progress in rows}

    def commit_sink(
        self, sink: str, items: Iterable[tuple[str, str, str, int]], journal: Iterable[tuple[str, int]] = ()
    ) -> None:
        """Record (source, unit, version, progress) a sink has durably taken, and (file, size) of the unpublished
        files that hold it, in one transaction."""
        rows = [(sink, *item) for item in items]
        files = [(sink, name, size) for name, size in journal]
        if not rows and not files:
            return
        with self._transaction():
            self._db.executemany(
                "INSERT INTO sink_units (sink, source, unit, version, progress) VALUES (?, ?, ?, ?, ?)"
                " ON CONFLICT(source, unit, sink) DO UPDATE SET version=excluded.version, progress=excluded.progress",
                rows,
            )
            self._db.executemany(
                "INSERT INTO sink_journal (sink, name, size) VALUES (?, ?, ?)"
                " ON CONFLICT(sink, name) DO UPDATE SET size=excluded.size",
                files,
            )

    def sink_journal(self, sink: str) -> dict[str, int]:
        with self._lock:
            return dict(self._db.execute("SELECT name, size FROM sink_journal WHERE sink=?", (sink,)).fetchall())

    def forget_journal(self, sink: str, names: Iterable[str]) -> None:
        with self._transaction():
            self._db.executemany("DELETE FROM sink_journal WHERE sink=? AND name=?", [(sink, n) for n in names])

    def units_with_prefix(self, source: str, prefix: str) -> list[str]:
        """Units of a source whose name starts with `prefix` (a source's own bookkeeping rows, for example)."""
        with self._lock:
            rows = self._db.execute(
                "SELECT unit FROM units WHERE source=? AND unit>=? AND unit<?", (source, prefix, prefix + "\U0010ffff")
            ).fetchall()
        return [r[0] for r in rows]

    def forget_units(self, source: str, units: Iterable[str], before: float) -> int:
        """Drop finished units of a source among `units` last updated before `before` (epoch seconds)."""
        with self._transaction():
            cur = self._db.executemany(
                "DELETE FROM units WHERE source=? AND unit=? AND done=1 AND updated<?",
                [(source, u, before) for u in units],
            )
        return cur.rowcount

    def forget_before(self, source: str, before: float) -> int:
        """Drop finished units last updated before `before` (epoch seconds): the store's horizon."""
        with self._lock:
            cur = self._db.execute("DELETE FROM units WHERE source=? AND done=1 AND updated<?", (source, before))
        return cur.rowcount

    def close(self) -> None:
        with self._lock:
            self._db.close()
