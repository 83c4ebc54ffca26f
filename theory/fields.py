r"""The field protocol: what a vector field at frozen time t provides so that theory's continuation (branches in
t, crossings, folds) and searches work on it. ``MixtureField`` (built by ``exact_field``) is the exact field of
a finite data set or a Gaussian mixture; ``empirical.measure.fixed_points.LearnedField`` implements the same protocol
for a trained denoiser.

A field has:

    scale, T                 the data's scale (for distances) and the schedule's end time
    newton(X, t, prev=None)  -> (X, converged mask): Newton (or chord) polish of the rows of X; prev = (t0, x0)
                                a solved point nearby whose Jacobian may serve as a chord
    top_eig(x, t)            -> (lam, v): the eigenvalue of the field's Jacobian that decides stability
                                (< 0 iff stable; largest real part) and its vector
    margin(x, t)             -> a continuous function of t along a branch, > 0 iff stable
    fold_system(x, t)        optional: (R, H, dR/dt, lam, v, dlam/dx, dlam/dt) for the extended system

``continue_branch(field, x, t_from, t_to, ...)`` follows a fixed point in t and locates where it ends;
``log_snr_grid`` and ``log_snr_mid`` place times uniformly in log-SNR; ``group`` merges nearby points;
``use_float32(field)`` says whether a field's seed descent may run in float32.
"""

from theory._continuation import continue_branch, group, log_snr_grid, log_snr_mid
from theory._engine import exact_field
from theory._field import MixtureField
from theory._search import use_float32

__all__ = ["MixtureField", "exact_field", "continue_branch", "group", "log_snr_grid", "log_snr_mid", "use_float32"]
