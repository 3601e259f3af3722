"""One explicit state machine per persisted object, and the single place where transitions are checked.

Every row of ``cases``, ``display_sets``, ``items``, ``uploads`` and ``parts`` (and the one ``job`` row) carries a
``state``; the ledger changes it only through :func:`check_transition`. A transition into the state a row is already in
is an idempotent repeat (a no-op), so a step re-run after a crash cannot corrupt the ledger; any other move not listed
here raises :class:`IllegalTransition`.

The graphs, in words:

* **job** (the plan of the whole tree): ``empty → planning → complete | blocked``; a re-plan goes back to ``planning``.
  ``blocked`` means the last plan had blocking findings; the transfer engine must not start.
* **case**: ``planned → running → done | failed``. ``failed → planned`` is ``retry-failed``. A re-plan may move a case
  to ``blocked`` (its files have blocking findings) or ``vanished`` (its folder is gone; nothing is ever deleted on
  the server), and back to ``planned`` once fixed. ``done → planned`` only when a re-plan found a new value for it.
* **display_set**: ``pending → creating → created → values_attached → importing → done | failed``. ``creating`` is
  written *before* the POST, so a crash between the POST and recording its pk leaves a trace that says "look it up by
  title before creating another" (docs/gc-api.md §3: the title is unique per reader study). ``pending → created`` is the
  adoption of a display set found by title. ``failed → created`` (pk known) retries the values. Any state with a pk
  → ``pending`` (pk forgotten) when the server no longer has that display set (``gcbulk verify``, a 404 on its pk).
* **item** (one socket value of a case): ``planned → uploading → uploaded → attached → done | failed``. Value sockets
  skip the uploads (``planned → attached``). ``attached`` means Grand Challenge has consumed the uploads (docs/gc-api.md §1:
  they are deleted after import), so a changed file can no longer be re-queued. ``withdrawn``: a re-plan found no file
  for that socket any more. ``attached | done → planned`` when the server no longer has the value (``gcbulk
  verify``): its uploads were consumed, so new ones are sent.
* **upload** (one Grand Challenge UserUpload of one file): ``creating → initialized → completed → consumed``.
  ``creating`` is written before ``POST uploads/`` for the same reason as display sets. ``expired``: the 24 h sweep
  deleted it (docs/gc-api.md §1) or it is too old to finish; ``aborted``: a fatal error for that file; ``abandoned``: the
  file changed or the intent was never confirmed. The four end states are terminal; a new upload row replaces them.
* **part**: a row exists once the part's ETag is known (``sent``); ``invalid`` when list-parts disagrees with it
  (missing, other size or ETag), and ``invalid → sent`` when it is sent again.
"""

from __future__ import annotations

from collections.abc import Mapping, Set
from dataclasses import dataclass


class IllegalTransition(Exception):
    """A state change that the object's state machine does not allow."""

    def __init__(self, kind: str, row: object, current: str, target: str, allowed: frozenset[str]) -> None:
        self.kind = kind
        self.row = row
        self.current = current
        self.target = target
        allowed_text = ", ".join(sorted(allowed)) or "nothing (terminal state)"
        super().__init__(
            f"{kind} {row}: cannot go from {current!r} to {target!r}; from {current!r} it may go to {allowed_text}"
        )


class ConflictingRepeat(Exception):
    """A repeat of a transition into the current state with different identifying data (e.g. another pk)."""

    def __init__(self, kind: str, row: object, state: str, field: str, stored: object, given: object) -> None:
        self.kind = kind
        self.row = row
        self.field = field
        super().__init__(
            f"{kind} {row} is already {state!r} with {field}={stored!r}; refusing to record {field}={given!r}"
        )


@dataclass(frozen=True)
class StateMachine:
    """The allowed moves of one kind of persisted object."""

    kind: str
    initial: frozenset[str]
    moves: Mapping[str, frozenset[str]]
    # Fields whose stored value must not change on an idempotent repeat (another pk would mean another object).
    identity_fields: frozenset[str] = frozenset()

    @property
    def states(self) -> frozenset[str]:
        return frozenset(self.moves)

    @property
    def terminal(self) -> frozenset[str]:
        return frozenset(state for state, targets in self.moves.items() if not targets)

    def allows(self, current: str, target: str) -> bool:
        return target in self.moves.get(current, frozenset())


def _machine(
    kind: str, initial: set[str], moves: dict[str, set[str]], identity: Set[str] = frozenset()
) -> StateMachine:
    for targets in moves.values():
        unknown = targets - moves.keys()
        assert not unknown, f"{kind}: unknown target states {unknown}"
    return StateMachine(
        kind=kind,
        initial=frozenset(initial),
        moves={state: frozenset(targets) for state, targets in moves.items()},
        identity_fields=frozenset(identity),
    )


JOB = _machine(
    "job",
    initial={"empty"},
    moves={
        "empty": {"planning"},
        "planning": {"complete", "blocked"},
        "complete": {"planning"},
        "blocked": {"planning"},
    },
)

CASE = _machine(
    "case",
    initial={"planned", "blocked"},
    moves={
        "planned": {"running", "blocked", "vanished"},
        "running": {"done", "failed", "planned", "blocked", "vanished"},
        "failed": {"planned", "blocked", "vanished"},
        "blocked": {"planned", "vanished"},
        "vanished": {"planned", "blocked"},
        "done": {"planned"},
    },
)

