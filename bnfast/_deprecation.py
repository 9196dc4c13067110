"""Renamed keyword arguments: the old name keeps working for one release, with a warning."""

from __future__ import annotations

import functools
import warnings
from collections.abc import Callable
from typing import Any, TypeVar

F = TypeVar("F", bound=Callable[..., Any])

__all__ = ["renamed_keywords"]


def renamed_keywords(**renames: str) -> Callable[[F], F]:
    """Accept ``old=value`` for each ``old="new"`` in ``renames``, with a DeprecationWarning.

    The wrapped function's signature (``inspect.signature``) shows only the new names. Passing
    both names is a TypeError, as a duplicate argument is.
    """

    def decorate(fn: F) -> F:
        @functools.wraps(fn)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            for old, new in renames.items():
                if old in kwargs:
                    if new in kwargs:
                        raise TypeError(f"{fn.__name__}() got both {old}= and {new}= (use {new}=)")
                    warnings.warn(
                        f"{fn.__name__}(): {old}= is deprecated, use {new}= (the name PyTorch "
                        "uses); the old name will be removed in the next release",
                        DeprecationWarning,
                        stacklevel=2,
                    )
                    kwargs[new] = kwargs.pop(old)
            return fn(*args, **kwargs)

        return wrapper  # type: ignore[return-value]

    return decorate
