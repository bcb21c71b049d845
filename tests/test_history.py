"""The usage history (regops.ops.history): SQLite snapshots, read back with plain sqlite3.

Expected values are the literal rows the tests write, or what the test computes
from rows it reads with the standard library's sqlite3 (never through
HistoryStore's own readers).
"""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import textwrap
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest

from regops import cli
from regops.errors import HistoryError
from regops.ops.history import (
    HistoryStore,
    after_runs,
    cleanup_runs,
    gc_runs,
    growth,
    top_growers,
)
from regops.ops.usage import ProjectUsage, UsageReport, UsageSummary

ROOT = Path(__file__).resolve().parent.parent
T0 = datetime(2026, 3, 1, 2, 0, tzinfo=timezone.utc)

# The first released schema, written here by hand (not taken from regops).
SCHEMA_V1 = """
CREATE TABLE snapshots (
    id INTEGER PRIMARY KEY, taken_at TEXT NOT NULL, projects INTEGER NOT NULL,
    repositories INTEGER NOT NULL, tags INTEGER NOT NULL,
    registry_size_bytes INTEGER NOT NULL, unique_bytes INTEGER NOT NULL,
    incomplete_projects INTEGER NOT NULL);
CREATE TABLE project_usage (
    snapshot_id INTEGER NOT NULL REFERENCES snapshots(id) ON DELETE CASCADE,
    project_id INTEGER NOT NULL, project_path TEXT NOT NULL,
    registry_size_bytes INTEGER NOT NULL, unique_bytes INTEGER NOT NULL,
    repositories INTEGER NOT NULL, tags INTEGER NOT NULL, incomplete INTEGER NOT NULL,
    PRIMARY KEY (snapshot_id, project_id));
PRAGMA user_version = 1;
"""


def report(rows: list[tuple], *, extended: bool = True) -> UsageReport:
    """A UsageReport of (id, path, registry_size_bytes, unique_bytes, repos, tags[, error])."""
    projects = []
    for pid, path, size, unique, repos, tags, *error in rows:
        row = ProjectUsage(pid, 1, path, size, repos, tags, unique)
        row.errors.extend(error)
        projects.append(row)
    summary = UsageSummary(
        projects=len(rows),
        repositories=sum(r[4] for r in rows),
        tags=sum(r[5] for r in rows),
        registry_size_bytes=sum(r[2] for r in rows),
        unique_bytes=sum(r[3] for r in rows) - 100,  # instance-wide: shared blobs once
        incomplete_projects=sum(1 for r in rows if len(r) > 6),
    )
    return UsageReport(projects, summary, extended=extended)


def plain_rows(path: Path) -> list[tuple]:
    """(taken_at, project_id, project_path, registry_size_bytes, unique_bytes, repositories,
    tags, incomplete), read with plain sqlite3, oldest first."""
    with sqlite3.connect(path) as db:
        return db.execute(
            "SELECT s.taken_at, p.project_id, p.project_path, p.registry_size_bytes, "
            "p.unique_bytes, p.repositories, p.tags, p.incomplete FROM project_usage p "
            "JOIN snapshots s ON s.id = p.snapshot_id ORDER BY s.taken_at, p.project_id"
        ).fetchall()


def plain_snapshots(path: Path) -> list[tuple]:
    with sqlite3.connect(path) as db:
        return db.execute(
            "SELECT id, taken_at, registry_size_bytes, unique_bytes FROM snapshots ORDER BY id"
        ).fetchall()


# --------------------------------------------------------------------------- the file


def test_a_new_file_is_private_in_wal_mode_at_the_current_version(tmp_path):
    path = tmp_path / "deep" / "history.sqlite3"
    with HistoryStore(path) as store:
        store.record(report([(1, "a/b", 300, 200, 1, 3)]), taken_at=T0)
    assert oct(path.stat().st_mode & 0o777) == "0o600"
    assert oct(path.parent.stat().st_mode & 0o777) == "0o700"
    with sqlite3.connect(path) as db:
        assert db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        assert db.execute("PRAGMA user_version").fetchone()[0] == 2
        assert db.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    assert plain_rows(path) == [
        (T0.isoformat(timespec="microseconds"), 1, "a/b", 300, 200, 1, 3, 0)
    ]
    assert plain_snapshots(path) == [(1, "2026-03-01T02:00:00.000000+00:00", 300, 100)]


def test_reading_a_missing_file_is_a_one_line_error(tmp_path):
    with pytest.raises(HistoryError) as caught:
        HistoryStore(tmp_path / "none.sqlite3", create=False).open()
    assert "\n" not in str(caught.value) and "none.sqlite3" in str(caught.value)
    assert not (tmp_path / "none.sqlite3").exists()


