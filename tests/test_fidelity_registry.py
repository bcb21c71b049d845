"""Multi-arch tags in the real registry, read as GitLab's Tag reads them.

GitLab asks for a tag's manifest with ``Accept: ACCEPTED_TYPES`` (Docker v2 and
OCI image manifests only, lib/container_registry/base_client.rb): Distribution
serves a Docker manifest list's linux/amd64 child instead, and answers 404 for
an OCI index. Every expected value here is computed from the registry's own
files (tests/oracle.py: link files and blobs, standard library only).

The issue's scenario: a manifest list whose amd64 child was built 100 days ago
beside a single image built 10 days ago.
"""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import pytest

from regops.models import Project
from regops.ops import usage
from regops.registry.cache import ContentCache
from regops.registry.resolver import TagResolver
from regops.registry.storage import RegistryStorage
from regops.sandbox import Sandbox
from tests import oracle
from tests.fixtures_sandbox import _copy
from tests.images import build_image, build_index, push_image, push_index, random_layer

pytestmark = pytest.mark.registry

LIST_REPO = "apps/web/multiarch"  # a repository of project apps/web
INDEX_REPO = "platform/tools/ociindex"  # a repository of project platform/tools


def _days_ago(days: float) -> datetime:
    return datetime.now(timezone.utc) - timedelta(days=days)


@pytest.fixture(scope="module")
def multiarch(sandbox_template, tmp_path_factory):
    """A demo sandbox of this module's own with a Docker list, a single image and an
    OCI index pushed (read-only for the tests below)."""
    data = _copy(sandbox_template, tmp_path_factory.mktemp("multiarch") / "data")
    with Sandbox(data) as sandbox:
        client = sandbox.registry
        amd = build_image([random_layer(seed=901), random_layer(seed=902)], _days_ago(100))
        arm = build_image([random_layer(seed=903)], _days_ago(1), architecture="arm64")
        push_index(client, LIST_REPO, build_index([arm, amd]), tags=["multi"])  # amd64 second
        single = build_image([random_layer(seed=904)], _days_ago(10))
        push_image(client, LIST_REPO, single, tags=["single"])
        oci = [
            build_image([random_layer(seed=905)], _days_ago(200), oci=True),
            build_image([random_layer(seed=906)], _days_ago(200), oci=True, architecture="arm64"),
        ]
        push_index(client, INDEX_REPO, build_index(oci, oci=True), tags=["idx"])
        push_image(client, INDEX_REPO, build_image([random_layer(seed=907)], _days_ago(5)), ["v1"])
        sandbox.app.register_repositories()
        yield sandbox


def _built(root, repo: str, tag: str) -> datetime | None:
    """GitLab's created_at of a tag, from the files: its Accept-image's config ``created``."""
    seen = oracle.gitlab_tag(root, repo, tag)
    if seen is None or seen["created"] is None:
        return None
    return datetime.fromisoformat(seen["created"].replace("Z", "+00:00"))


def _gitlab_deletes(root, repo: str, keep_n: int | None, older_than: timedelta | None) -> set:
    """GitLab's third-party service over the files: sort by created_at (unknown = now),
    keep the newest keep_n, delete what is older than the cutoff (unknown: kept)."""
    now = datetime.now(timezone.utc)
    tags = {t: _built(root, repo, t) for t in oracle.tag_links(root, repo) if t != "latest"}
    ordered = sorted(tags, key=lambda t: tags[t] or now, reverse=True)
    left = ordered[keep_n:] if keep_n is not None else ordered
    if older_than is not None:
        left = [t for t in left if tags[t] is not None and tags[t] < now - older_than]
    return set(left)


