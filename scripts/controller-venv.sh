#!/usr/bin/env bash
# Create or reuse the controller environment (.venv) from the pinned requirements.
#
# Every make target calls this first. It picks a Python that the pinned ansible-core supports
# (3.11 to 3.13), builds .venv once, and rebuilds it only when requirements.txt changes (its
# SHA256 is kept in .venv/.requirements.sha256). Prints nothing when the venv is already current.
# With SDENV_BUNDLE (make ... BUNDLE=dir) the packages come from the bundle's controller/ wheels, checked by
# the hashes the bundle recorded, with no index and no network.
set -euo pipefail

venv=${SDENV_VENV:-.venv}
requirements=${SDENV_REQUIREMENTS:-requirements.txt}
stamp="$venv/.requirements.sha256"
bundle=${SDENV_BUNDLE:-}

digest() {
  if command -v sha256sum >/dev/null 2>&1; then sha256sum "$1" | cut -d' ' -f1
  else shasum -a 256 "$1" | cut -d' ' -f1; fi
}

# A candidate counts only if it actually runs and reports a supported version: pyenv shims
# and the macOS Command Line Tools stub exist on PATH without being usable.
usable() {
  "$1" -c 'import sys, venv; sys.exit(not ((3, 11) <= sys.version_info[:2] <= (3, 13)))' \
    >/dev/null 2>&1 </dev/null
}

find_python() {
  local c
  for c in ${SDENV_CONTROLLER_PYTHON:-} python3.13 python3.12 python3.11 \
           /opt/homebrew/bin/python3.13 /opt/homebrew/bin/python3.12 /opt/homebrew/bin/python3.11 \
           /usr/local/bin/python3.13 /usr/local/bin/python3.12 /usr/local/bin/python3.11 python3; do
    if command -v "$c" >/dev/null 2>&1 && usable "$c"; then command -v "$c"; return 0; fi
  done
  if command -v uv >/dev/null 2>&1; then
    c=$(uv python find '>=3.11,<3.14' 2>/dev/null || true)
    if [ -n "$c" ] && usable "$c"; then echo "$c"; return 0; fi
  fi
  return 1
}

want=$(digest "$requirements")
if [ -x "$venv/bin/python" ] && [ "$(cat "$stamp" 2>/dev/null)" = "$want" ] && usable "$venv/bin/python"; then
  exit 0
fi

if ! python=$(find_python); then
  echo "No Python 3.11-3.13 found for the controller: install one (on a Mac: 'brew install python@3.12'," \
       "or uv: 'curl -LsSf https://astral.sh/uv/install.sh | sh && uv python install 3.12'), then run make again." >&2
  exit 1
fi

echo "Setting up the controller environment in $venv with $python ($("$python" -V 2>&1))..." >&2
rm -rf "$venv"
"$python" -m venv "$venv"
if [ -n "$bundle" ]; then
  wheels="$bundle/controller"
  if [ ! -f "$wheels/requirements.txt" ]; then
    echo "The bundle $bundle has no controller/requirements.txt: make it with make bundle on a connected machine." >&2
    exit 1
  fi
  # The bundle's hashed pins must be exactly this checkout's requirements.txt.
  if ! "$venv/bin/python" - "$requirements" "$wheels/requirements.txt" <<'PY'
import re, sys
def pins(path):
    with open(path) as handle:
        return {re.sub(r"[-_.]+", "-", l.split("==")[0].strip()).lower() + "==" + l.split("==")[1].split()[0]
                for l in (x.split("#")[0] for x in handle) if "==" in l}
ours, theirs = pins(sys.argv[1]), pins(sys.argv[2])
if ours != theirs:
    print(f"The bundle's controller wheels are for other pins than {sys.argv[1]} "
          f"(differ: {', '.join(sorted(ours ^ theirs)[:4])}): make the bundle from this checkout.", file=sys.stderr)
    sys.exit(1)
PY
  then rm -rf "$venv"; exit 1; fi
  "$venv/bin/python" -m pip install --quiet --isolated --disable-pip-version-check --no-index \
    --find-links "$wheels" --require-hashes -r "$wheels/requirements.txt"
else
  "$venv/bin/python" -m pip install --quiet --disable-pip-version-check -r "$requirements"
fi
echo "$want" > "$stamp"
