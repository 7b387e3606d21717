"""Tests for users' own data: IDX (plain and gzipped), image folders and .npz
archives load faithfully, their config tracks the file contents, and every
kind of bad input raises one DataError that names the file and the problem."""

from __future__ import annotations

import gzip
import json
import re
import struct
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from samecurve.data import DataError, Idx, ImageFolder, Npz, read_idx
from samecurve.data.arrays import SPLITS
from samecurve.registry import get

CODES = {np.dtype("u1"): 0x08, np.dtype("i1"): 0x09, np.dtype(">i2"): 0x0B, np.dtype(">f4"): 0x0D}


def write_idx(path: Path, arr: np.ndarray, code: int | None = None) -> Path:
    """IDX as MNIST ships it: 0, 0, type code, ndim, big-endian int32 dims, data."""
    arr = np.asarray(arr)
    dtype = arr.dtype.newbyteorder(">") if arr.dtype.itemsize > 1 else arr.dtype
    header = struct.pack(">BBBB", 0, 0, CODES[dtype] if code is None else code, arr.ndim)
    header += struct.pack(f">{arr.ndim}i", *arr.shape)
    path.write_bytes(header + arr.astype(dtype).tobytes())
    return path


def gzip_copy(src: Path, dst: Path) -> Path:
    dst.write_bytes(gzip.compress(src.read_bytes()))
    return dst


def _raises(match_path: Path | str, fn, *args, **kwargs) -> str:  # type: ignore[no-untyped-def]
    """Call fn, expect a one-line DataError naming `match_path`; return its message."""
    with pytest.raises(DataError) as info:
        fn(*args, **kwargs)
    msg = str(info.value)
    assert str(match_path) in msg, msg
    assert "\n" not in msg
    return msg


@pytest.fixture
def mnistish(tmp_path: Path) -> tuple[Path, Path, np.ndarray, np.ndarray]:
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (40, 8, 8), dtype=np.uint8)
    labels = (np.arange(40) % 4).astype(np.uint8)
    return (
        write_idx(tmp_path / "train-images-idx3-ubyte", images),
        write_idx(tmp_path / "train-labels-idx1-ubyte", labels),
        images,
        labels,
    )


# ---------------------------------------------------------------- IDX


def test_idx_round_trip(mnistish) -> None:  # type: ignore[no-untyped-def]
    img, lab, images, labels = mnistish
    ds = Idx(str(img), str(lab))
    assert get("dataset", "idx") is Idx
    assert ds.input_shape == (1, 8, 8) and ds.num_classes == 4
    assert ds.class_names == ("0", "1", "2", "3")
    assert np.array_equal(ds.x[:, 0], images.astype(np.float32) / 255)
    assert np.array_equal(ds.y, labels)
    x, y = ds.sample(ds.pool_size("train"), seed=0)
    assert x.shape == (28, 1, 8, 8) and np.bincount(y).tolist() == [7, 7, 7, 7]
    cfg = ds.config()
    assert cfg["images"] == str(img) and len(cfg["images_sha256"]) == 64
    assert json.loads(json.dumps(cfg)) == cfg


