#!/usr/bin/env bash
# Create (once) or reuse the project's virtual environment and print its python's path.
#
# The environment lives outside the clone, keyed by the sha256 of requirements.txt, so a fresh
# clone (or CI) with unchanged requirements reuses the ~9 GB install instead of repeating it.
# MAMMO_VENV_ROOT moves it (default: ~/.cache/mammo). The mammo package itself is installed in
# editable mode pointing at *this* clone each time the clone changes, which takes seconds.
set -euo pipefail
repo=$(cd "$(dirname "$0")/.." && pwd)
root=${MAMMO_VENV_ROOT:-$HOME/.cache/mammo}
hash=$(sha256sum "$repo/requirements.txt" | cut -c1-16)
venv="$root/venv-$hash"
mkdir -p "$root"
exec 9>"$root/.lock-$hash"
flock 9  # two clones setting up at once must not build the same environment twice
python=${PYTHON:-python3}
if [ ! -f "$venv/.complete" ]; then
  echo "Creating $venv (first run: installs requirements.txt, a few minutes)..." >&2
  rm -rf "$venv"
  "$python" -m venv "$venv"
  "$venv/bin/python" -m pip install --quiet --upgrade pip >&2
  "$venv/bin/python" -m pip install --quiet -r "$repo/requirements.txt" >&2
  touch "$venv/.complete"
fi
if [ "$(cat "$venv/.mammo-src" 2>/dev/null)" != "$repo" ]; then
  "$venv/bin/python" -m pip install --quiet --no-deps --no-build-isolation -e "$repo" >&2
  echo "$repo" > "$venv/.mammo-src"
fi
echo "$venv/bin/python"
