"""Secret checks whose failures never print the secret (pytest shows compared values)."""

from __future__ import annotations

from regops.secrets import Secret


def assert_hidden(secret: str | Secret, *texts: str, what: str = "a secret") -> None:
    """Assert ``secret`` is in none of ``texts``; a failure says which text, not the value."""
    value = secret.reveal() if isinstance(secret, Secret) else secret
    assert isinstance(value, str) and value, "empty secret: the check could not fail"
    found = [index for index, text in enumerate(texts) if value in text]
    assert not found, f"{what} appears in text number(s) {found}"
