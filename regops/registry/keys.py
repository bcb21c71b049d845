"""Token signing keys: generate, load, check, and the libtrust key id.

GitLab signs registry tokens with a private key (``registry['internal_key']``
in gitlab.rb); the registry checks them with the matching certificate
(``rootcertbundle``). This module makes such pairs, checks that a pair
belongs together, and formats the gitlab.rb lines.

>>> key_path, cert_path = write_key_and_certificate("/tmp/keys", generate_key(bits=2048))
>>> check_pair(key_path, cert_path)  # doctest: +SKIP
'ABCD:EFGH:...'
"""

from __future__ import annotations

import base64
import datetime
import hashlib
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

from regops.errors import KeyFileError, ValidationError
from regops.secrets import Secret

# cryptography is imported where a key is made, read or checked, not with this module:
# it is the heaviest import regops has, and `regops keys --help` or a usage scan with
# realm tokens never needs it.
if TYPE_CHECKING:
    from cryptography import x509
    from cryptography.hazmat.primitives.asymmetric import ec, rsa

    PrivateKey = rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey
    PublicKey = rsa.RSAPublicKey | ec.EllipticCurvePublicKey

DEFAULT_RSA_BITS = 4096  # what GitLab's Linux package generates for the registry key
MIN_RSA_BITS = 2048  # below this the key is too weak to sign anything (NIST SP 800-57)
RSA_PUBLIC_EXPONENT = 65537  # the only exponent anyone should use
KEY_TYPES = ("rsa", "ec")
# Curves the registry verifies (libtrust: ES256, ES384, ES512).
SUPPORTED_CURVES = {"secp256r1": "ES256", "secp384r1": "ES384", "secp521r1": "ES512"}
CERT_VALIDITY_DAYS = 3650  # the registry does not check validity dates; ten years
DEFAULT_COMMON_NAME = "regops registry token signer"
KEY_FILE_NAME = "registry.key"
CERT_FILE_NAME = "registry.crt"
KEY_FILE_MODE = 0o600  # private key: readable by its owner only
# libtrust key id: the first 240 bits of SHA-256(SPKI DER), base32, in groups of 4.
KID_HASH_BYTES = 30
KID_GROUP = 4


def __getattr__(name: str) -> Any:
    """``PrivateKey`` and ``PublicKey`` (unions of cryptography's classes), made on first use."""
    if name in ("PrivateKey", "PublicKey"):
        from cryptography.hazmat.primitives.asymmetric import ec, rsa

        private = name == "PrivateKey"
        value = (
            rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey
            if private
            else rsa.RSAPublicKey | ec.EllipticCurvePublicKey
        )
        globals()[name] = value
        return value
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def generate_key(kind: str = "rsa", bits: int = DEFAULT_RSA_BITS) -> PrivateKey:
    """A new RSA (``bits`` long) or EC P-256 private key."""
    from cryptography.hazmat.primitives.asymmetric import ec, rsa

    if kind == "rsa":
        if bits < MIN_RSA_BITS:
            raise ValidationError("bits", f"an RSA key needs at least {MIN_RSA_BITS} bits")
        return rsa.generate_private_key(public_exponent=RSA_PUBLIC_EXPONENT, key_size=bits)
    if kind == "ec":
        return ec.generate_private_key(ec.SECP256R1())
    raise ValidationError("type", f"unknown key type {kind!r}; use one of {', '.join(KEY_TYPES)}")


def libtrust_kid(public_key: PublicKey | PrivateKey) -> str:
    """The key id the registry derives from a public key (libtrust format).

    >>> len(libtrust_kid(generate_key("ec")))
    59
    """
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ec, rsa

    if isinstance(public_key, (rsa.RSAPrivateKey, ec.EllipticCurvePrivateKey)):
        public_key = public_key.public_key()
    der = public_key.public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    digest = hashlib.sha256(der).digest()[:KID_HASH_BYTES]
    text = base64.b32encode(digest).decode("ascii").rstrip("=")
    return ":".join(text[i : i + KID_GROUP] for i in range(0, len(text), KID_GROUP))


def signing_algorithm(key: PrivateKey | PublicKey) -> str:
    """The JWT algorithm the registry expects for this key (RS256, ES256...)."""
    from cryptography.hazmat.primitives.asymmetric import ec, rsa

    if isinstance(key, (rsa.RSAPrivateKey, rsa.RSAPublicKey)):
        return "RS256"
    if isinstance(key, (ec.EllipticCurvePrivateKey, ec.EllipticCurvePublicKey)):
        alg = SUPPORTED_CURVES.get(key.curve.name)
        if alg:
            return alg
        raise KeyFileError(f"EC curve {key.curve.name} is not one the registry verifies")
    raise KeyFileError(f"unsupported key type {type(key).__name__}; use RSA or EC")


def private_key_pem(key: PrivateKey) -> Secret:
    """The key as unencrypted PEM (PKCS#1 for RSA, as GitLab writes it)."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import rsa

    fmt = (
        serialization.PrivateFormat.TraditionalOpenSSL
        if isinstance(key, rsa.RSAPrivateKey)
        else serialization.PrivateFormat.PKCS8
    )
    pem = key.private_bytes(serialization.Encoding.PEM, fmt, serialization.NoEncryption())
    return Secret(pem.decode("ascii"))


def make_certificate(
    key: PrivateKey, common_name: str = DEFAULT_COMMON_NAME, days: int = CERT_VALIDITY_DAYS
) -> x509.Certificate:
    """A self-signed certificate for ``key`` (what the registry's rootcertbundle holds)."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes
    from cryptography.x509.oid import NameOID

    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])
    now = datetime.datetime.now(datetime.timezone.utc)
    builder = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=days))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
    )
    return builder.sign(key, hashes.SHA256())


