"""``gcbulk``: one sub-command per module in ``engine/cli/``.

Each command module exposes ``HELP`` (one line), ``add_arguments(parser)`` and ``run(args) -> int``. Modules are
imported only when their command runs, so ``gcbulk status`` does not pay for aiohttp or SimpleITK.
Exit codes: ``gcbulk/exit_codes.py`` (and the README's table) — 0 all done, 1 cases failed or blocked, 2 configuration
or environment, 70 a bug, 130/143 stopped by SIGINT/SIGTERM with work left, 141 a reader that went away.
"""

from __future__ import annotations

import argparse
import importlib
import signal
import sys
from types import ModuleType

from gcbulk.exit_codes import (  # re-exported: commands import them from here
    EXIT_BROKEN_PIPE,
    EXIT_CONFIG_ERROR,
    EXIT_CRASH,
    EXIT_INTERRUPTED_SIGINT,
    EXIT_INTERRUPTED_SIGTERM,
    EXIT_KILLED,
    EXIT_OK,
    EXIT_SOME_FAILED,
    StopSignal,
    exit_code_for_signal,
    received_stop_signal,
    record_stop_signal,
)

__all__ = [
    "COMMANDS",
    "EXIT_BROKEN_PIPE",
    "EXIT_CONFIG_ERROR",
    "EXIT_CRASH",
    "EXIT_INTERRUPTED_SIGINT",
    "EXIT_INTERRUPTED_SIGTERM",
    "EXIT_KILLED",
    "EXIT_OK",
    "EXIT_SOME_FAILED",
    "StopSignal",
    "build_parser",
    "main",
]

COMMANDS = {
    "plan": "gcbulk.engine.cli.plan",
    "status": "gcbulk.engine.cli.status",
    "run": "gcbulk.engine.cli.run",
    "retry-failed": "gcbulk.engine.cli.retry_failed",
    "verify": "gcbulk.engine.cli.verify",
    "report": "gcbulk.engine.cli.report",
    "export": "gcbulk.engine.cli.export",
    "reorder": "gcbulk.engine.cli.reorder",
    "copy": "gcbulk.engine.cli.copy",
    "config": "gcbulk.engine.cli.config",
    "demo": "gcbulk.engine.cli.demo",
}


def _available_commands(only: str | None = None) -> dict[str, ModuleType]:
    """The command modules, or just ``only``'s when the command line names one: a run then does not pay for
    importing every other command (``export`` alone pulls in the results side)."""
    modules = {}
    for name, module_name in COMMANDS.items():
        if only is not None and name != only:
            continue
        try:
            modules[name] = importlib.import_module(module_name)
        except ModuleNotFoundError as exc:
            if exc.name != module_name:
                raise
    return modules


def build_parser(only: str | None = None) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="gcbulk", description="Resumable bulk transfers into and out of Grand Challenge reader studies."
    )
    parser.add_argument("--version", action="version", version=f"gcbulk {_installed_version()}")
    subparsers = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name, module in _available_commands(only).items():
        sub = subparsers.add_parser(name, help=module.HELP, description=module.HELP)
        module.add_arguments(sub)
        sub.set_defaults(handler=module.run)
    return parser


def _installed_version() -> str:
    import gcbulk

    version: str = gcbulk.__version__  # from the package's module __getattr__ (read on first use)
    return version


def main(argv: list[str] | None = None) -> int:
    """The ``gcbulk`` command: its exit code (``gcbulk/exit_codes.py``). A stop signal at any moment — while modules
    still load included — ends in one line and 130 (SIGINT) or 143 (SIGTERM), never a traceback."""
    # SIGTERM's default is to die without a word; until a command's own watcher listens (JobService), it unwinds like
    # Ctrl-C instead, so the ledger closes and the user reads what happened. While modules load and the command line
    # is read, SIGINT is recorded the same way (see record_stop_signal: a signal landing inside C code can come out as
    # another exception); the command itself gets Python's own SIGINT handler back, because asyncio and anyio
    # recognise exactly that handler and then cancel their tasks cleanly.
    python_sigint_handler = signal.getsignal(signal.SIGINT)
    if python_sigint_handler is signal.default_int_handler:
        signal.signal(signal.SIGINT, record_stop_signal)
    if signal.getsignal(signal.SIGTERM) == signal.SIG_DFL:
        signal.signal(signal.SIGTERM, record_stop_signal)
    command = "gcbulk"
    try:
        from gcbulk.engine.cli.guard import install_redacting_streams, run_guarded

        install_redacting_streams()
        from_command_line = argv is None  # the process's own command, not a caller's in-process use
        argv = sys.argv[1:] if argv is None else argv
        # The command is the first word that is not an option (the top level has none that take a value).
        named = next((word for word in argv if not word.startswith("-")), None)
        if named in COMMANDS:
            command = f"gcbulk {named}"
        args = build_parser(named if named in COMMANDS else None).parse_args(argv)
        if python_sigint_handler is signal.default_int_handler:
            signal.signal(signal.SIGINT, python_sigint_handler)
        code = run_guarded(args.command, lambda: args.handler(args))
        if from_command_line:
            # The command's work is over and its exit code says how it ended: a stop signal from here on changes
            # nothing (left to Python, one arriving while the interpreter shuts down ends the process by SIGINT, -2).
            signal.signal(signal.SIGINT, signal.SIG_IGN)
            signal.signal(signal.SIGTERM, signal.SIG_IGN)
        return code
    except BaseException as stop:
        signum = received_stop_signal()
        if isinstance(stop, SystemExit) or (signum is None and not isinstance(stop, KeyboardInterrupt)):
            raise
        if signum is not None:
            code = exit_code_for_signal(signum)
        else:
            code = stop.exit_code if isinstance(stop, StopSignal) else EXIT_INTERRUPTED_SIGINT
        name = "SIGTERM" if code == EXIT_INTERRUPTED_SIGTERM else "SIGINT"
        try:
            print(
                f"{command}: stopped by {name}; every step recorded so far is in the ledger — run it again to resume",
                file=sys.stderr,
            )
        except (OSError, KeyboardInterrupt):  # a second signal, or stderr gone: the exit code still says it
            pass
        return code


if __name__ == "__main__":
    sys.exit(main())
