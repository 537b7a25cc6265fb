"""The one error -> exit-code table of every `agentmesh` command (README "Exit codes").

Its own module so `agentmesh serve` (every container's entrypoint) uses it without loading the
CLI's terminal libraries; cli/common.py re-exports it for the other commands.
"""

from __future__ import annotations

EXIT_OK = 0  # done
EXIT_FAILED = 1  # refused or failed: NOT_FOUND, FAILED_PRECONDITION, PERMISSION_DENIED, a failed check, ...
EXIT_USAGE = 2  # the command is wrong: arguments, configuration, INVALID_ARGUMENT
EXIT_UNREACHABLE = (
    3  # the target (registry, agent, Redis) could not be reached: UNAVAILABLE, DEADLINE_EXCEEDED
)
EXIT_INTERRUPTED = 130  # Ctrl-C while following a task (the shell's 128 + SIGINT)

EXIT_CODES_HELP = (
    "Exit codes: 0 done; 1 refused or failed (NOT_FOUND, FAILED_PRECONDITION, PERMISSION_DENIED, "
    "a failed check); 2 bad usage (arguments, configuration, INVALID_ARGUMENT); "
    "3 unreachable (UNAVAILABLE, DEADLINE_EXCEEDED)."
)
