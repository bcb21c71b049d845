"""Charts (regops.ops.charts): what is drawn, read from matplotlib's artists in the test;
readable at 50 projects (no label overlaps another or leaves the figure); PNG and SVG files.
"""

from __future__ import annotations

import itertools
import json
import os
import struct
import subprocess
import sys
import zlib
from datetime import datetime, timedelta, timezone
from pathlib import Path
from types import SimpleNamespace

import pytest

from regops.errors import StateError, ValidationError
from regops.ops import charts
from regops.ops.cleanup import plan_cleanup
from regops.ops.forecast import PolicyForecast
from regops.ops.gc import GCPlan, RepositoryShare
from regops.ops.history import ProjectRow, Run, Snapshot
from regops.ops.usage import ProjectUsage, UsageReport, UsageSummary

ROOT = Path(__file__).resolve().parent.parent
MIB, GIB = 2**20, 2**30
NOW = datetime(2026, 5, 1, 12, 0, tzinfo=timezone.utc)


def png_chunks(data: bytes) -> list[tuple[bytes, bytes]]:
    """(type, body) of every chunk of a PNG, parsed here with struct."""
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    chunks, offset = [], 8
    while offset < len(data):
        (length,) = struct.unpack(">I", data[offset : offset + 4])
        kind = data[offset + 4 : offset + 8]
        body = data[offset + 8 : offset + 8 + length]
        (crc,) = struct.unpack(">I", data[offset + 8 + length : offset + 12 + length])
        assert crc == zlib.crc32(kind + body)
        chunks.append((kind, body))
        offset += 12 + length
    return chunks


def png_text(data: bytes) -> dict[str, str]:
    found = {}
    for kind, body in png_chunks(data):
        if kind == b"tEXt":
            key, _, value = body.partition(b"\0")
            found[key.decode("latin-1")] = value.decode("latin-1")
    return found


def png_size(data: bytes) -> tuple[int, int]:
    kind, body = png_chunks(data)[0]
    assert kind == b"IHDR"
    return struct.unpack(">II", body[:8])


