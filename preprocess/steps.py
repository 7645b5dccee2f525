"""The one step abstraction for judging records (datatrove style).

A `Filter` implements a single hook, `filter(item)`, returning `True` (keep), `False` (drop with
the filter's own name as reason) or `(False, reason)`. Calling the filter normalises that to
`True | (False, reason)`; `run_filters` applies a chain and counts drops by reason into a
`collections.Counter`, so Beam transforms can mirror the counter into `Metrics.counter`s.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections import Counter
from collections.abc import Iterable
from typing import Any, Literal

Verdict = Literal[True] | tuple[Literal[False], str]
"""What every step returns: `True` (keep) or `(False, reason)` with a short snake_case reason."""


class Filter(ABC):
    """Base class of every keep/drop step. Subclasses set `name` and implement `filter`."""

    name: str = "filter"

    @abstractmethod
    def filter(self, item: Any) -> bool | tuple[bool, str]:
        """Return True to keep `item`, False or (False, reason) to drop it."""

    def __call__(self, item: Any) -> Verdict:
        result = self.filter(item)
        if isinstance(result, tuple):
            keep, reason = result
            return True if keep else (False, reason)
        return True if result else (False, self.name)

    def __repr__(self) -> str:
        return f"{type(self).__name__}(name={self.name!r})"


def run_filters(filters: Iterable[Filter], item: Any, counter: Counter | None = None) -> str | None:
    """Apply `filters` in order; return the first drop reason (counted into `counter`) or None if kept."""
    for step in filters:
        verdict = step(item)
        if verdict is not True:
            reason = verdict[1]
            if counter is not None:
                counter[reason] += 1
            return reason
    return None
