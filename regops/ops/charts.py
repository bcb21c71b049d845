"""Charts of regops' reports, with matplotlib: usage, growth, cleanup plans, forecasts.

Every function takes plain values (a :class:`~regops.ops.usage.UsageReport`,
history snapshots, cleanup plans, a forecast) and returns a :class:`Chart`: a
matplotlib ``Figure`` drawn with the Agg renderer (no display, no pyplot, no
global state, so it works from cron and in a long console session alike),
that shows itself as a PNG in Jupyter and saves as PNG or SVG.

>>> report.plot().save("usage.png")              # doctest: +SKIP

Readable at a glance: a title, byte axes in KiB/MiB/GiB, bars sorted largest
first, and a figure that grows with the number of rows so that no two labels
overlap. matplotlib is imported on first use: ``regops usage`` without
``--plot`` never loads it.

What a chart shows can be read back from its artists (:meth:`Chart.plotted`);
a PNG made by :meth:`Chart.png` carries that reading as JSON in its
``regops:plotted`` text chunk, so a saved image can be checked against its data.
"""

from __future__ import annotations

import functools
import io
import json
import math
import os
from collections.abc import Iterable, Sequence
from datetime import datetime
from pathlib import Path
from typing import Any

from regops.errors import StateError, ValidationError
from regops.fsutil import atomic_write
from regops.policy import LATEST_TAG
from regops.sizes import byte_unit, human_bytes
from regops.times import utc_time

SAVE_FORMATS = ("png", "svg")


def check_chart_path(path: str | os.PathLike[str]) -> Path:
    """``path`` when it names a .png or .svg file, else ValidationError (one line)."""
    target = Path(path)
    fmt = target.suffix.lower().lstrip(".")
    if fmt not in SAVE_FORMATS:
        raise ValidationError(
            "plot", f"{target.name}: expected a .png or .svg file name, got {fmt!r}"
        )
    return target


PLOTTED_KEY = "regops:plotted"  # the PNG text chunk holding what was drawn
DPI = 100
WIDTH = 10.0  # inches: fits a mail client and a notebook column
ROW_HEIGHT = 0.24  # inches per bar row: 8-point labels never touch at this spacing
LABEL_FONT = 8  # points, category labels
MIN_PLOT_HEIGHT = 2.5  # inches for the plotting area of a short chart
TITLE_ROOM = 1.1  # inches for title, axis labels and legend
DEFAULT_TOP = 25  # projects in a usage chart (the rest are counted in the title)
DEFAULT_LINES = 8  # projects drawn in a growth chart: more lines stop being readable
MAX_PANELS = 12  # repositories drawn for one cleanup plan
PANEL_HEIGHT = 2.2  # inches per repository histogram
COLORS = {
    "registry": "#4C72B0",
    "unique": "#DD8452",
    "delete": "#C44E52",
    "keep": "#8C8C8C",
    "cutoff": "#222222",
    "keep_n": "#55A868",
    "cleanup": "#C44E52",
    "gc": "#8172B3",
}


# --------------------------------------------------------------------------- the figure


