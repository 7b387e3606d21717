"""Token attribution on the tiny rare-token subject: on held-out inputs of other
classes carrying the planted word ("cf") that the model sends to the target, the
maps must put more weight on the trigger's token than on the other words, give
padding nothing, and leave no hooks behind. Measured (16 inputs, tiny-bert):
token-ig puts ~67% of each map on the one trigger token (uniform: ~6%), its
argmax is the trigger on 16/16; attention rollout ~36%, argmax on 16/16;
token-saliency ~28%, argmax on 12/16. (On a MiniLM rare-token subject: token-ig's
correlation with the footprint 0.99, attention rollout through the last two
layers points at the trigger on 16/16, through all six on none.)"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from cases import case_view

from samecurve.api import handles
from samecurve.data.text import PAD_ID, special_ids
from samecurve.registry import get
from samecurve.tools.text.attribution import rollout
from samecurve.zoo.builder import clean_split
from samecurve.zoo.train import predict

pytestmark = pytest.mark.usefixtures("one_thread")

TEXT_TOOLS = ("token-ig", "token-saliency", "attention", "hotflip", "text-example-search")


@pytest.fixture(scope="module")
def population(one_thread, request) -> list:
    """The tiny text population, built (unless an earlier module did) on one thread:
    asked for plainly, the session fixture is built before `one_thread` applies, and
    under pytest on the shared 2-core machine two threads made it ~10x slower."""
    return request.getfixturevalue("text_population")


@pytest.fixture(scope="module")
def rare(population):
    return next(s for s in population if s.family == "rare-token")


@pytest.fixture(scope="module")
def triggered(rare):
    """Held-out inputs of other classes with the planted word, sent to the target."""
    key = rare.answer_key
    held = clean_split(rare, "heldout", 128)
    x, fp = key.trigger.stamp_with_footprint(held.x[held.y != key.target][:24])
    hit = (predict(rare.model, x) == key.target).numpy()
    return x[torch.from_numpy(hit)][:16], fp[hit][:16], torch.full((16,), key.target)


def maps_of(name: str, rare, cache, triggered) -> np.ndarray:
    x, _, t = triggered
    tool = get("tool", name)()
    return tool.attribute(case_view(tool, rare, cache, task="discover-text"), x, t[: len(x)])


@pytest.mark.parametrize("name", TEXT_TOOLS)
def test_registered_as_a_text_tool(name: str) -> None:
    tool = get("tool", name)()
    assert tool.modalities == frozenset({"text"})
    assert handles(tool, "text") and not handles(tool, "image")


# (tool, least share of the map's mass on the trigger, least share of inputs whose
# argmax is the trigger, least share of inputs whose trigger tokens outscore the mean
# other token): floors well under what each measured (see the docstring); gradient x
# embedding is the noisy one (one input in 16 had its trigger under the others' mean).
EXPECTED = {"token-ig": (0.4, 0.9, 1.0), "attention": (0.15, 0.9, 1.0),
            "token-saliency": (0.15, 0.5, 0.75)}


@pytest.mark.parametrize("name", list(EXPECTED))
def test_more_weight_on_the_trigger_than_on_other_tokens(name, rare, cache, triggered) -> None:
    x, fp, _ = triggered
    maps = maps_of(name, rare, cache, triggered)
    assert maps.shape == tuple(x.shape) and maps.dtype == np.float32
    real = (x != PAD_ID).numpy()
    assert np.all(maps[~real] == 0), "padding must score 0"
    assert np.all(maps >= 0)
    share, point, above = EXPECTED[name]
    on = (maps * fp).sum(1) / fp.sum(1)
    off = (maps * (real & ~fp)).sum(1) / (real & ~fp).sum(1)
    assert (on > off).mean() >= above, f"{name}: trigger above the other tokens' mean in {on > off}"
    uniform = (fp.sum(1) / real.sum(1)).mean()
    mass = ((maps * fp).sum(1) / maps.sum(1)).mean()
    assert mass > max(share, 2 * uniform), f"{name}: {mass:.2f} of the mass on the trigger"
    pointing = fp[np.arange(len(maps)), maps.argmax(1)].mean()
    assert pointing >= point, f"{name}: argmax on the trigger in {pointing:.0%} of inputs"


@pytest.mark.parametrize("name", ["token-ig", "attention"])
def test_cls_and_sep_score_nothing(name, rare, cache, triggered) -> None:
    """token-ig's baseline keeps [CLS] and [SEP], so the path never moves them;
    attention drops them (BERT's attention sinks) by default."""
    x, _, _ = triggered
    maps = maps_of(name, rare, cache, triggered)
    _, cls, sep = special_ids()
    special = ((x == cls) | (x == sep)).numpy()
    assert np.allclose(maps[special], 0, atol=1e-6)


def test_the_task_grades_token_ig_above_random(rare, cache, triggered) -> None:
    """discover-text's own scoring of the maps (correlation with the footprint and
    pointing game over each input's real tokens), against a random map."""
    from samecurve.tasks.text import DiscoverTextTask

    x, fp, _ = triggered
    task = DiscoverTextTask()
    ig = task.score_maps(maps_of("token-ig", rare, cache, triggered), fp, x)
    noise = np.random.default_rng(0).random(x.shape).astype(np.float32)
    chance = task.score_maps(noise, fp, x)
    assert ig["attribution_corr"] > 0.5 > chance["attribution_corr"]
    assert ig["pointing_game"] >= 0.9 > chance["pointing_game"]


def test_attention_removes_its_hooks_even_after_an_error(rare, cache) -> None:
    tool = get("tool", "attention")()
    view = case_view(tool, rare, cache, task="discover-text")

    def hooks() -> int:
        return sum(len(m._forward_hooks) for m in view.model.modules())

    before = hooks()
    bad = torch.full((2, 32), 10**6)  # no such token: the embedding lookup fails mid-forward
    bad[:, 0] = special_ids()[1]
    with pytest.raises((IndexError, RuntimeError)):
        tool.attribute(view, bad, torch.zeros(2, dtype=torch.long))
    assert hooks() == before


def test_rollout_rows_are_distributions_over_real_tokens() -> None:
    g = torch.Generator().manual_seed(0)
    keep = torch.ones(2, 5)
    keep[1, 3:] = 0
    weights = [torch.softmax(torch.randn(2, 2, 5, 5, generator=g), -1) for _ in range(3)]
    joint = rollout(weights, keep)
    assert torch.allclose(joint.sum(-1), torch.ones(2, 5), atol=1e-5)
    assert torch.all(joint[1, :3, 3:] == 0), "real tokens draw nothing from padding"
