"""regops.ops.usage, ``regops usage`` and the recipe, against the sandbox (real registry)."""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from regops import cli
from regops.commands import usage as usage_command
from regops.errors import ConfigError, ValidationError
from regops.models import usage_by_project
from regops.ops import usage
from regops.ops.usage import ProjectRef, ProjectUsage, UsageReport, UsageSummary
from regops.registry.cache import ContentCache
from regops.registry.keys import generate_key, private_key_pem
from regops.registry.manifest import parse_manifest
from regops.registry.resolver import TagResolver
from regops.registry.storage import RegistryStorage
from regops.sandbox import Sandbox
from tests import oracle

ROOT = Path(__file__).resolve().parent.parent
RECIPE = ROOT / "recipes" / "registry_usage_by_project.py"


def scan(refs, connection, cache=None, **options):
    """``usage.by_project`` through ``connection``'s clients, with its own cache."""
    resolver = TagResolver(connection.registry, cache if cache is not None else ContentCache())
    return usage.by_project(refs, gitlab=connection.gitlab, resolver=resolver, **options)


pytestmark = pytest.mark.registry


def _load_proxy_module():
    spec = importlib.util.spec_from_file_location("bench_proxy", ROOT / "bench" / "proxy.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


# --------------------------------------------------------------------------- fixtures


@pytest.fixture(scope="module")
def demo():
    """A sandbox seeded with the demo profile; tests here only read it."""
    with Sandbox() as sandbox:
        sandbox.seed("demo")
        yield sandbox


@pytest.fixture(scope="module")
def demo_refs(demo):
    return usage.select_projects(demo.connect().gitlab)


@pytest.fixture(scope="module")
def naive(demo, demo_refs):
    return usage.naive_by_project(demo.connect().gitlab, demo_refs)


@pytest.fixture(scope="module")
def broken():
    """A small bench sandbox with one tag's manifest blob deleted from storage.

    Yields (sandbox, sizes before the damage, broken project path, broken "repo:tag").
    """
    with Sandbox() as sandbox:
        sandbox.seed("bench", projects=3, repositories=2, tags=4, distinct_share=0.5)
        gitlab = sandbox.connect().gitlab
        before = usage.naive_by_project(gitlab, usage.select_projects(gitlab))
        storage = RegistryStorage(sandbox.storage_path)
        repo = sorted(storage.repositories())[0]
        tag = storage.tags(repo)[0]
        storage.blob_path(storage.tag_digest(repo, tag)).unlink()
        yield sandbox, before, repo.split("/repo-")[0], f"{repo}:{tag}"


def _env(sandbox: Sandbox, tmp_path: Path, **overrides: str) -> dict[str, str]:
    home = tmp_path / "home"
    home.mkdir(exist_ok=True)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("GITLAB_", "REGOPS_"))}
    env.update(sandbox.env())
    env.update(HOME=str(home), XDG_CONFIG_HOME=str(home / ".config"))
    env.update(XDG_CACHE_HOME=str(home / ".cache"), PYTHONPATH=str(ROOT))
    env.update(overrides)
    return env


def _expected_blobs(storage: RegistryStorage, row: ProjectUsage) -> dict[str, int]:
    """Independently from disk: every blob the project's tags pin, with its file size."""
    found: dict[str, int] = {}

    def walk(digest: str) -> None:
        if digest in found:
            return
        raw = storage.blob_path(digest).read_bytes()
        found[digest] = len(raw)
        manifest = parse_manifest(raw, digest=digest)
        pinned = [manifest.config] if manifest.config else []
        for descriptor in (*pinned, *manifest.layers):
            found[descriptor.digest] = storage.blob_size(descriptor.digest)
        for child in manifest.children:
            walk(child.digest)

    for key in row.tag_sizes:
        repo, tag = key.rsplit(":", 1)
        walk(storage.tag_digest(repo, tag))
    return found


# --------------------------------------------------------------------------- formats


