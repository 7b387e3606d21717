"""feature-level-adversary: the VAE it trains and its loss terms by hand, and the
whole tool on the tiny population's patch subjects."""

from __future__ import annotations

import pytest
import torch
from cases import hit_rate, patch_findings, ranked_first

import samecurve.tools.feature_level_adversary  # noqa: F401  (registers the tool)
from samecurve.registry import get
from samecurve.tools.feature_level_adversary import PatchVAE, total_variation, train_patch_vae
from samecurve.tools.natural_patch_search import cut_patches

# One torch thread (measured: training the VAE took 63 s with 2 threads under load, 2 s with 1).
pytestmark = pytest.mark.usefixtures("one_thread")

def test_total_variation_by_hand() -> None:
    flat = torch.full((1, 1, 3, 3), 0.5)
    assert float(total_variation(flat)[0]) == 0
    # Vertical stripes 0, 1, 0: no change down the rows; across, |1-0| twice in
    # each of 3 rows = 6 differences of 1 over 6 -> mean 1.
    stripes = torch.tensor([[[[0.0, 1.0, 0.0]] * 3]])
    assert float(total_variation(stripes)[0]) == pytest.approx(1.0)


def test_vae_shapes_and_feature_perturbation() -> None:
    vae = PatchVAE(3, 8, 9).requires_grad_(False)
    z = torch.zeros(2, 8)
    out = vae.decode(z)
    assert out.shape == (2, 3, 9, 9) and float(out.min()) >= 0 and float(out.max()) <= 1
    delta = torch.zeros(2, 32, 8, 8)
    delta[1] = 5.0
    moved = vae.decode(z, delta)
    torch.testing.assert_close(moved[0], out[0])
    assert not torch.allclose(moved[1], out[1])


def test_vae_reconstructs_crops_better_after_training() -> None:
    x = torch.from_numpy(get("dataset", "scenes")().sample(256, 0, split="val")[0].copy())
    held, _ = cut_patches(x[128:], 9, 128, torch.Generator().manual_seed(1))
    errors = {}
    for steps in (0, 200):
        vae = train_patch_vae(x[:128], 9, 16, steps, torch.Generator().manual_seed(0), seed=0)
        with torch.no_grad():
            errors[steps] = float(((vae.reconstruct(held) - held) ** 2).mean())
    # Measured: mean squared error 0.084 untrained (about the crops' own variance),
    # 0.059 after 200 steps.
    assert errors[200] < 0.85 * errors[0], errors


def test_training_leaves_the_global_rng_alone() -> None:
    x = torch.rand(4, 3, 12, 12)
    torch.manual_seed(5)
    expected = torch.rand(3)
    torch.manual_seed(5)
    train_patch_vae(x, 9, 4, 2, torch.Generator().manual_seed(0), seed=0)
    torch.testing.assert_close(torch.rand(3), expected)


@pytest.fixture(scope="module")
def findings(population, cache) -> dict:
    return patch_findings("feature-level-adversary", population, cache)


def test_ranks_the_planted_target_high(findings) -> None:
    """Measured (default hyperparameters, run seed 0): the targets rank 4th and 1st,
    the same here and on CI's machine (the first subject's classes 3, 8 and 5 are
    reached as easily by natural patches). It is a weak detector on tiny models: on
    the conftest's strong patch subject, whose 3-pixel trigger Neural Cleanse finds
    with a 3x margin, it ranks the target 1st at case seed 1 but not in its top 4 at
    seed 0. About 5.5 s of CPU a subject."""
    ranks = sorted(f.targets.index(s.answer_key.target) for s, f in findings.values())
    assert ranks[0] == 0 and ranks[-1] < 5, ranks


def test_the_trigger_it_returns_works(findings) -> None:
    # Measured: on the subject whose target it ranks first, its patch sends 92% of
    # held-out inputs of other classes to the target (90-92% over seeds 0-1).
    hits = ranked_first(findings)
    assert hits, "the target of neither patch subject was ranked first"
    for subject, f in hits:
        assert hit_rate(subject, f.trigger) > 0.6
        assert f.trigger.localised and f.trigger.mask.sum() == 9 * 9
