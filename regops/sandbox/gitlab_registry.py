"""GitLab's registry, for the sandbox: the real Distribution registry behind a front
that adds what GitLab's own registry (with its metadata database) has.

``Sandbox(registry_api="gitlab")`` puts this front between clients and the real
``docker-registry``; everything it does not handle itself is forwarded
unchanged (with the client's Host, so upload ``Location``s point back here).
What it adds, following the container-registry project's GitLab API spec and
GitLab's own client specs (spec/lib/container_registry/gitlab_api_client_spec.rb):

- ``GET /v2/`` answers with ``Gitlab-Container-Registry-Version``,
  ``Gitlab-Container-Registry-Features: tag_delete`` and
  ``Gitlab-Container-Registry-Database-Enabled: true``;
- ``DELETE /v2/<path>/manifests/<tag>`` deletes that tag only (GitLab's
  ``tag_delete``; done here by removing the tag's folder from the filesystem
  storage, which is what the registry's own untag does);
- ``GET /gitlab/v1/``: 200 with a valid token, 401 without (the compliance check);
- ``GET /gitlab/v1/repositories/<path>/tags/list/?n=&last=&name=``: rows
  ``name, digest, config_digest, media_type, size_bytes, created_at,
  updated_at, published_at`` sorted by name, ``Link: <...?last=&n=>; rel="next"``;
- ``GET /gitlab/v1/repositories/<path>/?size=self|self_with_descendants``;
- ``GET /gitlab/v1/repository-paths/<path>/repositories/list/``.

Push times come from what the front saw (``PUT`` of a manifest under a tag:
``created_at`` on the first push, ``updated_at`` when the tag moves), kept in
the sandbox state; a tag pushed around the front is dated by its link files.

Simplifications, each an assumption about GitLab's registry rather than a copy
of it: ``size_bytes`` of a tag is its manifest's length plus its config and
layers (an index: its manifest's length); a repository's size counts each
distinct layer of its tagged images once (index children included); tokens
are verified here with the sandbox's certificate, scopes checked by name.
"""

from __future__ import annotations

import json
import logging
import re
import shutil
import threading
from collections.abc import Callable, Iterator
from datetime import datetime, timezone
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import jwt
import requests
from cryptography import x509
from werkzeug.serving import WSGIRequestHandler
from werkzeug.wrappers import Request, Response

from regops.registry.layout import (
    BLOBS_ROOT,
    CURRENT_DIR,
    DATA_FILE,
    LINK_FILE,
    MANIFESTS_DIR,
    REPOSITORIES_ROOT,
    TAGS,
)
from regops.sandbox.state import SandboxState, iso
from regops.serving import ThreadedServer

log = logging.getLogger("regops.sandbox")

REGISTRY_VERSION = "v4.17.0-gitlab"  # what Gitlab-Container-Registry-Version says
MAX_N = 1000  # the API refuses n above this
DEFAULT_N = 100  # and lists this many without n
LEEWAY = 60  # seconds of clock skew a token may have, as the registry allows
FORWARD_TIMEOUT = 60.0  # seconds: the real registry is local
HOP_BY_HOP = frozenset(
    {"connection", "keep-alive", "transfer-encoding", "te", "trailer", "upgrade", "content-length"}
)
TAG_NAME = re.compile(r"[\w][\w.-]{0,127}")
DIGEST_REF = re.compile(r"sha256:[0-9a-f]{64}")
INDEX_TYPES = frozenset(
    {
        "application/vnd.docker.distribution.manifest.list.v2+json",
        "application/vnd.oci.image.index.v1+json",
    }
)
ROUTES: list[tuple[str, re.Pattern[str]]] = [
    ("root", re.compile(r"^/gitlab/v1/?$")),
    ("tags", re.compile(r"^/gitlab/v1/repositories/(?P<path>.+?)/tags/list/?$")),
    ("paths", re.compile(r"^/gitlab/v1/repository-paths/(?P<path>.+?)/repositories/list/?$")),
    ("repository", re.compile(r"^/gitlab/v1/repositories/(?P<path>.+?)/?$")),
    ("v2_base", re.compile(r"^/v2/?$")),
    ("manifest", re.compile(r"^/v2/(?P<path>.+)/manifests/(?P<ref>[^/]+)$")),
]