def _report(extended: bool = False) -> UsageReport:
    rows = [
        ProjectUsage(7, 1, "apps/web", 1500, repositories=2, tags=5, unique_bytes=900),
        ProjectUsage(9, None, "root/scratch", 0, repositories=0),
        ProjectUsage(12, 3, "a/b", 42, repositories=1, tags=1, unique_bytes=42),
        ProjectUsage(15, 3, "a/broken", 0, repositories=1, errors=["a/broken: tag list: 500"]),
    ]
    summary = UsageSummary(projects=4, repositories=4, tags=6, registry_size_bytes=1542,
                           unique_bytes=930, incomplete_projects=1)  # fmt: skip
    return UsageReport(rows, summary, extended=extended)


def test_csv_is_byte_compatible_with_the_rails_recipe():
    # Rails: header, then `puts "%s,%s,%s,%s" % [id, creator&.id, size, full_path]`
    # for projects whose size is above 0, in the order the projects were listed.
    expected = (
        b"project_id,creator_id,registry_size_bytes,project path\n7,1,1500,apps/web\n12,3,42,a/b\n"
    )
    assert _report().to_csv().encode() == expected
    assert _report().render("csv").encode() == expected


def test_csv_missing_creator_is_empty_like_ruby_nil():
    row = ProjectUsage(3, None, "g/p", 10)
    report = UsageReport([row], UsageSummary(registry_size_bytes=10))
    assert report.to_csv().splitlines()[1] == "3,,10,g/p"


def test_extended_csv_has_incomplete_rows_and_a_total():
    lines = _report(extended=True).to_csv().splitlines()
    assert lines[0] == (
        "project_id,creator_id,registry_size_bytes,project path,"
        "repositories,tags,unique_bytes,all_platforms_bytes,gitlab_registry_size,incomplete"
    )
    assert lines[1:4] == ["7,1,1500,apps/web,2,5,900,0,,false", "12,3,42,a/b,1,1,42,0,,false",
                          "15,3,0,a/broken,1,0,0,0,,true"]  # fmt: skip
    assert lines[4] == f",,1542,{usage.TOTAL_LABEL},4,6,930,0,,true"


def test_json_and_table():
    document = json.loads(_report(extended=True).to_json())
    assert [p["project_id"] for p in document["projects"]] == [7, 12, 15]
    broken = document["projects"][2]
    assert broken["incomplete"] is True and broken["errors"] == ["a/broken: tag list: 500"]
    assert document["summary"]["unique_bytes"] == 930
    table = repr(_report())
    assert "apps/web" in table and "1,500" in table and "incomplete" in table
    assert "root/scratch" not in table
    with pytest.raises(ValidationError):
        _report().render("xml")


def test_write_is_atomic_and_leaves_only_the_report(tmp_path):
    target = tmp_path / "usage.csv"
    _report().write(target)
    assert target.read_text().startswith("project_id,")
    assert os.listdir(tmp_path) == ["usage.csv"]


def test_project_ref_from_dicts_models_and_errors():
    assert ProjectRef.of({"id": 4, "creator_id": 2, "path_with_namespace": "g/p"}) == ProjectRef(
        4, 2, "g/p"
    )

    class Model:
        id, creator_id, full_path = 5, None, "x/y"

    assert ProjectRef.of(Model()) == ProjectRef(5, None, "x/y")
    with pytest.raises(ValidationError):
        ProjectRef.of({"id": "5", "path_with_namespace": "g/p"})


def test_select_projects_options_do_not_combine():
    with pytest.raises(ValidationError, match="cannot be combined"):
        usage.select_projects(None, last=3, group="g")
    with pytest.raises(ValidationError):
        usage.select_projects(None, last=0)


# --------------------------------------------------------------------------- correctness


def test_sizes_equal_the_naive_baseline_tag_by_tag(demo, demo_refs, naive):
    report = scan(demo_refs, demo.connect())
    assert report.ok and naive.ok
    for fast, slow in zip(report.projects, naive.projects, strict=True):
        assert fast.project_id == slow.project_id
        assert fast.tag_sizes == slow.tag_sizes
        assert fast.registry_size_bytes == slow.registry_size_bytes
        assert (fast.repositories, fast.tags) == (slow.repositories, slow.tags)
    assert report.to_csv() == naive.to_csv()
    assert sum(1 for p in report.projects if p.registry_size_bytes) >= 3
    # the index tag (platform/tools/ci:1.0) has no size, exactly as GitLab says
    tools = next(p for p in report.projects if p.full_path == "platform/tools")
    assert tools.tag_sizes["platform/tools/ci:1.0"] is None