DISPLAY_SET = _machine(
    "display_set",
    initial={"pending"},
    moves={
        "pending": {"creating", "created"},
        "creating": {"created", "pending"},
        "created": {"values_attached", "failed", "pending"},
        "values_attached": {"importing", "done", "failed", "pending"},
        "importing": {"done", "failed", "values_attached", "pending"},
        "failed": {"created", "pending"},
        "done": {"created", "pending"},
    },
    identity={"pk"},
)

ITEM = _machine(
    "item",
    initial={"planned"},
    moves={
        "planned": {"uploading", "attached", "failed", "withdrawn"},
        "uploading": {"uploaded", "failed", "planned", "withdrawn"},
        "uploaded": {"attached", "failed", "planned", "withdrawn"},
        "attached": {"done", "failed", "planned"},
        "failed": {"planned", "withdrawn"},
        "withdrawn": {"planned"},
        "done": {"planned"},
    },
)

UPLOAD = _machine(
    "upload",
    initial={"creating"},
    moves={
        "creating": {"initialized", "abandoned"},
        "initialized": {"completed", "expired", "aborted", "abandoned"},
        "completed": {"consumed", "expired", "abandoned"},
        "consumed": set(),
        "expired": set(),
        "aborted": set(),
        "abandoned": set(),
    },
    identity={"pk", "s3_upload_id"},
)

PART = _machine(
    "part",
    initial={"sent"},
    moves={"sent": {"invalid"}, "invalid": {"sent"}},
    identity={"etag", "size"},
)

MACHINES: Mapping[str, StateMachine] = {m.kind: m for m in (JOB, CASE, DISPLAY_SET, ITEM, UPLOAD, PART)}

# Uploads that exist on Grand Challenge and count against the 2000-upload cap (docs/gc-api.md §1).
LIVE_UPLOAD_STATES = frozenset({"creating", "initialized", "completed"})
# Items whose uploads Grand Challenge has taken: a changed file is reported, never re-sent (docs/gc-api.md §1, §3).
CONSUMED_ITEM_STATES = frozenset({"attached", "done"})
# Cases the transfer engine still has to work on.
RUNNABLE_CASE_STATES = frozenset({"planned", "running"})


def check_transition(
    machine: StateMachine,
    row: object,
    current: str,
    target: str,
    stored: Mapping[str, object] | None = None,
    given: Mapping[str, object] | None = None,
) -> bool:
    """Decide one state change: True to apply it, False for an idempotent repeat.

    Raises :class:`IllegalTransition` for a move the machine does not list, and :class:`ConflictingRepeat` when a
    repeat would overwrite an identity field (``pk``, ``etag`` …) with another value.
    """
    if target not in machine.states:
        raise IllegalTransition(machine.kind, row, current, target, machine.moves.get(current, frozenset()))
    if current == target:
        for field in machine.identity_fields:
            if given is None or stored is None or given.get(field) is None:
                continue
            if stored.get(field) is not None and stored[field] != given[field]:
                raise ConflictingRepeat(machine.kind, row, current, field, stored[field], given[field])
        return False
    if not machine.allows(current, target):
        raise IllegalTransition(machine.kind, row, current, target, machine.moves.get(current, frozenset()))
    return True


# ---- results side (issue 6): exports and reorders; appended by the results helper, checked by check_transition ----
#
# * **export_run** (one ``gcbulk export``): ``listing → downloading → writing → done``; any step → ``failed``. A run
#   that was interrupted stays where it was; only a run that finished ``listing`` may forget answers it did not see.
# * **mask** (one file of one Mask answer's image, keyed by its path under the export folder):
#   ``pending → downloading → verified | failed``. ``downloading → downloading`` is the resume of a cut download
#   (the partial file is kept). ``verified → pending``: the answer now has another image, or the file on disk is gone
#   or changed. ``failed → pending | downloading``: the next run tries again. ``downloading → pending``: the image
#   changed while a download was open (its partial bytes are of the old image).
# * **reorder_item** (one display set of a ``gcbulk reorder``): ``planned → patching → done | failed``;
#   ``planned | patching | failed → done`` when a (re)run finds it already at its target order (no PATCH; a PATCH
#   whose answer was lost did land). ``failed → planned`` and ``done → planned`` when a later plan gives it a new
#   target or its order was changed since; ``patching → planned`` likewise.

EXPORT_RUN = _machine(
    "export_run",
    initial={"listing"},
    moves={
        "listing": {"downloading", "failed"},
        "downloading": {"writing", "failed"},
        "writing": {"done", "failed"},
        "done": set(),
        "failed": set(),
    },
)

MASK = _machine(
    "mask",
    initial={"pending"},
    moves={
        "pending": {"downloading", "failed"},
        "downloading": {"verified", "failed", "pending"},
        "verified": {"pending"},
        "failed": {"pending", "downloading"},
    },
    identity={"sha256"},
)

REORDER_ITEM = _machine(
    "reorder_item",
    initial={"planned"},
    moves={
        "planned": {"patching", "done", "failed"},
        "patching": {"done", "failed", "planned"},
        "done": {"planned"},
        "failed": {"planned", "patching", "done"},
    },
)

MACHINES = {**MACHINES, **{m.kind: m for m in (EXPORT_RUN, MASK, REORDER_ITEM)}}
