"""Every error Hookline raises on purpose, in one tree.

``str(error)`` is the sentence a user reads: one line, naming the place. The core knows no HTTP:
web/errors.py maps each class to its status once (the number after a class here is that mapping).

    EngineError
    ├── FlowError                load time: file, line, key path, message
    │   └── TemplateError        a template that does not compile, or fails to render
    ├── FlowInvalid              a flow file with problems; carries every FlowError
    ├── MissingEnvError          ${NAME} with no value and no default
    ├── SettingsError            a HOOKLINE_* setting that does not parse (start-up)
    ├── PluginError              an installed plugin (entry point) that fails to load
    ├── StepError                run time: step id, retryable
    │   └── HttpStepError        adds status, retry_after
    ├── BadBody                  a body that declares JSON or a form and is not (400)
    ├── VerificationError        a webhook that fails its signature/token check (401)
    ├── VerificationUnavailable  the flow's secret is not configured (503)
    ├── RunNotFound              no run with that id (404)
    ├── FlowNotLoaded            the flow has errors or was removed (409)
    ├── NotRetryable             retry-from-step asked of a run that did not fail (409)
    │   └── StepChanged          a call it would keep changed, moved or was renamed in the current version (409)
    ├── LeaseLost                another worker took the run over; stop writing
    └── StoreError               the database failed an operation (500)
        └── StoreUnavailable     the database cannot be reached (503)
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

    def __init__(self, message: str, *, retryable: bool = False) -> None:
        super().__init__(message)
        self.message = message
        self.retryable = retryable
        self.request: dict[str, Any] | None = None  # what was sent, when anything was
        self.response: dict[str, Any] | None = None  # what came back, when anything did


class HttpStepError(StepError):
    """An outbound call that failed: connection error, timeout or an unsuccessful status."""

    def __init__(
        self,
        message: str,
        *,
        retryable: bool = False,
        status: int | None = None,
        retry_after: float | None = None,
        timeout: bool = False,
    ) -> None:
        super().__init__(message, retryable=retryable)
        self.status = status
        self.retry_after = retry_after
        self.timeout = timeout


class SettingsError(EngineError, ValueError):
    """A ``HOOKLINE_*`` setting that does not parse; names the variable. Also a ValueError, as parsers raise."""


class PluginError(EngineError):
    """An installed package's ``hookline.steps``/``hookline.presets`` entry point that does not load."""


class BadBody(EngineError, ValueError):
    """A body that declares itself JSON (or form) and is not. Answered with 400.

    Also a ValueError: preset form rules raise ValueError, and callers of parse_body used to catch it.
    """


class VerificationError(EngineError):
    """A webhook whose signature or token does not verify. Answered with 401."""


class VerificationUnavailable(EngineError):
    """The flow's verification secret is not configured here. Answered with 503 so the provider retries."""


class RunNotFound(EngineError):
    """No run with this id (never stored, pruned, or beyond the id range). Answered with 404."""

    def __init__(self, run_id: int) -> None:
        super().__init__(f"no run with id {run_id}")
        self.run_id = run_id


class FlowNotLoaded(EngineError):
    """An action that needs the flow's current version while it has errors or was removed. Answered with 409.

    ``remedy`` is what the operator can do instead (replay on the original version, fix the file).
    """

    def __init__(self, flow_id: str, remedy: str = "") -> None:
        super().__init__(f"flow {flow_id!r} is not loaded (it has errors or was removed)"
                         + (f"; {remedy}" if remedy else ""))
        self.flow_id = flow_id


class NotRetryable(EngineError):
    """Retry-from-step of a run that did not fail (only a failed run has a step to start from). Answered with 409."""

    def __init__(self, run_id: int, status: str) -> None:
        super().__init__(f"run {run_id} is {status}; only failed runs can be retried from the failed step")
        self.run_id = run_id
        self.status = status


class StepChanged(NotRetryable):
    """A retry on the current version would have to send a call again: a succeeded step with side effects
    changed, moved or was renamed there (engine.versions). Answered with 409; the original version or a replay still work."""

    def __init__(self, run_id: int, why: str) -> None:
        EngineError.__init__(self, f"run {run_id} cannot be retried on the current flow version: {why}; "
                                   "retry on its original version, or replay it to run every step again")
        self.run_id = run_id
        self.status = "failed"
        self.why = why


class LeaseLost(EngineError):
    """Another worker took this run over (our lease expired); stop without writing more."""


class StoreError(EngineError):
    """The database failed an operation (every database error leaves the store as one of these)."""


class StoreUnavailable(StoreError):
    """The database or queue cannot be reached. Answered with 503 so the provider retries."""
