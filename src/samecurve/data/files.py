"""Users' own images as registered datasets: IDX files (as MNIST and
Fashion-MNIST ship them), a folder with one subfolder per class, or an .npz
archive. All three load into an `ArrayDataset`, so they share its partition and
sampling; config() carries a sha256 of the file contents next to the path, so
editing a file changes the content hash of every subject built from it.

Every problem with the input raises `DataError` with one line that names the
file or folder, says what is wrong and how to fix it."""

from __future__ import annotations

import gzip
import hashlib
import json
import time
import zipfile
import zlib
from pathlib import Path

import numpy as np

from samecurve.data.arrays import (
    ArrayDataset,
    Arrays,
    DataError,
    cached_arrays,
    check_labels,
    resize,
    to_unit_float,
)
from samecurve.registry import register

IDX_TYPES: dict[int, np.dtype] = {
    0x08: np.dtype("u1"),
    0x09: np.dtype("i1"),
    0x0B: np.dtype(">i2"),
    0x0C: np.dtype(">i4"),
    0x0D: np.dtype(">f4"),
    0x0E: np.dtype(">f8"),
}
IMAGE_EXTENSIONS: tuple[str, ...] = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp")
GZIP_MAGIC = b"\x1f\x8b"

# ---------------------------------------------------------------- helpers


def _check_file(path: Path, what: str) -> None:
    if not path.exists():
        raise DataError(f"{path}: no such file; check the {what} path")
    if not path.is_file():
        raise DataError(f"{path}: is not a regular file; the {what} path must name a file")


_DIGESTS: dict[tuple[str, int, int, int], str] = {}
_RACY_NS = 2_000_000_000  # a file changed this recently may change again within one mtime tick


def file_sha256(path: str | Path, what: str = "data") -> str:
    """sha256 of a file's contents, remembered per (path, size, mtime, inode) so
    the zoo's repeated constructions do not re-read large files. As in git, a
    file modified in the last two seconds is always re-read: a second edit
    within the same timestamp tick would otherwise go unseen."""
    path = Path(path)
    _check_file(path, what)
    try:
        st = path.stat()
        key = (str(path.resolve()), st.st_size, st.st_mtime_ns, st.st_ino)
        if key in _DIGESTS:
            return _DIGESTS[key]
        with open(path, "rb") as f:
            digest = hashlib.file_digest(f, "sha256").hexdigest()
    except OSError as exc:
        raise DataError(f"{path}: cannot be read ({exc.strerror}); check its permissions") from exc
    if time.time_ns() - st.st_mtime_ns > _RACY_NS:
        if len(_DIGESTS) >= 65536:
            _DIGESTS.clear()
        _DIGESTS[key] = digest
    return digest


def _cache_key(name: str, params: dict) -> str:
    return json.dumps([name, params], sort_keys=True)


def _check_size(size: int | None, source: str) -> int | None:
    if size is None:
        return None
    if int(size) != size or int(size) < 1:
        raise DataError(f"{source}: size {size!r} must be a positive whole number of pixels")
    return int(size)


def _to_nchw(x: np.ndarray, source: str, channels_first: bool = True) -> np.ndarray:
    """(N, H, W), (N, H, W, C) or, if allowed, (N, C, H, W) -> float32 (N, C, H, W)."""
    layouts = (
        "(N, H, W), (N, H, W, C) or (N, C, H, W)" if channels_first else "(N, H, W) or (N, H, W, C)"
    )
    shape = x.shape
    if x.ndim == 3:
        return to_unit_float(x, source)[:, None]
    if x.ndim == 4:
        first = channels_first and shape[1] in (1, 3)
        last = shape[3] in (1, 3)
        if first and (not last or shape[2] == shape[3]):
            return np.ascontiguousarray(to_unit_float(x, source))
        if last:
            return np.ascontiguousarray(to_unit_float(x, source).transpose(0, 3, 1, 2))
    raise DataError(
        f"{source}: images have shape {shape}; expected {layouts} with C 1 or 3 "
        "(one grey or RGB image per row)"
    )