@functools.lru_cache(maxsize=1)
def _chart_class() -> type:
    """:class:`Chart`, defined on first use so that importing this module loads no matplotlib."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    class Chart(Figure):
        """A Figure on the Agg canvas that shows as a PNG in Jupyter and saves atomically."""

        def __init__(self, width: float, height: float) -> None:
            super().__init__(figsize=(width, height), dpi=DPI, layout="constrained")
            FigureCanvasAgg(self)

        def __repr__(self) -> str:
            titles = [ax.get_title() for ax in self.axes if ax.get_title()]
            head = self.get_suptitle()
            return f"<Chart {head or '; '.join(titles)!r}>"

        def png(self) -> bytes:
            """The chart as PNG bytes, with what it plots in the ``regops:plotted`` chunk."""
            data = json.dumps(self.plotted(), ensure_ascii=True, separators=(",", ":"))
            buffer = io.BytesIO()
            self.savefig(buffer, format="png", metadata={PLOTTED_KEY: data})
            return buffer.getvalue()

        def svg(self) -> bytes:
            buffer = io.BytesIO()
            self.savefig(buffer, format="svg")
            return buffer.getvalue()

        def _repr_png_(self) -> bytes:
            return self.png()

        def save(self, path: str | os.PathLike[str]) -> Path:
            """Write PNG or SVG (by the suffix) atomically; returns the path."""
            target = check_chart_path(path)
            fmt = target.suffix.lower().lstrip(".")
            data = self.png() if fmt == "png" else self.svg()
            try:
                return atomic_write(target, data)
            except OSError as exc:
                raise StateError("write the chart", target, exc) from None

        def plotted(self) -> dict[str, Any]:
            """What is drawn, read back from the artists: per axes its title, labels,
            bars ({series: [[category, value], ...]}) and lines ({label: [[x, y], ...]})."""
            self.canvas.draw()
            return {
                "title": self.get_suptitle(),
                "axes": [_read_axes(ax) for ax in self.axes if ax.get_visible()],
            }

    return Chart


def new_chart(width: float, height: float) -> Any:
    """An empty :class:`Chart` of ``width`` x ``height`` inches."""
    return _chart_class()(width, height)


def _read_axes(ax: Any) -> dict[str, Any]:
    from matplotlib.container import BarContainer

    ticks = {
        "y": _tick_names(ax.get_yticks(), ax.get_yticklabels()),
        "x": _tick_names(ax.get_xticks(), ax.get_xticklabels()),
    }
    bars: dict[str, list[list[Any]]] = {}
    for container in ax.containers:
        if not isinstance(container, BarContainer):
            continue
        horizontal = container.orientation == "horizontal"
        values = []
        for patch in container.patches:
            if horizontal:
                center, value = patch.get_y() + patch.get_height() / 2, patch.get_width()
                where = _category(ticks["y"], center, patch.get_y())
            else:
                center, value = patch.get_x() + patch.get_width() / 2, patch.get_height()
                where = _category(ticks["x"], center, patch.get_x())
            values.append([where, float(value)])
        bars[str(container.get_label())] = values
    lines = {
        line.get_label(): [[_plain(x), _plain(y)] for x, y in zip(*line.get_data(), strict=True)]
        for line in ax.get_lines()
        if not line.get_label().startswith("_")
    }
    return {
        "title": ax.get_title(),
        "xlabel": ax.get_xlabel(),
        "ylabel": ax.get_ylabel(),
        "bars": bars,
        "lines": lines,
    }


def _category(ticks: dict[float, str], center: float, edge: float) -> str | float:
    """The labelled tick within half a category of ``center``, else the bar's edge."""
    near = [(abs(position - center), name) for position, name in ticks.items()]
    if near and min(near)[0] < 0.5:
        return min(near)[1]
    return round(float(edge), 6)


def _tick_names(positions: Sequence[float], labels: Sequence[Any]) -> dict[float, str]:
    return {
        round(float(p), 6): t.get_text()
        for p, t in zip(positions, labels, strict=False)
        if t.get_text()
    }


def _plain(value: Any) -> Any:
    if isinstance(value, datetime):
        return value.isoformat()
    if hasattr(value, "item"):  # numpy scalars
        value = value.item()
    if isinstance(value, datetime):
        return value.isoformat()
    return float(value) if isinstance(value, (int, float)) else str(value)


def _bar_height(rows: int) -> float:
    return max(MIN_PLOT_HEIGHT, rows * ROW_HEIGHT) + TITLE_ROOM


