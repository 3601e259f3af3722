"""The rooms depend one way: the CLI and the public API on top of the service, the service on top of the upload core,
the upload core on top of the Grand Challenge client and the ledger; the planner reads files and knows no ledger.

The table below is the declared order. An import from one room into another that the table does not allow fails
here, wherever it is (inside a function or a ``TYPE_CHECKING`` block too), the way the cycle test in
``test_layout.py`` fails on a cycle between modules.
"""

from __future__ import annotations

from tests.packaging.test_layout import _imports, _modules

# Module name prefix -> room. The longest prefix wins, so ``gcbulk.engine.plan.titles`` is in ``plan``.
ROOM_OF_PREFIX = {
    "gcbulk": "facade",  # the package's public names (gcbulk/__init__.py) and ``python -m gcbulk``
    "gcbulk.redaction": "base",
    "gcbulk.safe_files": "base",
    "gcbulk.checksums": "base",
    "gcbulk.extras": "base",
    "gcbulk.exit_codes": "base",
    "gcbulk.__main__": "cli",  # ``python -m gcbulk``: the command line
    "gcbulk.value_schemas": "base",
    "gcbulk.state": "state",
    "gcbulk.emulator": "emulator",
    "gcbulk.engine": "facade",  # the package docstring
    "gcbulk.engine.__main__": "cli",  # ``python -m gcbulk.engine``
    "gcbulk.engine.gc": "gc",
    "gcbulk.engine.dicom": "dicom",
    "gcbulk.engine.plan": "plan",
    "gcbulk.engine.jobfile": "jobfile",
    "gcbulk.engine.upload": "upload",
    "gcbulk.engine.ledger_location": "settings",
    "gcbulk.engine.settings": "settings",
    "gcbulk.engine.results": "results",
    "gcbulk.engine.service": "service",
    "gcbulk.engine.api": "api",
    "gcbulk.engine.archive_api": "api",  # the Python API of archives, beside engine/api.py
    "gcbulk.engine.cli": "cli",
}

# Room -> the rooms it may import, each row written out in full (no "and whatever those may import"), so a new
# arrow between rooms is a visible change of this table.
ALLOWED: dict[str, set[str]] = {
    "base": set(),
    "state": {"base"},
    "gc": {"base"},
    "dicom": {"base"},
    # The job file is the planner's input (rules, title template); it also carries the engine's knobs, DICOM options
    # and the ledger's binding record, which is why it sits above those rooms.
    "jobfile": {"base", "gc", "dicom", "state", "upload_knobs", "plan_titles"},
    "plan": {"base", "gc", "dicom", "jobfile"},
    "upload": {"base", "gc", "dicom", "plan", "jobfile", "state", "settings"},
    "settings": {"base", "gc", "jobfile", "state", "upload_knobs"},
    # ``reorder --by natural-title`` orders titles with the key the upload creates display sets in (plan/titles.py).
    "results": {"base", "gc", "state", "plan_titles"},
    "service": {"base", "gc", "dicom", "plan", "jobfile", "state", "upload", "settings", "results"},
    "api": {"base", "gc", "plan", "jobfile", "state", "upload", "settings", "results", "service"},
    "cli": {
        "base",
        "gc",
        "dicom",
        "plan",
        "jobfile",
        "state",
        "upload",
        "settings",
        "results",
        "service",
        "api",
        "facade",  # gcbulk --version
        "emulator",
    },  # ``gcbulk demo`` starts the emulator
    "facade": {"base", "gc", "service", "api"},
    "emulator": {"base"},  # the stand-in server knows nothing of the client it serves
}

# Single modules that a lower room may import although their own room is above it, each named as a room of its own
# in the rows above and saying why it lives where it does. None of them imports back what imports it: the cycle test
# in test_layout.py holds that.
LEAF_EXCEPTIONS = {
    # The engine's knobs live beside the transfer they tune; the job file and the settings read them.
    "gcbulk.engine.upload.transfer_settings": "upload_knobs",
    # Title templates are checked when the job file is read, and made by the planner; its natural title order is
    # also the order reorder --by natural-title gives.
    "gcbulk.engine.plan.titles": "plan_titles",
}


def room_of(module: str) -> str:
    prefix = max((p for p in ROOM_OF_PREFIX if module == p or module.startswith(p + ".")), key=len)
    return ROOM_OF_PREFIX[prefix]


def crossings() -> list[str]:
    modules = _modules()
    found = []
    for name, path in sorted(modules.items()):
        source = room_of(name)
        for imported in sorted(_imports(path, modules)):
            target = room_of(imported)
            if target == source:
                continue
            allowed = ALLOWED[source]
            if target in allowed or LEAF_EXCEPTIONS.get(imported) in allowed:
                continue
            found.append(f"{name} ({source}) imports {imported} ({target})")
    return found


def test_every_import_between_rooms_follows_the_declared_order() -> None:
    assert crossings() == []


def test_the_declared_order_has_no_loop() -> None:
    rooms = {room for room in ALLOWED if room in ROOM_OF_PREFIX.values()}
    done: set[str] = set()

    def visit(room: str, path: tuple[str, ...]) -> None:
        assert room not in path, f"the table lets rooms import each other round: {' -> '.join((*path, room))}"
        if room in done:
            return
        for lower in ALLOWED[room] & rooms:
            visit(lower, (*path, room))
        done.add(room)

    for room in sorted(rooms):
        visit(room, ())


def test_every_module_has_a_room() -> None:
    assert {room_of(name) for name in _modules()} <= set(ALLOWED)


def test_the_planner_and_the_ledger_know_nothing_of_each_other() -> None:
    modules = _modules()
    for name, path in modules.items():
        if room_of(name) == "plan":
            assert {room_of(m) for m in _imports(path, modules)}.isdisjoint({"state", "upload", "service"}), name
        if room_of(name) == "state":
            assert {room_of(m) for m in _imports(path, modules)} <= {"state", "base"}, name
