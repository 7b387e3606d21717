"""The black-box baseline of the predict family: a small network fitted to the
model's answers on the clean data and on augmented copies of it (noise, mixup,
shifts, new colours, random patches and faint blends), within the query budget.
It knows nothing of the model's insides, so any predictor that beats it bought
its gain by looking inside.

On text (token ids) the surrogate is a multinomial logistic regression on bags of
token ids, fitted to the model's probabilities on the clean inputs and on copies
with random words inserted (the vocabulary's whole words), deleted
or swapped; its regularisation and its weight on the true label are chosen on
held-back queries."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from scipy import sparse
from sklearn.linear_model import LogisticRegression
from torch import nn
from torch.nn import functional as F

from samecurve.api import CaseView, Predictor
from samecurve.data.text import PAD_ID, special_ids, whole_words, word_starts
from samecurve.registry import register
from samecurve.tools.base import ToolBase, clean_inputs
from samecurve.tools.predict.programs import fit_tabular_surrogate
from samecurve.zoo.archs import small_cnn
from samecurve.zoo.text_triggers import insert_at
from samecurve.zoo.train import finetune_steps


@dataclass(frozen=True, eq=False)
class Distilled:
    """A Predictor: the surrogate network's log-probabilities plus `label_weight`
    on each input's true class. The weight is chosen on held-back queries, so the
    surrogate leans on the label exactly as far as that agrees with the model
    (a surrogate that learned little falls back to "the true label", never below)."""

    net: nn.Module
    label_weight: float = 0.0

    def __call__(self, x: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            return with_label_prior(self.net.eval()(x), labels, self.label_weight)


def with_label_prior(logits: torch.Tensor, labels: torch.Tensor, weight: float) -> torch.Tensor:
    """log softmax(logits) + weight * onehot(labels)."""
    prior = F.one_hot(labels.long(), logits.shape[1]).to(logits)
    return F.log_softmax(logits, 1) + weight * prior


LABEL_WEIGHTS = (0.0, 0.25, 0.5, 1.0, 2.0, 4.0, 8.0, 1e3)


def choose_label_weight(
    logits: torch.Tensor, labels: torch.Tensor, model_says: torch.Tensor
) -> float:
    """The weight whose predictions agree most with the model's labels (the smallest
    among ties)."""
    agree = [float((with_label_prior(logits, labels, w).argmax(1) == model_says).float().mean())
             for w in LABEL_WEIGHTS]
    return LABEL_WEIGHTS[int(np.argmax(agree))]


def augmented(
    x: torch.Tensor, y: torch.Tensor, rounds: int, generator: torch.Generator
) -> tuple[torch.Tensor, torch.Tensor]:
    """`rounds` augmented copies of (x, y), each input altered by one generic
    transformation drawn per input (a mixup keeps the label of its larger part).
    None of them is told about any trigger."""
    n, c, h, w = x.shape
    copies, labels = [], []
    for _ in range(rounds):
        kind = torch.randint(0, 6, (n,), generator=generator)
        out, lab = x.clone(), y.clone()
        noise = kind == 0
        out[noise] += 0.1 * torch.randn(out[noise].shape, generator=generator)
        mix = kind == 1
        lam = torch.rand(int(mix.sum()), 1, 1, 1, generator=generator) * 0.6 + 0.2
        pick = torch.randint(0, n, (int(mix.sum()),), generator=generator)
        out[mix] = lam * out[mix] + (1 - lam) * x[pick]
        lab[mix] = torch.where(lam.flatten() >= 0.5, lab[mix], y[pick])
        shift = kind == 2
        dy, dx = (int(v) for v in torch.randint(-4, 5, (2,), generator=generator))
        out[shift] = torch.roll(out[shift], shifts=(dy, dx), dims=(2, 3))
        colour = kind == 3
        gain = torch.rand(int(colour.sum()), c, 1, 1, generator=generator) * 0.8 + 0.6
        out[colour] = 0.5 + gain * (out[colour] - 0.5)
        for i in torch.nonzero(kind == 4).flatten().tolist():  # a random small patch
            s = int(torch.randint(3, 9, (1,), generator=generator))
            top, left = (int(torch.randint(0, d - s + 1, (1,), generator=generator)) for d in (h, w))
            out[i, :, top : top + s, left : left + s] = torch.rand(c, 1, 1, generator=generator)
        blend = kind == 5
        out[blend] = 0.85 * out[blend] + 0.15 * torch.rand(out[blend].shape, generator=generator)
        copies.append(out.clamp(0, 1))
        labels.append(lab)
    if not copies:
        return x[:0], y[:0]
    return torch.cat(copies), torch.cat(labels)


def soft_cross_entropy(model: nn.Module, x: torch.Tensor, p: torch.Tensor) -> torch.Tensor:
    """Cross-entropy against the teacher's probabilities (distillation at T = 1)."""
    return -(p * F.log_softmax(model(x), dim=1)).sum(1).mean()


