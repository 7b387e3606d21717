"""The user's clean data, through the zoo's own dataset loaders (npz, ImageFolder,
IDX), split once by their fixed partition: tools see only the `train` pool (70%),
and every figure the audit reports (accuracy, attack success of a recovered
trigger, before and after a fix) is measured on the other 30%, which no tool saw."""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from samecurve.api import Split
from samecurve.audit import AuditError
from samecurve.data.arrays import ArrayDataset, DataError
from samecurve.registry import get

TOOL_POOL = "train"
EVAL_POOLS = ("val", "test", "heldout")
SAMPLE_SEED = 0  # the partition is fixed by the data; this only orders the draws


@dataclass(frozen=True, eq=False)
class UserData:
    """A loaded dataset and where it came from."""

    source: str
    loader: str  # the registered dataset name: npz, imagefolder or idx
    dataset: ArrayDataset

    @property
    def num_classes(self) -> int:
        return int(self.dataset.num_classes)

    @property
    def input_shape(self) -> tuple[int, int, int]:
        return tuple(self.dataset.input_shape)  # type: ignore[return-value]

    @property
    def class_names(self) -> tuple[str, ...]:
        return tuple(self.dataset.class_names)

    def __len__(self) -> int:
        return len(self.dataset.y)

    def name(self, k: int) -> str:
        """A class as the user knows it: its folder name, or its index."""
        names = self.class_names
        label = names[k] if 0 <= k < len(names) else str(k)
        return str(k) if label == str(k) else f"{k} ({label})"

    def tool_split(self, n: int) -> Split:
        """Up to n inputs of the tools' pool, class-balanced, never augmented copies."""
        return self._draw([TOOL_POOL], n)

    def eval_split(self, n: int) -> Split:
        """Up to n inputs no tool sees, for every figure the audit reports."""
        return self._draw(list(EVAL_POOLS), n)

    def _draw(self, pools: list[str], n: int) -> Split:
        sizes = [self.dataset.pool_size(p) for p in pools]
        total = sum(sizes)
        xs, ys = [], []
        for pool, size in zip(pools, sizes, strict=True):
            take = min(size, round(n * size / total)) if total > n else size
            if take:
                x, y = self.dataset.sample(take, SAMPLE_SEED, split=pool)
                xs.append(x)
                ys.append(y)
        x = np.concatenate(xs) if xs else np.empty((0, *self.input_shape), np.float32)
        y = np.concatenate(ys) if ys else np.empty(0, np.int64)
        return Split(torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32)),
                     torch.from_numpy(y.astype(np.int64)))


def _idx_labels(images: Path) -> Path:
    """The labels file that ships next to an IDX images file (MNIST's naming)."""
    guess = images.with_name(re.sub(r"images-idx3", "labels-idx1", images.name))
    if guess == images or not guess.is_file():
        raise AuditError(
            f"{images}: no labels file found beside it; give both as --data IMAGES,LABELS"
        )
    return guess


def load_data(spec: str, shape_hint: tuple[int, int, int] | None = None) -> UserData:
    """DATA as given on the command line: an .npz file, an ImageFolder tree (resized to
    the model's recorded input size when its file names one, else 32x32 RGB), or IDX
    files as IMAGES,LABELS (or the images file alone when the labels sit beside it)."""
    try:
        if "," in spec:
            images, labels = (Path(p.strip()) for p in spec.split(",", 1))
            return UserData(spec, "idx", get("dataset", "idx")(images=str(images), labels=str(labels)))
        path = Path(spec)
        if path.is_dir():
            channels, size = (shape_hint[0], shape_hint[1]) if shape_hint else (3, 32)
            ds = get("dataset", "imagefolder")(root=str(path), size=size, channels=channels)
            return UserData(spec, "imagefolder", ds)
        if not path.exists():
            raise AuditError(f"{path}: no such file or folder; check the --data path")
        if path.suffix == ".npz":
            return UserData(spec, "npz", get("dataset", "npz")(path=str(path)))
        if "idx" in path.name:
            labels = _idx_labels(path)
            return UserData(spec, "idx", get("dataset", "idx")(images=str(path), labels=str(labels)))
    except DataError as exc:
        raise AuditError(str(exc)) from exc
    raise AuditError(
        f"{spec}: cannot tell what data this is; give an .npz (x, y), an ImageFolder folder "
        "(one subfolder per class) or IDX files as IMAGES,LABELS"
    )