def test_gzip_and_plain_idx_are_identical(mnistish, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    img, lab, *_ = mnistish
    plain = Idx(str(img), str(lab))
    zipped = Idx(
        str(gzip_copy(img, tmp_path / "img.gz")), str(gzip_copy(lab, tmp_path / "lab-no-suffix"))
    )
    assert np.array_equal(plain.x, zipped.x) and np.array_equal(plain.y, zipped.y)
    for split in SPLITS:
        a, b = plain.sample(9, seed=1, split=split), zipped.sample(9, seed=1, split=split)
        assert np.array_equal(a[0], b[0]) and np.array_equal(a[1], b[1])


def test_idx_types_rgb_and_resize(tmp_path: Path) -> None:
    rng = np.random.default_rng(1)
    floats = rng.random((20, 5, 5, 3)).astype(">f4")
    img = write_idx(tmp_path / "rgb.idx", floats)
    lab = write_idx(tmp_path / "lab.idx", (np.arange(20) % 3).astype(">i2"))
    ds = Idx(str(img), str(lab))
    assert ds.input_shape == (3, 5, 5)
    assert np.allclose(ds.x, floats.astype(np.float32).transpose(0, 3, 1, 2))
    big = Idx(str(img), str(lab), size=12)
    assert big.input_shape == (3, 12, 12) and big.sample(4, seed=0)[0].shape == (4, 3, 12, 12)
    assert big.config() != ds.config()
    assert read_idx(lab).dtype.itemsize == 2


def test_idx_config_follows_contents(mnistish) -> None:  # type: ignore[no-untyped-def]
    img, lab, images, _ = mnistish
    before = Idx(str(img), str(lab)).config()
    assert Idx(str(img), str(lab)).config() == before
    write_idx(img, 255 - images)  # same size, same path, new pixels
    after = Idx(str(img), str(lab))
    assert after.config() != before
    assert np.array_equal(after.x[:, 0], (255 - images).astype(np.float32) / 255)


def test_idx_bad_inputs(mnistish, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    img, lab, images, labels = mnistish
    data = img.read_bytes()

    short = tmp_path / "short-idx"
    short.write_bytes(data[:-5])
    assert "truncated" in _raises(short, Idx, str(short), str(lab))
    short_gz = gzip_copy(short, tmp_path / "short.gz")
    assert "truncated" in _raises(short_gz, Idx, str(short_gz), str(lab))
    broken_gz = tmp_path / "broken.gz"
    broken_gz.write_bytes(gzip.compress(data)[:-20])
    assert "gzip" in _raises(broken_gz, Idx, str(broken_gz), str(lab))
    header_only = tmp_path / "header-only"
    header_only.write_bytes(data[:6])
    assert "truncated" in _raises(header_only, Idx, str(header_only), str(lab))

    magic = tmp_path / "magic"
    magic.write_bytes(b"\x01\x02" + data[2:])
    assert "magic" in _raises(magic, Idx, str(magic), str(lab))
    png = tmp_path / "a.png"
    Image.new("L", (4, 4)).save(png)
    assert "magic" in _raises(png, Idx, str(png), str(lab))

    code = tmp_path / "code"
    code.write_bytes(data[:2] + b"\x0a" + data[3:])
    assert "type code 0x0a" in _raises(code, Idx, str(code), str(lab))

    few = write_idx(tmp_path / "few-labels", labels[:30])
    assert "30 labels" in _raises(few, Idx, str(img), str(few))
    flat = write_idx(tmp_path / "labels-2d", labels.reshape(20, 2))
    assert "1-D" in _raises(flat, Idx, str(img), str(flat))
    swapped = _raises(lab, Idx, str(lab), str(img))
    assert "swap" in swapped
    negative = write_idx(tmp_path / "neg-labels", labels.astype(np.int8) - 1)
    assert "0..K-1" in _raises(negative, Idx, str(img), str(negative))
    one = write_idx(tmp_path / "one-class", np.zeros(40, dtype=np.uint8))
    assert "2 classes" in _raises(img, Idx, str(img), str(one))
    tiny_img = write_idx(tmp_path / "tiny-img", images[:6])
    tiny_lab = write_idx(tmp_path / "tiny-lab", labels[:6])
    assert "at least 10" in _raises(tiny_img, Idx, str(tiny_img), str(tiny_lab))
    wide = write_idx(tmp_path / "wide", np.zeros((40, 4, 6), dtype=np.uint8))
    assert "size=" in _raises(wide, Idx, str(wide), str(lab))

    missing = tmp_path / "nope-idx3-ubyte"
    assert "no such file" in _raises(missing, Idx, str(missing), str(lab))
    assert "no such file" in _raises(missing, Idx, str(img), str(missing))


# ---------------------------------------------------------------- image folder

COLOURS = {"blue": (0, 0, 255), "green": (0, 255, 0), "red": (255, 0, 0)}


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    """Three classes of solid-colour images in assorted sizes, formats and modes."""
    root = tmp_path / "photos"
    for cls, rgb in COLOURS.items():
        (root / cls / "nested").mkdir(parents=True)
        for i in range(4):
            Image.new("RGB", (10 + i, 7 + 2 * i), rgb).save(root / cls / f"{i}.png")
        Image.new("RGB", (9, 9), rgb).save(root / cls / "nested" / "x.JPG", quality=100)
        Image.new("RGB", (6, 6), rgb).convert("P").save(root / cls / "p.gif")
        (root / cls / "notes.txt").write_text("not an image")
    return root


def test_imagefolder_round_trip(folder: Path) -> None:
    ds = ImageFolder(str(folder), size=8)
    assert get("dataset", "imagefolder") is ImageFolder
    assert ds.class_names == ("blue", "green", "red") and ds.num_classes == 3
    assert ds.input_shape == (3, 8, 8)
    assert np.bincount(ds.y).tolist() == [6, 6, 6]
    for k, rgb in enumerate(COLOURS.values()):
        means = ds.x[ds.y == k].mean(axis=(0, 2, 3))
        assert np.allclose(means, np.array(rgb) / 255, atol=0.03), (k, means)
    grey = ImageFolder(str(folder), size=5, channels=1)
    assert grey.input_shape == (1, 5, 5) and grey.config() != ds.config()
    x, y = grey.sample(40, seed=0)
    assert x.shape == (40, 1, 5, 5) and y.shape == (40,)


def test_imagefolder_config_follows_contents(folder: Path) -> None:
    before = ImageFolder(str(folder), size=8).config()
    assert before["root"] == str(folder) and len(before["sha256"]) == 64
    assert ImageFolder(str(folder), size=8).config() == before
    Image.new("RGB", (10, 7), (255, 255, 0)).save(folder / "red" / "0.png")
    assert ImageFolder(str(folder), size=8).config() != before


def test_imagefolder_bad_inputs(folder: Path, tmp_path: Path) -> None:
    missing = tmp_path / "nowhere"
    assert "no such folder" in _raises(missing, ImageFolder, str(missing))
    empty = tmp_path / "empty"
    empty.mkdir()
    assert "empty" in _raises(empty, ImageFolder, str(empty))
    flat = tmp_path / "flat"
    flat.mkdir()
    Image.new("RGB", (4, 4)).save(flat / "a.png")
    assert "no class subfolders" in _raises(flat, ImageFolder, str(flat))
    afile = flat / "a.png"
    assert "not a folder" in _raises(afile, ImageFolder, str(afile))
    (folder / "zebra").mkdir()
    (folder / "zebra" / "readme.md").write_text("no images here")
    assert "no images" in _raises(folder / "zebra", ImageFolder, str(folder))
    (folder / "zebra" / "z.png").write_bytes(b"\x89PNG this is not really a png")
    assert "cannot be read" in _raises(folder / "zebra" / "z.png", ImageFolder, str(folder))
    one = tmp_path / "one"
    (one / "only").mkdir(parents=True)
    for i in range(12):
        Image.new("L", (4, 4), i).save(one / "only" / f"{i}.png")
    assert "2 classes" in _raises(one, ImageFolder, str(one))


# ---------------------------------------------------------------- npz


def _xy(layout: str, n: int = 30) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(2)
    x = rng.integers(0, 256, (n, 3, 6, 6), dtype=np.uint8)
    y = np.arange(n) % 3
    return {"nchw": x, "nhwc": x.transpose(0, 2, 3, 1), "nhw": x[:, 0]}[layout], y


@pytest.mark.parametrize("layout", ["nchw", "nhwc", "nhw"])
def test_npz_layouts(layout: str, tmp_path: Path) -> None:
    x, y = _xy(layout)
    path = tmp_path / "data.npz"
    np.savez(path, x=x, y=y)
    ds = Npz(str(path))
    assert get("dataset", "npz") is Npz
    ref, _ = _xy("nchw")
    ref = ref[:, :1] if layout == "nhw" else ref
    assert np.array_equal(ds.x, ref.astype(np.float32) / 255)
    assert np.array_equal(ds.y, y) and ds.num_classes == 3


def test_npz_floats_keys_resize_and_config(tmp_path: Path) -> None:
    x, y = _xy("nchw")
    path = tmp_path / "mine.npz"
    np.savez_compressed(path, images=x / 255.0, targets=y.astype(np.int32))
    ds = Npz(str(path), size=10, x_key="images", y_key="targets")
    assert ds.input_shape == (3, 10, 10)
    assert ds.sample(100, seed=0, split="test")[0].shape == (100, 3, 10, 10)
    before = ds.config()
    assert before["path"] == str(path) and len(before["sha256"]) == 64
    np.savez_compressed(path, images=1.0 - x / 255.0, targets=y.astype(np.int32))
    assert Npz(str(path), size=10, x_key="images", y_key="targets").config() != before


def test_npz_bad_inputs(tmp_path: Path) -> None:
    x, y = _xy("nhwc")

    def save(name: str, **arrays: np.ndarray) -> Path:
        path = tmp_path / name
        np.savez(path, **arrays)
        return path

    p = save("keys.npz", images=x, y=y)
    assert "['images', 'y']" in _raises(p, Npz, str(p))
    p = save("objects.npz", x=np.array([x[0], x[1, :3]], dtype=object), y=y[:2])
    assert "never unpickled" in _raises(p, Npz, str(p))
    p = save("labels.npz", x=x, y=y + 0.5)
    assert "0..K-1" in _raises(p, Npz, str(p))
    p = save("names.npz", x=x, y=np.array(["cat", "dog", "eel"] * 10))
    assert "0..K-1" in _raises(p, Npz, str(p))
    p = save("count.npz", x=x, y=y[:-1])
    assert "29 labels" in _raises(p, Npz, str(p))
    p = save("oneclass.npz", x=x, y=np.zeros(30, dtype=np.int64))
    assert "2 classes" in _raises(p, Npz, str(p))
    p = save("tiny.npz", x=x[:4], y=y[:4])
    assert "at least 10" in _raises(p, Npz, str(p))
    p = save("rgba.npz", x=np.zeros((30, 6, 6, 4), dtype=np.uint8), y=y)
    assert "C 1 or 3" in _raises(p, Npz, str(p))
    p = save("range.npz", x=x * 2.0, y=y)
    assert "[0, 1]" in _raises(p, Npz, str(p))
    p = save("wide.npz", x=np.zeros((30, 6, 9), dtype=np.uint8), y=y)
    assert "size=" in _raises(p, Npz, str(p))

    pickled = tmp_path / "pickled.npz"
    pickled.write_bytes(b"\x80\x04\x95" + b"\x00" * 40)
    assert "unpickle" in _raises(pickled, Npz, str(pickled))
    single = tmp_path / "single.npy"
    np.save(single, x)
    assert "np.savez" in _raises(single, Npz, str(single))
    missing = tmp_path / "absent.npz"
    assert "no such file" in _raises(missing, Npz, str(missing))
    with pytest.raises(DataError, match=re.escape(str(tmp_path))):
        Npz(str(tmp_path))  # a folder, not a file
