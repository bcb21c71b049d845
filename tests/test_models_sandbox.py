"""The object model against the sandbox: the GitLab stand-in and the REAL registry.

Read-only tests use the shared ``sandbox`` (seeded demo, see regops.sandbox.seed);
tests that change policies use ``fresh_sandbox``.
"""

from __future__ import annotations

import json
from datetime import datetime

import pytest

from regops.config import Settings
from regops.connection import Connection
from regops.errors import DoesNotExist, PolicyError, ValidationError
from regops.models import ContainerRepository, ExpirationPolicy, Project, Tag, User
from regops.registry.manifest import INDEX_TYPES
from tests import oracle
from tests.leaks import assert_hidden

DEMO_PATHS = [
    "platform/base-images",
    "platform/tools",
    "apps/web",
    "apps/mobile/android",
    "apps/mobile/ios",
    "root/scratch",
]
DETAIL_FIELDS = (
    "name",
    "path",
    "location",
    "digest",
    "revision",
    "short_revision",
    "total_size",
    "created_at",
)


def gitlab_only(sandbox) -> Connection:
    """An admin connection without registry access (none looked up either): tag details
    come through GitLab."""
    return Connection(
        Settings(gitlab_url=sandbox.gitlab_url, token=sandbox.admin_token, registry_url="none")
    )


@pytest.fixture
def conn(sandbox_connection):
    return sandbox_connection


# -- queries ---------------------------------------------------------------------------


def test_all_first_last_count(conn):
    assert [p.full_path for p in Project.all(connection=conn)] == DEMO_PATHS
    assert [p.full_path for p in Project.last(3, connection=conn)] == DEMO_PATHS[3:]
    assert Project.first(connection=conn).full_path == DEMO_PATHS[0]
    assert [p.id for p in Project.first(2, connection=conn)] == [1, 2]
    assert Project.count(connection=conn) == len(DEMO_PATHS)
    assert Project.where(search="mobile", connection=conn).count() == 2


def test_where_is_server_side_and_chainable(conn):
    mobile = Project.where(search="mobile", connection=conn)
    assert [p.full_path for p in mobile] == ["apps/mobile/android", "apps/mobile/ios"]
    assert [p.full_path for p in mobile.where(id_after=4)] == ["apps/mobile/ios"]
    assert [p.full_path for p in mobile] == ["apps/mobile/android", "apps/mobile/ios"]
    with pytest.raises(ValidationError, match="supported: archived"):
        Project.where(creator="root", connection=conn)


def test_find_find_by_and_does_not_exist(conn):
    web = Project.find_by(full_path="apps/web", connection=conn)
    assert Project.find(web.id, connection=conn) == web
    with pytest.raises(Project.DoesNotExist, match="Project 4242"):
        Project.find(4242, connection=conn)
    # Rails' names: find raises, find_by and find_by_id give None
    with pytest.raises(DoesNotExist, match="no/such"):
        Project.find("no/such", connection=conn)
    assert Project.find_by(full_path="no/such", connection=conn) is None
    assert Project.find_by_id(4242, connection=conn) is None
    assert Project.find_by_id(web.id, connection=conn) == web
    assert User.find_by_id(9999, connection=conn) is None
    assert ContainerRepository.find_by_id(4242, connection=conn) is None
    assert web.full_name == "Apps / web"  # GitLab's Project#full_name
    assert web.attributes["path_with_namespace"] == "apps/web"
    repository = web.container_repositories[0]
    assert repository.attributes["path"] == repository.path  # every model has attributes
    with pytest.raises(ValidationError, match=r"Project.find\(id\)"):
        Project.get(3)  # the dict-style lookup of one object, not a finder
    assert web.get("id") == web.id
    with pytest.raises(ContainerRepository.DoesNotExist, match="4242"):
        ContainerRepository.find(4242, connection=conn)


def test_find_each_streams_everything(conn):
    assert [p.id for p in Project.find_each(batch_size=2, connection=conn)] == [1, 2, 3, 4, 5, 6]


# -- relations -------------------------------------------------------------------------


