"""The bench behind ``bnfast bench``: every kernel against its speed of light, NumPy and PyTorch.

For each kernel and reference shape, at 1 thread and at all cores, the bench times bnfast (each
ISA), the NumPy reference (:mod:`bnfast.reference`) and PyTorch on the CPU when it is importable
(its fastest honest variant: outputs preallocated with ``.out`` ops, ``fused=True`` optimizers,
``foreach=True`` where no fused kernel exists), plus the *speed of light*: bnfast's membench
kernels (``_core.membench``) moving the same arrays in the same way (same number of arrays
read, written fresh or updated in place, same sizes), measured in the same run.

Bandwidth on a shared machine drifts (2x within minutes on the 2-core VM this was written
on), so implementations are interleaved: every round times one sample of each, in a rotating
order, and a row reports the median over rounds. Compare rows only within one run.

Bytes that must move (float32, 4 bytes, n elements):

======================  =====================  ==========================================
case id                 bytes                  why
======================  =====================  ==========================================
batch_norm_eval         2·4n                   read x, write y
batch_norm_train        3·4n (2·4n)            statistics read x; normalize reads x,
                                               writes y. One pass (2·4n) when a channel's
                                               data fits in cache (NCHW: its N planes), so
                                               normalize reads it from there
batch_norm_backward     5·4n (3·4n)            Σdy, Σdy·x̂ read dy, x; dx reads dy, x,
                                               writes dx. One pass (3·4n) under the same
                                               cache rule
softmax_cross_entropy   2·4·N·K + 8N           read logits, write the gradient, read int64
                                               targets
sgd                     3·4n                   read g; read and write w
sgd_momentum            5·4n                   read g; read and write w, the momentum buffer
rmsprop                 5·4n                   read g; read and write w, the square average
adam, adamw             7·4n                   read g; read and write w, m, v
======================  =====================  ==========================================

Its speed of light is the sum of the membench passes with the same pattern: e.g.
``batch_norm_train`` (8192, 1024) is "read 1 array" + "read 1, write 1 fresh"; a fresh output
takes the faster of plain and non-temporal stores; an optimizer over 100 tensors is measured
against one contiguous array of the same total size.

Cross-entropy also gets a *compute floor*: membench's ``exp`` pass, which reads the logits and
writes their exp with bnfast's vectorized exp and nothing else, measured in the same rounds.
Any softmax computes one exp per logit, so where the floor is slower than the speed of light
(few classes), the kernel is bound by arithmetic, not by memory.

The package: :mod:`~bnfast.bench.cases` (the case list), :mod:`~bnfast.bench.timing`
(interleaved rounds, speed of light, floors, per-call overhead), :mod:`~bnfast.bench.runner`
(:func:`run`, :func:`dropin`), :mod:`~bnfast.bench.report` (tables), :mod:`~bnfast.bench.cli`
(``bnfast bench``). The PyTorch peers live in :mod:`bnfast.torch.bench`.
"""

from __future__ import annotations

from bnfast.bench.cases import OLD_IDS, Case, Impl, Pass, cases
from bnfast.bench.cli import add_parser, main
from bnfast.bench.report import format_dropin, format_table, summary
from bnfast.bench.runner import dropin, run
from bnfast.bench.timing import overhead

__all__ = [
    "OLD_IDS",
    "Case",
    "Impl",
    "Pass",
    "add_parser",
    "cases",
    "dropin",
    "format_dropin",
    "format_table",
    "main",
    "overhead",
    "run",
    "summary",
]
