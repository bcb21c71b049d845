"""The registry v2 API client: catalog, tags, manifests, blobs, delete primitives.

Speaks HTTP to one registry through a :mod:`regops.http` session, gets tokens
from a :class:`~regops.registry.tokens.RegistryAuth`, and turns error answers
into :class:`~regops.errors.RegistryError` subclasses carrying the body's
``errors[].code``.

>>> client = RegistryClient("https://registry.example.com", KeyAuth(minter))  # doctest: +SKIP
>>> client.tags("group/app")  # doctest: +SKIP
['1.0', '1.1', 'latest']


Deleting tags safely (never a sibling tag) is :mod:`regops.registry.safe_delete`,
built on the primitives here.
"""

from __future__ import annotations

import contextlib
import functools
import json
import logging
import threading
from collections.abc import Iterable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, overload
from urllib.parse import urlencode, urljoin, urlsplit

import requests

from regops.errors import (
    RegistryDenied,
    RegistryError,
    RegistryNotFound,
    RegistryUnauthorized,
    RegistryUnsupported,
    RegopsError,
    TransportError,
    ValidationError,
)
from regops.http import (
    RETRY_STATUSES,
    AdaptiveLimit,
    Answer,
    HTTPSettings,
    RetryingSession,
    TokenBucket,
    backoff_seconds,
    make_session,
)
from regops.registry.manifest import (
    MANIFEST_ACCEPT,
    SCHEMA1_TYPES,
    ImageConfig,
    Manifest,
    parse_manifest,
)
from regops.registry.reference import Digest, validate_repository_name, validate_tag
from regops.registry.tokens import AnonymousAuth, RegistryAuth, Scope, parse_challenge
from regops.secrets import redact, redact_url

log = logging.getLogger("regops.registry")

MAX_PAGE_SIZE = 1000  # the registry answers 400 to _catalog?n= above this
DEFAULT_PAGE_SIZE = 100
MAX_PAGES = 1_000_000  # a Link chain longer than this is a registry bug, not data
DETAIL_LIMIT = 300  # characters of an error body kept in an exception message
CHECK_WORKERS = 8  # concurrent HEADs when checking the other tags of a repository

# GitLab's registry fork advertises itself with these headers on GET /v2/.
VERSION_HEADER = "Gitlab-Container-Registry-Version"
FEATURES_HEADER = "Gitlab-Container-Registry-Features"
DATABASE_HEADER = "Gitlab-Container-Registry-Database-Enabled"
TAG_DELETE_FEATURE = "tag_delete"
DIGEST_HEADER = "Docker-Content-Digest"
GITLAB_API_PATH = "/gitlab/v1/"

PROBE_TAG = "latest"  # any tag name: OPTIONS only asks which methods the route allows

_PULL_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
_PUSH_METHODS = frozenset({"POST", "PUT", "PATCH"})
SCOPES_CACHED = 4096  # repositories whose scope tuples are kept (a few hundred bytes each)
_NO_HEADERS: dict[str, str] = {}


@dataclass(frozen=True)
class RegistryFeatures:
    """What ``GET /v2/`` (and ``/gitlab/v1/``) say about the registry."""

    gitlab_version: str | None
    features: frozenset[str]
    database_enabled: bool
    tag_delete: bool
    gitlab_api: bool

    @property
    def is_gitlab(self) -> bool:
        """True for GitLab's fork of the registry."""
        return self.gitlab_version is not None


@functools.lru_cache(maxsize=SCOPES_CACHED)
def repository_scopes(method: str, repo: str) -> tuple[Scope, ...]:
    """The token scopes the registry needs for ``method`` on repository ``repo``
    (the same tuple every time: the token cache finds it at once)."""
    method = method.upper()
    if method in _PULL_METHODS:
        return (Scope.repository(repo, "pull"),)
    if method in _PUSH_METHODS:
        return (Scope.repository(repo, "pull", "push"),)
    if method == "DELETE":
        return (Scope.repository(repo, "delete"),)
    raise ValidationError("method", f"no registry scope known for HTTP {method}")


