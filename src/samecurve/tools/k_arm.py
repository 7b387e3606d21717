"""K-Arm (Shen et al. 2021, "Backdoor Scanning for Deep Neural Networks through
K-Arm Optimization"): Neural-Cleanse-style trigger inversion in which the
candidate labels are the arms of a multi-armed bandit, so the optimisation
budget goes to the labels that look like targets instead of being split evenly.

1. Pre-screening: a short warm-up optimises a mask and pattern for every label
   at once (batched); the `arms` labels with the most promising masks (`promise`:
   small, or shrinking fast) are kept. (The paper's other screen, labels often
   among the top logits of clean inputs, ranked the planted target 4th and 9th
   of 10 on the tiny zoo's patch subjects. Raw mask size after the warm-up did
   not do much better: a target's mask often collapses onto the trigger late.)
2. Each round an epsilon-greedy scheduler picks one arm (`choose_arm`) and
   spends `steps_per_pull` optimisation steps on it alone, with Neural Cleanse's
   adaptive mask cost per arm.
3. The arms ordered by mask norm (those reaching the attack threshold first)
   are the suspected targets; the best arm's mask and pattern are the trigger;
   how many times smaller its mask is than the other arms' (median) gives the
   trojan probability."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch
from torch.nn import functional as F

from samecurve.api import CaseView, Finding, Trigger
from samecurve.registry import register
from samecurve.tools.base import NOT_A_PATCH, ToolBase, clean_inputs
from samecurve.tools.neural_cleanse import anomaly_indices


def promise(best_norm: float, log_fall: float, lookahead: float) -> float:
    """The log mask norm an arm promises `lookahead` pulls from now, if its log norm
    keeps falling at its recent per-pull rate (a rise counts as no fall)."""
    return float(np.log(best_norm) - lookahead * max(log_fall, 0.0))


def choose_arm(best_norms: np.ndarray, log_falls: np.ndarray, loss_falls: np.ndarray,
               epsilon: float, lookahead: float, rng: np.random.Generator) -> int:
    """K-Arm's epsilon-greedy scheduler. With probability epsilon, any arm at random.
    Otherwise, among arms that have reached the attack threshold (finite
    `best_norms`), the one with the most promising mask (`promise`: smallest now,
    or shrinking fast enough to be smallest soon, which keeps an early leader from
    starving a target whose mask collapses late); while none has reached it, the
    arm whose loss is falling fastest."""
    if rng.random() < epsilon:
        return int(rng.integers(len(best_norms)))
    best_norms = np.asarray(best_norms, dtype=float)
    reached = np.isfinite(best_norms)
    if reached.any():
        scores = [promise(n, f, lookahead) if ok else np.inf
                  for n, f, ok in zip(best_norms, log_falls, reached, strict=True)]
        return int(np.argmin(scores))
    return int(np.argmax(np.asarray(loss_falls, dtype=float)))


def ratio_to_probability(ratio: float, threshold: float = 2.0, slope: float = 4.0) -> float:
    """A logistic read of how many times smaller the best arm's mask is than the
    others' (in log space): 0.5 at `threshold`."""
    return float(1.0 / (1.0 + np.exp(-slope * (np.log(max(ratio, 1e-8)) - np.log(threshold)))))


def per_pull_fall(history: list[float], window: int) -> float:
    """How much a series fell per pull over its last `window` pulls; +inf when it
    has fewer than two points (an arm not yet measured is worth a pull)."""
    if len(history) < 2:
        return float("inf")
    span = min(window, len(history) - 1)
    return (history[-1 - span] - history[-1]) / span


@dataclass
class _Arm:
    """One label's trigger under optimisation and its bookkeeping."""

    label: int
    mask_logit: torch.Tensor
    pattern_logit: torch.Tensor
    opt: torch.optim.Optimizer
    cost: float
    up: int = 0
    down: int = 0
    pulls: int = 0
    best_norm: float = float("inf")
    best_mask: torch.Tensor | None = None
    best_pattern: torch.Tensor | None = None
    log_norms: list[float] = field(default_factory=list)  # log mask norm after each pull
    losses: list[float] = field(default_factory=list)  # mean cross-entropy over each pull
    pending: list[float] = field(default_factory=list)  # cross-entropies of the pull under way

    def mask(self) -> torch.Tensor:
        return self.best_mask if self.best_mask is not None else torch.sigmoid(self.mask_logit.detach())

    def pattern(self) -> torch.Tensor:
        if self.best_pattern is not None:
            return self.best_pattern
        return torch.sigmoid(self.pattern_logit.detach())

    def norm(self) -> float:
        """Best mask norm at the attack threshold, else the current mask's norm."""
        if np.isfinite(self.best_norm):
            return self.best_norm
        return float(torch.sigmoid(self.mask_logit.detach()).sum())

    def close_pull(self) -> None:
        self.log_norms.append(float(torch.sigmoid(self.mask_logit.detach()).sum().log()))
        self.losses.append(float(np.mean(self.pending)) if self.pending else float("nan"))
        self.pending = []


