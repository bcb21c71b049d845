"""The error tree: every failure regops raises on purpose is a RegopsError.

::

    RegopsError
    ├── ConfigError                  settings missing, contradictory or unreadable
    ├── ValidationError              bad input, names the field (.field)
    │   └── PolicyError              an invalid cleanup policy attribute
    ├── KeyFileError                 a signing key / certificate that is missing or wrong
    ├── TransportError               no HTTP answer (connection, timeout) after retries
    │   └── HostUnreachable          a host failed several requests in a row: not asked again
    ├── HTTPError                    an HTTP answer that is an error (.method .url .status)
    │   ├── GitLabError              GitLab REST API (.message from GitLab's body)
    │   │   ├── GitLabUnauthorized   401
    │   │   ├── GitLabForbidden      403
    │   │   ├── GitLabNotFound       404
    │   │   └── GitLabRateLimited    429 still after waiting
    │   └── RegistryError            registry HTTP API (.codes from errors[].code)
    │       ├── RegistryUnauthorized 401 (token refused: bad key, issuer, audience, expiry)
    │       ├── RegistryDenied       403 / insufficient_scope
    │       ├── RegistryNotFound     404 (MANIFEST_UNKNOWN, BLOB_UNKNOWN, NAME_UNKNOWN)
    │       └── RegistryUnsupported  405 (delete disabled, read-only mode)
    ├── TokenError                   a registry token could not be minted or obtained
    ├── ManifestError                a manifest that is malformed or of an unknown type
    ├── StorageError                 registry storage not as the registry writes it (.path)
    ├── StateError                   regops' own files (state, locks, journal, audit) not writable
    ├── UnsafeDeleteError            a delete that would take down something not asked for
    │   └── ProtectedTagError        a delete of tags a GitLab protection rule keeps (.tags)
    ├── DeleteRolledBack             a delete batch failed and was undone: every tag kept its image
    ├── UnfinishedDeleteError        tags left on a regops placeholder: `regops cleanup recover`
    ├── RegistryStartError           the docker-registry process would not start
    ├── LockHeldError                another run holds the recipe's lock file (.pid)
    ├── UsageError                   a command line asking for something invalid (exit 2)
    ├── CleanupPermissionError       the acting user is below Developer on the project
    ├── PolicyNotApplied             GitLab answered a policy update but kept old values
    ├── UpdateAllError               update_all failed for some policies (.updated .failed)
    ├── SettingsNotApplied           GitLab answered a settings update but kept old values
    ├── DoesNotExist                 a model lookup found nothing (Project.DoesNotExist …)
    └── HistoryError                 the usage history database cannot be read or written (.path)

Beside the tree, like KeyboardInterrupt (a BaseException, so no ``except
Exception`` swallows it and an interrupted delete batch is settled on its way
out): ``DeadlineExceeded``, a run that passed its ``--deadline`` (exit 124).

Messages never contain secrets: URLs are passed through
:func:`regops.secrets.redact_url` and text through :func:`regops.secrets.redact`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from regops.secrets import redact, redact_url


class RegopsError(Exception):
    """Base of every error regops raises on purpose."""

    def __init__(self, message: str) -> None:
        super().__init__(redact(message))

    @property
    def message(self) -> str:
        return str(self)


class ConfigError(RegopsError):
    """Settings missing, contradictory or unreadable."""


class ValidationError(RegopsError, ValueError):
    """Bad input; ``field`` names what was wrong."""

    def __init__(self, field: str, message: str) -> None:
        self.field = field
        self.reason = redact(message)  # the message without the "field: " prefix
        super().__init__(f"{field}: {message}")


class PolicyError(ValidationError):
    """A cleanup policy attribute GitLab would reject.

    ``errors``: every problem found (field -> messages) when the whole set was
    checked (:func:`regops.policy.validate_policy_attributes`), else None.
    """

    errors: dict[str, list[str]] | None = None


class KeyFileError(RegopsError):
    """A signing key or certificate that is missing, unreadable or does not fit."""


class TransportError(RegopsError):
    """No usable HTTP answer (connection refused, timeout) after the retries."""

    def __init__(self, method: str, url: str, reason: str) -> None:
        self.method = method
        self.url = redact_url(url)
        super().__init__(f"{method} {self.url}: {reason}")


class HostUnreachable(TransportError):
    """A host failed ``failures`` requests in a row (refused or no answer): a systemic fault.

    Raised at once, without a request, while the host's breaker is open.
    """

    def __init__(self, method: str, url: str, origin: str, failures: int, reason: str) -> None:
        self.origin = redact_url(origin)
        super().__init__(
            method,
            url,
            f"{self.origin} did not answer {failures} requests in a row ({reason}); "
            "not asking it again for now",
        )


class HTTPError(RegopsError):
    """An HTTP error answer, with the request that got it."""

    def __init__(self, method: str, url: str, status: int, detail: str = "") -> None:
        self.method = method
        self.url = redact_url(url)
        self.status = status
        self.detail = redact(detail)
        text = f"{method} {self.url} -> {status}"
        super().__init__(f"{text}: {self.detail}" if self.detail else text)


class GitLabError(HTTPError):
    """GitLab REST API error; ``detail`` is GitLab's ``message`` or ``error``."""


class GitLabUnauthorized(GitLabError):
    """401: the token is missing, wrong, expired or revoked."""


class GitLabForbidden(GitLabError):
    """403: the user lacks the permission."""


