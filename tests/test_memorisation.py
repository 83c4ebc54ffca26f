"""The memorisation measurements' rules (the 1/3 criterion, owned images, the measured time) on hand-made cases."""

import math

import numpy as np

from empirical.measure.memorisation import copy_fraction, measured_time, owned_images


def test_copy_rule_is_one_third_of_the_second_nearest():
    Y = np.array([[0.0, 0.0], [3.0, 0.0], [0.0, 4.0]])
    # nearest 0.9 vs second 2.1 (0.9 > 2.1 / 3 = 0.7): not a copy; nearest 0.5 vs 2.5: a copy.
    S = np.array([[0.9, 0.0], [2.5, 0.0], [0.0, 0.1]])
    assert copy_fraction(S, Y) == 2 / 3


def test_owned_images_scale_by_kappa():
    Y = np.array([[0.0, 0.0], [1.0, 0.0], [5.0, 0.0]])
    kappa = 0.8
    X = kappa * np.array([[0.3, 0.0], [1.0, 0.05], [3.0, 0.0]])  # the denoised points x / kappa
    assert owned_images(X, Y, kappa).tolist() == [True, True, False]  # 0.3 < 1/3; 0.05 < 1/3; 2 > 4/3
    assert owned_images(np.zeros((0, 2)), Y, kappa).tolist() == [False] * 3


def test_measured_time_is_the_largest_full_grid_time():
    rows = [{"t": 0.1, "n_owned": 4}, {"t": 0.2, "n_owned": 4}, {"t": 0.3, "n_owned": 3}, {"t": 0.4, "n_owned": 1}]
    assert measured_time(rows, 4) == (0.2, 0.3)
    t, above = measured_time(rows[2:], 4)
    assert math.isnan(t) and math.isnan(above)
