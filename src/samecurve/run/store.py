"""The results store: one SQLite file (WAL) per run folder, one row per cell,
written the moment the cell finishes. The primary key makes a resumed run
unable to duplicate a cell; a killed run loses at most the cells in flight."""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Iterator, Mapping
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
from safetensors.numpy import load as load_arrays
from safetensors.numpy import save as save_arrays

from samecurve.api import CellKey, CellResult

DB_NAME = "results.sqlite"

SCHEMA = """
CREATE TABLE IF NOT EXISTS cells (
    task TEXT NOT NULL,
    tool TEXT NOT NULL,
    config TEXT NOT NULL,
    subject TEXT NOT NULL,
    seed INTEGER NOT NULL,
    status TEXT NOT NULL CHECK (status IN ('ok', 'error', 'timeout')),
    metrics TEXT NOT NULL,
    seconds REAL NOT NULL,
    queries INTEGER NOT NULL,
    grad_steps INTEGER NOT NULL,
    error TEXT NOT NULL,
    artifacts BLOB,
    created TEXT NOT NULL,
    PRIMARY KEY (task, tool, config, subject, seed)
);
CREATE TABLE IF NOT EXISTS subjects (id TEXT PRIMARY KEY, card TEXT NOT NULL, arrays BLOB);
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
"""


class StoreError(RuntimeError):
    """The run folder cannot hold a store (unwritable, or not a samecurve database)."""


def pack(arrays: Mapping[str, np.ndarray]) -> bytes | None:
    """Arrays as safetensors bytes: typed, portable, and never unpickled."""
    if not arrays:
        return None
    return save_arrays({k: np.ascontiguousarray(v) for k, v in arrays.items()})


def unpack(blob: bytes | None) -> dict[str, np.ndarray]:
    return dict(load_arrays(blob)) if blob else {}


class Store:
    def __init__(self, folder: str | Path) -> None:
        self.folder = Path(folder)
        self.path = self.folder / DB_NAME
        try:
            self.folder.mkdir(parents=True, exist_ok=True)
            self.db = sqlite3.connect(self.path, timeout=30)
            self.db.execute("PRAGMA journal_mode=WAL")
            self.db.execute("PRAGMA synchronous=NORMAL")
            self.db.executescript(SCHEMA)
            self.db.commit()
        except (OSError, sqlite3.Error) as exc:
            raise StoreError(
                f"cannot keep results in {self.folder} ({exc}); choose a writable --out folder"
            ) from exc

    def close(self) -> None:
        self.db.close()

    def __enter__(self) -> Store:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- cells ---------------------------------------------------------------
    def done(self) -> set[tuple[str, str, str, str, int]]:
        rows = self.db.execute("SELECT task, tool, config, subject, seed FROM cells")
        return {tuple(r) for r in rows}  # type: ignore[misc]

    def add(self, config: str, result: CellResult) -> bool:
        """Insert one finished cell; returns False (and changes nothing) if it is already there."""
        k = result.key
        with self.db:
            cur = self.db.execute(
                "INSERT OR IGNORE INTO cells VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?)",
                (
                    k.task, k.tool, config, k.subject, k.seed, result.status,
                    json.dumps(dict(result.metrics)), result.seconds, result.queries,
                    result.grad_steps, result.error, pack(result.artifacts),
                    datetime.now(UTC).isoformat(timespec="seconds"),
                ),
            )
        return cur.rowcount == 1

    def cells(self, with_artifacts: bool = False) -> Iterator[tuple[str, CellResult]]:
        cols = "task, tool, config, subject, seed, status, metrics, seconds, queries, grad_steps, error"
        if with_artifacts:
            cols += ", artifacts"
        for row in self.db.execute(f"SELECT {cols} FROM cells ORDER BY rowid"):
            task, tool, config, subject, seed, status, metrics, secs, q, g, err = row[:11]
            yield config, CellResult(
                key=CellKey(task, tool, subject, int(seed)),
                status=status,
                metrics=json.loads(metrics),
                seconds=float(secs),
                queries=int(q),
                grad_steps=int(g),
                error=err,
                artifacts=unpack(row[11]) if with_artifacts else {},
            )

    def count(self) -> int:
        return int(self.db.execute("SELECT COUNT(*) FROM cells").fetchone()[0])

    # -- subjects and meta ----------------------------------------------------
    def put_subject(self, card: Mapping, arrays: Mapping[str, np.ndarray]) -> None:
        with self.db:
            self.db.execute(
                "INSERT OR REPLACE INTO subjects VALUES (?,?,?)",
                (card["id"], json.dumps(card, sort_keys=True), pack(arrays)),
            )

    def subjects(self) -> dict[str, tuple[dict, dict[str, np.ndarray]]]:
        rows = self.db.execute("SELECT id, card, arrays FROM subjects")
        return {sid: (json.loads(card), unpack(blob)) for sid, card, blob in rows}

    def cards(self) -> dict[str, dict]:
        """Every stored subject's card, without its report arrays."""
        return {sid: json.loads(card) for sid, card in self.db.execute("SELECT id, card FROM subjects")}

    def set_meta(self, key: str, value: str) -> None:
        with self.db:
            self.db.execute("INSERT OR REPLACE INTO meta VALUES (?,?)", (key, value))

    def meta(self) -> dict[str, str]:
        return dict(self.db.execute("SELECT key, value FROM meta").fetchall())
