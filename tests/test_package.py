"The package as a user meets it: imports cheaply, needs no torchvision, and every module has its notebook."
import json, re, subprocess, sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

def _imported_after(stmt):
    code = f"import sys; {stmt}; print(','.join(sorted(m.split('.')[0] for m in sys.modules)))"
    out = subprocess.run([sys.executable, '-c', code], capture_output=True, text=True, check=True, cwd=ROOT)
    return set(out.stdout.strip().split(','))

def test_top_level_import_is_light():
    mods = _imported_after('import diffusion_course')
    assert 'torch' not in mods and 'torchvision' not in mods and 'matplotlib' not in mods

def test_modules_import_without_torchvision_or_pyplot():
    mods = _imported_after('import diffusion_course.core, diffusion_course.data, diffusion_course.diffusion.ddpm')
    assert 'torchvision' not in mods and 'matplotlib' not in mods, sorted(mods & {'torchvision', 'matplotlib'})

def _default_exps():
    exps = {}
    for nb in sorted((ROOT / 'nbs').glob('*.ipynb')):
        for cell in json.loads(nb.read_text())['cells']:
            m = re.search(r'^#\|\s*default_exp\s+(\S+)', ''.join(cell['source']), re.M)
            if m: exps[m.group(1)] = nb.name
    return exps

def test_every_module_has_its_notebook():
    exps = _default_exps()
    pkg = ROOT / 'diffusion_course'
    modules = {p.relative_to(pkg).with_suffix('').as_posix().replace('/', '.') for p in pkg.rglob('*.py')}
    modules = {m for m in modules if not m.endswith('__init__') and m != '_modidx'}
    orphans = sorted(modules - set(exps))
    assert not orphans, f"modules with no notebook that exports them: {orphans}"

def test_notebook_numbers_match_modules():
    for mod, nb in _default_exps().items():
        assert re.match(r'\d\d_\w+\.ipynb$', nb), f"{nb} exports {mod} but is not a numbered notebook"
