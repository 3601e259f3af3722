"""Command-line options that name a Grand Challenge server and its token, shared by ``export`` and ``reorder``.

The token comes from ``--token-file`` or, as gcapi does (contract §0), from ``GRAND_CHALLENGE_AUTHORIZATION``; it is
never an argument (it would show in ``ps`` and shell history) and never printed.
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import anyio
from gcbulk.engine.cli import EXIT_CONFIG_ERROR, EXIT_SOME_FAILED
from gcbulk.engine.gc.client import GrandChallengeClient
from gcbulk.engine.gc.errors import (
    AuthenticationFailed,
    ConfigurationError,
    GcbulkError,
)
from gcbulk.engine.jobfile import TOKEN_ENV, load_token
from gcbulk.engine.service import logs
from gcbulk.engine.service.log_format import SecretRedactor
from gcbulk.state.ledger import LedgerError

DEFAULT_BASE_URL = "https://grand-challenge.org/api/v1/"


def add_connection_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--base-url", default=DEFAULT_BASE_URL,
                        help=f"the API root, ending in /api/v1/ (default {DEFAULT_BASE_URL})")
    parser.add_argument("--token-file", type=Path,
                        help=f"a file holding the API token (default: the environment variable {TOKEN_ENV})")
    parser.add_argument("--ca-file", type=Path, help="a PEM file of CA certificates to trust (a private server)")


def configure_command_logging() -> None:
    """Warnings on stderr as text, through the token redactor like every other sink (issue 14: ``export`` and
    ``reorder`` used a bare ``logging.basicConfig`` that printed server text unscrubbed). Where logging is already
    set up (an embedding program, a test), the redactor is added to its handlers instead."""
    root = logging.getLogger()
    if not root.handlers:
        logs.configure("WARNING", "text", stream=sys.stderr)
        return
    for handler in root.handlers:
        if not any(isinstance(f, SecretRedactor) for f in handler.filters):
            handler.addFilter(SecretRedactor())


def client_from_args(args: argparse.Namespace, **options: Any) -> GrandChallengeClient:
    if args.ca_file is not None and not args.ca_file.is_file():
        raise ConfigurationError(f"the CA file {args.ca_file} does not exist")
    return GrandChallengeClient(base_url=args.base_url, token=load_token(args.token_file), ca_file=args.ca_file,
                                **options)


def run_against_server(command: str, main: Callable[[], Awaitable[int]]) -> int:
    """Runs ``main`` and turns what can stop it into a message and an exit code: 2 for what the user must fix
    (token, configuration, ledger), 1 for a stop that a rerun resumes."""
    try:
        return anyio.run(main)
    except AuthenticationFailed:
        print(f"gcbulk {command}: the server rejected the API token (401); check {TOKEN_ENV} or --token-file",
              file=sys.stderr)
        return EXIT_CONFIG_ERROR
    except (ConfigurationError, LedgerError) as error:
        print(f"gcbulk {command}: {error}", file=sys.stderr)
        return EXIT_CONFIG_ERROR
    except GcbulkError as error:
        print(f"gcbulk {command}: stopped: {error}; run it again to resume", file=sys.stderr)
        return EXIT_SOME_FAILED
