"""Built-in tools; importing this package registers them."""

from samecurve.tools import (
    attribution,
    baselines,
    class_synthesis,
    combine,
    edit,
    example_search,
    feature_level_adversary,
    k_arm,
    layer_norms,
    meta_classifier,
    natural_patch_search,
    neural_cleanse,
    poison_detectors,
    predict,
    replace,
    strip,
    tabor,
    text,
    weight_stats,
)

__all__ = [
    "attribution", "baselines", "class_synthesis", "combine", "edit", "example_search",
    "feature_level_adversary", "k_arm", "layer_norms", "meta_classifier",
    "natural_patch_search", "neural_cleanse", "poison_detectors", "predict", "replace", "strip",
    "tabor", "text",
    "weight_stats",
]
