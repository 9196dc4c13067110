"""Batch-norm modules on the bnfast kernels, and :func:`convert` for existing models.

``BatchNorm1d``, ``BatchNorm2d`` and ``BatchNorm3d`` subclass PyTorch's classes and change only
``forward``: constructor arguments, parameters, buffers (``running_mean``, ``running_var``,
``num_batches_tracked``), ``state_dict`` keys, ``train()``/``eval()`` behaviour and
``isinstance`` checks are PyTorch's. Forward and backward run the bnfast kernels on CPU
float32/float64 tensors, contiguous or channels-last, without copies; anything else runs
PyTorch's implementation after a one-time :class:`~bnfast.torch.FallbackWarning`.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from bnfast.torch.nn import functional

__all__ = ["BatchNorm1d", "BatchNorm2d", "BatchNorm3d", "convert", "functional"]


class _Forward:
    """PyTorch's ``_BatchNorm.forward`` with the functional call routed to bnfast."""

    def forward(self, input: Tensor) -> Tensor:
        m: Any = self  # a torch.nn.modules.batchnorm._BatchNorm
        m._check_input_dim(input)
        # The dicts directly: Module.__getattr__ costs ~0.6 us a name.
        params, buffers = m._parameters, m._buffers
        running_mean, running_var = buffers.get("running_mean"), buffers.get("running_var")
        factor = 0.0 if m.momentum is None else m.momentum
        tracked = buffers.get("num_batches_tracked")
        if m.training and m.track_running_stats and tracked is not None:
            tracked.add_(1)
            if m.momentum is None:  # cumulative moving average
                factor = 1.0 / float(tracked)
        batch_stats = m.training or (running_mean is None and running_var is None)
        # Running statistics are updated only in training when tracked; read in evaluation.
        track = not m.training or m.track_running_stats
        return functional._batch_norm(
            input,
            running_mean if track else None,
            running_var if track else None,
            params.get("weight"),
            params.get("bias"),
            batch_stats,
            factor,
            m.eps,
            m,
        )

    def __getstate__(self) -> dict[str, Any]:
        state = super().__getstate__()  # type: ignore[misc]
        state.pop("_bnfast_params", None)  # views of this process's memory: not for copies
        return state


class BatchNorm1d(_Forward, torch.nn.BatchNorm1d):
    """``torch.nn.BatchNorm1d`` on the bnfast kernels: ``(N, C)`` or ``(N, C, L)`` input."""


class BatchNorm2d(_Forward, torch.nn.BatchNorm2d):
    """``torch.nn.BatchNorm2d`` on the bnfast kernels: NCHW input, contiguous or channels-last."""


class BatchNorm3d(_Forward, torch.nn.BatchNorm3d):
    """``torch.nn.BatchNorm3d`` on the bnfast kernels: NCDHW input, contiguous or channels-last."""


_SWAP: dict[type, type] = {
    torch.nn.BatchNorm1d: BatchNorm1d,
    torch.nn.BatchNorm2d: BatchNorm2d,
    torch.nn.BatchNorm3d: BatchNorm3d,
}


def convert(model: torch.nn.Module) -> torch.nn.Module:
    """Switch every ``torch.nn.BatchNorm{1,2,3}d`` in ``model`` to its bnfast twin, in place.

    Each layer keeps its identity, parameters, buffers, hooks and mode (only its class
    changes), so optimizers already built over the model stay valid and ``state_dict`` is
    unchanged. Subclasses of PyTorch's layers with their own behaviour, ``SyncBatchNorm`` and
    lazy layers not yet initialised are left alone.

    Returns
    -------
    torch.nn.Module
        ``model`` itself (converted when it is itself a batch-norm layer).
    """
    for m in model.modules():
        new = _SWAP.get(type(m))
        if new is not None:
            m.__class__ = new
    return model
