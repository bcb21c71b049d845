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
from collections.abc import Callable, Hashable, Iterable, Iterator, Mapping
from datetime import datetime
from pathlib import Path
from typing import (
    IO,
    TYPE_CHECKING,
    Any,
    ClassVar,
    Generic,
    Protocol,
    SupportsIndex,
    TypeVar,
    overload,
)

from tabulate import tabulate

from regops.connection import Connection, default_connection
from regops.errors import DoesNotExist, RegopsError, UpdateAllError, ValidationError
from regops.registry.manifest import parse_rfc3339

MAX_TABLE_ROWS = 20  # rows a table shows before "... N more": one screen in a console
MIN_COLUMN_WIDTH = 8  # a column is never cut narrower than this when fitting the terminal
ELLIPSIS = "…"
FALLBACK_TERMINAL = (120, 40)  # when there is no terminal (a pipe, a notebook kernel)

if TYPE_CHECKING:
    from typing_extensions import Self  # typing.Self is Python 3.11+; annotations only

M = TypeVar("M", bound="Model")
T = TypeVar("T")  # what a Collection holds: models, or plain values
Owner = TypeVar("Owner", bound="Model")  # the model a relation belongs to
Value = TypeVar("Value")  # what a relation loads
Q = TypeVar("Q", bound="Query[Any]")  # a query of any model, handed back as its own class


class PrettyPrinter(Protocol):
    """What ``_repr_pretty_`` uses of IPython's pretty printer."""

    def text(self, obj: str) -> None: ...


def resolve_connection(connection: Connection | None) -> Connection:
    """``connection``, or the default one set by ``regops.connect()`` / the console."""
    if connection is not None:
        return connection
    return default_connection()


def parse_time(value: object) -> datetime | None:
    """An aware datetime from GitLab's / the registry's time strings (None stays None)."""
    if value is None or isinstance(value, datetime):
        return value
    parsed = parse_rfc3339(value)
    if parsed is None:
        raise ValidationError("time", f"not an RFC 3339 time: {value!r}")
    return parsed


# -- relations ---------------------------------------------------------------------


class relation(Generic[Owner, Value]):
    """A lazy, cached attribute loaded by a method: ``project.container_repositories``.

    The value is cached on the instance until ``reload()``.
    """

    def __init__(self, loader: Callable[[Owner], Value]) -> None:
        self.loader = loader
        self.name = loader.__name__
        self.__doc__ = loader.__doc__

    def __set_name__(self, owner: type, name: str) -> None:
        self.name = name

    @overload
    def __get__(self, obj: None, owner: type | None = None) -> Self: ...

    @overload
    def __get__(self, obj: Owner, owner: type | None = None) -> Value: ...

    def __get__(self, obj: Owner | None, owner: type | None = None) -> Value | Self:
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

    def __set__(self, obj: Owner, value: Value) -> None:
        obj.__dict__.setdefault("_relations", {})[self.name] = value


# -- models ------------------------------------------------------------------------


