"""The console object model's machinery: Model, relations, Query and Collection.

A :class:`Model` wraps the dict GitLab (or the registry) gave for one object
and shows its keys as attributes; relations load lazily on first access and
stay cached until ``.reload()``. A :class:`Query` is lazy, chainable and never
changes in place (like Django's QuerySet); a :class:`Collection` is a list of
models that prints as a table in a terminal and in a notebook.

>>> Project.where(archived=False).last(3)      # doctest: +SKIP
  id  full_path         created_at
----  ----------------  ----------
  98  group/app         2024-05-01
"""

from __future__ import annotations

import csv
import html
import io
import shutil
from collections.abc import Callable, Iterable, Iterator, Mapping
from datetime import datetime
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any, ClassVar, TypeVar

from tabulate import tabulate

from regops.errors import DoesNotExist, RegopsError, ValidationError
from regops.registry.manifest import parse_rfc3339

if TYPE_CHECKING:
    from regops.connection import Connection

MAX_TABLE_ROWS = 20  # rows a table shows before "... N more": one screen in a console
MIN_COLUMN_WIDTH = 8  # a column is never cut narrower than this when fitting the terminal
ELLIPSIS = "…"
FALLBACK_TERMINAL = (120, 40)  # when there is no terminal (a pipe, a notebook kernel)

M = TypeVar("M", bound="Model")


def resolve_connection(connection: Connection | None) -> Connection:
    """``connection``, or the default one set by ``regops.connect()`` / the console."""
    if connection is not None:
        return connection
    from regops.connection import default_connection

    return default_connection()


def parse_time(value: Any) -> datetime | None:
    """An aware datetime from GitLab's / the registry's time strings (None stays None)."""
    if value is None or isinstance(value, datetime):
        return value
    parsed = parse_rfc3339(value)
    if parsed is None:
        raise ValidationError("time", f"not an RFC 3339 time: {value!r}")
    return parsed


# -- relations ---------------------------------------------------------------------


class relation:
    """A lazy, cached attribute loaded by a method: ``project.container_repositories``.

    The value is cached on the instance until ``reload()``.
    """

    def __init__(self, loader: Callable[[Any], Any]) -> None:
        self.loader = loader
        self.name = loader.__name__
        self.__doc__ = loader.__doc__

    def __set_name__(self, owner: type, name: str) -> None:
        self.name = name

    def __get__(self, obj: Any, owner: type | None = None) -> Any:
        if obj is None:
            return self
        cache = obj.__dict__.setdefault("_relations", {})
        if self.name in cache:
            return cache[self.name]
        try:
            value = self.loader(obj)
        except AttributeError as exc:
            # An AttributeError escaping here would make Python fall back to
            # __getattr__ and report the relation itself as missing.
            raise RuntimeError(f"{type(obj).__name__}.{self.name}: {exc}") from exc
        # the loader may have reloaded the object (a new cache dict): store in the current one
        obj.__dict__.setdefault("_relations", {})[self.name] = value
        return value

    def __set__(self, obj: Any, value: Any) -> None:
        obj.__dict__.setdefault("_relations", {})[self.name] = value


# -- models ------------------------------------------------------------------------