class RegistryClient:
    """A client for one registry's v2 API.

    Every method costs the requests its name suggests; ``request_count`` says
    how many were made (retries included).
    """

    def __init__(
        self,
        url: str,
        auth: RegistryAuth | None = None,
        *,
        session: RetryingSession | None = None,
        http: HTTPSettings | None = None,
        pace: TokenBucket | None = None,
    ) -> None:
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValidationError("registry_url", f"expected http(s)://host[:port], got {url!r}")
        self.url = url.rstrip("/")
        self._prefix = self.url + "/"  # a URL starting so is on this registry's origin
        self._origin = (parts.scheme, parts.hostname, parts.port)
        self.auth = (auth or AnonymousAuth()).bind(self.url)
        self._session = session or make_session(http or HTTPSettings())
        self._lock = threading.Lock()
        self._features: RegistryFeatures | None = None
        self._tag_delete: dict[str, bool] = {}
        self._pace = pace
        self._limit: AdaptiveLimit | None = None
        # Request headers by (Accept, Authorization value): built once per token.
        self._headers: dict[tuple[str | None, str | None], dict[str, str]] = {}

    def __repr__(self) -> str:
        paced = f", paced={self._pace!r}" if self._pace is not None else ""
        return f"RegistryClient({self.url!r}, auth={self.auth!r}{paced})"

    def paced(self, requests_per_second: float) -> RegistryClient:
        """A client for the same registry (same connections, same tokens) whose own
        requests, retries included, go at most ``requests_per_second`` on average.

        Other users of this client are not slowed down.

        >>> slow = client.paced(5)  # doctest: +SKIP
        """
        copy = RegistryClient(
            self.url, self.auth, session=self._session, pace=TokenBucket(requests_per_second)
        )
        copy._features, copy._tag_delete = self._features, self._tag_delete
        return copy

    @contextlib.contextmanager
    def limited(self, limit: AdaptiveLimit) -> Iterator[AdaptiveLimit]:
        """While the block runs, every request of this client holds a slot of ``limit``
        (and the connection pools keep ``limit.maximum`` connections per host).

        >>> with client.limited(AdaptiveLimit(64)):  # doctest: +SKIP
        ...     scan()
        """
        self._session.reserve(limit.maximum)
        previous, self._limit = self._limit, limit
        try:
            yield limit
        finally:
            self._limit = previous

    @property
    def request_count(self) -> int:
        """HTTP requests made through this client's session (retries included)."""
        return self._session.request_count

    @property
    def session(self) -> RetryingSession:
        return self._session

    # ------------------------------------------------------------------ transport

    def _url(self, path: str) -> str:
        """An absolute URL as it is; a path below this registry's URL (a path prefix kept)."""
        return f"{self._prefix}{path.lstrip('/')}" if "://" not in path else path

    def _same_origin(self, url: str) -> bool:
        if url.startswith(self._prefix):
            return True
        parts = urlsplit(url)
        return (parts.scheme, parts.hostname, parts.port) == self._origin

    def _send(
        self, method: str, url: str, scopes: Sequence[Scope], **kwargs: Any
    ) -> requests.Response:
        """One request with the auth header; on a 401, refresh once and retry."""
        response = self._send_once(method, url, scopes, **kwargs)
        if response.status_code != 401:
            return response
        if not self._refresh(response, scopes):
            return response
        return self._send_once(method, url, scopes, **kwargs)

    def _refresh(self, response: Answer, scopes: Sequence[Scope]) -> bool:
        """After a 401: True when a new token was obtained and a retry may succeed."""
        challenge = parse_challenge(response.headers.get("WWW-Authenticate"))
        if not self.auth.refresh(challenge, scopes, self._session):
            return False
        response.close()
        return True

    def _send_once(
        self, method: str, url: str, scopes: Sequence[Scope], **kwargs: Any
    ) -> requests.Response:
        headers = dict(kwargs.pop("headers", None) or {})
        if self._same_origin(url):  # never hand a registry token to another host
            value = self.auth.authorization(scopes, self._session)
            if value:
                headers["Authorization"] = value
        return self._session.request(
            method, url, headers=headers, pace=self._pace, limit=self._limit, **kwargs
        )

    def _call(
        self,
        method: str,
        path: str,
        scopes: Sequence[Scope],
        expected: Iterable[int] = (200,),
        **kwargs: Any,
    ) -> requests.Response:
        """A request whose status must be in ``expected``; a typed error otherwise."""
        url = self._url(path)
        response = self._send(method, url, scopes, **kwargs)
        if response.status_code not in tuple(expected):
            raise error_from_response(method, url, response)
        return response

    def _read(
        self, method: str, url: str, scopes: Sequence[Scope], accept: str | None = None
    ) -> Answer:
        """The hot path: a GET or HEAD on this registry through the session's lean path
        (urllib3 directly), headers built once per token; a 401 refreshes once; any
        status but 200 is a typed error."""
        answer = self._read_once(method, url, scopes, accept)
        if answer.status_code == 401 and self._refresh(answer, scopes):
            answer = self._read_once(method, url, scopes, accept)
        if answer.status_code != 200:
            raise error_from_response(method, url, answer)
        return answer

    def _read_once(
        self, method: str, url: str, scopes: Sequence[Scope], accept: str | None
    ) -> Answer:
        if not self._same_origin(url):  # never hand a registry token to another host
            bare = {"Accept": accept} if accept else _NO_HEADERS
            return self._session.lean(method, url, bare, pace=self._pace, limit=self._limit)
        value = self.auth.authorization(scopes, self._session)
        key = (accept, value)
        headers = self._headers.get(key)
        if headers is None:
            headers = {"Accept": accept} if accept else {}
            if value:
                headers["Authorization"] = value
            with self._lock:
                if len(self._headers) >= SCOPES_CACHED:
                    self._headers.clear()  # tokens expire: old ones are dead weight
                self._headers[key] = headers
        return self._session.lean(method, url, headers, pace=self._pace, limit=self._limit)

    # ------------------------------------------------------------------ discovery

    def ping(self) -> RegistryFeatures:
        """``GET /v2/`` (checks the credentials) plus a ``/gitlab/v1/`` probe."""
        response = self._call("GET", "/v2/", ())
        raw = response.headers.get(FEATURES_HEADER, "")
        features = frozenset(f.strip() for f in raw.split(",") if f.strip())
        database = response.headers.get(DATABASE_HEADER, "").strip().lower() == "true"
        result = RegistryFeatures(
            gitlab_version=response.headers.get(VERSION_HEADER) or None,
            features=features,
            database_enabled=database,
            tag_delete=TAG_DELETE_FEATURE in features,
            gitlab_api=self._probe_gitlab_api(),
        )
        with self._lock:
            self._features = result
        return result

    def _probe_gitlab_api(self) -> bool:
        """True when ``/gitlab/v1/`` exists (200 or an auth refusal), False on 404/405."""
        url = self._url(GITLAB_API_PATH)
        response = self._send_once("GET", url, ())
        response.close()
        if response.status_code in (200, 401, 403):
            return True
        if response.status_code in (404, 405):
            return False
        raise error_from_response("GET", url, response)

    @property
    def features(self) -> RegistryFeatures:
        """The result of :meth:`ping`, pinging once when not known yet."""
        with self._lock:
            known = self._features
        return known if known is not None else self.ping()

    def supports_tag_delete(self, repo: str) -> bool:
        """True when tags can be deleted by name (GitLab's registry); cached per repository.

        Asks ``GET /v2/`` features first, then, as GitLab does,
        ``OPTIONS /v2/<repo>/tags/reference/<tag>`` for an ``Allow`` with DELETE.
        (``OPTIONS /v2/<repo>/manifests/<tag>`` cannot tell: the plain
        Distribution registry lists DELETE there and then refuses tags with 400.)
        """
        repo = validate_repository_name(repo)
        with self._lock:
            if repo in self._tag_delete:
                return self._tag_delete[repo]
        supported = self.features.tag_delete or self._options_allows_delete(repo)
        with self._lock:
            self._tag_delete[repo] = supported
        return supported

    def _options_allows_delete(self, repo: str) -> bool:
        url = self._url(f"/v2/{repo}/tags/reference/{PROBE_TAG}")
        response = self._send("OPTIONS", url, repository_scopes("GET", repo))
        response.close()
        if response.status_code not in (200, 204):
            return False
        allow = response.headers.get("Allow", "")
        return "DELETE" in {m.strip().upper() for m in allow.split(",")}

    # ------------------------------------------------------------------ listing

    def catalog(self, page_size: int = DEFAULT_PAGE_SIZE) -> Iterator[str]:
        """Every repository name, following the ``Link`` pages (one request a page)."""
        if not isinstance(page_size, int) or not 1 <= page_size <= MAX_PAGE_SIZE:
            raise ValidationError("page_size", f"must be 1..{MAX_PAGE_SIZE}, got {page_size!r}")
        url = self._url(f"/v2/_catalog?n={page_size}")
        yield from self._paged(url, "repositories", (Scope.catalog(),))

    def tags(self, repo: str) -> list[str]:
        """The repository's tags, sorted ([] when the registry says ``null``)."""
        repo = validate_repository_name(repo)
        url = self._url(f"/v2/{repo}/tags/list")
        return sorted(self._paged(url, "tags", repository_scopes("GET", repo)))

    def _paged(self, url: str, key: str, scopes: Sequence[Scope]) -> Iterator[str]:
        """The ``key`` list of every page, following ``Link: rel="next"`` on this registry.

        RegistryError, never a merged or endless list: a next link to another
        origin (scheme, host or port) or to a page already read, more than
        ``MAX_PAGES`` pages.
        """
        seen: set[str] = set()
        while url:
            if url in seen:
                raise RegistryError(
                    "GET", url, 200, "Link header loops back to a page already read"
                )
            if len(seen) >= MAX_PAGES:
                raise RegistryError(
                    "GET", url, 200, f"more than {MAX_PAGES} pages: not following the Link further"
                )
            seen.add(url)
            response = self._read("GET", url, scopes)
            items = _json_body("GET", url, response).get(key)
            if items is not None and not isinstance(items, list):
                raise RegistryError("GET", url, 200, f"{key!r} is not a list")
            yield from (str(item) for item in items or ())
            following = response.links.get("next", {}).get("url")
            url = urljoin(response.url or url, following) if following else ""
            if url and not self._same_origin(url):
                raise RegistryError(
                    "GET",
                    url,
                    200,
                    f"the next-page Link leads away from {redact_url(self.url)}: "
                    "refusing to follow it",
                )

    # ------------------------------------------------------------------ manifests

    @overload
    def manifest_digest(self, repo: str, ref: str) -> Digest: ...
    @overload
    def manifest_digest(self, repo: str, ref: str, *, fallback: bool) -> Digest | None: ...

    def manifest_digest(self, repo: str, ref: str, *, fallback: bool = True) -> Digest | None:
        """The digest a tag (or digest) resolves to: one HEAD (and a GET when the registry
        omits ``Docker-Content-Digest``; None then without ``fallback``)."""
        repo, ref = validate_repository_name(repo), _reference(ref)
        url = f"{self._prefix}v2/{repo}/manifests/{ref}"
        response = self._read("HEAD", url, repository_scopes("HEAD", repo), MANIFEST_ACCEPT)
        value = response.headers.get(DIGEST_HEADER)
        if value:
            return Digest.parse(value, field=DIGEST_HEADER)
        if not fallback:
            return None
        return self.get_manifest(repo, ref).digest  # a registry that omits the header

    def get_manifest(self, repo: str, ref: str) -> Manifest:
        """The manifest for a tag or digest, its digest verified against its bytes."""
        repo, ref = validate_repository_name(repo), _reference(ref)
        url = f"{self._prefix}v2/{repo}/manifests/{ref}"
        response = self._read("GET", url, repository_scopes("GET", repo), MANIFEST_ACCEPT)
        header = response.headers.get(DIGEST_HEADER)
        expected = ref if ref.startswith("sha256:") else header
        manifest = parse_manifest(response.content, response.headers.get("Content-Type"), expected)
        if header and header != manifest.digest and not manifest.is_schema1:
            raise RegistryError(
                "GET", response.url, 200, f"{DIGEST_HEADER} {header} differs from the content"
            )
        return manifest

    def put_manifest(self, repo: str, ref: str, raw: bytes, media_type: str) -> Digest:
        """Push a manifest under a tag or its digest; returns its digest."""
        repo, ref = validate_repository_name(repo), _reference(ref)
        path = f"/v2/{repo}/manifests/{ref}"
        response = self._call(
            "PUT",
            path,
            repository_scopes("PUT", repo),
            expected=(200, 201),
            data=raw,
            headers={"Content-Type": media_type},
            idempotent=True,  # the same bytes under the same name: safe to repeat
        )
        actual = Digest.of(raw)
        header = response.headers.get(DIGEST_HEADER)
        if header and header != actual and media_type not in SCHEMA1_TYPES:
            raise RegistryError("PUT", response.url, response.status_code, "digest mismatch")
        return Digest.parse(header) if header else actual

    def delete_manifest(self, repo: str, digest: str, *, missing_ok: bool = False) -> bool:
        """Delete a manifest BY DIGEST: True when deleted, False when absent (``missing_ok``).

        DANGER: this removes EVERY tag that points at the digest, not one tag.
        To delete tags, use :class:`regops.registry.safe_delete.SafeDelete`,
        which never takes down a sibling tag. Tags are refused here
        (ValidationError) before any request. Retried like any idempotent
        request; a 404 raises RegistryNotFound unless ``missing_ok``.
        """
        repo = validate_repository_name(repo)
        if not isinstance(digest, str) or not digest.startswith("sha256:"):
            raise ValidationError(
                "digest",
                f"delete_manifest takes a digest, got {digest!r}; use SafeDelete for tags",
            )
        digest = Digest.parse(digest)
        response = self._call(
            "DELETE",
            f"/v2/{repo}/manifests/{digest}",
            repository_scopes("DELETE", repo),
            expected=(202, 404) if missing_ok else (202,),
            idempotent=True,
        )
        return response.status_code == 202

    # ------------------------------------------------------------------ blobs

    def blob_size(self, repo: str, digest: str) -> int | None:
        """The blob's size in bytes, or None when the repository does not link it."""
        repo, digest = validate_repository_name(repo), Digest.parse(digest)
        response = self._call(
            "HEAD",
            f"/v2/{repo}/blobs/{digest}",
            repository_scopes("HEAD", repo),
            expected=(200, 404),
            allow_redirects=True,
        )
        if response.status_code == 404:
            return None
        length = response.headers.get("Content-Length")
        if length is None or not length.isdigit():
            raise RegistryError("HEAD", response.url, 200, "blob answer without Content-Length")
        return int(length)

    def get_blob(self, repo: str, digest: str) -> bytes:
        """The blob's bytes (following storage redirects), verified against the digest."""
        repo, digest = validate_repository_name(repo), Digest.parse(digest)
        response = self._call(
            "GET",
            f"/v2/{repo}/blobs/{digest}",
            repository_scopes("GET", repo),
            allow_redirects=True,
        )
        data = response.content
        if not digest.verify(data):
            raise RegistryError(
                "GET", response.url, 200, f"blob content is {Digest.of(data)}", ["DIGEST_INVALID"]
            )
        return data

    def get_config(self, repo: str, digest: str) -> ImageConfig:
        """The image config blob, parsed."""
        return ImageConfig.parse(self.get_blob(repo, digest))

    def upload_blob(self, repo: str, data: bytes) -> Digest:
        """Upload a blob (POST then PUT); skipped when the repository has it already.

        The two steps are not idempotent on their own (a PUT whose answer was
        lost cannot be repeated on the same upload), so a failed upload is
        started over, after checking whether the blob arrived after all.
        """
        repo, digest = validate_repository_name(repo), Digest.of(data)
        settings = self._session.settings
        for attempt in range(1 + settings.max_retries):
            if self.blob_size(repo, digest) is not None:
                return digest
            try:
                location = self._start_upload(repo, f"/v2/{repo}/blobs/uploads/")
                self._call(
                    "PUT",
                    _with_query(location, {"digest": str(digest)}),
                    repository_scopes("PUT", repo),
                    expected=(201,),
                    data=data,
                    headers={"Content-Type": "application/octet-stream"},
                )
                return digest
            except (TransportError, RegistryError) as exc:
                if attempt == settings.max_retries or not _upload_retryable(exc):
                    raise
                log.info("blob upload to %s failed (%s); starting it over", repo, exc)
                settings.sleep(backoff_seconds(settings, attempt))
        raise AssertionError("unreachable")  # pragma: no cover

    def mount_blob(self, repo: str, digest: str, from_repo: str) -> bool:
        """Link a blob from another repository without copying: True when mounted.

        False when the registry started an ordinary upload instead (the blob is
        not in ``from_repo`` or cross-repository mount is off); that upload is
        cancelled, so the caller uploads the bytes with :meth:`upload_blob`.
        """
        repo, digest = validate_repository_name(repo), Digest.parse(digest)
        from_repo = validate_repository_name(from_repo)
        query = urlencode({"mount": str(digest), "from": from_repo})
        scopes = (*repository_scopes("POST", repo), Scope.repository(from_repo, "pull"))
        url = self._url(f"/v2/{repo}/blobs/uploads/?{query}")
        response = self._call("POST", url, scopes, expected=(201, 202))
        if response.status_code == 201:
            return True
        self._cancel_upload(repo, _location(response))
        return False

    def _start_upload(self, repo: str, path: str) -> str:
        response = self._call("POST", path, repository_scopes("POST", repo), expected=(202,))
        return _location(response)

    def _cancel_upload(self, repo: str, location: str) -> None:
        """Cancel an upload session; the registry purges abandoned ones anyway."""
        try:
            self._call("DELETE", location, repository_scopes("DELETE", repo), expected=(204, 404))
        except (RegistryDenied, RegistryUnauthorized, RegistryUnsupported) as exc:
            # A push-only token cannot cancel; the registry's upload purger removes it.
            log.info("left an unused upload session in %s: %s", repo, exc)

    # ------------------------------------------------------------------ tag deletes

    def delete_tag(self, repo: str, tag: str) -> bool:
        """DELETE one tag BY NAME (GitLab's registry): True when deleted, False when absent.

        Only on a registry with tag delete (:meth:`supports_tag_delete`); safe
        deletes go through :class:`regops.registry.safe_delete.SafeDelete`.
        ``/v2/<repo>/manifests/<tag>`` first; a registry that refuses a tag there
        (400 DIGEST_INVALID, 405) gets GitLab's older ``/v2/<repo>/tags/reference/<tag>``.
        Retried like any idempotent request (a 404 then means it is done).
        """
        repo, tag = validate_repository_name(repo), validate_tag(tag)
        scopes = repository_scopes("DELETE", repo)
        done = (200, 202, 204, 404)
        url = self._url(f"/v2/{repo}/manifests/{tag}")
        response = self._send("DELETE", url, scopes, idempotent=True)
        if response.status_code in (400, 405):
            url = self._url(f"/v2/{repo}/tags/reference/{tag}")
            response = self._send("DELETE", url, scopes, idempotent=True)
        if response.status_code not in done:
            raise error_from_response("DELETE", url, response)
        return response.status_code != 404

    def tag_digests(self, repo: str, tags: Sequence[str]) -> dict[str, Digest | None]:
        """Tag -> digest (None when the tag is absent): one HEAD per tag, run concurrently."""

        def resolve(tag: str) -> Digest | None:
            try:
                return self.manifest_digest(repo, tag)
            except RegistryNotFound:
                return None

        if len(tags) <= 1:
            return {t: resolve(t) for t in tags}
        with ThreadPoolExecutor(max_workers=CHECK_WORKERS) as pool:
            return dict(zip(tags, pool.map(resolve, tags), strict=True))


