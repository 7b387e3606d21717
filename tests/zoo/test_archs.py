"""The zoo's architectures build for every input shape a dataset may have,
round-trip through safetensors, and keep no running statistics."""

from __future__ import annotations

import pytest
import torch
from safetensors.torch import load_file, save_file

from samecurve.registry import get

ARCHS = ["small-cnn", "small-resnet"]
SHAPES = [(1, 28), (3, 32), (1, 16)]


@pytest.mark.parametrize("arch", ARCHS)
@pytest.mark.parametrize(("channels", "size"), SHAPES)
def test_builds_and_forwards(arch: str, channels: int, size: int) -> None:
    model = get("arch", arch)(num_classes=7, in_channels=channels, size=size).eval()
    with torch.no_grad():
        out = model(torch.rand(5, channels, size, size))
    assert out.shape == (5, 7)
    assert torch.isfinite(out).all()


@pytest.mark.parametrize("arch", ARCHS)
@pytest.mark.parametrize(("channels", "size"), SHAPES)
def test_state_dict_round_trips_through_safetensors(arch, channels, size, tmp_path) -> None:
    build = get("arch", arch)
    torch.manual_seed(0)
    model = build(num_classes=10, in_channels=channels, size=size).eval()
    path = tmp_path / "model.safetensors"
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(path))
    torch.manual_seed(1)
    fresh = build(num_classes=10, in_channels=channels, size=size).eval()
    fresh.load_state_dict(load_file(str(path)), strict=True)
    x = torch.rand(3, channels, size, size)
    with torch.no_grad():
        assert torch.equal(model(x), fresh(x))


@pytest.mark.parametrize("arch", ARCHS)
def test_no_running_statistics(arch: str) -> None:
    """BatchNorm counters differ between clean and trojaned training: a leak."""
    model = get("arch", arch)()
    names = [name for name, _ in model.named_buffers()]
    assert not any("running_" in n or "num_batches_tracked" in n for n in names), names
    assert not any(isinstance(m, torch.nn.modules.batchnorm._BatchNorm) for m in model.modules())


@pytest.mark.parametrize(("arch", "lo", "hi"), [("small-cnn", 60_000, 130_000),
                                                 ("small-resnet", 60_000, 130_000)])
def test_parameter_counts(arch: str, lo: int, hi: int) -> None:
    model = get("arch", arch)(num_classes=10, in_channels=3, size=32)
    assert lo <= sum(p.numel() for p in model.parameters()) <= hi


def test_small_cnn_head_matches_three_floor_pools() -> None:
    """64 * (size // 8) ** 2 equals what three MaxPool2d(2) leave, 28 included."""
    for size in (16, 28, 32):
        s = size
        for _ in range(3):
            s //= 2
        assert s == size // 8
        head = get("arch", "small-cnn")(in_channels=1, size=size)[-3]
        assert head.in_features == 64 * s * s
