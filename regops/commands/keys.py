"""``regops keys``: make and check the registry token signing key pair.

``regops keys generate --out DIR`` writes ``registry.key`` (mode 0600),
``registry.crt`` and ``gitlab.rb.snippet`` (mode 0600: the two gitlab.rb lines
that install the pair hold the private key in clear text, as
``registry['internal_key']`` does), and prints their paths, the key id and the
certificate. The private key is never printed.

``regops keys check KEY CERT`` says whether the pair matches and prints the
libtrust key id the registry will look tokens up by.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from regops.errors import KeyFileError
from regops.fsutil import atomic_write
from regops.registry.keys import (
    DEFAULT_COMMON_NAME,
    DEFAULT_RSA_BITS,
    KEY_TYPES,
    MIN_RSA_BITS,
    check_pair,
    generate_key,
    gitlab_rb_lines,
    libtrust_kid,
    load_private_key,
    write_key_and_certificate,
)
from regops.scripting import EXIT_OK, EXIT_USAGE

SNIPPET_NAME = "gitlab.rb.snippet"
SNIPPET_HEADER = "# gitlab.rb lines installing the registry token key pair (PRIVATE KEY inside)\n"


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add ``keys generate`` and ``keys check``."""
    parser = subparsers.add_parser("keys", help="registry token signing keys")
    verbs = parser.add_subparsers(dest="keys_command", metavar="VERB")
    parser.set_defaults(func=lambda args: _usage(parser))

    generate = verbs.add_parser(
        "generate", help="write a new key pair and a gitlab.rb snippet installing it"
    )
    generate.add_argument("--out", required=True, help="directory for registry.key/registry.crt")
    generate.add_argument("--type", choices=KEY_TYPES, default="rsa", help="key type (rsa)")
    generate.add_argument(
        "--bits",
        type=int,
        default=DEFAULT_RSA_BITS,
        help=f"RSA key size (default {DEFAULT_RSA_BITS}, minimum {MIN_RSA_BITS})",
    )
    generate.add_argument("--common-name", default=DEFAULT_COMMON_NAME, help="certificate CN")
    generate.add_argument("--force", action="store_true", help="overwrite existing files")
    generate.add_argument(
        "--no-gitlab-rb",
        action="store_true",
        help="do not write gitlab.rb.snippet (the lines that install the pair)",
    )
    generate.set_defaults(func=run_generate)

    check = verbs.add_parser("check", help="check that a key and certificate belong together")
    check.add_argument("key", help="private key (PEM)")
    check.add_argument("cert", help="certificate (PEM)")
    check.set_defaults(func=run_check)


def _usage(parser: argparse.ArgumentParser) -> int:
    parser.print_help(sys.stderr)
    return EXIT_USAGE


def run_generate(args: argparse.Namespace) -> int:
    """Write the pair and the gitlab.rb snippet; print where, the kid and the certificate."""
    if args.type == "rsa" and args.bits < MIN_RSA_BITS:
        print(
            f"regops keys: --bits {args.bits} is too weak (minimum {MIN_RSA_BITS})",
            file=sys.stderr,
        )
        return EXIT_USAGE
    key = generate_key(args.type, args.bits)
    key_path, cert_path = write_key_and_certificate(
        args.out, key, args.common_name, overwrite=args.force
    )
    print(f"key:         {key_path} (mode 0600)")
    print(f"certificate: {cert_path}")
    print(f"kid:         {libtrust_kid(key)}")
    if args.type == "ec":
        print(
            "note: GitLab signs registry tokens with RSA only; an EC key serves regops' "
            "own tokens (KeyAuth), so no gitlab.rb snippet is written",
            file=sys.stderr,
        )
    elif not args.no_gitlab_rb:
        snippet = Path(args.out) / SNIPPET_NAME
        if snippet.exists() and not args.force:
            raise KeyFileError(f"{snippet} exists; use --force to replace it")
        lines = gitlab_rb_lines(_read_key_pem(key_path), cert_path.read_text())
        from regops.locks import PRIVATE_FILE_MODE

        atomic_write(snippet, SNIPPET_HEADER + lines, mode=PRIVATE_FILE_MODE)
        print(f"gitlab.rb:   {snippet} (mode 0600: it holds the private key; paste it into")
        print("             /etc/gitlab/gitlab.rb, then run gitlab-ctl reconfigure)")
    print()
    sys.stdout.write(cert_path.read_text())
    return EXIT_OK


def _read_key_pem(path: str | os.PathLike[str]) -> str:
    load_private_key(path)  # the file we just wrote must load back
    with open(path, encoding="ascii") as handle:
        return handle.read()


def run_check(args: argparse.Namespace) -> int:
    """Print ``match kid=…`` or raise KeyFileError (the CLI prints it, exit 1)."""
    kid = check_pair(args.key, args.cert)
    print(f"match: {args.key} and {args.cert} belong together")
    print(f"kid: {kid}")
    return EXIT_OK