class GitLabNotFound(GitLabError):
    """404: no such resource, or not visible to this user."""


class GitLabRateLimited(GitLabError):
    """429, still after waiting for Retry-After."""


class RegistryError(HTTPError):
    """Registry HTTP API error; ``codes`` holds the body's ``errors[].code``."""

    def __init__(
        self, method: str, url: str, status: int, detail: str = "", codes: Sequence[str] = ()
    ) -> None:
        self.codes = tuple(codes)
        prefix = ",".join(self.codes)
        super().__init__(method, url, status, f"{prefix} {detail}".strip() if prefix else detail)


class RegistryUnauthorized(RegistryError):
    """401: the registry refused the token (key, issuer, audience or expiry)."""


class RegistryDenied(RegistryError):
    """403, or a token without the scope needed."""


class RegistryNotFound(RegistryError):
    """404: unknown manifest, blob or repository."""


class RegistryUnsupported(RegistryError):
    """405: the operation is disabled (delete off, read-only maintenance mode)."""


class TokenError(RegopsError):
    """A registry token could not be minted or obtained."""


class ManifestError(RegopsError):
    """A manifest that is malformed or of a media type regops does not know."""


class StorageError(RegopsError):
    """A registry storage file that is not what the registry writes (never its content)."""

    def __init__(self, path: str | Path, problem: str) -> None:
        self.path = str(path)
        super().__init__(f"{path}: {problem}")


class StateError(RegopsError):
    """regops cannot create or write its own files: the path and the OS's reason, one line."""

    def __init__(self, action: str, path: str | Path, exc: OSError) -> None:
        self.path = str(path)
        self.errno = exc.errno
        reason = exc.strerror or type(exc).__name__
        super().__init__(f"cannot {action} {path}: {reason}")


class UnsafeDeleteError(RegopsError):
    """A delete that would remove something that was not asked for."""


class DeleteRolledBack(RegopsError):
    """A delete batch failed and was rolled back: every tag of it kept its image."""


class UnfinishedDeleteError(RegopsError):
    """Tags sit on a regops placeholder (an interrupted delete): recover before planning."""


class DoesNotExist(RegopsError, LookupError):
    """A model lookup found nothing; each model has its own subclass."""


class RegistryStartError(RegopsError):
    """The registry binary is missing, or exited / never answered while starting."""


class LockHeldError(RegopsError):
    """Another run holds the lock; ``pid`` names it when known."""

    def __init__(self, path: Path, holder: dict) -> None:
        self.path = path
        self.pid = holder.get("pid")
        started = holder.get("started")
        who = f"pid {self.pid}" if self.pid else "an unknown process"
        when = f", started {started}" if started else ""
        super().__init__(f"another run holds the lock {path} ({who}{when}); try again later")


class DeadlineExceeded(BaseException):
    """A run passed its deadline and stops itself, the way Ctrl-C would stop it."""

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds
        super().__init__(f"stopped at the deadline of {seconds:g} s (--deadline)")


class UsageError(RegopsError):
    """The command line asks for something invalid (exit 2)."""


class CleanupPermissionError(RegopsError):
    """The user a run acts for may not delete this project's container images."""


class PolicyNotApplied(RegopsError):
    """GitLab answered the update with success but kept other values (``.fields``)."""

    def __init__(self, project_id: Any, fields: Mapping[str, tuple[Any, Any]]) -> None:
        self.project_id = project_id
        self.fields = dict(fields)
        detail = "; ".join(
            f"{f}: sent {sent!r}, GitLab has {got!r}" for f, (sent, got) in fields.items()
        )
        super().__init__(
            f"project {project_id}: GitLab did not apply {', '.join(fields)} ({detail})"
        )


class UpdateAllError(RegopsError):
    """``update_all`` failed for some policies; ``.updated`` and ``.failed`` say which."""

    def __init__(self, updated: list[Any], failed: dict[Any, Exception]) -> None:
        self.updated = updated
        self.failed = failed
        lines = "; ".join(f"project {pid}: {exc}" for pid, exc in failed.items())
        super().__init__(f"update_all: {len(updated)} updated, {len(failed)} failed: {lines}")


class SettingsNotApplied(RegopsError):
    """GitLab answered a settings update with success but kept other values (``.fields``)."""

    def __init__(self, what: str, fields: Mapping[str, tuple[Any, Any]]) -> None:
        self.what = what
        self.fields = dict(fields)
        detail = "; ".join(
            f"{f}: sent {sent!r}, GitLab has {got!r}" for f, (sent, got) in fields.items()
        )
        super().__init__(f"{what}: GitLab did not apply {', '.join(fields)} ({detail})")


class HistoryError(RegopsError):
    """The usage history database cannot be opened, read or written (``.path``), or was
    written by a newer regops."""

    def __init__(self, path: str | Path, reason: str) -> None:
        self.path = str(path)
        super().__init__(f"usage history {path}: {reason}")


class ProtectedTagError(UnsafeDeleteError):
    """A delete asked for tags a GitLab tag protection (or immutability) rule keeps.

    ``.tags`` maps each refused tag to why (``protected by GitLab tag rule 'v.*'``).
    Raised before anything changes.
    """

    def __init__(self, repository: str, tags: Mapping[str, str]) -> None:
        self.repository = repository
        self.tags = dict(tags)
        detail = "; ".join(f"{tag}: {why}" for tag, why in tags.items())
        super().__init__(
            f"{repository}: refusing to delete tags GitLab protects ({detail}); nothing changed"
        )
