# shellcheck shell=bash
# A Python virtualenv for the test tools from PyPI (schemathesis), pinned in a requirements
# file. Sourced after common.sh.

# venv_ensure DIR REQUIREMENTS: DIR holds a virtualenv with REQUIREMENTS installed. Installs
# python3 and python3-venv with apt-get when missing (as root); reinstalls only when the
# requirements file changed since the last install.
venv_ensure() {
    local dir=$1 req=$2 stamp
    ensure_cmd python3
    if ! python3 -c 'import venv, ensurepip' >/dev/null 2>&1; then
        install_pkg "python3's venv module" python3-venv
    fi
    stamp=$dir/.requirements
    if [[ -x $dir/bin/pip ]] && cmp -s "$req" "$stamp"; then
        return 0
    fi
    log "installing $(tr '\n' ' ' <"$req")into ${dir#"$ROOT"/}"
    rm -rf -- "$dir"
    python3 -m venv "$dir"
    "$dir/bin/pip" install --quiet --disable-pip-version-check -r "$req" >&2
    cp "$req" "$stamp"
}