@register("tool", "k-arm")
@dataclass(frozen=True)
class KArm(ToolBase):
    """Trigger inversion with a bandit scheduler over the pre-screened candidate labels."""

    blind_to = NOT_A_PATCH
    needs = frozenset({"gradients", "clean_data"})
    answers = frozenset({"detect", "target", "trigger"})

    # Labels kept by pre-screening. On the tiny patch subjects (seeds 0-1), 5 kept the
    # target every time (ranked 1st, 1st; 3rd, 2nd); 4 screened one out; all 10
    # spread the pulls so thin that the least-pulled arms inflated the norm ratio.
    arms: int = 5
    warmup_steps: int = 100  # all-label steps of the pre-screening warm-up
    warmup_batch: int = 8  # inputs per label per warm-up step
    pulls: int = 80  # bandit rounds
    steps_per_pull: int = 5
    batch_size: int = 16
    window: int = 5  # pulls over which an arm's fall is measured
    lookahead: float = 10.0  # pulls ahead an arm's fall is projected
    lr: float = 0.2
    init_cost: float = 1e-3
    asr_threshold: float = 0.95
    patience: int = 10  # steps at / below the threshold before the mask cost moves
    cost_up: float = 1.5
    cost_down: float = 1.5**1.5
    epsilon: float = 0.2
    ratio_threshold: float = 2.0  # the norm ratio read as probability 0.5

    def discover(self, view: CaseView) -> Finding:
        x_all = clean_inputs(view)
        k = view.num_classes
        c, h, w = view.input_shape
        g = view.generator()
        rng = view.rng(7)
        arms = [self._new_arm(t, c, h, w, g, view.device) for t in range(k)]
        # Each label's pool: the clean inputs not already of that label.
        y_all = view.clean.y.to(x_all.device) if view.clean is not None else None
        every = torch.arange(len(x_all), device=x_all.device)
        pools = [every if y_all is None else torch.nonzero(y_all != t).flatten() for t in range(k)]
        pools = [p if len(p) else every for p in pools]

        # Pre-screening: every label together for a short warm-up; keep the most promising.
        for step in range(self.warmup_steps):
            if view.time_left() < 2.0:
                break
            self._step(view, arms, x_all, pools, self.warmup_batch, g)
            if (step + 1) % self.steps_per_pull == 0:
                for a in arms:
                    a.close_pull()
        ranked = sorted(range(k), key=lambda t: (
            not np.isfinite(arms[t].best_norm),
            promise(arms[t].norm(), per_pull_fall(arms[t].log_norms, self.window), self.lookahead),
        ))
        kept = ranked[: max(1, min(self.arms, k))]

        # Bandit rounds: one arm per round, chosen epsilon-greedily.
        for _ in range(self.pulls):
            if view.time_left() < 2.0:
                break
            pick = kept[choose_arm(
                np.array([arms[t].best_norm for t in kept]),
                np.array([per_pull_fall(arms[t].log_norms, self.window) for t in kept]),
                np.array([per_pull_fall(arms[t].losses, self.window) for t in kept]),
                self.epsilon, self.lookahead, rng,
            )]
            arm = arms[pick]
            for _ in range(self.steps_per_pull):
                self._step(view, [arm], x_all, pools, self.batch_size, g)
            arm.pulls += 1
            arm.close_pull()

        norms = np.array([a.norm() for a in arms])
        order = sorted(kept, key=lambda t: (not np.isfinite(arms[t].best_norm), norms[t]))
        targets = tuple(order + [t for t in ranked if t not in kept])
        best = arms[targets[0]]
        # How many times smaller the best arm's mask is than the typical other arm's
        # (every arm was optimised past the warm-up; screened-out labels were not,
        # so they stand in only when fewer than two arms were kept). A MAD anomaly
        # index over four arms blew up whenever two of them tied (23.7 on a clean
        # tiny subject), so the ratio is the statistic here.
        others = [t for t in (order if len(order) > 1 else range(k)) if t != targets[0]]
        ratio = float(np.median(norms[others]) / max(norms[targets[0]], 1e-8))
        index = float(anomaly_indices(norms)[targets[0]])
        return Finding(
            trojan_probability=ratio_to_probability(ratio, self.ratio_threshold),
            targets=targets,
            trigger=Trigger(
                mask=best.mask()[0].cpu().numpy().astype(np.float32),
                pattern=best.pattern().cpu().numpy().astype(np.float32),
            ),
            notes={
                "norm_ratio": ratio,
                "anomaly_index": index,
                "mask_l1": float(norms[targets[0]]),
                "reached": float(np.isfinite(best.best_norm)),
                "pulls": float(best.pulls),
                "pulls_total": float(sum(arms[t].pulls for t in kept)),
            },
        )

    def _new_arm(self, label: int, c: int, h: int, w: int, g: torch.Generator, device: str) -> _Arm:
        mask_logit = (torch.rand(1, h, w, generator=g) * 2 - 3).to(device).requires_grad_()
        pattern_logit = (torch.randn(c, h, w, generator=g) * 0.1).to(device).requires_grad_()
        opt = torch.optim.Adam([mask_logit, pattern_logit], lr=self.lr, betas=(0.5, 0.9))
        return _Arm(label, mask_logit, pattern_logit, opt, self.init_cost)

    def _step(self, view: CaseView, arms: list[_Arm], x_all: torch.Tensor, pools: list[torch.Tensor],
              n: int, g: torch.Generator) -> None:
        """One optimisation step of the given arms together, n inputs each."""
        c, h, w = view.input_shape
        picks = [pools[a.label][torch.randint(len(pools[a.label]), (n,), generator=g).to(x_all.device)]
                 for a in arms]
        x = x_all[torch.stack(picks)]  # (A, n, C, H, W)
        mask = torch.stack([torch.sigmoid(a.mask_logit) for a in arms])[:, None]
        pattern = torch.stack([torch.sigmoid(a.pattern_logit) for a in arms])[:, None]
        stamped = (1 - mask) * x + mask * pattern
        labels = torch.tensor([a.label for a in arms], device=x.device).repeat_interleave(n)
        logits = view.model(stamped.reshape(-1, c, h, w))
        ce = F.cross_entropy(logits, labels, reduction="none").view(len(arms), n).mean(1)
        norm = mask.reshape(len(arms), -1).sum(1)
        cost = torch.tensor([a.cost for a in arms], device=x.device)
        leaves = [p for a in arms for p in (a.mask_logit, a.pattern_logit)]
        # autograd.grad leaves the model's own .grad fields untouched.
        grads = torch.autograd.grad((ce + cost * norm).sum(), leaves)
        with torch.no_grad():
            asr = (logits.argmax(1) == labels).float().view(len(arms), n).mean(1).cpu().numpy()
        ce_values, norm_values = ce.detach().cpu().numpy(), norm.detach().cpu().numpy()
        for i, a in enumerate(arms):
            a.mask_logit.grad, a.pattern_logit.grad = grads[2 * i], grads[2 * i + 1]
            a.opt.step()
            a.pending.append(float(ce_values[i]))
            self._adapt(a, float(asr[i]), float(norm_values[i]), mask[i, 0, 0], pattern[i, 0])

    def _adapt(self, arm: _Arm, asr: float, norm: float, mask: torch.Tensor, pattern: torch.Tensor) -> None:
        """Keep the best mask at the threshold; move the mask cost to hold attack success there."""
        ok = asr >= self.asr_threshold
        if ok and norm < arm.best_norm:
            arm.best_norm = norm
            arm.best_mask = mask.detach()[None].clone()
            arm.best_pattern = pattern.detach().clone()
        arm.up, arm.down = (arm.up + 1, 0) if ok else (0, arm.down + 1)
        if arm.up >= self.patience:
            arm.cost, arm.up = arm.cost * self.cost_up, 0
        elif arm.down >= self.patience:
            arm.cost, arm.down = arm.cost / self.cost_down, 0
