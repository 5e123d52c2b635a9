"""Measure what a runtime install adds beside torch: packages and MB on disk, each target in its own fresh virtual environment.

    python scripts/install_weight.py dist/diffusion_course-0.1.0-py3-none-any.whl 'dist/diffusion_course-0.1.0-py3-none-any.whl[hub]'

Every target is installed into a copy of one fresh venv that holds only `torch==2.13.0` (and what torch itself pulls);
the figures exclude that venv's contents, so they are what the target adds. Sizes are `du` of site-packages plus bin/.
"""
import json, shutil, subprocess, sys, tempfile
from pathlib import Path

TORCH = 'torch==2.13.0'

def pip(venv, *args):
    r = subprocess.run([str(venv / 'bin' / 'python'), '-m', 'pip', *args], capture_output=True, text=True)
    if r.returncode: sys.exit(f"pip {' '.join(args)} failed:\n{r.stdout[-3000:]}\n{r.stderr[-3000:]}")
    return r.stdout

def packages(venv):
    return {p['name'].lower(): p['version'] for p in json.loads(pip(venv, 'list', '--format', 'json'))}

def size_mb(venv):
    out = subprocess.run(['du', '-sk', *[str(p) for p in venv.glob('lib/python*/site-packages')], str(venv / 'bin')],
                         capture_output=True, text=True).stdout
    return sum(int(l.split()[0]) for l in out.splitlines()) / 1024

def main(targets):
    tmp = Path(tempfile.mkdtemp(prefix='install_weight_'))
    base = tmp / 'base'
    subprocess.run([sys.executable, '-m', 'venv', str(base)], check=True)
    pip(base, 'install', '-q', TORCH)
    base_pkgs, base_mb = packages(base), size_mb(base)
    print(f"base venv: {TORCH} and its dependencies: {len(base_pkgs)} packages, {base_mb:.0f} MB")
    results = []
    for i, target in enumerate(targets):
        venv = tmp / f'v{i}'
        shutil.copytree(base, venv, symlinks=True)  # a venv copy keeps working through `python -m pip` (pyvenv.cfg is found beside the python)
        pip(venv, 'install', '-q', target)
        pkgs = packages(venv)
        added = sorted(set(pkgs) - set(base_pkgs))
        mb = size_mb(venv) - base_mb
        results.append({'target': target, 'packages_added': len(added), 'mb_added': round(mb, 1), 'added': added})
        print(f"\n{target}\n  adds {len(added)} packages, {mb:.1f} MB beside torch:\n  " + ' '.join(f"{p}=={pkgs[p]}" for p in added))
        shutil.rmtree(venv)
    shutil.rmtree(tmp)
    return results

if __name__ == '__main__':
    if len(sys.argv) < 2: sys.exit(__doc__)
    res = main(sys.argv[1:])
    print('\n' + json.dumps([{k: v for k, v in r.items() if k != 'added'} for r in res], indent=1))
