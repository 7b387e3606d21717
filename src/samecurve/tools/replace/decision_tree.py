"""The honest baseline of the replace family: a decision tree fitted to the
network's answers on raw features, written out as nested ifs.

Why raw features only: the tree is the yardstick a program search must beat. It
gets the grid's a and b, a sequence position's token, index and a fixed window
of earlier tokens (it cannot carry state, so it fails where a rule needs the
whole prefix, and on lengths it never saw), and an image pooled to P x P (the
pooling is written into the program). Where those features do not make the rule
simple, the tree grows big or unfaithful, and it abstains."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from sklearn.tree import DecisionTreeClassifier

from samecurve.api import CaseView, Program
from samecurve.programs.domain import Domain
from samecurve.registry import register
from samecurve.tools.base import ToolBase
from samecurve.tools.replace.dsl import MIN_QUERIES, Queried, finish, query_domain, query_room


def tabular(kind: str, x: np.ndarray, window: int = 4, pool: int = 7) -> np.ndarray:
    """Raw features, one row per output: grid (a, b); sequence (x_t, t, x_{t-1}..
    x_{t-window}, -1 before the start) for every position, row-major; image the
    means of a pool x pool grid of blocks."""
    if kind == "grid":
        return np.asarray(x, np.float64)
    if kind == "sequence":
        x = np.asarray(x, np.int64)
        n, length = x.shape
        cols = [x, np.broadcast_to(np.arange(length), (n, length))]
        for k in range(1, window + 1):
            shifted = np.full_like(x, -1)
            if k < length:
                shifted[:, k:] = x[:, :-k]
            cols.append(shifted)
        return np.stack(cols, -1).reshape(n * length, -1).astype(np.float64)
    imgs = np.asarray(x, np.float64)
    imgs = imgs[:, 0] if imgs.ndim == 4 else imgs
    _, h, w = imgs.shape
    out = []
    for i in range(pool):
        for j in range(pool):
            block = imgs[:, i * h // pool:(i + 1) * h // pool, j * w // pool:(j + 1) * w // pool]
            out.append(block.reshape(len(imgs), -1).mean(1) if block.size else
                       np.zeros(len(imgs)))
    return np.stack(out, 1)


def wrap(kind: str, helpers: str, window: int = 4, pool: int = 7) -> str:
    """A program whose `f` builds the tabular features `v` and returns `g(v)`
    (`helpers` defines g and whatever it calls)."""
    if kind == "grid":
        f = "def f(a, b):\n    return g([a, b])\n"
    elif kind == "sequence":
        f = ("def f(xs):\n    out = []\n    for t in range(len(xs)):\n"
             f"        v = [xs[t], t] + [xs[t - k] if t - k >= 0 else -1 for k in range(1, {window + 1})]\n"
             "        out.append(g(v))\n    return out\n")
    else:
        f = ("def f(img):\n    h = len(img)\n    w = len(img[0])\n    v = []\n"
             f"    for i in range({pool}):\n        for j in range({pool}):\n"
             f"            rows = img[i * h // {pool}:(i + 1) * h // {pool}]\n"
             f"            block = [u for r in rows for u in r[j * w // {pool}:(j + 1) * w // {pool}]]\n"
             "            v.append(sum(block) / len(block) if block else 0.0)\n"
             "    return g(v)\n")
    return helpers + "\n\n" + f


def labels_flat(kind: str, y: np.ndarray) -> np.ndarray:
    return np.asarray(y, np.int64).ravel()


def tree_source(tree: DecisionTreeClassifier) -> str:
    """The fitted tree as `def g(v)` of nested ifs: left when v[feature] <= threshold
    (as sklearn splits), each leaf returning its majority class."""
    t = tree.tree_
    classes = tree.classes_
    lines = ["def g(v):"]

    def walk(node: int, depth: int) -> None:
        pad = "    " * depth
        left, right = t.children_left[node], t.children_right[node]
        if left == right:  # a leaf
            lines.append(f"{pad}return {int(classes[int(np.argmax(t.value[node][0]))])}")
            return
        thr = float(t.threshold[node])
        lines.append(f"{pad}if v[{int(t.feature[node])}] <= {thr!r}:")
        walk(int(left), depth + 1)
        lines.append(f"{pad}else:")
        walk(int(right), depth + 1)

    walk(0, 1)
    return "\n".join(lines) + "\n"


def fit_rows(domain: Domain, xs: list[np.ndarray], ys: list[np.ndarray], window: int,
             pool: int) -> tuple[np.ndarray, np.ndarray]:
    """Every fitting group's features and labels, stacked."""
    feats = [tabular(domain.kind, x, window, pool) for x in xs]
    return np.concatenate(feats), np.concatenate([labels_flat(domain.kind, y) for y in ys])


@register("tool", "decision-tree")
@dataclass(frozen=True)
class DecisionTree(ToolBase):
    """Black-box baseline: a depth-limited tree on raw features, exported exactly.
    Needs the clean images for the image domain (images cannot be sampled); grid
    and sequence inputs are drawn from the domain. Cannot carry state over a
    sequence, nor compute arithmetic of a and b except by tiling the grid."""

    kind = "black-box"
    needs = frozenset({"clean_data"})  # images only
    answers = frozenset({"replace"})

    queries: int = 4000
    max_depth: int = 10
    min_samples_leaf: int = 3
    window: int = 4  # earlier tokens a sequence position sees
    pool: int = 7  # an image is pooled to pool x pool block means
    abstain_below: float = 0.9

    def fit(self, view: CaseView, n: int) -> tuple[DecisionTreeClassifier, Queried]:
        """Query n inputs and fit the tree on four fifths of them."""
        q = query_domain(view, n, view.rng(13))
        x, y = fit_rows(view.domain, q.fit_x, q.fit_y, self.window, self.pool)
        tree = DecisionTreeClassifier(max_depth=self.max_depth,
                                      min_samples_leaf=self.min_samples_leaf,
                                      random_state=int(view.seed))
        return tree.fit(x, y), q

    def distill(self, view: CaseView) -> Program:
        n = query_room(view, self.queries)
        if n < MIN_QUERIES:
            return Program(None, notes={"queries": float(view.meter.queries),
                                        "fidelity_estimate": 0.0})
        tree, q = self.fit(view, n)
        source = wrap(view.domain.kind, tree_source(tree), self.window, self.pool)
        return finish(view, source, q, self.abstain_below,
                      {"leaves": float(tree.get_n_leaves())})
