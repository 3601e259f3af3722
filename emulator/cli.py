"""``gcbulk-emulator``: runs the Grand Challenge emulator until SIGINT or SIGTERM.

It prints, for people, the API base URL, the S3 URL, the CA file (with an ``export SSL_CERT_FILE=…`` line) and the
seeded users' tokens; then, for scripts, one JSON line ``{"event": "ready", "base_url": …}``; then it flushes.
Exit status: 0 after a signal, 2 for a configuration error (bad seed or fault file, port in use).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import secrets
import shutil
import signal
import sys
import tempfile
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from gcbulk.emulator.capacity import PROFILES, profile_named
from gcbulk.emulator.context import LOOPBACK, SCHEMA_CURRENT, SCHEMAS, EmulatorConfig
from gcbulk.emulator.faults import FaultConfigError, load_fault_file
from gcbulk.emulator.seed import EXAMPLE_SEED, SeedError, load_seed
from gcbulk.extras import EMULATOR

if TYPE_CHECKING:
    from gcbulk.emulator.server import RunningEmulator

DEFAULT_PORT = 8443
LOOPBACK_HOSTS = (LOOPBACK, "localhost", "::1")


def build_parser() -> argparse.ArgumentParser:
    defaults = EmulatorConfig(data_dir=Path("."))
    parser = argparse.ArgumentParser(
        prog="gcbulk-emulator",
        description="A local stand-in for Grand Challenge (REST API + S3 uploads) for testing gcbulk and gcapi.",
    )
    parser.add_argument(
        "--host", default=LOOPBACK, help="address to listen on and to put in URLs (default %(default)s)"
    )
    parser.add_argument(
        "--public-host",
        default=None,
        help="host name clients reach it by, for URLs and the TLS certificate, when it differs from "
        "--host (e.g. --host 0.0.0.0 --public-host emulator in docker compose)",
    )
    parser.add_argument(
        "--port", type=int, default=DEFAULT_PORT, help="API port; 0 picks a free one (default %(default)s)"
    )
    parser.add_argument("--s3-port", type=int, default=None, help="S3 port; default: the API port + 1 (free if 0)")
    parser.add_argument(
        "--data-dir",
        type=Path,
        default=None,
        help="keep the state (uploads, sessions, display sets, images) and the CA here across "
        "restarts (default: in memory, in a temporary directory removed on exit)",
    )
    parser.add_argument(
        "--seed-study",
        type=Path,
        default=EXAMPLE_SEED,
        help="TOML file with users, sockets and reader studies (default: the bundled example.toml)",
    )
    parser.add_argument(
        "--schema",
        choices=SCHEMAS,
        default=SCHEMA_CURRENT,
        help="'current' answers like gcapi 0.16.1 expects, '2025-11' like the older server",
    )
    parser.add_argument("--plain-http", action="store_true", help="serve http instead of https (gcapi refuses it)")
    parser.add_argument("--faults", type=Path, default=None, help="fault rules to start with (.toml or .json)")
    parser.add_argument("--fault-seed", type=int, default=None, help="seed of the fault RNG (overrides the file's)")
    parser.add_argument(
        "--presign-expiry",
        type=float,
        default=defaults.presigned_url_expiry_seconds,
        metavar="SECONDS",
        help="lifetime of presigned part URLs (default %(default)s)",
    )
    parser.add_argument(
        "--download-expiry",
        type=float,
        default=defaults.download_url_expiry_seconds,
        metavar="SECONDS",
        help="lifetime of signed image download URLs (default %(default)s)",
    )
    parser.add_argument(
        "--import-delay",
        type=float,
        default=defaults.import_delay_seconds,
        metavar="SECONDS",
        help="delay before an upload session is imported (default %(default)s)",
    )
    parser.add_argument(
        "--profile",
        choices=PROFILES,
        default=None,
        help="'real': the real server's 2 API and 2 import workers and measured service times "
        "(docs/gc-api.md §10); default: answer at once",
    )
    parser.add_argument(
        "--admin-token",
        default=None,
        help="require this bearer token on /_admin/ (default: none on loopback, random otherwise)",
    )
    return parser


def _config(args: argparse.Namespace, data_dir: Path) -> EmulatorConfig:
    rules, file_seed = load_fault_file(args.faults) if args.faults else ([], None)
    seed = args.fault_seed if args.fault_seed is not None else (file_seed or 0)
    admin_token = args.admin_token
    if admin_token is None:
        admin_token = "" if args.host in LOOPBACK_HOSTS else secrets.token_hex(16)
    return replace(
        EmulatorConfig(data_dir=data_dir),
        schema=args.schema,
        presigned_url_expiry_seconds=args.presign_expiry,
        download_url_expiry_seconds=args.download_expiry,
        import_delay_seconds=args.import_delay,
        fault_rules=tuple(rules),
        fault_seed=seed,
        admin_token=admin_token,
        capacity=profile_named(args.profile) if args.profile else None,
        # A data dir the user names is kept: state and CA survive a restart (emulator/persistence.py).
        persist=args.data_dir is not None,
    )


def announce(running: RunningEmulator, config: EmulatorConfig) -> dict[str, Any]:
    """Prints the human summary and the JSON line; returns what the JSON line holds."""
    ca_file = str(running.ca_file) if running.ca_file else None
    ready = {
        "event": "ready",
        "base_url": running.base_url,
        "s3_url": running.s3_url,
        "ca_file": ca_file,
        "admin_url": running.admin_url,
        "admin_token": config.admin_token or None,
        "data_dir": str(config.data_dir),
        "schema": config.schema,
        "tokens": running.tokens,
        "pid": os.getpid(),
    }
    lines = [
        f"gcbulk emulator (schema {config.schema}) is serving",
        f"  API base URL:  {running.base_url}",
        f"  S3 URL:        {running.s3_url}",
    ]
    if ca_file:
        lines += [f"  CA file:       {ca_file}", f"  export SSL_CERT_FILE={ca_file}"]
    lines.append(f"  Admin:         {running.admin_url}  (test controls, not part of the Grand Challenge API)")
    if config.admin_token:
        lines.append(f"  Admin token:   {config.admin_token}")
    lines += [f"  Data dir:      {config.data_dir}", "  Tokens (local emulator users only):"]
    width = max((len(name) for name in running.tokens), default=0)
    lines += [f"    {name:<{width}}  {token}" for name, token in running.tokens.items()]
    lines.append("Stop with Ctrl-C (SIGINT) or SIGTERM.")
    print("\n".join(lines))
    print(json.dumps(ready), flush=True)
    return ready


async def serve(args: argparse.Namespace, config: EmulatorConfig, seed: dict[str, Any]) -> None:
    from gcbulk.emulator.server import run_emulator  # after main's check that the emulator extra is installed

    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stop.set)
    s3_port = args.s3_port if args.s3_port is not None else (args.port + 1 if args.port else 0)
    async with run_emulator(
        config,
        seed=seed,
        host=args.host,
        port=args.port,
        s3_port=s3_port,
        tls=not args.plain_http,
        public_host=args.public_host,
    ) as running:
        announce(running, config)
        await stop.wait()
    print("gcbulk emulator stopped", flush=True)


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    missing = EMULATOR.install_hint("the Grand Challenge emulator")
    if missing:
        print(f"gcbulk-emulator: {missing}", file=sys.stderr)
        return 2
    temporary = args.data_dir is None
    data_dir = Path(tempfile.mkdtemp(prefix="gcbulk-emulator-")) if temporary else args.data_dir
    try:
        try:
            config = _config(args, data_dir)
            seed = load_seed(args.seed_study)
        except (FaultConfigError, SeedError) as error:
            print(f"gcbulk-emulator: {error}", file=sys.stderr)
            return 2
        try:
            asyncio.run(serve(args, config, seed))
        except (SeedError, ValueError) as error:  # ValueError: an unreadable saved state (persistence.load_state)
            print(f"gcbulk-emulator: {error}", file=sys.stderr)
            return 2
        except OSError as error:
            print(
                f"gcbulk-emulator: cannot listen on {args.host}:{args.port}: {error.strerror or error}; "
                "choose another --port (0 picks a free one)",
                file=sys.stderr,
            )
            return 2
        return 0
    finally:
        if temporary:
            shutil.rmtree(data_dir, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