class GitLabRegistryFront:
    """The WSGI app: the GitLab API and tag delete here, the rest forwarded."""

    def __init__(
        self,
        upstream: str,
        storage: Path,
        state: SandboxState,
        cert_path: Path,
        *,
        realm: str,
        issuer: str,
        service: str,
    ) -> None:
        self.upstream = upstream.rstrip("/")
        self.storage = Path(storage)
        self.state = state
        self.realm = realm
        self.issuer = issuer
        self.service = service
        certificate = x509.load_pem_x509_certificate(Path(cert_path).read_bytes())
        self.public_key = certificate.public_key()
        self.session = requests.Session()
        self.lock = threading.Lock()

    def __call__(self, environ: dict[str, Any], start_response: Callable[..., Any]) -> Any:
        request = Request(environ)
        return self.dispatch(request)(environ, start_response)

    def dispatch(self, request: Request) -> Response:
        path = request.path
        for name, pattern in ROUTES:
            match = pattern.match(path)
            if match is None:
                continue
            handler = getattr(self, f"on_{name}")
            answer = handler(request, **match.groupdict())
            if answer is not None:
                return answer
            break
        return self.forward(request)

    # -- the GitLab API -------------------------------------------------------------

    def on_root(self, request: Request) -> Response | None:
        if request.method != "GET":
            return None
        if self.claims(request) is None:
            return self.challenge(None, "pull")
        return _json({})

    def on_tags(self, request: Request, path: str) -> Response | None:
        if request.method != "GET":
            return None
        denied = self.require(request, path, "pull")
        if denied is not None:
            return denied
        n, bad = _n_param(request)
        if bad is not None:
            return bad
        last = request.args.get("last")
        if last is not None and not TAG_NAME.fullmatch(last):
            return _invalid_value("last", "must match the tag name pattern")
        tags = self.tag_links(path)
        if tags is None:
            return _name_unknown(path)
        name = request.args.get("name") or ""
        names = sorted(t for t in tags if name in t and (last is None or t > last))
        page = names[:n]
        response = _json([self.tag_row(path, tag, tags[tag]) for tag in page])
        if len(names) > n:
            query = urlencode({"last": page[-1], "n": n})
            response.headers["Link"] = f'<{request.path}?{query}>; rel="next"'
        return response

    def on_repository(self, request: Request, path: str) -> Response | None:
        if request.method != "GET":
            return None
        size = request.args.get("size")
        if size not in (None, "self", "self_with_descendants"):
            return _invalid_value("size", "must be one of self, self_with_descendants")
        scope = f"{path}/*" if size == "self_with_descendants" else path
        denied = self.require(request, scope, "pull")
        if denied is not None:
            return denied
        exists = self.tag_links(path) is not None
        descendants = [r for r in self.repositories() if r == path or r.startswith(path + "/")]
        if not exists and (size != "self_with_descendants" or not self._namespace(path)):
            return _name_unknown(path)
        body: dict[str, Any] = {
            "name": path.rsplit("/", 1)[-1],
            "path": path,
            "created_at": self._repository_created(path) if exists else "",
        }
        if size is not None:
            counted = [path] if size == "self" else descendants
            body["size_bytes"] = self.layer_bytes(counted)
            body["size_precision"] = "default"
        return _json(body)

    def on_paths(self, request: Request, path: str) -> Response | None:
        if request.method != "GET":
            return None
        denied = self.require(request, f"{path}/*", "pull")
        if denied is not None:
            return denied
        n, bad = _n_param(request)
        if bad is not None:
            return bad
        if not self._namespace(path):
            return _name_unknown(path)
        last = request.args.get("last")
        found = sorted(
            r
            for r in self.repositories()
            if (r == path or r.startswith(path + "/"))
            and self.tag_links(r)
            and (last is None or r > last)
        )
        page = found[:n]
        rows = [
            {"name": r.rsplit("/", 1)[-1], "path": r, "created_at": self._repository_created(r)}
            for r in page
        ]
        response = _json(rows)
        if len(page) == n:  # the registry links whenever a page is full
            response.headers["Link"] = (
                f'<{request.path}?{urlencode({"last": page[-1], "n": n})}>; rel="next"'
            )
        return response

    # -- v2 additions ---------------------------------------------------------------

    def on_v2_base(self, request: Request) -> Response | None:
        response = self.forward(request)
        if response.status_code == 200:
            response.headers["Gitlab-Container-Registry-Version"] = REGISTRY_VERSION
            response.headers["Gitlab-Container-Registry-Features"] = "tag_delete"
            response.headers["Gitlab-Container-Registry-Database-Enabled"] = "true"
        return response

    def on_manifest(self, request: Request, path: str, ref: str) -> Response | None:
        if request.method == "DELETE" and not DIGEST_REF.fullmatch(ref):
            return self.delete_tag(request, path, ref)
        if request.method != "PUT" or DIGEST_REF.fullmatch(ref):
            return None
        response = self.forward(request)
        digest = response.headers.get("Docker-Content-Digest")
        if response.status_code == 201 and digest:
            self.state.record_push(path, ref, digest, datetime.now(timezone.utc))
        return response

    def delete_tag(self, request: Request, path: str, tag: str) -> Response:
        """GitLab's tag delete: the tag goes, the manifest and its other tags stay."""
        denied = self.require(request, path, "delete")
        if denied is not None:
            return denied
        folder = self.storage / REPOSITORIES_ROOT / path / TAGS / tag
        with self.lock:
            if not (folder / CURRENT_DIR / LINK_FILE).is_file():
                return _error(404, "MANIFEST_UNKNOWN", "manifest unknown", {"Tag": tag})
            shutil.rmtree(folder)
        self.state.record_tag_deleted(path, tag)
        return Response(status=202)

    # -- forwarding -------------------------------------------------------------------

    def forward(self, request: Request) -> Response:
        """The request as it came, to the real registry; its answer as it went."""
        headers = {k: v for k, v in request.headers.items() if k.lower() not in HOP_BY_HOP}
        headers["Accept-Encoding"] = "identity"  # bodies pass through as the registry sent them
        url = self.upstream + request.full_path.rstrip("?")
        upstream = self.session.request(
            request.method,
            url,
            headers=headers,
            data=request.get_data(),
            allow_redirects=False,
            timeout=FORWARD_TIMEOUT,
        )
        response = Response(upstream.content, status=upstream.status_code)
        response.headers.clear()
        for name, value in upstream.raw.headers.items():
            if name.lower() not in HOP_BY_HOP:
                response.headers.add(name, value)
        if request.method == "HEAD" and "Content-Length" in upstream.headers:
            response.headers["Content-Length"] = upstream.headers["Content-Length"]
        return response

    # -- auth -------------------------------------------------------------------------

    def claims(self, request: Request) -> dict[str, Any] | None:
        """The verified claims of the request's bearer token, or None."""
        header = request.headers.get("Authorization", "")
        if not header.lower().startswith("bearer "):
            return None
        try:
            return jwt.decode(
                header[7:].strip(),
                self.public_key,  # type: ignore[arg-type]
                algorithms=["RS256", "RS384", "RS512", "ES256"],
                audience=self.service,
                issuer=self.issuer,
                leeway=LEEWAY,
            )
        except jwt.PyJWTError:
            return None

    def require(self, request: Request, name: str, action: str) -> Response | None:
        """None when the token grants ``action`` on repository ``name``; else a 401."""
        claims = self.claims(request)
        if claims is not None:
            for access in claims.get("access") or []:
                granted = set(access.get("actions") or [])
                if (
                    access.get("type") == "repository"
                    and access.get("name") == name
                    and (action in granted or "*" in granted)
                ):
                    return None
        return self.challenge(name, action)

    def challenge(self, name: str | None, action: str) -> Response:
        scope = f',scope="repository:{name}:{action}"' if name else ""
        response = _error(401, "UNAUTHORIZED", "authentication required", None)
        response.headers["WWW-Authenticate"] = (
            f'Bearer realm="{self.realm}",service="{self.service}"{scope}'
        )
        return response

    # -- storage ----------------------------------------------------------------------

    def repositories(self) -> list[str]:
        base = self.storage / REPOSITORIES_ROOT
        if not base.is_dir():
            return []
        return sorted(
            str(p.parent.relative_to(base)) for p in base.rglob(MANIFESTS_DIR) if p.is_dir()
        )

    def _namespace(self, path: str) -> bool:
        top = path.split("/", 1)[0]
        return any(r == top or r.startswith(top + "/") for r in self.repositories())

    def tag_links(self, path: str) -> dict[str, str] | None:
        """Tag -> digest of ``path`` (None: no such repository)."""
        tags = self.storage / REPOSITORIES_ROOT / path / TAGS
        if not (self.storage / REPOSITORIES_ROOT / path / MANIFESTS_DIR).is_dir():
            return None
        found = {}
        for folder in tags.iterdir() if tags.is_dir() else ():
            link = folder / CURRENT_DIR / LINK_FILE
            if link.is_file():
                found[folder.name] = link.read_text().strip()
        return found

    def blob(self, digest: str) -> bytes:
        hexdigest = digest.split(":", 1)[1]
        return (
            self.storage / BLOBS_ROOT / "sha256" / hexdigest[:2] / hexdigest / DATA_FILE
        ).read_bytes()

    def tag_row(self, path: str, tag: str, digest: str) -> dict[str, Any]:
        raw = self.blob(digest)
        manifest = json.loads(raw)
        media_type = manifest.get("mediaType") or (
            "application/vnd.oci.image.index.v1+json"
            if "manifests" in manifest
            else "application/vnd.oci.image.manifest.v1+json"
        )
        config = manifest.get("config") or {}
        size = len(raw) + int(config.get("size", 0))
        size += sum(int(layer.get("size", 0)) for layer in manifest.get("layers") or [])
        created, updated = self.push_times(path, tag)
        row: dict[str, Any] = {
            "name": tag,
            "digest": digest,
            "media_type": media_type,
            "size_bytes": size,
            "created_at": created,
            "published_at": updated or created,
        }
        if config.get("digest") and media_type not in INDEX_TYPES:
            row["config_digest"] = config["digest"]
        if updated:
            row["updated_at"] = updated
        return row

    def push_times(self, path: str, tag: str) -> tuple[str | None, str | None]:
        """``(created_at, updated_at)`` of a tag: what the front saw, else its link files."""
        known = self.state.tag_push(path, tag)
        if known and "created_at" in known:
            return known["created_at"], known.get("updated_at")
        folder = self.storage / REPOSITORIES_ROOT / path / TAGS / tag
        links = list((folder / "index").rglob(LINK_FILE))
        first = min((p.stat().st_mtime for p in links), default=None)
        current = (folder / CURRENT_DIR / LINK_FILE).stat().st_mtime
        created = first if first is not None else current
        updated = current if current - created > 1 else None
        return _iso_time(created), _iso_time(updated) if updated else None

    def _repository_created(self, path: str) -> str:
        folder = self.storage / REPOSITORIES_ROOT / path / MANIFESTS_DIR
        return _iso_time(folder.stat().st_mtime)

    def layer_bytes(self, repositories: list[str]) -> int:
        """Each distinct layer of the tagged images of ``repositories`` counted once."""
        layers: dict[str, int] = {}
        for repository in repositories:
            for digest in (self.tag_links(repository) or {}).values():
                for manifest in self._images(digest):
                    for layer in manifest.get("layers") or []:
                        layers[layer["digest"]] = int(layer["size"])
        return sum(layers.values())

    def _images(self, digest: str) -> Iterator[dict[str, Any]]:
        manifest = json.loads(self.blob(digest))
        if "manifests" in manifest:
            for child in manifest["manifests"]:
                try:
                    yield from self._images(child["digest"])
                except FileNotFoundError:
                    continue
        else:
            yield manifest


