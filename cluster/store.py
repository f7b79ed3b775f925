"""Write-through SQLite persistence for the registry: one table per concept, JSON documents."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path
from typing import TypeVar

from pydantic import BaseModel

T = TypeVar("T", bound=BaseModel)

TABLES = ("models", "versions", "deployments", "tasks", "events", "async_tasks", "serve_apps")


class Store:
    """Documents keyed by a string id; every ``put`` is committed before it returns."""

    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self._db = sqlite3.connect(str(path), isolation_level=None, check_same_thread=False)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=NORMAL")
        for table in TABLES:
            self._db.execute(
                f"CREATE TABLE IF NOT EXISTS {table} "
                "(id TEXT PRIMARY KEY, seq INTEGER NOT NULL, doc TEXT NOT NULL)"
            )
        self._seq = max(
            (
                self._db.execute(f"SELECT COALESCE(MAX(seq), 0) FROM {t}").fetchone()[0]
                for t in TABLES
            ),
            default=0,
        )

    def put(self, table: str, key: str, doc: BaseModel) -> None:
        self._seq += 1
        self._db.execute(
            f"INSERT INTO {table} (id, seq, doc) VALUES (?, ?, ?) "
            "ON CONFLICT(id) DO UPDATE SET doc = excluded.doc",
            (key, self._seq, doc.model_dump_json()),
        )

    def delete(self, table: str, key: str) -> None:
        self._db.execute(f"DELETE FROM {table} WHERE id = ?", (key,))

    def load(self, table: str, schema: type[T]) -> list[tuple[str, T]]:
        """All documents of a table in insertion order."""
        rows = self._db.execute(f"SELECT id, doc FROM {table} ORDER BY seq").fetchall()
        return [(key, schema.model_validate(json.loads(doc))) for key, doc in rows]

    def close(self) -> None:
        self._db.close()
