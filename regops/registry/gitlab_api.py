"""The registry's GitLab API (``/gitlab/v1/``): what GitLab reads from a registry
with the metadata database.

GitLab's own registry, run with its metadata database, serves this API beside
the v2 one (the container-registry project's ``docs/spec/gitlab/api.md``).
GitLab decides by it which cleanup service runs and where tag details come
from (lib/container_registry/gitlab_api_client.rb):

- compliance check: ``GET /gitlab/v1/`` answering 200, or 401 (an auth
  challenge still proves the route exists), means the API is there;
- tags: ``GET /gitlab/v1/repositories/<path>/tags/list/?n=&last=`` (n at most
  1000), one page a request, ``Link: <...?last=<tag>&n=<n>>; rel="next"`` while
  more follow; rows ``name``, ``digest``, ``config_digest``, ``media_type``,
  ``size_bytes``, ``created_at``, ``updated_at``, ``published_at``;
- repository details: ``GET /gitlab/v1/repositories/<path>/?size=self`` (the
  repository) or ``self_with_descendants`` (it and every repository below:
  GitLab's project statistics), ``size_bytes`` deduplicated;
- sub-repositories: ``GET /gitlab/v1/repository-paths/<path>/repositories/list/``.

Requests go through a :class:`~regops.registry.client.RegistryClient` (its
auth, retries and pacing). Errors are typed as for the v2 API; a page that is
not what the spec says raises :class:`~regops.errors.RegistryError` rather than
being skipped.

>>> api = GitLabRegistryAPI.detect(client)          # doctest: +SKIP
>>> [tag.name for tag in api.tags("group/app")]     # doctest: +SKIP
"""

from __future__ import annotations

import threading
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any, TypeVar
from urllib.parse import parse_qs, urlencode, urljoin, urlsplit

from regops.errors import RegistryError, ValidationError
from regops.registry.client import RegistryClient, error_from_response
from regops.registry.manifest import parse_rfc3339
from regops.registry.reference import Digest, validate_repository_name, validate_tag
from regops.registry.tokens import Scope

API_ROOT = "/gitlab/v1/"
# GitlabApiClient::MAX_TAGS_PAGE_SIZE / MAX_REPOSITORIES_PAGE_SIZE: the API refuses n > 1000.
MAX_PAGE_SIZE = 1000
# The API's default page when n is not given (registry handlers: maximumReturnedEntries).
DEFAULT_PAGE_SIZE = 100
# ContainerRepository::MAX_TAGS_PAGES: GitLab gives up ("too many pages requested") here.
MAX_PAGES = 2000
SIZE_SELF = "self"
SIZE_SELF_WITH_DESCENDANTS = "self_with_descendants"
SIZES = (SIZE_SELF, SIZE_SELF_WITH_DESCENDANTS)
# Status codes of the compliance check that mean "the API is there" (GitLab's rule).
SUPPORTED_STATUSES = (200, 401)


@dataclass(frozen=True)
class ApiTag:
    """One row of the tags list, as the registry's GitLab API gives it."""

    name: str
    digest: Digest
    media_type: str
    size_bytes: int | None
    created_at: datetime | None
    updated_at: datetime | None = None
    config_digest: Digest | None = None
    published_at: datetime | None = None

    @classmethod
    def from_json(cls, row: Any, where: str) -> ApiTag:
        """A row, checked: RegistryError naming ``where`` when it is not the spec's shape."""
        if not isinstance(row, Mapping):
            raise _shape_error(where, f"expected a tag object, got {type(row).__name__}")
        try:
            name = validate_tag(str(row.get("name") or ""))
            digest = Digest.parse(str(row.get("digest") or ""), field="digest")
            config = row.get("config_digest")
            config_digest = Digest.parse(config, field="config_digest") if config else None
        except (ValidationError, TypeError) as exc:
            raise _shape_error(where, str(exc)) from None
        size = row.get("size_bytes")
        if size is not None and (isinstance(size, bool) or not isinstance(size, int)):
            raise _shape_error(where, f"tag {name!r}: size_bytes is not a number: {size!r}")
        return cls(
            name=name,
            digest=digest,
            media_type=str(row.get("media_type") or ""),
            size_bytes=size,
            created_at=_time(row, "created_at", where),
            updated_at=_time(row, "updated_at", where),
            config_digest=config_digest,
            published_at=_time(row, "published_at", where),
        )

    @property
    def revision(self) -> str:
        """GitLab's ``raw_tag['config_digest'].to_s.split(':')[1] || ''``."""
        return self.config_digest.hex if self.config_digest is not None else ""

    @property
    def pushed_at(self) -> datetime | None:
        """GitLab's cleanup date for this tag: ``updated_at || created_at``."""
        return self.updated_at or self.created_at


