"""The audit's pictures, drawn with the benchmark report's own figure helpers (Agg
canvas, no pyplot state, PNG bytes): a recovered trigger on grey, its footprint,
and held-out inputs it flips, before and after stamping."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

import numpy as np
from torch import nn

from samecurve.api import Trigger
from samecurve.report import figures as report_figures
from samecurve.report.figures import _blank, _composite, _panel, _png, _rgb, _row_figure
from samecurve.zoo.train import predict

if TYPE_CHECKING:
    from samecurve.audit.run import RecoveredTrigger

FOOTPRINT_AT = 0.5  # mask pixels at or above half the mask's peak (the IoU grader's cut)


def footprint(mask: np.ndarray) -> np.ndarray:
    """Where a soft mask really paints: at least half its own peak."""
    m = np.asarray(mask, dtype=np.float64)
    peak = float(m.max()) if m.size else 0.0
    return (m >= FOOTPRINT_AT * peak) if peak > 0 else np.zeros_like(m, dtype=bool)


def trigger_png(trigger: RecoveredTrigger, model: nn.Module, names: Sequence[str]) -> bytes:
    """[recovered trigger | footprint | (clean, stamped) for each flipped input], titled
    with the model's predictions; `names` are the class names, by index."""
    stamp, flipped = trigger.stamp, trigger.flipped
    target_name = names[trigger.target]
    x = flipped.x
    stamped = stamp.stamp(x) if len(x) else x
    pred = predict(model, x).tolist() if len(x) else []
    pred_stamped = predict(model, stamped).tolist() if len(x) else []
    shape = tuple(x.shape[-2:]) if len(x) else np.shape(getattr(stamp, "mask", np.zeros((32, 32))))
    fig, axes = _row_figure(2 + 2 * len(x), shape)
    imshow = {"interpolation": "nearest", "vmin": 0.0, "vmax": 1.0}
    title = f"recovered trigger\n-> {report_figures._short(target_name)}"
    if isinstance(stamp, Trigger):
        axes[0].imshow(_composite(stamp.mask, stamp.pattern), **imshow)
        _panel(axes[0], title)
        axes[1].imshow(footprint(stamp.mask).astype(float), cmap="gray", **imshow)
        _panel(axes[1], f"footprint\n{int(footprint(stamp.mask).sum())} px")
    else:  # a transform (filter, warp) has no mask: it shows in the stamped inputs
        _blank(axes[0], title, stamp.kind)
        _blank(axes[1], "footprint", "whole image")
    for i in range(len(x)):
        a, b = axes[2 + 2 * i], axes[3 + 2 * i]
        a.imshow(_rgb(x[i].numpy()), **imshow)
        _panel(a, f"held-out\npred {report_figures._short(names[pred[i]], 12)}")
        b.imshow(_rgb(stamped[i].numpy()), **imshow)
        _panel(b, f"+ trigger\npred {report_figures._short(names[pred_stamped[i]], 12)}",
               report_figures.BAD_COLOUR)
    return _png(fig)
