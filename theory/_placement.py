"""Where the data of the field lives: rows padded to few compiled shapes, sharded over jax devices."""

from __future__ import annotations

import jax
import numpy as np

PAD_LOGW = -1e300  # log-weight of padding rows: zero posterior weight, and finite (no inf - inf)


def _pad_rows(X):
    """X (n, d) padded to a power-of-two number of rows (copies of its first row): few compiled shapes."""
    X = np.asarray(X)
    m = 1 << max(0, int(len(X) - 1).bit_length())
    return X if m == len(X) else np.concatenate([X, np.repeat(X[:1], m - len(X), axis=0)])


def farthest_points(P, n, seed):
    """Deterministic farthest-point subset of the rows of P (the first one chosen by ``seed``)."""
    rng = np.random.default_rng(seed)
    idx = [int(rng.integers(len(P)))]
    sq = np.einsum("ij,ij->i", P, P)  # squared distances by |p|^2 - 2 p.q + |q|^2: a product, no N x d difference

    def dist2(j):
        return sq - 2.0 * (P @ P[j]) + sq[j]

    d2 = dist2(idx[0])
    for _ in range(n - 1):
        idx.append(int(np.argmax(d2)))
        d2 = np.minimum(d2, dist2(idx[-1]))
    return np.array(idx)


def _place(params, devices):
    """The data arrays on the device(s): sharded along the points when several devices are used.

    Padding rows (to a multiple of the device count) get log-weight PAD_LOGW: zero posterior weight.
    """
    devices = jax.local_devices() if devices is None else list(devices)
    if len(devices) <= 1:  # committed to that device: the computations on the data run there
        return tuple(jax.device_put(np.asarray(a), devices[0]) for a in params)
    from jax.sharding import Mesh, NamedSharding, PartitionSpec

    n = len(params[0])
    m = -(-n // len(devices)) * len(devices)
    mesh = Mesh(np.array(devices), ("data",))
    out = []
    for i, a in enumerate(params):
        if m > n:
            fill = np.full((m - n,) + a.shape[1:], PAD_LOGW if _is_logw(i, params) else 0.0)
            if a.ndim == 3:  # the eigenbases of a Gaussian mixture: identity keeps them orthogonal
                fill = np.broadcast_to(np.eye(a.shape[1]), fill.shape).copy()
            elif a.ndim == 2 and len(params) == 4 and i == 2:  # Gaussian mixture eigenvalues: 1
                fill = np.ones_like(fill)
            a = np.concatenate([a, fill])
        out.append(jax.device_put(a, NamedSharding(mesh, PartitionSpec("data"))))
    return tuple(out)


def _is_logw(i, params):
    """The log-weights are the second array of a DeltaMixture's params and the last of a Gaussian mixture's."""
    return i == (1 if len(params) == 3 else len(params) - 1)