def _owner(repo: str, projects: list[str]) -> str:
    """The project a repository belongs to: the longest project path it starts with."""
    owners = [p for p in projects if repo == p or repo.startswith(p + "/")]
    return max(owners, key=len)


@pytest.mark.parametrize("storage_mode", [False, True])
def test_sizes_equal_what_the_registry_files_say(demo, demo_refs, storage_mode):
    """Each tag's size and each project's total, computed in the test from the registry's
    own link and blob files (tests/oracle.py, no regops code), equal the report's."""
    root = demo.storage_path
    storage = RegistryStorage(root) if storage_mode else None
    report = scan(demo_refs, demo.connect(), storage=storage)
    paths = [row.full_path for row in report.projects]
    expected: dict[str, dict[str, int | None]] = {path: {} for path in paths}
    for repo in oracle.repositories(root):
        expected[_owner(repo, paths)].update(oracle.tag_sizes(root, repo))
    assert report.ok
    for row in report.projects:
        assert row.tag_sizes == expected[row.full_path], row.full_path
        sizes = expected[row.full_path].values()
        assert row.registry_size_bytes == sum(s for s in sizes if s is not None)
    assert sum(1 for sizes in expected.values() if sizes) >= 4  # the demo has images
    assert None in expected["platform/tools"].values()  # the OCI index: no size, as GitLab


def test_http_mode_makes_one_request_per_tag_plus_tag_lists(demo, demo_refs):
    report = scan(demo_refs, demo.connect(), workers=4)
    s = report.summary
    assert s.registry_requests == s.repositories + s.tags
    assert s.gitlab_requests == len(demo_refs)  # one repositories call per project


def test_unique_bytes_equal_the_blob_files_on_disk(demo, demo_refs):
    storage = RegistryStorage(demo.storage_path)
    report = scan(demo_refs, demo.connect(), extended=True)
    everything: dict[str, int] = {}
    for row in report.projects:
        expected = _expected_blobs(storage, row)
        assert dict(row.blobs) == expected, row.full_path
        assert row.unique_bytes == sum(expected.values())
        everything.update(expected)
    assert report.summary.unique_bytes == sum(everything.values())
    # shared base layer and shared digests: pinned bytes are below the Rails figure
    web = next(p for p in report.projects if p.full_path == "apps/web")
    assert 0 < web.unique_bytes < web.registry_size_bytes
    # the multi-arch index pins its children's layers although GitLab gives it no size
    tools = next(p for p in report.projects if p.full_path == "platform/tools")
    index_digest = storage.tag_digest("platform/tools/ci", "1.0")
    index = parse_manifest(storage.blob_path(index_digest).read_bytes())
    for child in index.children:
        assert child.digest in tools.blobs
        child_manifest = parse_manifest(storage.blob_path(child.digest).read_bytes())
        assert all(layer.digest in tools.blobs for layer in child_manifest.layers)


def test_storage_mode_and_warm_cache(demo, demo_refs, naive, tmp_path):
    storage = RegistryStorage(demo.storage_path)
    cold = scan(demo_refs, demo.connect(), cache=ContentCache(tmp_path), storage=storage)
    warm = scan(demo_refs, demo.connect(), cache=ContentCache(tmp_path), storage=storage)
    distinct = {
        storage.tag_digest(*key.rsplit(":", 1)) for row in naive.projects for key in row.tag_sizes
    }
    assert cold.summary.registry_requests == cold.summary.repositories + len(distinct)
    assert warm.summary.registry_requests == warm.summary.repositories  # tag lists only
    assert warm.summary.cache_hits == warm.summary.tags
    for report in (cold, warm):
        assert [r.tag_sizes for r in report.projects] == [r.tag_sizes for r in naive.projects]


