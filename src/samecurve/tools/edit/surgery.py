"""Model surgery the pruning and latent tools share, for any `nn.Sequential`
model (every image zoo architecture is one): find the feature layers, read their
channel activity, and insert a fixed channel mask after one of them. A model
that names its residual-stream taps (`residual_layers()`, the text track's
TextClassifier) has those as its feature layers, and `capture` and `perturbed`
hook them by name; pruning stays with `nn.Sequential` models."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import torch
from torch import nn


class ChannelMask(nn.Module):
    """Multiplies each channel of its input by a fixed 0/1 mask (a buffer, never trained):
    pruned channels stay pruned through fine-tuning."""

    def __init__(self, keep: torch.Tensor) -> None:
        super().__init__()
        self.register_buffer("keep", keep.detach().float().clone())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.keep.view(1, -1, *([1] * (x.dim() - 2)))


def _sequential(model: nn.Module) -> nn.Sequential:
    if not isinstance(model, nn.Sequential):
        raise TypeError(f"this tool edits nn.Sequential models (every zoo architecture); got "
                        f"{type(model).__name__}")
    return model


def residual_taps(model: nn.Module) -> list[str] | None:
    """The names of a model's residual-stream taps, input to output, if it has them
    (`residual_layers()`); None for a plain `nn.Sequential`."""
    taps = getattr(model, "residual_layers", None)
    return list(taps()) if callable(taps) else None


def _layer(model: nn.Module, name: str) -> nn.Module:
    """A residual tap by its dotted name, or a `nn.Sequential`'s top-level child."""
    if residual_taps(model) is not None:
        return model.get_submodule(name)
    return _sequential(model)._modules[name]


@torch.no_grad()
def output_shapes(model: nn.Module, input_shape: tuple[int, ...]) -> dict[str, tuple[int, ...]]:
    """Each top-level child's output shape (without the batch), from one zero input."""
    seq = _sequential(model)
    device = next(seq.parameters()).device
    out: dict[str, tuple[int, ...]] = {}
    x = torch.zeros(1, *input_shape, device=device)
    for name, child in seq.named_children():
        x = child(x)
        out[name] = tuple(x.shape[1:])
    return out


def feature_layers(model: nn.Module, input_shape: tuple[int, ...]) -> list[str]:
    """Names of the top-level children that end a stage: for each spatial size of the
    feature maps (larger than 1x1), the last child that outputs it; input order.
    A model with residual taps: the taps."""
    taps = residual_taps(model)
    if taps is not None:
        return taps
    by_size: dict[tuple[int, ...], str] = {}
    for name, shape in output_shapes(model, input_shape).items():
        if len(shape) == 3 and shape[1] * shape[2] > 1 and name != _first(model):
            by_size[shape[1:]] = name
    return sorted(by_size.values(), key=list(dict(model.named_children())).index)


def _first(model: nn.Module) -> str:
    return next(iter(dict(model.named_children())))


def last_feature_layer(model: nn.Module, input_shape: tuple[int, ...]) -> str:
    """The last child with a channel map: its channels are what the head reads (the
    last conv layer's neurons, the ones fine-pruning prunes)."""
    names = [n for n, s in output_shapes(model, input_shape).items() if len(s) == 3]
    if not names:
        raise ValueError("this model has no convolutional feature map to prune")
    return names[-1]


def insert_channel_mask(model: nn.Module, layer: str, keep: torch.Tensor) -> None:
    """Replace child `layer` by (child, ChannelMask(keep)), in place; masks compose."""
    seq = _sequential(model)
    child = seq._modules[layer]
    mask = ChannelMask(keep.to(next(seq.parameters()).device))
    seq._modules[layer] = nn.Sequential(child, mask)


@contextmanager
def capture(model: nn.Module, layers: list[str]) -> Iterator[dict[str, torch.Tensor]]:
    """Inside the block, `grabbed[name]` is the latest output of each named child
    (or residual tap)."""
    grabbed: dict[str, torch.Tensor] = {}
    handles = [
        _layer(model, n).register_forward_hook(lambda _m, _i, o, n=n: grabbed.__setitem__(n, o))
        for n in layers
    ]
    try:
        yield grabbed
    finally:
        for h in handles:
            h.remove()


@contextmanager
def perturbed(model: nn.Module, layer: str, delta: dict[str, torch.Tensor]) -> Iterator[None]:
    """Inside the block, child (or residual tap) `layer`'s output has `delta["value"]`
    added (when set): the latent adversary's foothold."""
    def add(_m: nn.Module, _i: tuple, out: torch.Tensor) -> torch.Tensor:
        d = delta.get("value")
        return out if d is None else out + d

    handle = _layer(model, layer).register_forward_hook(add)
    try:
        yield
    finally:
        handle.remove()


@torch.no_grad()
def channel_activity(model: nn.Module, layer: str, x: torch.Tensor, batch_size: int = 256) -> torch.Tensor:
    """Mean activation of each channel of child `layer` over the inputs x."""
    sums = None
    with capture(model, [layer]) as grabbed:
        for i in range(0, len(x), batch_size):
            model(x[i : i + batch_size])
            a = grabbed[layer].flatten(2).mean(2).sum(0)
            sums = a if sums is None else sums + a
    assert sums is not None, "no inputs"
    return sums / len(x)
