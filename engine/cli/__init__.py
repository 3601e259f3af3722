"""``gcbulk``: one sub-command per module in ``engine/cli/``.

Each command module exposes ``HELP`` (one line), ``add_arguments(parser)`` and ``run(args) -> int``. Modules are
imported only when their command runs, so ``gcbulk status`` does not pay for aiohttp or SimpleITK.
Exit codes: 0 success, 1 some items failed, 2 configuration or usage error, 70 internal error (a bug), 130
stopped at once by a second signal.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from types import ModuleType

from gcbulk.engine.cli.exit_codes import (  # re-exported: commands import them from here
    EXIT_BROKEN_PIPE,
    EXIT_CONFIG_ERROR,
    EXIT_CRASH,
    EXIT_KILLED,
    EXIT_OK,
    EXIT_SOME_FAILED,
)

__all__ = [
    "COMMANDS",
    "EXIT_BROKEN_PIPE",
    "EXIT_CONFIG_ERROR",
    "EXIT_CRASH",
    "EXIT_KILLED",
    "EXIT_OK",
    "EXIT_SOME_FAILED",
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
    subparsers = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name, module in _available_commands(only).items():
        sub = subparsers.add_parser(name, help=module.HELP, description=module.HELP)
        module.add_arguments(sub)
        sub.set_defaults(handler=module.run)
    return parser


def main(argv: list[str] | None = None) -> int:
    from gcbulk.engine.cli.guard import install_redacting_streams, run_guarded

    install_redacting_streams()
    argv = sys.argv[1:] if argv is None else argv
    # The command is the first word that is not an option (the top level has none that take a value).
    named = next((word for word in argv if not word.startswith("-")), None)
    args = build_parser(named if named in COMMANDS else None).parse_args(argv)
    return run_guarded(args.command, lambda: args.handler(args))


if __name__ == "__main__":
    sys.exit(main())
