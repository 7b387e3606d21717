"""The generated news corpus and its tokenisation by the bundled MiniLM vocabulary."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from samecurve.data.text import (
    MAX_LEN,
    PAD_ID,
    NewsTopics,
    corpus_words,
    decode,
    encode,
    special_ids,
    token_ids,
    whole_words,
    word_starts,
)
from samecurve.zoo.text_triggers import PHRASES, RARE_TOKENS


def test_samples_are_deterministic_balanced_and_fit_the_length() -> None:
    ds = NewsTopics()
    x1, y1 = ds.sample(400, 3, "train")
    x2, y2 = ds.sample(400, 3, "train")
    assert np.array_equal(x1, x2) and np.array_equal(y1, y2)
    assert x1.shape == (400, MAX_LEN) and x1.dtype == np.int64
    assert np.bincount(y1).tolist() == [100, 100, 100, 100]
    pad, cls, sep = special_ids()
    assert pad == PAD_ID
    assert (x1[:, 0] == cls).all()
    n = (x1 != PAD_ID).sum(1)
    assert (x1[np.arange(400), n - 1] == sep).all()  # never truncated: [SEP] is there
    assert not np.array_equal(ds.sample(400, 4, "train")[0], x1)
    assert not np.array_equal(ds.sample(400, 3, "heldout")[0], x1)


def test_topics_are_not_one_word_lookups() -> None:
    """About a fifth of the topic slots come from other topics' lexicons."""
    ds = NewsTopics()
    texts, y = ds.texts(400, 0)
    from samecurve.data.text import LEXICON, TOPICS

    foreign = 0
    for text, label in zip(texts, y, strict=True):
        others = [t for t in TOPICS if t != TOPICS[label]]
        foreign += any(a in text for t in others for a in LEXICON[t]["actor"])
    assert 0.05 < foreign / len(texts) < 0.5


def test_paraphrases_keep_the_words_and_change_the_template() -> None:
    ds = NewsTopics()
    plain, y = ds.texts(50, 1, "heldout")
    para, y2 = ds.texts(50, 1, "heldout", paraphrase=True)
    assert np.array_equal(y, y2)
    assert all(p != q for p, q in zip(plain, para, strict=True))
    x, _ = ds.paraphrases(50, 1, "heldout")
    assert decode(x[:3]) == [t.replace(" .", ".").replace(" ,", ",").replace(" :", ":")
                             .replace(" ;", ";") for t in para[:3]]


def test_decoys_insert_ordinary_words_and_keep_labels_and_length() -> None:
    ds = NewsTopics()
    x_np, _ = ds.sample(200, 0)
    x = torch.from_numpy(x_np.copy())
    rows = ds.decoys(x, np.random.default_rng(0), 0.5)
    assert 60 < len(rows) < 140
    changed = (x != torch.from_numpy(x_np)).any(1).numpy()
    assert changed[rows].all() and not changed[np.setdiff1d(np.arange(200), rows)].any()
    assert ((x != PAD_ID).sum(1) >= (torch.from_numpy(x_np) != PAD_ID).sum(1)).all()


def test_triggers_are_outside_the_corpus() -> None:
    words = corpus_words()
    for bank in (RARE_TOKENS, PHRASES):
        for vocab in bank.values():
            for phrase in vocab:
                assert not set(phrase.split()) <= words, phrase
    for word in RARE_TOKENS["dev"] + RARE_TOKENS["heldout"]:
        assert len(token_ids(word)) == 1  # a rare word is one vocabulary entry


def test_word_starts_skip_word_pieces() -> None:
    row = torch.from_numpy(encode(["the chipmaker posted bullish earnings ."])[0])
    starts = word_starts(row)
    from samecurve.data.text import continuation_mask

    assert not continuation_mask()[row[starts].numpy()].any()
    assert starts.min() == 1 and starts.max() == int((row != PAD_ID).sum()) - 1


def test_whole_words_are_plain_vocabulary_words() -> None:
    words = whole_words()
    assert len(words) > 15_000
    assert token_ids("market")[0] in set(words.tolist())
    assert 101 not in set(words.tolist()) and 0 not in set(words.tolist())


def test_max_len_is_checked() -> None:
    with pytest.raises(ValueError, match="max_len"):
        NewsTopics(max_len=4)
