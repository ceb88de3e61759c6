"""Errors that reach the user, each carrying the exit code the documented table gives it."""

from __future__ import annotations


class ReleaseError(Exception):
    """Base class: `exit_code` is what the CLI exits with."""

    exit_code = 1

    def __init__(self, message: str, *, problems: list[str] | None = None, result: object = None) -> None:
        super().__init__(message)
        self.message = message
        self.problems = problems or []
        self.result = result  # the run's RunResult, when a run got that far (for --json)

    def __str__(self) -> str:
        if not self.problems:
            return self.message
        return self.message + "\n" + "\n".join(f"  - {p}" for p in self.problems)


class InputError(ReleaseError):
    """Invalid manifests, migrations, arguments or an unknown release: nothing ran."""

    exit_code = 2


class StepFailed(ReleaseError):
    """A step of an apply failed, or a revert could not finish."""

    exit_code = 1


class HostUnreachable(ReleaseError):
    """An SSH host could not be reached or authenticated."""

    exit_code = 1


class LockHeld(ReleaseError):
    """Another apply or revert holds the release lock."""

    exit_code = 3


class Interrupted(ReleaseError):
    """Ctrl-C or SIGTERM: the release was left `interrupted`."""

    exit_code = 130


class JournalError(ReleaseError):
    """The journal is not a journal, or is from a newer schema: nothing ran."""

    exit_code = 2
