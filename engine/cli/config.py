"""``gcbulk config show JOB.toml [--json]``: the configuration a run would use, each value with where it came from.

Precedence (highest first): flag > environment ``GCBULK_*`` > job file > default (``engine/settings.py``). The token
is shown masked, with its source, so an operator can check which secret a container picked up without seeing it.
Exit 0, or 2 when the job file or an override is wrong (the message names it).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from gcbulk.engine import settings
from gcbulk.engine.gc.errors import ConfigurationError

HELP = "Show the effective configuration of a job (job file + GCBULK_* environment + flags), the token masked."


def add_arguments(parser: argparse.ArgumentParser) -> None:
    actions = parser.add_subparsers(dest="action", required=True, metavar="ACTION")
    show = actions.add_parser("show", help="print every setting with its source", description=HELP)
    show.add_argument("job", type=Path, help="the job file (TOML)")
    show.add_argument("--json", action="store_true", help="print as JSON: {name: {value, source}}")
    settings.add_arguments(show)


def run(args: argparse.Namespace) -> int:
    try:
        effective = settings.resolve(args.job, args).effective()
    except (ConfigurationError, OSError) as exc:
        print(f"gcbulk config: {exc}", file=sys.stderr)
        return 2
    if args.json:
        print(
            json.dumps(
                {name: {"value": value, "source": source} for name, (value, source) in effective.items()}, indent=2
            )
        )
        return 0
    width = max(len(name) for name in effective)
    print("Effective configuration (precedence: flag > environment GCBULK_* > job file > default)")
    for name, (value, source) in effective.items():
        shown = "-" if value is None else value
        print(f"  {name:<{width}}  {shown}   [{source}]")
    return 0
