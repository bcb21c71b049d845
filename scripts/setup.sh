#!/usr/bin/env bash
# Creates/updates the virtual environment, installs regops with its test extra,
# and installs the Debian packages docker-registry and skopeo when missing.
set -euo pipefail
venv="${1:-.venv}"
cd "$(dirname "$0")/.."

missing=()
command -v docker-registry >/dev/null 2>&1 || missing+=(docker-registry)
command -v skopeo >/dev/null 2>&1 || missing+=(skopeo)
command -v tmux >/dev/null 2>&1 || missing+=(tmux)
if [ ${#missing[@]} -gt 0 ]; then
    if [ "$(id -u)" -ne 0 ]; then
        echo "regops setup: missing Debian packages: ${missing[*]}" >&2
        echo "run as root, or: sudo apt-get install -y ${missing[*]}" >&2
        exit 1
    fi
    echo "regops setup: installing ${missing[*]} with apt-get" >&2
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
fi

if [ ! -x "$venv/bin/python" ]; then
    python3 -m venv "$venv"
fi
"$venv/bin/python" -m pip install -q --upgrade pip >/dev/null
"$venv/bin/python" -m pip install -q -e '.[test]'
