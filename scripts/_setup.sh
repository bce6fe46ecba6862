# shellcheck shell=bash
# Sourced by scripts/test and scripts/demo: makes sure this machine can build and test pynode.
# On a fresh Debian it installs Erlang/Elixir (root or passwordless sudo), checks Python >= 3.11,
# creates .venv and installs the project with its dev extras (again only when pyproject.toml changed).
set -euo pipefail

PYNODE_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$PYNODE_ROOT"

_setup_say() { printf 'setup: %s\n' "$*" >&2; }

# A python3 that is at least 3.11, into PYNODE_PYTHON.
_setup_python() {
    local candidate
    for candidate in python3 python3.13 python3.12 python3.11; do
        if command -v "$candidate" >/dev/null 2>&1 &&
            "$candidate" -c 'import sys; sys.exit(sys.version_info < (3, 11))' 2>/dev/null; then
            PYNODE_PYTHON="$candidate"
            return 0
        fi
    done
    _setup_say "Python >= 3.11 is needed; found: $(python3 --version 2>&1 || echo 'no python3')."
    _setup_say "On Debian 12 or later: apt-get install python3 python3-venv"
    exit 1
}

_setup_has_epmd() {
    command -v epmd >/dev/null 2>&1 || compgen -G '/usr/lib/erlang/erts-*/bin/epmd' >/dev/null
}

# The Debian packages still missing, one per line.
_setup_missing_packages() {
    local tool
    for tool in erl erlc elixir; do
        if ! command -v "$tool" >/dev/null 2>&1; then
            printf '%s\n' erlang-nox elixir
            break
        fi
    done
    if ! _setup_has_epmd; then
        printf '%s\n' erlang-nox
    fi
    # Debian ships venv's pip bootstrap apart from python itself.
    if [ ! -x .venv/bin/python ] && ! "$PYNODE_PYTHON" -c 'import ensurepip, venv' >/dev/null 2>&1; then
        if [ "$PYNODE_PYTHON" = python3 ]; then printf '%s\n' python3-venv; else printf '%s\n' "$PYNODE_PYTHON-venv"; fi
    fi
}

_setup_packages() {
    local packages sudo=()
    packages="$(_setup_missing_packages | sort -u | tr '\n' ' ')"
    packages="${packages% }"
    [ -z "$packages" ] && return 0
    if [ "$(id -u)" != 0 ]; then
        if command -v sudo >/dev/null 2>&1 && sudo -n true 2>/dev/null; then
            sudo=(sudo -n)
        else
            _setup_say "missing: $packages. Run this, then try again:"
            _setup_say "  sudo apt-get update && sudo apt-get install -y $packages"
            exit 1
        fi
    fi
    if ! command -v apt-get >/dev/null 2>&1; then
        _setup_say "missing: $packages, and there is no apt-get here: install Erlang/OTP >= 25 and Elixir yourself."
        exit 1
    fi
    _setup_say "installing $packages (apt-get)"
    "${sudo[@]}" env DEBIAN_FRONTEND=noninteractive apt-get update -qq >/dev/null
    # shellcheck disable=SC2086 # the package list is meant to split
    "${sudo[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
        $packages >/dev/null
}

_setup_venv() {
    local stamp=.venv/.pynode-dev-installed tool
    if [ ! -x .venv/bin/python ]; then
        _setup_say "creating .venv with $("$PYNODE_PYTHON" --version 2>&1)"
        "$PYNODE_PYTHON" -m venv .venv
        rm -f "$stamp"
    fi
    if [ -f "$stamp" ] && [ "$stamp" -nt pyproject.toml ]; then
        for tool in pip pytest ruff mypy; do
            [ -x ".venv/bin/$tool" ] || { rm -f "$stamp"; break; }
        done
    fi
    if [ ! -f "$stamp" ] || [ ! "$stamp" -nt pyproject.toml ]; then
        _setup_say "installing pynode and its dev tools into .venv"
        .venv/bin/python -m pip install -q --disable-pip-version-check -e '.[dev]'
        touch "$stamp"
    fi
}

_setup_python
_setup_packages
_setup_venv