@dataclass(frozen=True)
class TagsPage:
    """One page of tags, and the ``last`` of the next page (None: this was the last)."""

    tags: tuple[ApiTag, ...]
    next_last: str | None


@dataclass(frozen=True)
class RepositoryDetails:
    """``GET /gitlab/v1/repositories/<path>/``: ``size_bytes`` only when a size was asked."""

    name: str
    path: str
    size_bytes: int | None
    size_precision: str | None
    created_at: datetime | None
    updated_at: datetime | None


@dataclass(frozen=True)
class SubRepository:
    """A row of ``/gitlab/v1/repository-paths/<path>/repositories/list/``."""

    name: str
    path: str
    created_at: datetime | None
    updated_at: datetime | None
    size_bytes: int | None = None


class GitLabRegistryAPI:
    """The ``/gitlab/v1/`` API of one registry, through its :class:`RegistryClient`.

    ``supported`` runs GitLab's compliance check once. Costs: one request per
    page of tags (up to 1000), one per repository detail, one per page of
    sub-repositories.
    """

    def __init__(self, client: RegistryClient) -> None:
        self.client = client
        self._supported: bool | None = None
        self._lock = threading.Lock()

    def __repr__(self) -> str:
        return f"GitLabRegistryAPI({self.client.url!r}, supported={self._supported})"

    @classmethod
    def detect(cls, client: RegistryClient) -> GitLabRegistryAPI | None:
        """The API of ``client``'s registry, or None when it has none (GitLab's check)."""
        api = cls(client)
        return api if api.supported else None

    @property
    def supported(self) -> bool:
        """GitLab's ``supports_gitlab_api?``: ``GET /gitlab/v1/`` is 200 or 401.

        A connection failure raises (GitLab answers false there; regops would
        rather say the registry is unreachable than pick the other service).
        """
        with self._lock:
            if self._supported is not None:
                return self._supported
        url = self.client._url(API_ROOT)
        response = self.client._send_once("GET", url, ())
        response.close()
        supported = response.status_code in SUPPORTED_STATUSES
        with self._lock:
            self._supported = supported
        return supported

    # -- tags --------------------------------------------------------------------

    def tags_page(
        self,
        path: str,
        *,
        page_size: int = DEFAULT_PAGE_SIZE,
        last: str | None = None,
        name: str | None = None,
    ) -> TagsPage:
        """One page of ``path``'s tags (sorted by name), after ``last`` when given;
        ``name`` keeps the tags whose name contains it (GitLab's ``tag(name)`` lookup)."""
        path = validate_repository_name(path)
        page_size = _page_size(page_size)
        query: dict[str, Any] = {"n": page_size}
        if last is not None:
            query["last"] = validate_tag(last)
        if name:
            query["name"] = validate_tag(name)
        url = self.client._url(f"{API_ROOT}repositories/{path}/tags/list/?{urlencode(query)}")
        response = self._get(url, (Scope.repository(path, "pull"),))
        rows = _json(url, response, list)
        tags = tuple(ApiTag.from_json(row, f"{url} row {i}") for i, row in enumerate(rows))
        return TagsPage(tags, _next_last(url, response))

    def tag_pages(self, path: str, *, page_size: int = MAX_PAGE_SIZE) -> Iterator[list[ApiTag]]:
        """Every page of ``path``'s tags, as GitLab's ``each_tags_page`` reads them.

        RegistryError, never a short or endless list: a next page that does not
        move forward, or more than ``MAX_PAGES`` pages (GitLab raises there too).
        """
        last: str | None = None
        for _ in range(MAX_PAGES):
            page = self.tags_page(path, page_size=page_size, last=last)
            yield list(page.tags)
            if page.next_last is None:
                return
            if last is not None and page.next_last <= last:
                raise RegistryError(
                    "GET", path, 200, f"the next tags page of {path} does not move past {last!r}"
                )
            last = page.next_last
        raise RegistryError("GET", path, 200, f"more than {MAX_PAGES} pages of tags in {path}")

    def tags(self, path: str, *, page_size: int = MAX_PAGE_SIZE) -> list[ApiTag]:
        """Every tag of ``path`` in the API's order (by name)."""
        return [tag for page in self.tag_pages(path, page_size=page_size) for tag in page]

    def tag(self, path: str, name: str) -> ApiTag | None:
        """One tag's row, as GitLab's ``ContainerRepository#tag`` finds it (None: absent)."""
        page = self.tags_page(path, page_size=MAX_PAGE_SIZE, name=name)
        return next((tag for tag in page.tags if tag.name == name), None)

    # -- repositories --------------------------------------------------------------

    def repository(self, path: str, *, size: str | None = None) -> RepositoryDetails:
        """``path``'s details; ``size``: ``self`` or ``self_with_descendants``.

        ``self_with_descendants`` needs pull access to ``<path>/*`` (GitLab's
        nested-repositories token) and answers even when ``path`` itself has no
        repository but repositories below it exist.
        """
        path = validate_repository_name(path)
        if size is not None and size not in SIZES:
            raise ValidationError("size", f"expected one of {', '.join(SIZES)}, got {size!r}")
        query = f"?{urlencode({'size': size})}" if size else ""
        url = self.client._url(f"{API_ROOT}repositories/{path}/{query}")
        scope = _nested_scope(path) if size == SIZE_SELF_WITH_DESCENDANTS else None
        response = self._get(url, (scope or Scope.repository(path, "pull"),))
        body = _json(url, response, dict)
        size_bytes = body.get("size_bytes")
        if size_bytes is not None and (
            isinstance(size_bytes, bool) or not isinstance(size_bytes, int)
        ):
            raise _shape_error(url, f"size_bytes is not a number: {size_bytes!r}")
        if size and size_bytes is None:
            raise _shape_error(url, f"size={size} asked but the answer has no size_bytes")
        return RepositoryDetails(
            name=str(body.get("name") or ""),
            path=str(body.get("path") or path),
            size_bytes=size_bytes,
            size_precision=body.get("size_precision"),
            created_at=_time(body, "created_at", url),
            updated_at=_time(body, "updated_at", url),
        )

    def sub_repositories(
        self, path: str, *, page_size: int = DEFAULT_PAGE_SIZE
    ) -> Iterator[SubRepository]:
        """Every repository at or below ``path`` (``repository-paths``), page after page."""
        path = validate_repository_name(path)
        page_size = _page_size(page_size)
        last: str | None = None
        for _ in range(MAX_PAGES):
            query: dict[str, Any] = {"n": page_size}
            if last is not None:
                query["last"] = last
            url = self.client._url(
                f"{API_ROOT}repository-paths/{path}/repositories/list/?{urlencode(query)}"
            )
            response = self._get(url, (_nested_scope(path),))
            for i, row in enumerate(_json(url, response, list)):
                yield _sub_repository(row, f"{url} row {i}")
            following = _next_last(url, response)
            if following is None:
                return
            if last is not None and following <= last:
                raise RegistryError("GET", url, 200, f"the next page does not move past {last!r}")
            last = following
        raise RegistryError("GET", path, 200, f"more than {MAX_PAGES} pages of repositories")

    # -- transport -------------------------------------------------------------------

    def _get(self, url: str, scopes: tuple[Scope, ...]) -> Any:
        """GET with the client's auth (a 401 fetches a token for ``scopes`` once)."""
        response = self.client._send("GET", url, scopes)
        if response.status_code != 200:
            raise error_from_response("GET", url, response)
        return response


