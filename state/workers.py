"""Several workers on one job (issue 13): who works on it, which case each holds, and the server limits they share.

* **Leases.** A worker claims a runnable case by writing its id and an expiry on the case's row; on PostgreSQL the
  claim reads ``FOR UPDATE SKIP LOCKED``, so concurrent claims pass each other instead of queueing on one row. Each
  heartbeat renews the worker's leases. A worker that dies (kill -9, a lost machine) stops renewing; once its lease
  has expired another worker claims the case and resumes it from the recorded uploads and parts.
* **The lease clock** is the database's on PostgreSQL (``clock_timestamp()``): workers on several machines never
  compare their own clocks. On SQLite the ledger's file lock already admits one process, so leases written by an
  earlier process (killed before it could release them) never hold a case back there.
* **Shared limits.** Each worker's units under a server limit (live uploads, imports in flight) are a row of
  ``worker_holdings``; a worker raises its row only if the rows of the live workers, plus what the server counts that
  no live worker holds (``shared_limits.external``: other tools' uploads, a dead worker's), still fit the ceiling.
  Check and write are one transaction, and on PostgreSQL the limit's row is locked ``FOR UPDATE`` first, so two
  workers never both see the same room. A dead worker's rows stop counting when its heartbeat is a lease old.

A layer of the ledger over its event log (``LedgerEvents``); the state machine of a case is unchanged (a lease is not a state).
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Collection, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from gcbulk.state.dsn import dialect
from gcbulk.state.errors import LedgerError
from gcbulk.state.event_log import LedgerEvents
from gcbulk.state.machines import RUNNABLE_CASE_STATES

# Not under gcbulk.state: a wait for another worker's plan must be heard.
wait_log = logging.getLogger("gcbulk.waits")
PLAN_LOCK_KEY = 0x6762_756C_6B00_0002  # "gbulk" + 2 (pg_store's SETUP_LOCK_KEY is + 1)
PLAN_WAIT_VOICE_SECONDS = 10.0
# Another worker's plan of a 100 000-case tree takes minutes; a lock still held after this is taken for a stuck holder.
PLAN_WAIT_DEADLINE_SECONDS = 30 * 60.0
# A worker renews its leases every third of this (engine/upload/leases.py); one silent for longer is taken for dead.
DEFAULT_LEASE_SECONDS = 30.0

_RUNNABLE = tuple(sorted(RUNNABLE_CASE_STATES))
_RUNNABLE_MARKS = ", ".join("?" * len(_RUNNABLE))


class PlanningLockTimeout(LedgerError):
    """Another connection held the job's plan lock for longer than a plan takes."""


@dataclass(frozen=True, kw_only=True)
class Claim:
    case_id: int
    taken_over_from: str | None  # the worker whose expired lease this claim ended, if any


@dataclass(frozen=True, kw_only=True)
class LeasedElsewhere:
    """Runnable cases other live workers hold: what a worker with nothing left to claim waits for."""

    cases: int
    workers: tuple[str, ...]
    soonest_expiry_seconds: float  # until the first of those leases runs out unless renewed


@dataclass(frozen=True, kw_only=True)
class WorkerRow:
    worker_id: str
    host: str
    pid: int
    started_at: str
    seconds_since_heartbeat: float
    live: bool
    stopped: bool
    cases_leased: int
    api_limit: int | None
    imports_limit: int | None
    holdings: Mapping[str, int]
    progress: Mapping[str, Any]