def _square(x: np.ndarray, size: int | None, source: str) -> np.ndarray:
    """Resize to `size`, or insist the images are already square when it is None."""
    if size is None:
        h, w = x.shape[-2:]
        if h != w:
            raise DataError(f"{source}: images are {h}x{w}, not square; pass size=N to resize them")
        return x
    return resize(x, size)


# ---------------------------------------------------------------- IDX


def read_idx(path: str | Path) -> np.ndarray:
    """Parse an IDX file (the MNIST format), gzipped or not; gzip is detected
    by its magic bytes, not the suffix. The header is two zero bytes, a type
    code, a dimension count, then one big-endian int32 per dimension."""
    path = Path(path)
    _check_file(path, "IDX")
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise DataError(f"{path}: cannot be read ({exc.strerror}); check its permissions") from exc
    if data[:2] == GZIP_MAGIC:
        try:
            data = gzip.decompress(data)
        except (OSError, EOFError, zlib.error) as exc:
            raise DataError(
                f"{path}: gzip data is corrupt or truncated ({exc}); download the file again"
            ) from exc
    if len(data) < 4:
        raise DataError(
            f"{path}: only {len(data)} bytes, too short for an IDX header; "
            "is this an IDX file (e.g. train-images-idx3-ubyte)?"
        )
    if data[0] != 0 or data[1] != 0:
        raise DataError(
            f"{path}: wrong magic number 0x{data[:4].hex()} (an IDX file starts with two zero "
            "bytes); is this an IDX file (e.g. train-images-idx3-ubyte)?"
        )
    code, ndim = data[2], data[3]
    if code not in IDX_TYPES:
        known = ", ".join(f"0x{c:02x}" for c in IDX_TYPES)
        raise DataError(
            f"{path}: unsupported IDX type code 0x{code:02x} (known: {known}); "
            "the file is corrupt or not IDX"
        )
    header = 4 + 4 * ndim
    if len(data) < header:
        raise DataError(
            f"{path}: truncated: the header declares {ndim} dimensions but the file ends after "
            f"{len(data)} bytes; download the file again"
        )
    dims = tuple(int(d) for d in np.frombuffer(data, ">i4", ndim, 4))
    if any(d < 0 for d in dims):
        raise DataError(f"{path}: negative dimension in IDX header {dims}; the file is corrupt")
    dtype = IDX_TYPES[code]
    count = int(np.prod(dims, dtype=np.int64)) if dims else 1
    expected, body = count * dtype.itemsize, len(data) - header
    if body < expected:
        raise DataError(
            f"{path}: truncated: the header declares shape {dims} ({expected} bytes of data) but "
            f"only {body} bytes follow; download the file again"
        )
    if body > expected:
        raise DataError(
            f"{path}: {body - expected} bytes beyond the shape {dims} the header declares; "
            "the file is corrupt or not IDX"
        )
    return np.frombuffer(data, dtype, count, header).reshape(dims)


def _load_idx(images: Path, labels: Path, size: int | None) -> Arrays:
    raw = read_idx(images)
    if raw.ndim not in (3, 4):
        raise DataError(
            f"{images}: IDX images have shape {raw.shape}; expected (N, H, W) or (N, H, W, C); "
            "did you swap the images and labels files?"
        )
    lab = read_idx(labels)
    if lab.ndim != 1:
        raise DataError(
            f"{labels}: labels file has shape {lab.shape}, expected 1-D (one label per image); "
            "did you swap the images and labels files?"
        )
    if lab.shape[0] != raw.shape[0]:
        raise DataError(
            f"{labels}: {lab.shape[0]} labels but {images} has {raw.shape[0]} images; "
            "pair each images file with its own labels file (train with train, t10k with t10k)"
        )
    y = check_labels(lab, str(labels))
    x = _square(_to_nchw(raw, str(images), channels_first=False), size, str(images))
    return np.ascontiguousarray(x, dtype=np.float32), y, None


