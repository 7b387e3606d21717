from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

from samecurve.api import CellKey, CellResult
from samecurve.run.store import Store, StoreError


def _cell(subject: str = "s1", metrics: dict | None = None) -> CellResult:
    return CellResult(
        key=CellKey("discover", "oracle", subject, 0), status="ok",
        metrics=metrics or {"probability": 1.0}, seconds=0.5, queries=3, grad_steps=1,
        artifacts={"trigger_mask": np.eye(4, dtype=np.float32)},
    )


def test_a_cell_is_stored_once_with_its_artifacts(tmp_path: Path) -> None:
    with Store(tmp_path) as store:
        assert store.add("cfg", _cell())
        assert not store.add("cfg", _cell(metrics={"probability": 0.0}))  # duplicate ignored
        assert store.add("cfg2", _cell())  # another config is another cell
        assert store.count() == 2
        assert ("discover", "oracle", "cfg", "s1", 0) in store.done()
        (config, cell), _ = list(store.cells(with_artifacts=True))
        assert config == "cfg" and cell.metrics == {"probability": 1.0}
        np.testing.assert_array_equal(cell.artifacts["trigger_mask"], np.eye(4))
    with Store(tmp_path) as again:  # persisted
        assert again.count() == 2


def test_wal_mode(tmp_path: Path) -> None:
    with Store(tmp_path) as store:
        assert store.db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"


def test_unwritable_folder_is_one_clear_line(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("x")
    with pytest.raises(StoreError, match="choose a writable --out folder"):
        Store(blocker / "run")


def test_a_file_that_is_not_a_database(tmp_path: Path) -> None:
    (tmp_path / "results.sqlite").write_bytes(os.urandom(4096))
    with pytest.raises(StoreError, match="cannot keep results"):
        Store(tmp_path)