class instance_only:
    """A method of objects only: called on the class, it says what to call instead
    (``Project.get(3)`` would otherwise fail with a confusing TypeError)."""

    def __init__(self, message: str) -> None:
        self.message = message

    def __call__(self, method: Callable[..., Any]) -> instance_only:
        self.method = method
        self.__doc__ = method.__doc__
        return self

    def __get__(self, obj: object, owner: type | None = None) -> Callable[..., Any]:
        if obj is not None:
            bound: Callable[..., Any] = self.method.__get__(obj, owner)
            return bound
        message = self.message.format(model=owner.__name__ if owner else "Model")

        def refuse(*args: object, **kwargs: object) -> None:
            raise ValidationError("get", message)

        return refuse


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
    query_class: ClassVar[type[Query]]  # set below Query; a model may use a subclass
    # Every model class by name, filled as they are defined: models find each other
    # here (``Model.named("Project")``) instead of importing each other.
    _by_name: ClassVar[dict[str, type[Model]]] = {}

    def __init_subclass__(cls, **kwargs: object) -> None:
        super().__init_subclass__(**kwargs)
        Model._by_name[cls.__name__] = cls
        if "DoesNotExist" not in cls.__dict__:
            parents = tuple(
                base.DoesNotExist for base in cls.__bases__ if issubclass(base, Model)
            ) or (DoesNotExist,)
            cls.DoesNotExist = type(
                "DoesNotExist",
                parents,
                {"__module__": cls.__module__, "__qualname__": f"{cls.__qualname__}.DoesNotExist"},
            )

    @staticmethod
    def named(name: str) -> Any:
        """The model class called ``name`` (``Model.named("Project")``).

        Typed ``Any``: the class is looked up at run time; callers annotate what
        they build with it (the names they import under TYPE_CHECKING).
        """
        try:
            return Model._by_name[name]
        except KeyError:
            raise LookupError(f"no model named {name!r} is defined") from None

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

    def __getattr__(self, name: str) -> Any:  # a field of GitLab's JSON answer
        if name.startswith("__") or name in ("_data", "_connection", "_relations"):
            raise AttributeError(name)
        data = self.__dict__.get("_data", {})
        if name in data:
            return data[name]
        if name in type(self).fields:
            raise AttributeError(self._missing_reason(name))
        raise AttributeError(f"{type(self).__name__} has no attribute {name!r}")

    def __setattr__(self, name: str, value: object) -> None:
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

    @instance_only(
        "{model}.get is one object's attribute lookup (obj.get(name, default)); to find an "
        "object by id use {model}.find(id) (raises when missing) or {model}.find_by_id(id) "
        "(None when missing)"
    )
    def get(self, name: str, default: object = None) -> Any:  # Any: as __getattr__
        """The attribute ``name`` if known, else ``default`` (never a request)."""
        return self._data.get(name, default)

    @property
    def attributes(self) -> dict[str, Any]:  # Any: GitLab's JSON values
        """The object's fields and values (``obj.attributes`` in a Rails console)."""
        declared = {name: self._data.get(name) for name in type(self).fields}
        return {**declared, **{k: v for k, v in self._data.items() if k not in declared}}

    @classmethod
    def find_by_id(cls: type[M], object_id: int | str, **options: Any) -> M | None:
        """The object with this id, or None (Rails' ``find_by_id``; ``find`` raises)."""
        finder = getattr(cls, "find", None)
        if finder is None:
            raise ValidationError("find_by_id", f"{cls.__name__} objects cannot be found by id")
        try:
            found: M = finder(object_id, **options)
        except cls.DoesNotExist:
            return None
        return found

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

    # -- query hooks (models that can be listed override them) ---------------------

    @classmethod
    def query(cls, *, connection: Connection | None = None) -> Query[Self]:
        """A query over every object of this model (lazy: nothing sent yet)."""
        return cls.query_class(cls, connection=connection)

    @classmethod
    def _query_items(
        cls, conn: Connection, query: Query[Self], batch_size: int | None = None
    ) -> Iterator[Self]:
        raise ValidationError(cls.__name__, f"{cls.__name__} objects cannot be listed this way")

    @classmethod
    def _where(cls, query: Q, filters: Mapping[str, Any]) -> Q:
        raise ValidationError(cls.__name__, f"{cls.__name__}.where() is not supported")

    @classmethod
    def _check_update(cls, attrs: Mapping[str, Any]) -> None:
        raise ValidationError(cls.__name__, f"{cls.__name__} objects cannot be updated")

    # -- identity and display ------------------------------------------------------

    def _key(self) -> Hashable:
        return self._data.get("id")

    def __eq__(self, other: object) -> bool:
        if type(other) is not type(self) or not isinstance(other, Model):
            return NotImplemented
        key = self._key()
        return key is not None and key == other._key()

    def __hash__(self) -> int:
        return hash((type(self).__name__, self._key()))

    def __repr__(self) -> str:
        parts = [
            f"{name}={self._data[name]!r}"
            for name in type(self).repr_fields
            if self._data.get(name) is not None
        ]
        return f"<{type(self).__name__} {' '.join(parts)}>"

    def table_row(self, columns: Iterable[str]) -> list[object]:
        """Values of ``columns`` for a table; a missing value is blank (no request)."""
        return [self._table_value(column) for column in columns]

    def _table_value(self, column: str) -> object:
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


def _cell(value: object) -> str:
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


def render_table(headers: list[str], rows: list[list[object]], width: int) -> str:
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


