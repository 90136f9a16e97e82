"""Errors raised while starting or stopping the development components.

    AgentkeysError
    └── DevstackError              a real component could not be provided
        ├── BinaryNotFound         the program is not installed where we expect it
        ├── NoFreePort             no free 127.0.0.1 port (set) could be found
        └── ComponentStartFailed   the program exited or did not become ready in time

A ``reason`` names the component and, for start failures, carries the tail of
the component's log file. Launchers never put secrets on a command line, so
the log tail holds none of ours.
"""

from __future__ import annotations

from agentkeys.errors import AgentkeysError


class DevstackError(AgentkeysError):
    """Base for every failure of the development-stack launchers."""

    error = "devstack_error"
    status = 500


class BinaryNotFound(DevstackError):
    """A component's program is missing; the reason says what installs it."""

    error = "devstack_binary_not_found"


class NoFreePort(DevstackError):
    """No usable free port (or port set) on 127.0.0.1 was found."""

    error = "devstack_no_free_port"


class ComponentStartFailed(DevstackError):
    """The component exited early or was not ready before its startup timeout."""

    error = "devstack_start_failed"