def _nested_scope(path: str) -> Scope:
    """Pull access to every repository below ``path`` (GitLab's nested-repositories token)."""
    return Scope.repository(f"{path}/*", "pull")


def _page_size(value: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= MAX_PAGE_SIZE:
        raise ValidationError("page_size", f"must be 1..{MAX_PAGE_SIZE}, got {value!r}")
    return value


def _next_last(url: str, response: Any) -> str | None:
    """The ``last`` of the ``rel="next"`` Link (GitLab reads only that), or None."""
    link = response.links.get("next", {}).get("url")
    if not link:
        return None
    values = parse_qs(urlsplit(urljoin(url, link)).query).get("last")
    if not values or not values[0]:
        raise _shape_error(url, f"next-page Link without a 'last': {link!r}")
    return values[0]


_Shape = TypeVar("_Shape", list[Any], dict[str, Any])
_JSON_SHAPES: dict[type, str] = {list: "a JSON list", dict: "a JSON object"}


def _json(url: str, response: Any, shape: type[_Shape]) -> _Shape:
    """The answer's JSON, which must be a list or an object (``shape``)."""
    try:
        body = response.json()
    except ValueError:
        raise _shape_error(url, "answer is not JSON") from None
    if not isinstance(body, shape):
        raise _shape_error(url, f"expected {_JSON_SHAPES[shape]}, got {type(body).__name__}")
    return body


def _sub_repository(row: Any, where: str) -> SubRepository:
    if not isinstance(row, Mapping) or not isinstance(row.get("path"), str):
        raise _shape_error(where, "expected a repository object with a path")
    size = row.get("size_bytes")
    return SubRepository(
        name=str(row.get("name") or ""),
        path=row["path"],
        created_at=_time(row, "created_at", where),
        updated_at=_time(row, "updated_at", where),
        size_bytes=size if isinstance(size, int) and not isinstance(size, bool) else None,
    )


def _time(row: Mapping[str, Any], key: str, where: str) -> datetime | None:
    """An ISO 8601 time of the API (GitLab parses them with DateTime.iso8601)."""
    value = row.get(key)
    if value in (None, ""):
        return None
    parsed = parse_rfc3339(value)
    if parsed is None:
        raise _shape_error(where, f"{key} is not an ISO 8601 time: {value!r}")
    return parsed


def _shape_error(where: str, detail: str) -> RegistryError:
    return RegistryError("GET", where, 200, f"not the GitLab API's shape: {detail}")


# GitLab's tag-delete probe (lib/container_registry/client.rb supports_tag_delete?): any name.
GITLAB_DELETE_PROBE_PATH = "/v2/name/manifests/tag"


def gitlab_would_delete_by_tag(client: RegistryClient) -> bool:
    """Whether GitLab's own probe picks its tag-delete method for this registry.

    GitLab sends ``OPTIONS /v2/name/manifests/tag`` and deletes tags by name
    (``DELETE /v2/<path>/manifests/<tag>``) when the answer is a success with
    DELETE in ``Allow``; otherwise it pushes a dummy manifest under each tag and
    deletes that. The plain Distribution registry 2.8 answers ``Allow: DELETE,
    GET, HEAD, PUT`` there and then refuses a delete by tag (400 DIGEST_INVALID),
    so GitLab's own cleanup deletes nothing on it.
    """
    url = client._url(GITLAB_DELETE_PROBE_PATH)
    response = client._send("OPTIONS", url, ())
    response.close()
    allow = {method.strip().upper() for method in response.headers.get("Allow", "").split(",")}
    return 200 <= response.status_code < 300 and "DELETE" in allow
