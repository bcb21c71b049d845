"""The notebooks in notebooks/, run by a real Jupyter kernel (nbclient) against the sandbox.

Every notebook runs as committed (``EXECUTE = False``) against the shared ``sandbox``
and must change nothing; the two that change things also run with ``EXECUTE = True``
(injected papermill-style as a cell after the one tagged ``parameters``) against a
``fresh_sandbox``; notebook 04 reads a history recorded on a ``fresh_sandbox``.
Notebooks run from notebooks/ (as Jupyter runs them) and must leave
``git status --porcelain`` as it was. Outputs are checked against what the test
computes on its own connection; charts are PNG outputs whose plotted values (the
``regops:plotted`` chunk, read with tests.test_charts.png_text) must equal the tables
beside them. Cells are found by their tags, not their position.
"""

from __future__ import annotations

import base64
import json
import os
import re
import sqlite3
import subprocess
import sys
from collections.abc import Callable
from datetime import datetime, timedelta, timezone
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import pytest

nbformat = pytest.importorskip("nbformat")
nbclient = pytest.importorskip("nbclient")
kernelspec = pytest.importorskip("jupyter_client.kernelspec")
jupyter_manager = pytest.importorskip("jupyter_client.manager")

from regops.models import Project, usage_by_project  # noqa: E402
from regops.ops.audit import EVENT_INTENT, read_audit_log  # noqa: E402
from regops.ops.cleanup import plan_cleanup  # noqa: E402
from regops.sandbox.history import seed_history  # noqa: E402
from tests.leaks import assert_hidden  # noqa: E402
from tests.test_charts import png_text  # noqa: E402
from tests.test_history import expected_growth, plain_rows  # noqa: E402

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parent.parent
NOTEBOOKS = ROOT / "notebooks"
NOTEBOOK_NAMES = [
    "01_registry_usage.ipynb",
    "02_cleanup_preview.ipynb",
    "03_policies.ipynb",
    "04_growth_and_history.ipynb",
]
UNITS = {"B": 1, "KiB": 2**10, "MiB": 2**20, "GiB": 2**30}  # the charts' axis units
KERNEL_NAME = "regops-test-venv"  # our own kernelspec: "python3" could name another interpreter
CELL_TIMEOUT = 60  # seconds per cell; the demo sandbox answers in well under one
# Variables a developer's shell may hold that must not reach the kernel.
FOREIGN_ENV_PREFIXES = ("GITLAB_", "REGOPS_", "PYTHON_GITLAB_", "CI_")
# What 02_cleanup_preview.ipynb's parameters cell sets (checked against the file below).
CLEANUP_PROJECT = "apps/web"
CLEANUP_REPOSITORY = "apps/web/frontend"
# What 03_policies.ipynb proposes.
PROPOSED = {
    "enabled": True,
    "cadence": "7d",
    "keep_n": 5,
    "older_than": "30d",
    "name_regex": ".*",
    "name_regex_keep": "latest|stable|v.*",
}
POLICY_FIELDS = tuple(PROPOSED)


# -- running notebooks -----------------------------------------------------------------


