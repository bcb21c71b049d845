"""Fast start: building the command line and printing help load none of the heavy libraries.

Checked by what is imported, not by timing (bench: ``hyperfine 'regops --help'``).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
# What a run imports when it needs it, never for --help.
HEAVY = frozenset(
    {
        "requests", "urllib3", "jwt", "cryptography", "werkzeug", "tabulate", "yaml", "tqdm",
        "IPython", "pandas", "matplotlib", "boto3", "platformdirs",
    }
)  # fmt: skip


def _loaded_after(argv: list[str]) -> set[str]:
    code = (
        "import json, sys\n"
        "import regops.cli\n"
        "try:\n"
        f"    regops.cli.main({argv!r})\n"
        "except SystemExit:\n"
        "    pass\n"
        "print(json.dumps(sorted({m.split('.')[0] for m in sys.modules})), file=sys.stderr)\n"
    )
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env=env, check=False
    )
    assert "usage:" in done.stdout, done.stderr
    return set(json.loads(done.stderr.strip().splitlines()[-1]))


@pytest.mark.parametrize("argv", [["--help"], ["usage", "--help"], ["sandbox", "--help"]])
def test_help_loads_no_heavy_library(argv):
    assert _loaded_after(argv) & HEAVY == set()


def test_the_sandbox_options_are_still_checked():
    from regops.cli import build_parser

    parser = build_parser()
    args = parser.parse_args(["sandbox", "--storage", "s3", "--registry-api", "gitlab"])
    assert (args.storage, args.registry_api) == ("s3", "gitlab")
    with pytest.raises(SystemExit):
        parser.parse_args(["sandbox", "--storage", "tape"])
