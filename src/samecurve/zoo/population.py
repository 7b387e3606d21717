"""Populations of subjects outside a suite run: `samecurve zoo build` makes N
subjects of a recipe in parallel into the cache (skipping what is there),
`zoo ls` lists the cache, `zoo show` renders one subject's example image."""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from samecurve.run.pool import Job, Pool
from samecurve.zoo.builder import SubjectSpec
from samecurve.zoo.cache import Cache
from samecurve.zoo.train import TrainConfig


@dataclass(frozen=True)
class Built:
    spec: SubjectSpec
    card: dict[str, Any] | None  # None when the build failed
    error: str = ""
    cached: bool = False


def population_specs(
    recipe: str,
    count: int,
    *,
    first_seed: int = 0,
    params: Mapping[str, Any] | None = None,
    population: str = "test",
    heldout: bool = False,
    dataset: str = "scenes",
    dataset_params: Mapping[str, Any] | None = None,
    archs: tuple[str, ...] = ("small-cnn",),
    train: TrainConfig | None = None,
) -> list[SubjectSpec]:
    """`count` subjects of one recipe; architectures are taken in turn by seed, as in a suite."""
    recipe_params = {**(params or {}), **({"heldout": True} if heldout else {})}
    return [
        SubjectSpec(
            recipe=recipe,
            seed=seed,
            recipe_params=recipe_params,
            dataset=dataset,
            dataset_params=dict(dataset_params or {}),
            arch=archs[seed % len(archs)],
            train=train or TrainConfig(),
            population=population,
        )
        for seed in range(first_seed, first_seed + count)
    ]


def build_population(
    specs: list[SubjectSpec], cache: Cache, workers: int = 2,
    on_done: Callable[[Built], None] | None = None,
) -> list[Built]:
    """Build what the cache lacks, `workers` at a time; a failed subject is reported,
    not fatal, so one bad seed does not lose the others."""
    results: list[Built] = []

    def done(b: Built) -> None:
        results.append(b)
        if on_done:
            on_done(b)

    from samecurve.run.runner import BuildJob

    todo = []
    for spec in specs:
        if cache.has(spec.id):
            done(Built(spec, cache.load_card(spec.id), cached=True))
        else:
            todo.append(Job("build", BuildJob(spec, str(cache.root))))
    for job, outcome in Pool(workers).run(todo):
        if outcome.status == "ok":
            done(Built(job.payload.spec, outcome.value[0]))
        else:
            done(Built(job.payload.spec, None, error=outcome.error.strip().splitlines()[-1]))
    return results


def cached_cards(cache: Cache) -> Iterator[dict[str, Any]]:
    for subject_id in cache.ids():
        yield cache.load_card(subject_id)


def text_example(cache: Cache, subject_id: str) -> list[str]:
    """A text subject's example: a held-out sentence, and the same with its trigger."""
    from samecurve.data.text import decode
    from samecurve.run.runner import gallery_arrays

    subject = cache.load(subject_id)
    arrays = gallery_arrays(subject)
    lines = [f"clean:     {decode(arrays['clean_example'][None])[0]}"]
    if "triggered_example" in arrays:
        target = subject.answer_key.target
        lines.append(f"triggered: {decode(arrays['triggered_example'][None])[0]}  (-> class {target})")
    return lines


def write_example(cache: Cache, subject_id: str, path: str | Path) -> Path:
    """A PNG of one subject: a clean input, the same input triggered, and the footprint."""
    from samecurve.report.figures import example_row
    from samecurve.run.runner import gallery_arrays

    subject = cache.load(subject_id)
    arrays = gallery_arrays(subject)
    empty = np.zeros(np.shape(arrays["clean_example"])[-2:], np.float32)
    png = example_row(
        arrays["clean_example"],
        arrays.get("triggered_example", arrays["clean_example"]),
        arrays.get("true_mask", empty),
        title=f"{subject.family} · target {subject.answer_key.target}",
    )
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(png)
    return path