@pytest.fixture(scope="session")
def kernel_dir(tmp_path_factory) -> Path:
    """A kernelspec directory whose one kernel is this interpreter (the venv's python)."""
    kernels = tmp_path_factory.mktemp("jupyter") / "kernels"
    spec = kernels / KERNEL_NAME
    spec.mkdir(parents=True)
    argv = [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"]
    document = {"argv": argv, "display_name": "regops tests", "language": "python"}
    (spec / "kernel.json").write_text(json.dumps(document))
    return kernels


def kernel_env(sandbox: Any, home: Path) -> dict[str, str]:
    """The environment a user gets after ``source <env file>``, in a private home."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(FOREIGN_ENV_PREFIXES)}
    env.update(sandbox.env())
    env.update(
        HOME=str(home),
        REGOPS_STATE_DIR=str(home / "state"),  # the audit log lands here
        XDG_CACHE_HOME=str(home / "cache"),
        XDG_CONFIG_HOME=str(home / "config"),
        TMPDIR=str(home / "tmp"),  # a notebook's temporary exports land here
    )
    (home / "tmp").mkdir(parents=True, exist_ok=True)
    return env


def notebook_client(notebook: Any, workdir: Path, kernels: Path) -> Any:
    """An nbclient runner on our kernelspec (``kernel_dir``), with ``workdir`` as its cwd."""
    manager = jupyter_manager.KernelManager(
        kernel_name=KERNEL_NAME,
        kernel_spec_manager=kernelspec.KernelSpecManager(kernel_dirs=[str(kernels)]),
    )
    resources = {"metadata": {"path": str(workdir)}}
    return nbclient.NotebookClient(notebook, km=manager, timeout=CELL_TIMEOUT, resources=resources)


def run_notebook(
    name: str,
    sandbox: Any,
    workdir: Path,
    kernels: Path,
    *,
    parameters: str | None = None,
    after_cell: Callable[[Any], None] | None = None,
) -> Any:
    """Execute notebook ``name`` cell by cell in ``workdir``; any cell error fails the test.

    ``parameters`` become a cell right after the one tagged ``parameters``
    (as papermill injects them). ``after_cell(cell)`` runs after each cell, so a
    test can look at the registry between two cells.
    """
    notebook = nbformat.read(NOTEBOOKS / name, as_version=4)
    for cell in code_cells(notebook):  # the committed outputs go; the kernel makes new ones
        cell.outputs, cell.execution_count = [], None
    if parameters is not None:
        index = notebook.cells.index(tagged(notebook, "parameters"))
        injected = nbformat.v4.new_code_cell(parameters)
        injected.metadata["tags"] = ["injected-parameters"]
        notebook.cells.insert(index + 1, injected)
    client = notebook_client(notebook, NOTEBOOKS, kernels)  # from notebooks/, as Jupyter does
    home = workdir / "home"
    home.mkdir(exist_ok=True)
    before = git_status()
    with client.setup_kernel(env=kernel_env(sandbox, home)):
        for index, cell in enumerate(notebook.cells):
            client.execute_cell(cell, index)  # raises CellExecutionError on an error
            if after_cell is not None:
                after_cell(cell)
    errors = [o for c in code_cells(notebook) for o in c.outputs if o.output_type == "error"]
    assert errors == []
    assert git_status() == before, "the notebook wrote into the repository"
    assert_hidden(sandbox.admin_token, json.dumps(notebook), what="the admin token")
    return notebook


def git_status() -> str:
    done = subprocess.run(["git", "status", "--porcelain", "--untracked-files=all"], cwd=ROOT,
                          capture_output=True, text=True, check=True)  # fmt: skip
    return done.stdout


def images(cell: Any) -> list[bytes]:
    """The PNG images a cell shows."""
    return [
        base64.b64decode(o["data"]["image/png"])
        for o in cell.outputs
        if "image/png" in o.get("data", {})
    ]


def plotted(cell: Any) -> dict[str, Any]:
    """What the cell's one chart draws, from its PNG's ``regops:plotted`` chunk."""
    (png,) = images(cell)
    return json.loads(png_text(png)["regops:plotted"])


def unit_of(label: str) -> int:
    """``bytes (MiB)`` -> 2**20 (the axis label says the unit)."""
    return UNITS[label.removeprefix("bytes (").removesuffix(")")]


def code_cells(notebook: Any) -> list[Any]:
    return [cell for cell in notebook.cells if cell.cell_type == "code"]


def tagged(notebook: Any, tag: str) -> Any:
    matches = [cell for cell in notebook.cells if tag in cell.metadata.get("tags", [])]
    assert len(matches) == 1, f"expected one cell tagged {tag!r}, found {len(matches)}"
    return matches[0]


def has_tag(cell: Any, tag: str) -> bool:
    return tag in cell.metadata.get("tags", [])


def html_of(cell: Any) -> str:
    return "".join(o.get("data", {}).get("text/html", "") for o in cell.outputs)


def text_of(cell: Any) -> str:
    """Printed text plus plain-text results, in output order."""
    parts = []
    for output in cell.outputs:
        if output.output_type == "stream":
            parts.append(output.text)
        elif "text/plain" in output.get("data", {}):
            parts.append(output.data["text/plain"])
    return "".join(parts)


class _Tables(HTMLParser):
    """Every <table> in a fragment as rows of cell texts (header row included)."""

    def __init__(self) -> None:
        super().__init__()
        self.tables: list[list[list[str]]] = []
        self.cell: list[str] | None = None

    def handle_starttag(self, tag: str, attrs: Any) -> None:
        if tag == "table":
            self.tables.append([])
        elif tag == "tr":
            self.tables[-1].append([])
        elif tag in ("td", "th"):
            self.cell = []

    def handle_endtag(self, tag: str) -> None:
        if tag in ("td", "th") and self.cell is not None:
            self.tables[-1][-1].append("".join(self.cell).strip())
            self.cell = None

    def handle_data(self, data: str) -> None:
        if self.cell is not None:
            self.cell.append(data)


def html_tables(html: str) -> list[list[dict[str, str]]]:
    """Each table as a list of {header: text} rows."""
    parser = _Tables()
    parser.feed(html)
    return [[dict(zip(t[0], row, strict=True)) for row in t[1:]] for t in parser.tables if t]


def one_table(cell: Any) -> list[dict[str, str]]:
    tables = html_tables(html_of(cell))
    assert len(tables) == 1, f"expected one HTML table, found {len(tables)}"
    return tables[0]


def parameter(notebook_name: str, name: str) -> Any:
    """A value the committed parameters cell assigns (so the test follows the file)."""
    notebook = nbformat.read(NOTEBOOKS / notebook_name, as_version=4)
    scope: dict[str, Any] = {}
    exec(tagged(notebook, "parameters").source, scope)  # the repository's own file
    return scope[name]


# -- independent views of the sandbox ----------------------------------------------------


def registry_state(connection: Any) -> dict[str, dict[str, str]]:
    """repository -> {tag: digest}, straight from the registry."""
    registry = connection.registry
    return {
        repo: {tag: str(registry.manifest_digest(repo, tag)) for tag in registry.tags(repo)}
        for repo in registry.catalog()
    }


def policies(connection: Any) -> dict[str, dict[str, Any]]:
    """project path -> its policy's attributes, as GitLab returns them."""
    gitlab = connection.gitlab
    result = {}
    for listed in gitlab.projects():
        project = gitlab.project(listed["id"])
        policy = project["container_expiration_policy"]
        result[project["path_with_namespace"]] = {f: policy.get(f) for f in POLICY_FIELDS}
    return result


def expected_trial_deletes(connection: Any, override: dict[str, Any]) -> set[str]:
    """The one-off policy's delete list, worked out by hand from tag names and dates."""
    assert override == {"name_regex_delete": "main-.*", "keep_n": 5, "older_than": "14d"}
    project = Project.find_by(full_path=CLEANUP_PROJECT, connection=connection)
    repository = next(r for r in project.container_repositories if r.path == CLEANUP_REPOSITORY)
    tags = repository.load_tags(details=True)
    matched = [t for t in tags if re.fullmatch(r"main-.*", t.name)]
    newest_first = sorted(matched, key=lambda t: t.created_at, reverse=True)
    cutoff = datetime.now(timezone.utc) - timedelta(days=14)
    return {t.name for t in newest_first[5:] if t.created_at < cutoff}


@pytest.fixture
def connection_to():
    opened = []

    def make(sandbox: Any) -> Any:
        opened.append(sandbox.connect("admin", registry_auth="key"))
        return opened[-1]

    yield make
    for connection in opened:
        connection.close()


# -- the kernel ------------------------------------------------------------------------


def test_kernel_is_this_python(sandbox, tmp_path, kernel_dir):
    """The kernel the notebooks run in is the venv's interpreter, seeing the sandbox env."""
    notebook = nbformat.v4.new_notebook()
    notebook.cells = [
        nbformat.v4.new_code_cell("import os, sys; print(sys.executable); print(os.getcwd())"),
        nbformat.v4.new_code_cell("import regops; regops.connect()"),
    ]
    client = notebook_client(notebook, tmp_path, kernel_dir)
    client.execute(env=kernel_env(sandbox, tmp_path))
    executable, cwd = text_of(notebook.cells[0]).splitlines()
    assert (executable, Path(cwd)) == (sys.executable, tmp_path)
    assert sandbox.gitlab_url in text_of(notebook.cells[1])


def test_committed_notebooks_show_their_outputs_and_only_look():
    """Committed with outputs (charts included) from the demo sandbox, no error, no token;
    the parameters cell tagged and EXECUTE off: opening one changes nothing."""
    names = sorted(p.name for p in NOTEBOOKS.glob("*.ipynb"))
    assert names == NOTEBOOK_NAMES
    for name in names:
        notebook = nbformat.read(NOTEBOOKS / name, as_version=4)
        nbformat.validate(notebook)
        cells = [c for c in code_cells(notebook) if not has_tag(c, "parameters")]
        assert all(c.outputs and c.execution_count for c in cells), name
        assert not [o for c in cells for o in c.outputs if o.output_type == "error"], name
        tagged(notebook, "parameters")
        assert any(images(c) for c in cells), f"{name} shows no chart"
        assert "glpat-" not in json.dumps(notebook), f"{name} holds a token"
        assert notebook.cells[0].cell_type == "markdown"
        assert "regops sandbox --seed demo" in notebook.cells[1].source
    assert parameter("02_cleanup_preview.ipynb", "EXECUTE") is False
    assert parameter("03_policies.ipynb", "EXECUTE") is False


# -- 01 registry usage -----------------------------------------------------------------


def test_registry_usage_notebook(sandbox, tmp_path, kernel_dir, connection_to):
    connection = connection_to(sandbox)
    notebook = run_notebook("01_registry_usage.ipynb", sandbox, tmp_path, kernel_dir)
    last = parameter("01_registry_usage.ipynb", "LAST")
    projects = Project.last(last, connection=connection)
    expected = usage_by_project(projects, connection=connection)
    expected_extended = usage_by_project(projects, connection=connection, extended=True)
    assert expected.ok and len(expected) >= 3

    rows = one_table(tagged(notebook, "usage"))
    assert "apps/web" in [row["project path"] for row in rows]
    assert [
        (
            int(r["project_id"]),
            int(r["creator_id"]),
            int(r["registry_size_bytes"]),
            r["project path"],
        )
        for r in rows
    ] == [row.csv_row() for row in expected]

    extended_rows = one_table(tagged(notebook, "extended"))
    by_path = {row["project path"]: row for row in extended_rows}
    for row in expected_extended:
        shown = by_path[row.full_path]
        assert int(shown["unique_bytes"]) == row.unique_bytes
        assert int(shown["registry_size_bytes"]) == row.registry_size_bytes
        assert (int(shown["repositories"]), int(shown["tags"])) == (row.repositories, row.tags)
    # The HTML table keeps its total line (summed here from the table's own rows).
    table_total = sum(int(row["registry_size_bytes"]) for row in extended_rows)
    assert f"total: {table_total:,} registry_size_bytes" in html_of(tagged(notebook, "extended"))
    # Shared layers show: the recipe counts more than the project pins.
    assert any(row.registry_size_bytes > row.unique_bytes for row in expected_extended)

    top = one_table(tagged(notebook, "top"))
    by_unique = sorted(expected_extended, key=lambda row: row.unique_bytes, reverse=True)
    assert [row["project path"] for row in top] == [row.full_path for row in by_unique]

    # The export went to a new temporary folder (the kernel's TMPDIR), not next to the notebook.
    csv_path, extended_path = map(Path, text_of(tagged(notebook, "exported")).split())
    assert csv_path.parent == extended_path.parent
    assert csv_path.parent.parent == tmp_path / "home" / "tmp"
    csv_text = csv_path.read_text()
    assert csv_text == expected.to_csv()
    assert csv_text.startswith("project_id,creator_id,registry_size_bytes,project path\n")
    assert extended_path.read_text() == expected_extended.to_csv()
    assert text_of(tagged(notebook, "csv")) == csv_text

    # The chart: the top projects' bars equal the extended table, largest first.
    (axes,) = plotted(tagged(notebook, "chart"))["axes"]
    unit = unit_of(axes["xlabel"])
    bars = {series.split(" ")[0]: {name: round(value * unit) for name, value in values}
            for series, values in axes["bars"].items()}  # fmt: skip
    top_n = parameter("01_registry_usage.ipynb", "TOP")
    largest = sorted(extended_rows, key=lambda r: -int(r["registry_size_bytes"]))[:top_n]
    assert bars["registry_size_bytes"] == {
        r["project path"]: int(r["registry_size_bytes"]) for r in largest
    }
    assert bars["unique_bytes"] == {r["project path"]: int(r["unique_bytes"]) for r in largest}
    assert list(bars["registry_size_bytes"]) == [r["project path"] for r in largest]


# -- 02 cleanup preview ----------------------------------------------------------------


def test_cleanup_notebook_previews_only(sandbox, tmp_path, kernel_dir, connection_to):
    connection = connection_to(sandbox)
    assert parameter("02_cleanup_preview.ipynb", "PROJECT") == CLEANUP_PROJECT
    assert parameter("02_cleanup_preview.ipynb", "REPOSITORY") == CLEANUP_REPOSITORY
    override = parameter("02_cleanup_preview.ipynb", "OVERRIDE")
    before = registry_state(connection)

    notebook = run_notebook("02_cleanup_preview.ipynb", sandbox, tmp_path, kernel_dir)

    assert registry_state(connection) == before
    assert "EXECUTE is False: nothing deleted" in text_of(tagged(notebook, "apply"))
    assert "nothing applied" in text_of(tagged(notebook, "restore"))
    assert not (tmp_path / "home" / "state").exists()  # no audit log: nothing was applied

    # The project's own policy: every tag of every repository, decided as plan_cleanup does.
    project = Project.find_by(full_path=CLEANUP_PROJECT, connection=connection)
    policy = project.container_expiration_policy
    expected = {}
    for repository in project.container_repositories:
        plan = plan_cleanup(repository.load_tags(details=True), policy)
        expected.update({(repository.path, d.name): (d.decision, d.reason) for d in plan.decisions})
    shown = {
        (row["repository"], row["tag"]): (row["decision"], row["reason"])
        for table in html_tables(html_of(tagged(notebook, "plan")))
        for row in table
    }
    assert shown == expected
    assert f"'enabled': {policy.enabled}" in text_of(tagged(notebook, "policy"))
    # The chart: one panel per repository, its kept and deleted bars adding up to the table.
    panels = plotted(tagged(notebook, "plan-chart"))["axes"]
    assert len(panels) == len(project.container_repositories)
    for panel in panels:
        repository = panel["title"].split(":")[0]
        counts = {name: sum(v for _, v in values) for name, values in panel["bars"].items()}
        decided = [d for (r, _), (d, _) in expected.items() if r == repository]
        assert counts == {"keep": decided.count("keep"), "delete": decided.count("delete")}
        assert f"older_than {policy.older_than}" in panel["lines"]

    # The one-off policy: the delete list worked out by hand, the rest kept.
    trial_rows = one_table(tagged(notebook, "trial"))
    deletes = {row["tag"] for row in trial_rows if row["decision"] == "delete"}
    assert deletes == expected_trial_deletes(connection, override)
    assert len(deletes) >= 3
    assert {row["tag"] for row in trial_rows} == set(before[CLEANUP_REPOSITORY])
    freed = re.search(r"freeing up to (\d+) bytes", text_of(tagged(notebook, "trial")))
    assert freed and int(freed.group(1)) > 0
    (trial_panel,) = plotted(tagged(notebook, "trial-chart"))["axes"]
    assert sum(v for _, v in trial_panel["bars"]["delete"]) == len(deletes)
    assert sum(v for _, v in trial_panel["bars"]["keep"]) == len(trial_rows) - len(deletes)
    assert trial_panel["lines"]["older_than 14d"][0][0] == 14.0


def test_cleanup_notebook_deletes_then_restores(fresh_sandbox, tmp_path, kernel_dir, connection_to):
    connection = connection_to(fresh_sandbox)
    override = parameter("02_cleanup_preview.ipynb", "OVERRIDE")
    planned = expected_trial_deletes(connection, override)
    before = registry_state(connection)
    seen: dict[str, Any] = {}

    def check_registry(cell: Any) -> None:
        if has_tag(cell, "apply"):
            seen["after_apply"] = registry_state(connection)
        elif has_tag(cell, "restore"):
            seen["after_restore"] = registry_state(connection)

    notebook = run_notebook(
        "02_cleanup_preview.ipynb",
        fresh_sandbox,
        tmp_path,
        kernel_dir,
        parameters="EXECUTE = True",
        after_cell=check_registry,
    )

    # After apply: exactly the planned tags are gone; every other tag of every repository stays.
    after_apply = seen["after_apply"]
    survivors = {t: d for t, d in before[CLEANUP_REPOSITORY].items() if t not in planned}
    assert after_apply[CLEANUP_REPOSITORY] == survivors
    assert {r: t for r, t in after_apply.items() if r != CLEANUP_REPOSITORY} == {
        r: t for r, t in before.items() if r != CLEANUP_REPOSITORY
    }
    assert f"deleted {len(planned)}, already gone 0" in html_of(tagged(notebook, "apply"))

    # The audit log holds an intent (with the manifest) for each deleted tag.
    logs = sorted((tmp_path / "home" / "state").rglob("*.jsonl"))
    assert len(logs) == 1 and str(logs[0]) in text_of(tagged(notebook, "apply"))
    intents = [r for r in read_audit_log(logs) if r.event == EVENT_INTENT]
    assert {(r.repository, r.tag) for r in intents} == {(CLEANUP_REPOSITORY, t) for t in planned}

    # After restore: every tag back at its old digest.
    assert seen["after_restore"] == before
    restore_rows = one_table(tagged(notebook, "restore"))
    assert {(row["tag"], row["status"]) for row in restore_rows} == {
        (tag, "restored") for tag in planned
    }
    shown_tags = text_of(tagged(notebook, "tags-now"))
    assert all(f"'{tag}'" in shown_tags for tag in before[CLEANUP_REPOSITORY])


# -- 03 policies -----------------------------------------------------------------------


def disabled_with_images(connection: Any) -> list[str]:
    """Paths of projects whose policy is disabled and that have a container repository."""
    gitlab = connection.gitlab
    return [
        path
        for path, policy in policies(connection).items()
        if not policy["enabled"] and list(gitlab.project_repositories(gitlab.project(path)["id"]))
    ]


def test_policies_notebook_looks_and_changes_nothing(sandbox, tmp_path, kernel_dir, connection_to):
    connection = connection_to(sandbox)
    before = policies(connection)
    expected = disabled_with_images(connection)
    assert expected == ["apps/web"]
    # Projects without images keep their disabled policy out of the list.
    assert [p for p, policy in before.items() if not policy["enabled"]] != expected

    notebook = run_notebook("03_policies.ipynb", sandbox, tmp_path, kernel_dir)

    assert policies(connection) == before
    disabled = tagged(notebook, "disabled")
    assert repr(expected) in text_of(disabled)
    shown_ids = {row["project_id"] for row in one_table(disabled)}
    ids = {str(Project.find_by(full_path=p, connection=connection).id) for p in expected}
    assert shown_ids == ids

    broken = text_of(tagged(notebook, "broken"))
    invalid = [p for p, policy in before.items() if policy["enabled"] and "[0-9+" in str(policy)]
    assert invalid == ["apps/mobile/android"]
    assert "(apps/mobile/android): name_regex: not valid RE2 syntax: missing ]" in broken
    assert broken.count("\n") == 1  # only the broken one

    validate = text_of(tagged(notebook, "validate"))
    assert "refused: name_regex_keep: not valid RE2 syntax: missing ]: [0-9+" in validate
    assert "accepted:" in validate and "'name_regex_keep': 'latest|stable|v.*'" in validate

    preview = text_of(tagged(notebook, "preview")).splitlines()
    web = Project.find_by(full_path="apps/web", connection=connection)
    assert preview == [
        plan_cleanup(
            repository.load_tags(details=True), PROPOSED, repository=repository.path
        ).summary()
        for repository in web.container_repositories
    ]
    assert "EXECUTE is False: nothing changed" in text_of(tagged(notebook, "apply"))
    assert text_of(tagged(notebook, "remaining")) == str(len(expected))

    # The proposed policy's plan as a chart: its bars add up to the preview's summary lines.
    deleted = sum(int(re.search(r"(\d+) to delete", line).group(1)) for line in preview)
    panels = plotted(tagged(notebook, "preview-chart"))["axes"]
    assert sum(v for panel in panels for _, v in panel["bars"]["delete"]) == deleted
    # The forecast: every enabled policy, one row each; the invalid one flagged.
    rows = one_table(tagged(notebook, "forecast"))
    enabled = sorted(p for p, policy in before.items() if policy["enabled"])
    assert sorted(row["project"] for row in rows) == enabled
    flagged = {row["project"] for row in rows if row["status"].startswith("invalid regex")}
    assert flagged == {"apps/mobile/android"}
    chart_axes = plotted(tagged(notebook, "forecast-chart"))["axes"]
    due_deletes = {row["project"]: int(row["delete"]) for row in rows if row["due"] == "yes"}
    drawn = {name: value for axes in chart_axes
             for name, value in axes["bars"].get("tags to delete", [])}  # fmt: skip
    assert drawn == {p: n for p, n in due_deletes.items() if n}


def test_policies_notebook_enables_them(fresh_sandbox, tmp_path, kernel_dir, connection_to):
    connection = connection_to(fresh_sandbox)
    assert parameter("03_policies.ipynb", "PROPOSED") == PROPOSED
    before = policies(connection)
    targets = disabled_with_images(connection)

    notebook = run_notebook(
        "03_policies.ipynb", fresh_sandbox, tmp_path, kernel_dir, parameters="EXECUTE = True"
    )

    after = policies(connection)
    for path in targets:
        assert after[path] == PROPOSED
    # Every other policy, including disabled ones of projects without images, is untouched.
    assert {p: v for p, v in after.items() if p not in targets} == {
        p: v for p, v in before.items() if p not in targets
    }
    assert any(not v["enabled"] for p, v in after.items() if p not in targets)
    updated = one_table(tagged(notebook, "apply"))
    assert [row["enabled"] for row in updated] == ["True"] * len(targets)
    assert text_of(tagged(notebook, "remaining")) == "0"


# -- 04 growth and history -------------------------------------------------------------


def test_growth_notebook_reads_the_recorded_history(fresh_sandbox, tmp_path, kernel_dir,
                                                   connection_to):  # fmt: skip
    connection = connection_to(fresh_sandbox)
    history = tmp_path / "history.sqlite3"
    audit = tmp_path / "audit"
    summary = seed_history(connection, history, audit_dir=audit)
    assert len(summary["deleted"]) > 0
    parameters = f"HISTORY = {str(history)!r}\nAUDIT_DIR = {str(audit)!r}\nGC_DIR = None"
    notebook = run_notebook(
        "04_growth_and_history.ipynb", fresh_sandbox, tmp_path, kernel_dir, parameters=parameters
    )

    with sqlite3.connect(history) as db:
        snapshots = db.execute(
            "SELECT taken_at, projects, registry_size_bytes, unique_bytes FROM snapshots "
            "ORDER BY taken_at"
        ).fetchall()
    assert len(snapshots) == 3
    shown = one_table(tagged(notebook, "snapshots"))
    assert [(int(r["projects"]), int(r["registry_size_bytes"]), int(r["unique_bytes"]))
            for r in shown] == [s[1:] for s in snapshots]  # fmt: skip

    growth_rows = one_table(tagged(notebook, "growth"))
    expected = expected_growth(history)
    assert {r["project_path"]: (int(r["registry_size_delta"]), int(r["unique_delta"]),
                                int(r["tags_delta"])) for r in growth_rows} == expected  # fmt: skip
    top = [r["project_path"] for r in one_table(tagged(notebook, "top"))]
    growing = sorted((p for p, d in expected.items() if d[0] > 0), key=lambda p: -expected[p][0])
    assert top == growing[: parameter("04_growth_and_history.ipynb", "TOP")]
    assert top[0] == "apps/web"

    # The cleanup run, from its audit log read here, beside the snapshots around it.
    records = [json.loads(line) for line in Path(summary["audit_path"]).read_text().splitlines()]
    (run_id,) = {r["run_id"] for r in records}
    (run,) = one_table(tagged(notebook, "runs"))
    assert (run["kind"], run["run_id"]) == ("cleanup", run_id)
    assert int(run["tags_deleted"]) == len(summary["deleted"])
    assert run["record"] == Path(summary["audit_path"]).name
    assert int(run["registry_size_bytes change"]) == snapshots[2][2] - snapshots[1][2] < 0
    assert run["first snapshot after"] == snapshots[2][0][:19].replace("T", " ")

    # The chart: the instance total line is the snapshots' registry_size_bytes.
    total_axes, project_axes = plotted(tagged(notebook, "chart"))["axes"]
    unit = unit_of(total_axes["ylabel"])
    line = total_axes["lines"]["registry_size_bytes"]
    assert [round(y * unit) for _, y in line] == [s[2] for s in snapshots]
    web = project_axes["lines"]["apps/web"]
    rows = [r for r in plain_rows(history) if r[2] == "apps/web"]
    assert [round(y * unit_of(project_axes["ylabel"])) for _, y in web] == [r[3] for r in rows]
