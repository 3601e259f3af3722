"""The exit codes of every gcbulk command, in one place (the package and the last-line-of-defence guard share them)."""

EXIT_OK = 0
EXIT_SOME_FAILED = 1
EXIT_CONFIG_ERROR = 2
# An unexpected exception — a bug, not the user's input nor the server's answer: distinct from "cases failed" (1), so
# a supervisor or a script can tell them apart. 70 is EX_SOFTWARE of sysexits.h.
EXIT_CRASH = 70
# A second stop signal: the shell's convention for death by SIGINT (128 + 2). The run is still resumable.
EXIT_KILLED = 130
# Output piped into a reader that went away (`gcbulk status | head`): the shell's code for SIGPIPE (128 + 13).
EXIT_BROKEN_PIPE = 141
