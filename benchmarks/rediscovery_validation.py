"""Is the automated rediscovery judge fit to stand in for people? Hand it the true
trigger (it must pick it out of 8 at >= 95%) and noise (it must sit at 1 in 8),
per trojan family and vocabulary, with exact binomial 95% intervals.

    python benchmarks/rediscovery_validation.py [--draws 100] [--dataset scenes] [--family style ...]

The evaluator is the same clean dev model the runner builds for grading (cached)."""

from __future__ import annotations

import argparse
import time

from scipy import stats

import samecurve.zoo.recipes  # noqa: F401  (registers the recipes)
from samecurve.registry import get
from samecurve.tasks.rediscovery import CHOICES, Evaluator, evaluator_spec, validate
from samecurve.zoo.builder import SubjectSpec, build
from samecurve.zoo.cache import Cache

FAMILIES = ("patch", "blend", "style", "warp", "natural", "source-specific", "multi", "clean-label")


def interval(hits: int, n: int) -> str:
    ci = stats.binomtest(hits, n).proportion_ci(0.95, method="exact")
    return f"{hits / n:.3f} [{ci.low:.2f}, {ci.high:.2f}]"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--draws", type=int, default=100)
    parser.add_argument("--dataset", default="scenes")
    parser.add_argument("--family", action="append", choices=FAMILIES,
                        help="only these families (repeat; default: all)")
    parser.add_argument("--seed", type=int, default=0, help="which candidate sets are drawn")
    args = parser.parse_args()
    spec = evaluator_spec(SubjectSpec(recipe="clean", seed=0, dataset=args.dataset))
    started = time.monotonic()
    evaluator = Evaluator.from_subject(build(spec, Cache()))
    shape = tuple(evaluator.tool_images.shape[1:])
    print(f"evaluator {spec.id} ({time.monotonic() - started:.0f}s); {args.draws} draws per row; "
          f"chance {1 / CHOICES:.3f}")
    print(f"{'family':<16}{'vocabulary':<11}{'true trigger picked':<26}{'noise picked':<24}")
    noise = total = 0
    for family in args.family or FAMILIES:
        for heldout in (False, True):
            v = validate(evaluator, get("recipe", family)(heldout=heldout), shape, args.draws, args.seed)
            noise, total = noise + v.noise_hits, total + v.draws
            print(f"{family:<16}{'heldout' if heldout else 'dev':<11}"
                  f"{interval(v.true_hits, v.draws):<26}{interval(v.noise_hits, v.draws):<24}", flush=True)
    print(f"all noise: {interval(noise, total)} (chance {1 / CHOICES:.3f}); "
          f"{time.monotonic() - started:.0f}s")


if __name__ == "__main__":
    main()
