"""Errors that reach users.

Every error caused by bad input (a file, a field, an argument) is an
``OnboardError``: it names the file, the field and the fix, and the CLI turns
it into exit code 2. Runtime failures (a crashed simulator, a lost process)
stay ordinary exceptions and exit 1.
"""
from __future__ import annotations


class OnboardError(Exception):
    """Bad input. ``str()`` reads: ``FILE: FIELD: problem. Fix: ...``."""

    exit_code = 2

    def __init__(self, problem: str, *, file: str | None = None, field: str | None = None,
                 fix: str | None = None):
        self.problem = problem
        self.file = None if file is None else str(file)
        self.field = field
        self.fix = fix
        super().__init__(self.__str__())

    def __str__(self) -> str:
        parts = []
        if self.file:
            parts.append(self.file)
        if self.field:
            parts.append(self.field)
        head = ": ".join(parts)
        text = f"{head}: {self.problem}" if head else self.problem
        if self.fix:
            text += f". Fix: {self.fix}"
        return text


class ContractError(OnboardError):
    """An artifact's contract is missing, malformed, or does not match the robot."""


class ConfigError(OnboardError):
    """A YAML config is malformed or has a bad field."""