def test_project_relations(conn):
    web = Project.find_by(full_path="apps/web", connection=conn)
    repos = web.container_repositories
    assert sorted(r.path for r in repos) == ["apps/web", "apps/web/backend", "apps/web/frontend"]
    assert web.container_repositories is repos  # cached
    assert web.creator.id == web.creator_id and web.creator.username == "dev"
    policy = web.container_expiration_policy
    assert (policy.project_id, policy.enabled) == (web.id, False)
    assert policy.project is web
    repo = ContainerRepository.find(repos[0].id, connection=conn)
    assert repo.project == web and repo.path == repos[0].path
    web.reload()
    assert web.container_repositories is not repos


def test_tags_from_the_registry_with_gitlab_meanings(conn, sandbox):
    repo = next(
        r
        for r in Project.find_by(full_path="apps/web", connection=conn).container_repositories
        if r.path == "apps/web"
    )
    tags = repo.tags
    by_name = {t.name: t for t in tags}
    assert {"latest", "stable", "v1.0", "v1.5"} <= set(by_name)
    tag = by_name["v1.0"]
    assert tag.source == "registry" and tag.repository is repo
    assert tag.path == "apps/web:v1.0"
    assert tag.location == f"{sandbox.registry_host}/apps/web:v1.0"
    assert tag.total_size == sum(layer.size for layer in tag.layers)
    assert tag.revision == tag.manifest.config.digest.hex
    assert tag.short_revision == tag.revision[:9]
    assert tag.created_at.tzinfo is not None
    assert by_name["latest"].digest == by_name["v1.5"].digest  # the demo's shared digest


def test_index_tag_has_no_size_or_revision(conn):
    repo = next(
        r
        for r in Project.find_by(full_path="platform/tools", connection=conn).container_repositories
        if r.path == "platform/tools/ci"
    )
    tag = next(t for t in repo.tags if t.name == "1.0")
    assert tag.media_type in INDEX_TYPES
    assert (tag.total_size, tag.revision, tag.short_revision, tag.created_at) == (
        None,
        None,
        None,
        None,
    )


def test_registry_and_gitlab_paths_give_identical_values(sandbox, conn):
    plain = gitlab_only(sandbox)
    compared = 0
    for project in Project.all(connection=conn):
        for repo in project.container_repositories:
            from_registry = {t.name: t for t in repo.tags}
            other = ContainerRepository.find(repo.id, connection=plain)
            from_gitlab = {t.name: t for t in other.load_tags()}
            assert set(from_registry) == set(from_gitlab)
            for name, tag in from_registry.items():
                twin = from_gitlab[name]
                assert twin.source == "gitlab"
                values = [getattr(tag, f) for f in DETAIL_FIELDS]
                assert values == [getattr(twin, f) for f in DETAIL_FIELDS], name
                compared += 1
    assert compared >= 40


def test_tag_details_equal_the_registry_files(sandbox, conn):
    """Digest, revision, total_size and created_at of every tag, through the registry and
    through GitLab's endpoint, equal what the test reads from the storage files itself."""
    root = sandbox.storage_path
    plain = gitlab_only(sandbox)
    checked = 0
    for project in Project.all(connection=conn):
        for repo in project.container_repositories:
            links = oracle.tag_links(root, repo.path)
            other = ContainerRepository.find(repo.id, connection=plain)
            for tags in (repo.tags, other.load_tags()):
                assert {t.name for t in tags} == set(links)
                for tag in tags:
                    expected = oracle.gitlab_tag(root, repo.path, tag.name)
                    if expected is None:  # an OCI index: GitLab gets a 404, shows nothing
                        assert (tag.digest, tag.revision, tag.created_at, tag.total_size) == (
                            None,
                            None,
                            None,
                            None,
                        )
                        continue
                    assert tag.digest == expected["digest"]
                    assert tag.total_size == expected["total_size"]
                    assert tag.revision == expected["revision"]
                    built = datetime.fromisoformat(expected["created"].replace("Z", "+00:00"))
                    assert tag.created_at == built.replace(
                        microsecond=built.microsecond // 1000 * 1000
                    )  # GitLab's API gives milliseconds
                    checked += 1
    assert checked >= 80  # every image tag of the demo, twice


def test_tags_without_registry_are_listed_not_fetched(sandbox):
    plain = gitlab_only(sandbox)
    repo = Project.find_by(full_path="apps/web", connection=plain).container_repositories[0]
    tag = repo.tags[0]
    with pytest.raises(AttributeError, match="listed, not fetched"):
        _ = tag.digest
    tag.reload()
    assert tag.digest.startswith("sha256:") and tag.source == "gitlab"


