"""The subset of Ruby that ``/etc/gitlab/gitlab.rb`` is written in, read without Ruby.

gitlab.rb is Ruby, but the settings in it are assignments of literals:
``gitlab_rails['registry_issuer'] = "omnibus-gitlab-issuer"``, a hash or an
array of hashes (``registry['notifications'] = [{ 'name' => ... }]``), and
one-argument calls (``external_url 'https://gitlab.example.com'``). This
module reads exactly those: strings (single and double quoted, ``\\n``
escapes), integers, floats, ``true``/``false``/``nil``, symbols, arrays and
hashes (``=>`` and ``key:`` forms). Anything else (interpolation, method
calls, ``if``) is not evaluated: its line number is reported, never its text
(a gitlab.rb holds secrets).

>>> read_gitlab_rb("gitlab_rails['registry_issuer'] = 'x'\\n").values
{('gitlab_rails', 'registry_issuer'): 'x'}
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

_IDENT_START = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ_")
_IDENT_CHARS = _IDENT_START | frozenset("0123456789")
_DOUBLE_ESCAPES = {"n": "\n", "t": "\t", "r": "\r", "s": " ", "0": "\0", "e": "\x1b"}
KEYWORDS = {"true": True, "false": False, "nil": None}


class RubyParseError(ValueError):
    """A construct outside the literal subset; carries the line, never the text."""

    def __init__(self, line: int, what: str) -> None:
        super().__init__(f"line {line}: {what}")
        self.line = line
        self.what = what


@dataclass
class GitLabRb:
    """What a gitlab.rb sets: ``values[(prefix, key, ...)]`` and where (``lines``).

    ``values`` maps the receiver and keys of each assignment to its value:
    ``registry['storage']['s3'] = {...}`` is ``("registry", "storage", "s3")``;
    a call ``external_url 'https://...'`` is ``("external_url",)``.
    ``skipped`` lists the lines of statements that are not plain literals.
    """

    values: dict[tuple[str, ...], Any] = field(default_factory=dict)
    lines: dict[tuple[str, ...], int] = field(default_factory=dict)
    skipped: list[int] = field(default_factory=list)

    def get(self, *path: str, default: Any = None) -> Any:
        """The value at ``path``, also found inside a hash assigned to a shorter path."""
        if path in self.values:
            return self.values[path]
        for cut in range(len(path) - 1, 0, -1):
            head = path[:cut]
            if head in self.values:
                value: Any = self.values[head]
                for key in path[cut:]:
                    if not isinstance(value, dict) or key not in value:
                        return default
                    value = value[key]
                return value
        return default

    def line_of(self, *path: str) -> int | None:
        """The line that set ``path`` (or the hash holding it)."""
        for cut in range(len(path), 0, -1):
            if path[:cut] in self.lines:
                return self.lines[path[:cut]]
        return None

    def __contains__(self, path: object) -> bool:
        return isinstance(path, tuple) and self.get(*path, default=_MISSING) is not _MISSING


_MISSING = object()


class _Reader:
    def __init__(self, text: str) -> None:
        self.text = text
        self.pos = 0
        self.depth = 0  # inside brackets newlines do not end a statement

    # -- position ----------------------------------------------------------------------
    @property
    def line(self) -> int:
        return self.text.count("\n", 0, self.pos) + 1

    def peek(self, count: int = 1) -> str:
        return self.text[self.pos : self.pos + count]

    def at_end(self) -> bool:
        return self.pos >= len(self.text)

    def skip_space(self, newlines: bool) -> None:
        """Skip blanks and comments; newlines too when ``newlines`` (inside brackets)."""
        while not self.at_end():
            char = self.text[self.pos]
            if char == "#":
                end = self.text.find("\n", self.pos)
                self.pos = len(self.text) if end < 0 else end
            elif char in " \t\r" or (char == "\\" and self.peek(2) == "\\\n"):
                self.pos += 2 if char == "\\" else 1
            elif char == "\n" and newlines:
                self.pos += 1
            else:
                return

    def skip_line(self) -> None:
        end = self.text.find("\n", self.pos)
        self.pos = len(self.text) if end < 0 else end + 1

    def expect(self, token: str) -> None:
        self.skip_space(self.depth > 0)
        if self.peek(len(token)) != token:
            raise RubyParseError(self.line, f"expected {token!r}")
        self.pos += len(token)

    # -- values ------------------------------------------------------------------------
    def identifier(self) -> str:
        start = self.pos
        if self.at_end() or self.text[self.pos] not in _IDENT_START:
            raise RubyParseError(self.line, "expected a name")
        while not self.at_end() and self.text[self.pos] in _IDENT_CHARS:
            self.pos += 1
        return self.text[start : self.pos]

    def value(self) -> Any:
        self.skip_space(self.depth > 0)
        char = self.peek()
        if char in ("'", '"'):
            return self.string()
        if char == "[":
            return self.array()
        if char == "{":
            return self.hash()
        if char == ":" and self.peek(2) != "::":
            self.pos += 1
            if self.peek() in ("'", '"'):
                return self.string()
            return self.identifier()
        if char == "-" or char.isdigit():
            return self.number()
        if char in _IDENT_START:
            word = self.identifier()
            if word in KEYWORDS:
                return KEYWORDS[word]
        raise RubyParseError(self.line, "not a literal")

    def number(self) -> int | float:
        start = self.pos
        if self.peek() == "-":
            self.pos += 1
        while not self.at_end() and (self.text[self.pos].isdigit() or self.text[self.pos] in "._"):
            self.pos += 1
        raw = self.text[start : self.pos].replace("_", "")
        try:
            return float(raw) if "." in raw else int(raw)
        except ValueError:
            raise RubyParseError(self.line, "not a number") from None

    def string(self) -> str:
        quote = self.text[self.pos]
        self.pos += 1
        out: list[str] = []
        while True:
            if self.at_end():
                raise RubyParseError(self.line, "unterminated string")
            char = self.text[self.pos]
            self.pos += 1
            if char == quote:
                return "".join(out)
            if char == "\\" and not self.at_end():
                nxt = self.text[self.pos]
                self.pos += 1
                if quote == "'":
                    out.append(nxt if nxt in ("'", "\\") else "\\" + nxt)
                else:
                    out.append(_DOUBLE_ESCAPES.get(nxt, nxt))
            elif quote == '"' and char == "#" and self.peek() == "{":
                raise RubyParseError(self.line, "string interpolation")
            else:
                out.append(char)

    def array(self) -> list[Any]:
        self.expect("[")
        self.depth += 1
        items: list[Any] = []
        while True:
            self.skip_space(True)
            if self.peek() == "]":
                break
            items.append(self.value())
            self.skip_space(True)
            if self.peek() == ",":
                self.pos += 1
                continue
            if self.peek() != "]":
                raise RubyParseError(self.line, "expected ',' or ']'")
        self.pos += 1
        self.depth -= 1
        return items

    def hash(self) -> dict[Any, Any]:
        self.expect("{")
        self.depth += 1
        items: dict[Any, Any] = {}
        while True:
            self.skip_space(True)
            if self.peek() == "}":
                break
            key = self.hash_key()
            items[key] = self.value()
            self.skip_space(True)
            if self.peek() == ",":
                self.pos += 1
                continue
            if self.peek() != "}":
                raise RubyParseError(self.line, "expected ',' or '}'")
        self.pos += 1
        self.depth -= 1
        return items

    def hash_key(self) -> Any:
        """``'key' =>``, ``:key =>``, ``key:`` or ``"key":``."""
        if self.peek() in _IDENT_START:
            start = self.pos
            word = self.identifier()
            if self.peek() == ":" and self.peek(2) != "::":
                self.pos += 1
                return word
            self.pos = start
        key = self.value()
        self.skip_space(True)
        if self.peek() == ":" and isinstance(key, str):
            self.pos += 1
            return key
        self.expect("=>")
        return key

    # -- statements ----------------------------------------------------------------------
    def statement(self) -> tuple[tuple[str, ...], Any, int]:
        line = self.line
        name = self.identifier()
        path = [name]
        while True:
            self.skip_space(False)
            if self.peek() != "[":
                break
            self.pos += 1
            self.depth += 1
            key = self.value()
            self.depth -= 1
            self.expect("]")
            if not isinstance(key, (str, int)):
                raise RubyParseError(line, "index is not a string")
            path.append(str(key))
        self.skip_space(False)
        if self.peek() == "=" and self.peek(2) != "==":
            self.pos += 1
            value = self.value()
        elif len(path) == 1:  # a call: external_url 'https://...' or external_url('...')
            if self.peek() == "(":
                self.pos += 1
                self.depth += 1
                value = self.value()
                self.depth -= 1
                self.expect(")")
            else:
                value = self.value()
        else:
            raise RubyParseError(line, "not an assignment")
        self.skip_space(False)
        if not self.at_end() and self.peek() not in ("\n", ";"):
            raise RubyParseError(line, "trailing text")
        return tuple(path), value, line


def read_gitlab_rb(text: str) -> GitLabRb:
    """Every literal assignment in ``text``; other statements are listed by line."""
    reader = _Reader(text)
    result = GitLabRb()
    while True:
        reader.depth = 0
        reader.skip_space(True)
        if reader.at_end():
            return result
        if reader.peek() == ";":
            reader.pos += 1
            continue
        start = reader.pos
        try:
            path, value, line = reader.statement()
        except RubyParseError as exc:
            result.skipped.append(exc.line)
            reader.pos = start
            reader.skip_line()
            continue
        result.values[path] = value
        result.lines[path] = line
