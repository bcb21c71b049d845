"""The cron recipe draws its chart and records its snapshot under cron's bare environment:
``env -i PATH=/usr/bin:/bin HOME=...`` plus the connection settings, no DISPLAY."""

from __future__ import annotations

import csv
import io
import json
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

from tests.test_charts import png_size, png_text

pytestmark = pytest.mark.registry

ROOT = Path(__file__).resolve().parent.parent
RECIPE = ROOT / "recipes" / "registry_usage_by_project.py"
UNITS = {"B": 1, "KiB": 2**10, "MiB": 2**20, "GiB": 2**30}  # the chart's axis units
REGISTRY_SERIES = "registry_size_bytes (GitLab's sum over tags)"
UNIQUE_SERIES = "unique_bytes (each blob once)"


def test_recipe_plots_a_png_and_records_from_cron(sandbox, tmp_path):
    home = tmp_path / "home"
    home.mkdir()
    private = {"REGOPS_STATE_DIR": str(home / "state"), "REGOPS_CACHE_DIR": str(home / "cache")}
    env = {"PATH": "/usr/bin:/bin", "HOME": str(home), **sandbox.env(), **private}
    assert "DISPLAY" not in env and "MPLBACKEND" not in env
    history = tmp_path / "history.sqlite3"
    plot = tmp_path / "weekly" / "usage.png"
    plot.parent.mkdir()
    command = ["env", "-i", *(f"{k}={v}" for k, v in env.items()), sys.executable, str(RECIPE),
               "-q", "--output", str(tmp_path / "usage.csv"), "--plot", str(plot),
               "--history", str(history)]  # fmt: skip
    done = subprocess.run(command, capture_output=True, text=True, timeout=120, cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    # -q, as in cron: nothing on stderr but matplotlib's one-time font cache note
    assert [line for line in done.stderr.splitlines() if "font cache" not in line] == []

    rows = list(csv.DictReader(io.StringIO((tmp_path / "usage.csv").read_text())))
    expected = {r["project path"]: int(r["registry_size_bytes"]) for r in rows}
    assert len(expected) >= 4

    data = plot.read_bytes()
    assert png_size(data)[0] == 1000
    (axes,) = json.loads(png_text(data)["regops:plotted"])["axes"]
    factor = UNITS[axes["xlabel"].removeprefix("bytes (").removesuffix(")")]
    drawn = {name: round(value * factor) for name, value in axes["bars"][REGISTRY_SERIES]}
    assert drawn == expected
    assert list(drawn) == sorted(expected, key=lambda p: -expected[p])  # largest first

    # The recipe records by default: one snapshot, the same sizes, unique_bytes measured.
    with sqlite3.connect(history) as db:
        stored = dict(db.execute("SELECT project_path, registry_size_bytes FROM project_usage "
                                 "WHERE registry_size_bytes > 0"))  # fmt: skip
        unique = dict(db.execute("SELECT project_path, unique_bytes FROM project_usage"))
        assert db.execute("SELECT count(*), max(extended) FROM snapshots").fetchone() == (1, 1)
    assert stored == expected
    plotted_unique = {name: round(value * factor) for name, value in axes["bars"][UNIQUE_SERIES]}
    assert plotted_unique == {path: unique[path] for path in expected}
    assert all(0 < unique[p] < expected[p] for p in expected)  # shared layers counted once
