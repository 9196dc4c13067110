"""Fits the float32 exp polynomial of csrc/include/bnfast/vmath.h (``exp_poly``).

q(r) ~ (e^r - 1 - r) / r^2 on |r| <= ln2/2, degree 4, minimizing the absolute error of
e^r = 1 + r + r^2 q(r) (near-minimax: Lawson's iteratively reweighted least squares on
Chebyshev nodes). Prints the float32 coefficients (highest degree first, as hex floats) and
the error bound with those rounded coefficients.

    python tools/fit_exp_poly.py
"""

import numpy as np

A = np.log(2) / 2
n = 2000
r = A * np.cos((2 * np.arange(n) + 1) * np.pi / (2 * n))
q = (np.expm1(r) - r) / r**2
w = r**2  # the error of q counts times r^2 in e^r
V = np.vander(r, 5, increasing=True)
lawson = np.ones_like(r)
for _ in range(200):
    s = w * np.sqrt(lawson)
    c, *_ = np.linalg.lstsq(V * s[:, None], q * s, rcond=None)
    err = np.abs(w * (V @ c - q))
    lawson *= err / err.max()
    lawson /= lawson.max()
c32 = c.astype(np.float32)
print("coefficients (r^4 .. r^0):", [float(x).hex() for x in c32[::-1]])
x = np.linspace(-A, A, 200_001)
p = 1 + x + x**2 * (np.vander(x, 5, increasing=True) @ c32.astype(np.float64))
rel = np.max(np.abs(p / np.exp(x) - 1))
print(f"max relative error {rel:.3g} = {rel / 2**-24:.3f} units of 2^-24")
