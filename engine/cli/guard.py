"""What every command's output passes, and what ends a command that met something it did not handle.

* stdout and stderr are wrapped in :class:`RedactingStream`: whatever a command prints (a status table, a report, a
  summary, an error) passes the one redaction path (``gcbulk/redaction.py``), so the API token never reaches the
  terminal or a pipe, whatever the server sent back.
* Output piped into ``head`` (the reader went away): a quiet exit, no BrokenPipeError traceback.
* Any other exception — an anyio ExceptionGroup, a server answer of a shape gcbulk did not expect — becomes one line
  naming the command and the error, and an exit code: 2 for what the user must fix, 1 otherwise. The traceback goes
  to the log (at DEBUG), redacted, never to the terminal by default.
"""

from __future__ import annotations

import errno
import logging
import os
import sys
from collections.abc import Callable
from typing import Any, TextIO

from gcbulk.exit_codes import (
    EXIT_BROKEN_PIPE,
    EXIT_CONFIG_ERROR,
    EXIT_CRASH,
    EXIT_SOME_FAILED,
    StopSignal,
    received_stop_signal,
)
from gcbulk.redaction import redact_exception, redact_text, register_secret
from gcbulk.safe_files import UnsafeFileError

log = logging.getLogger(__name__)


class RedactingStream:
    """A text stream that scrubs every write; everything else (``isatty``, ``encoding``, ``fileno``) is the
    wrapped stream's, so rich and the log handlers still see a terminal as a terminal."""

    def __init__(self, wrapped: TextIO) -> None:
        self._wrapped = wrapped

    def write(self, text: str) -> int:
        self._wrapped.write(redact_text(text))
        return len(text)

    def writelines(self, lines: Any) -> None:
        for line in lines:
            self.write(line)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._wrapped, name)


def install_redacting_streams() -> None:
    # Commands that never read the token (status, report) still know it when it is in the environment, so a ledger
    # written by an older gcbulk, before reasons were scrubbed, does not print it either.
    register_secret(os.environ.get("GRAND_CHALLENGE_AUTHORIZATION"))
    if not isinstance(sys.stdout, RedactingStream):
        sys.stdout = RedactingStream(sys.stdout)
    if not isinstance(sys.stderr, RedactingStream):
        sys.stderr = RedactingStream(sys.stderr)


def _leaves(exc: BaseException) -> list[BaseException]:
    if isinstance(exc, BaseExceptionGroup):
        return [leaf for inner in exc.exceptions for leaf in _leaves(inner)]
    return [exc]


def _silence_stdout() -> None:
    # Python's documented recipe (library/signal.html, "Note on SIGPIPE"): point stdout at devnull so the
    # interpreter's final flush does not raise a second BrokenPipeError on the way out.
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.__stdout__.fileno())  # type: ignore[union-attr]
    except (OSError, AttributeError, ValueError):
        pass


# An OSError with one of these numbers is the machine's state, not a bug: what it means, and what to do about it.
_ENVIRONMENT_ERRNOS = {
    errno.EROFS: ("the file system is read-only", "make the job's folder writable"),
    errno.EACCES: ("permission denied", "make the job's folder writable for this user"),
    errno.EPERM: ("operation not permitted", "make the job's folder writable for this user"),
    errno.ENOSPC: ("the disk is full", "free some space"),
    errno.EDQUOT: ("the disk quota is exceeded", "free some space"),
    errno.ELOOP: ("it is a symbolic link, which gcbulk does not follow for its own files", "remove the link"),
}


def _environment_problem(cause: BaseException) -> str | None:
    """The one-line diagnosis of a file gcbulk could not write for a reason of the machine (a read-only or full
    folder, a planted symlink), or None for anything else."""
    if isinstance(cause, UnsafeFileError):  # its message names the file and what to do
        return redact_exception(cause)
    if not isinstance(cause, OSError) or cause.errno not in _ENVIRONMENT_ERRNOS:
        return None
    why, remedy = _ENVIRONMENT_ERRNOS[cause.errno]
    where = f" {redact_text(repr(str(cause.filename)))}" if cause.filename is not None else ""
    return (
        f"cannot use{where}: {why}; {remedy}, or put the ledger and the event log elsewhere (--ledger / "
        "GCBULK_LEDGER, --events / GCBULK_EVENTS). Nothing was lost: every recorded step is in the ledger."
    )


def run_guarded(command: str, handler: Callable[[], int]) -> int:
    """``handler()``'s exit code, or the exit code of what escaped it (see the module docstring)."""
    from gcbulk.engine.gc.errors import (
        AuthenticationFailed,
        ConfigurationError,
        GcbulkError,
        diagnosis,
        first_error,
        server_unreachable,
    )

    try:
        return handler()
    except KeyboardInterrupt:
        raise
    except BaseException as exc:  # noqa: BLE001 - the last line of defence: one message, one exit code
        if isinstance(exc, SystemExit):
            raise
        stop = received_stop_signal()
        if stop is not None:  # whatever a stop signal turned into where it landed (record_stop_signal): that stop
            raise StopSignal(stop) from exc
        leaves = _leaves(exc)
        if any(isinstance(leaf, BrokenPipeError) for leaf in leaves):
            _silence_stdout()
            return EXIT_BROKEN_PIPE
        cause = first_error(exc)
        log.debug("gcbulk %s ended on an unhandled error", command, exc_info=exc)
        environment = _environment_problem(cause)
        if environment is not None:
            print(f"gcbulk {command}: {environment}", file=sys.stderr)
            return EXIT_CONFIG_ERROR
        if isinstance(cause, (ConfigurationError, AuthenticationFailed)) or server_unreachable(cause):
            print(f"gcbulk {command}: {redact_text(diagnosis(cause))}", file=sys.stderr)
            return EXIT_CONFIG_ERROR
        if isinstance(cause, GcbulkError):  # the server's answer, not gcbulk, is at fault: a rerun may succeed
            print(
                f"gcbulk {command}: stopped on an unexpected error: {type(cause).__name__}: "
                f"{redact_exception(cause)}. The server may have answered something gcbulk does not understand; "
                "run it again to resume, and report this if it repeats",
                file=sys.stderr,
            )
            return EXIT_SOME_FAILED
        # Anything else is a bug (or a server answer no check caught): one line and an exit code of its own,
        # distinct from "cases failed" (1); the traceback goes to the debug log above, redacted like every record.
        print(
            f"gcbulk {command}: internal error ({type(cause).__name__}: {redact_exception(cause)}); this is a bug "
            "— every recorded step is in the ledger and a rerun resumes. Run with --log-level DEBUG for the "
            "traceback, and please report it.",
            file=sys.stderr,
        )
        return EXIT_CRASH
