"""GitLab REST API v4 client: plain data out, typed errors, every page of a list.

Owns authentication headers (personal access, OAuth and CI job tokens),
pagination (keyset for ``/projects``, offset with ``Link`` / ``X-Next-Page``
elsewhere, and an error rather than a silently short list), rate limiting, and
the translation of error answers into :class:`regops.errors.GitLabError`.

>>> gl = GitLabClient("https://gitlab.example.com", Secret("glpat-..."))  # doctest: +SKIP
>>> gl.version()                                                          # doctest: +SKIP
{'version': '17.5.1', 'revision': '...'}

Rate limiting: GitLab's limiter (Rack::Attack) answers 429 *before* the request
is processed, so a rate-limited request of any method is safe to send again.
GET requests are retried by :mod:`regops.http`; this client also waits and
retries POST, PUT and DELETE on 429 (and only on 429: a 502 after a DELETE may
mean the delete happened). Still limited after the retries: :class:`GitLabRateLimited`.
"""

from __future__ import annotations

import itertools
import logging
from collections.abc import Iterator, Mapping
from datetime import date, datetime
from typing import Any
from urllib.parse import parse_qsl, quote, urlsplit, urlunsplit

import requests

from regops.errors import (
    GitLabError,
    GitLabForbidden,
    GitLabNotFound,
    GitLabRateLimited,
    GitLabUnauthorized,
    ValidationError,
)
from regops.http import (
    HTTPSettings,
    RetryingSession,
    backoff_seconds,
    make_session,
    retry_after_seconds,
)
from regops.secrets import Secret, redact, redact_url

log = logging.getLogger("regops.gitlab")

API_PATH = "/api/v4"
PER_PAGE = 100  # GitLab's maximum page size for both offset and keyset pagination
# 10 million rows at 100 a page, more than any list of one instance holds: a chain of
# next-page links longer than this is a GitLab or proxy bug, not data.
MAX_PAGES = 100_000
RATE_LIMIT_STATUS = 429
MAX_DETAIL_CHARS = 500  # an HTML error page must not flood an exception message
TOKEN_HEADERS = {"private": "PRIVATE-TOKEN", "oauth": "Authorization", "job": "JOB-TOKEN"}
STATUS_ERRORS: dict[int, type[GitLabError]] = {
    401: GitLabUnauthorized,
    403: GitLabForbidden,
    404: GitLabNotFound,
    429: GitLabRateLimited,
}
# Server-side filters of GET /projects (doc/api/projects.md "List all projects").
PROJECT_FILTERS = frozenset(
    {
        "archived",
        "id_after",
        "id_before",
        "imported",
        "include_hidden",
        "include_pending_delete",
        "last_activity_after",
        "last_activity_before",
        "membership",
        "min_access_level",
        "owned",
        "repository_checksum_failed",
        "repository_storage",
        "search",
        "search_namespaces",
        "simple",
        "starred",
        "statistics",
        "topic",
        "visibility",
        "with_issues_enabled",
        "with_merge_requests_enabled",
        "with_programming_language",
        "updated_after",
        "updated_before",
    }
)
BULK_DELETE_PARAMS = frozenset(
    {"name_regex_delete", "name_regex", "name_regex_keep", "keep_n", "older_than"}
)


def encode_id(value: int | str) -> str:
    """A project/group id or full path as one URL path segment (``group%2Fproject``)."""
    if isinstance(value, bool) or value is None or str(value).strip() == "":
        raise ValidationError("id", f"expected a numeric id or a full path, got {value!r}")
    return quote(str(value).strip("/"), safe="")


def flatten_message(value: Any) -> str:
    """GitLab's ``message`` (a string, list or field -> messages dict) as one line.

    >>> flatten_message({"container_expiration_policy.name_regex": ["not valid RE2 syntax"]})
    'container_expiration_policy.name_regex: not valid RE2 syntax'
    """
    if value is None:
        return ""
    if isinstance(value, Mapping):
        parts = []
        for key, inner in value.items():
            text = flatten_message(inner)
            parts.append(f"{key}: {text}" if text else str(key))
        return "; ".join(parts)
    if isinstance(value, (list, tuple)):
        return ", ".join(filter(None, (flatten_message(item) for item in value)))
    return str(value).strip()


