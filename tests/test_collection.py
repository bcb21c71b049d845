"""Collection and table rendering: truncation, terminal width, HTML escaping, exports."""

from __future__ import annotations

import csv
import io
import sys
from datetime import datetime, timezone

import pytest

from regops.errors import RegopsError
from regops.models.base import MAX_TABLE_ROWS, Collection, Model, render_table


class Thing(Model):
    fields = ("id", "name", "size", "created_at")
    table_columns = ("id", "name", "size", "created_at")
    repr_fields = ("id", "name")

    def _fetch(self):
        return self._data


def things(n: int, name: str = "thing") -> Collection:
    when = datetime(2024, 5, 1, 12, 30, tzinfo=timezone.utc)
    return Collection(
        [
            Thing({"id": i, "name": f"{name}{i}", "size": i * 10, "created_at": when})
            for i in range(n)
        ],
        model=Thing,
    )


def test_table_truncates_rows_with_count_of_the_rest():
    text = repr(things(MAX_TABLE_ROWS + 5))
    lines = text.splitlines()
    assert lines[0].split() == ["id", "name", "size", "created_at"]
    assert "thing19" in text and "thing20" not in text
    assert lines[-1] == f"... 5 more ({MAX_TABLE_ROWS + 5} in all)"
    assert "2024-05-01 12:30:00" in text


def test_short_table_has_no_footer_and_empty_says_so():
    assert "more" not in repr(things(3))
    assert repr(Collection([], model=Thing)) == "(no Thing objects)"


def test_table_fits_the_terminal_width(monkeypatch):
    monkeypatch.setattr(
        "shutil.get_terminal_size", lambda fallback=None: __import__("os").terminal_size((60, 20))
    )
    wide = things(3, name="x" * 150)
    lines = repr(wide).splitlines()
    assert max(len(line) for line in lines) <= 60
    assert "…" in lines[2]
    assert lines[2].split()[0] == "0"  # the id column survived


def test_render_table_keeps_narrow_columns():
    text = render_table(["a", "b"], [["1", "y" * 300]], width=40)
    assert max(len(line) for line in text.splitlines()) <= 40


def test_html_is_escaped_and_truncated():
    items = things(MAX_TABLE_ROWS + 1, name="<script>alert(1)</script>")
    markup = items._repr_html_()
    assert "<script>" not in markup
    assert "&lt;script&gt;" in markup
    assert markup.count("<tr>") == MAX_TABLE_ROWS + 1  # header + 20 rows
    assert "1 more" in markup


def test_to_dicts_and_csv(tmp_path):
    items = things(3)
    assert items.to_dicts()[1]["name"] == "thing1"
    assert items.to_dicts(["id", "size"]) == [
        {"id": 0, "size": 0},
        {"id": 1, "size": 10},
        {"id": 2, "size": 20},
    ]
    path = tmp_path / "things.csv"
    items.to_csv(path)
    rows = list(csv.reader(path.open()))
    assert rows[0] == ["id", "name", "size", "created_at"]
    assert rows[3][:3] == ["2", "thing2", "20"]
    buffer = io.StringIO()
    items.to_csv(buffer, columns=["name"])
    assert buffer.getvalue().splitlines() == ["name", "thing0", "thing1", "thing2"]


def test_slicing_keeps_a_collection():
    part = things(10)[2:4]
    assert isinstance(part, Collection) and [t.id for t in part] == [2, 3]
    assert part.columns == Thing.table_columns


def test_to_dataframe_without_pandas_says_so(monkeypatch):
    monkeypatch.setitem(sys.modules, "pandas", None)  # import pandas -> ImportError
    with pytest.raises(RegopsError, match="needs pandas"):
        things(2).to_dataframe()


def test_to_dataframe_with_pandas():
    pytest.importorskip("pandas", reason="pandas is in the test extra; install it")
    frame = things(2).to_dataframe()
    assert list(frame["name"]) == ["thing0", "thing1"]
    assert list(frame.columns) == list(Thing.table_columns)


def test_unknown_attribute_and_dir():
    item = things(1)[0]
    with pytest.raises(AttributeError, match="has no attribute 'colour'"):
        _ = item.colour
    assert {"id", "name", "size", "reload", "to_dict"} <= set(dir(item))
    with pytest.raises(AttributeError, match="read-only"):
        item.name = "other"