def test_a_file_from_a_newer_regops_is_refused(tmp_path):
    path = tmp_path / "h.sqlite3"
    with sqlite3.connect(path) as db:
        db.executescript(SCHEMA_V1.replace("user_version = 1", "user_version = 9"))
    with pytest.raises(HistoryError, match="schema version 9 is newer"):
        HistoryStore(path).open()


def test_schema_upgrade_from_the_first_version(tmp_path):
    """A version-1 file (written by hand) is upgraded in place; its rows stay and read."""
    path = tmp_path / "v1.sqlite3"
    with sqlite3.connect(path) as db:
        db.executescript(SCHEMA_V1)
        db.execute(
            "INSERT INTO snapshots VALUES (1, '2026-01-01T00:00:00.000000+00:00', 2, 3, 7, 900, "
            "500, 0)"
        )
        db.execute(
            "INSERT INTO snapshots VALUES (2, '2026-01-02T00:00:00.000000+00:00', 2, 3, 8, 950, "
            "0, 0)"
        )
        db.executemany(
            "INSERT INTO project_usage VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
            [
                (1, 10, "g/one", 600, 300, 2, 5, 0),
                (1, 11, "g/two", 300, 200, 1, 2, 0),
                (2, 10, "g/one", 650, 0, 2, 6, 0),
                (2, 11, "g/two", 300, 0, 1, 2, 0),
            ],
        )

    with HistoryStore(path) as store:
        assert store.schema_version() == 2
        snapshots = store.snapshots()
        store.record(report([(10, "g/one", 700, 350, 2, 7)]), taken_at=T0)

    with sqlite3.connect(path) as db:
        columns = {row[1] for row in db.execute("PRAGMA table_info(snapshots)")}
        assert {"gitlab_url", "extended", "seconds"} <= columns
        indexes = {row[1] for row in db.execute("PRAGMA index_list(snapshots)")}
        assert "snapshots_taken_at" in indexes
        # extended is derived for old rows: unique_bytes measured (> 0) or not.
        assert db.execute("SELECT id, extended FROM snapshots ORDER BY id").fetchall() == [
            (1, 1),
            (2, 0),
            (3, 1),
        ]
        assert db.execute("PRAGMA user_version").fetchone()[0] == 2
    assert [(s.id, s.registry_size_bytes, s.extended) for s in snapshots] == [
        (1, 900, True),
        (2, 950, False),
    ]
    assert [(r.project_path, r.registry_size_bytes, r.tags) for r in snapshots[1].rows] == [
        ("g/one", 650, 6),
        ("g/two", 300, 2),
    ]
    assert len(plain_rows(path)) == 5


# --------------------------------------------------------------------------- writers

WRITER = textwrap.dedent(
    """
    import sys, time
    from datetime import datetime, timezone
    from pathlib import Path
    from regops.ops.history import HistoryStore
    from regops.ops.usage import ProjectUsage, UsageSummary

    path, label, rows, pause, stop_after, marker = sys.argv[1:7]
    rows, pause, stop_after = int(rows), float(pause), int(stop_after)

    class SlowReport:
        extended = True
        summary = UsageSummary(projects=rows, registry_size_bytes=rows * 1000)

        @property
        def projects(self):
            for i in range(rows):
                if i == stop_after:
                    Path(marker).write_text("inside the transaction")
                    time.sleep(600)  # killed here
                time.sleep(pause)
                yield ProjectUsage(i, 1, f"{label}/p{i}", 1000, 1, 2, 500)

    Path(marker + ".ready").write_text("")
    while not Path(marker + ".go").exists():
        time.sleep(0.005)
    with HistoryStore(path) as store:
        store.record(SlowReport(), taken_at=datetime.now(timezone.utc))
    print("recorded", label)
    """
)


