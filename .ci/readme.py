"""Render README.md from nbs/index.ipynb without Quarto; `--check` fails if README.md is out of date."""
import json, re, sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
HEADER = "<!-- Generated from nbs/index.ipynb by `python .ci/readme.py`: edit the notebook, not this file. -->\n\n"

def directives(src):
    return {m.group(1) for m in re.finditer(r'^#\|\s*(\w[\w-]*)', src, re.M)}

def render(nb):
    out = []
    for cell in nb['cells']:
        src = ''.join(cell['source'])
        if cell['cell_type'] == 'markdown':
            out.append(src.strip().replace('](../assets/', '](assets/').replace('](../pdfs/', '](pdfs/'))  # notebook-relative -> repo root
            continue
        if cell['cell_type'] != 'code' or directives(src) & {'hide', 'export', 'exporti', 'slow', 'gpu', 'online', 'bench'}: continue
        code = '\n'.join(l for l in src.splitlines() if not l.startswith('#|')).strip()
        if code and not re.search(r'^#\|\s*echo:\s*false', src, re.M): out.append(f"```python\n{code}\n```")  # `#| echo: false`: its output only
        text = ''
        for o in cell.get('outputs', []) + [{'data': {'text/markdown': ''}}]:  # a sentinel flushes the last text
            md = o.get('data', {}).get('text/markdown')
            if md is None:
                text += ''.join(o.get('text', '')) if o.get('output_type') == 'stream' else ''.join(o.get('data', {}).get('text/plain', ''))
                continue
            if text.strip(): out.append(f"```\n{text.rstrip()}\n```")
            text = ''
            if ''.join(md).strip(): out.append(''.join(md).strip().replace('](../assets/', '](assets/'))  # a markdown output is part of the page
    return HEADER + '\n\n'.join(out) + '\n'

def main():
    text = render(json.loads((ROOT / 'nbs' / 'index.ipynb').read_text(encoding='utf-8')))
    readme = ROOT / 'README.md'
    if '--check' in sys.argv:
        if not readme.exists() or readme.read_text(encoding='utf-8') != text:
            print("README.md differs from what nbs/index.ipynb renders to"); sys.exit(1)
        print("README.md is in sync"); return
    readme.write_text(text, encoding='utf-8'); print(f"wrote {readme}")

if __name__ == '__main__': main()