# --------------------------------------------------------------------------- helpers


def _reference(ref: str) -> str:
    """A tag or a digest, validated."""
    if isinstance(ref, str) and ref.startswith("sha256:"):
        return Digest.parse(ref, field="reference")
    return validate_tag(ref)


def _location(response: requests.Response) -> str:
    value = response.headers.get("Location")
    if not value:
        raise RegistryError(
            response.request.method or "POST", response.url, response.status_code, "no Location"
        )
    return urljoin(response.url, value)


def _with_query(url: str, params: dict[str, str]) -> str:
    """``url`` with ``params`` appended to its query (keeping ``_state``)."""
    separator = "&" if urlsplit(url).query else "?"
    return f"{url}{separator}{urlencode(params)}"


def _upload_retryable(exc: RegopsError) -> bool:
    """A failed upload step worth starting over: no answer, a retryable status, or a lost upload."""
    if isinstance(exc, TransportError):
        return True
    status = getattr(exc, "status", None)
    return status in RETRY_STATUSES or status == 404  # 404: the upload session was lost


def _json_body(method: str, url: str, response: Answer) -> dict[str, Any]:
    try:
        body = response.json()
    except ValueError:
        raise RegistryError(method, url, response.status_code, "answer is not JSON") from None
    if not isinstance(body, dict):
        raise RegistryError(method, url, response.status_code, "answer is not a JSON object")
    return body