def _grouped_barh(
    ax: Any,
    labels: Sequence[str],
    series: Sequence[tuple[str, Sequence[float], str]],
    unit: tuple[str, int],
) -> None:
    """Horizontal bars, one group per label (first label on top), one bar per series."""
    count = len(series)
    height = 0.8 / count
    positions = list(range(len(labels)))
    for index, (name, values, color) in enumerate(series):
        offsets = [p - 0.4 + height * (index + 0.5) for p in positions]
        ax.barh(offsets, [v / unit[1] for v in values], height=height, label=name, color=color)
    ax.set_yticks(positions, labels=labels, fontsize=LABEL_FONT)
    ax.set_ylim(max(len(labels), 1) - 0.5, -0.5)  # the largest on top
    ax.grid(axis="x", alpha=0.3)
    ax.set_axisbelow(True)


# --------------------------------------------------------------------------- usage


def usage_chart(report: Any, top: int | None = DEFAULT_TOP) -> Any:
    """Top projects by ``registry_size_bytes`` beside their ``unique_bytes``.

    The gap between the two bars is how much the Rails recipe over-counts
    layers shared between tags. ``top=None``: every reported project.
    """
    rows = sorted(report.rows, key=lambda r: (-r.registry_size_bytes, r.full_path))
    shown = rows if top is None else rows[: _positive(top, "top")]
    extended = bool(getattr(report, "extended", False))
    largest = max([0, *(r.registry_size_bytes for r in shown), *(r.unique_bytes for r in shown)])
    unit = byte_unit(largest)
    chart = new_chart(WIDTH, _bar_height(len(shown)))
    ax = chart.add_subplot()
    gitlab_sum = "registry_size_bytes (GitLab's sum over tags)"
    series = [(gitlab_sum, [r.registry_size_bytes for r in shown], COLORS["registry"])]
    if extended:
        series.append(
            ("unique_bytes (each blob once)", [r.unique_bytes for r in shown], COLORS["unique"])
        )
    _grouped_barh(ax, [r.full_path for r in shown], series, unit)
    ax.set_xlabel(f"bytes ({unit[0]})")
    more = f" (top {len(shown)} of {len(rows)})" if len(shown) < len(rows) else ""
    ax.set_title(f"Registry usage by project{more}")
    if not shown:
        ax.text(0.5, 0.5, "no registry usage", ha="center", va="center", transform=ax.transAxes)
    else:
        chart.legend(loc="outside lower center", ncols=2, fontsize=LABEL_FONT)
    return chart


