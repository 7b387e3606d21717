"""Tests for the procedural scenes dataset: the contract the zoo relies on
(shapes, determinism, balance), that every shape actually draws, that scenes
vary, that generation is fast, and that the task is learnable but not trivial."""

from __future__ import annotations

import json
import time

import numpy as np
import pytest

import samecurve.data
from samecurve.data import DISTRACTOR_SHAPES, OBJECT_SHAPES, SHAPES, Scenes, draw_shape

# Plain backgrounds and no distractors or noise: every non-background pixel is the object.
PLAIN = {"bg_contrast": 0.0, "bg_noise": 0.0, "pixel_noise": 0.0, "n_distractors": (0, 0)}


def _centre_disc(shape: str, n: int = 1, size: int = 32, radius: float = 10.0) -> np.ndarray:
    canvas = np.zeros((n, 3, size, size), dtype=np.float32)
    draw_shape(
        canvas, shape, np.full((n, 2), size / 2), np.full(n, radius), np.zeros(n), np.ones((n, 3))
    )
    return canvas


def test_registered_and_reexported() -> None:
    assert Scenes.name == "scenes"
    assert samecurve.data.Scenes is Scenes
    assert len(Scenes.class_names) == Scenes.num_classes == 10
    assert len(set(Scenes.class_names)) == 10
    assert Scenes.input_shape == (3, 32, 32)
    assert not set(OBJECT_SHAPES) & set(DISTRACTOR_SHAPES)


def test_shape_dtype_range() -> None:
    x, y = Scenes().sample(57, seed=3)
    assert x.shape == (57, 3, 32, 32) and x.dtype == np.float32
    assert y.shape == (57,) and y.dtype == np.int64
    assert x.min() >= 0.0 and x.max() <= 1.0
    assert np.isfinite(x).all()
    assert set(np.unique(y)) <= set(range(10))
    x64, _ = Scenes(size=64).sample(4, seed=0)
    assert x64.shape == (4, 3, 64, 64)


def test_deterministic_per_seed_and_different_across_seeds() -> None:
    ds = Scenes()
    xa, ya = ds.sample(200, seed=11)
    xb, yb = Scenes().sample(200, seed=11)
    np.testing.assert_array_equal(xa, xb)
    np.testing.assert_array_equal(ya, yb)
    xc, yc = ds.sample(200, seed=12)
    assert not np.array_equal(ya, yc)
    # Every image differs, not just a few: a seed must not be ignored anywhere.
    assert (np.abs(xa - xc).reshape(200, -1).max(axis=1) > 0.1).all()


def test_config_changes_images_and_is_json() -> None:
    a, b = Scenes(), Scenes(min_contrast=0.6, max_rotation=40.0)
    assert json.loads(json.dumps(a.config())) == a.config()
    assert a.config() != b.config()
    assert not np.array_equal(a.sample(20, seed=0)[0], b.sample(20, seed=0)[0])


def test_bad_config_is_refused() -> None:
    with pytest.raises(KeyError):
        Scenes(distractor_shapes=("no-such-shape",))
    with pytest.raises(ValueError):
        Scenes(n_distractors=(3, 1))


def test_class_balance() -> None:
    _, y = Scenes().sample(1000, seed=5)
    np.testing.assert_array_equal(np.bincount(y, minlength=10), np.full(10, 100))
    _, y = Scenes().sample(1007, seed=5)
    counts = np.bincount(y, minlength=10)
    assert counts.max() - counts.min() <= 1
    assert not np.array_equal(y[:20], np.arange(20) % 10)  # shuffled, not round-robin order


@pytest.mark.parametrize("shape", sorted(SHAPES))
def test_every_shape_draws_something(shape: str) -> None:
    canvas = _centre_disc(shape)
    area = canvas[0, 0].sum()
    # A visible shape that fits in the frame: more than a few pixels, less than the canvas.
    assert 40 < area < 0.9 * np.pi * 10.5**2
    assert canvas[0, :, 0, 0].max() == 0.0  # nothing outside the shape's radius


def test_object_shapes_are_distinct() -> None:
    masks = {s: _centre_disc(s)[0, 0] > 0.5 for s in OBJECT_SHAPES}
    names = list(masks)
    for i, a in enumerate(names):
        for b in names[i + 1 :]:
            iou = (masks[a] & masks[b]).sum() / (masks[a] | masks[b]).sum()
            assert iou < 0.9, (a, b, iou)


def test_each_class_draws_its_own_object() -> None:
    # With a plain background, the object is the only thing: classes must differ in mask.
    x, y = Scenes(**PLAIN, max_rotation=0.0, max_offset=0.0, object_size=(0.3, 0.3)).sample(
        100, seed=0
    )
    fg = np.abs(x - x[:, :, :1, :1]).sum(axis=1) > 0.05
    assert (fg.reshape(100, -1).sum(axis=1) > 40).all()
    mean_masks = np.stack([fg[y == k].mean(axis=0) for k in range(10)])
    for k in range(10):
        # Same class: the same geometry up to anti-aliased edge pixels; other classes: different.
        assert (fg[y == k] ^ fg[y == k][0]).reshape(-1, 32 * 32).sum(axis=1).max() <= 8
        others = np.abs(mean_masks - mean_masks[k]).reshape(10, -1).sum(axis=1)
        assert np.sort(others)[1] > 30