def error_detail(response: requests.Response) -> str:
    """The human part of an error answer: ``message``, or ``error`` + ``error_description``."""
    try:
        body = response.json()
    except ValueError:
        return redact(response.text.strip()[:MAX_DETAIL_CHARS])
    if isinstance(body, Mapping):
        if "message" in body:
            return flatten_message(body["message"])[:MAX_DETAIL_CHARS]
        if "error" in body:
            error = flatten_message(body["error"])
            description = flatten_message(body.get("error_description"))
            return f"{error}: {description}" if description else error
    return flatten_message(body)[:MAX_DETAIL_CHARS]


def _param_value(value: Any) -> Any:
    """A Python value as GitLab expects it in a query string."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (datetime, date)):
        return value.isoformat()
    return value


def _params(params: Mapping[str, Any] | None) -> dict[str, Any]:
    return {k: _param_value(v) for k, v in (params or {}).items() if v is not None}


class GitLabClient:
    """GitLab REST v4 calls returning dicts and iterators of dicts.

    ``token_kind``: ``"private"`` (personal/project/group access token, sent as
    ``PRIVATE-TOKEN``), ``"oauth"`` (``Authorization: Bearer``) or ``"job"``
    (``JOB-TOKEN``, the CI job token). ``token=None``: anonymous.
    """

    def __init__(
        self,
        url: str,
        token: Secret | str | None = None,
        token_kind: str = "private",
        http: HTTPSettings | None = None,
        *,
        # A RetryingSession: request() passes it ``idempotent=``, which a plain
        # requests.Session refuses with a TypeError.
        session: RetryingSession | None = None,
    ) -> None:
        if token_kind not in TOKEN_HEADERS:
            raise ValidationError("token_kind", f"expected one of {sorted(TOKEN_HEADERS)}")
        self.url = _base_url(url)
        self.api_url = self.url + API_PATH
        self.token_kind = token_kind
        self._token = Secret(token) if isinstance(token, str) else token
        self.http = http or HTTPSettings()
        self.session = session or make_session(self.http)

    def __repr__(self) -> str:
        auth = f"{self.token_kind} token" if self._token else "anonymous"
        return f"<GitLabClient {redact_url(self.url)} ({auth})>"

    @property
    def request_count(self) -> int:
        """HTTP requests sent so far, retries included."""
        return self.session.request_count

    # -- transport -----------------------------------------------------------------

    def _headers(self) -> dict[str, str]:
        headers = {"Accept": "application/json"}
        if self._token:
            value = self._token.reveal()
            if self.token_kind == "oauth":
                value = f"Bearer {value}"
            headers[TOKEN_HEADERS[self.token_kind]] = value
        return headers

    def _url(self, path: str) -> str:
        return path if path.startswith(("http://", "https://")) else self.api_url + path

    def request(
        self,
        method: str,
        path: str,
        *,
        params: Mapping[str, Any] | None = None,
        json: Any = None,
        data: Mapping[str, Any] | None = None,
        idempotent: bool | None = None,
    ) -> requests.Response:
        """Send one request (waiting out 429s); an error answer raises GitLabError.

        ``idempotent=True`` lets the transport retry a request of another
        method than GET/HEAD (a PUT of the same values) after a 5xx or a reset.
        """
        method = method.upper()
        url = self._url(path)
        settings = self.http
        transport_retries = method in ("GET", "HEAD") or bool(idempotent)  # 429s included
        retries_429 = 0 if transport_retries else settings.max_retries
        for attempt in range(retries_429 + 1):
            response = self.session.request(
                method,
                url,
                params=_params(params),
                json=json,
                data=_params(data) if data is not None else None,
                headers=self._headers(),
                idempotent=idempotent,
            )
            if response.status_code != RATE_LIMIT_STATUS or attempt == retries_429:
                break
            wait = retry_after_seconds(response)
            if wait is not None and wait > settings.max_retry_after:
                break
            if wait is None:
                wait = backoff_seconds(settings, attempt)
            log.info("rate limited: %s %s, waiting %.1fs", method, redact_url(url), wait)
            response.close()
            settings.sleep(wait)
        if response.status_code >= 400:
            raise self._error(method, response)
        return response

    def _error(self, method: str, response: requests.Response) -> GitLabError:
        status = response.status_code
        cls = STATUS_ERRORS.get(status, GitLabError)
        detail = error_detail(response)
        if status == RATE_LIMIT_STATUS:
            wait = retry_after_seconds(response)
            suffix = f"still rate limited after retries (Retry-After {wait:.0f}s)" if wait else ""
            detail = "; ".join(filter(None, (detail, suffix or "still rate limited")))
        return cls(method, response.url or "", status, detail)

    def _json(self, method: str, path: str, **kwargs: Any) -> Any:
        return _parse_json(method, self.request(method, path, **kwargs))

    def get(self, path: str, params: Mapping[str, Any] | None = None) -> Any:
        """GET one resource as parsed JSON."""
        return self._json("GET", path, params=params)

    # -- pagination ----------------------------------------------------------------

    def paginate(
        self, path: str, params: Mapping[str, Any] | None = None, keyset: bool = False
    ) -> Iterator[dict]:
        """Every item of a list endpoint, page after page, to the end.

        Keyset (``/projects``): ``pagination=keyset&order_by=id&sort=asc`` unless
        given, next page from the ``Link`` header. Offset: ``per_page=100``, next
        page from ``Link`` or ``X-Next-Page``. GitLabError, rather than a short or
        endless list: a response announcing more pages (``X-Total-Pages``) without a
        way to reach them, a next-page link to a page already read, more than
        ``MAX_PAGES`` pages, a page that is not a JSON list.
        """
        query = dict(params or {})
        query.setdefault("per_page", PER_PAGE)
        if keyset:
            query.setdefault("pagination", "keyset")
            query.setdefault("order_by", "id")
            query.setdefault("sort", "asc")
        url: str | None = self._url(path)
        read: set[tuple[str, ...]] = set()  # pages requested so far, by URL and sorted query
        while url is not None:
            page = _page_key(url, query)
            if page in read:
                raise GitLabError(
                    "GET",
                    _full_url(url, query),
                    200,
                    f"the next-page link points at a page already read (after {len(read)} "
                    "pages): refusing to loop",
                )
            if len(read) >= MAX_PAGES:
                raise GitLabError(
                    "GET",
                    _full_url(url, query),
                    200,
                    f"more than {MAX_PAGES} pages: refusing to follow the next-page links further",
                )
            read.add(page)
            response = self.request("GET", url, params=query)
            items = _parse_json("GET", response)
            if items is None:
                items = []
            if not isinstance(items, list):
                raise GitLabError("GET", response.url, response.status_code, "expected a list")
            yield from items
            url, query = self._next_page(response, query, len(read))

    def _next_page(
        self, response: requests.Response, query: dict, pages: int
    ) -> tuple[str | None, dict]:
        link = response.links.get("next", {}).get("url")
        if link:
            return self._same_origin(link), {}
        next_page = response.headers.get("X-Next-Page", "").strip()
        if next_page:
            base = urlsplit(response.url)
            rest = {k: v for k, v in parse_qsl(base.query) if k != "page"}
            url = urlunsplit((base.scheme, base.netloc, base.path, "", ""))
            return self._same_origin(url), {**rest, "page": next_page}
        total = response.headers.get("X-Total-Pages", "").strip()
        if total.isdigit() and int(total) > pages:
            raise GitLabError(
                "GET",
                response.url,
                response.status_code,
                f"X-Total-Pages says {total} pages but page {pages} has no next link: "
                "refusing to return a partial list",
            )
        return None, query

    def _same_origin(self, url: str) -> str:
        """The next-page URL rebased onto our GitLab URL (the token goes nowhere else).

        A GitLab behind a proxy with a wrong ``external_url`` sends links with
        another scheme or host; only the path and query are taken from them.
        """
        parts = urlsplit(url)
        ours = urlsplit(self.api_url)
        if (parts.scheme, parts.netloc) != (ours.scheme, ours.netloc):
            log.debug("rebasing next-page link %s onto %s", redact_url(url), self.url)
            path = parts.path
            prefix = urlsplit(self.url).path
            if prefix and not path.startswith(prefix + API_PATH):
                idx = path.find(API_PATH)
                path = prefix + (path[idx:] if idx >= 0 else path)
            url = urlunsplit((ours.scheme, ours.netloc, path, parts.query, ""))
        return url

    # -- instance ------------------------------------------------------------------

    def version(self) -> dict:
        """``GET /version``: ``{"version": ..., "revision": ...}``."""
        return self.get("/version")

    def current_user(self) -> dict:
        """``GET /user``: the token's user (``is_admin`` only shown to admins)."""
        return self.get("/user")

    def user(self, user_id: int) -> dict:
        """``GET /users/:id``."""
        return self.get(f"/users/{encode_id(user_id)}")

    def application_settings(self) -> dict:
        """``GET /application/settings`` (admin)."""
        return self.get("/application/settings")

    def update_application_settings(self, **attrs: Any) -> dict:
        """``PUT /application/settings`` (admin) with the given attributes."""
        return self._json("PUT", "/application/settings", json=_params(attrs))

    # -- projects ------------------------------------------------------------------

    def project(self, id_or_path: int | str) -> dict:
        """``GET /projects/:id`` by numeric id or full path."""
        return self.get(f"/projects/{encode_id(id_or_path)}")

    def projects(self, **filters: Any) -> Iterator[dict]:
        """``GET /projects`` with server-side filters, keyset-paginated by id ascending."""
        _check_project_filters(filters)
        return self.paginate("/projects", filters, keyset=True)

    def count_projects(self, **filters: Any) -> int | None:
        """How many projects match ``filters``: GitLab's ``X-Total`` of a one-row page.

        None when GitLab leaves ``X-Total`` out (it does above 10,000 rows); then count
        by iterating :meth:`projects`. One request.
        """
        _check_project_filters(filters)
        response = self.request("GET", "/projects", params={**filters, "per_page": 1})
        total = response.headers.get("X-Total", "").strip()
        return int(total) if total.isdigit() else None

    def projects_desc(self, limit: int, **filters: Any) -> Iterator[dict]:
        """The ``limit`` projects with the highest ids, newest first (for ``.last(n)``)."""
        _check_project_filters(filters)  # now, not at the first next()
        if limit <= 0:
            return iter(())
        params = {**filters, "per_page": min(limit, PER_PAGE), "order_by": "id", "sort": "desc"}
        return itertools.islice(self.paginate("/projects", params, keyset=True), limit)

    def group_projects(self, group: int | str, include_subgroups: bool = True) -> Iterator[dict]:
        """``GET /groups/:id/projects`` (offset pagination)."""
        params = {"include_subgroups": include_subgroups, "order_by": "id", "sort": "asc"}
        return self.paginate(f"/groups/{encode_id(group)}/projects", params)

    def update_project(self, project_id: int | str, **attrs: Any) -> dict:
        """``PUT /projects/:id``, e.g. ``container_expiration_policy_attributes={...}``.

        Setting the same values twice is harmless, so the PUT is retried like a GET.
        """
        path = f"/projects/{encode_id(project_id)}"
        return self._json("PUT", path, json=attrs, idempotent=True)

    def member(self, project_id: int | str, user_id: int) -> dict:
        """``GET /projects/:id/members/all/:user_id`` (inherited membership included)."""
        return self.get(f"/projects/{encode_id(project_id)}/members/all/{encode_id(user_id)}")

    # -- container registry --------------------------------------------------------

    def project_repositories(
        self, project_id: int | str, tags: bool = False, tags_count: bool = False
    ) -> Iterator[dict]:
        """``GET /projects/:id/registry/repositories``."""
        params = {"tags": tags or None, "tags_count": tags_count or None}
        return self.paginate(f"/projects/{encode_id(project_id)}/registry/repositories", params)

    def repository(
        self, repository_id: int, tags: bool = False, tags_count: bool = False, size: bool = False
    ) -> dict:
        """``GET /registry/repositories/:id`` (``size`` needs the metadata database)."""
        params = {"tags": tags or None, "tags_count": tags_count or None, "size": size or None}
        return self.get(f"/registry/repositories/{encode_id(repository_id)}", params)

    def _tags_path(self, project_id: int | str, repository_id: int) -> str:
        return (
            f"/projects/{encode_id(project_id)}/registry/repositories/"
            f"{encode_id(repository_id)}/tags"
        )

    def repository_tags(self, project_id: int | str, repository_id: int) -> Iterator[dict]:
        """``GET .../registry/repositories/:rid/tags``: name, path, location of each tag."""
        return self.paginate(self._tags_path(project_id, repository_id))

    def repository_tag(self, project_id: int | str, repository_id: int, tag_name: str) -> dict:
        """``GET .../tags/:tag_name``: digest, revision, created_at, total_size (one tag)."""
        path = f"{self._tags_path(project_id, repository_id)}/{quote(tag_name, safe='')}"
        return self.get(path)

    def delete_repository_tag(
        self, project_id: int | str, repository_id: int, tag_name: str
    ) -> None:
        """``DELETE .../tags/:tag_name`` (one tag; GitLab keeps its siblings)."""
        path = f"{self._tags_path(project_id, repository_id)}/{quote(tag_name, safe='')}"
        self.request("DELETE", path)

    def bulk_delete_repository_tags(
        self, project_id: int | str, repository_id: int, **params: Any
    ) -> None:
        """``DELETE .../tags`` (asynchronous, 202; once an hour per repository)."""
        unknown = set(params) - BULK_DELETE_PARAMS
        if unknown:
            raise ValidationError(",".join(sorted(unknown)), "not a bulk tag delete parameter")
        if not (params.get("name_regex_delete") or params.get("name_regex")):
            raise ValidationError("name_regex_delete", "required (use '.*' for every tag)")
        self.request("DELETE", self._tags_path(project_id, repository_id), data=params)

    def delete_repository(self, project_id: int | str, repository_id: int) -> None:
        """``DELETE /projects/:id/registry/repositories/:rid`` (asynchronous)."""
        self.request(
            "DELETE",
            f"/projects/{encode_id(project_id)}/registry/repositories/{encode_id(repository_id)}",
        )


