"""Attribution maps graded against the true trigger footprint.

Conventions: maps are (N, H, W) or (N, C, H, W); sign carries no location
information, so the magnitude |map| is used, summed over channels for
(N, C, H, W). The footprint is binarised (> 0 = touched, as
`Trigger.footprint`). Metrics are NaN when the footprint cannot be located
(all or none of the image, e.g. a whole-image blend) or there are no maps.
"""

from __future__ import annotations

import numpy as np
import torch

from samecurve.metrics.trigger import pearson_rows

__all__ = ["attribution_correlation", "pointing_game"]


def _prepare(
    maps: np.ndarray | torch.Tensor, footprint: np.ndarray | torch.Tensor
) -> tuple[np.ndarray, np.ndarray]:
    """Return |maps| as (N, H*W) and the footprint as bool (N, H*W): one (H, W)
    footprint for every input, or one per input (N, H, W) for triggers that land
    in a different place each time."""
    if isinstance(maps, torch.Tensor):
        maps = maps.detach().cpu().numpy()
    if isinstance(footprint, torch.Tensor):
        footprint = footprint.detach().cpu().numpy()
    m = np.abs(np.asarray(maps, dtype=float))
    fp = np.asarray(footprint)
    if fp.ndim not in (2, 3):
        raise ValueError(f"footprint must be (H, W) or (N, H, W); got shape {fp.shape}")
    if m.ndim == 4:
        m = m.sum(axis=1)
    if m.ndim != 3:
        raise ValueError(f"maps must be (N, H, W) or (N, C, H, W); got shape {np.shape(maps)}")
    if m.shape[1:] != fp.shape[-2:] or (fp.ndim == 3 and fp.shape[0] != m.shape[0]):
        raise ValueError(f"maps {m.shape} and footprint {fp.shape} do not match")
    if not np.all(np.isfinite(m)):
        raise ValueError("attribution maps contain NaN or infinite values")
    fp = np.broadcast_to(fp > 0, m.shape)
    n, pixels = m.shape[0], m.shape[1] * m.shape[2]
    return m.reshape(n, pixels), fp.reshape(n, pixels)


def _locatable(fp: np.ndarray) -> np.ndarray:
    """Rows whose footprint is part of the image, not none or all of it."""
    area = fp.sum(axis=1)
    return (area > 0) & (area < fp.shape[1])


def attribution_correlation(maps: np.ndarray, footprint: np.ndarray) -> float:
    """Mean over inputs of Pearson(|map_i|, footprint). A constant map scores 0.0
    (it points nowhere). NaN if the footprint is constant or N == 0."""
    m, fp = _prepare(maps, footprint)
    ok = _locatable(fp)
    if not ok.any():
        return float("nan")
    return float(np.mean(pearson_rows(m[ok], fp[ok].astype(float))))


def pointing_game(maps: np.ndarray, footprint: np.ndarray) -> float:
    """Mean over inputs of the hit rate of the arg-max of |map| in the footprint.

    Ties are split fairly: the hit for one map is the share of its maximal
    pixels that lie inside the footprint, so a uniform map scores the
    footprint's area fraction instead of whatever pixel comes first.
    NaN if the footprint is all or none of the image, or N == 0."""
    m, fp = _prepare(maps, footprint)
    ok = _locatable(fp)
    if not ok.any():
        return float("nan")
    m, fp = m[ok], fp[ok]
    at_max = m == m.max(axis=1, keepdims=True)
    hits = (at_max & fp).sum(axis=1) / at_max.sum(axis=1)
    return float(np.mean(hits))