def test_draw_shape_in_place_and_mask() -> None:
    rng = np.random.default_rng(0)
    canvas = rng.uniform(0, 1, (3, 3, 32, 32)).astype(np.float32)
    before = canvas.copy()
    alpha = draw_shape(
        canvas,
        "hoop",
        np.array([[5.0, 5.0], [16.0, 16.0], [27.0, 20.0]]),
        np.array([3.0, 3.0, 3.0]),
        np.zeros(3),
        np.array([[1.0, 0, 0]] * 3),
    )
    assert alpha.shape == (3, 32, 32)
    changed = np.abs(canvas - before).max(axis=1) > 0
    np.testing.assert_array_equal(changed, alpha > 0)
    for i, (cx, cy) in enumerate([(5, 5), (16, 16), (27, 20)]):
        ys, xs = np.nonzero(alpha[i] > 0.5)
        assert abs(xs.mean() + 0.5 - cx) < 1 and abs(ys.mean() + 0.5 - cy) < 1
    full = canvas.transpose(0, 2, 3, 1)[alpha == 1.0]  # fully covered pixels take the colour
    assert len(full) > 0
    np.testing.assert_allclose(full, np.tile([1.0, 0.0, 0.0], (len(full), 1)))
    with pytest.raises(KeyError):
        draw_shape(canvas, "nonagon", np.zeros((3, 2)), np.ones(3), np.zeros(3), np.ones((3, 3)))


def test_objects_vary_in_position_size_colour() -> None:
    x, _ = Scenes(**PLAIN).sample(300, seed=1)
    bg = x[:, :, :1, :1]  # corners are always background at default offsets and sizes
    fg = np.abs(x - bg).sum(axis=1) > 0.05
    area = fg.reshape(300, -1).sum(axis=1)
    assert (area > 30).all()
    yy, xx = np.mgrid[:32, :32]
    cx = (fg * xx).reshape(300, -1).sum(axis=1) / area
    cy = (fg * yy).reshape(300, -1).sum(axis=1) / area
    colour = np.stack([(x[:, c] * fg).reshape(300, -1).sum(axis=1) / area for c in range(3)], 1)
    assert cx.std() > 1.0 and cy.std() > 1.0
    assert area.std() / area.mean() > 0.1
    assert colour.std(axis=0).min() > 0.15


def test_objects_vary_in_rotation() -> None:
    # Centre and size fixed: any change in a class's mask comes from rotation.
    x, y = Scenes(**PLAIN, max_offset=0.0, object_size=(0.3, 0.3)).sample(100, seed=4)
    fg = np.abs(x - x[:, :, :1, :1]).sum(axis=1) > 0.05
    for k in (Scenes.class_names.index("square"), Scenes.class_names.index("tee")):
        diff = (fg[y == k] ^ fg[y == k][0]).reshape(-1, 32 * 32).sum(axis=1)
        assert np.median(diff) > 10


def test_backgrounds_are_textured_and_distractors_drawn() -> None:
    x, _ = Scenes(n_distractors=(0, 0), pixel_noise=0.0).sample(100, seed=2)
    corner = x[:, :, :8, :8].reshape(100, 3, -1)
    assert np.median(corner.std(axis=2).max(axis=1)) > 0.02  # not flat
    x0, _ = Scenes(**PLAIN).sample(100, seed=2)
    x2, _ = Scenes(**{**PLAIN, "n_distractors": (2, 2)}).sample(100, seed=2)
    changed = (np.abs(x2 - x0).max(axis=1) > 0.05).reshape(100, -1).sum(axis=1)
    assert (changed >= 4).all()  # every image got visible distractors
    assert (changed < 0.25 * 32 * 32).all()  # and they are small


def test_speed_10k() -> None:
    t0 = time.perf_counter()
    x, _ = Scenes().sample(10_000, seed=0)
    assert time.perf_counter() - t0 < 10.0
    assert x.shape[0] == 10_000


@pytest.mark.slow
def test_small_cnn_learns_but_not_perfectly() -> None:
    """The zoo's recipe on the default config: near 90%, never 100%, never chance."""
    torch = pytest.importorskip("torch")
    from samecurve.zoo.archs import small_cnn

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        ds = Scenes()
        xtr, ytr = (torch.from_numpy(a) for a in ds.sample(8000, seed=100))
        xte, yte = (torch.from_numpy(a) for a in ds.sample(1000, seed=200))
        torch.manual_seed(0)
        model = small_cnn()
        opt = torch.optim.Adam(model.parameters(), lr=2e-3)
        gen = torch.Generator().manual_seed(0)
        for _ in range(8):
            perm = torch.randperm(len(xtr), generator=gen)
            for i in range(0, len(xtr), 128):
                b = perm[i : i + 128]
                loss = torch.nn.functional.cross_entropy(model(xtr[b]), ytr[b])
                opt.zero_grad()
                loss.backward()
                opt.step()
        with torch.no_grad():
            acc = (model(xte).argmax(1) == yte).float().mean().item()
    finally:
        torch.set_num_threads(threads)
    assert 0.8 <= acc <= 0.985, acc
