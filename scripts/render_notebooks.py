#!/usr/bin/env python3
"""Run every notebook against a fresh demo sandbox and save it WITH its outputs, and render
the README's chart (docs/usage-chart.png) and forecast output (printed).

    .venv/bin/python scripts/render_notebooks.py

The notebooks run as committed (EXECUTE = False), from notebooks/ as Jupyter runs them,
in a temporary home (state, cache and temporary files there): the repository gets only
the notebooks' outputs and the chart. Notebook 04 reads a history seeded by
``regops.sandbox.history`` after the other three have run (it pushes and deletes).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import nbclient
import nbformat
from jupyter_client.kernelspec import KernelSpecManager
from jupyter_client.manager import KernelManager

from regops.models import usage_by_project
from regops.ops.history import HISTORY_FILE
from regops.sandbox import Sandbox
from regops.sandbox.history import seed_history

ROOT = Path(__file__).resolve().parent.parent
NOTEBOOKS = ROOT / "notebooks"
CHART = ROOT / "docs" / "usage-chart.png"
KERNEL = "regops-render"
CELL_TIMEOUT = 120  # seconds per cell
FOREIGN_ENV_PREFIXES = ("GITLAB_", "REGOPS_", "PYTHON_GITLAB_", "CI_")


def kernel_dir(base: Path) -> Path:
    spec = base / "kernels" / KERNEL
    spec.mkdir(parents=True)
    argv = [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"]
    document = {"argv": argv, "display_name": "Python 3 (ipykernel)", "language": "python"}
    (spec / "kernel.json").write_text(json.dumps(document))
    return base / "kernels"


def environment(sandbox: Sandbox, home: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(FOREIGN_ENV_PREFIXES)}
    env.update(sandbox.env())
    env.update(
        HOME=str(home),
        REGOPS_STATE_DIR=str(home / "state"),
        REGOPS_CACHE_DIR=str(home / "cache"),
        XDG_CACHE_HOME=str(home / "cache"),
        XDG_CONFIG_HOME=str(home / "config"),
        TMPDIR=str(home / "tmp"),
    )
    (home / "tmp").mkdir(parents=True, exist_ok=True)
    return env


def render(name: str, env: dict[str, str], kernels: Path) -> None:
    path = NOTEBOOKS / name
    notebook = nbformat.read(path, as_version=4)
    for cell in notebook.cells:
        if cell.cell_type == "code":
            cell.outputs, cell.execution_count = [], None
    manager = KernelManager(
        kernel_name=KERNEL, kernel_spec_manager=KernelSpecManager(kernel_dirs=[str(kernels)])
    )
    client = nbclient.NotebookClient(
        notebook, km=manager, timeout=CELL_TIMEOUT, resources={"metadata": {"path": str(NOTEBOOKS)}}
    )
    client.execute(env=env)
    notebook.metadata["kernelspec"] = {
        "display_name": "Python 3 (ipykernel)",
        "language": "python",
        "name": "python3",
    }
    nbformat.write(notebook, path)
    print(f"rendered {name}", flush=True)


def git_status() -> str:
    return subprocess.run(
        ["git", "status", "--porcelain"], cwd=ROOT, capture_output=True, text=True, check=True
    ).stdout


def main() -> int:
    before = git_status()
    with tempfile.TemporaryDirectory(prefix="regops-render-") as temp, Sandbox() as sandbox:
        sandbox.seed("demo")
        home = Path(temp) / "home"
        env = environment(sandbox, home)
        kernels = kernel_dir(Path(temp))
        for name in ("01_registry_usage.ipynb", "02_cleanup_preview.ipynb", "03_policies.ipynb"):
            render(name, env, kernels)
        with sandbox.connect() as connection:
            report = usage_by_project(connection=connection, extended=True)
            report.plot().save(CHART)
            print(f"wrote {CHART.relative_to(ROOT)}")
        # The README's forecast: enable the policies of projects with images, then look.
        for command in (
            ["cleanup", "enable", "--execute", "--set", "keep_n=5", "--set", "older_than=14d"],
            ["cleanup", "forecast", "--within", "2d", "--no-progress"],
        ):
            done = subprocess.run(
                [sys.executable, "-m", "regops", *command],
                env=env,
                capture_output=True,
                text=True,
                check=False,
            )
            print(f"$ regops {' '.join(command)}\n{done.stdout}{done.stderr}")
        with sandbox.connect() as connection:
            state = home / "state"
            seed_history(connection, state / HISTORY_FILE, audit_dir=state / "audit")
        render("04_growth_and_history.ipynb", env, kernels)
    changed = set(git_status().splitlines()) - set(before.splitlines())
    stray = [line for line in changed if not line.endswith((".ipynb", CHART.name))]
    if stray:
        print(f"the notebooks wrote into the repository: {stray}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
