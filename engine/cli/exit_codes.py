"""The exit codes of every gcbulk command: the table itself is ``gcbulk/exit_codes.py`` (below every room, so follow
mode and the Python API share it without importing the CLI); commands import the names from here or from there."""

from gcbulk.exit_codes import (  # re-exported for the commands
    EXIT_BROKEN_PIPE,
    EXIT_CONFIG_ERROR,
    EXIT_CRASH,
    EXIT_INTERRUPTED_SIGINT,
    EXIT_INTERRUPTED_SIGTERM,
    EXIT_KILLED,
    EXIT_OK,
    EXIT_SOME_FAILED,
    StopSignal,
    exit_code_for_signal,
)

__all__ = [
    "EXIT_BROKEN_PIPE",
    "EXIT_CONFIG_ERROR",
    "EXIT_CRASH",
    "EXIT_INTERRUPTED_SIGINT",
    "EXIT_INTERRUPTED_SIGTERM",
    "EXIT_KILLED",
    "EXIT_OK",
    "EXIT_SOME_FAILED",
    "StopSignal",
    "exit_code_for_signal",
]
