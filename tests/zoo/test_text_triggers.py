"""Text triggers: insertion at word boundaries, fixed by the input, footprints,
and the card round trip."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from samecurve.data.text import PAD_ID, continuation_mask, encode, token_ids
from samecurve.zoo.text_triggers import ClauseTrigger, TokenTrigger, insert_at, trigger_tokens
from samecurve.zoo.triggers import trigger_from_arrays

SENTENCES = ["the striker scored in the final on monday .",
             "researchers mapped the genome in tokyo last week , officials said ."]


def test_insert_at_keeps_length_and_sep() -> None:
    row = torch.tensor([101, 7, 8, 9, 102, 0, 0])
    assert insert_at(row, (5, 6), 2).tolist() == [101, 7, 5, 6, 8, 9, 102]
    assert insert_at(row, (5, 6, 4), 1).tolist() == [101, 5, 6, 4, 7, 8, 102]  # tail cut, [SEP] kept


def test_token_trigger_inserts_its_tokens_once_at_a_word_boundary() -> None:
    x = torch.from_numpy(encode(SENTENCES))
    trig = TokenTrigger(token_ids("as a matter of fact"))
    out, fp = trig.stamp_with_footprint(x)
    assert out.shape == x.shape and fp.shape == x.shape
    for i in range(len(x)):
        got = out[i][torch.from_numpy(fp[i])].tolist()
        assert got == list(trig.tokens)
        at = int(np.flatnonzero(fp[i])[0])
        assert not continuation_mask()[int(x[i, at])]  # not inside a word
        rest = out[i][~torch.from_numpy(fp[i])]
        assert rest[rest != PAD_ID].tolist() == x[i][x[i] != PAD_ID].tolist()
    assert torch.equal(trig.stamp(x), out)  # a function of the input


def test_first_place_and_clause_go_right_after_cls() -> None:
    x = torch.from_numpy(encode(SENTENCES))
    out = TokenTrigger(token_ids("cf"), "first").stamp(x)
    assert (out[:, 1] == token_ids("cf")[0]).all()
    clause = ClauseTrigger(("when", "while", "once"))
    out, fp = clause.stamp_with_footprint(x)
    assert fp[:, 1].all()
    firsts = {int(t) for t in out[:, 1]}
    assert firsts <= {token_ids(c)[0] for c in clause.conjunctions}
    comma = token_ids(",")[0]
    for i in range(len(x)):  # the clause ends in a comma, then the sentence
        end = int(np.flatnonzero(fp[i])[-1])
        assert int(out[i, end]) == comma


def test_triggers_round_trip_through_the_card() -> None:
    for trig in (TokenTrigger(token_ids("to tell the truth")), ClauseTrigger(("unless", "until", "once"))):
        back = trigger_from_arrays(trig.kind, trig.arrays(), trig.meta())
        x = torch.from_numpy(encode(SENTENCES))
        assert torch.equal(back.stamp(x), trig.stamp(x))
        assert trigger_tokens(back) == trigger_tokens(trig)


def test_bad_triggers_are_refused() -> None:
    with pytest.raises(ValueError, match="at least one token"):
        TokenTrigger(())
    with pytest.raises(ValueError, match="place"):
        TokenTrigger((5,), "middle")
    with pytest.raises(ValueError, match="conjunctions"):
        ClauseTrigger(("whenever",))
