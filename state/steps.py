"""A ledger call as a typed value: the bound method, its arguments, and (for event lines) its name.

The engine records a transition by naming the method itself (``step(ledger.case_done, case_id)``), never its name in a
string: a typo fails at import or in mypy, and a reader can jump from the call to the transition. A ``Step`` is how
several transitions travel together to the ledger's thread (``Ledger.record_together``) and how the journal knows
what to write on the event line (``Step.name``, the arguments as its key).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Generic, ParamSpec, TypeVar

P = ParamSpec("P")
R = TypeVar("R", covariant=True)
T = TypeVar("T")


@dataclass(frozen=True)
class Step(Generic[R]):
    """One call of a ledger method: ``method(*args, **fields)``, made later on the ledger's thread."""

    method: Callable[..., R]
    args: tuple[object, ...] = ()
    fields: Mapping[str, object] = field(default_factory=dict)

    @property
    def name(self) -> str:
        """The method's name (``case_done``): the event line's kind."""
        return self.method.__name__

    @property
    def owner(self) -> object:
        """The object the method is bound to (``None`` for a plain function)."""
        return getattr(self.method, "__self__", None)

    def __call__(self) -> R:
        return self.method(*self.args, **self.fields)


def step(method: Callable[P, T], /, *args: P.args, **fields: P.kwargs) -> Step[T]:
    """``Step`` of ``method(*args, **fields)``, checked by the type checker against ``method``'s signature."""
    return Step(method, tuple(args), dict(fields))


@dataclass(frozen=True)
class Recording(Generic[R]):
    """What one caller asks the ledger to record: its ``steps`` (transitions, in one transaction: all or none), then —
    when ``query`` is given — a read of what they wrote, made after they are committed. ``Ledger.record_batch`` makes
    several callers' recordings at once."""

    steps: tuple[Step[object], ...]
    query: Step[R] | None = None


@dataclass(frozen=True)
class Recorded:
    """What became of a ``Recording``: each step's result in order and the query's answer; or why not.

    ``recorded`` says whether the steps were committed. A failure with ``recorded`` set is the read's (the steps stay
    recorded and their event lines are still due); without it nothing of the recording was kept."""

    results: tuple[object, ...] = ()
    answer: object = None
    failed: Exception | None = None
    recorded: bool = True