def test_configs_are_cached_per_connection(sandbox):
    conn = sandbox.connect("admin", registry_auth="key")
    web = Project.find_by(full_path="apps/web", connection=conn)
    repo = next(r for r in web.container_repositories if r.path == "apps/web/frontend")
    first = repo.tags
    before = conn.registry.request_count
    again = ContainerRepository.find(repo.id, connection=conn).tags  # a new object, same conn
    spent = conn.registry.request_count - before
    assert [t.digest for t in again] == [t.digest for t in first]
    # one tag list + one manifest GET per tag; every config comes from the cache
    assert spent == 1 + len(first)
    conn.close()


def test_user_find_current_and_access_levels(conn, user_connection):
    root = User.current(connection=conn)
    assert (root.username, root.is_admin) == ("root", True)
    dev = User.find(User.current(connection=user_connection).id, connection=conn)
    assert dev.username == "dev"
    web = Project.find_by(full_path="apps/web", connection=conn)
    base = Project.find_by(full_path="platform/base-images", connection=conn)
    assert dev.access_level(web) == 30  # Developer of group apps
    assert dev.access_level(base) == 0
    with pytest.raises(User.DoesNotExist, match="9999"):
        User.find(9999, connection=conn)


def test_user_connection_sees_its_projects_with_realm_tokens(user_connection):
    paths = [p.full_path for p in Project.all(connection=user_connection)]
    assert "apps/web" in paths and "platform/base-images" not in paths
    repo = Project.find_by(full_path="apps/web", connection=user_connection)
    tags = repo.container_repositories[0].tags
    assert tags and all(t.digest for t in tags)


# -- policies --------------------------------------------------------------------------


def test_policy_where_and_with_repositories(conn):
    disabled = ExpirationPolicy.where(enabled=False, connection=conn)
    paths = {p.project.full_path for p in disabled}
    assert paths == {"apps/web", "apps/mobile/ios", "root/scratch"}
    assert [p.project.full_path for p in disabled.with_repositories()] == ["apps/web"]


def test_policy_update_validate_reread(fresh_sandbox):
    conn = fresh_sandbox.connect("admin", registry_auth="key")
    policy = ExpirationPolicy.find_by(project_id=3, connection=conn)
    policy.update(keep_n=25, older_than="14d", name_regex_keep="stable")
    again = ExpirationPolicy.find_by(project_id=3, connection=conn)
    assert (again.keep_n, again.older_than, again.name_regex_keep) == (25, "14d", "stable")
    assert again.attributes["keep_n"] == 25
    with pytest.raises(PolicyError, match="not valid RE2 syntax"):
        policy.update(enabled=True, name_regex="v(?=1)")
    assert ExpirationPolicy.find_by(project_id=3, connection=conn).enabled is False
    conn.close()


def test_update_all_on_disabled_policies_with_repositories(fresh_sandbox):
    conn = fresh_sandbox.connect("admin", registry_auth="key")
    updated = ExpirationPolicy.where(enabled=False, connection=conn).with_repositories()
    assert [p.project_id for p in updated.update_all(enabled=True)] == [3]
    enabled = {p.project_id for p in ExpirationPolicy.where(enabled=True, connection=conn)}
    assert 3 in enabled and 5 not in enabled and 6 not in enabled
    conn.close()


def test_policy_plan_covers_every_repository_and_deletes_nothing(conn):
    web = Project.find_by(full_path="apps/web", connection=conn)
    counts = {r.path: len(r.tags) for r in web.container_repositories}
    plan = web.container_expiration_policy.plan(web)
    assert {p.repository for p in plan} == set(counts)
    assert sum(p.original_size for p in plan) == sum(counts.values())
    assert all("latest" in p.kept for p in plan)
    again = {r.path: len(r.tags) for r in web.reload().container_repositories}
    assert again == counts  # planning deleted nothing


# -- display ---------------------------------------------------------------------------


def test_notebook_style_html_render(conn):
    from IPython.core.interactiveshell import InteractiveShell

    shell = InteractiveShell.instance()
    data, _metadata = shell.display_formatter.format(Project.last(3, connection=conn))
    html = data["text/html"]
    assert html.startswith("<table>") and "apps/mobile/android" in html
    assert "root/scratch" in data["text/plain"]
    repo = Project.find_by(full_path="apps/web", connection=conn).container_repositories[0]
    tags_html = shell.display_formatter.format(repo.tags)[0]["text/html"]
    assert "<th>total_size</th>" in tags_html and "latest" in tags_html


