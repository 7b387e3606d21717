"""Loading a user's model without running anything it carries.

Three formats are read, told apart by their bytes, not their names:
- safetensors (the zoo's own format, read by `zoo.cache.load_weights`): plain
  tensors, plus optional metadata naming the architecture (`arch`,
  `arch_params`, `input_shape`), which the repaired models this command writes
  carry; otherwise `--arch` names a registered architecture or `module:Class`;
- a TorchScript archive (`torch.jit.save`), loaded with `torch.jit.load`: its code
  is TorchScript, run by the TorchScript interpreter, not Python;
- a `torch.save` state dict, loaded with `torch.load(weights_only=True)`, whose
  unpickler accepts tensors and containers only. A pickle that would import or call
  anything else (a whole pickled module, an object whose `__reduce__` runs code) is
  refused with one line, and nothing in it is executed.

The architecture's size parameters come from the metadata or from the data, and
the model must take the data's inputs and give one output per data class; a
mismatch is one line that says which."""

from __future__ import annotations

import copy
import hashlib
import importlib
import inspect
import io
import json
import pickle
import pickletools
import re
import struct
import warnings
import zipfile
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import save_file
from torch import nn

from samecurve.audit import AuditError
from samecurve.registry import UnknownName, get, names
from samecurve.zoo.archs import last_linear
from samecurve.zoo.cache import CorruptSubject, load_weights

# What `file_format` tells apart.
SAFETENSORS, TORCHSCRIPT, STATE_DICT = "safetensors", "torchscript", "state-dict"
PICKLE_PROTO = 0x80  # the first byte of every pickle of protocol 2 or later
# Globals a weights-only state dict legitimately names; the others are shown in a refusal.
_PLAIN_GLOBALS = re.compile(
    r"^(torch\._utils\._rebuild_\w+|collections\.OrderedDict|torch\.\w*Storage|torch\.(float|"
    r"half|bfloat16|int|long|bool|uint8|int8|int16|double)\w*|_codecs\.encode|torch\.device|"
    r"torch\.Size)$"
)
# Where trainers commonly nest the weights in a checkpoint dict.
_NESTED_KEYS = ("state_dict", "model_state_dict", "model", "weights")


class Scripted(nn.Module):
    """A TorchScript model behind an ordinary module: ScriptModules refuse Python
    hooks, and the budget meter (and some tools) hook the model they are given."""

    def __init__(self, script: torch.jit.ScriptModule) -> None:
        super().__init__()
        self.script = script

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.script(x)

    def __deepcopy__(self, memo: dict[int, Any]) -> Scripted:
        """copy.deepcopy of a ScriptModule gives parameters that are not leaves, which no
        optimiser takes (torch 2.13); a save-and-load round trip gives true copies. The
        wrapper's own state (its hooks, the meter's among them) is copied as usual."""
        new = self.__class__.__new__(self.__class__)
        memo[id(self)] = new
        for key, value in self.__dict__.items():
            if key != "_modules":
                new.__dict__[key] = copy.deepcopy(value, memo)
        buf = io.BytesIO()
        first = next(self.script.parameters(), None)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)
            torch.jit.save(self.script, buf)
            buf.seek(0)
            script = torch.jit.load(buf, map_location=first.device if first is not None else "cpu")
        script.train(self.script.training)
        for mine, theirs in zip(script.parameters(), self.script.parameters(), strict=True):
            mine.requires_grad_(theirs.requires_grad)
        new.__dict__["_modules"] = {"script": script}
        return new


@dataclass(frozen=True, eq=False)
class ModelFile:
    """A model file as read, before it is fitted to the data: its tensors (or its
    TorchScript module) and its metadata."""

    path: Path
    format: str
    sha256: str
    tensors: Mapping[str, torch.Tensor] | None = None
    script: torch.jit.ScriptModule | None = None
    metadata: Mapping[str, str] = field(default_factory=dict)

    def input_shape_hint(self) -> tuple[int, int, int] | None:
        """The input shape the metadata records, if any (ImageFolder data is resized to it)."""
        raw = self.metadata.get("input_shape")
        try:
            shape = tuple(int(v) for v in json.loads(raw)) if raw else ()
        except (ValueError, TypeError):
            return None
        return shape if len(shape) == 3 else None  # type: ignore[return-value]


@dataclass(frozen=True, eq=False)
class LoadedModel:
    """The user's model, ready to audit: an eval-mode module on the CPU that takes
    `input_shape` inputs and gives `num_classes` logits."""

    module: nn.Module
    path: Path
    format: str
    arch: str  # a registered architecture, module:Class, or "torchscript"
    arch_params: Mapping[str, Any]
    num_classes: int
    input_shape: tuple[int, int, int]
    sha256: str  # of the file
    weights: str  # of the weights alone, the same whichever format carried them

    @property
    def parameters(self) -> int:
        return sum(p.numel() for p in self.module.parameters())