def test_console_use_with_models_and_default_connection(demo):
    from regops.connection import set_default_connection

    connection = demo.connect()
    set_default_connection(connection)
    try:
        from regops.models import Project

        report = usage_by_project(Project.last(4))
    finally:
        set_default_connection(None)
    assert [p.project_id for p in report.projects] == sorted(p.project_id for p in report.projects)
    assert "project path" in repr(report)
    assert isinstance(report.to_dicts(), list)


def test_last_group_and_project_selection(demo):
    gitlab = demo.connect().gitlab
    everything = usage.select_projects(gitlab)
    assert [p.id for p in everything] == sorted(p.id for p in everything)
    assert usage.select_projects(gitlab, last=2) == everything[-2:]
    group = usage.select_projects(gitlab, group="apps")
    assert {p.full_path for p in group} == {"apps/web", "apps/mobile/android", "apps/mobile/ios"}
    chosen = usage.select_projects(gitlab, projects=["apps/web", everything[0].id, "apps/web"])
    assert [p.full_path for p in chosen] == ["apps/web", everything[0].full_path]


def test_progress_bar_does_not_change_results(demo, demo_refs, naive):
    report = scan(demo_refs, demo.connect(), progress=True)
    assert report.to_csv() == naive.to_csv()


# --------------------------------------------------------------------------- the CLI


def test_cli_csv_to_file_is_silent_with_q_and_matches(demo, naive, tmp_path, monkeypatch, capsys):
    for key, value in _env(demo, tmp_path).items():
        monkeypatch.setenv(key, value)
    target = tmp_path / "out.csv"
    code = cli.main(["usage", "-q", "--output", str(target), "--cache-dir", str(tmp_path / "c")])
    captured = capsys.readouterr()
    assert code == 0
    assert captured.err == "" and captured.out == ""
    assert target.read_text() == naive.to_csv()
    # without -q: one summary line on stderr, the same file
    code = cli.main(["usage", "--output", str(target), "--cache-dir", str(tmp_path / "c")])
    captured = capsys.readouterr()
    assert code == 0 and captured.out == ""
    assert captured.err.count("\n") == 1 and "6 projects, 8 repositories, 50 tags" in captured.err
    assert target.read_text() == naive.to_csv()


