#!/usr/bin/env bash
# Build every pdfs/*.tex into its PDF next to it (latexmk + pdflatex), then remove the auxiliary files.
#   bash pdfs/build.sh            # all of them
#   bash pdfs/build.sh ddpm.tex   # only these
set -euo pipefail
cd "$(dirname "$0")"
command -v latexmk >/dev/null || { echo "latexmk not found: install texlive (e.g. apt-get install latexmk texlive-latex-extra)"; exit 1; }
files=("$@"); [ ${#files[@]} -gt 0 ] || files=(*.tex)
[ -e "${files[0]}" ] || { echo "no .tex files in $(pwd)"; exit 1; }
for f in "${files[@]}"; do
  echo "== $f"
  latexmk -pdf -interaction=nonstopmode -halt-on-error -quiet "$f" >/dev/null || { echo "FAILED: $f (see ${f%.tex}.log)"; exit 1; }
  latexmk -c "$f" >/dev/null 2>&1
done
echo "built: ${files[*]/%.tex/.pdf}"
