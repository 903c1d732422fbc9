# Debian packages for a wasmpod project: sourced by the toolchain's bootstrap.sh and written into
# every PoC's bootstrap.sh by `invoke new`, so both install them the same way. The caller sets
# DEBIAN_PACKAGES (an array) and PROJECT_NAME, then calls install_debian_packages.

say() { printf 'bootstrap: %s\n' "$*" >&2; }

missing_debian_packages() {
    local pkg
    for pkg in "${DEBIAN_PACKAGES[@]}"; do
        dpkg-query -W -f='${Status}\n' "$pkg" 2>/dev/null | grep -q '^install ok installed$' || printf '%s\n' "$pkg"
    done
    # Debian's own python3 needs python3-venv for `python3 -m venv` to bring pip.
    python3 -c 'import ensurepip, venv' 2>/dev/null || printf '%s\n' python3-venv
}

install_debian_packages() {
    command -v dpkg-query >/dev/null || { say "not a Debian system: install Rust with the wasm32-wasip1 target yourself"; return 0; }
    local missing
    mapfile -t missing < <(missing_debian_packages)
    [ "${#missing[@]}" -eq 0 ] && return 0
    local sudo=()
    if [ "$(id -u)" -ne 0 ]; then
        if command -v sudo >/dev/null && sudo -n true 2>/dev/null; then
            sudo=(sudo -n)
        else
            say "missing Debian packages: ${missing[*]}; install them with: sudo apt-get install -y ${missing[*]}"
            exit 1
        fi
    fi
    say "installing Debian packages: ${missing[*]}"
    "${sudo[@]}" env DEBIAN_FRONTEND=noninteractive apt-get update -qq >&2
    "${sudo[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >&2
    # Debian starts docker-registry as a service on every interface; ours runs on 127.0.0.1 only.
    if printf '%s\n' "${missing[@]}" | grep -qx docker-registry && command -v systemctl >/dev/null \
        && systemctl is-active --quiet docker-registry 2>/dev/null; then
        say "stopping and disabling Debian's docker-registry service ($PROJECT_NAME starts its own on 127.0.0.1)"
        "${sudo[@]}" systemctl disable --now docker-registry >&2 || true
    fi
}