def fifty_projects() -> UsageReport:
    rows = []
    for i in range(50):
        size = (i * 37 % 50 + 1) * 100 * MIB  # 100 MiB .. 5000 MiB, shuffled
        row = ProjectUsage(i + 1, 1, f"group-{i % 7}/team-{i % 3}/service-with-a-long-name-{i:02d}",
                           size, 2, 10, size // (2 + i % 3))  # fmt: skip
        rows.append(row)
    return UsageReport(rows, UsageSummary(projects=50), extended=True)


def boxes(texts):
    return [t.get_window_extent() for t in texts if t.get_text() and t.get_visible()]


def overlapping(extents) -> list[tuple[int, int]]:
    return [
        (i, j)
        for (i, a), (j, b) in itertools.combinations(enumerate(extents), 2)
        if a.x0 < b.x1 and b.x0 < a.x1 and a.y0 < b.y1 and b.y0 < a.y1
    ]


def test_usage_chart_at_fifty_projects_is_sorted_in_gib_and_labels_never_overlap():
    report = fifty_projects()
    chart = report.plot(top=50)
    chart.canvas.draw()
    (ax,) = chart.axes
    labels = [t for t in ax.get_yticklabels() if t.get_text()]
    extents = boxes(labels)
    assert len(extents) == 50
    assert overlapping(extents) == []
    figure = chart.bbox
    assert all(figure.x0 <= e.x0 and e.x1 <= figure.x1 and figure.y0 <= e.y0 and e.y1 <= figure.y1
               for e in extents)  # fmt: skip
    legend_and_title = [ax.title, *chart.legends[0].get_texts(), ax.xaxis.label]
    assert overlapping(extents + boxes(legend_and_title)) == []

    # Sorted by registry_size_bytes, largest on top, values in GiB; unique_bytes beside.
    expected = sorted(((r.registry_size_bytes, r.unique_bytes, r.full_path) for r in report),
                      reverse=True)  # fmt: skip
    registry, unique = ax.containers
    top_first = sorted(zip(registry.patches, unique.patches, strict=True),
                       key=lambda pair: pair[0].get_y())  # fmt: skip
    assert [(round(a.get_width() * GIB), round(b.get_width() * GIB)) for a, b in top_first] == [
        (size, uniq) for size, uniq, _ in expected
    ]
    positions = {round(t.get_position()[1]): t.get_text() for t in labels}
    assert [positions[round(a.get_y() + 0.4)] for a, _ in top_first] == [p for *_, p in expected]
    assert ax.get_xlabel() == "bytes (GiB)"
    assert ax.get_title() == "Registry usage by project"


def test_usage_chart_top_n_and_units():
    report = fifty_projects()
    chart = report.plot(top=5)
    (ax,) = chart.axes
    assert ax.get_title() == "Registry usage by project (top 5 of 50)"
    assert len(ax.containers[0].patches) == 5
    small = UsageReport([ProjectUsage(1, 1, "a/b", 3 * MIB // 2, 1, 1, MIB)], UsageSummary())
    small_ax = small.plot().axes[0]
    assert small_ax.get_xlabel() == "bytes (MiB)"
    assert len(small_ax.containers) == 1  # not extended: no unique_bytes bars
    assert small_ax.containers[0].patches[0].get_width() == 1.5
    with pytest.raises(ValidationError, match="top"):
        report.plot(top=0)


def test_png_carries_what_is_plotted_and_svg_saves(tmp_path):
    chart = fifty_projects().plot(top=3)
    data = chart.png()
    assert png_size(data) == (1000, round(chart.get_figheight() * 100))
    embedded = json.loads(png_text(data)["regops:plotted"])
    bars = embedded["axes"][0]["bars"]["registry_size_bytes (GitLab's sum over tags)"]
    ax = chart.axes[0]
    drawn = sorted(ax.containers[0].patches, key=lambda p: p.get_y())
    assert [value for _, value in bars] == [p.get_width() for p in ax.containers[0].patches]
    assert [name for name, _ in bars] == [t.get_text() for t in ax.get_yticklabels()]
    assert drawn[0].get_width() == max(p.get_width() for p in drawn)

    svg = chart.save(tmp_path / "usage.svg").read_bytes()
    assert svg.lstrip().startswith(b"<?xml") and b"<svg" in svg
    assert chart.save(tmp_path / "usage.PNG").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    with pytest.raises(ValidationError) as caught:
        chart.save(tmp_path / "usage.jpg")
    assert "\n" not in str(caught.value) and ".png or .svg" in str(caught.value)
    assert not (tmp_path / "usage.jpg").exists()
    with pytest.raises(StateError) as caught:
        chart.save(tmp_path / "missing" / "usage.png")
    assert "\n" not in str(caught.value) and "missing" in str(caught.value)


def tag(name: str, days: float | None) -> SimpleNamespace:
    created = None if days is None else NOW - timedelta(days=days)
    return SimpleNamespace(name=name, created_at=created, total_size=MIB)


def test_plan_chart_ages_and_cutoffs():
    tags = [tag(f"v{i}", d) for i, d in enumerate((1, 3, 5, 10, 20, 40, 41, 60))]
    tags += [tag("latest", 0.5), tag("dev", None)]
    plan = plan_cleanup(tags, {"name_regex": "v.*", "keep_n": 3, "older_than": "14d"}, now=NOW)
    chart = plan.plot()
    (ax,) = chart.axes
    keep, delete = ax.containers
    # By hand: v0..v2 kept by keep_n, v3 (10 days) newer than 14d, v4..v7 deleted.
    assert sum(p.get_height() for p in delete.patches) == 4
    assert sum(p.get_height() for p in keep.patches) == 5  # latest, v0..v3 (dev: no age)
    deleted_bins = sorted(p.get_x() for p in delete.patches if p.get_height())
    assert deleted_bins == [20.0, 40.0, 60.0]  # 2-day bins: 20, 40 and 41, 60
    lines = {line.get_label(): line.get_xdata()[0] for line in ax.get_lines()}
    assert lines == {"older_than 14d": 14.0, "keep_n 3: oldest kept": 5.0}
    assert "4 of 10 tags to delete" in ax.get_title() and "1 of unknown age" in ax.get_title()
    assert ax.get_xlabel().startswith("tag age (days")


def snapshot(day: int, rows: list[tuple[int, str, int]]) -> Snapshot:
    project_rows = tuple(ProjectRow(pid, path, size, size // 2, 1, 1, False)
                         for pid, path, size in rows)  # fmt: skip
    total = sum(r[2] for r in rows)
    return Snapshot(day, NOW + timedelta(days=day), len(rows), len(rows), len(rows), total,
                    total // 2, 0, extended=True, rows=project_rows)  # fmt: skip


def test_history_chart_lines_and_runs():
    snapshots = [
        snapshot(0, [(1, "g/a", 10 * MIB), (2, "g/b", 50 * MIB), (3, "g/c", 5 * MIB)]),
        snapshot(1, [(1, "g/a", 30 * MIB), (2, "g/b", 51 * MIB), (3, "g/c", 5 * MIB)]),
        snapshot(2, [(1, "g/a", 25 * MIB), (2, "g/b", 52 * MIB), (3, "g/c", 5 * MIB)]),
    ]
    runs = [Run("cleanup", "r1", NOW + timedelta(days=1, hours=5), "audit.jsonl")]
    chart = charts.history_chart(snapshots, runs, top=2)
    total_ax, project_ax = chart.axes
    lines = {line.get_label(): list(line.get_ydata()) for line in project_ax.get_lines()}
    # the two that grew most: g/a (+15 MiB) then g/b (+2 MiB); g/c is left out
    assert list(lines)[:2] == ["g/a", "g/b"] and "g/c" not in lines
    assert lines["g/a"] == [10.0, 30.0, 25.0] and lines["g/b"] == [50.0, 51.0, 52.0]
    totals = {line.get_label(): list(line.get_ydata()) for line in total_ax.get_lines()}
    assert totals["registry_size_bytes"] == [65.0, 86.0, 82.0]
    assert project_ax.get_ylabel() == "bytes (MiB)" and total_ax.get_ylabel() == "bytes (MiB)"
    assert "cleanup run" in totals


def forecast_row(path: str, tags: int, deleted: int, freed: int | None) -> PolicyForecast:
    return PolicyForecast(1, path, "1d", None, NOW, True, 1, tags * 2, tags, deleted, freed)


def test_forecast_chart_sorted_by_bytes_freed():
    rows = [forecast_row("g/a", 3, 3 * MIB, MIB), forecast_row("g/b", 9, 9 * MIB, 8 * MIB),
            forecast_row("g/c", 0, 0, 0), forecast_row("g/d", 2, 2 * MIB, None)]  # fmt: skip
    chart = charts.forecast_chart(rows)
    bytes_ax, tags_ax = chart.axes
    freed, deleted = bytes_ax.containers
    order = [t.get_text() for t in bytes_ax.get_yticklabels()]
    assert order == ["g/b", "g/a", "g/d"]  # g/c deletes nothing: not drawn
    assert [p.get_width() for p in sorted(freed.patches, key=lambda p: p.get_y())] == [8, 1, 0]
    assert [p.get_width() for p in sorted(deleted.patches, key=lambda p: p.get_y())] == [9, 3, 2]
    assert [p.get_width() for p in tags_ax.containers[0].patches] == [9, 3, 2]
    assert "due within 24 h: 14 tags in 3 projects, up to 9.0 MiB freed" in chart.get_suptitle()


def widths_top_down(bars) -> list[float]:
    return [p.get_width() for p in sorted(bars.patches, key=lambda p: p.get_y())]


def gc_plan(*shares: RepositoryShare) -> GCPlan:
    return GCPlan("/var/lib/registry", "filesystem", False, 40, 7, 0, 9 * MIB, 50, 30 * MIB,
                  repositories=list(shares))  # fmt: skip


def test_gc_chart_what_each_repository_loses_largest_first():
    chart = gc_plan(
        RepositoryShare("g/a/small", "g/a", blobs=1, bytes=MIB),
        RepositoryShare("g/b/big", "g/b", blobs=3, bytes=6 * MIB, shared_bytes=2 * MIB),
        RepositoryShare("g/c/shared", None, shared_blobs=1, shared_bytes=2 * MIB),
        RepositoryShare("g/d/none", "g/d"),  # loses nothing: not drawn
    ).plot()
    (ax,) = chart.axes
    only, shared = ax.containers
    order = [t.get_text() for t in ax.get_yticklabels()]
    assert order == ["g/b/big (g/b)", "g/c/shared", "g/a/small (g/a)"]
    assert widths_top_down(only) == [6, 0, 1] and widths_top_down(shared) == [2, 2, 0]  # MiB
    assert ax.get_xlabel() == "bytes (MiB)"
    assert chart.get_suptitle() == (
        "garbage-collect frees 9.0 MiB of 30.0 MiB: 7 blobs, 0 manifests"
    )
    assert (
        gc_plan(*[RepositoryShare(f"r{i}", bytes=i + 1) for i in range(30)])
        .plot(top=5)
        .axes[0]
        .get_title()
        .endswith("(top 5 of 30 repositories)")
    )


def test_gc_chart_with_nothing_to_collect():
    chart = gc_plan().plot()
    assert [t.get_text() for t in chart.axes[0].texts] == ["nothing to collect"]


def test_regops_usage_does_not_load_matplotlib():
    code = (
        "import sys, regops.commands.usage, regops.commands.cleanup, regops.ops.usage, "
        "regops.models; print('matplotlib' in sys.modules)"
    )
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env)
    assert out.stdout.strip() == "False", out.stderr