def writer(path: Path, label: str, rows: int, pause: float, marker: Path, stop_after: int = -1):
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    args = [sys.executable, "-c", WRITER, str(path), label, str(rows), str(pause)]
    return subprocess.Popen(
        [*args, str(stop_after), str(marker)],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def wait_for(path: Path, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not path.exists():
        assert time.monotonic() < deadline, f"{path.name} never appeared"
        time.sleep(0.01)


def test_two_concurrent_writers_both_snapshots_intact(tmp_path):
    """Two processes record at once; each transaction lasts ~0.6 s, so they overlap:
    the second waits for the first (busy timeout) and both snapshots are whole."""
    path = tmp_path / "h.sqlite3"
    markers = [tmp_path / "a", tmp_path / "b"]
    procs = [writer(path, name, 12, 0.05, m) for name, m in zip("ab", markers, strict=True)]
    for marker in markers:
        wait_for(Path(f"{marker}.ready"))
    for marker in markers:
        Path(f"{marker}.go").write_text("")
    results = [p.communicate(timeout=60) for p in procs]
    assert [p.returncode for p in procs] == [0, 0], [err for _, err in results]

    rows = plain_rows(path)
    by_label: dict[str, list[tuple]] = {}
    for _taken_at, pid, project_path, *values in rows:
        by_label.setdefault(project_path.split("/")[0], []).append((pid, project_path, *values))
    assert sorted(by_label) == ["a", "b"]
    for label, found in by_label.items():
        assert found == [(i, f"{label}/p{i}", 1000, 500, 1, 2, 0) for i in range(12)]
    assert [(s[2], s[3]) for s in plain_snapshots(path)] == [(12000, 0), (12000, 0)]
    # every row of a snapshot carries that snapshot's one time
    times = {label: {r[0] for r in rows if r[2].startswith(label)} for label in "ab"}
    assert all(len(t) == 1 for t in times.values()) and times["a"] != times["b"]


def test_a_snapshot_killed_mid_write_leaves_the_previous_ones(tmp_path):
    path = tmp_path / "h.sqlite3"
    with HistoryStore(path) as store:
        store.record(report([(1, "g/one", 100, 50, 1, 1)]), taken_at=T0)
        store.record(report([(1, "g/one", 150, 70, 1, 2)]), taken_at=T0 + timedelta(days=1))
    before = plain_rows(path)

    marker = tmp_path / "inside"
    proc = writer(path, "killed", 20, 0.0, marker, stop_after=5)
    wait_for(Path(f"{marker}.ready"))
    Path(f"{marker}.go").write_text("")
    wait_for(marker)  # five rows inserted, the transaction still open
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait(timeout=10)
    assert proc.returncode == -signal.SIGKILL

    assert plain_rows(path) == before
    with sqlite3.connect(path) as db:
        assert db.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
        assert db.execute("SELECT count(*) FROM snapshots").fetchone()[0] == 2
    with HistoryStore(path) as store:  # and the file takes new snapshots
        store.record(report([(1, "g/one", 160, 75, 1, 2)]), taken_at=T0 + timedelta(days=2))
    assert [r[3] for r in plain_rows(path)] == [100, 150, 160]


# --------------------------------------------------------------------------- growth


def seeded(path: Path) -> None:
    """Three runs with changes between them: growth, shrinkage, a new project, an
    incomplete read (skipped by growth), a project gone from the scan."""
    runs = [
        [(1, "g/web", 1000, 400, 2, 10), (2, "g/api", 500, 300, 1, 5), (3, "g/old", 90, 90, 1, 1)],
        [(1, "g/web", 1800, 600, 2, 14), (2, "g/api", 9999, 1, 1, 5, "tag list: 500"),
         (3, "g/old", 90, 90, 1, 1), (4, "g/new", 0, 0, 0, 0)],
        [(1, "g/web", 1500, 550, 2, 12), (2, "g/api", 700, 350, 1, 6),
         (4, "g/new", 256, 200, 1, 2)],
    ]  # fmt: skip
    with HistoryStore(path) as store:
        for day, rows in enumerate(runs):
            store.record(report(rows), taken_at=T0 + timedelta(days=day))


def expected_growth(path: Path, since: str = "") -> dict[str, tuple[int, int, int]]:
    """project path -> (registry_size delta, unique delta, tags delta), from plain rows:
    each project's first and last complete row."""
    first: dict[str, tuple] = {}
    last: dict[str, tuple] = {}
    for row in plain_rows(path):
        if row[0] < since or row[7]:
            continue
        first.setdefault(row[2], row)
        last[row[2]] = row
    return {p: (last[p][3] - first[p][3], last[p][4] - first[p][4], last[p][6] - first[p][6])
            for p in first}  # fmt: skip


def test_growth_equals_what_the_recorded_rows_say(tmp_path):
    path = tmp_path / "h.sqlite3"
    seeded(path)
    with HistoryStore(path) as store:
        found = growth(store.snapshots())
        recent = growth(store.snapshots(since=T0 + timedelta(days=1)))
    assert {g.project_path: (g.registry_size_delta, g.unique_delta, g.tags_delta)
            for g in found} == expected_growth(path)  # fmt: skip
    assert expected_growth(path) == {
        "g/web": (500, 150, 2),
        "g/api": (200, 50, 1),
        "g/old": (0, 0, 0),
        "g/new": (256, 200, 2),
    }
    since = (T0 + timedelta(days=1)).isoformat(timespec="microseconds")
    assert {g.project_path: (g.registry_size_delta, g.unique_delta, g.tags_delta)
            for g in recent} == expected_growth(path, since)  # fmt: skip
    # largest growth first; only growing projects are top growers
    assert [g.project_path for g in top_growers(found, 2)] == ["g/web", "g/new"]
    assert [g.project_path for g in top_growers(found)] == ["g/web", "g/new", "g/api"]


def test_cli_history_json_csv_and_filters(tmp_path, capsys):
    path = tmp_path / "h.sqlite3"
    seeded(path)
    assert cli.main(["usage", "history", "--history", str(path), "--format", "json"]) == 0
    document = json.loads(capsys.readouterr().out)
    shown = [
        (s["taken_at"], r["project_id"], r["project_path"], r["registry_size_bytes"],
         r["unique_bytes"], r["repositories"], r["tags"], int(r["incomplete"]))
        for s in document for r in s["rows"]
    ]  # fmt: skip
    assert shown == plain_rows(path)
    assert [s["registry_size_bytes"] for s in document] == [1590, 11889, 2456]

    assert cli.main(["usage", "history", "--history", str(path), "--format", "csv",
                     "--project", "g/api", "--since", "2026-03-02"]) == 0  # fmt: skip
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].startswith("taken_at,project_id,project_path,registry_size_bytes")
    assert [line.split(",")[2:5] for line in lines[1:]] == [
        ["g/api", "9999", "1"],
        ["(total)", "11889", "591"],
        ["g/api", "700", "350"],
        ["(total)", "2456", "1000"],
    ]


def test_cli_history_bad_input(tmp_path, capsys):
    assert cli.main(["usage", "history", "--history", str(tmp_path / "none.db")]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "none.db" in err and "no such file" in err
    seeded(tmp_path / "h.db")
    assert cli.main(["usage", "history", "--history", str(tmp_path / "h.db"),
                     "--since", "soon"]) == 2  # fmt: skip
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "--since" in err and "soon" in err
    assert cli.main(["usage", "--record", "--plot", str(tmp_path / "usage.gif")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "--plot" in err and "usage.gif" in err


# --------------------------------------------------------------------------- runs


def audit_line(run: str, at: datetime, event: str, tag: str, result: str | None = None) -> str:
    record = {"v": 2, "event": event, "run_id": run, "repository": "g/web/app", "tag": tag,
              "digest": "sha256:" + "a" * 64, "time": at.isoformat(), "project_path": "g/web",
              "result": result}  # fmt: skip
    return json.dumps(record)


def test_the_first_snapshot_after_each_cleanup_and_gc_run(tmp_path):
    path = tmp_path / "h.sqlite3"
    seeded(path)  # snapshots at T0, T0+1d, T0+2d
    audit = tmp_path / "audit"
    audit.mkdir()
    cleanup_at = T0 + timedelta(hours=3)
    lines = [
        audit_line("run-1", cleanup_at, "intent", "v1"),
        audit_line("run-1", cleanup_at + timedelta(minutes=1), "result", "v1", "deleted"),
        audit_line("run-1", cleanup_at + timedelta(minutes=2), "result", "v2", "already_gone"),
        audit_line("run-0", T0 - timedelta(days=5), "result", "v0", "rolled_back"),  # no delete
    ]
    (audit / "cleanup-20260301.jsonl").write_text("\n".join(lines) + "\n")
    gc = tmp_path / "gc"
    gc.mkdir()
    (gc / "gc-7.json").write_text(json.dumps({
        "format": 1, "run_id": "gc-7", "started_at": "2026-03-02T06:00:00Z",
        "finished_at": "2026-03-02T06:30:00Z", "ok": True, "bytes_before": 5000,
        "bytes_after": 4000, "new_field": "ignored",
    }))  # fmt: skip
    (gc / "gc-8.json").write_text("{not json")  # skipped with a warning

    runs = cleanup_runs(audit) + gc_runs(gc)
    assert [(r.kind, r.run_id, r.tags_deleted, r.projects) for r in runs] == [
        ("cleanup", "run-1", 1, ("g/web",)),
        ("gc", "gc-7", None, ()),
    ]
    with HistoryStore(path) as store:
        effects = after_runs(store.snapshots(), runs)
    snapshots = plain_snapshots(path)
    cleanup, collect = effects
    assert (cleanup.before.id, cleanup.after.id) == (snapshots[0][0], snapshots[1][0])
    assert cleanup.delta("registry_size_bytes") == snapshots[1][2] - snapshots[0][2] == 10299
    assert cleanup.project_deltas() == {"g/web": 800}
    assert (collect.before.id, collect.after.id) == (snapshots[1][0], snapshots[2][0])
    assert collect.delta("unique_bytes") == snapshots[2][3] - snapshots[1][3]
    assert collect.run.bytes_before == 5000 and collect.run.bytes_after == 4000
