"""Stage 3 (runtime): a vectorised error function for the `gelu` kernel.

NumPy has no `erf` (and SciPy is not a dependency). erf is odd, so
erf(x) = x·P(x²) on |x| ≤ L with P a Chebyshev series in u = 2x²/L² − 1,
interpolated at import time from the standard library's `math.erf`; past L,
erf is ±1 to the dtype's precision, which clipping x to [−L, L] gives for free.
Two fits: float64 (L = 6, degree 40, max error 2e-14, enough for
finite-difference gradient checks) and a cheaper one for float32 and smaller
(L = 4, degree 16, error 2e-7, a few ulp of 1).
"""
from __future__ import annotations

import math

import numpy as np
from numpy.polynomial import chebyshev


def _fit(limit: float, degree: int) -> tuple[float, list[float]]:
    def f(u: np.ndarray) -> np.ndarray:
        # Chebyshev points of the first kind avoid u = -1, so x > 0 here.
        x = np.sqrt((u + 1.0) * (limit * limit / 2.0))
        return np.array([math.erf(v) / v for v in x])
    return limit, [float(c) for c in chebyshev.chebinterpolate(f, degree)]


_FITS = {8: _fit(6.0, 40), 4: _fit(4.0, 16)}


def erf(x: np.ndarray) -> np.ndarray:
    """Element-wise erf, same dtype as x (Python-float coefficients keep float32 float32)."""
    limit, coef = _FITS[8 if x.dtype.itemsize >= 8 else 4]
    xc = np.clip(x, -limit, limit)
    u = xc * xc
    u *= 2.0 / (limit * limit)
    u -= 1.0
    two_u = u + u
    # Clenshaw recurrence: b_k = c_k + 2u·b_{k+1} − b_{k+2}.
    b1, b2 = np.zeros_like(u), np.zeros_like(u)
    for c in coef[:0:-1]:
        b0 = two_u * b1
        b0 -= b2
        b0 += c
        b1, b2 = b0, b1
    b1 *= u
    b1 -= b2
    b1 += coef[0]
    b1 *= xc
    return b1