def _check_project_filters(filters: Mapping[str, Any]) -> None:
    unknown = set(filters) - PROJECT_FILTERS - {"per_page"}
    if unknown:
        raise ValidationError(
            ",".join(sorted(unknown)), f"not a GET /projects filter ({sorted(PROJECT_FILTERS)})"
        )


def _parse_json(method: str, response: requests.Response) -> Any:
    """The answer's JSON (None when empty); GitLabError naming the request when not JSON."""
    if not response.content:
        return None
    try:
        return response.json()
    except ValueError:
        raise GitLabError(
            method, response.url, response.status_code, "answer is not JSON"
        ) from None


def _full_url(url: str, params: Mapping[str, Any]) -> str:
    """``url`` with ``params`` encoded into its query, as requests would send it."""
    prepared = requests.PreparedRequest()
    prepared.prepare_url(url, _params(params))
    return prepared.url or url


def _page_key(url: str, params: Mapping[str, Any]) -> tuple[str, ...]:
    """One page of a list: origin, path and the sorted query (parameter order differs)."""
    parts = urlsplit(_full_url(url, params))
    query = sorted(parse_qsl(parts.query, keep_blank_values=True))
    return (parts.scheme, parts.netloc, parts.path, *(f"{k}={v}" for k, v in query))


def _base_url(url: str) -> str:
    """The GitLab root URL without a trailing ``/`` or ``/api/v4``."""
    text = (url or "").strip().rstrip("/")
    parts = urlsplit(text)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise ValidationError("gitlab_url", f"not an http(s) URL: {redact_url(text)!r}")
    path = parts.path.rstrip("/")
    if path.endswith(API_PATH):
        path = path[: -len(API_PATH)]
    return urlunsplit((parts.scheme, parts.netloc, path, "", ""))


__all__ = ["GitLabClient", "encode_id", "error_detail", "flatten_message"]
