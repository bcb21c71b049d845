"""skopeo, an independent registry client, as the tests' witness of what a tag points at."""

from __future__ import annotations

import hashlib
import shutil
import subprocess

from regops.registry.tokens import Scope, TokenMinter
from regops.secrets import redact

SKOPEO_TIMEOUT = 60  # seconds for one skopeo call on loopback


def skopeo_digest(host: str, repo: str, tag: str, minter: TokenMinter) -> str | None:
    """The digest skopeo sees for ``repo:tag`` (sha256 of its raw manifest), None if unknown."""
    assert shutil.which("skopeo"), "skopeo is required for these tests (make test installs it)"
    token = minter.mint([Scope.repository(repo, "pull")])
    command = [
        "skopeo",
        "inspect",
        "--raw",
        "--tls-verify=false",
        "--registry-token",
        token.reveal(),
        f"docker://{host}/{repo}:{tag}",
    ]
    done = subprocess.run(command, capture_output=True, timeout=SKOPEO_TIMEOUT, check=False)
    if done.returncode != 0:
        message = redact(done.stderr.decode("utf-8", "replace"))
        assert "manifest unknown" in message.lower(), message  # anything else is a failure
        return None
    return "sha256:" + hashlib.sha256(done.stdout).hexdigest()


def skopeo_list_tags(host: str, repo: str, user: str, token: str) -> subprocess.CompletedProcess:
    """``skopeo list-tags`` logging in as ``user`` (through the registry's token realm)."""
    assert shutil.which("skopeo"), "skopeo is required for these tests (make test installs it)"
    command = [
        "skopeo",
        "list-tags",
        "--tls-verify=false",
        "--creds",
        f"{user}:{token}",
        f"docker://{host}/{repo}",
    ]
    done = subprocess.run(command, capture_output=True, text=True, timeout=SKOPEO_TIMEOUT)
    done.stderr = redact(done.stderr)
    return done
