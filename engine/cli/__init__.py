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

COMMANDS = {
    "plan": "gcbulk.engine.cli.plan",
    "status": "gcbulk.engine.cli.status",
    "run": "gcbulk.engine.cli.run",
    "retry-failed": "gcbulk.engine.cli.retry_failed",
    "report": "gcbulk.engine.cli.report",
    "export": "gcbulk.engine.cli.export",
    "reorder": "gcbulk.engine.cli.reorder",
    "config": "gcbulk.engine.cli.config",
    "demo": "gcbulk.engine.cli.demo",
}

EXIT_OK = 0
EXIT_SOME_FAILED = 1
EXIT_CONFIG_ERROR = 2
# An unexpected exception — a bug, not the user's input nor the server's answer: distinct from "cases failed" (1), so
# a supervisor or a script can tell them apart. 70 is EX_SOFTWARE of sysexits.h.
EXIT_CRASH = 70
# A second stop signal: the shell's convention for death by SIGINT (128 + 2). The run is still resumable.
EXIT_KILLED = 130


def _available_commands() -> dict[str, object]:
    modules = {}
    for name, module_name in COMMANDS.items():
        try:
            modules[name] = importlib.import_module(module_name)
        except ModuleNotFoundError as exc:
            if exc.name != module_name:
                raise
    return modules


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="gcbulk", description="Resumable bulk transfers into and out of Grand Challenge reader studies."
    )
    subparsers = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name, module in _available_commands().items():
        sub = subparsers.add_parser(name, help=module.HELP, description=module.HELP)
        module.add_arguments(sub)
        sub.set_defaults(handler=module.run)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.handler(args)
    except KeyboardInterrupt:
        return EXIT_KILLED
    except Exception as exc:  # the last line of defence: every expected error has its own message and exit code
        import traceback

        from gcbulk.engine.service.log_format import SecretRedactor

        redactor = SecretRedactor(_tokens_in_environment())
        detail = redactor.redact("".join(traceback.format_exception(exc)))
        print(f"{detail}\ngcbulk {args.command}: internal error ({type(exc).__name__}); this is a bug — the run is "
              "recorded in the ledger and resumes when run again. Please report it with the lines above.",
              file=sys.stderr)
        return EXIT_CRASH


def _tokens_in_environment() -> list[str]:
    """The API token wherever a command may have read it from, so a crash report never prints it."""
    import os
    from pathlib import Path

    tokens = [os.environ.get("GRAND_CHALLENGE_AUTHORIZATION", "")]
    token_file = os.environ.get("GCBULK_TOKEN_FILE", "").strip()
    if token_file:
        try:
            tokens.append(Path(token_file).read_text().strip())
        except OSError:
            pass
    return [token for token in tokens if token]


if __name__ == "__main__":
    sys.exit(main())