def test_a_docker_list_reads_as_its_amd64_child(multiarch):
    root = multiarch.storage_path
    resolver = TagResolver(multiarch.registry, ContentCache())
    details = resolver.tag(LIST_REPO, "multi")
    expected = oracle.gitlab_tag(root, LIST_REPO, "multi")
    assert expected is not None
    assert str(details.digest) == expected["digest"] != oracle.tag_links(root, LIST_REPO)["multi"]
    assert details.revision == expected["revision"]
    assert details.total_size == expected["total_size"] > 0
    built = _built(root, LIST_REPO, "multi")
    assert built is not None and built < _days_ago(99)  # the amd64 child's date, not arm64's
    assert details.created_at == built.replace(microsecond=built.microsecond // 1000 * 1000)
    # regops's own extras read the raw list
    assert str(details.manifest_digest) == oracle.tag_links(root, LIST_REPO)["multi"]
    assert details.manifest.is_index and len(details.manifest.children) == 2


def test_an_oci_index_gets_nothing_as_in_gitlab(multiarch):
    root = multiarch.storage_path
    assert oracle.gitlab_tag(root, INDEX_REPO, "idx") is None
    details = TagResolver(multiarch.registry, ContentCache()).tag(INDEX_REPO, "idx")
    assert (details.digest, details.revision, details.created_at, details.total_size) == (
        None,
        None,
        None,
        None,
    )
    assert details.manifest is not None and details.manifest.is_index


@pytest.mark.parametrize(
    ("keep_n", "older_than"), [(1, None), (None, timedelta(days=90)), (1, timedelta(days=90))]
)
def test_plans_follow_gitlab_on_a_docker_list(multiarch, keep_n, older_than):
    root = multiarch.storage_path
    expected = _gitlab_deletes(root, LIST_REPO, keep_n, older_than)
    assert expected == {"multi"}  # the issue: GitLab deletes the list, keeps the single image
    conn = multiarch.connect()
    project = Project.find_by(full_path="apps/web", connection=conn)
    [repo] = [r for r in project.container_repositories if r.path == LIST_REPO]
    policy = {"name_regex_delete": ".*", "keep_n": keep_n, "older_than": None}
    if older_than is not None:
        policy["older_than"] = f"{older_than.days}d"
    plan = repo.plan_cleanup(policy)
    assert set(plan.names_to_delete) == expected
    assert plan.service == "third_party"


def test_plans_follow_gitlab_on_an_oci_index(multiarch):
    """The index has no date for GitLab: it sorts as now (keep_n keeps it) and is never
    older than anything; the dated image goes."""
    root = multiarch.storage_path
    expected = _gitlab_deletes(root, INDEX_REPO, 1, None)
    assert expected == {"v1"}
    conn = multiarch.connect()
    project = Project.find_by(full_path="platform/tools", connection=conn)
    [repo] = [r for r in project.container_repositories if r.path == INDEX_REPO]
    assert set(repo.plan_cleanup({"name_regex_delete": ".*", "keep_n": 1}).names_to_delete) == (
        expected
    )
    aged = repo.plan_cleanup({"name_regex_delete": ".*", "older_than": "1d"})
    assert set(aged.names_to_delete) == _gitlab_deletes(root, INDEX_REPO, None, timedelta(1))


def _files_all_platforms(root, repo: str) -> int:
    """Every platform's layers of every tag (an index's children each counted), from files."""
    total = 0
    for digest in oracle.tag_links(root, repo).values():
        manifest = oracle.document(root, digest)
        images = [oracle.document(root, c["digest"]) for c in manifest.get("manifests", [])]
        for image in images or [manifest]:
            total += sum(layer["size"] for layer in image.get("layers", []))
    return total


@pytest.mark.parametrize("storage_mode", [False, True])
def test_usage_sums_follow_gitlab_on_every_image_kind(multiarch, storage_mode):
    root = multiarch.storage_path
    conn = multiarch.connect()
    refs = usage.select_projects(conn.gitlab, projects=["apps/web", "platform/tools"])
    resolver = TagResolver(conn.registry, ContentCache())
    storage = RegistryStorage(root) if storage_mode else None
    report = usage.by_project(
        refs, gitlab=conn.gitlab, resolver=resolver, extended=True, storage=storage
    )
    assert report.ok
    for row in report.projects:
        repos, sizes = _project_tag_sizes(root, row.full_path)
        assert row.tag_sizes == sizes
        assert row.registry_size_bytes == sum(s or 0 for s in sizes.values())
        assert row.all_platforms_bytes == sum(_files_all_platforms(root, r) for r in repos)
    web = next(r for r in report.projects if r.full_path == "apps/web")
    list_size = oracle.gitlab_tag(root, LIST_REPO, "multi")["total_size"]
    assert web.tag_sizes[f"{LIST_REPO}:multi"] == list_size  # the amd64 child's layers
    tools = next(r for r in report.projects if r.full_path == "platform/tools")
    assert tools.tag_sizes[f"{INDEX_REPO}:idx"] is None
    assert tools.all_platforms_bytes > tools.registry_size_bytes  # what GitLab misses


def _project_tag_sizes(root, project: str) -> tuple[list[str], dict[str, int | None]]:
    """The project's repositories and GitLab's size of each of their tags, from the files."""
    repos = [r for r in oracle.repositories(root) if r.startswith(project + "/")]
    repos += [project] if project in oracle.repositories(root) else []
    sizes: dict[str, int | None] = {}
    for repo in repos:
        sizes.update(oracle.gitlab_tag_sizes(root, repo))
    return repos, sizes


def test_a_warm_http_scan_keeps_gitlabs_view_of_lists_and_indexes(multiarch, tmp_path):
    """A warm cache reads tags with HEAD (issue 14): a Docker list still counts its
    linux/amd64 child and an OCI index nothing, tag by tag as the registry's files say."""
    root = multiarch.storage_path
    reports = []
    for _ in ("cold", "warm"):
        conn = multiarch.connect()
        refs = usage.select_projects(conn.gitlab, projects=["apps/web", "platform/tools"])
        resolver = TagResolver(conn.registry, ContentCache(tmp_path))
        reports.append(usage.by_project(refs, gitlab=conn.gitlab, resolver=resolver))
    cold, warm = reports
    # Tag lists and one request per tag; cold also fetched the list's child by digest.
    assert warm.summary.registry_requests == warm.summary.repositories + warm.summary.tags
    assert cold.summary.registry_requests == warm.summary.registry_requests + 1
    for row in warm.projects:
        _repos, sizes = _project_tag_sizes(root, row.full_path)
        assert row.tag_sizes == sizes
    web = next(r for r in warm.projects if r.full_path == "apps/web")
    assert (
        web.tag_sizes[f"{LIST_REPO}:multi"]
        == oracle.gitlab_tag(root, LIST_REPO, "multi")["total_size"]
    )
    tools = next(r for r in warm.projects if r.full_path == "platform/tools")
    assert tools.tag_sizes[f"{INDEX_REPO}:idx"] is None
