"""Errors a user can cause. Each message says what to do; the CLI prints it in one line."""

from __future__ import annotations


class SampanError(Exception):
    """Base class for every error a user can cause and fix."""

    exit_code = 1


class ConfigError(SampanError):
    """A setting is missing, unknown or out of range."""

    exit_code = 2


class NotFoundError(SampanError):
    """A named thing (package, task, architecture, preset, dataset) does not exist."""

    exit_code = 3


class DataError(SampanError):
    """Input data is missing, empty, malformed or too small to use."""

    exit_code = 4


class PackageError(SampanError):
    """A model package is corrupt, incomplete or incompatible."""

    exit_code = 5


class ResumeError(SampanError):
    """A checkpoint cannot be resumed with the current settings."""

    exit_code = 6


class ExportError(SampanError):
    """A model cannot be exported, or its export does not match the original."""

    exit_code = 7


class CompressionError(SampanError):
    """Compression failed or lost more accuracy than allowed."""

    exit_code = 8


class Unauthorized(SampanError):
    """A call without a valid credential: no key, an unknown, revoked or expired one."""

    exit_code = 9


class Forbidden(SampanError):
    """A valid credential that does not grant this call (outside its scopes)."""

    exit_code = 10


class RateLimited(SampanError):
    """A rate limit or quota is used up; retry_after says when to try again (seconds)."""

    exit_code = 11

    def __init__(
        self, message: str, retry_after: float = 1.0, headers: dict[str, str] | None = None
    ) -> None:
        super().__init__(message)
        self.retry_after = retry_after
        self.headers = headers or {}
