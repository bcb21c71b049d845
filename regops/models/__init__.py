"""The console object model: Project, ContainerRepository, Tag, ExpirationPolicy, User.

>>> import regops
>>> regops.connect()                                  # doctest: +SKIP
>>> Project.last(3)                                   # a table  # doctest: +SKIP
"""

from __future__ import annotations

from regops.models.base import Collection, Model, Query
from regops.models.event import Event
from regops.models.history import UsageHistory
from regops.models.policy import ExpirationPolicy, PolicyPlan, PolicyQuery
from regops.models.project import Project
from regops.models.reports import usage_by_project
from regops.models.repository import ContainerRepository
from regops.models.settings import ApplicationSettings
from regops.models.tag import Tag
from regops.models.user import User

__all__ = [
    "ApplicationSettings",
    "Collection",
    "ContainerRepository",
    "Event",
    "ExpirationPolicy",
    "Model",
    "PolicyPlan",
    "PolicyQuery",
    "Project",
    "Query",
    "Tag",
    "UsageHistory",
    "User",
    "usage_by_project",
]
