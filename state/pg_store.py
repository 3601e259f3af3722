"""The ledger on PostgreSQL: the subset of sqlite-utils' ``Database`` the ledger uses, over one psycopg 3 connection.

Why an adapter of sqlite-utils' surface rather than a second ledger: the state machines, the transitions, the queries
and — above all — the migrations are written once, against ``db.execute``, ``db.atomic()``, ``db.conn.execute`` and
``db.table("table").create/create_index/add_column/insert``, and run unchanged on either store. A migration added later
(``m005_…``) that keeps to that surface, and to SQL both dialects read, works on PostgreSQL without a second copy;
``dialect(db)`` (``state/dsn.py``) is there for the rare statement that cannot be shared (m002's trigger).

Why psycopg 3: the ledger API is synchronous (the engine calls it from one thread, see engine/upload/journal.py),
and psycopg 3 is the driver that offers both a blocking and an asyncio connection with the same semantics, native
``FOR UPDATE SKIP LOCKED`` / advisory locks, and client-side binding (``ClientCursor``). asyncpg is asyncio-only,
so every synchronous ledger call would need an event loop bridge. The ``binary`` extra ships libpq in the wheel, so
the container needs no system library.

No SQL translation: the ledger's SQL is written once in the dialect both databases read — ``INSERT … ON CONFLICT DO
NOTHING`` (SQLite ≥ 3.24) rather than ``INSERT OR IGNORE``, temporary tables named without SQLite's ``temp.``
schema (both look there first), no ``group_concat`` (the one query that has it reads the export's ledger, which is a
file, always SQLite). Chosen over SQLAlchemy Core because the ledger's statements are few, short and already shared;
a query builder would rewrite all of them and the held-back writes below for no gain in what runs. What stays is the
DB-API's parameter style, which differs by driver, not by dialect: sqlite3 takes ``?``, psycopg ``%s``
(``_format_style``: a ``?`` outside a string literal becomes ``%s``, and a literal ``%`` is doubled). An ``INSERT``
into a table keyed by ``id`` returns the new id as ``cursor.lastrowid``; ``numeric`` results (``sum`` of a bigint)
come back as ``int`` as SQLite's would.
"""

from __future__ import annotations

import re
import secrets
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import psycopg
from psycopg import pq
from psycopg.adapt import Loader

from gcbulk.state.dsn import shown_dsn
from gcbulk.state.errors import LedgerError

_TYPES = {int: "BIGINT", str: "TEXT", float: "DOUBLE PRECISION", bytes: "BYTEA", bool: "BIGINT"}


class _IntegralNumeric(Loader):
    """``numeric`` (what PostgreSQL's ``sum`` of a BIGINT returns) as ``int`` where integral, as SQLite returns it."""

    def load(self, data: Any) -> int | float:
        text = bytes(data).decode()
        value = float(text)
        return int(text) if re.fullmatch(r"-?\d+", text) else value


_PLACEHOLDER = re.compile(r"'(?:[^']|'')*'|\?|%")


def _format_style(sql: str) -> str:
    """``sql`` with sqlite3's ``?`` parameters in psycopg's ``%s`` style (see the module docstring)."""
    # psycopg reads ``%`` as a placeholder even inside a string literal, so it is doubled there too; a ``?`` inside
    # a literal is text.
    return _PLACEHOLDER.sub(lambda m: {"?": "%s", "%": "%%"}.get(m.group(0)) or m.group(0).replace("%", "%%"), sql)


class PgCursor:
    """The sqlite3 cursor surface the ledger reads: ``fetchone``, ``fetchall``, iteration, ``description``,
    ``rowcount`` and ``lastrowid``. A write held back in a transaction (see ``PgDatabase``) gets its rowcount and
    new id when it is sent; reading either sends it at once."""

    def __init__(self, cursor: psycopg.Cursor | None, db: PgDatabase, *, returns_id: bool = False) -> None:
        self._cursor = cursor
        self._db = db
        self._returns_id = returns_id  # the RETURNING id added for lastrowid: the caller sees no rows, as in sqlite3
        self._lastrowid: int | None = None
        self._rowcount = -1
        self.description: Any = None  # a held write has none: it is no RETURNING of the caller's
        if cursor is not None:
            self._took(cursor)

    def _took(self, cursor: psycopg.Cursor) -> None:
        """The current result of ``cursor`` is this statement's."""
        self._cursor = cursor
        self._rowcount = cursor.rowcount
        self.description = None if self._returns_id else cursor.description
        if self._returns_id:
            row = cursor.fetchone()
            self._lastrowid = None if row is None else row[0]

    @property
    def lastrowid(self) -> int | None:
        if self._cursor is None:
            self._db.send_held()
        return self._lastrowid

    @property
    def rowcount(self) -> int:
        if self._cursor is None:
            self._db.send_held()
        return self._rowcount

    def fetchone(self) -> tuple[Any, ...] | None:
        return self._cursor.fetchone() if self._cursor is not None and self.description else None

    def fetchall(self) -> list[tuple[Any, ...]]:
        return self._cursor.fetchall() if self._cursor is not None and self.description else []

    def __iter__(self) -> Iterator[tuple[Any, ...]]:
        return iter(self.fetchall())


