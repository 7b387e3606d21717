"""Content-addressed subject cache: one folder per subject id holding safetensors
weights, the trigger arrays and a JSON card. Writes are atomic (build in a
temporary folder, then rename), so a killed build never leaves a half entry."""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import platformdirs
import torch
from safetensors import SafetensorError
from safetensors.numpy import load_file as load_numpy
from safetensors.numpy import save_file as save_numpy
from safetensors.torch import load_file as load_torch
from safetensors.torch import save_file as save_torch
from torch import nn

from samecurve.api import AnswerKey, Subject, Trojan, card_classes
from samecurve.registry import get
from samecurve.zoo.triggers import trigger_from_arrays

MODEL_FILE = "model.safetensors"
TRIGGER_FILE = "trigger.safetensors"
CARD_FILE = "card.json"


class CorruptSubject(RuntimeError):
    """A cache entry or model file that cannot be read safely."""


def default_cache_root() -> Path:
    env = os.environ.get("SAMECURVE_CACHE")
    return Path(env) if env else Path(platformdirs.user_cache_dir("samecurve"))


def load_weights(path: Path) -> dict[str, torch.Tensor]:
    """Load a safetensors file; anything else (a pickle, a truncated file) is
    refused with one line that names the file, and is never unpickled."""
    try:
        return load_torch(str(path))
    except (SafetensorError, OSError, ValueError) as exc:
        raise CorruptSubject(
            f"{path} is not a readable safetensors file ({exc}); samecurve never unpickles "
            "model files: delete it to rebuild, or convert it with safetensors.torch.save_file"
        ) from exc


class Cache:
    def __init__(self, root: str | Path | None = None) -> None:
        self.root = Path(root) if root is not None else default_cache_root()

    @property
    def subjects_dir(self) -> Path:
        return self.root / "subjects"

    def path(self, subject_id: str) -> Path:
        return self.subjects_dir / subject_id

    def has(self, subject_id: str) -> bool:
        return (self.path(subject_id) / CARD_FILE).is_file()

    @property
    def failures_dir(self) -> Path:
        return self.root / "failed"

    def failure(self, subject_id: str) -> str | None:
        """Why an earlier build of this subject missed its gate on every attempt
        (builds are deterministic, so retrying would spend the same minutes)."""
        path = self.failures_dir / f"{subject_id}.json"
        try:
            return str(json.loads(path.read_text())["reason"])
        except (OSError, json.JSONDecodeError, KeyError, TypeError):
            return None

    def save_failure(self, subject_id: str, reason: str) -> None:
        self.failures_dir.mkdir(parents=True, exist_ok=True)
        tmp = self.failures_dir / f".{subject_id}.{os.getpid()}.json"
        tmp.write_text(json.dumps({"id": subject_id, "reason": reason}))
        os.replace(tmp, self.failures_dir / f"{subject_id}.json")

    def forget_failure(self, subject_id: str) -> None:
        """Drop a failure record, so the next build tries that subject again."""
        (self.failures_dir / f"{subject_id}.json").unlink(missing_ok=True)

    def ids(self) -> list[str]:
        if not self.subjects_dir.is_dir():
            return []
        return sorted(p.name for p in self.subjects_dir.iterdir() if (p / CARD_FILE).is_file())

    def save(self, model: nn.Module, key: AnswerKey, card: dict[str, Any]) -> Path:
        """Write a subject atomically; if another worker won the race, keep theirs."""
        final = self.path(card["id"])
        self.subjects_dir.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{card['id']}-", dir=self.subjects_dir))
        try:
            state = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
            save_torch(state, str(tmp / MODEL_FILE))
            if key.trojans:
                card["answer_key"]["stamps"] = [
                    {"kind": t.trigger.kind, "target": t.target, "source": t.source,
                     "meta": t.trigger.meta()}
                    for t in key.trojans
                ]
                arrays = {
                    f"{i}.{name}": np.ascontiguousarray(a, dtype=np.float32)
                    for i, t in enumerate(key.trojans)
                    for name, a in t.trigger.arrays().items()
                }
                save_numpy(arrays, str(tmp / TRIGGER_FILE))
            (tmp / CARD_FILE).write_text(json.dumps(card, indent=2, sort_keys=True))
            try:
                os.rename(tmp, final)
            except OSError:
                if not self.has(card["id"]):
                    raise
                shutil.rmtree(tmp, ignore_errors=True)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        return final

    def load_card(self, subject_id: str) -> dict[str, Any]:
        path = self.path(subject_id) / CARD_FILE
        try:
            return json.loads(path.read_text())
        except (OSError, json.JSONDecodeError) as exc:
            raise CorruptSubject(
                f"{path} is unreadable ({exc}); delete {path.parent} to rebuild it"
            ) from exc

    def load(self, subject_id: str) -> Subject:
        card = self.load_card(subject_id)
        folder = self.path(subject_id)
        model = get("arch", card["arch"])(**card["arch_params"])
        state = load_weights(folder / MODEL_FILE)
        try:
            model.load_state_dict(state, strict=True)
        except RuntimeError as exc:
            first = str(exc).splitlines()[0]
            raise CorruptSubject(
                f"{folder / MODEL_FILE} does not fit architecture {card['arch']!r} ({first}); "
                f"delete {folder} to rebuild it"
            ) from exc
        model.eval()
        key = _answer_key(card["answer_key"], folder / TRIGGER_FILE)
        return Subject(
            id=card["id"],
            recipe=card["recipe"],
            seed=int(card["seed"]),
            dataset=card["dataset"],
            arch=card["arch"],
            num_classes=card_classes(card),
            input_shape=tuple(card["input_shape"]),
            model=model,
            answer_key=key,
            card=card,
        )


def _answer_key(ak: dict[str, Any], trigger_file: Path) -> AnswerKey:
    if not ak["trojaned"]:
        return AnswerKey(trojaned=False, family=ak["family"], program=ak.get("program"),
                         incompressible=bool(ak.get("incompressible", False)))
    try:
        arrays = load_numpy(str(trigger_file))
        trojans = []
        for i, st in enumerate(ak["stamps"]):
            own = {k.split(".", 1)[1]: v for k, v in arrays.items() if k.split(".", 1)[0] == str(i)}
            stamp = trigger_from_arrays(st["kind"], own, st["meta"])
            trojans.append(Trojan(stamp, int(st["target"]), st["source"]))
    except (SafetensorError, OSError, ValueError, KeyError) as exc:
        raise CorruptSubject(
            f"{trigger_file} is unreadable or does not match its card ({exc}); "
            f"delete {trigger_file.parent} to rebuild it"
        ) from exc
    return AnswerKey.from_trojans(
        ak["family"], tuple(trojans), float(ak["poison_rate"]), bool(ak.get("clean_label", False))
    )
