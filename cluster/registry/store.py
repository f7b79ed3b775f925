"""Write-through SQLite persistence for the registry: one table per concept, JSON documents.

One process writes a database at a time: ``Store`` holds an exclusive ``flock`` on
``<db>.lock`` while it is open, so a second control plane pointed at the same storage root
fails at start with ``StoreLocked`` instead of writing beside the first. A change of several
rows is one ``transaction()``. A row that no longer parses or validates is moved to the
``quarantine`` table by ``load`` (kept, logged, listed by ``quarantined``), so the registry
starts and serves everything else.
"""

from __future__ import annotations

import fcntl
import json
import logging
import os
import socket
import sqlite3
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, TypeVar

from pydantic import BaseModel

from cluster.schemas import utcnow

T = TypeVar("T", bound=BaseModel)

logger = logging.getLogger("modelyard.store")

TABLES = (
    "models",
    "versions",
    "deployments",
    "tasks",
    "events",
    "async_tasks",
    "serve_apps",
    "datasets",
)
QUARANTINE = "quarantine"
LOCK_WAIT_S = 10.0


class StoreLocked(RuntimeError):
    """Another process has the registry database open."""


class Store:
    """Documents keyed by a string id; a ``put`` outside a transaction commits at once."""

    def __init__(self, path: Path, lock_wait_s: float = LOCK_WAIT_S) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self._lock = _ProcessLock.acquire(path.with_name(path.name + ".lock"), path, lock_wait_s)
        try:
            self._open(path)
        except BaseException:
            self._lock.release()
            raise
        self._depth = 0

    def _open(self, path: Path) -> None:
        self._db = sqlite3.connect(str(path), isolation_level=None, check_same_thread=False)
        self._db.execute("PRAGMA journal_mode=WAL")
        # FULL, not NORMAL: with WAL, NORMAL survives a crash of the registry process but
        # may lose the last commits on a power cut or kernel panic of the head node, and
        # every commit here is a promise already answered (a task id, a version, a queued
        # prediction). Measured on this project's dev disk: 2.1 ms a commit against 0.3 ms,
        # which the registry's rate of writes (control calls, progress reports) affords.
        self._db.execute("PRAGMA synchronous=FULL")
        for table in TABLES:
            self._db.execute(
                f"CREATE TABLE IF NOT EXISTS {table} "
                "(id TEXT PRIMARY KEY, seq INTEGER NOT NULL, doc TEXT NOT NULL)"
            )
        self._db.execute(
            f"CREATE TABLE IF NOT EXISTS {QUARANTINE} (qid INTEGER PRIMARY KEY AUTOINCREMENT, "
            "tbl TEXT NOT NULL, id TEXT NOT NULL, doc BLOB, error TEXT NOT NULL, at TEXT NOT NULL)"
        )
        self._seq = max(
            (
                self._db.execute(f"SELECT COALESCE(MAX(seq), 0) FROM {t}").fetchone()[0]
                for t in TABLES
            ),
            default=0,
        )

    @contextmanager
    def transaction(self) -> Iterator[None]:
        """Every write inside is committed together or not at all (a nested one joins)."""
        if self._depth:
            self._depth += 1
            try:
                yield
            finally:
                self._depth -= 1
            return
        seq = self._seq
        # IMMEDIATE takes the write lock now, so the commit cannot fail on a busy database
        # after part of the work has been done.
        self._db.execute("BEGIN IMMEDIATE")
        self._depth = 1
        try:
            yield
            self._db.execute("COMMIT")
        except BaseException:
            if self._db.in_transaction:
                self._db.execute("ROLLBACK")
            self._seq = seq
            raise
        finally:
            self._depth = 0

    def put(self, table: str, key: str, doc: BaseModel | str) -> None:
        """``doc`` is a model or its JSON text, as written by the caller."""
        text = doc if isinstance(doc, str) else doc.model_dump_json()
        self._seq += 1
        self._db.execute(
            f"INSERT INTO {table} (id, seq, doc) VALUES (?, ?, ?) "
            "ON CONFLICT(id) DO UPDATE SET doc = excluded.doc",
            (key, self._seq, text),
        )

    def delete(self, table: str, key: str) -> None:
        self._db.execute(f"DELETE FROM {table} WHERE id = ?", (key,))

    def load(self, table: str, schema: type[T]) -> list[tuple[str, T]]:
        """All readable documents of a table in insertion order; the others are set aside."""
        return self._load(table, lambda raw: schema.model_validate(json.loads(raw)))

    def load_json(self, table: str) -> list[tuple[str, Any]]:
        """A table of plain JSON values; a row that is not JSON is set aside."""
        return self._load(table, json.loads)

    def _load(self, table: str, parse: Callable[[bytes], Any]) -> list[tuple[str, Any]]:
        out: list[tuple[str, Any]] = []
        bad: list[tuple[str, bytes, str]] = []
        for key, raw in self._rows(table):
            try:
                out.append((key, parse(raw)))
            except Exception as exc:  # any row this code cannot read, however it fails
                bad.append((key, raw, f"{type(exc).__name__}: {exc}"))
        if bad:
            with self.transaction():
                for key, raw, error in bad:
                    self._quarantine(table, key, raw, error)
        return out

    def set_aside(self, table: str, key: str, error: str) -> None:
        """Move one row to the quarantine (one the registry found inconsistent)."""
        row = self._db.execute(
            f"SELECT CAST(doc AS BLOB) FROM {table} WHERE id = ?", (key,)
        ).fetchone()
        if row is not None:
            with self.transaction():
                self._quarantine(table, key, row[0], error)

    def quarantined(self, table: str | None = None) -> list[dict[str, Any]]:
        """Rows set aside, oldest first: where they were, the document as stored, why."""
        sql = f"SELECT qid, tbl, id, doc, error, at FROM {QUARANTINE}"
        args: tuple = ()
        if table is not None:
            sql, args = sql + " WHERE tbl = ?", (table,)
        rows = self._db.execute(sql + " ORDER BY qid", args).fetchall()
        return [
            {
                "qid": qid,
                "table": tbl,
                "id": key,
                "doc": bytes(doc or b"").decode("utf-8", errors="replace"),
                "error": error,
                "at": at,
            }
            for qid, tbl, key, doc, error, at in rows
        ]

    def close(self) -> None:
        self._db.close()
        self._lock.release()

    def _rows(self, table: str) -> list[tuple[str, bytes]]:
        # As bytes: a document that is not valid UTF-8 must fail alone, not the whole read.
        return self._db.execute(
            f"SELECT id, CAST(doc AS BLOB) FROM {table} ORDER BY seq"
        ).fetchall()

    def _quarantine(self, table: str, key: str, raw: bytes | str, error: str) -> None:
        logger.warning("registry: set aside %s row %r that cannot be read: %s", table, key, error)
        self._db.execute(
            f"INSERT INTO {QUARANTINE} (tbl, id, doc, error, at) VALUES (?, ?, ?, ?, ?)",
            (table, key, raw, error[:2000], utcnow().isoformat()),
        )
        self._db.execute(f"DELETE FROM {table} WHERE id = ?", (key,))