class PgConnection:
    """The sqlite3 connection surface: ``execute``, ``executemany``, ``in_transaction``."""

    def __init__(self, db: PgDatabase) -> None:
        self._db = db

    def execute(self, sql: str, params: Sequence[Any] = ()) -> PgCursor:
        return self._db.execute(sql, params)

    def executemany(self, sql: str, rows: Any) -> PgCursor:
        db, statement = self._db, _format_style(sql)
        if db.transaction_open and _WRITE.match(statement) and "RETURNING" not in statement.upper():
            # Inside a transaction, held back as ``execute`` holds a write: sent with the next statement whose answer
            # is needed, or the COMMIT (a plan's files travel with the next case's INSERT, not a round trip each).
            # Its rowcount is not kept (nothing reads it; sqlite3's would be the sum).
            db.hold([db._bind(statement, tuple(row)) for row in rows])
            return PgCursor(None, db)
        db.send_held()
        cursor = db.raw.cursor()
        cursor.executemany(statement, [tuple(row) for row in rows])
        return PgCursor(cursor, db)

    @property
    def in_transaction(self) -> bool:
        db = self._db
        # A transaction whose COMMIT is held back (commit_rides_next) has ended for its caller.
        return db.transaction_open or (
            not db.commit_held and db.raw.info.transaction_status != pq.TransactionStatus.IDLE
        )


_WRITE = re.compile(r"\s*(INSERT|UPDATE|DELETE|SAVEPOINT|RELEASE)\b", re.IGNORECASE)


