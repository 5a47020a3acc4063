#!/usr/bin/env bash
# The dependency lock: uv.lock (the source of truth) and the requirements files exported from
# it, which pip installs with --require-hashes (the venv, `make demo`, the image).
#
#   hack/lock.sh            refresh: re-resolve what pyproject.toml changed, keep other pins
#   hack/lock.sh --upgrade  refresh and move every pin to the newest allowed version
#   hack/lock.sh --check    fail (exit 1) when pyproject.toml, uv.lock and requirements/*.txt
#                           disagree; changes nothing (`make lint` runs this)
#
# Why uv: its lock is universal (every platform and Python version that requires-python allows,
# with the hashes of every wheel and sdist), `uv lock --check` is a built-in, exact test that
# the lock still matches pyproject.toml, and it resolves in seconds. The exported files are
# plain pip requirements, so nothing but pip is needed to install from them (the image has no uv).
#
# Env: UV (default: the venv's uv, then uv on PATH).
set -euo pipefail
cd "$(dirname "$0")/.."

UV=${UV:-}
if [ -z "$UV" ]; then
  if [ -x .venv/bin/uv ]; then UV=.venv/bin/uv; else UV=$(command -v uv || true); fi
fi
[ -n "$UV" ] || { echo "lock: uv not found; run \`make venv\` (uv is pinned in the dev extra)" >&2; exit 1; }

# name -> `uv export` selection. runtime: what the image runs; build: pip and the build backend;
# dev: everything `make test` needs (runtime + test + dev extras + build).
declare -A EXPORTS=(
  [runtime]="--no-default-groups"
  [build]="--only-group build"
  [dev]="--no-default-groups --extra test --extra dev --group build"
)

export_to() {  # export_to DIR: write DIR/<name>.txt for every export
  local dir=$1 name
  mkdir -p "$dir"
  for name in runtime build dev; do
    # shellcheck disable=SC2086  # the selection is a list of flags
    "$UV" export --quiet --frozen --format requirements-txt --no-emit-project --no-annotate \
      ${EXPORTS[$name]} --output-file "$dir/$name.txt" >/dev/null
    # uv writes the output path into the header; make it the committed path wherever we export.
    sed -i "s#--output-file $dir/$name.txt#--output-file requirements/$name.txt#" "$dir/$name.txt"
  done
}

# [build-system].requires and the `build` group must name the same build backend.
check_build_group() {
  python3 - <<'PY'
import re, sys, tomllib
p = tomllib.load(open("pyproject.toml", "rb"))
name = lambda r: re.split(r"[ <>=!~;\[]", r, maxsplit=1)[0].lower()
backend = {name(r) for r in p["build-system"]["requires"]}
group = {name(r) for r in p.get("dependency-groups", {}).get("build", [])}
if not backend <= group:
    sys.exit(f"lock: [build-system].requires {sorted(backend)} not all in the build group {sorted(group)}")
PY
}

case "${1:-}" in
  --check)
    check_build_group
    if ! "$UV" lock --check --quiet 2>/tmp/uv-lock-check.$$; then
      cat /tmp/uv-lock-check.$$ >&2; rm -f /tmp/uv-lock-check.$$
      echo "lock: uv.lock does not match pyproject.toml; run \`make lock\` and commit the result" >&2
      exit 1
    fi
    rm -f /tmp/uv-lock-check.$$
    tmp=$(mktemp -d); trap 'rm -rf "$tmp"' EXIT
    export_to "$tmp"
    stale=0
    for name in runtime build dev; do
      if ! diff -q "$tmp/$name.txt" "requirements/$name.txt" >/dev/null 2>&1; then
        echo "lock: requirements/$name.txt is not what uv.lock exports; run \`make lock\`" >&2
        diff -u "requirements/$name.txt" "$tmp/$name.txt" 2>&1 | head -20 >&2 || true
        stale=1
      fi
    done
    [ $stale = 0 ] && echo "lock: uv.lock and requirements/*.txt match pyproject.toml"
    exit $stale
    ;;
  --upgrade) check_build_group; "$UV" lock --upgrade ;;
  "") check_build_group; "$UV" lock ;;
  *) echo "usage: $0 [--check|--upgrade]" >&2; exit 2 ;;
esac
export_to requirements
echo "lock: wrote uv.lock and requirements/{runtime,build,dev}.txt" >&2