class _ProcessLock:
    """An exclusive ``flock`` on one lock file, shared by the Stores of this process.

    ``flock`` belongs to an open file, so a second open in one process would refuse the
    first: instead the Stores of one process share one open file (tests reopen a database to
    act out a registry restart; a restarted registry actor is a new process, and the dead
    one's lock went with it)."""

    _held: dict[str, _ProcessLock] = {}
    _guard = threading.Lock()

    def __init__(self, key: str, fd: int) -> None:
        self.key, self.fd, self.users = key, fd, 1

    @classmethod
    def acquire(cls, lock_path: Path, db: Path, wait_s: float) -> _ProcessLock:
        key = str(lock_path.resolve())
        with cls._guard:
            held = cls._held.get(key)
            if held is not None:
                held.users += 1
                return held
            fd = os.open(key, os.O_RDWR | os.O_CREAT, 0o600)
            try:
                _flock(fd, wait_s, db, key)
            except BaseException:
                os.close(fd)
                raise
            os.ftruncate(fd, 0)
            os.write(fd, f"pid {os.getpid()} on {socket.gethostname()}\n".encode())
            cls._held[key] = lock = cls(key, fd)
            return lock

    def release(self) -> None:
        with self._guard:
            self.users -= 1
            if self.users == 0 and self._held.get(self.key) is self:
                del self._held[self.key]
                os.close(self.fd)  # closing the last descriptor drops the flock


def _flock(fd: int, wait_s: float, db: Path, lock_path: str) -> None:
    """Lock, waiting up to ``wait_s`` (a stopped registry's process may take a moment to
    exit), else raise naming the database, the lock and its holder."""
    deadline = time.monotonic() + wait_s
    while True:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return
        except BlockingIOError:
            if time.monotonic() >= deadline:
                break
            time.sleep(0.1)
    holder = os.pread(fd, 200, 0).decode(errors="replace").strip() or "another process"
    raise StoreLocked(
        f"the registry database {db} is in use by another modelyard control plane "
        f"({holder}; lock file {lock_path}). Stop that one first (`modelyard down` on its "
        "cluster), or give this one its own MODELYARD_STORAGE_ROOT or MODELYARD_REGISTRY_DB."
    )
