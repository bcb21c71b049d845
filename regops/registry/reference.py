"""References parsed once at the edge: digests, repository names, tags.

The grammars are the Distribution registry's (``reference/regexp.go``).

>>> Digest.of(b"hello").short
'2cf24dba5fb0'
>>> validate_repository_name("group/app")
'group/app'
"""

from __future__ import annotations

import hashlib
import re

from regops.errors import ValidationError

DIGEST_ALGORITHM = "sha256"  # the only algorithm the registry and GitLab use for content
SHORT_DIGEST_HEX = 12  # hex characters of a short digest, as docker prints image ids
MAX_REPOSITORY_NAME = 255  # the registry refuses longer names (NAME_INVALID)
_DIGEST = re.compile(r"sha256:[0-9a-f]{64}")
_PATH_COMPONENT = r"[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*"
_REPOSITORY = re.compile(rf"{_PATH_COMPONENT}(?:/{_PATH_COMPONENT})*")
_TAG = re.compile(r"[\w][\w.-]{0,127}", re.ASCII)


class Digest(str):
    """A validated ``sha256:<64 hex>`` content digest."""

    __slots__ = ()

    def __new__(cls, value: object) -> Digest:  # any value: validated here
        if isinstance(value, Digest):
            return value
        if not isinstance(value, str) or not _DIGEST.fullmatch(value):
            raise ValidationError("digest", f"expected sha256:<64 lowercase hex>, got {value!r}")
        return super().__new__(cls, value)

    @classmethod
    def parse(cls, text: object, field: str = "digest") -> Digest:
        """A Digest from text (any value is checked: it often comes from JSON), the error naming
        ``field``."""
        try:
            return cls(text.strip() if isinstance(text, str) else text)
        except ValidationError:
            raise ValidationError(
                field, f"expected sha256:<64 lowercase hex>, got {text!r}"
            ) from None

    @classmethod
    def of(cls, data: bytes) -> Digest:
        """The digest of ``data``."""
        return cls(f"{DIGEST_ALGORITHM}:{hashlib.sha256(data).hexdigest()}")

    @property
    def algorithm(self) -> str:
        return self.split(":", 1)[0]

    @property
    def hex(self) -> str:
        return self.split(":", 1)[1]

    @property
    def short(self) -> str:
        """The first 12 hex characters (how docker shows image ids)."""
        return self.hex[:SHORT_DIGEST_HEX]

    def __repr__(self) -> str:
        return f"Digest({str(self)!r})"

    def verify(self, data: bytes) -> bool:
        """True when ``data`` hashes to this digest."""
        return hashlib.sha256(data).hexdigest() == self.hex


def validate_repository_name(name: str) -> str:
    """``name`` when it is a valid repository path (``group/sub/app``)."""
    if not isinstance(name, str) or not _REPOSITORY.fullmatch(name):
        raise ValidationError(
            "repository", f"invalid repository name {name!r} (lowercase components joined by /)"
        )
    if len(name) > MAX_REPOSITORY_NAME:
        raise ValidationError("repository", f"name longer than {MAX_REPOSITORY_NAME} characters")
    return name


def validate_tag(tag: str) -> str:
    """``tag`` when it is a valid tag (``[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}``)."""
    if not isinstance(tag, str) or not _TAG.fullmatch(tag):
        raise ValidationError("tag", f"invalid tag {tag!r}")
    return tag
