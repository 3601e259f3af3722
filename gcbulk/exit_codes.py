"""What a gcbulk process's exit code means: one table for the command line, follow mode and the Python API.

It lives at the package root, below every room, so the service (follow mode) and the API's exceptions use the same
numbers as the CLI without importing it. ``README.md`` ("Exit codes") shows the same table; every line of it is
driven by a test that runs a real ``gcbulk`` process.
"""

from __future__ import annotations

import signal

# Every planned case is done on the server (or, for follow mode, it was stopped by SIGTERM/SIGINT as asked).
EXIT_OK = 0
# Some cases failed or are blocked by their findings: listed, with what to do. The job is not complete.
EXIT_SOME_FAILED = 1
# The configuration or the environment stops the command: job file, token, unknown reader study, no permission,
# unreachable server before anything was sent, a read-only job folder, a full disk, a damaged ledger.
EXIT_CONFIG_ERROR = 2
# An unexpected exception — a bug, not the user's input nor the server's answer. 70 is EX_SOFTWARE of sysexits.h.
EXIT_CRASH = 70
# A one-shot command stopped by a signal with work left: the shell's convention for death by that signal
# (128 + signal number), so `gcbulk run job.toml && next-step` does not carry on. The ledger resumes it.
EXIT_INTERRUPTED_SIGINT = 128 + signal.SIGINT  # 130
EXIT_INTERRUPTED_SIGTERM = 128 + signal.SIGTERM  # 143
# Output piped into a reader that went away (`gcbulk report | head -1`): the shell's code for SIGPIPE, quietly.
EXIT_BROKEN_PIPE = 128 + signal.SIGPIPE  # 141

# Kept for callers written before the signal codes were split: a stop by SIGINT.
EXIT_KILLED = EXIT_INTERRUPTED_SIGINT


def exit_code_for_signal(signum: int | str) -> int:
    """130 for SIGINT, 143 for SIGTERM (``signum`` as a number or a name such as ``"SIGTERM"``)."""
    number = signal.Signals[signum] if isinstance(signum, str) else signal.Signals(signum)
    return EXIT_INTERRUPTED_SIGTERM if number == signal.SIGTERM else EXIT_INTERRUPTED_SIGINT


class StopSignal(KeyboardInterrupt):
    """SIGTERM (or SIGINT) that arrived before a command's own signal watcher was listening — during start-up, while
    modules load or the ledger opens. A ``KeyboardInterrupt`` so that anyio and asyncio unwind it exactly as they
    unwind Ctrl-C; ``signum`` gives the exit code."""

    def __init__(self, signum: int) -> None:
        super().__init__(signal.Signals(signum).name)
        self.signum = signum

    @property
    def exit_code(self) -> int:
        return exit_code_for_signal(self.signum)


# The stop signal that reached ``record_stop_signal`` (None while none has). A signal is process-wide, so its record
# is too: the handler cannot hand it to anyone else.
_received_stop_signal: int | None = None


def record_stop_signal(signum: int, frame: object = None) -> None:
    """The start-up handler of SIGTERM and SIGINT: remember the signal, then unwind as Ctrl-C does.

    Remembering matters because an exception raised by a signal handler surfaces wherever the interpreter happens to
    be, and some of CPython's C code replaces it there: a SIGTERM landing in ``ssl``'s ``from _ssl import RAND_egd``
    comes out as ``TypeError: expected a message argument``. Whatever escapes after a stop signal arrived is that
    stop, not a bug."""
    global _received_stop_signal  # noqa: PLW0603 - see above: a signal handler's only way to leave a record
    _received_stop_signal = signum
    raise StopSignal(signum)


def received_stop_signal() -> int | None:
    """The stop signal ``record_stop_signal`` saw in this process, or None."""
    return _received_stop_signal