def test_recipe_runs_from_cron(demo, naive, tmp_path):
    target = tmp_path / "registry.csv"
    result = subprocess.run(
        [sys.executable, str(RECIPE), "-q", "--output", str(target), "--tags-from", "storage"],
        env=_env(demo, tmp_path),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout == "" and result.stderr == ""
    assert target.read_text() == naive.to_csv()
    extended = subprocess.run(
        [sys.executable, str(RECIPE), "--extended", "--format", "json", "--last", "3"],
        env=_env(demo, tmp_path),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert extended.returncode == 0, extended.stderr
    document = json.loads(extended.stdout)
    assert document["summary"]["projects"] == 3
    assert all(p["incomplete"] is False for p in document["projects"])


# --------------------------------------------------------------------------- failures


@pytest.mark.parametrize("mode", ["http", "storage"])
def test_a_broken_repository_is_reported_never_undercounted(broken, mode):
    sandbox, before, broken_project, broken_tag = broken
    refs = [ProjectRef(p.project_id, p.creator_id, p.full_path) for p in before.projects]
    storage = RegistryStorage(sandbox.storage_path) if mode == "storage" else None
    report = scan(refs, sandbox.connect(), extended=True, storage=storage)
    assert not report.ok
    [bad] = report.incomplete
    assert bad.full_path == broken_project
    assert any(broken_tag in error for error in bad.errors)
    for row, reference in zip(report.projects, before.projects, strict=True):
        if row is not bad:  # the other projects are reported in full
            assert row.registry_size_bytes == reference.registry_size_bytes
            assert not row.incomplete
    csv_lines = report.to_csv().splitlines()
    assert any(line.startswith(f"{bad.project_id},") and line.endswith(",true")
               for line in csv_lines)  # fmt: skip
    assert json.loads(report.to_json())["summary"]["incomplete_projects"] == 1


def test_cli_exit_code_and_stderr_on_failure(broken, tmp_path):
    sandbox, _, broken_project, broken_tag = broken
    target = tmp_path / "out.csv"
    result = subprocess.run(
        [sys.executable, "-m", "regops", "usage", "--extended", "-o", str(target)],
        env=_env(sandbox, tmp_path),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 1
    assert "INCOMPLETE" in result.stderr and broken_tag in result.stderr
    assert "projects INCOMPLETE" in result.stderr  # the summary line
    assert result.stderr.endswith(
        f"regops usage: {target} not written: incomplete projects {broken_project}\n"
    )
    assert not target.exists()  # an incomplete report never lands in --output


KEPT_PROJECTS = ("platform/tools", "apps/web")  # platform/tools/ci:1.0 is an index


def _csv_from_raw_json(sandbox) -> bytes:
    """The Rails recipe's CSV for KEPT_PROJECTS, from GitLab's and the registry's raw JSON.

    registry_size_bytes: per tag, the sum of the manifest's ``layers[].size`` (GitLab's
    Tag#total_size: config excluded, nothing for an index); rows above 0 only.
    """
    connection = sandbox.connect()
    gitlab, registry = connection.gitlab, connection.registry
    lines = ["project_id,creator_id,registry_size_bytes,project path"]
    for path in KEPT_PROJECTS:
        project = gitlab.project(path)
        total = 0
        for repository in gitlab.project_repositories(project["id"]):
            for tag in registry.tags(repository["path"]):
                raw = json.loads(registry.get_manifest(repository["path"], tag).raw)
                total += sum(layer["size"] for layer in raw.get("layers", []))
        if total:
            lines.append(f"{project['id']},{project['creator_id'] or ''},{total},{path}")
    connection.close()
    return ("\n".join(lines) + "\n").encode()


def _usage_args(target: Path) -> list[str]:
    selection = [arg for path in KEPT_PROJECTS for arg in ("--project", path)]
    return ["-o", str(target), *selection, "--no-cache", "--no-progress"]


def _load_recipe():
    spec = importlib.util.spec_from_file_location("recipe_usage", RECIPE)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_an_incomplete_run_keeps_the_previous_report(fresh_sandbox, tmp_path, monkeypatch, capsys):
    for key, value in _env(fresh_sandbox, tmp_path).items():
        monkeypatch.setenv(key, value)
    expected = _csv_from_raw_json(fresh_sandbox)
    assert expected.count(b"\n") == 1 + len(KEPT_PROJECTS)  # both projects have a size
    target = tmp_path / "reports" / "registry.csv"
    target.parent.mkdir()
    assert cli.main(["usage", *_usage_args(target)]) == 0
    assert target.read_bytes() == expected
    capsys.readouterr()

    # One manifest of apps/web answers an error from now on: its blob is gone from disk.
    registry = fresh_sandbox.connect().registry
    repo, tag = "apps/web/frontend", "main-011"
    digest = registry.manifest_digest(repo, tag)
    data = fresh_sandbox.storage_path / "docker/registry/v2/blobs/sha256" / digest.hex[:2]
    (data / digest.hex / "data").unlink()

    for name, run in (
        ("regops usage", lambda: cli.main(["usage", *_usage_args(target)])),
        ("registry_usage_by_project", lambda: _load_recipe().main(_usage_args(target))),
    ):
        code = run()
        err = capsys.readouterr().err
        assert code == 1
        assert target.read_bytes() == expected  # not one byte changed
        assert f"INCOMPLETE apps/web: {repo}:{tag}: " in err
        assert err.endswith(
            f"{name}: {target} not replaced (the previous file is kept): "
            "incomplete projects apps/web\n"
        )
        assert [p.name for p in target.parent.iterdir()] == ["registry.csv"]  # no temp file


def test_a_failed_run_with_a_wrong_key_keeps_the_previous_report(
    demo, tmp_path, monkeypatch, capsys
):
    for key, value in _env(demo, tmp_path).items():
        monkeypatch.setenv(key, value)
    target = tmp_path / "registry.csv"
    assert cli.main(["usage", *_usage_args(target)]) == 0
    expected = _csv_from_raw_json(demo)
    assert target.read_bytes() == expected
    wrong = tmp_path / "other-registry.key"
    wrong.write_text(private_key_pem(generate_key("ec")).reveal())
    monkeypatch.setenv("REGOPS_REGISTRY_KEY", str(wrong))
    capsys.readouterr()
    code = cli.main(["usage", *_usage_args(target)])
    err = capsys.readouterr().err
    assert code == 1
    assert target.read_bytes() == expected  # not replaced by a header-only report
    assert err.endswith(
        f"regops usage: {target} not replaced (the previous file is kept): "
        f"incomplete projects {', '.join(KEPT_PROJECTS)}\n"
    )


def test_interrupt_leaves_no_partial_output(demo, tmp_path):
    proxy = _load_proxy_module()
    target = tmp_path / "out" / "usage.csv"
    target.parent.mkdir()
    target.write_text("previous report\n")
    with proxy.SpawnedProxies([demo.gitlab_url, demo.registry_url], delay=0.2) as slow:
        gitlab, registry = slow.proxies
        env = _env(demo, tmp_path, GITLAB_URL=gitlab.url, REGOPS_REGISTRY_URL=registry.url)
        process = subprocess.Popen(
            [sys.executable, str(RECIPE), "-o", str(target), "--workers", "1", "--no-cache"],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        deadline = time.monotonic() + 30
        while registry.requests < 2 and time.monotonic() < deadline:
            time.sleep(0.1)  # polling until the scan is under way
        under_way = registry.requests >= 2 and process.poll() is None
        if not under_way:  # leave no process behind before failing
            process.kill()
            process.communicate(timeout=60)
        assert under_way, "the scan never got under way: SIGINT would test nothing"
        process.send_signal(signal.SIGINT)
        _, err = process.communicate(timeout=60)
    assert process.returncode == 130, err
    assert "interrupted" in err
    assert target.read_text() == "previous report\n"
    assert os.listdir(target.parent) == ["usage.csv"]


def test_proxy_rewrites_realm_so_clients_only_see_proxies(demo, demo_refs, naive):
    proxy = _load_proxy_module()
    with proxy.ProxyGroup(delay=0.0) as group:
        gitlab = group.add(demo.gitlab_url)
        registry = group.add(demo.registry_url)
        connection = demo.connect(
            "user", registry_auth="realm", gitlab_url=gitlab.url, registry_url=registry.url
        )
        refs = [r for r in demo_refs if r.full_path.startswith("apps/")]
        report = scan(refs, connection)
        assert report.ok
        s = report.summary
        token_requests = gitlab.requests - s.gitlab_requests  # /jwt/auth, via the GitLab proxy
        assert token_requests >= 1
        # the registry client counts its token requests too: nothing bypassed the proxies
        assert registry.requests + token_requests == s.registry_requests
    expected = {p.project_id: p.registry_size_bytes for p in naive.projects}
    assert all(expected[p.project_id] == p.registry_size_bytes for p in report.projects)


def test_storage_option_checks_the_directory(tmp_path):
    class Settings:
        registry_storage_path = None

    class Connection:
        settings = Settings()

    parser = argparse.ArgumentParser()
    usage_command.add_arguments(parser)
    assert usage_command.storage_from(parser.parse_args([]), Connection()) is None
    with pytest.raises(ConfigError, match="needs the registry storage root"):
        usage_command.storage_from(parser.parse_args(["--tags-from", "storage"]), Connection())
    with pytest.raises(ConfigError, match="not a filesystem registry storage root"):
        usage_command.storage_from(
            parser.parse_args(["--registry-storage", str(tmp_path)]), Connection()
        )
    (tmp_path / "docker" / "registry" / "v2" / "repositories").mkdir(parents=True)
    storage = usage_command.storage_from(
        parser.parse_args(["--registry-storage", str(tmp_path)]), Connection()
    )
    assert storage.root == tmp_path


def test_recipe_refuses_to_overlap_a_running_one(demo, tmp_path, monkeypatch):
    from regops.locks import RunLock

    target = tmp_path / "registry.csv"
    state = str(tmp_path / "state")
    env = _env(demo, tmp_path, REGOPS_STATE_DIR=state)
    monkeypatch.setenv("REGOPS_STATE_DIR", state)
    with RunLock("registry_usage_by_project"):  # a run still going
        result = subprocess.run(
            [sys.executable, str(RECIPE), "--output", str(target)],
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
        )
    assert result.returncode == 3  # locked: nothing was done
    assert "another run holds the lock" in result.stderr
    assert not target.exists()


# --------------------------------------------------------------------------- speed (issue 14)


def test_a_warm_http_scan_learns_digests_with_head_and_fetches_no_body(
    demo, demo_refs, naive, tmp_path
):
    """With the manifests in the cache, each tag costs one HEAD (Docker-Content-Digest),
    no GET: the same number of requests as a cold run, the same sizes, tag by tag."""
    from tests.faultproxy import FaultGroup

    with FaultGroup() as group:
        registry = group.add(demo.registry_url, "registry")
        gitlab = group.add(demo.gitlab_url, "gitlab")
        connection = lambda: demo.connect(gitlab_url=gitlab.url, registry_url=registry.url)  # noqa: E731
        cold = scan(demo_refs, connection(), cache=ContentCache(tmp_path))
        cold_methods = sorted(
            s.method for s in group.log if s.proxy == "registry" and "/manifests/" in s.path
        )
        group.arm()  # a fresh log
        warm = scan(demo_refs, connection(), cache=ContentCache(tmp_path))
        warm_manifests = [s for s in group.log if s.proxy == "registry" and "/manifests/" in s.path]
    tags = sum(row.tags for row in naive.projects)
    assert cold_methods == ["GET"] * tags
    assert [s.method for s in warm_manifests] == ["HEAD"] * tags
    assert all(s.status == 200 for s in warm_manifests)
    assert warm.summary.registry_requests == cold.summary.registry_requests
    for report in (cold, warm):
        assert report.ok
        assert [r.tag_sizes for r in report.projects] == [r.tag_sizes for r in naive.projects]


def test_the_scan_keeps_a_window_not_a_task_per_tag():
    """Work in flight is bounded by the threads: four times the repositories (and tags)
    leave the scan's working memory (beyond the report it returns) about the same."""
    import tracemalloc

    def transient(repositories: int) -> int:
        gitlab, resolver = _StubGitLab(repositories), _StubResolver()
        refs = [ProjectRef(1, 1, "g/p")]
        tracemalloc.start()
        report = usage.by_project(refs, gitlab=gitlab, resolver=resolver, workers=8)  # type: ignore[arg-type]
        kept, peak = tracemalloc.get_traced_memory()
        tracemalloc.stop()
        assert report.ok and report.summary.tags == repositories * _StubResolver.TAGS
        return peak - kept

    small, large = transient(50), transient(200)
    assert large < small * 1.5 + 64_000, (small, large)


class _StubGitLab:
    """One project with ``repositories`` repositories; counts nothing over HTTP."""

    request_count = 0

    def __init__(self, repositories: int) -> None:
        self.paths = [f"g/p/r{i}" for i in range(repositories)]

    def project_repositories(self, project_id: int) -> list[dict]:
        return [{"path": path} for path in self.paths]


class _StubResolver:
    """Every tag of every repository points at one of five small images (no I/O)."""

    TAGS = 40
    gitlab_api = None
    head_hits = head_misses = memo_hits = 0

    def __init__(self) -> None:
        from tests.images import simple_image

        self.images = [parse_manifest(simple_image(i).manifest) for i in range(5)]
        self.cache = ContentCache()
        self.client = self

    # the registry client's part
    request_count = 0

    def tags(self, path: str) -> list[str]:
        return [f"t{i:03d}" for i in range(self.TAGS)]

    def limited(self, limit):
        import contextlib

        return contextlib.nullcontext(limit)

    # the resolver's part
    def tag(self, path, tag, **options):
        from regops.registry.resolver import GitLabTag, TagDetails

        image = self.images[int(tag[1:]) % 5]
        return TagDetails(path, tag, image, None, image, GitLabTag.of_image(image, None))
