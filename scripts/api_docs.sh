#!/usr/bin/env bash
# The API reference as static HTML with pdoc (offline, seconds): docs/api/index.html, one page per module, built from
# the docstrings and the docments that nbdev exports. The lessons themselves are the notebooks in nbs/.
#   bash scripts/api_docs.sh [OUT_DIR]    (default docs/api; pdoc is in [dev])
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=${1:-docs/api}
rm -rf "$OUT"
MPLBACKEND=Agg python -m pdoc --docformat markdown -o "$OUT" diffusion_course '!diffusion_course._modidx'
echo "API reference: $OUT/index.html ($(find "$OUT" -name '*.html' | wc -l) pages)"