class FrontServer(ThreadedServer):
    """The front on a loopback port, in a thread of this process; ``stop()`` also
    closes the front's session to the registry."""

    def __init__(
        self,
        app: GitLabRegistryFront,
        host: str,
        port: int = 0,
        handler: type[WSGIRequestHandler] | None = None,
    ) -> None:
        super().__init__(app, host, port, handler=handler, name="regops-sandbox-gitlab-registry")
        self.app = app

    def stop(self) -> None:
        super().stop()
        self.app.session.close()


def _iso_time(seconds: float) -> str:
    return iso(datetime.fromtimestamp(seconds, timezone.utc)) or ""


def _json(body: Any, status: int = 200) -> Response:
    return Response(json.dumps(body), status=status, mimetype="application/json")


def _error(status: int, code: str, message: str, detail: Any) -> Response:
    entry: dict[str, Any] = {"code": code, "message": message}
    if detail is not None:
        entry["detail"] = detail
    return _json({"errors": [entry]}, status)


def _name_unknown(path: str) -> Response:
    return _error(404, "NAME_UNKNOWN", "repository name not known to registry", {"name": path})


def _invalid_value(name: str, detail: str) -> Response:
    return _error(
        400,
        "INVALID_QUERY_PARAMETER_VALUE",
        "the value of a query parameter is invalid",
        {"parameter": name, "reason": detail},
    )


def _n_param(request: Request) -> tuple[int, Response | None]:
    raw = request.args.get("n")
    if raw is None:
        return DEFAULT_N, None
    if not raw.lstrip("-").isdigit():
        return 0, _error(
            400,
            "INVALID_QUERY_PARAMETER_TYPE",
            "the type of a query parameter is invalid",
            {"parameter": "n", "valid_types": ["int"]},
        )
    value = int(raw)
    if not 1 <= value <= MAX_N:
        return 0, _invalid_value("n", f"must be between 1 and {MAX_N}")
    return value, None
