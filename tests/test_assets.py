"Every file under assets/ that the README or a lesson names exists: the links of the markdown, and what the cells that run at CPU size write there."
import json, re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
NBS = sorted((ROOT / 'nbs').glob('*.ipynb'))
SKIPPED = {'gpu', 'online', 'bench'}  # cells that do not run on a CPU without the internet: what they write is not kept in assets/


def flags(src: str) -> set:
    return {m.group(1) for m in re.finditer(r'^#\|\s*(\w+)', src, re.M)}


def linked(text: str) -> set:
    "assets/ paths of the markdown links and images in `text` (relative to the repository root or to nbs/)."
    return {m.group(1) for m in re.finditer(r'\]\((?:\.\./)?assets/([^)\s#]+)\)', text)}


def written(src: str) -> set:
    "assets/ file names that a cell writes through `out_dir(...) / 'name.ext'` (in a checkout out_dir() is assets/)."
    return {m.group(1) for m in re.finditer(r"out_dir\([^)]*\)\)?\s*/\s*'([\w./-]+\.(?:png|gif|json|md|txt))'", src)}


@pytest.mark.parametrize('path', [ROOT / 'README.md'] + NBS, ids=lambda p: p.name)
def test_named_assets_exist(path):
    if path.suffix == '.md': names = linked(path.read_text())
    else:
        names = set()
        for c in json.loads(path.read_text())['cells']:
            src = ''.join(c['source'])
            if c['cell_type'] == 'markdown': names |= linked(src)
            elif not flags(src) & SKIPPED:
                names |= written(src)
                for o in c.get('outputs', []): names |= linked(''.join(o.get('data', {}).get('text/markdown', '')))
    missing = sorted(n for n in names if not (ROOT / 'assets' / n).exists())
    assert not missing, f"{path.name} names assets/{missing} but they do not exist: run `python tools/run_notebooks.py {path.stem}`"


def test_the_checks_see_links_and_writes():
    assert linked('![a](../assets/a.gif) [b](assets/b/c.json) [x](https://x.org/assets/y.png)') == {'a.gif', 'b/c.json'}
    assert written("save_gif(f, out_dir('10_ddpm') / 'toy.gif')\nsave_image_grid(x, out_dir() / 'g.png')\n"
                   "grab.save((tmp if in_test() else out_dir('41_dit')) / 'p.gif')") == {'toy.gif', 'g.png', 'p.gif'}