class Collection(list[T], Generic[T]):
    """A list of models that prints as a table (truncated) and exports its rows.

    >>> repos = project.container_repositories      # doctest: +SKIP
    >>> repos.to_csv("repos.csv")                    # doctest: +SKIP
    """

    def __init__(
        self,
        items: Iterable[T] = (),
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

    def _rows(self, items: Iterable[T]) -> list[list[object]]:
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

    def _repr_pretty_(self, printer: PrettyPrinter, cycle: bool) -> None:
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

    @overload
    def __getitem__(self, index: SupportsIndex) -> T: ...

    @overload
    def __getitem__(self, index: slice) -> Collection[T]: ...

    def __getitem__(self, index: SupportsIndex | slice) -> T | Collection[T]:
        if isinstance(index, slice):
            return Collection(super().__getitem__(index), model=self.model, columns=self.columns)
        return super().__getitem__(index)

    # -- export --------------------------------------------------------------------

    def to_dicts(self, columns: Iterable[str] | None = None) -> list[dict[str, Any]]:
        """Each item as a dict: every loaded field, or only ``columns``."""
        if columns is None:
            return [item.to_dict() if isinstance(item, Model) else {"value": item} for item in self]
        names = list(columns)
        return [dict(zip(names, row, strict=True)) for row in self._rows_for(names)]

    def _rows_for(self, names: list[str]) -> list[list[object]]:
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

    def to_dataframe(self, columns: Iterable[str] | None = None) -> Any:  # pandas: untyped here
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

REPR_MORE = "... more (call .count() for the total, .all() for every row)"
Predicate = Callable[[Any], bool]  # called with the query's model objects


class Query(Generic[M]):
    """A lazy, chainable, immutable query over one model; its results are cached once read.

    Nothing is requested until the query is iterated, sized, indexed, printed or
    counted. What has been read is kept (as Django's ``_result_cache``): printing
    the first rows, then iterating, reads each object once. ``reload()`` forgets
    it; a new query (``where``, ``filter``) starts empty.

    The model supplies the hooks: ``_query_items(conn, query, batch_size)`` (every
    matching object, ascending by id), ``_where(query, filters)`` (how ``where``
    applies: server-side filters or client-side predicates), and optionally
    ``_query_last(conn, query, n)`` (the n highest ids, descending) and
    ``_query_count(conn, query)`` (a count without reading everything).
    """

    def __init__(
        self,
        model: type[M],
        filters: Mapping[str, Any] | None = None,
        *,
        connection: Connection | None = None,
        predicates: tuple[tuple[str, Predicate], ...] = (),
        source: Iterable[Any] | None = None,  # the model's own: ExpirationPolicy's projects
    ) -> None:
        self.model = model
        self.filters = dict(filters or {})  # sent to GitLab
        self.predicates = predicates  # (description, test) applied here, in order
        self.source = source  # what the model reads from (e.g. the projects of policies)
        self._connection = connection
        self._cache: list[M] = []
        self._rest: Iterator[M] | None = None
        self._complete = False

    @property
    def connection(self) -> Connection:
        return resolve_connection(self._connection)

    def _clone(
        self,
        *,
        filters: Mapping[str, Any] | None = None,
        predicates: tuple[tuple[str, Predicate], ...] | None = None,
    ) -> Self:
        """A new query of the same class: these changed, the rest (and nothing read) kept."""
        return type(self)(
            self.model,
            self.filters if filters is None else filters,
            connection=self._connection,
            predicates=self.predicates if predicates is None else predicates,
            source=self.source,
        )

    # -- building ------------------------------------------------------------------

    def where(self, **filters: object) -> Self:
        """A new query with more filters (checked now, applied when read)."""
        return self.model._where(self, filters)

    def filter(self, test: Predicate, description: str = "filter") -> Self:
        """A new query keeping only the objects ``test`` accepts (checked here)."""
        return self._clone(predicates=(*self.predicates, (description, test)))

    def with_filters(self, filters: Mapping[str, Any]) -> Self:
        """A new query with more server-side filters (the model's ``_where`` uses it)."""
        return self._clone(filters={**self.filters, **filters})

    # -- reading -------------------------------------------------------------------

    def find_each(self, batch_size: int | None = None) -> Iterator[M]:
        """Stream every matching object, page by page, without keeping them."""
        conn = self.connection
        for item in self.model._query_items(conn, self, batch_size):
            if all(test(item) for _, test in self.predicates):
                yield item

    def _fill(self, wanted: int | None) -> None:
        """Read until ``wanted`` objects are cached (None: all of them)."""
        if self._complete or (wanted is not None and len(self._cache) >= wanted):
            return
        if self._rest is None:
            self._rest = self.find_each()
        for item in self._rest:
            self._cache.append(item)
            if wanted is not None and len(self._cache) >= wanted:
                return
        self._complete = True
        self._rest = None

    def __iter__(self) -> Iterator[M]:
        index = 0
        while True:
            if index >= len(self._cache):
                self._fill(index + 1)
                if index >= len(self._cache):
                    return
            yield self._cache[index]
            index += 1

    def __len__(self) -> int:
        self._fill(None)
        return len(self._cache)

    def __bool__(self) -> bool:
        self._fill(1)
        return bool(self._cache)

    @overload
    def __getitem__(self, index: int) -> M: ...

    @overload
    def __getitem__(self, index: slice) -> Collection[M]: ...

    def __getitem__(self, index: int | slice) -> M | Collection[M]:
        if isinstance(index, slice):
            stop = index.stop
            self._fill(stop if stop is not None and stop >= 0 and (index.start or 0) >= 0 else None)
            return Collection(self._cache[index], model=self.model)
        self._fill(index + 1 if index >= 0 else None)
        return self._cache[index]

    def reload(self) -> Self:
        """Forget what was read; the next use asks GitLab again. Returns self."""
        self._cache, self._rest, self._complete = [], None, False
        return self

    def all(self) -> Collection[M]:
        """Every matching object, as a Collection (read once, then cached)."""
        self._fill(None)
        return Collection(self._cache, model=self.model)

    @overload
    def first(self, n: None = None) -> M | None: ...

    @overload
    def first(self, n: int) -> Collection[M]: ...

    def first(self, n: int | None = None) -> M | Collection[M] | None:
        """The lowest-id object (None if none), or a Collection of the ``n`` lowest."""
        wanted = _how_many(n)
        self._fill(wanted)
        items = self._cache[:wanted]
        if n is None:
            return items[0] if items else None
        return Collection(items, model=self.model)

    @overload
    def last(self, n: None = None) -> M | None: ...

    @overload
    def last(self, n: int) -> Collection[M]: ...

    def last(self, n: int | None = None) -> M | Collection[M] | None:
        """The highest-id object (None if none), or a Collection of the ``n`` highest.

        As in Rails, ``last(n)`` lists them in ascending id order. Asks GitLab
        for the highest ids when it can, instead of reading everything.
        """
        wanted = _how_many(n)
        last_hook = getattr(self.model, "_query_last", None)
        if self._complete or last_hook is None or self.predicates:
            self._fill(None)
            items = self._cache[len(self._cache) - wanted :] if wanted else []
        else:
            items = list(reversed(last_hook(self.connection, self, wanted))) if wanted else []
        if n is None:
            return items[-1] if items else None
        return Collection(items, model=self.model)

    def count(self) -> int:
        """How many objects match (GitLab's count when it gives one and nothing is
        filtered here; else counted by reading them, which are then cached)."""
        counter = getattr(self.model, "_query_count", None)
        if not self._complete and counter is not None and not self.predicates:
            total = counter(self.connection, self)
            if total is not None:
                return total
        return len(self)

    def exists(self) -> bool:
        return bool(self)

    def find_by(self, **attrs: object) -> M | None:
        """The first object whose attributes equal ``attrs`` (compared here), or None."""
        for item in self:
            if all(item.get(k) == v for k, v in attrs.items()):
                return item
        return None

    def update_all(self, **attrs: object) -> Collection[M]:
        """``obj.update(**attrs)`` for every matching object; all are tried.

        Values are checked once before anything is sent
        (``model._check_update``). Failures are collected and raised together
        (:class:`UpdateAllError`) after the rest.
        """
        self.model._check_update(attrs)
        updated: list[M] = []
        failed: dict[Hashable, Exception] = {}
        for item in self:
            try:
                updated.append(item.update(**attrs))
            except RegopsError as exc:
                failed[item._key()] = exc
        if failed:
            raise UpdateAllError(updated, failed)
        return Collection(updated, model=self.model)

    # -- export and display --------------------------------------------------------

    def to_dicts(self, columns: Iterable[str] | None = None) -> list[dict[str, Any]]:
        return self.all().to_dicts(columns)

    def to_csv(
        self, path_or_file: str | Path | IO[str], columns: Iterable[str] | None = None
    ) -> None:
        self.all().to_csv(path_or_file, columns)

    def to_dataframe(self, columns: Iterable[str] | None = None) -> Any:  # pandas: untyped here
        return self.all().to_dataframe(columns)

    def _shown(self) -> Collection[M]:
        """The first rows for a repr (read once, kept for later use of the query)."""
        self._fill(MAX_TABLE_ROWS + 1)
        more = REPR_MORE if len(self._cache) > MAX_TABLE_ROWS else None
        return Collection(self._cache[:MAX_TABLE_ROWS], model=self.model, more=more)

    def __repr__(self) -> str:
        return self._shown().table()

    def _repr_pretty_(self, printer: PrettyPrinter, cycle: bool) -> None:
        printer.text(f"<{self.model.__name__} query>" if cycle else repr(self))

    def _repr_html_(self) -> str:
        return self._shown()._repr_html_()

    def describe(self) -> str:
        """The query as text, without running it."""
        parts = [f"{k}={v!r}" for k, v in self.filters.items()]
        parts += [description for description, _ in self.predicates]
        return f"{self.model.__name__}.where({', '.join(parts)})"


Model.query_class = Query


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
