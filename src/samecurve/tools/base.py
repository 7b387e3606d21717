"""What every tool shares: hyperparameters as a frozen dataclass (so the
constructor can do no work), declared needs and answers, and small helpers."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any, ClassVar

import numpy as np
import torch

from samecurve.api import ANSWERS, MODALITIES, NEEDS, CaseView


@dataclass(frozen=True)
class ToolBase:
    """Subclasses are frozen dataclasses whose fields are their hyperparameters."""

    name: ClassVar[str]
    kind: ClassVar[str] = "interpretability"
    needs: ClassVar[frozenset[str]] = frozenset()
    answers: ClassVar[frozenset[str]] = frozenset()
    # Trojan families outside the threat model the algorithm was published for (a
    # trigger synthesiser that stamps one small mask cannot express a colour filter).
    # The tool still runs and is scored there; the report marks those rows.
    blind_to: ClassVar[frozenset[str]] = frozenset()
    # The task verbs it implements; None: read from its methods (api.tool_verbs).
    verbs: ClassVar[frozenset[str] | None] = None
    # The input modalities it handles (api.MODALITIES): images unless it says so.
    modalities: ClassVar[frozenset[str]] = frozenset({"image"})

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        unknown = (cls.needs - NEEDS) | (cls.answers - ANSWERS) | (cls.modalities - set(MODALITIES))
        if unknown:
            raise TypeError(f"{cls.__name__} declares unknown needs/answers {sorted(unknown)}")

    def params(self) -> dict[str, Any]:
        return asdict(self)


# Families whose trigger is no small region stamped onto any input: what mask-and-
# pattern synthesis and patch search are blind to.
NOT_A_PATCH = frozenset({"blend", "style", "warp", "source-specific"})


def clean_inputs(view: CaseView) -> torch.Tensor:
    """The trusted clean inputs of a case, on the case's device."""
    if view.clean is None:
        raise RuntimeError("this tool must declare 'clean_data' in its needs to see clean inputs")
    return view.clean.x.to(view.device)


def normalise_maps(maps: np.ndarray) -> np.ndarray:
    """(N, C, H, W) or (N, H, W) attributions -> (N, H, W) magnitudes."""
    maps = np.abs(np.asarray(maps, dtype=np.float32))
    return maps.sum(1) if maps.ndim == 4 else maps


def prior_region(view: CaseView) -> np.ndarray | None:
    """(H, W) in [0, 1]: where an earlier pipeline stage located the trigger, scaled
    to a peak of 1; None when there is no earlier stage or it found no place."""
    if view.prior is None or view.prior.trigger is None:
        return None
    trig = view.prior.trigger
    region = np.asarray(getattr(trig, "mask", trig.footprint), dtype=np.float32)
    peak = float(region.max())
    return region / peak if peak > 0 else None


def prior_pixel_cost(view: CaseView, discount: float) -> torch.Tensor:
    """(1, H, W) per-pixel weight of a trigger mask's size: 1 everywhere, less by
    `discount` inside a prior region, so synthesis may spend its mask there first."""
    _, h, w = view.input_shape
    cost = torch.ones(1, h, w, device=view.device)
    region = prior_region(view)
    if region is not None:
        cost = cost - discount * torch.as_tensor(region, device=view.device)
    return cost