@register("dataset", "idx")
class Idx(ArrayDataset):
    """Images and labels in two IDX files, gzipped or not, exactly as MNIST and
    Fashion-MNIST are distributed, so those (or any IDX export) drop in with no
    conversion. Labels are integers 0..K-1 (K = max + 1); `size` resizes, None
    keeps the native (square) size."""

    def __init__(self, images: str, labels: str, size: int | None = None) -> None:
        img, lab = Path(images), Path(labels)
        size = _check_size(size, str(img))
        params = {
            "images": str(images),
            "labels": str(labels),
            "size": size,
            "images_sha256": file_sha256(img, "images"),
            "labels_sha256": file_sha256(lab, "labels"),
        }
        x, y, names = cached_arrays(_cache_key("idx", params), lambda: _load_idx(img, lab, size))
        super().__init__(x, y, names, source=str(img), params=params)


# ---------------------------------------------------------------- image folder


def _scan_folder(root: Path) -> tuple[list[str], list[tuple[int, Path]]]:
    """Class names (sorted subfolder names) and (class index, file) pairs."""
    if not root.exists():
        raise DataError(f"{root}: no such folder; check the root path")
    if not root.is_dir():
        raise DataError(
            f"{root}: is a file, not a folder; root must be a folder with one subfolder per class"
        )
    example = f"e.g. {root / 'cat' / '1.png'}"
    entries = [p for p in root.iterdir() if not p.name.startswith(".")]
    if not entries:
        raise DataError(
            f"{root}: folder is empty; put each class's images in its own subfolder, {example}"
        )
    classes = sorted(p.name for p in entries if p.is_dir())
    if not classes:
        raise DataError(
            f"{root}: no class subfolders (only files); put each class's images in its own "
            f"subfolder, {example}"
        )
    files: list[tuple[int, Path]] = []
    for k, name in enumerate(classes):
        folder = root / name
        found = sorted(
            p
            for p in folder.rglob("*")
            if p.suffix.lower() in IMAGE_EXTENSIONS
            and p.is_file()
            and not any(part.startswith(".") for part in p.relative_to(folder).parts)
        )
        if not found:
            raise DataError(
                f"{folder}: class folder has no images ({'/'.join(IMAGE_EXTENSIONS)}); "
                "add some or remove the folder"
            )
        files.extend((k, p) for p in found)
    return classes, files


def _read_image(path: Path, size: int, channels: int) -> np.ndarray:
    from PIL import Image, ImageOps

    try:
        with Image.open(path) as im:
            im = ImageOps.exif_transpose(im) or im
            im = im.convert("RGB" if channels == 3 else "L")
            im = im.resize((size, size), Image.Resampling.BILINEAR)
            return np.asarray(im, dtype=np.uint8)
    except Exception as exc:  # Pillow raises many types for a bad file
        raise DataError(
            f"{path}: cannot be read as an image ({type(exc).__name__}: {exc}); "
            "replace or delete the file"
        ) from exc


def _load_folder(
    files: list[tuple[int, Path]], classes: list[str], size: int, channels: int
) -> Arrays:
    x = np.empty((len(files), channels, size, size), dtype=np.float32)
    for i, (_, path) in enumerate(files):
        img = _read_image(path, size, channels).astype(np.float32) / np.float32(255.0)
        x[i] = img[None] if channels == 1 else img.transpose(2, 0, 1)
    y = np.array([k for k, _ in files], dtype=np.int64)
    return x, y, tuple(classes)


