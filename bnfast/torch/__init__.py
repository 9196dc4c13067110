"""Drop-in bnfast backend for PyTorch CPU code (needs PyTorch; ``import bnfast`` never imports it).

- :mod:`bnfast.torch.nn`: ``BatchNorm1d``, ``BatchNorm2d``, ``BatchNorm3d`` (subclasses of
  PyTorch's, same arguments, buffers and ``state_dict``), and :func:`convert`, which switches
  every ``torch.nn.BatchNorm*d`` of a model to them in place.
- :mod:`bnfast.torch.nn.functional`: ``batch_norm`` and ``cross_entropy`` with PyTorch's
  signatures, autograd-aware; cross-entropy computes the loss and its gradient in one pass.
- :mod:`bnfast.torch.optim`: ``SGD``, ``Adam``, ``AdamW``, ``RMSprop``: subclasses of PyTorch's
  optimizers (same arguments, state and ``state_dict``) stepping each parameter group with one
  fused bnfast call.

The kernels run on NumPy views of the tensors' memory (no copies). Whatever they cannot serve
(non-CPU tensors, dtypes other than float32/float64, layouts that would need a copy, options
the kernels lack) runs PyTorch's own implementation, with a one-time :class:`FallbackWarning`
naming the reason.

Under ``torch.compile`` and ``torch.export`` the layers and functions call the kernels as
PyTorch operators, ``torch.ops.bnfast.*`` (registered on import, see ``bnfast.torch._ops``), so
``torch.compile(bt.convert(model), fullgraph=True)`` traces with no graph break and its graph
calls bnfast; eager calls keep the cheaper direct path. The optimizers' ``step`` runs eagerly
behind a graph break. Only ``torch.jit.trace``/``torch.jit.script`` fall back to PyTorch.
"""

try:
    import torch as _torch  # noqa: F401
except ImportError as exc:
    raise ImportError(
        "bnfast.torch needs PyTorch, which is not installed (pip install 'bnfast[torch]', or a "
        "CPU build of torch). The rest of bnfast works without it."
    ) from exc

from bnfast.torch import nn, optim
from bnfast.torch._fallback import FallbackWarning
from bnfast.torch.nn import BatchNorm1d, BatchNorm2d, BatchNorm3d, convert
from bnfast.torch.nn import functional as functional

__all__ = [
    "BatchNorm1d",
    "BatchNorm2d",
    "BatchNorm3d",
    "FallbackWarning",
    "convert",
    "functional",
    "nn",
    "optim",
]
