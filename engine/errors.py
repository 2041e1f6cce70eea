"""Every error Hookline raises on purpose, in one tree.

``str(error)`` is the sentence a user reads: one line, naming the place.

    EngineError
    ├── FlowError              load time: file, line, key path, message
    │   └── TemplateError      a template that does not compile, or fails to render
    ├── MissingEnvError        ${NAME} with no value and no default
    ├── StepError              run time: step id, retryable
    │   └── HttpStepError      adds status, retry_after
    ├── VerificationError      a webhook that fails its signature/token check (401)
    ├── VerificationUnavailable  the flow's secret is not configured (503)
    └── StoreUnavailable       the database cannot be reached (503)
"""

from __future__ import annotations

from typing import Any


class EngineError(Exception):
    """Base of every deliberate Hookline error."""


class FlowError(EngineError):
    """A problem in a flow file, located by file, line and key path."""

    def __init__(self, message: str, *, file: str = "", line: int | None = None, path: str = "") -> None:
        super().__init__(message)
        self.message = message
        self.file = file
        self.line = line
        self.path = path

    def __str__(self) -> str:
        where = self.file
        if self.line is not None:
            where = f"{where}:{self.line}" if where else f"line {self.line}"
        parts = [p for p in (where, self.path) if p]
        return ": ".join([*parts, self.message])


class TemplateError(FlowError):
    """A Jinja2 or JSONPath expression that does not compile or fails to render."""


class FlowInvalid(EngineError):
    """A flow file with one or more problems; carries all of them."""

    def __init__(self, file: str, errors: list[FlowError]) -> None:
        super().__init__(f"{file}: {len(errors)} problem(s): " + "; ".join(str(e) for e in errors))
        self.file = file
        self.errors = errors


class MissingEnvError(EngineError):
    """A ``${NAME}`` reference whose variable is unset and has no default."""

    def __init__(self, name: str, where: str = "") -> None:
        self.name = name
        self.where = where
        super().__init__(f"environment variable {name} is not set" + (f" ({where})" if where else ""))


class StepError(EngineError):
    """A step that failed at run time. ``retryable`` decides whether another attempt is scheduled."""

    def __init__(self, message: str, *, step_id: str = "", retryable: bool = False) -> None:
        super().__init__(message)
        self.message = message
        self.step_id = step_id
        self.retryable = retryable
        self.request: dict[str, Any] | None = None  # what was sent, when anything was
        self.response: dict[str, Any] | None = None  # what came back, when anything did

    @property
    def error_type(self) -> str:
        return type(self).__name__


class HttpStepError(StepError):
    """An outbound call that failed: connection error, timeout or an unsuccessful status."""

    def __init__(
        self,
        message: str,
        *,
        step_id: str = "",
        retryable: bool = False,
        status: int | None = None,
        retry_after: float | None = None,
        timeout: bool = False,
    ) -> None:
        super().__init__(message, step_id=step_id, retryable=retryable)
        self.status = status
        self.retry_after = retry_after
        self.timeout = timeout


class VerificationError(EngineError):
    """A webhook whose signature or token does not verify. Answered with 401."""


class VerificationUnavailable(EngineError):
    """The flow's verification secret is not configured here. Answered with 503 so the provider retries."""


class StoreUnavailable(EngineError):
    """The database or queue cannot be reached. Answered with 503 so the provider retries."""