@register("dataset", "imagefolder")
class ImageFolder(ArrayDataset):
    """A folder with one subfolder per class (sorted subfolder names are the
    class names), the layout most people already have their photos in. Files
    ending in png/jpg/jpeg/bmp/gif/webp, at any depth under a class folder, are
    read with Pillow, converted to RGB (channels=3) or grey (channels=1) and
    resized to size x size."""

    def __init__(self, root: str, size: int = 32, channels: int = 3) -> None:
        path = Path(root)
        size = _check_size(size, str(path)) or 32
        channels = int(channels)
        if channels not in (1, 3):
            raise DataError(f"{path}: channels {channels} must be 1 (grey) or 3 (RGB)")
        classes, files = _scan_folder(path)
        h = hashlib.sha256()
        for k, file in files:
            rel = file.relative_to(path).as_posix()
            h.update(f"{k}\0{rel}\0{file_sha256(file, 'image')}\n".encode())
        params = {"root": str(root), "size": size, "channels": channels, "sha256": h.hexdigest()}
        x, y, names = cached_arrays(
            _cache_key("imagefolder", params), lambda: _load_folder(files, classes, size, channels)
        )
        super().__init__(x, y, names, source=str(path), params=params)


# ---------------------------------------------------------------- npz


def _npz_member(archive: np.lib.npyio.NpzFile, key: str, path: Path) -> np.ndarray:
    if key not in archive.files:
        raise DataError(
            f"{path}: no array {key!r} (it has {sorted(archive.files)}); "
            "pass x_key=/y_key= naming the right ones"
        )
    try:
        arr = archive[key]
    except ValueError as exc:
        raise DataError(
            f"{path}: array {key!r} holds Python objects, which are never unpickled; "
            "save numeric arrays (e.g. np.stack the images as uint8)"
        ) from exc
    except (OSError, EOFError, zipfile.BadZipFile, zlib.error) as exc:
        raise DataError(
            f"{path}: array {key!r} cannot be read ({exc}); save the file again"
        ) from exc
    if arr.dtype.hasobject:
        raise DataError(
            f"{path}: array {key!r} holds Python objects, which are never unpickled; "
            "save numeric arrays (e.g. np.stack the images as uint8)"
        )
    return arr


def _load_npz(path: Path, x_key: str, y_key: str, size: int | None) -> Arrays:
    try:
        archive = np.load(path, allow_pickle=False)
    except ValueError as exc:
        raise DataError(
            f"{path}: neither an .npz archive nor a .npy array (numpy would have to unpickle it, "
            "which is never done); save with np.savez(path, x=images, y=labels)"
        ) from exc
    except (OSError, EOFError, zipfile.BadZipFile) as exc:
        raise DataError(
            f"{path}: not a readable .npz archive ({exc}); save with np.savez(path, x=images, y=labels)"
        ) from exc
    if not isinstance(archive, np.lib.npyio.NpzFile):
        raise DataError(
            f"{path}: holds a single array, not an .npz archive; "
            "save images and labels together with np.savez(path, x=images, y=labels)"
        )
    with archive:
        raw = _npz_member(archive, x_key, path)
        lab = _npz_member(archive, y_key, path)
    source = f"{path}[{x_key!r}]"
    y = check_labels(lab, f"{path}[{y_key!r}]")
    n_images = raw.shape[0] if raw.ndim else 0
    if y.shape[0] != n_images:
        raise DataError(
            f"{path}: {x_key!r} has {n_images} images but {y_key!r} has "
            f"{y.shape[0]} labels; give exactly one label per image"
        )
    x = _square(_to_nchw(raw, source), size, source)
    return np.ascontiguousarray(x, dtype=np.float32), y, None


@register("dataset", "npz")
class Npz(ArrayDataset):
    """Images and labels saved with np.savez: the simplest hand-off from any
    pipeline. x is (N, H, W), (N, H, W, C) or (N, C, H, W) with C 1 or 3, uint8
    or floats in [0, 1]; y holds integers 0..K-1. Loaded with
    allow_pickle=False: object arrays are refused, never unpickled."""

    def __init__(
        self, path: str, size: int | None = None, x_key: str = "x", y_key: str = "y"
    ) -> None:
        file = Path(path)
        size = _check_size(size, str(file))
        params = {
            "path": str(path),
            "size": size,
            "x_key": x_key,
            "y_key": y_key,
            "sha256": file_sha256(file, "npz"),
        }
        x, y, names = cached_arrays(
            _cache_key("npz", params), lambda: _load_npz(file, x_key, y_key, size)
        )
        super().__init__(x, y, names, source=str(file), params=params)