def certificate_pem(cert: x509.Certificate) -> str:
    """The certificate as PEM text."""
    from cryptography.hazmat.primitives import serialization

    return cert.public_bytes(serialization.Encoding.PEM).decode("ascii")


def write_key_and_certificate(
    out_dir: str | os.PathLike[str],
    key: PrivateKey | None = None,
    common_name: str = DEFAULT_COMMON_NAME,
    *,
    overwrite: bool = False,
) -> tuple[Path, Path]:
    """Write ``registry.key`` (mode 0600) and ``registry.crt`` into ``out_dir``."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    key = key if key is not None else generate_key()
    key_path, cert_path = out / KEY_FILE_NAME, out / CERT_FILE_NAME
    if not overwrite:
        for path in (key_path, cert_path):
            if path.exists():
                raise KeyFileError(f"{path} already exists; refusing to overwrite it")
    _write_private(key_path, private_key_pem(key).reveal(), overwrite=overwrite)
    cert_path.write_text(certificate_pem(make_certificate(key, common_name)))
    return key_path, cert_path


def _write_private(path: Path, text: str, *, overwrite: bool) -> None:
    """Create ``path`` with owner-only permissions before any byte is written.

    Without ``overwrite`` the file must not exist, checked atomically (O_EXCL).
    """
    flags = os.O_WRONLY | os.O_CREAT | (os.O_TRUNC if overwrite else os.O_EXCL)
    try:
        fd = os.open(path, flags, KEY_FILE_MODE)
    except FileExistsError:
        raise KeyFileError(f"{path} already exists; refusing to overwrite it") from None
    try:
        os.fchmod(fd, KEY_FILE_MODE)
        os.write(fd, text.encode("ascii"))
    finally:
        os.close(fd)


def _read(path: str | os.PathLike[str], what: str) -> bytes:
    try:
        return Path(path).read_bytes()
    except FileNotFoundError:
        raise KeyFileError(f"{what} {path}: no such file") from None
    except OSError as exc:
        raise KeyFileError(f"{what} {path}: cannot read ({exc.strerror})") from None


def load_private_key(path: str | os.PathLike[str]) -> PrivateKey:
    """The private key in a PEM file (KeyFileError when missing, not PEM, weak)."""
    from cryptography.exceptions import UnsupportedAlgorithm
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ec, rsa

    data = _read(path, "key")
    if b"-----BEGIN" not in data:
        raise KeyFileError(f"key {path}: not a PEM file")
    try:
        key = serialization.load_pem_private_key(data, password=None)
    except TypeError:
        raise KeyFileError(f"key {path}: encrypted keys are not supported") from None
    except (ValueError, UnsupportedAlgorithm):
        raise KeyFileError(f"key {path}: not a PEM private key") from None
    _check_strength(key, f"key {path}")
    assert isinstance(key, (rsa.RSAPrivateKey, ec.EllipticCurvePrivateKey))  # checked above
    return key


def load_certificate(path: str | os.PathLike[str]) -> x509.Certificate:
    """The first certificate in a PEM file."""
    from cryptography import x509

    data = _read(path, "certificate")
    try:
        return x509.load_pem_x509_certificate(data)
    except ValueError:
        raise KeyFileError(f"certificate {path}: not a PEM certificate") from None


def _check_strength(key: object, what: str) -> None:
    from cryptography.hazmat.primitives.asymmetric import ec, rsa

    if isinstance(key, (rsa.RSAPrivateKey, rsa.RSAPublicKey)):
        if key.key_size < MIN_RSA_BITS:
            raise KeyFileError(
                f"{what}: RSA key of {key.key_size} bits is too weak (minimum {MIN_RSA_BITS})"
            )
        return
    if isinstance(key, (ec.EllipticCurvePrivateKey, ec.EllipticCurvePublicKey)):
        if key.curve.name not in SUPPORTED_CURVES:
            raise KeyFileError(f"{what}: EC curve {key.curve.name} is not supported")
        return
    raise KeyFileError(f"{what}: unsupported key type {type(key).__name__}; use RSA or EC")


def check_pair(key_path: str | os.PathLike[str], cert_path: str | os.PathLike[str]) -> str:
    """The libtrust kid when the key and the certificate belong together."""
    from cryptography.hazmat.primitives.asymmetric import ec, rsa

    key = load_private_key(key_path)
    cert = load_certificate(cert_path)
    cert_public = cert.public_key()
    _check_strength(cert_public, f"certificate {cert_path}")
    assert isinstance(cert_public, (rsa.RSAPublicKey, ec.EllipticCurvePublicKey))  # checked
    kid = libtrust_kid(key)
    if libtrust_kid(cert_public) != kid:
        raise KeyFileError(f"key {key_path} does not match certificate {cert_path}")
    return kid


def _ruby_string(text: str) -> str:
    """A double-quoted Ruby string literal with newlines as ``\\n``."""
    escaped = text.replace("\\", "\\\\").replace('"', '\\"').replace("#", "\\#")
    return '"' + escaped.replace("\n", "\\n") + '"'


def gitlab_rb_lines(key_pem: str | bytes | Secret, cert_pem: str | bytes) -> str:
    """The two gitlab.rb lines that install this pair (the key in clear text!).

    The result holds the private key: print it only where the admin asked for it.
    """
    if isinstance(key_pem, Secret):
        key_pem = key_pem.reveal()
    if isinstance(key_pem, bytes):
        key_pem = key_pem.decode("ascii")
    if isinstance(cert_pem, bytes):
        cert_pem = cert_pem.decode("ascii")
    return (
        f"registry['internal_key'] = {_ruby_string(key_pem)}\n"
        f"registry['internal_certificate'] = {_ruby_string(cert_pem)}\n"
    )