class LedgerWorkers(LedgerEvents):
    """Leases, heartbeats and shared limits (see the module docstring)."""

    @property
    def _shared_store(self) -> bool:
        return dialect(self.db) == "postgresql"

    def shared_by_workers(self) -> bool:
        """True on PostgreSQL, where several processes may work on the job at once."""
        return self._shared_store

    @contextmanager
    def planning_lock(self, *, deadline_seconds: float = PLAN_WAIT_DEADLINE_SECONDS) -> Iterator[None]:
        """Held while a plan is recorded: on PostgreSQL a session advisory lock, waited for with a log line every
        ``PLAN_WAIT_VOICE_SECONDS`` (another worker's plan of a large tree can take minutes) and at most
        ``deadline_seconds``, then ``PlanningLockTimeout``. On SQLite the file lock already admits one process."""
        if not self._shared_store:
            yield
            return
        started = last_voice = time.monotonic()
        while not self.scalar("SELECT pg_try_advisory_lock(?)", (PLAN_LOCK_KEY,)):
            now = time.monotonic()
            if now - started >= deadline_seconds:
                raise PlanningLockTimeout(
                    f"waited {now - started:.0f} s for another connection to finish recording this job's plan "
                    f"(the plan lock{self._plan_lock_holder()}); a plan takes minutes at most, so its holder is "
                    "probably stuck: look for it in pg_stat_activity on the ledger's server (a gcbulk plan or run "
                    "still connected), stop it (pg_terminate_backend frees the lock), then run again"
                )
            if now - last_voice >= PLAN_WAIT_VOICE_SECONDS:
                last_voice = now
                wait_log.info(
                    "another worker is recording the job's plan; waiting %.0f s so far (this worker then "
                    "re-plans, which records nothing new if the tree is unchanged)",
                    now - started,
                )
            time.sleep(min(1.0, max(deadline_seconds - (now - started), 0.0)))
        try:
            yield
        finally:
            self.scalar("SELECT pg_advisory_unlock(?)", (PLAN_LOCK_KEY,))

    def _plan_lock_holder(self) -> str:
        # A bigint advisory key is stored as two 32-bit halves (classid, objid) with objsubid 1.
        row = self.row(
            "SELECT a.pid, a.application_name, host(a.client_addr) AS addr, "
            "date_trunc('second', a.backend_start)::text AS since "
            "FROM pg_locks l JOIN pg_stat_activity a ON a.pid = l.pid WHERE l.locktype = 'advisory' AND l.granted "
            "AND l.classid::bigint = ? AND l.objid::bigint = ? AND l.objsubid = 1",
            (PLAN_LOCK_KEY >> 32, PLAN_LOCK_KEY & 0xFFFF_FFFF),
        )
        if row is None:
            return ""
        return (
            f" is held by server process {row['pid']}, application '{row['application_name']}' from "
            f"{row['addr'] or 'a local socket'}, connected since {row['since']}"
        )

    def lease_clock(self) -> float:
        """Seconds on the clock every worker of the job agrees on (see the module docstring)."""
        if self._shared_store:
            return float(self.scalar("SELECT extract(epoch FROM clock_timestamp())"))
        return self._clock().timestamp()

    def _lease_now(self) -> tuple[str, tuple[float, ...]]:
        """The lease clock as an SQL expression and its parameters, read by the statement that uses it: on
        PostgreSQL the server's ``clock_timestamp()`` (no round trip of its own before each claim or reservation), on
        SQLite this process's clock as a parameter."""
        if self._shared_store:
            return "CAST(extract(epoch FROM clock_timestamp()) AS DOUBLE PRECISION)", ()
        return "?", (self._clock().timestamp(),)

    # ------------------------------------------------------------------------------------------------- workers
    def register_worker(self, worker_id: str, *, host: str, pid: int) -> None:
        """This worker starts (or starts again under the same id, e.g. a restarted container): a fresh heartbeat."""
        now = self.lease_clock()
        with self.db.atomic():
            self.db.execute(
                "INSERT INTO workers (worker_id, host, pid, started_at, heartbeat_at) VALUES (?, ?, ?, ?, ?) "
                "ON CONFLICT (worker_id) DO UPDATE SET host = excluded.host, pid = excluded.pid, "
                "started_at = excluded.started_at, heartbeat_at = excluded.heartbeat_at, stopped_at = NULL",
                (worker_id, host, pid, self.now(), now),
            )
            self.db.execute("DELETE FROM worker_holdings WHERE worker_id = ?", (worker_id,))

    def heartbeat(
        self,
        worker_id: str,
        *,
        lease_seconds: float,
        running: Collection[int],
        api_limit: int | None = None,
        imports_limit: int | None = None,
        progress: Mapping[str, Any] | None = None,
    ) -> list[int]:
        """Renews this worker's row and every lease it holds; returns those of ``running`` it no longer holds (its
        lease ran out and another worker claimed the case: this worker must stop working on them)."""
        now = self.lease_clock()
        with self.db.atomic():
            self.db.execute(
                "UPDATE workers SET heartbeat_at = ?, api_limit = ?, imports_limit = ?, progress = ? "
                "WHERE worker_id = ?",
                (now, api_limit, imports_limit, json.dumps(dict(progress or {})), worker_id),
            )
            self.db.execute(
                "UPDATE cases SET lease_expires_at = ? WHERE lease_owner = ?", (now + lease_seconds, worker_id)
            )
        held = {row["id"] for row in self.rows("SELECT id FROM cases WHERE lease_owner = ?", (worker_id,))}
        return sorted(set(running) - held)

    def worker_stopped(self, worker_id: str) -> None:
        """A clean exit: its leases and holdings end now, not a lease later. A case it leaves unfinished keeps its
        name with an expired lease, so another worker takes it over (``claim_case``) even past its own cursor."""
        with self.db.atomic():
            self.db.execute(
                "UPDATE cases SET lease_expires_at = ? WHERE lease_owner = ?", (self.lease_clock() - 1.0, worker_id)
            )
            self.db.execute("DELETE FROM worker_holdings WHERE worker_id = ?", (worker_id,))
            self.db.execute("UPDATE workers SET stopped_at = ? WHERE worker_id = ?", (self.now(), worker_id))

    # -------------------------------------------------------------------------------------------------- leases
    def claim_case(
        self, worker_id: str, *, lease_seconds: float, after_id: int = 0, running: Collection[int] = ()
    ) -> Claim | None:
        """The next case for ``worker_id``, now leased to it; None when there is none. Two kinds, oldest first:

        * a runnable case after ``after_id`` (the pass's cursor: a case this pass already ran is not run again in
          it, as a case that ended still runnable waits for the next pass) that no live worker holds;
        * anywhere, a runnable case whose lease another worker let run out: it died, or stopped with the case
          unfinished. ``running``: cases this worker runs now, never claimed twice."""
        now, now_params = self._lease_now()
        skip = sorted(running)
        not_running = f" AND id NOT IN ({', '.join('?' * len(skip))})" if skip else ""
        if self._shared_store:
            free = (
                f"((id > ? AND (lease_owner IS NULL OR lease_owner = ? OR lease_expires_at < {now})) OR "
                f"(lease_owner IS NOT NULL AND lease_owner <> ? AND lease_expires_at < {now}))"
            )
            free_params: tuple[Any, ...] = (after_id, worker_id, *now_params, worker_id, *now_params)
            lock = " FOR UPDATE SKIP LOCKED"
        else:
            free, free_params, lock = "id > ?", (after_id,), ""
        with self.db.atomic():
            rows = self.rows(
                f"SELECT id, lease_owner FROM cases WHERE state IN ({_RUNNABLE_MARKS}) AND {free}{not_running} "
                f"ORDER BY id LIMIT 1{lock}",
                (*_RUNNABLE, *free_params, *skip),
            )
            if not rows:
                return None
            case_id, before = rows[0]["id"], rows[0]["lease_owner"]
            self.db.execute(
                f"UPDATE cases SET lease_owner = ?, lease_expires_at = {now} + ? WHERE id = ?",
                (worker_id, *now_params, lease_seconds, case_id),
            )
            taken_over = before if before not in (None, worker_id) else None
            if taken_over is not None:
                self.append_event("case_taken_over", case_id=case_id, worker=worker_id, from_worker=taken_over)
        return Claim(case_id=case_id, taken_over_from=taken_over)

    def release_case(self, worker_id: str, case_id: int) -> None:
        self.db.execute(
            "UPDATE cases SET lease_owner = NULL, lease_expires_at = NULL WHERE id = ? AND lease_owner = ?",
            (case_id, worker_id),
        )

    def runnable_leased_elsewhere(self, worker_id: str) -> LeasedElsewhere:
        """Runnable cases held by other workers whose leases have not run out."""
        if not self._shared_store:
            return LeasedElsewhere(cases=0, workers=(), soonest_expiry_seconds=0.0)
        now = self.lease_clock()
        rows = self.rows(
            f"SELECT lease_owner, count(*) AS n, min(lease_expires_at) AS soonest FROM cases "
            f"WHERE state IN ({_RUNNABLE_MARKS}) AND lease_owner IS NOT NULL AND lease_owner <> ? "
            "AND lease_expires_at >= ? GROUP BY lease_owner ORDER BY lease_owner",
            (*_RUNNABLE, worker_id, now),
        )
        return LeasedElsewhere(
            cases=sum(row["n"] for row in rows),
            workers=tuple(row["lease_owner"] for row in rows),
            soonest_expiry_seconds=max(min((row["soonest"] for row in rows), default=now) - now, 0.0),
        )

    def cases_leased_elsewhere(self, worker_id: str) -> set[int]:
        """Cases (any state) whose live lease another worker holds: work this worker must not touch."""
        if not self._shared_store:
            return set()
        rows = self.rows(
            "SELECT id FROM cases WHERE lease_owner IS NOT NULL AND lease_owner <> ? AND lease_expires_at >= ?",
            (worker_id, self.lease_clock()),
        )
        return {row["id"] for row in rows}

    # ------------------------------------------------------------------------------------------- shared limits
    def reserve_units(self, worker_id: str, limit_name: str, *, held: int, ceiling: int, lease_seconds: float) -> bool:
        """Sets this worker's units under ``limit_name`` to ``held`` if they fit beside the live workers' and the
        server's external count (always, when ``held`` is lower than before). Alone — no other worker holding any —
        a worker may go over the ceiling, as one case with more files than the ceiling is admitted alone."""
        with self.db.atomic():
            external, mine, others = self._locked_room(worker_id, limit_name, lease_seconds)
            fits = held <= mine or others + external + held <= ceiling or (others == 0 and mine == 0)
            if fits:
                self.db.execute(
                    "INSERT INTO worker_holdings (worker_id, limit_name, held) VALUES (?, ?, ?) "
                    "ON CONFLICT (worker_id, limit_name) DO UPDATE SET held = excluded.held",
                    (worker_id, limit_name, held),
                )
        return fits

    def set_external_units(self, worker_id: str, limit_name: str, *, server_count: int, lease_seconds: float) -> int:
        """The server counted ``server_count`` (its truth): what no live worker holds is external. Returns it."""
        with self.db.atomic():
            _, mine, others = self._locked_room(worker_id, limit_name, lease_seconds)
            external = max(server_count - mine - others, 0)
            self.db.execute("UPDATE shared_limits SET external = ? WHERE limit_name = ?", (external, limit_name))
        return external

    def shared_units(self, limit_name: str, *, lease_seconds: float) -> dict[str, int]:
        """``{worker_id: held}`` of the live workers, and ``"external"``: what a limit's room is spent on."""
        units = {"external": self.scalar("SELECT external FROM shared_limits WHERE limit_name = ?", (limit_name,)) or 0}
        for row in self.rows(
            "SELECT h.worker_id, h.held FROM worker_holdings h JOIN workers w ON w.worker_id = h.worker_id "
            "WHERE h.limit_name = ? AND w.stopped_at IS NULL AND w.heartbeat_at >= ? ORDER BY h.worker_id",
            (limit_name, self.lease_clock() - lease_seconds),
        ):
            units[row["worker_id"]] = row["held"]
        return units

    def _locked_room(self, worker_id: str, limit_name: str, lease_seconds: float) -> tuple[int, int, int]:
        """(the limit's external count, this worker's units, the other live workers' units) under ``limit_name``.

        The limit's row is locked on PostgreSQL until the transaction ends, *then* the units are read — two
        statements, so the second one's snapshot sees what a worker that held the lock before committed — yet one
        round trip (``rows_together``). The first use of a limit makes the row (a concurrent maker waits on its key,
        then finds it), later ones only read it."""
        lock = "SELECT external FROM shared_limits WHERE limit_name = ?" + (" FOR UPDATE" if self._shared_store else "")
        now, now_params = self._lease_now()
        units = (
            "SELECT coalesce(sum(CASE WHEN h.worker_id = ? THEN h.held END), 0) AS mine, "
            "coalesce(sum(CASE WHEN h.worker_id <> ? AND w.stopped_at IS NULL AND w.heartbeat_at >= "
            f"{now} - ? THEN h.held END), 0) AS others "
            "FROM worker_holdings h LEFT JOIN workers w ON w.worker_id = h.worker_id WHERE h.limit_name = ?"
        )
        units_params = (worker_id, worker_id, *now_params, lease_seconds, limit_name)
        locked, held = self.rows_together([(lock, (limit_name,)), (units, units_params)])
        if not locked:
            self.db.execute(
                "INSERT INTO shared_limits (limit_name, external) VALUES (?, 0) ON CONFLICT DO NOTHING", (limit_name,)
            )
            # The units read above were read without the lock: read again, after it.
            locked, held = self.rows_together([(lock, (limit_name,)), (units, units_params)])
        mine, others = (held[0]["mine"], held[0]["others"]) if held else (0, 0)
        return int(locked[0]["external"]), int(mine), int(others)

    # ------------------------------------------------------------------------------------------------ one view
    def workers_view(self, *, lease_seconds: float = DEFAULT_LEASE_SECONDS) -> list[WorkerRow]:
        """Every worker the job has seen, with its heartbeat age, leases, limits and last counters."""
        now = self.lease_clock()
        leased = {
            row["lease_owner"]: row["n"]
            for row in self.rows(
                "SELECT lease_owner, count(*) AS n FROM cases WHERE lease_owner IS NOT NULL GROUP BY lease_owner"
            )
        }
        holdings: dict[str, dict[str, int]] = {}
        for row in self.rows("SELECT worker_id, limit_name, held FROM worker_holdings"):
            holdings.setdefault(row["worker_id"], {})[row["limit_name"]] = row["held"]
        rows = []
        for row in self.rows("SELECT * FROM workers ORDER BY worker_id"):
            age = max(now - row["heartbeat_at"], 0.0)
            stopped = row["stopped_at"] is not None
            rows.append(
                WorkerRow(
                    worker_id=row["worker_id"],
                    host=row["host"] or "",
                    pid=row["pid"] or 0,
                    started_at=row["started_at"],
                    seconds_since_heartbeat=age,
                    live=not stopped and age <= lease_seconds,
                    stopped=stopped,
                    cases_leased=leased.get(row["worker_id"], 0),
                    api_limit=row["api_limit"],
                    imports_limit=row["imports_limit"],
                    holdings=holdings.get(row["worker_id"], {}),
                    progress=json.loads(row["progress"]) if row["progress"] else {},
                )
            )
        return rows