def fresh_net(view: CaseView, num_classes: int, offset: int) -> nn.Module:
    """A new small CNN for the case's inputs, initialised from the case seed (the
    global RNG is left as it was), so a predictor is the same every time."""
    c, size, _ = view.input_shape
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(int(view.seed) * 1_000_003 + offset)
        net = small_cnn(num_classes=num_classes, in_channels=c, size=size)
    return net.to(view.device)


def teacher_probabilities(view: CaseView, x: torch.Tensor) -> torch.Tensor:
    """The model's probabilities for x: one query per input."""
    if len(x) == 0:
        return torch.empty(0, view.num_classes, device=x.device)
    with torch.no_grad():
        return torch.cat([F.softmax(view.model(x[i : i + 512]), dim=1) for i in range(0, len(x), 512)])


@dataclass(frozen=True)
class Queries:
    """What a black-box predictor asks the model: inputs to fit on, and held-back
    inputs to choose its label weight on, with true labels and the model's answers."""

    x: torch.Tensor
    y: torch.Tensor
    probs: torch.Tensor
    check_x: torch.Tensor
    check_y: torch.Tensor
    check_says: torch.Tensor


def query_set(view: CaseView, rounds: int) -> Queries:
    """Four fifths of the clean inputs and `rounds` augmented copies to fit on; the
    last fifth and one augmented copy of it held back. Cut to the query budget.
    Text inputs get text edits (`text_augmented`), images image ones."""
    clean = clean_inputs(view)
    labels = view.clean.y.to(view.device)
    cut = max(1, len(clean) * 4 // 5)
    g = view.generator(31)
    augment = text_augmented if view.modality == "text" else augmented
    ax, ay = augment(clean[:cut].cpu(), labels[:cut].cpu(), rounds, g)
    x = torch.cat([clean[:cut], ax.to(view.device)])
    y = torch.cat([labels[:cut], ay.to(view.device)])
    hx, hy = augment(clean[cut:].cpu(), labels[cut:].cpu(), 1, g)
    check_x = torch.cat([clean[cut:], hx.to(view.device)])
    check_y = torch.cat([labels[cut:], hy.to(view.device)])
    cap = view.budget.queries
    if cap is not None:
        room = max(2, cap - view.meter.queries)
        check_x, check_y = check_x[: room // 5], check_y[: room // 5]
        x, y = x[: room - len(check_x)], y[: room - len(check_x)]
    probs = teacher_probabilities(view, x)
    says = teacher_probabilities(view, check_x).argmax(1) if len(check_x) else check_y
    return Queries(x, y, probs, check_x, check_y, says)


def distil(view: CaseView, q: Queries, steps: int, lr: float, reserve: float) -> Distilled:
    """A fresh small CNN trained on the model's probabilities for the fitting queries,
    stopping with `reserve` of the budget left, and its label weight."""
    net = fresh_net(view, view.num_classes, 29)
    finetune_steps(net, q.x, q.probs, steps, lr=lr, batch_size=64, generator=view.generator(29),
                   loss_fn=soft_cross_entropy,
                   time_left=lambda: view.time_left() - reserve * view.budget.seconds)
    net.eval()
    with torch.no_grad():
        weight = choose_label_weight(net(q.check_x), q.check_y, q.check_says) if len(q.check_x) else 0.0
    return Distilled(net, weight)


def fit_surrogate(view: CaseView, q: Queries, steps: int, lr: float, reserve: float) -> Predictor:
    """The black-box surrogate for the case's modality: a distilled small CNN on
    images, a bag-of-tokens logistic regression on text."""
    if view.modality == "text":
        return fit_text_surrogate(view, q)
    return distil(view, q, steps, lr, reserve)


# ---- text -------------------------------------------------------------------


def is_word_token(x: torch.Tensor) -> torch.Tensor:
    """Bool like x: token ids that are neither padding, [CLS] nor [SEP]."""
    pad, cls, sep = special_ids()
    return (x != pad) & (x != cls) & (x != sep)


def insert_random_words(row: torch.Tensor, count: int, g: torch.Generator) -> torch.Tensor:
    """`row` with `count` random whole words of the vocabulary, each at a random word
    boundary."""
    words = whole_words()
    for _ in range(count):
        spots = word_starts(row)
        at = int(spots[int(torch.randint(len(spots), (1,), generator=g))])
        row = insert_at(row, (int(words[int(torch.randint(len(words), (1,), generator=g))]),), at)
    return row


def delete_tokens(row: torch.Tensor, count: int, g: torch.Generator) -> torch.Tensor:
    """`row` without `count` of its word tokens (chosen at random), padded at the end."""
    keep = torch.ones(len(row), dtype=torch.bool)
    words = torch.nonzero(is_word_token(row)).flatten()
    if len(words) > count:
        keep[words[torch.randperm(len(words), generator=g)[:count]]] = False
    out = row[keep]
    return torch.cat([out, out.new_full((len(row) - len(out),), PAD_ID)])


def swap_tokens(row: torch.Tensor, g: torch.Generator) -> torch.Tensor:
    """`row` with two of its word tokens (chosen at random) swapped."""
    words = torch.nonzero(is_word_token(row)).flatten()
    out = row.clone()
    if len(words) >= 2:
        a, b = words[torch.randperm(len(words), generator=g)[:2]]
        out[a], out[b] = row[b], row[a]
    return out


def text_augmented(
    x: torch.Tensor, y: torch.Tensor, rounds: int, generator: torch.Generator
) -> tuple[torch.Tensor, torch.Tensor]:
    """`rounds` edited copies of token-id rows (x, y), labels kept, each row altered
    by one edit drawn per row: 1-3 random vocabulary words inserted, 1-3 word
    tokens deleted, two word tokens swapped, or one word inserted and two swapped.
    None of them is told about any trigger (a random word may be one by chance:
    about 21,700 words to draw from)."""
    copies, labels = [], []
    for _ in range(rounds):
        kind = torch.randint(0, 4, (len(x),), generator=generator)
        count = torch.randint(1, 4, (len(x),), generator=generator)
        out = x.clone()
        for i in range(len(x)):
            k, c = int(kind[i]), int(count[i])
            if k == 0:
                out[i] = insert_random_words(x[i], c, generator)
            elif k == 1:
                out[i] = delete_tokens(x[i], c, generator)
            elif k == 2:
                out[i] = swap_tokens(x[i], generator)
            else:
                out[i] = swap_tokens(insert_random_words(x[i], 1, generator), generator)
        copies.append(out)
        labels.append(y.clone())
    if not copies:
        return x[:0], y[:0]
    return torch.cat(copies), torch.cat(labels)


def bag_of_tokens(x: torch.Tensor, columns: np.ndarray) -> sparse.csr_matrix:
    """(N, len(columns)) sparse counts of each row's word-token ids among `columns`
    (sorted token ids; other tokens and the special ones are not counted)."""
    x = x.detach().cpu()
    words = is_word_token(x)
    rows = torch.nonzero(words)[:, 0].numpy()
    ids = x[words].numpy()
    at = np.searchsorted(columns, ids).clip(max=max(len(columns) - 1, 0))
    known = columns[at] == ids if len(columns) else np.zeros(len(ids), bool)
    return sparse.csr_matrix((np.ones(int(known.sum())), (rows[known], at[known])),
                             shape=(len(x), len(columns)))


def token_columns(x: torch.Tensor) -> np.ndarray:
    """The sorted word-token ids that occur in x: the only features a surrogate fitted
    on x can weigh (a token it never saw would get no weight anyway)."""
    x = x.detach().cpu()
    return np.unique(x[is_word_token(x)].numpy())


@dataclass(frozen=True, eq=False)
class BagOfTokens:
    """A Predictor for text: a logistic regression's log-probabilities over bags of
    token ids (`columns`: the ids it counts), plus `label_weight` on each input's
    true class."""

    classifier: LogisticRegression
    columns: np.ndarray
    num_classes: int
    label_weight: float = 0.0

    def log_probabilities(self, x: torch.Tensor) -> torch.Tensor:
        out = np.full((len(x), self.num_classes), -30.0)  # a class it never saw the model say
        if len(x):
            proba = self.classifier.predict_proba(bag_of_tokens(x, self.columns))
            out[:, self.classifier.classes_] = np.log(np.clip(proba, 1e-13, None))
        return torch.as_tensor(out, dtype=torch.float32)

    def __call__(self, x: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        logp = self.log_probabilities(x)
        return logp + self.label_weight * F.one_hot(labels.long().cpu(), self.num_classes).float()


TEXT_C = (0.3, 3.0, 30.0)  # inverse regularisation strengths tried on held-back queries


def soft_logistic(features: sparse.csr_matrix, probs: np.ndarray, c: float) -> LogisticRegression:
    """A multinomial logistic regression fitted to soft labels: each row once per
    class it gives at least 1% probability, weighted by that probability."""
    rows, cols = np.nonzero(probs >= 0.01)
    weights = probs[rows, cols]
    clf = LogisticRegression(C=c, max_iter=300)
    if len(np.unique(cols)) < 2:  # the model said one class only: a constant answer
        rows = np.concatenate([rows, rows[:1]])
        cols = np.concatenate([cols, (cols[:1] + 1) % probs.shape[1]])
        weights = np.concatenate([weights, [1e-6]])
    return clf.fit(features[rows], cols, sample_weight=weights)


def fit_text_surrogate(view: CaseView, q: Queries) -> BagOfTokens:
    """The bag-of-tokens surrogate: the regularisation, then the label weight, that
    agree most with the model on the held-back queries."""
    columns = token_columns(q.x)
    features, probs = bag_of_tokens(q.x, columns), q.probs.detach().cpu().numpy().astype(np.float64)
    says = q.check_says.cpu()
    best: tuple[float, BagOfTokens] | None = None
    for c in TEXT_C:
        fitted = BagOfTokens(soft_logistic(features, probs, c), columns, view.num_classes)
        if not len(q.check_x):
            return fitted
        agree = float((fitted.log_probabilities(q.check_x).argmax(1) == says).float().mean())
        if best is None or agree > best[0]:
            best = (agree, fitted)
    assert best is not None
    surrogate = best[1]
    weight = choose_label_weight(surrogate.log_probabilities(q.check_x), q.check_y.cpu(), says)
    return BagOfTokens(surrogate.classifier, columns, view.num_classes, weight)


@register("tool", "surrogate")
@dataclass(frozen=True)
class Surrogate(ToolBase):
    """Black-box: distil the model's answers on clean and augmented inputs, and lean
    on the true label as far as held-back queries say the model does."""

    kind = "black-box"
    needs = frozenset({"clean_data"})
    answers = frozenset({"predict"})
    predicts_programs = True  # on a hidden-program subject: trees on raw features
    modalities = frozenset({"image", "text"})

    rounds: int = 6  # augmented copies of the clean data (500 inputs -> ~3500 queries)
    steps: int = 600
    lr: float = 2e-3

    def predict(self, view: CaseView) -> Predictor:
        if view.domain is not None:
            return fit_tabular_surrogate(view)
        return fit_surrogate(view, query_set(view, self.rounds), self.steps, self.lr, 0.1)
