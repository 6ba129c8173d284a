#!/usr/bin/env bash
# The whole test suite, as a user's install would see it:
#   1. cargo test (the Rust core, without Python);
#   2. the wheel built by maturin, installed into a fresh virtual environment
#      whose third-party dependencies come from a cached one;
#   3. pytest against that installed wheel.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$(pwd)

deps="${FUSELLM_FAST_DEPS_VENV:-$HOME/.cache/fusellm_fast/venv}"
stamp="$deps/.requirements.sha256"
wanted=$(sha256sum tests/requirements.txt | cut -d' ' -f1)
if [ ! -x "$deps/bin/python" ]; then
    echo "== creating the dependency environment $deps"
    python3 -m venv "$deps"
fi
if [ "$(cat "$stamp" 2>/dev/null)" != "$wanted" ]; then
    echo "== installing test dependencies into $deps (torch is large: this takes a while once)"
    "$deps/bin/python" -m pip install -q --upgrade pip
    "$deps/bin/python" -m pip install -q -r tests/requirements.txt
    echo "$wanted" > "$stamp"
fi

echo "== cargo test"
cargo test --quiet --workspace 2>&1 | tail -n 40

echo "== building the release wheel (manylinux_2_28, linked by zig against glibc 2.28)"
command -v maturin >/dev/null || python3 -m pip install -q "maturin>=1.16,<2"
# maturin looks for a `zig` command; the ziglang package runs as `python -m ziglang`.
shims="$deps/shims"
mkdir -p "$shims"
printf '#!/bin/sh\nexec "%s" -m ziglang "$@"\n' "$deps/bin/python" > "$shims/zig"
chmod +x "$shims/zig"
rm -rf dist
PATH="$shims:$PATH" maturin build --release --zig --compatibility manylinux_2_28 --quiet --out dist 2>&1 | tail -n 5
wheel=$(ls "$root"/dist/*.whl)
echo "   $(basename "$wheel"): $(du -k "$wheel" | cut -f1) KiB"
# tests/test_wheel.py checks this wheel's tags and policy and installs it without Rust.
export FUSELLM_FAST_WHEEL="$wheel"

echo "== installing the wheel into a fresh environment"
fresh=$(mktemp -d /tmp/fusellm_fast_test.XXXXXX)
trap 'rm -rf "$fresh"' EXIT
"$deps/bin/python" -m venv --without-pip "$fresh"
deps_site=$("$deps/bin/python" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')
fresh_site=$("$fresh/bin/python" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')
# The fresh environment sees the cached third-party packages after its own.
echo "$deps_site" > "$fresh_site/cached_dependencies.pth"
"$deps/bin/python" -m pip install -q --no-deps --target "$fresh_site" "$wheel"
"$fresh/bin/python" -c 'import fusellm_fast, sys; print("testing", fusellm_fast.__file__)' | grep -q "$fresh_site" \
    || { echo "the installed wheel is not the package under test" >&2; exit 1; }

echo "== fetching real tokenizer vocabularies (cached after the first run)"
"$fresh/bin/python" tests/realtok.py

echo "== pytest"
cd "$root"
"$fresh/bin/python" -m pytest tests -q -p no:cacheprovider "$@"