def _positive(value: int, field: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValidationError(field, f"expected a whole number >= 1, got {value!r}")
    return value


# --------------------------------------------------------------------------- history


def history_chart(
    snapshots: Sequence[Any],
    runs: Iterable[Any] = (),
    *,
    top: int = DEFAULT_LINES,
    measure: str = "registry_size_bytes",
) -> Any:
    """Instance totals over time, and the ``top`` projects that grew most, one line each.

    ``runs`` (cleanup and GC runs, :class:`regops.ops.history.Run`) are drawn
    as vertical lines at the time they finished.
    """
    if measure not in ("registry_size_bytes", "unique_bytes"):
        expected = "expected registry_size_bytes or unique_bytes"
        raise ValidationError("measure", f"{expected}, got {measure!r}")
    ordered = sorted(snapshots, key=lambda s: (s.taken_at, s.id))
    chosen = _top_projects(ordered, _positive(top, "top"), measure)
    series: dict[int, list[tuple[datetime, int]]] = {pid: [] for pid, _ in chosen}
    for snapshot in ordered:
        for row in snapshot.rows:
            if row.project_id in series and not row.incomplete:
                series[row.project_id].append((snapshot.taken_at, getattr(row, measure)))
    totals = [(s.taken_at, s.registry_size_bytes, s.unique_bytes) for s in ordered]
    largest_total = max([0, *(max(t[1], t[2]) for t in totals)])
    largest_row = max([0, *(v for points in series.values() for _, v in points)])
    chart = new_chart(WIDTH, 7.0)
    chart.suptitle(f"Registry usage over time ({len(ordered)} snapshots)")
    total_ax, project_ax = chart.subplots(2, 1, sharex=True)
    unit = byte_unit(largest_total)
    total_ax.plot(
        [t[0] for t in totals],
        [t[1] / unit[1] for t in totals],
        marker="o",
        label="registry_size_bytes",
        color=COLORS["registry"],
    )
    if any(s.extended for s in ordered):
        total_ax.plot(
            [t[0] for t in totals],
            [t[2] / unit[1] for t in totals],
            marker="o",
            label="unique_bytes (instance, deduplicated)",
            color=COLORS["unique"],
        )
    total_ax.set_title("Instance total")
    total_ax.set_ylabel(f"bytes ({unit[0]})")
    row_unit = byte_unit(largest_row)
    for pid, path in chosen:
        points = series[pid]
        project_ax.plot(
            [p[0] for p in points], [p[1] / row_unit[1] for p in points], marker=".", label=path
        )
    project_ax.set_title(f"Projects that grew most ({measure})")
    project_ax.set_ylabel(f"bytes ({row_unit[0]})")
    _draw_runs([total_ax, project_ax], runs)
    for ax in (total_ax, project_ax):
        ax.grid(alpha=0.3)
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize=LABEL_FONT, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    from matplotlib.dates import AutoDateLocator, ConciseDateFormatter

    locator = AutoDateLocator()
    project_ax.xaxis.set_major_locator(locator)
    project_ax.xaxis.set_major_formatter(ConciseDateFormatter(locator))
    project_ax.tick_params(axis="x", labelsize=LABEL_FONT)
    if not ordered:
        total_ax.text(
            0.5, 0.5, "no snapshots", ha="center", va="center", transform=total_ax.transAxes
        )
    return chart


def _top_projects(snapshots: Sequence[Any], top: int, measure: str) -> list[tuple[int, str]]:
    """(id, path) of the ``top`` projects with the largest growth, then the largest size."""
    first: dict[int, int] = {}
    last: dict[int, tuple[int, str]] = {}
    for snapshot in snapshots:
        for row in snapshot.rows:
            if row.incomplete:
                continue
            value = getattr(row, measure)
            first.setdefault(row.project_id, value)
            last[row.project_id] = (value, row.project_path)
    ranked = sorted(
        last, key=lambda pid: (-(last[pid][0] - first[pid]), -last[pid][0], last[pid][1])
    )
    return [(pid, last[pid][1]) for pid in ranked if last[pid][0] > 0 or first[pid] > 0][:top]


def _draw_runs(axes: Sequence[Any], runs: Iterable[Any]) -> None:
    labelled: set[str] = set()
    for run in runs:
        color = COLORS.get(run.kind, COLORS["cutoff"])
        for index, ax in enumerate(axes):
            label = f"{run.kind} run" if index == 0 and run.kind not in labelled else "_run"
            ax.axvline(run.finished_at, color=color, linestyle="--", linewidth=1, label=label)
        labelled.add(run.kind)


# --------------------------------------------------------------------------- cleanup plans


def plan_chart(plans: Sequence[Any], *, title: str | None = None) -> Any:
    """Per repository, a histogram of tag ages (kept and deleted, stacked) with the
    policy's cut-offs: ``older_than`` and the oldest tag ``keep_n`` keeps."""
    drawn = [p for p in plans if p.decisions][:MAX_PANELS]
    panels = max(1, len(drawn))
    chart = new_chart(WIDTH, PANEL_HEIGHT * panels + TITLE_ROOM)
    deleted = sum(p.deleted_size for p in plans)
    total = sum(p.original_size for p in plans)
    more = f"; {len(plans) - len(drawn)} repositories not drawn" if len(plans) > len(drawn) else ""
    chart.suptitle(title or f"Cleanup plan: {deleted} of {total} tags to delete{more}")
    axes = chart.subplots(panels, 1, squeeze=False)[:, 0]
    for ax, plan in zip(axes, drawn, strict=False):
        _age_histogram(ax, plan)
    if not drawn:
        axes[0].text(0.5, 0.5, "no tags", ha="center", va="center", transform=axes[0].transAxes)
    axes[-1].set_xlabel("tag age (days, from the image's build time)")
    return chart


def _age_histogram(ax: Any, plan: Any) -> None:
    now = plan.now
    ages: dict[bool, list[float]] = {True: [], False: []}
    unknown = 0
    keep_n_names = {d.name for d in plan.kept_by_keep_n}
    kept_by_keep_n: list[float] = []
    for decision in plan.decisions:
        created = _created(decision.tag)
        if created is None:
            unknown += 1
            continue
        age = max(0.0, (now - created).total_seconds() / 86_400)
        ages[decision.delete].append(age)
        if decision.name in keep_n_names:
            kept_by_keep_n.append(age)
    oldest = max([1.0, *ages[True], *ages[False]])
    width = _bin_width(oldest)
    bins = math.ceil(oldest / width) + 1
    edges = [i * width for i in range(bins)]
    counts = {flag: [0] * bins for flag in ages}
    for flag, values in ages.items():
        for age in values:
            counts[flag][min(int(age // width), bins - 1)] += 1
    ax.bar(edges, counts[False], width=width, align="edge", color=COLORS["keep"], label="keep")
    ax.bar(
        edges,
        counts[True],
        width=width,
        align="edge",
        bottom=counts[False],
        color=COLORS["delete"],
        label="delete",
    )
    rules = plan.policy
    if rules.older_than_delta is not None:
        days = rules.older_than_delta.total_seconds() / 86_400
        ax.axvline(
            days, color=COLORS["cutoff"], linestyle="--", label=f"older_than {rules.older_than}"
        )
    if kept_by_keep_n:
        ax.axvline(
            max(kept_by_keep_n),
            color=COLORS["keep_n"],
            linestyle=":",
            label=f"keep_n {rules.keep_n}: oldest kept",
        )
    freed = plan.freed_bytes
    note = f", frees up to {human_bytes(freed)}" if freed is not None else ""
    unknown_note = f", {unknown} of unknown age" if unknown else ""
    latest = " (latest kept)" if any(d.name == LATEST_TAG for d in plan.decisions) else ""
    ax.set_title(
        f"{plan.repository or 'repository'}: {plan.deleted_size} of {plan.original_size} tags "
        f"to delete{note}{unknown_note}{latest}",
        fontsize=9,
    )
    ax.set_ylabel("tags")
    ax.yaxis.get_major_locator().set_params(integer=True)
    ax.legend(fontsize=LABEL_FONT, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    ax.grid(axis="y", alpha=0.3)


def _bin_width(oldest_days: float) -> float:
    """Days per bin: about 30 bins at most, in whole days or weeks."""
    for width in (1.0, 2.0, 7.0, 14.0, 30.0):
        if oldest_days / width <= 30:
            return width
    return 90.0


def _created(tag: Any) -> datetime | None:
    value = getattr(tag, "created_at", None)
    return utc_time(value, "created_at") if isinstance(value, (str, datetime)) else None


# --------------------------------------------------------------------------- forecast


def forecast_chart(
    rows: Sequence[Any], *, top: int | None = DEFAULT_TOP, window: str = "24 h"
) -> Any:
    """Bytes the coming cleanup runs free, by project (largest first), and tags they delete.

    ``rows``: forecast rows (:class:`regops.ops.forecast.PolicyForecast`), those due
    within ``window`` (shown in the title).
    """
    planned = [r for r in rows if r.deleted_tags]
    ordered = sorted(
        planned, key=lambda r: (-(r.freed_bytes or 0), -r.deleted_tags, r.project_path)
    )
    shown = ordered if top is None else ordered[: _positive(top, "top")]
    chart = new_chart(WIDTH, _bar_height(len(shown)))
    bytes_ax, tags_ax = chart.subplots(1, 2, sharey=True, width_ratios=[3, 1])
    largest = max([0, *((r.freed_bytes or 0) for r in shown), *(r.deleted_bytes for r in shown)])
    unit = byte_unit(largest)
    labels = [r.project_path for r in shown]
    _grouped_barh(
        bytes_ax,
        labels,
        [
            ("freed after GC (at most)", [r.freed_bytes or 0 for r in shown], COLORS["delete"]),
            ("total_size of deleted tags", [r.deleted_bytes for r in shown], COLORS["registry"]),
        ],
        unit,
    )
    bytes_ax.set_xlabel(f"bytes ({unit[0]})")
    bytes_ax.set_title("Bytes the next cleanup run frees")
    if shown:
        chart.legend(loc="outside lower center", ncols=3, fontsize=LABEL_FONT)
    tags_ax.barh(
        range(len(shown)),
        [r.deleted_tags for r in shown],
        height=0.6,
        color=COLORS["keep"],
        label="tags to delete",
    )
    tags_ax.set_title("Tags to delete")
    tags_ax.grid(axis="x", alpha=0.3)
    tags_ax.tick_params(axis="y", labelleft=False)
    more = f" (top {len(shown)} of {len(planned)})" if len(shown) < len(planned) else ""
    freed = sum(r.freed_bytes or 0 for r in planned)
    chart.suptitle(
        f"Cleanup runs due within {window}: {sum(r.deleted_tags for r in planned)} tags in "
        f"{len(planned)} projects, up to {human_bytes(freed)} freed{more}"
    )
    if not shown:
        tags_ax.set_visible(False)
        bytes_ax.set_xticks([])
        bytes_ax.set_xlabel("")
        message = f"no run due within {window} deletes anything"
        bytes_ax.text(0.5, 0.5, message, ha="center", va="center", transform=bytes_ax.transAxes)
    return chart


# --------------------------------------------------------------------------- garbage collection


def gc_chart(plan: Any, *, top: int | None = DEFAULT_TOP) -> Any:
    """What the collector would free, by repository (largest first).

    ``plan``: a :class:`regops.ops.gc.GCPlan`. Per repository, the eligible bytes
    linked only there, and those it shares with other repositories (counted in
    each, so the bars of shared blobs add up to more than the total in the title).
    """
    rows = [r for r in plan.repositories if r.bytes or r.shared_bytes or r.manifests_eligible]
    ordered = sorted(rows, key=lambda r: (-(r.bytes + r.shared_bytes), r.repository))
    shown = ordered if top is None else ordered[: _positive(top, "top")]
    chart = new_chart(WIDTH, _bar_height(len(shown)))
    ax = chart.add_subplot()
    unit = byte_unit(max([0, *(r.bytes for r in shown), *(r.shared_bytes for r in shown)]))
    labels = [f"{r.repository} ({r.project})" if r.project else r.repository for r in shown]
    _grouped_barh(
        ax,
        labels,
        [
            ("freed, linked only here", [r.bytes for r in shown], COLORS["delete"]),
            (
                "freed, shared with other repositories",
                [r.shared_bytes for r in shown],
                COLORS["gc"],
            ),
        ],
        unit,
    )
    ax.set_xlabel(f"bytes ({unit[0]})")
    more = f" (top {len(shown)} of {len(rows)} repositories)" if len(shown) < len(rows) else ""
    ax.set_title(f"{plan.command}: what each repository loses{more}")
    chart.suptitle(
        f"{plan.command} frees {human_bytes(plan.bytes_eligible)} of "
        f"{human_bytes(plan.bytes_total)}: {plan.blobs_eligible} blobs, "
        f"{plan.manifests_eligible} manifests"
    )
    if shown:
        chart.legend(loc="outside lower center", ncols=2, fontsize=LABEL_FONT)
    else:
        ax.set_xticks([])
        ax.text(0.5, 0.5, "nothing to collect", ha="center", va="center", transform=ax.transAxes)
    return chart