class PgDatabase:
    """One autocommit psycopg connection, transactions opened explicitly by :meth:`atomic` (as sqlite-utils does).

    Inside a transaction, writes are held back and sent together with the next statement whose answer is needed (a
    read, or a write whose rowcount or new id is read) or with the COMMIT, as one query string: one round trip
    where each statement was one. Every ledger change is a short transaction of a read or two and a few writes
    (BEGIN, the row, its event, savepoints), and on a shared ledger round trips are what a worker waits on. A write
    that fails is raised by the statement it travels with, still inside the transaction, which then rolls back as
    before; a transaction that read nothing sends nothing until its COMMIT. Reads that do not wait on each other's
    answers go together too (``read_together``), and a COMMIT followed by a read of what it committed can travel with
    that read (``commit_rides_next``): measured with ``benchmarks/ledger_statements.py --postgres``, ~50 round trips
    per 2-file case where there were ~90."""

    dialect = "postgresql"

    def __init__(self, dsn: str, *, application_name: str = "gcbulk") -> None:
        self.dsn_shown = shown_dsn(dsn)
        try:
            # Client-side binding: the ledger's statements carry untyped parameters (``? IS NULL``, a NULL assigned to
            # a column) that server-side binding would refuse to infer; it also lets writes be held back as text.
            self.raw = psycopg.connect(
                dsn,
                autocommit=True,
                cursor_factory=psycopg.ClientCursor,
                application_name=application_name,
                connect_timeout=10,
            )
        except psycopg.Error as exc:
            detail = str(exc).replace(dsn, self.dsn_shown).strip().splitlines()[0] if str(exc) else type(exc).__name__
            raise LedgerError(
                f"cannot connect to the PostgreSQL ledger {self.dsn_shown} ({shown_dsn(detail)}); check the host, port, "
                "database name and credentials in --ledger / GCBULK_LEDGER, and that the server is running"
            ) from None
        self.raw.adapters.register_loader("numeric", _IntegralNumeric)
        self.conn = PgConnection(self)
        self._pk_id_tables: set[str] | None = None
        self.transaction_open = False
        self._sent_in_transaction = False  # anything of it reached the server (else a rollback has nothing to undo)
        self._held: list[tuple[str, PgCursor | None]] = []  # statements bound to text, each with its caller's cursor
        self._binder = psycopg.ClientCursor(self.raw)  # as raw.cursor() makes (cursor_factory), typed as one
        self._commit_rides = False  # inside commit_rides_next: a COMMIT is held back for the next statement
        self.commit_lost = False  # a held-back COMMIT whose round trip failed before it ran (nothing committed)
        self.commit_held = False  # a COMMIT waits in ``_held`` for the next statement

    # ------------------------------------------------------------------------------------------------ statements
    def execute(self, sql: str, params: Sequence[Any] = ()) -> PgCursor:
        statement = _format_style(sql)
        table = _insert_target(statement)
        returns_id = table is not None and "RETURNING" not in statement.upper() and table in self._id_tables()
        if returns_id:
            statement += " RETURNING id"
        # A write's own RETURNING rows are read by its caller at once: it is sent at once.
        if self.transaction_open and _WRITE.match(statement) and (returns_id or "RETURNING" not in statement.upper()):
            held = PgCursor(None, self, returns_id=returns_id)
            self._held.append((self._bind(statement, params), held))
            return held
        if self._held:
            return PgCursor(self._send(self._bind(statement, params)), self, returns_id=returns_id)
        cursor = self.raw.cursor()
        cursor.execute(statement, tuple(params))
        return PgCursor(cursor, self, returns_id=returns_id)

    def hold(self, statements: Sequence[str]) -> None:
        """Bound writes of the open transaction, held back to go with its next round trip (see the class)."""
        self._held.extend((statement, None) for statement in statements)

    def _bind(self, sql: str, params: Sequence[Any] = ()) -> str:
        """``sql`` (in psycopg's style: placeholders ``%s``, a literal ``%`` doubled) with ``params`` in it, as sent."""
        return self._binder.mogrify(sql, tuple(params))

    def _send(self, *texts: str) -> psycopg.Cursor:
        """Runs ``texts`` after every held statement, in one round trip; the cursor is left on the first text's
        result (``nextset`` moves on to the next's)."""
        held, self._held = self._held, []
        self._sent_in_transaction = self.transaction_open
        cursor = self.raw.cursor()
        commit_held, self.commit_held = self.commit_held, False
        try:
            cursor.execute("; ".join([statement for statement, _ in held] + list(texts)))  # bound: no parameters
        except BaseException:
            if commit_held and self._failed_before_commit():
                self.commit_lost = True  # the held-back COMMIT (commit_rides_next) never ran: nothing was committed
            raise
        for _, owner in held:
            if owner is not None:
                owner._took(cursor)
            cursor.nextset()
        return cursor

    def read_together(self, queries: Sequence[tuple[str, Sequence[Any]]]) -> list[list[dict[str, Any]]]:
        """The rows of each ``(sql, params)`` read (in the ledger's ``?`` style), all in one round trip — with any
        writes held back, which they then see. A failed read raises as ``execute`` would, and the transaction it is
        part of rolls back as before."""
        if not queries:
            return []
        cursor = self._send(*[self._bind(_format_style(sql), params) for sql, params in queries])
        answers: list[list[dict[str, Any]]] = []
        for index in range(len(queries)):
            if index:
                cursor.nextset()
            names = [column.name for column in cursor.description or ()]
            answers.append([dict(zip(names, row, strict=True)) for row in cursor.fetchall()])
        return answers

    def _failed_before_commit(self) -> bool:
        """After a failed round trip: its transaction is still open (it failed before its COMMIT ran), now rolled
        back; or the connection is lost (whether it committed is unknown: taken as not, as a failed COMMIT is)."""
        status = self.raw.info.transaction_status
        if status == pq.TransactionStatus.IDLE:
            return False
        if status == pq.TransactionStatus.INERROR:
            self.raw.execute("ROLLBACK")
        return True

    @contextmanager
    def commit_rides_next(self) -> Iterator[None]:
        """The COMMIT of a transaction that ends inside is held back and sent with the next statement — a read of
        what the transaction wrote (``Ledger.record_then_read``) — in one round trip instead of two; by the end of
        the block it has been sent. Statements run in order in one query string, so the read sees the commit made.
        If that round trip fails before the COMMIT ran, ``commit_lost`` says so: nothing of the transaction is kept,
        exactly as when a COMMIT sent alone fails."""
        self._commit_rides, self.commit_lost = True, False
        try:
            yield
        finally:
            self._commit_rides = False
        self.send_held()

    def send_held(self) -> None:
        if self._held:
            last, owner = self._held.pop()
            cursor = self._send(last)
            if owner is not None:
                owner._took(cursor)

    def _id_tables(self) -> set[str]:
        if self._pk_id_tables is None:
            rows = self.raw_execute(
                "SELECT c.table_name FROM information_schema.table_constraints t "
                "JOIN information_schema.constraint_column_usage c ON c.constraint_name = t.constraint_name "
                "AND c.table_schema = t.table_schema "
                "WHERE t.constraint_type = 'PRIMARY KEY' AND t.table_schema = current_schema() AND c.column_name = 'id'"
            ).fetchall()
            self._pk_id_tables = {row[0] for row in rows}
        return self._pk_id_tables

    def forget_schema(self) -> None:
        self._pk_id_tables = None

    # ---------------------------------------------------------------------------------------------- transactions
    def raw_execute(self, sql: str, params: Sequence[Any] | None = None) -> psycopg.Cursor:
        """A statement of the store's own (DDL, locks, catalogue reads), after every statement held back."""
        self.send_held()
        return self.raw.execute(sql, params)

    @contextmanager
    def atomic(self) -> Iterator[PgDatabase]:
        """A transaction; nested blocks are savepoints (sqlite-utils' ``atomic`` semantics)."""
        if self.conn.in_transaction:
            name = f"gcbulk_{secrets.token_hex(8)}"
            mark = len(self._held)
            self._held.append((f"SAVEPOINT {name}", None))
            try:
                yield self
            except BaseException:
                if len(self._held) > mark and self._held[mark][0] == f"SAVEPOINT {name}":
                    del self._held[mark:]  # none of the block was sent: nothing to roll back on the server
                elif self.conn.in_transaction:
                    try:
                        self.raw_execute(f"ROLLBACK TO SAVEPOINT {name}")
                        self.raw_execute(f"RELEASE SAVEPOINT {name}")
                    except psycopg.Error:
                        pass  # a write held before the savepoint failed, so it never ran: the transaction rolls back
                raise
            else:
                self._held.append((f"RELEASE SAVEPOINT {name}", None))
        else:
            self.begin()
            try:
                yield self
            except BaseException:
                self.rollback()
                raise
            else:
                self.commit()

    def begin(self) -> None:
        if self.commit_held:  # the transaction before commits first, whatever becomes of this one
            self.send_held()
        self.transaction_open, self._sent_in_transaction = True, False
        self._held.append(("BEGIN", None))

    def commit(self) -> None:
        if self._commit_rides and [statement for statement, _ in self._held] != ["BEGIN"]:
            self._held.append(("COMMIT", None))  # sent with the next statement (commit_rides_next)
            self.transaction_open, self._sent_in_transaction, self.commit_held = False, False, True
            return
        try:
            if self._sent_in_transaction or [statement for statement, _ in self._held] != ["BEGIN"]:
                self._send("COMMIT")
        except BaseException:
            # A held statement failed: the server skipped what followed it, COMMIT included.
            if self.raw.info.transaction_status != pq.TransactionStatus.IDLE:
                self.raw.execute("ROLLBACK")
            raise
        finally:
            self._held, self.transaction_open, self._sent_in_transaction = [], False, False

    def rollback(self) -> None:
        sent = self._sent_in_transaction or self.raw.info.transaction_status != pq.TransactionStatus.IDLE
        self._held, self.transaction_open, self._sent_in_transaction = [], False, False
        if sent:
            self.raw.execute("ROLLBACK")

    def close(self) -> None:
        self.raw.close()

    def __getitem__(self, name: str) -> PgTable:
        return PgTable(self, name)

    def table(self, name: str) -> PgTable:
        """As sqlite-utils' ``Database.table``: the table of that name (a table, never a view)."""
        return PgTable(self, name)


