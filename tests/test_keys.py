"""Signing keys: generation, checks, gitlab.rb lines, and the ``regops keys`` command."""

from __future__ import annotations

import stat

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from regops.cli import main
from regops.errors import KeyFileError, ValidationError
from regops.registry.keys import (
    check_pair,
    generate_key,
    gitlab_rb_lines,
    libtrust_kid,
    load_private_key,
    private_key_pem,
    write_key_and_certificate,
)


@pytest.fixture(scope="module")
def pair(tmp_path_factory):
    """A 2048-bit pair on disk (generation is the slow part, so shared)."""
    return write_key_and_certificate(tmp_path_factory.mktemp("pair"), generate_key(bits=2048))


@pytest.fixture(scope="module")
def other_pair(tmp_path_factory):
    return write_key_and_certificate(tmp_path_factory.mktemp("other"), generate_key("ec"))


def test_write_sets_private_mode_and_matches(pair):
    key_path, cert_path = pair
    assert stat.S_IMODE(key_path.stat().st_mode) == 0o600
    assert key_path.read_text().startswith("-----BEGIN RSA PRIVATE KEY-----")
    assert cert_path.read_text().startswith("-----BEGIN CERTIFICATE-----")
    kid = check_pair(key_path, cert_path)
    assert kid == libtrust_kid(load_private_key(key_path))


def test_write_refuses_to_overwrite(pair):
    key_path, _ = pair
    before = key_path.read_bytes()
    with pytest.raises(KeyFileError, match="already exists"):
        write_key_and_certificate(key_path.parent, generate_key("ec"))
    assert key_path.read_bytes() == before


def test_ec_pair(other_pair):
    key_path, cert_path = other_pair
    assert check_pair(key_path, cert_path)
    assert "PRIVATE KEY" in key_path.read_text()


def test_generate_rejects_weak_and_unknown():
    with pytest.raises(ValidationError, match="2048"):
        generate_key("rsa", 1024)
    with pytest.raises(ValidationError, match="unknown key type"):
        generate_key("dsa")


def test_check_pair_mismatch(pair, other_pair):
    with pytest.raises(KeyFileError, match="does not match"):
        check_pair(pair[0], other_pair[1])


def test_check_pair_missing_and_not_pem(tmp_path, pair):
    with pytest.raises(KeyFileError, match="no such file"):
        check_pair(tmp_path / "absent.key", pair[1])
    junk = tmp_path / "junk.pem"
    junk.write_text("hello")
    with pytest.raises(KeyFileError, match="not a PEM file"):
        check_pair(junk, pair[1])
    with pytest.raises(KeyFileError, match="not a PEM certificate"):
        check_pair(pair[0], junk)
    with pytest.raises(KeyFileError, match="not a PEM private key"):
        check_pair(pair[1], pair[1])


def test_weak_key_refused(tmp_path):
    weak = rsa.generate_private_key(public_exponent=65537, key_size=1024)
    path = tmp_path / "weak.key"
    path.write_bytes(
        weak.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    with pytest.raises(KeyFileError, match="too weak"):
        load_private_key(path)


def test_errors_never_carry_key_material(pair, other_pair):
    key_text = pair[0].read_text()
    body = key_text.splitlines()[1]
    with pytest.raises(KeyFileError) as info:
        check_pair(pair[0], other_pair[1])
    assert body not in str(info.value)
    assert body not in repr(private_key_pem(load_private_key(pair[0])))


def test_gitlab_rb_lines(pair):
    key_text, cert_text = pair[0].read_text(), pair[1].read_text()
    lines = gitlab_rb_lines(key_text, cert_text).splitlines()
    assert len(lines) == 2
    assert lines[0].startswith("registry['internal_key'] = \"-----BEGIN RSA PRIVATE KEY-----\\n")
    assert lines[1].startswith("registry['internal_certificate'] = \"-----BEGIN CERTIFICATE-----")
    # Ruby's "\n" escapes turn back into the file contents.
    value = lines[0].split(" = ", 1)[1][1:-1].replace("\\n", "\n")
    assert value == key_text


# --------------------------------------------------------------------------- CLI


def test_cli_generate_writes_the_snippet_and_never_prints_the_key(tmp_path, capsys):
    out = tmp_path / "keys"
    assert main(["keys", "generate", "--out", str(out), "--bits", "2048"]) == 0
    captured = capsys.readouterr()
    key_text = (out / "registry.key").read_text()
    cert_text = (out / "registry.crt").read_text()
    snippet = out / "gitlab.rb.snippet"
    for private in (out / "registry.key", snippet):
        assert stat.S_IMODE(private.stat().st_mode) == 0o600
    assert gitlab_rb_lines(key_text, cert_text) in snippet.read_text()
    for line in key_text.splitlines()[1:-1]:  # no line of the key body, anywhere
        assert line not in captured.out and line not in captured.err
    assert "PRIVATE KEY" not in captured.out + captured.err
    assert cert_text in captured.out  # the certificate is public: shown
    assert str(snippet) in captured.out
    assert check_pair(out / "registry.key", out / "registry.crt") in captured.out


def test_cli_generate_no_gitlab_rb_and_refuses_overwrite(tmp_path, capsys):
    out = tmp_path / "keys"
    assert main(["keys", "generate", "--out", str(out), "--type", "ec", "--no-gitlab-rb"]) == 0
    first = capsys.readouterr()
    assert not (out / "gitlab.rb.snippet").exists()
    assert "PRIVATE" not in first.out + first.err
    assert main(["keys", "generate", "--out", str(out), "--type", "ec"]) == 1
    err = capsys.readouterr().err.strip()
    assert "already exists" in err and len(err.splitlines()) == 1


def test_cli_generate_weak_bits_is_usage_error(tmp_path, capsys):
    assert main(["keys", "generate", "--out", str(tmp_path), "--bits", "1024"]) == 2
    assert "too weak" in capsys.readouterr().err
    assert not (tmp_path / "registry.key").exists()


def test_cli_check(pair, capsys):
    assert main(["keys", "check", str(pair[0]), str(pair[1])]) == 0
    out = capsys.readouterr().out
    assert "match" in out and check_pair(*pair) in out


@pytest.mark.parametrize("case", ["missing", "not_pem", "mismatch", "weak"])
def test_cli_check_bad_input(case, pair, other_pair, tmp_path, capsys):
    key, cert = str(pair[0]), str(pair[1])
    if case == "missing":
        key = str(tmp_path / "nope.key")
    elif case == "not_pem":
        (tmp_path / "x.key").write_text("not a key")
        key = str(tmp_path / "x.key")
    elif case == "mismatch":
        cert = str(other_pair[1])
    else:
        weak = rsa.generate_private_key(public_exponent=65537, key_size=1024)
        (tmp_path / "weak.key").write_bytes(
            weak.private_bytes(
                serialization.Encoding.PEM,
                serialization.PrivateFormat.TraditionalOpenSSL,
                serialization.NoEncryption(),
            )
        )
        key = str(tmp_path / "weak.key")
    assert main(["keys", "check", key, cert]) == 1
    captured = capsys.readouterr()
    assert captured.out == ""
    lines = captured.err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("regops keys: ")


def test_cli_usage_errors(capsys):
    assert main(["keys"]) == 2
    with pytest.raises(SystemExit) as info:
        main(["keys", "check", "only-one-arg"])
    assert info.value.code == 2
    with pytest.raises(SystemExit) as info:
        main(["keys", "generate", "--out", "x", "--type", "dsa"])
    assert info.value.code == 2