def _sha256(path: Path) -> str:
    with open(path, "rb") as f:
        return hashlib.file_digest(f, "sha256").hexdigest()


def file_format(path: Path) -> str:
    """safetensors, torchscript or state-dict, read from the file's first bytes and,
    for a zip, its member names; anything else is not a model file."""
    try:
        with open(path, "rb") as f:
            head = f.read(9)
        size = path.stat().st_size
    except OSError as exc:
        raise AuditError(f"{path}: cannot be read ({exc.strerror}); check the --model path") from exc
    if len(head) == 9:
        (n,) = struct.unpack("<Q", head[:8])
        if 2 <= n <= size - 8 and head[8:9] == b"{":
            return SAFETENSORS
    if zipfile.is_zipfile(path):
        try:
            with zipfile.ZipFile(path) as z:
                members = z.namelist()
        except (zipfile.BadZipFile, OSError) as exc:
            raise AuditError(f"{path}: a damaged zip archive ({exc}); save the model again") from exc
        if any(m.endswith("constants.pkl") or "/code/" in m for m in members):
            return TORCHSCRIPT
        if any(m.endswith("data.pkl") for m in members):
            return STATE_DICT
    elif head[:1] == bytes([PICKLE_PROTO]):
        return STATE_DICT  # torch.save's legacy format, or a bare pickle
    raise AuditError(
        f"{path}: not a model file samecurve reads; give a safetensors file, a TorchScript "
        "archive (torch.jit.save) or a state dict saved with torch.save(model.state_dict())"
    )


def pickle_globals(path: Path) -> list[str]:
    """The Python objects a pickle (or a torch.save zip's data.pkl) would import when
    loaded, read from its opcodes without loading it. Only for naming them in a
    refusal: weights_only loading is what keeps them from running."""
    try:
        if zipfile.is_zipfile(path):
            with zipfile.ZipFile(path) as z:
                member = next(m for m in z.namelist() if m.endswith("data.pkl"))
                data = z.read(member)
        else:
            data = path.read_bytes()
    except (OSError, StopIteration, zipfile.BadZipFile):
        return []
    found: list[str] = []
    strings: list[str] = []
    try:
        for op, arg, _pos in pickletools.genops(io.BytesIO(data)):
            if op.name == "GLOBAL":
                found.append(str(arg).replace(" ", "."))
            elif op.name == "STACK_GLOBAL" and len(strings) >= 2:
                found.append(f"{strings[-2]}.{strings[-1]}")
            elif isinstance(arg, str):
                strings.append(arg)
    except Exception:  # a malformed pickle: name what was read before it broke
        pass
    return list(dict.fromkeys(g for g in found if not _PLAIN_GLOBALS.match(g)))


def _refusal(path: Path) -> AuditError:
    names_ = pickle_globals(path)
    what = f" (it imports {', '.join(names_[:3])}{' and more' if len(names_) > 3 else ''})" if names_ else ""
    return AuditError(
        f"refused: {path} is a pickle that would run code when loaded{what}; samecurve loads "
        "torch.save files with weights_only=True and never unpickles arbitrary objects: save "
        "model.state_dict() with torch.save, or the weights with safetensors"
    )


def _state_dict(obj: Any, path: Path) -> dict[str, torch.Tensor]:
    """The tensors of a weights-only checkpoint, unwrapping {"state_dict": ...} and the like."""
    if isinstance(obj, Mapping):
        for key in _NESTED_KEYS:
            if isinstance(obj.get(key), Mapping) and len(obj) <= 8:
                obj = obj[key]
                break
    if (isinstance(obj, Mapping) and obj
            and all(isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in obj.items())):
        return {k.removeprefix("module."): v for k, v in obj.items()}
    raise AuditError(
        f"{path}: holds a {type(obj).__name__}, not a state dict of tensors; save it with "
        "torch.save(model.state_dict(), path)"
    )