class Model:
    """One GitLab object: its fields as attributes, lazy relations, a short repr.

    Subclasses declare ``fields`` (what the object has when fully fetched),
    ``table_columns`` (what a table of them shows), ``repr_fields`` and
    implement ``_fetch`` (the full object's data, for ``reload()``).
    """

    fields: ClassVar[tuple[str, ...]] = ("id",)
    table_columns: ClassVar[tuple[str, ...]] = ("id",)
    repr_fields: ClassVar[tuple[str, ...]] = ("id",)
    DoesNotExist: ClassVar[type[DoesNotExist]] = DoesNotExist
    parent_relations: ClassVar[tuple[str, ...]] = ()  # kept by reload(): the object's owner
    time_fields: ClassVar[tuple[str, ...]] = ()  # GitLab time strings parsed to datetimes

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if "DoesNotExist" not in cls.__dict__:
            parents = tuple(
                base.DoesNotExist for base in cls.__bases__ if issubclass(base, Model)
            ) or (DoesNotExist,)
            cls.DoesNotExist = type(
                "DoesNotExist",
                parents,
                {"__module__": cls.__module__, "__qualname__": f"{cls.__qualname__}.DoesNotExist"},
            )

    def __init__(self, data: Mapping[str, Any], *, connection: Connection | None = None) -> None:
        self.__dict__["_data"] = self._prepare(data)
        self.__dict__["_connection"] = connection
        self.__dict__["_relations"] = {}

    @classmethod
    def _prepare(cls, data: Mapping[str, Any]) -> dict[str, Any]:
        """The stored row: time strings parsed (an unreadable one is kept as given)."""
        row = dict(data)
        for key in cls.time_fields:
            if isinstance(row.get(key), str):
                row[key] = parse_rfc3339(row[key]) or row[key]
        return row

    # -- attributes ----------------------------------------------------------------

    def __getattr__(self, name: str) -> Any:
        if name.startswith("__") or name in ("_data", "_connection", "_relations"):
            raise AttributeError(name)
        data = self.__dict__.get("_data", {})
        if name in data:
            return data[name]
        if name in type(self).fields:
            raise AttributeError(self._missing_reason(name))
        raise AttributeError(f"{type(self).__name__} has no attribute {name!r}")

    def __setattr__(self, name: str, value: Any) -> None:
        if name.startswith("_") or isinstance(getattr(type(self), name, None), relation):
            object.__setattr__(self, name, value)
            return
        raise AttributeError(
            f"{type(self).__name__}.{name} is read-only here; use .update(...) where offered"
        )

    def _missing_reason(self, name: str) -> str:
        """Why a declared field is absent (overridden where the reason is known)."""
        return (
            f"{type(self).__name__}.{name}: not in GitLab's answer for this object "
            "(call .reload() to fetch the full object)"
        )

    def __dir__(self) -> list[str]:
        names = set(super().__dir__()) | set(self._data) | set(type(self).fields)
        return sorted(n for n in names if not n.startswith("_") or n in ("_repr_html_",))

    @property
    def connection(self) -> Connection:
        """The connection this object was loaded through."""
        return resolve_connection(self._connection)

    def get(self, name: str, default: Any = None) -> Any:
        """The attribute ``name`` if known, else ``default`` (never a request)."""
        return self._data.get(name, default)

    def to_dict(self) -> dict[str, Any]:
        """The object's data (fields as loaded; relations are not loaded)."""
        return dict(self._data)

    def reload(self: M) -> M:
        """Fetch the object again and forget cached relations; returns self."""
        data = dict(self._fetch())
        kept = {k: v for k, v in self._relations.items() if k in type(self).parent_relations}
        self.__dict__["_data"] = self._prepare(data)
        self.__dict__["_relations"] = kept
        return self

    def _fetch(self) -> Mapping[str, Any]:  # pragma: no cover - every model overrides
        raise NotImplementedError

    # -- identity and display ------------------------------------------------------

    def _key(self) -> Any:
        return self._data.get("id")

    def __eq__(self, other: object) -> bool:
        if type(other) is not type(self):
            return NotImplemented
        key = self._key()
        return key is not None and key == other._key()  # type: ignore[attr-defined]

    def __hash__(self) -> int:
        return hash((type(self).__name__, self._key()))

    def __repr__(self) -> str:
        parts = [
            f"{name}={self._data[name]!r}"
            for name in type(self).repr_fields
            if self._data.get(name) is not None
        ]
        return f"<{type(self).__name__} {' '.join(parts)}>"

    def table_row(self, columns: Iterable[str]) -> list[Any]:
        """Values of ``columns`` for a table; a missing value is blank (no request)."""
        return [self._table_value(column) for column in columns]

    def _table_value(self, column: str) -> Any:
        if column in self._data:
            return self._data[column]
        attribute = getattr(type(self), column, None)
        if isinstance(attribute, property):
            try:
                return getattr(self, column)
            except (AttributeError, RegopsError):
                return None
        return None


# -- collections -------------------------------------------------------------------


def _cell(value: Any) -> str:
    """A table cell: short times, no None."""
    if value is None:
        return ""
    if isinstance(value, datetime):
        return value.strftime("%Y-%m-%d %H:%M:%S")
    if isinstance(value, Model):
        return repr(value)
    return str(value)


def _cut(text: str, width: int) -> str:
    return text if len(text) <= width else text[: max(1, width - 1)] + ELLIPSIS


def render_table(headers: list[str], rows: list[list[Any]], width: int) -> str:
    """A plain-text table no wider than ``width``, cutting the widest columns first."""
    cells = [[_cell(v) for v in row] for row in rows]
    limits = [max([len(h), *(len(r[i]) for r in cells)]) for i, h in enumerate(headers)]
    while True:
        shown = [[_cut(c, limits[i]) for i, c in enumerate(row)] for row in cells]
        text = tabulate(shown, headers=headers, tablefmt="simple", disable_numparse=True)
        overflow = max((len(line) for line in text.splitlines()), default=0) - width
        widest = max(range(len(limits)), key=lambda i: limits[i], default=None)
        if overflow <= 0 or widest is None or limits[widest] <= MIN_COLUMN_WIDTH:
            return text
        limits[widest] = max(MIN_COLUMN_WIDTH, limits[widest] - overflow)