def test_reprs_hide_tokens(conn, sandbox):
    web = Project.find_by(full_path="apps/web", connection=conn)
    texts = [repr(web), repr(web.container_repositories), repr(web.container_repositories[0].tags)]
    texts += [
        repr(web.container_expiration_policy),
        repr(conn),
        repr(User.current(connection=conn)),
    ]
    assert_hidden(sandbox.admin_token, *texts)
    assert isinstance(web.container_repositories[0].tags[0], Tag)


@pytest.mark.slow
def test_real_notebook_shows_html_tables(sandbox, tmp_path):
    """A Jupyter kernel (nbclient) runs the console's idiom and gets an HTML table."""
    nbformat = pytest.importorskip("nbformat")
    nbclient = pytest.importorskip("nbclient")
    settings = {
        "gitlab_url": sandbox.gitlab_url,
        "registry_url": sandbox.registry_url,
        "registry_auth": "key",
        "registry_key_path": str(sandbox.key_path),
        "registry_username": "root",
    }
    setup = (
        "import regops.connection as rc\n"
        "from regops.models import Project\n"
        "from regops.secrets import Secret\n"
        f"conn = rc.connect(environ={{}}, home={str(tmp_path)!r}, system_root={str(tmp_path)!r},\n"
        f"    token=Secret({sandbox.admin_token.reveal()!r}), **{settings!r})\n"
    )
    notebook = nbformat.v4.new_notebook()
    notebook.cells = [
        nbformat.v4.new_code_cell(setup),
        nbformat.v4.new_code_cell("Project.last(3)"),
        nbformat.v4.new_code_cell("Project.find_by(full_path='apps/web').container_repositories"),
    ]
    nbclient.NotebookClient(notebook, timeout=60, kernel_name="python3").execute()
    projects = notebook.cells[1].outputs[0]["data"]["text/html"]
    assert projects.startswith("<table>") and projects.count("<tr>") == 4
    assert "apps/mobile/ios" in projects
    assert_hidden(sandbox.admin_token, projects)
    repos = notebook.cells[2].outputs[0]["data"]["text/html"]
    assert "apps/web/frontend" in repos and "<th>tags_count</th>" in repos


def test_plan_apply_as_a_user_follows_gitlabs_developer_rule(fresh_sandbox, tmp_path):
    """The Rails snippet's ``current_user: user``: a Reporter is refused before anything
    is deleted; a Developer's run deletes, and the audit log says for whom."""
    from regops.errors import CleanupPermissionError

    conn = fresh_sandbox.connect("admin", registry_auth="key")
    users = {u.username: u for u in (User.find(i, connection=conn) for i in (1, 2, 3))}
    base = Project.find("platform/base-images", connection=conn)
    web = Project.find("apps/web", connection=conn)
    override = {"name_regex": "main-.*", "keep_n": 5, "older_than": "14d"}
    before = oracle.tag_links(fresh_sandbox.storage_path, "apps/web/frontend")

    plan = web.container_expiration_policy.plan(web, overrides=override)
    assert plan.to_delete  # there is something to refuse
    with pytest.raises(CleanupPermissionError, match="at least Developer"):
        plan.apply(user=users["viewer"])  # no role in apps/web at all
    assert oracle.tag_links(fresh_sandbox.storage_path, "apps/web/frontend") == before

    base_plan = base.container_expiration_policy.plan(base, overrides={"keep_n": 1})
    with pytest.raises(CleanupPermissionError, match="access level 20"):
        base_plan.apply(user=users["viewer"])  # a Reporter of platform/base-images

    audit = tmp_path / "audit.jsonl"
    result = plan.apply(user=users["dev"], audit_path=audit)  # a Developer of group apps
    assert result.ok and result.deleted
    assert f"audit log {audit}" in result.summary()  # the result says where its log is
    records = [json.loads(line) for line in audit.read_text().splitlines()]
    assert all("for user 2 (dev)" in r["actor"] for r in records)
    after = oracle.tag_links(fresh_sandbox.storage_path, "apps/web/frontend")
    assert set(before) - set(after) == {o.tag for o in result.deleted}