def parse_errors(response: Answer) -> tuple[list[str], str]:
    """``(codes, detail)`` from a registry error body; plain text kept as the detail."""
    text = response.text if response.content else ""
    try:
        body = json.loads(text) if text else None
    except ValueError:
        body = None
    errors = body.get("errors") if isinstance(body, dict) else None
    if not isinstance(errors, list):
        return [], " ".join(text.split())[:DETAIL_LIMIT]
    codes, parts = [], []
    for entry in errors:
        if not isinstance(entry, dict):
            continue
        code = str(entry.get("code") or "UNKNOWN")
        codes.append(code)
        message = entry.get("message") or ""
        detail = entry.get("detail")
        part = f"{message}" if message else code.lower()
        if detail not in (None, "", {}, []):
            part += f" ({json.dumps(detail, sort_keys=True)[:DETAIL_LIMIT]})"
        parts.append(part)
    return codes, "; ".join(parts)[:DETAIL_LIMIT]


_STATUS_ERRORS: dict[int, type[RegistryError]] = {
    401: RegistryUnauthorized,
    403: RegistryDenied,
    404: RegistryNotFound,
    405: RegistryUnsupported,
}


def error_from_response(method: str, url: str, response: Answer) -> RegistryError:
    """The typed error for an error answer; never contains a token."""
    codes, detail = parse_errors(response)
    status = response.status_code
    cls = _STATUS_ERRORS.get(status, RegistryError)
    if status == 401:
        challenge = parse_challenge(response.headers.get("WWW-Authenticate"))
        if challenge.error == "insufficient_scope":
            cls = RegistryDenied
            detail = f"token lacks the scope needed ({_scopes(challenge)}); {detail}"
        elif challenge.error == "invalid_token":
            detail = (
                "the registry refused the token (invalid_token): check the signing key, "
                f"issuer, audience (service) and expiry; {detail}"
            )
        else:
            detail = f"no accepted credentials for {_scopes(challenge)}; {detail}"
    elif status == 405:
        detail = (
            f"{detail or 'method not allowed'} (the registry refuses this operation: "
            "read-only maintenance mode, or delete disabled)"
        )
    if not (200 <= status < 400) and "DENIED" in codes and cls is RegistryError:
        cls = RegistryDenied
    return cls(method, url, status, redact(detail.strip("; ")), codes)


def _scopes(challenge: Any) -> str:
    return " ".join(str(s) for s in challenge.scopes) or "this request"