def terminal_width() -> int:
    return shutil.get_terminal_size(FALLBACK_TERMINAL).columns


class Collection(list):
    """A list of models that prints as a table (truncated) and exports its rows.

    >>> repos = project.container_repositories      # doctest: +SKIP
    >>> repos.to_csv("repos.csv")                    # doctest: +SKIP
    """

    def __init__(
        self,
        items: Iterable[Any] = (),
        *,
        model: type[Model] | None = None,
        columns: Iterable[str] | None = None,
        more: str | None = None,
    ) -> None:
        super().__init__(items)
        self.model = model or (type(self[0]) if self and isinstance(self[0], Model) else None)
        self.columns = tuple(columns) if columns else self._default_columns()
        self._more = more

    def _default_columns(self) -> tuple[str, ...]:
        if self.model is not None:
            return self.model.table_columns
        return ("value",)

    def _rows(self, items: Iterable[Any]) -> list[list[Any]]:
        return [
            item.table_row(self.columns) if isinstance(item, Model) else [item] for item in items
        ]

    def _footer(self, shown: int) -> str:
        if len(self) > shown:
            return f"... {len(self) - shown} more ({len(self)} in all)"
        return self._more or ""

    def __repr__(self) -> str:
        return self.table()

    def table(self, max_rows: int | None = MAX_TABLE_ROWS, width: int | None = None) -> str:
        """The collection as a plain-text table (``max_rows=None``: every row)."""
        name = self.model.__name__ if self.model else "item"
        if not self:
            return f"(no {name} objects)" if not self._more else self._more
        shown = self[:max_rows] if max_rows is not None else self[:]
        text = render_table(list(self.columns), self._rows(shown), width or terminal_width())
        footer = self._footer(len(shown))
        return f"{text}\n{footer}" if footer else text

    __str__ = __repr__

    def _repr_pretty_(self, printer: Any, cycle: bool) -> None:
        printer.text("Collection(...)" if cycle else self.table())

    def _repr_html_(self, max_rows: int = MAX_TABLE_ROWS) -> str:
        """An escaped HTML table for Jupyter."""
        head = "".join(f"<th>{html.escape(c)}</th>" for c in self.columns)
        body = "".join(
            "<tr>" + "".join(f"<td>{html.escape(_cell(v))}</td>" for v in row) + "</tr>"
            for row in self._rows(self[:max_rows])
        )
        footer = self._footer(min(len(self), max_rows))
        note = f"<p>{html.escape(footer)}</p>" if footer else ""
        return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>{note}"

    def __getitem__(self, index: Any) -> Any:
        value = super().__getitem__(index)
        if isinstance(index, slice):
            return Collection(value, model=self.model, columns=self.columns)
        return value

    # -- export --------------------------------------------------------------------

    def to_dicts(self, columns: Iterable[str] | None = None) -> list[dict[str, Any]]:
        """Each item as a dict: every loaded field, or only ``columns``."""
        if columns is None:
            return [item.to_dict() if isinstance(item, Model) else {"value": item} for item in self]
        names = list(columns)
        return [dict(zip(names, row, strict=True)) for row in self._rows_for(names)]

    def _rows_for(self, names: list[str]) -> list[list[Any]]:
        return [item.table_row(names) if isinstance(item, Model) else [item] for item in self]

    def to_csv(
        self, path_or_file: str | Path | IO[str], columns: Iterable[str] | None = None
    ) -> None:
        """Write the table's columns (or ``columns``) as CSV with a header row."""
        names = list(columns or self.columns)
        if isinstance(path_or_file, (str, Path)):
            with open(path_or_file, "w", newline="", encoding="utf-8") as handle:
                self._write_csv(handle, names)
        else:
            self._write_csv(path_or_file, names)

    def _write_csv(self, handle: IO[str], names: list[str]) -> None:
        writer = csv.writer(handle)
        writer.writerow(names)
        for row in self._rows_for(names):
            writer.writerow(["" if v is None else v for v in row])

    def to_dataframe(self, columns: Iterable[str] | None = None) -> Any:
        """A pandas DataFrame of :meth:`to_dicts` (needs pandas installed)."""
        try:
            import pandas
        except ImportError:
            raise RegopsError(
                "to_dataframe() needs pandas, which is not installed: pip install pandas "
                "(or use .to_dicts() / .to_csv())"
            ) from None
        return pandas.DataFrame(self.to_dicts(columns))

    def csv_text(self, columns: Iterable[str] | None = None) -> str:
        """The CSV as a string."""
        buffer = io.StringIO()
        self.to_csv(buffer, columns)
        return buffer.getvalue()


# -- queries -----------------------------------------------------------------------


