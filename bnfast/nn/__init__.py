"""Layers: thin objects over :mod:`bnfast.functional`.

A layer has ``forward(x)``, ``backward(dy)``, ``train()`` / ``eval()``, ``parameters()`` and
``gradients()`` (two lists of arrays in the same order: the contract with the optimizers),
``zero_grad()``, ``state_dict()`` and ``load_state_dict()``. Layers reuse their output and
gradient buffers while the input shape stays the same, so a training step allocates nothing
large; an output is therefore valid until the layer's next call.
"""

from bnfast.nn.batchnorm import BatchNorm
from bnfast.nn.layers import Dropout, Linear, ReLU, Sequential, Tanh, mlp
from bnfast.nn.losses import LogSoftmax, SigmoidBinaryCrossEntropy, Softmax, SoftmaxCrossEntropy
from bnfast.nn.module import Module

__all__ = [
    "BatchNorm",
    "Dropout",
    "Linear",
    "LogSoftmax",
    "Module",
    "ReLU",
    "Sequential",
    "SigmoidBinaryCrossEntropy",
    "Softmax",
    "SoftmaxCrossEntropy",
    "Tanh",
    "mlp",
]
