"""The in-node agent: pods, a CNI runtime and probes, run inside node containers."""

from __future__ import annotations


class AgentError(Exception):
    """An error the agent reports as one `{"error": ...}` line; exit code 1."""

    exit_code = 1


class UsageError(AgentError):
    """Bad arguments or input; exit code 2."""

    exit_code = 2
