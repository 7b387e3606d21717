"""HotFlip trigger search on the tiny text population. Measured (tiny-bert, seeds
0-5): on the rare-token subject it recovers the planted word "cf" itself at every
seed, which sends 99% of held-out inputs of other classes to the target, margin
over the runner-up class 0.67-0.79 (trojan probability 0.96-0.99); on the two clean
subjects the margin is 0.15-0.25 (probability 0.11-0.27). About 1.5 s a subject.
(Builds from before the builder seeded training's dropout, which differed per
process: "cf" and ~0.98 every time, a clean one's margin up to 0.35.) Hence the
test asks for trojaned above clean, not for clean below a fixed level."""

from __future__ import annotations

import pytest
import torch
from cases import case_view, hit_rate

from samecurve.data.text import continuation_mask, token_ids
from samecurve.registry import get
from samecurve.tasks.text import token_match
from samecurve.tools.text.trigger_search import (
    attack_success,
    search_trigger,
    trigger_slots,
    whole_word_ids,
)
from samecurve.zoo.builder import clean_split
from samecurve.zoo.text_triggers import TokenTrigger
from samecurve.zoo.train import predict

pytestmark = pytest.mark.usefixtures("one_thread")


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
def findings(population, cache) -> dict[str, list]:
    """hotflip's finding on the rare-token and the two clean subjects, by family."""
    out = {}
    for s in population:
        if s.family == "phrase":
            continue
        tool = get("tool", "hotflip")()
        view = case_view(tool, s, cache, task="discover-text", seconds=60)
        before = {k: v.clone() for k, v in view.model.state_dict().items()}
        hooks = sum(len(m._forward_hooks) for m in view.model.modules())  # the meter's
        finding = tool.discover(view)
        assert all(torch.equal(v, before[k]) for k, v in view.model.state_dict().items())
        assert sum(len(m._forward_hooks) for m in view.model.modules()) == hooks
        out.setdefault(s.family, []).append((s, finding))
    return out


def test_recovers_a_working_trigger_and_ranks_the_target_first(findings) -> None:
    [(subject, finding)] = findings["rare-token"]
    key = subject.answer_key
    assert finding.targets[0] == key.target
    assert isinstance(finding.trigger, TokenTrigger)
    # Held-out inputs of other classes (the grader's split, never seen by the tool).
    assert hit_rate(subject, finding.trigger) >= 0.9
    assert token_match(finding.trigger, key.trigger)["token_recall"] == 1.0, finding.trigger.text


def test_trojaned_scores_above_clean(findings) -> None:
    [(_, trojaned)] = findings["rare-token"]
    clean = [f.trojan_probability for _, f in findings["clean"]]
    assert trojaned.trojan_probability > 0.8
    assert trojaned.trojan_probability > max(clean)


def test_search_trigger_is_deterministic_and_reports_what_stamping_does(rare) -> None:
    key = rare.answer_key
    val = clean_split(rare, "val", 96)
    x = val.x[val.y != key.target]
    runs = [search_trigger(rare.model, x, key.target, length=1, steps=5, candidates=16,
                           generator=torch.Generator().manual_seed(3)) for _ in range(2)]
    assert runs[0] == runs[1]
    tokens, rate = runs[0]
    stamped = TokenTrigger(tokens).stamp(x)
    assert rate == pytest.approx((predict(rare.model, stamped) == key.target).float().mean().item())
    # The search ran on val inputs; the planted word flips fresh held-out ones too.
    held = clean_split(rare, "heldout", 128)
    assert attack_success(rare.model, held.x[held.y != key.target], tokens, key.target) >= 0.9


def test_writing_into_trigger_slots_is_stamping(rare) -> None:
    """The search swaps tokens in place; that must be exactly TokenTrigger.stamp."""
    x = clean_split(rare, "val", 32).x
    g = torch.Generator().manual_seed(0)
    vocab = whole_word_ids()
    for length in (1, 3):
        tokens = tuple(int(t) for t in vocab[torch.randint(len(vocab), (length,), generator=g)])
        stamped, pos, valid = trigger_slots(x, length)
        rows = torch.arange(len(x))[:, None].expand_as(pos)
        stamped[rows[valid], pos[valid]] = torch.tensor(tokens).expand_as(pos)[valid]
        assert torch.equal(stamped, TokenTrigger(tokens).stamp(x))


def test_candidates_are_whole_words_only() -> None:
    vocab = whole_word_ids()
    assert token_ids("cf")[0] in set(vocab.tolist())
    assert int(vocab.min()) >= 999, "no [PAD], [CLS], [SEP], [MASK], [UNK] or [unused*]"
    assert not continuation_mask()[vocab.numpy()].any(), "no '##' continuations"


def test_stops_when_its_clock_runs_out(rare) -> None:
    """With no time left it makes no gradient step: the random start comes back."""
    val = clean_split(rare, "val", 64)
    x = val.x[val.y != 0]
    g = torch.Generator().manual_seed(0)
    tokens, rate = search_trigger(rare.model, x, 0, length=2, steps=50, candidates=8,
                                  generator=g, time_left=lambda: 0.0)
    g2 = torch.Generator().manual_seed(0)
    torch.randperm(len(x), generator=g2)
    vocab = whole_word_ids(rare.model.word_embeddings.num_embeddings)
    start = vocab[torch.randint(len(vocab), (2,), generator=g2)]
    assert tokens == tuple(int(t) for t in start)
    assert 0.0 <= rate <= 1.0
