"""Command-line options that name a Grand Challenge server and its token, shared by ``export`` and ``reorder``.

The token comes from ``--token-file`` or, as gcapi does (contract §0), from ``GRAND_CHALLENGE_AUTHORIZATION``; it is
never an argument (it would show in ``ps`` and shell history) and never printed.
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path
from typing import Any

from engine.errors import ConfigurationError
from engine.gc_api import GrandChallengeClient

DEFAULT_BASE_URL = "https://grand-challenge.org/api/v1/"
TOKEN_ENV = "GRAND_CHALLENGE_AUTHORIZATION"


def add_connection_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--base-url", default=DEFAULT_BASE_URL,
                        help=f"the API root, ending in /api/v1/ (default {DEFAULT_BASE_URL})")
    parser.add_argument("--token-file", type=Path,
                        help=f"a file holding the API token (default: the environment variable {TOKEN_ENV})")
    parser.add_argument("--ca-file", type=Path, help="a PEM file of CA certificates to trust (a private server)")


def read_token(token_file: Path | None, environ: dict[str, str] | None = None) -> str:
    """The token from ``token_file`` or the environment; ConfigurationError naming what to do when there is none."""
    environ = dict(os.environ) if environ is None else environ
    if token_file is not None:
        try:
            token = token_file.read_text(encoding="utf-8").strip()
        except OSError as error:
            raise ConfigurationError(f"cannot read the token file {token_file}: {error.strerror}") from None
        if not token:
            raise ConfigurationError(f"the token file {token_file} is empty; put your Grand Challenge API token in it")
        return token
    token = environ.get(TOKEN_ENV, "").strip()
    if not token:
        raise ConfigurationError(
            f"no API token: set {TOKEN_ENV} or pass --token-file FILE (create a token on Grand Challenge under "
            "your profile's API tokens)"
        )
    return token


def client_from_args(args: argparse.Namespace, **options: Any) -> GrandChallengeClient:
    if args.ca_file is not None and not args.ca_file.is_file():
        raise ConfigurationError(f"the CA file {args.ca_file} does not exist")
    return GrandChallengeClient(base_url=args.base_url, token=read_token(args.token_file), ca_file=args.ca_file,
                                **options)