def _insert_target(sql: str) -> str | None:
    match = re.match(r"\s*INSERT\s+INTO\s+([A-Za-z_][A-Za-z0-9_]*)", sql, re.IGNORECASE)
    return match.group(1) if match else None


class PgTable:
    """The table builder the migrations use (``create``, ``create_index``, ``add_column``, ``insert``, ``exists``,
    ``rows_where``, ``pks``): sqlite-utils' signatures, PostgreSQL's DDL."""

    def __init__(self, db: PgDatabase, name: str) -> None:
        self.db = db
        self.name = name

    def exists(self) -> bool:
        row = self.db.raw_execute(
            "SELECT 1 FROM information_schema.tables WHERE table_schema = current_schema() AND table_name = %s",
            (self.name,),
        ).fetchone()
        return row is not None

    def create(
        self,
        columns: dict[str, type],
        *,
        pk: str | tuple[str, ...] | None = None,
        not_null: set[str] | None = None,
        defaults: dict[str, Any] | None = None,
        foreign_keys: Sequence[tuple[str, str, str]] = (),
    ) -> PgTable:
        not_null = not_null or set()
        defaults = defaults or {}
        pks = (pk,) if isinstance(pk, str) else tuple(pk or ())
        lines = []
        for column, kind in columns.items():
            sql_type = _TYPES[kind]
            if pks == (column,) and kind is int:
                # SQLite's INTEGER PRIMARY KEY is its rowid: an INSERT without an id gets the next one.
                lines.append(f"{column} BIGINT GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY")
                continue
            line = f"{column} {sql_type}"
            if column in not_null or column in pks:
                line += " NOT NULL"
            if column in defaults:
                line += f" DEFAULT {_literal(defaults[column])}"
            lines.append(line)
        if pks and not (len(pks) == 1 and columns.get(pks[0]) is int):
            lines.append(f"PRIMARY KEY ({', '.join(pks)})")
        for column, other, other_column in foreign_keys:
            lines.append(f"FOREIGN KEY ({column}) REFERENCES {other} ({other_column})")
        self.db.raw_execute(f"CREATE TABLE {self.name} (\n    " + ",\n    ".join(lines) + "\n)")
        self.db.forget_schema()
        return self

    def create_index(self, columns: Sequence[str], *, unique: bool = False) -> PgTable:
        name = f"idx_{self.name}_{'_'.join(columns)}"
        self.db.raw_execute(f"CREATE {'UNIQUE ' if unique else ''}INDEX {name} ON {self.name} ({', '.join(columns)})")
        return self

    def add_column(self, name: str, kind: type) -> PgTable:
        self.db.raw_execute(f"ALTER TABLE {self.name} ADD COLUMN {name} {_TYPES[kind]}")
        return self

    def insert(self, record: dict[str, Any]) -> PgTable:
        names = ", ".join(record)
        marks = ", ".join("?" for _ in record)
        self.db.execute(f"INSERT INTO {self.name} ({names}) VALUES ({marks})", tuple(record.values()))
        return self

    @property
    def pks(self) -> list[str]:
        return ["id"] if self.name in self.db._id_tables() else []

    def rows_where(self, where: str, params: Sequence[Any], *, order_by: str | None = None) -> Iterator[dict[str, Any]]:
        # sqlite-utils' Migrations orders its records by rowid: their identity id is the same order here.
        order = "id" if order_by == "rowid" else order_by
        cursor = self.db.execute(
            f"SELECT * FROM {self.name} WHERE {where}" + (f" ORDER BY {order}" if order else ""), params
        )
        names = [d[0] for d in cursor.description or ()]
        for row in cursor.fetchall():
            yield dict(zip(names, row, strict=True))