class Query:
    """A lazy, chainable, immutable query over one model's list endpoint.

    The model supplies ``_query_rows(conn, filters)`` (ascending by id, all
    pages), ``_query_last(conn, filters, n)`` (descending) and optionally
    ``_query_count(conn, filters)``. Nothing is requested until the query is
    iterated, counted, printed or sliced with ``first``/``last``.
    """

    def __init__(
        self,
        model: type[Model],
        filters: Mapping[str, Any] | None = None,
        *,
        connection: Connection | None = None,
    ) -> None:
        self.model = model
        self.filters = dict(filters or {})
        self._connection = connection

    @property
    def connection(self) -> Connection:
        return resolve_connection(self._connection)

    def _clone(self, **filters: Any) -> Query:
        return type(self)(self.model, {**self.filters, **filters}, connection=self._connection)

    def where(self, **filters: Any) -> Query:
        """A new query with more filters (checked now, sent later)."""
        self.model._check_filters(filters)
        return self._clone(**filters)

    def find_each(self, batch_size: int | None = None) -> Iterator[Model]:
        """Stream every matching object, page by page (keyset pagination)."""
        conn = self.connection
        for row in self.model._query_rows(conn, self.filters, batch_size=batch_size):
            yield self.model._from_row(row, conn)

    def __iter__(self) -> Iterator[Model]:
        return self.find_each()

    def all(self) -> Collection:
        """Every matching object, as a Collection."""
        return Collection(self.find_each(), model=self.model)

    def first(self, n: int | None = None) -> Any:
        """The lowest-id object (None if none), or a Collection of the ``n`` lowest."""
        wanted = _how_many(n)
        conn = self.connection
        items: list[Model] = []
        if wanted:
            for row in self.model._query_rows(conn, self.filters, batch_size=wanted):
                items.append(self.model._from_row(row, conn))
                if len(items) >= wanted:
                    break
        if n is None:
            return items[0] if items else None
        return Collection(items, model=self.model)

    def last(self, n: int | None = None) -> Any:
        """The highest-id object (None if none), or a Collection of the ``n`` highest.

        As in Rails, ``last(n)`` lists them in ascending id order.
        """
        wanted = _how_many(n)
        conn = self.connection
        rows = list(self.model._query_last(conn, self.filters, wanted)) if wanted else []
        items = [self.model._from_row(row, conn) for row in reversed(rows)]
        if n is None:
            return items[-1] if items else None
        return Collection(items, model=self.model)

    def count(self) -> int:
        """How many objects match (GitLab's X-Total when offered, else counted)."""
        counter = getattr(self.model, "_query_count", None)
        if counter is not None:
            total = counter(self.connection, self.filters)
            if total is not None:
                return total
        return sum(1 for _ in self.model._query_rows(self.connection, self.filters))

    def exists(self) -> bool:
        return self.first() is not None

    def find_by(self, **attrs: Any) -> Model | None:
        """The first object whose attributes equal ``attrs`` (client-side), or None."""
        for item in self.find_each():
            if all(item.get(k) == v for k, v in attrs.items()):
                return item
        return None

    def __repr__(self) -> str:
        rows: list[Model] = []
        for item in self.find_each():
            rows.append(item)
            if len(rows) > MAX_TABLE_ROWS:
                break
        more = None
        if len(rows) > MAX_TABLE_ROWS:
            rows = rows[:MAX_TABLE_ROWS]
            more = "... more (call .count() for the total, .all() for every row)"
        return Collection(rows, model=self.model, more=more).table()

    def _repr_pretty_(self, printer: Any, cycle: bool) -> None:
        printer.text(f"<{self.model.__name__} query>" if cycle else repr(self))

    def _repr_html_(self) -> str:
        return self.first(MAX_TABLE_ROWS)._repr_html_()

    def describe(self) -> str:
        """The query as text, without running it."""
        args = ", ".join(f"{k}={v!r}" for k, v in self.filters.items())
        return f"{self.model.__name__}.where({args})"


def _how_many(n: int | None) -> int:
    """``first(n)`` / ``last(n)``'s count: 1 when None; ValidationError when negative."""
    if n is None:
        return 1
    if isinstance(n, bool) or not isinstance(n, int) or n < 0:
        raise ValidationError("n", f"expected a whole number >= 0, got {n!r}")
    return n


def check_filters(model_name: str, filters: Mapping[str, Any], supported: Iterable[str]) -> None:
    """ValidationError naming unknown filters and listing the supported ones."""
    allowed = sorted(supported)
    unknown = sorted(set(filters) - set(allowed))
    if unknown:
        raise ValidationError(
            ",".join(unknown),
            f"{model_name}.where() cannot filter on {', '.join(unknown)}; "
            f"supported: {', '.join(allowed)}",
        )