def read_model_file(path: str | Path) -> ModelFile:
    """Read a model file in whichever supported format it is, safely."""
    path = Path(path)
    if not path.is_file():
        raise AuditError(f"{path}: no such file; check the --model path")
    fmt = file_format(path)
    digest = _sha256(path)
    if fmt == SAFETENSORS:
        try:
            tensors = load_weights(path)
            with safe_open(str(path), framework="pt") as f:
                metadata = dict(f.metadata() or {})
        except (CorruptSubject, SafetensorError, OSError) as exc:
            raise AuditError(f"{path}: not a readable safetensors file ({exc}); save it again") from exc
        return ModelFile(path, fmt, digest, tensors=tensors, metadata=metadata)
    if fmt == TORCHSCRIPT:
        try:
            with warnings.catch_warnings():  # torch 2.9+ calls TorchScript deprecated; it still loads
                warnings.simplefilter("ignore", DeprecationWarning)
                script = torch.jit.load(str(path), map_location="cpu")
        except Exception as exc:  # TorchScript raises RuntimeError and others
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise AuditError(f"{path}: not a loadable TorchScript archive ({first})") from exc
        return ModelFile(path, fmt, digest, script=script)
    try:
        with warnings.catch_warnings():  # e.g. "pickle protocol 4 was not torch.load's default"
            warnings.simplefilter("ignore", UserWarning)
            obj = torch.load(str(path), map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        raise _refusal(path) from exc
    except (RuntimeError, EOFError, OSError, ValueError) as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise AuditError(f"{path}: not a readable torch.save file ({first})") from exc
    return ModelFile(path, fmt, digest, tensors=_state_dict(obj, path))


def resolve_arch(name: str) -> Callable[..., nn.Module]:
    """A registered architecture by name, or `module:attr` (a class or factory the user wrote)."""
    if ":" in name:
        module, _, attr = name.partition(":")
        try:
            factory = getattr(importlib.import_module(module), attr)
        except (ImportError, AttributeError) as exc:
            raise AuditError(f"--arch {name}: cannot import {attr!r} from {module!r} ({exc})") from exc
        if not callable(factory):
            raise AuditError(f"--arch {name}: {attr!r} is not a class or function")
        return factory
    try:
        return get("arch", name)
    except UnknownName as exc:
        raise AuditError(f"--arch {name}: {exc}") from exc


def _call_with(factory: Callable[..., nn.Module], params: Mapping[str, Any], arch: str) -> nn.Module:
    """Build the module, passing only the size parameters its signature takes."""
    try:
        sig = inspect.signature(factory)
        takes_all = any(p.kind is p.VAR_KEYWORD for p in sig.parameters.values())
        kwargs = {k: v for k, v in params.items() if takes_all or k in sig.parameters}
    except (TypeError, ValueError):  # no signature to read (a builtin): pass nothing
        kwargs = {}
    try:
        module = factory(**kwargs)
    except Exception as exc:
        raise AuditError(f"--arch {arch}: cannot build it with {kwargs} ({type(exc).__name__}: {exc})") from exc
    if not isinstance(module, nn.Module):
        raise AuditError(f"--arch {arch}: returned a {type(module).__name__}, not a torch module")
    return module


def _classes_error(path: Path, model_k: int, data_k: int) -> AuditError:
    return AuditError(
        f"{path}: the model has {model_k} outputs but the data has {data_k} classes (labels "
        f"0..{data_k - 1}); give data labelled with the model's own classes 0..{model_k - 1}"
    )


def _shape_error(path: Path, shape: tuple[int, ...], why: str) -> AuditError:
    c, h, w = shape
    return AuditError(
        f"{path}: the model does not take the data's {c}x{h}x{w} inputs ({why}); give data of "
        "the size and channels it was trained on"
    )


def _load_state(model: nn.Module, tensors: Mapping[str, torch.Tensor], path: Path, arch: str,
                shape: tuple[int, int, int], data_k: int) -> None:
    """load_state_dict(strict=True), with a failure read as what it means: other
    layers (the wrong --arch), another head size (classes) or another input size."""
    own = model.state_dict()
    missing = sorted(set(own) - set(tensors))
    unexpected = sorted(set(tensors) - set(own))
    if missing or unexpected:
        detail = f"missing {missing[:2]}" if missing else f"unexpected {unexpected[:2]}"
        raise AuditError(
            f"{path}: its weights do not fit architecture {arch!r} ({detail}); pass the --arch "
            f"the model was trained with (registered: {', '.join(names('arch'))}, or module:Class)"
        )
    wrong = [k for k in own if tuple(own[k].shape) != tuple(tensors[k].shape)]
    if wrong:
        try:
            head = {id(p) for p in last_linear(model).parameters()}
        except ValueError:  # no Linear layer: no head to read
            head = set()
        head_keys = {n for n, p in model.named_parameters() if id(p) in head}
        if set(wrong) <= head_keys:
            model_k = int(tensors[sorted(head_keys)[0]].shape[0])
            raise _classes_error(path, model_k, data_k)
        k = wrong[0]
        raise _shape_error(path, shape, f"{k} is {tuple(tensors[k].shape)} in the file, "
                                        f"{tuple(own[k].shape)} for such inputs")
    model.load_state_dict(tensors, strict=True)


def _check_fit(model: nn.Module, path: Path, shape: tuple[int, int, int], data_k: int) -> int:
    """Run two blank inputs through the model: it must take them and give (2, K)."""
    try:
        with torch.no_grad():
            out = model(torch.full((2, *shape), 0.5))
    except Exception as exc:  # a wrong input size surfaces as any of several errors
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise _shape_error(path, shape, first[:200]) from exc
    if not isinstance(out, torch.Tensor) or out.ndim != 2 or out.shape[0] != 2:
        got = tuple(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__
        raise AuditError(f"{path}: the model returns {got} for 2 inputs; it must return (N, classes) logits")
    if out.shape[1] != data_k:
        raise _classes_error(path, int(out.shape[1]), data_k)
    return int(out.shape[1])


def fit_model(file: ModelFile, arch: str | None, shape: tuple[int, int, int], num_classes: int) -> LoadedModel:
    """Build the module a file describes for data of this shape and class count,
    checking that it takes those inputs and gives that many outputs."""
    path = file.path
    params: dict[str, Any] = {}
    if file.format == TORCHSCRIPT:
        assert file.script is not None
        module: nn.Module = Scripted(file.script)
        arch_name = "torchscript"
    else:
        assert file.tensors is not None
        arch_name = arch or file.metadata.get("arch", "")
        if not arch_name or arch_name == "torchscript":
            raise AuditError(
                f"{path}: holds weights but no architecture; pass --arch NAME (registered: "
                f"{', '.join(names('arch'))}) or --arch module:Class"
            )
        meta_shape = file.input_shape_hint()
        if meta_shape is not None and meta_shape != shape:
            raise _shape_error(path, shape, f"its metadata says {'x'.join(map(str, meta_shape))}")
        params = {"num_classes": num_classes, "in_channels": shape[0], "size": shape[1]}
        if arch is None and file.metadata.get("arch_params"):
            try:
                params = dict(json.loads(file.metadata["arch_params"]))
            except (ValueError, TypeError) as exc:
                raise AuditError(f"{path}: its arch_params metadata is not JSON ({exc})") from exc
            if int(params.get("num_classes", num_classes)) != num_classes:
                raise _classes_error(path, int(params["num_classes"]), num_classes)
        module = _call_with(resolve_arch(arch_name), params, arch_name)
        _load_state(module, file.tensors, path, arch_name, shape, num_classes)
    module = module.float().eval()
    k = _check_fit(module, path, shape, num_classes)
    return LoadedModel(module=module, path=path, format=file.format, arch=arch_name,
                       arch_params=params, num_classes=k, input_shape=shape, sha256=file.sha256,
                       weights=weights_digest(module))


def weights_digest(module: nn.Module) -> str:
    """sha256 of the weights by name, so one model audits alike from any of its files."""
    h = hashlib.sha256()
    for name, t in sorted(plain_state(module).items()):
        h.update(f"{name}\0{t.dtype}\0{tuple(t.shape)}\0".encode())
        h.update(t.numpy().tobytes() if t.dtype != torch.bfloat16 else t.float().numpy().tobytes())
    return h.hexdigest()


def plain_state(module: nn.Module) -> dict[str, torch.Tensor]:
    """The weights under the names the user's own model uses (a TorchScript model's
    without the wrapper's prefix), contiguous on the CPU, as safetensors wants them."""
    inner = module.script if isinstance(module, Scripted) else module
    return {k: v.detach().cpu().contiguous().clone() for k, v in inner.state_dict().items()}


def save_model(module: nn.Module, loaded: LoadedModel, path: Path, note: str) -> list[Path]:
    """Write a repaired model as safetensors, with metadata that lets `samecurve audit`
    (and `fit_model`) rebuild it without --arch; a TorchScript model is also saved as
    TorchScript, since its architecture lives only in its own archive."""
    meta = {
        "format": "samecurve-audit",
        "arch": loaded.arch,
        "arch_params": json.dumps(dict(loaded.arch_params)),
        "input_shape": json.dumps(list(loaded.input_shape)),
        "num_classes": str(loaded.num_classes),
        "repaired_by": note,
        "source_sha256": loaded.sha256,
    }
    save_file(plain_state(module), str(path), metadata=meta)
    written = [path]
    if isinstance(module, Scripted):
        script_path = path.with_suffix(".torchscript.pt")
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)
            torch.jit.save(module.script, str(script_path))
        written.append(script_path)
    return written