def _literal(value: Any) -> str:
    if isinstance(value, bool | int | float):
        return str(int(value) if isinstance(value, bool) else value)
    return "'" + str(value).replace("'", "''") + "'"


# The advisory lock key of "one process sets the job up at a time" (migrations, binding): any constant unique to
# gcbulk; the planner's lock is another (``PLAN_LOCK_KEY``, gcbulk.state.workers).
SETUP_LOCK_KEY = 0x6762_756C_6B00_0001


@contextmanager
def job_setup_lock(db: PgDatabase) -> Iterator[None]:
    """A session-level advisory lock around migrating and binding, so N workers starting at once migrate once."""
    db.raw_execute("SELECT pg_advisory_lock(%s)", (SETUP_LOCK_KEY,))
    try:
        yield
    finally:
        db.raw_execute("SELECT pg_advisory_unlock(%s)", (SETUP_LOCK_KEY,))


@contextmanager
def postgres_faults(shown: str) -> Iterator[None]:
    """PostgreSQL's failures as LedgerErrors that name the ledger (never its password) and say what to do."""
    from gcbulk.state.errors import LedgerDiskFull

    try:
        yield
    except psycopg.errors.DiskFull:
        raise LedgerDiskFull(
            f"the PostgreSQL ledger {shown} has no room to write; free space on its server — nothing "
            "was half-written, and the run resumes where it stopped"
        ) from None
    except psycopg.errors.InsufficientPrivilege as exc:
        raise LedgerError(
            f"the PostgreSQL ledger {shown} refused a statement ({_first_line(exc)}); the ledger's role "
            "needs to create tables in its database (or schema)"
        ) from None
    except psycopg.OperationalError as exc:
        raise LedgerError(
            f"lost the PostgreSQL ledger {shown} ({shown_dsn(_first_line(exc))}); check that the server "
            "is running and reachable, then run again — the job resumes where it stopped"
        ) from None


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__
