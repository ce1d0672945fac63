"""Domain exceptions; each maps to one of the CLI's exit codes."""

from __future__ import annotations


class TestbedError(Exception):
    """Base of every error the testbed reports to a user in one line."""

    exit_code = 1


class UserError(TestbedError):
    """Bad input or a missing prerequisite: exit 2, nothing created."""

    exit_code = 2


class ProviderError(TestbedError):
    """The container engine refused or failed an operation."""


class StepError(TestbedError):
    """A lifecycle step failed; the message names the step and the cause."""


class CheckFailed(TestbedError):
    """A connectivity case or a run failed: exit 1."""
