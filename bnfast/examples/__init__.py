"""Runnable examples: ``python -m bnfast.examples.<name>``.

- :mod:`bnfast.examples.course_quadratic`: the course's worked example, minimizing
  :math:`J(w) = w^2 - 10w + 25` with gradient descent, momentum, RMSprop and Adam.
"""
