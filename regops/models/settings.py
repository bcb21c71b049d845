"""ApplicationSettings: the instance's registry settings, checked before they are sent.

>>> s = ApplicationSettings.current()                                 # doctest: +SKIP
>>> s.container_registry_token_expire_delay                           # doctest: +SKIP
5
>>> s.update(container_registry_token_expire_delay=30)                # doctest: +SKIP

Values are validated with GitLab's rules and messages
(:mod:`regops.gitlab.appsettings`, from ``ApplicationSetting``'s validations)
before any request; after ``PUT /application/settings`` the settings are read
again and each sent value compared, like ``ExpirationPolicy.update``: a value
GitLab silently kept raises :class:`SettingsNotApplied`. Admins only (GitLab
answers 403 otherwise).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

from tabulate import tabulate

from regops.connection import Connection
from regops.errors import SettingsNotApplied, ValidationError
from regops.gitlab.appsettings import REGISTRY_SETTINGS, collect_settings_errors, validate_settings
from regops.models.base import Model, resolve_connection

log = logging.getLogger("regops.models")

WHAT = "application settings"


class ApplicationSettings(Model):
    """The registry-related application settings (``GET /application/settings``)."""

    fields = tuple(REGISTRY_SETTINGS)
    table_columns = ("setting", "value")
    repr_fields = ()

    @classmethod
    def current(cls, *, connection: Connection | None = None) -> ApplicationSettings:
        """The settings as GitLab has them now (one request; admin token)."""
        conn = resolve_connection(connection)
        return cls(conn.gitlab.application_settings(), connection=conn)

    def _key(self) -> Any:
        return WHAT

    def _fetch(self) -> Mapping[str, Any]:
        return self.connection.gitlab.application_settings()

    @property
    def registry(self) -> dict[str, Any]:
        """The registry settings and their values (the rest of GitLab's answer is kept too)."""
        return {name: self._data.get(name) for name in REGISTRY_SETTINGS}

    def validate(self, **attrs: Any) -> dict[str, Any]:
        """The normalised values ``update(**attrs)`` would send; SettingsError if invalid."""
        if not attrs:
            raise ValidationError("attributes", "nothing to update")
        return validate_settings(attrs)

    def update(self, **attrs: Any) -> ApplicationSettings:
        """Validate, ``PUT /application/settings``, read back, check every value took."""
        values = self.validate(**attrs)
        gitlab = self.connection.gitlab
        gitlab.update_application_settings(**values)
        fresh = gitlab.application_settings()
        self.__dict__["_data"] = self._prepare(fresh)
        stored, _errors = collect_settings_errors(
            {k: fresh[k] for k in values if fresh.get(k) is not None}
        )
        ignored = {k: (v, fresh.get(k)) for k, v in values.items() if stored.get(k) != v}
        if ignored:
            raise SettingsNotApplied(WHAT, ignored)
        log.info("application settings updated (%s)", ", ".join(values))
        return self

    def __repr__(self) -> str:
        rows = [(name, value) for name, value in self.registry.items()]
        return tabulate(rows, headers=("setting", "value"), tablefmt="simple")

    def _repr_pretty_(self, printer: Any, cycle: bool) -> None:
        printer.text("ApplicationSettings(...)" if cycle else repr(self))
