"""Loading a user's model: every supported format gives the same function, and
everything else (a pickle that would run code, a file that is no model, a model
that does not fit the data) is refused with one line before anything runs."""

from __future__ import annotations

import pickle
import struct
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import save_file

from samecurve.audit import AuditError
from samecurve.audit.data import load_data
from samecurve.audit.load import (
    SAFETENSORS,
    STATE_DICT,
    TORCHSCRIPT,
    Scripted,
    file_format,
    fit_model,
    pickle_globals,
    read_model_file,
    save_model,
)
from samecurve.zoo.archs import small_cnn

SHAPE = (3, 32, 32)
pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")  # torch.jit in the tests


class Evil:
    """A pickle payload: loading it would create `path` (a harmless stand-in for code)."""

    def __init__(self, path: Path) -> None:
        self.path = str(path)

    def __reduce__(self):
        return (open, (self.path, "w"))


@pytest.fixture(scope="module")
def net() -> torch.nn.Module:
    torch.manual_seed(0)
    return small_cnn().eval()


def _state(net: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.contiguous() for k, v in net.state_dict().items()}


def _same_function(loaded: torch.nn.Module, net: torch.nn.Module) -> bool:
    x = torch.rand(4, *SHAPE, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        return torch.allclose(loaded(x), net(x), atol=1e-6)


def test_every_format_loads_the_same_model(net, tmp_path: Path) -> None:
    save_file(_state(net), str(tmp_path / "m.safetensors"))
    torch.save(net.state_dict(), tmp_path / "m.pt")
    torch.save({"epoch": 3, "state_dict": net.state_dict()}, tmp_path / "ckpt.pt")
    torch.jit.save(torch.jit.script(net), tmp_path / "m.ts")
    loaded = {}
    for name, fmt in [("m.safetensors", SAFETENSORS), ("m.pt", STATE_DICT),
                      ("ckpt.pt", STATE_DICT), ("m.ts", TORCHSCRIPT)]:
        assert file_format(tmp_path / name) == fmt
        file = read_model_file(tmp_path / name)
        arch = None if fmt == TORCHSCRIPT else "small-cnn"
        loaded[name] = fit_model(file, arch, SHAPE, 10)
        assert _same_function(loaded[name].module, net), name
        assert loaded[name].num_classes == 10 and loaded[name].input_shape == SHAPE
    # The weights' digest (the audit's seed) does not depend on the file format.
    assert len({m.weights for m in loaded.values()}) == 1
    assert len({m.sha256 for m in loaded.values()}) == 4
    ts = loaded["m.ts"].module
    assert isinstance(ts, Scripted)  # hooks attach to the wrapper, not the ScriptModule
    ts.register_forward_pre_hook(lambda _m, _a: None).remove()


def test_a_module_class_of_the_users_own(net, tmp_path: Path, monkeypatch) -> None:
    (tmp_path / "my_arch.py").write_text(
        "from samecurve.zoo.archs import small_cnn\n"
        "class Net:\n"
        "    def __new__(cls, num_classes=10, in_channels=3, size=32):\n"
        "        return small_cnn(num_classes, in_channels, size)\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    save_file(_state(net), str(tmp_path / "m.safetensors"))
    loaded = fit_model(read_model_file(tmp_path / "m.safetensors"), "my_arch:Net", SHAPE, 10)
    assert _same_function(loaded.module, net) and loaded.arch == "my_arch:Net"
    with pytest.raises(AuditError, match="cannot import 'Nope'"):
        fit_model(read_model_file(tmp_path / "m.safetensors"), "my_arch:Nope", SHAPE, 10)


def test_a_repaired_model_reloads_without_arch(net, tmp_path: Path) -> None:
    save_file(_state(net), str(tmp_path / "m.safetensors"))
    loaded = fit_model(read_model_file(tmp_path / "m.safetensors"), "small-cnn", SHAPE, 10)
    written = save_model(loaded.module, loaded, tmp_path / "repaired.safetensors", "finetune")
    again = read_model_file(written[0])
    assert again.metadata["arch"] == "small-cnn" and again.input_shape_hint() == SHAPE
    assert _same_function(fit_model(again, None, SHAPE, 10).module, net)
    with pytest.raises(AuditError, match="does not take the data's 1x32x32"):
        fit_model(again, None, (1, 32, 32), 10)  # its metadata records 3x32x32


@pytest.mark.parametrize("container", ["bare pickle", "torch.save zip"])
def test_a_pickle_that_would_run_code_is_refused_not_run(container: str, tmp_path: Path) -> None:
    target = tmp_path / "pwned"
    bad = tmp_path / "model.pt"
    if container == "bare pickle":
        bad.write_bytes(pickle.dumps(Evil(target), protocol=4))
    else:
        torch.save({"weights": Evil(target)}, bad)
    assert not target.exists()
    with pytest.raises(AuditError) as err:
        read_model_file(bad)
    message = str(err.value)
    assert not target.exists()  # refused before anything ran
    assert message.startswith("refused:") and "io.open" in message and "\n" not in message
    assert "io.open" in pickle_globals(bad)


def test_a_whole_pickled_module_is_refused(net, tmp_path: Path) -> None:
    torch.save(net, tmp_path / "whole.pt")
    with pytest.raises(AuditError, match=r"^refused: .*torch\.nn\.modules\.container\.Sequential"):
        read_model_file(tmp_path / "whole.pt")


@pytest.mark.parametrize("content", [b"", b"hello, not a model\n", bytes(range(256)) * 4])
def test_a_file_that_is_no_model(content: bytes, tmp_path: Path) -> None:
    path = tmp_path / "model.bin"
    path.write_bytes(content)
    with pytest.raises(AuditError, match="not a model file"):
        read_model_file(path)


def test_weights_need_an_architecture(net, tmp_path: Path) -> None:
    save_file(_state(net), str(tmp_path / "m.safetensors"))
    file = read_model_file(tmp_path / "m.safetensors")
    with pytest.raises(AuditError, match="no architecture; pass --arch"):
        fit_model(file, None, SHAPE, 10)
    with pytest.raises(AuditError, match="do not fit architecture 'small-resnet'"):
        fit_model(file, "small-resnet", SHAPE, 10)
    with pytest.raises(AuditError, match="unknown arch 'small-cn'; did you mean 'small-cnn'"):
        fit_model(file, "small-cn", SHAPE, 10)


def test_inputs_and_classes_must_match_the_data(net, tmp_path: Path) -> None:
    save_file(_state(net), str(tmp_path / "m.safetensors"))
    torch.jit.save(torch.jit.script(net), tmp_path / "m.ts")
    weights, script = read_model_file(tmp_path / "m.safetensors"), read_model_file(tmp_path / "m.ts")
    for file, arch in [(weights, "small-cnn"), (script, None)]:
        with pytest.raises(AuditError, match="does not take the data's 1x32x32 inputs"):
            fit_model(file, arch, (1, 32, 32), 10)
        with pytest.raises(AuditError, match="does not take the data's 3x16x16 inputs"):
            fit_model(file, arch, (3, 16, 16), 10)
        with pytest.raises(AuditError, match="the model has 10 outputs but the data has 5 classes"):
            fit_model(file, arch, SHAPE, 5)


def test_data_through_the_zoo_loaders(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    x, y = rng.integers(0, 256, (200, 32, 32, 3), dtype=np.uint8), np.arange(200) % 4
    np.savez(tmp_path / "d.npz", x=x, y=y)
    data = load_data(str(tmp_path / "d.npz"))
    assert (data.loader, data.num_classes, data.input_shape, len(data)) == ("npz", 4, SHAPE, 200)
    tools, held = data.tool_split(1000), data.eval_split(1000)
    assert len(tools) == 140 and len(held) == 60  # the 70% pool, and the 30% no tool sees
    seen = {t.numpy().tobytes() for t in tools.x}
    assert not any(h.numpy().tobytes() in seen for h in held.x)
    for bad, message in [(tmp_path / "none.npz", "no such file"), (tmp_path / "d.csv", "cannot tell")]:
        if bad.suffix == ".csv":
            bad.write_text("a,b\n")
        with pytest.raises(AuditError, match=message):
            load_data(str(bad))


def _idx(path: Path, arr: np.ndarray) -> Path:
    """An uncompressed IDX file of uint8 (type code 0x08), as MNIST ships them."""
    path.write_bytes(struct.pack(">BBBB", 0, 0, 0x08, arr.ndim) + struct.pack(f">{arr.ndim}i", *arr.shape)
                     + arr.astype(np.uint8).tobytes())
    return path


def test_idx_and_image_folder_data(tmp_path: Path) -> None:
    from PIL import Image

    rng = np.random.default_rng(0)
    images = _idx(tmp_path / "train-images-idx3-ubyte", rng.integers(0, 256, (100, 28, 28)))
    labels = _idx(tmp_path / "train-labels-idx1-ubyte", np.arange(100) % 10)
    for spec in (f"{images},{labels}", str(images)):  # the labels file beside it is found
        data = load_data(spec)
        assert (data.loader, data.input_shape, data.num_classes) == ("idx", (1, 28, 28), 10)
    (tmp_path / "lonely-idx3-ubyte").write_bytes(images.read_bytes())
    with pytest.raises(AuditError, match="no labels file found beside it"):
        load_data(str(tmp_path / "lonely-idx3-ubyte"))
    root = tmp_path / "photos"
    for name in ("cat", "dog"):
        (root / name).mkdir(parents=True)
        for i in range(10):
            Image.fromarray(rng.integers(0, 256, (40, 50, 3), dtype=np.uint8)).save(root / name / f"{i}.png")
    data = load_data(str(root), shape_hint=(3, 16, 16))  # resized to the model's recorded input
    assert (data.loader, data.input_shape, data.class_names) == ("imagefolder", (3, 16, 16), ("cat", "dog"))
    assert data.name(1) == "1 (dog)"
