"""The project's classifier: held-out accuracy on the digits, the CNN path, features, and checkpoints."""

import numpy as np
import pytest
import torch

from empirical.data.datasets import load_dataset
from empirical.metrics.classifier import Classifier, train_classifier

pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def digits_split():
    ds = load_dataset("digits")
    perm = np.random.default_rng(0).permutation(len(ds.x))
    return ds, perm[:1400], perm[1400:]


@pytest.fixture(scope="module")
def digits_clf(digits_split):
    ds, train, _ = digits_split
    return train_classifier(ds.x[train], ds.labels[train], ds.image_shape, steps=200, seed=0, lr=3e-3, batch_size=256)


def test_held_out_accuracy(digits_split, digits_clf):
    ds, _, test = digits_split
    pred = digits_clf.predict(ds.x[test])
    assert pred.shape == (len(test),) and pred.dtype == np.int64
    assert np.mean(pred == ds.labels[test]) > 0.9  # 397 unseen images; chance is 0.1


def test_features_and_logits(digits_split, digits_clf):
    ds, _, test = digits_split
    f, z = digits_clf.features(ds.x[test[:50]]), digits_clf.logits(ds.x[test[:50]])
    assert f.shape == (50, 256) and f.dtype == np.float64 and np.all(f >= 0)  # after a ReLU
    assert z.shape == (50, 10)
    # The logits are the head applied to the features, and the batch size does not matter.
    head = digits_clf.head
    np.testing.assert_allclose(
        z, f @ head.weight.detach().numpy().T.astype(np.float64) + head.bias.detach().numpy(), atol=1e-4
    )
    np.testing.assert_allclose(digits_clf.logits(ds.x[test[:50]], batch_size=7), z, atol=1e-5)


def test_save_load_round_trip(tmp_path, digits_split, digits_clf):
    ds, _, test = digits_split
    path = tmp_path / "clf.pt"
    digits_clf.save(path)
    assert [p.name for p in tmp_path.iterdir()] == ["clf.pt"]  # no temporary file left behind
    loaded = Classifier.load(path)
    np.testing.assert_array_equal(loaded.logits(ds.x[test]), digits_clf.logits(ds.x[test]))
    assert loaded.config == digits_clf.config


def test_cnn_path_learns_a_separable_task():
    # 28x28 images with a bright bar at a class-dependent row: the CNN separates them in a few steps.
    rng = np.random.default_rng(1)
    labels = rng.integers(0, 3, 300)
    x = -1.0 + 0.3 * rng.random((300, 28, 28))
    for i, c in enumerate(labels):
        x[i, 6 + 7 * c : 9 + 7 * c, 4:24] = 1.0
    x = x.reshape(300, 784)
    clf = train_classifier(x[:200], labels[:200], (28, 28), steps=40, seed=0, batch_size=32)
    assert isinstance(clf.body[1], torch.nn.Conv2d)
    assert clf.features(x[200:]).shape == (100, 256)
    assert np.mean(clf.predict(x[200:]) == labels[200:]) > 0.9


def test_seeded():
    ds = load_dataset("digits", n=200, seed=0)
    a, b = (train_classifier(ds.x, ds.labels, (8, 8), steps=5, seed=3) for _ in range(2))
    np.testing.assert_array_equal(a.logits(ds.x), b.logits(ds.x))


def test_errors():
    x, y = np.zeros((4, 64)), np.array([0, 1, 0, 1])
    with pytest.raises(ValueError, match=r"x must have shape \(n, 784\) for image_shape \(28, 28\)"):
        train_classifier(x, y, (28, 28))
    with pytest.raises(ValueError, match=r"labels must have shape \(4,\)"):
        train_classifier(x, y[:3], (8, 8))
    with pytest.raises(ValueError, match=r"labels must lie in \[0, n_classes=2\)"):
        train_classifier(x, np.array([0, 1, 2, 1]), (8, 8), n_classes=2)
    with pytest.raises(ValueError, match="steps must be an integer >= 1"):
        train_classifier(x, y, (8, 8), steps=0)
