"""A throwaway PostgreSQL server for the tests: initdb in a temporary folder, on a free 127.0.0.1 port, stopped at the
end. A real server, not a mock: the ledger's SQL, its transactions and ``FOR UPDATE SKIP LOCKED`` run for real.

Found on PATH, in /usr/lib/postgresql/*/bin (Debian's ``postgresql`` package, which ``.ci/run`` installs when it is
missing) or in $GCBULK_TEST_PG_BIN. Where none is found the tests that need it are skipped, saying so.

initdb and postgres refuse to run as root (a container's default user): then the server runs as ``nobody`` (or
``postgres``), which owns the data folder; the tests connect over TCP with ``trust`` on 127.0.0.1 only.

Why not pytest-postgresql's ``postgresql_proc``: it starts ``pg_ctl`` as the current user, so under root (CI here,
and most containers) the server refuses to start; the demotion above is the one thing this module adds.
"""

from __future__ import annotations

import glob
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

_USER = "gcbulk"


def find_bin_dir() -> Path | None:
    candidates = [os.environ.get("GCBULK_TEST_PG_BIN", "")]
    on_path = shutil.which("initdb")
    if on_path:
        candidates.append(str(Path(os.path.realpath(on_path)).parent))
    candidates += sorted(glob.glob("/usr/lib/postgresql/*/bin"), reverse=True)
    for candidate in candidates:
        if candidate and (Path(candidate) / "initdb").exists() and (Path(candidate) / "pg_ctl").exists():
            return Path(candidate)
    return None


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _demote() -> tuple[int, int] | None:
    if os.geteuid() != 0:
        return None
    for name in ("postgres", "nobody"):
        try:
            entry = pwd.getpwnam(name)
        except KeyError:
            continue
        return entry.pw_uid, entry.pw_gid
    return None


@dataclass
class PgServer:
    bin_dir: Path
    root: Path
    port: int
    ids: tuple[int, int] | None

    @classmethod
    def start(cls) -> PgServer:
        bin_dir = find_bin_dir()
        if bin_dir is None:
            raise FileNotFoundError(
                "PostgreSQL's initdb/pg_ctl not found (install Debian's 'postgresql' package, as "
                ".ci/run does, or set GCBULK_TEST_PG_BIN)"
            )
        root = Path(tempfile.mkdtemp(prefix="gcbulk-pg-"))
        ids = _demote()
        if ids is not None:
            os.chown(root, *ids)
        server = cls(bin_dir, root, _free_port(), ids)
        server._run("initdb", "-D", str(root / "data"), "-U", _USER, "-A", "trust", "--no-sync", "-E", "UTF8")
        # A probed port can be taken before postgres binds it (any outgoing connection may get it as its local
        # port): another port is tried then.
        for attempt in range(3):
            try:
                # fsync off: a test server's data is thrown away; durability is PostgreSQL's business, not tested.
                server._run(
                    "pg_ctl",
                    "-D",
                    str(root / "data"),
                    "-l",
                    str(root / "log"),
                    "-w",
                    "-t",
                    "60",
                    "-o",
                    f"-h 127.0.0.1 -p {server.port} -k {root} -c fsync=off -c max_connections=200",
                    "start",
                )
                return server
            except RuntimeError:
                if attempt == 2:
                    raise
                server.port = _free_port()
        return server

    def _run(self, program: str, *args: str) -> None:
        def demote() -> None:
            if self.ids is not None:
                os.setgid(self.ids[1])
                os.setuid(self.ids[0])

        result = subprocess.run(
            [str(self.bin_dir / program), *args],
            capture_output=True,
            text=True,
            preexec_fn=demote,
            cwd=self.root,
            timeout=120,
            check=False,
        )
        if result.returncode != 0:
            log = (self.root / "log").read_text() if (self.root / "log").exists() else ""
            raise RuntimeError(f"{program} failed: {result.stderr or result.stdout}\n{log}")

    def dsn(self, database: str = "postgres") -> str:
        return f"postgresql://{_USER}@127.0.0.1:{self.port}/{database}"

    def new_database(self, *, template: str = "template1") -> str:
        """A fresh database on this server, a copy of ``template`` (PostgreSQL's empty default, or
        ``ledger_template()``); returns its DSN. ``drop_database`` removes it: hundreds of databases left behind made
        the server's teardown take minutes."""
        import psycopg

        name = f"t_{uuid.uuid4().hex[:16]}"
        with psycopg.connect(self.dsn(), autocommit=True) as conn:
            conn.execute(f"CREATE DATABASE {name} TEMPLATE {template}")
        return self.dsn(name)

    def ledger_template(self) -> str:
        """The name of a database holding the ledger's schema, migrated on the first call and copied by every
        ``new_database(template=...)`` after it: ``CREATE DATABASE … TEMPLATE`` copies files, where migrating runs
        every migration's statements again. Nothing is bound to a job in it."""
        import psycopg

        from gcbulk.state.migrations import migrate
        from gcbulk.state.pg_store import PgDatabase

        name = "gcbulk_ledger_template"
        with psycopg.connect(self.dsn(), autocommit=True) as conn:
            if conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (name,)).fetchone():
                return name
            conn.execute(f"CREATE DATABASE {name}")
        db = PgDatabase(self.dsn(name))
        try:
            migrate(db)  # type: ignore[arg-type]  # what opening a ledger runs, without binding it to a job
        finally:
            db.close()  # a template cannot be copied while anyone is connected to it
        return name

    def drop_database(self, dsn: str) -> None:
        """Drops the database of ``dsn`` (made by ``new_database``), ending any connection a test left open."""
        import psycopg

        name = dsn.rsplit("/", 1)[1].split("?", 1)[0]
        with psycopg.connect(self.dsn(), autocommit=True) as conn:
            conn.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")

    def stop(self) -> None:
        try:
            self._run("pg_ctl", "-D", str(self.root / "data"), "-m", "immediate", "-w", "stop")
        finally:
            deadline = time.monotonic() + 10
            while time.monotonic() < deadline:
                try:
                    shutil.rmtree(self.root)
                    break
                except OSError:
                    time.sleep(0.1)
