#!/usr/bin/env bash
# Release check: build the wheel and the sdist with `python -m build`, install each into a fresh virtual environment
# beside torch==2.13.0, and run scripts/smoke_test.py there (from outside the repository, so the installed copy is tested).
#   bash scripts/release_check.sh                 # here
#   TORCH_INDEX=https://download.pytorch.org/whl/cpu bash scripts/release_check.sh   # CI: the CPU torch wheel
# Needs `build` in the calling environment (it is in [dev]). Leaves the built files in dist/.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
T0=$SECONDS
WORK=$(mktemp -d)
trap 'rm -rf "$WORK"' EXIT
export PIP_DISABLE_PIP_VERSION_CHECK=1
PY=${PYTHON:-python3}

echo "== build wheel and sdist"
rm -rf dist
python -m build --outdir dist . > "$WORK/build.log" 2>&1 || { tail -40 "$WORK/build.log"; echo "RELEASE CHECK FAILED: python -m build"; exit 1; }
ls -l dist
version=$(python -c "import configparser; c = configparser.ConfigParser(delimiters=['=']); c.read('settings.ini'); print(c['DEFAULT']['version'])")
grep -q "^__version__ = \"$version\"" diffusion_course/__init__.py || { echo "RELEASE CHECK FAILED: settings.ini says $version, diffusion_course/__init__.py does not (run nbdev_export)"; exit 1; }
grep -q "^## \[\?$version\]\?" CHANGELOG.md || { echo "RELEASE CHECK FAILED: CHANGELOG.md has no '## $version' section"; exit 1; }

echo "== a fresh virtual environment with torch==2.13.0 only"
$PY -m venv "$WORK/base"
quiet_pip() { "$@" > "$WORK/pip.log" 2>&1 || { tail -30 "$WORK/pip.log"; echo "RELEASE CHECK FAILED: $*"; exit 1; }; }
quiet_pip "$WORK/base/bin/python" -m pip install -q ${TORCH_INDEX:+--extra-index-url "$TORCH_INDEX"} torch==2.13.0
"$WORK/base/bin/python" -c "import torch; print('torch', torch.__version__)"

for dist in dist/*.whl dist/*.tar.gz; do
  echo "== $dist: install into a copy of that environment, smoke test"
  venv="$WORK/venv-$(basename "$dist")"
  cp -a "$WORK/base" "$venv"  # pip and the console scripts below are called through this venv's own python and bin/
  quiet_pip "$venv/bin/python" -m pip install -q "$ROOT/$dist"
  "$venv/bin/python" -m pip check
  (cd "$WORK" && PATH="$venv/bin:$PATH" OMP_NUM_THREADS=${OMP_NUM_THREADS:-1} MPLBACKEND=Agg "$venv/bin/python" "$ROOT/scripts/smoke_test.py") \
    || { echo "RELEASE CHECK FAILED: smoke test of $dist"; exit 1; }
done
echo; echo "release check passed for diffusion_course $version in $((SECONDS - T0)) s"
