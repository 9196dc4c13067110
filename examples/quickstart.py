"""Batch norm in a few lines: forward in training mode, backward, then evaluation mode."""

import numpy as np

import bnfast
from bnfast import reference

rng = np.random.default_rng(0)
x = rng.normal(3.0, 2.0, size=(256, 64)).astype(np.float32)
running_mean, running_var = np.zeros(64, np.float32), np.ones(64, np.float32)

y, mean, invstd = bnfast.batch_norm(x, running_mean, running_var, training=True)
dx, dweight, dbias = bnfast.batch_norm_backward(np.ones_like(x), x, mean, invstd)
y_eval = bnfast.batch_norm(x, running_mean, running_var, training=False).out

y_ref, _, _ = reference.batch_norm_train(x.astype(np.float64))
print(f"ISA {bnfast.active_isa()}: output mean {y.mean():+.2e}, std {y.std():.4f}")
print(f"max |y - float64 reference| = {np.abs(y - y_ref).max():.2e}")
print(f"running mean after one step: {running_mean[:3]} (batch mean {mean[:3]})")
