"""Command-line options that name a Grand Challenge server, its token and a reader study, shared by ``export`` and
``reorder``: flags > ``GCBULK_*`` > ``--job JOB.toml`` > default, resolved by ``gcbulk.engine.settings.resolve_server``.

The token comes from ``--token-file``, ``$GCBULK_TOKEN_FILE`` or, as gcapi does (docs/gc-api.md §0), from
``GRAND_CHALLENGE_AUTHORIZATION``; it is never an argument (it would show in ``ps`` and shell history) and never printed.
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
    diagnosis,
    server_unreachable,
)
from gcbulk.engine.jobfile import TOKEN_ENV
from gcbulk.engine.service import logs
from gcbulk.engine.service.log_format import SecretRedactor
from gcbulk.engine.service.waits import WAITS_LOGGER
from gcbulk.engine.settings import (
    DEFAULT,
    DEFAULT_BASE_URL,
    RunSettings,
    ServerSettings,
    resolve,
    resolve_server,
)
from gcbulk.state.ledger import LedgerError


def add_connection_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--job",
        type=Path,
        metavar="JOB.toml",
        help="take the server, CA file and reader study from this job file (as 'gcbulk run' does)",
    )
    parser.add_argument(
        "--base-url",
        help=f"the API root, ending in /api/v1/ (env GCBULK_BASE_URL; default: the job's, else {DEFAULT_BASE_URL})",
    )
    parser.add_argument(
        "--token-file", type=Path, help=f"a file holding the API token (env GCBULK_TOKEN_FILE; default: ${TOKEN_ENV})"
    )
    parser.add_argument(
        "--ca-file", type=Path, help="a PEM file of CA certificates to trust, for a private server (env GCBULK_CA_FILE)"
    )


def server_from_args(command: str, args: argparse.Namespace) -> ServerSettings:
    """The connection the flags, the environment and ``--job`` name; says so on stderr when nothing named a server."""
    server = resolve_server(
        job_file=args.job,
        base_url=args.base_url,
        ca_file=args.ca_file,
        reader_study=args.reader_study,
        token_file=args.token_file,
    )
    if server.sources["base_url"] == DEFAULT:
        print(
            f"gcbulk {command}: using {server.base_url} (no --base-url, GCBULK_BASE_URL or --job given)",
            file=sys.stderr,
        )
    return server


def command_server(command: str, args: argparse.Namespace) -> ServerSettings | None:
    """What ``export`` and ``reorder`` do first: logging through the redactor, then the server and study the flags,
    the environment and ``--job`` name. None (after saying why on stderr) when they cannot be used."""
    configure_command_logging()
    try:
        server = server_from_args(command, args)
        server.require_reader_study()
    except ConfigurationError as exc:
        print(f"gcbulk {command}: {exc}", file=sys.stderr)
        return None
    return server


def job_settings_with_token(command: str, args: argparse.Namespace) -> RunSettings | None:
    """The job's settings as ``gcbulk run`` resolves them, with a token; None (after saying why on stderr) when the
    job file, the environment or the token cannot be used."""
    try:
        resolved = resolve(args.job, args)
        resolved.require_token()
    except (ConfigurationError, OSError) as exc:
        print(f"gcbulk {command}: {exc}", file=sys.stderr)
        return None
    return resolved


def client_for(server: ServerSettings, **options: Any) -> GrandChallengeClient:
    return GrandChallengeClient(
        base_url=server.base_url, token=server.require_token(), ca_file=server.ca_file, **options
    )


def configure_command_logging() -> None:
    """Warnings on stderr as text, through the token redactor like every other sink (issue 14: ``export`` and
    ``reorder`` used a bare ``logging.basicConfig`` that printed server text unscrubbed), and what a long wait waits
    for (``gcbulk.waits`` at INFO: a study's listing page after page, a limit of the server). Where logging is
    already set up (an embedding program, a test), the redactor is added to its handlers instead."""
    logging.getLogger(WAITS_LOGGER).setLevel(logging.INFO)
    root = logging.getLogger()
    if not root.handlers:
        logs.configure("WARNING", "text", stream=sys.stderr)
        return
    for handler in root.handlers:
        if not any(isinstance(f, SecretRedactor) for f in handler.filters):
            handler.addFilter(SecretRedactor())


def run_against_server(command: str, main: Callable[[], Awaitable[int]]) -> int:
    """Runs ``main`` and turns what can stop it into a message and an exit code: 2 for what the user must fix
    (token, configuration, ledger), 1 for a stop that a rerun resumes."""
    try:
        return anyio.run(main)
    except (AuthenticationFailed, ConfigurationError, LedgerError) as error:
        print(f"gcbulk {command}: {diagnosis(error)}", file=sys.stderr)
        return EXIT_CONFIG_ERROR
    except GcbulkError as error:
        if server_unreachable(error):  # the environment, as for `plan` and `run`: nothing a rerun alone fixes
            print(f"gcbulk {command}: {diagnosis(error)}", file=sys.stderr)
            return EXIT_CONFIG_ERROR
        print(f"gcbulk {command}: stopped: {error}; run it again to resume", file=sys.stderr)
        return EXIT_SOME_FAILED
