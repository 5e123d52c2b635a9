"Helpers shared by the command-line tests (test_cli.py, test_cli_adversarial.py): pytest puts tests/ on sys.path."
import hashlib, os, subprocess, sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
ENV = {**os.environ, 'OMP_NUM_THREADS': '1', 'PYTHONPATH': os.pathsep.join([str(ROOT), os.environ.get('PYTHONPATH', '')])}


def console(name, *args):
    "Run the installed console script `name` (falling back to its entry point when the script is not on disk)."
    script = Path(sys.executable).parent / name
    fn = {'dc-train': 'train_main', 'dc-sample': 'sample_main'}[name]
    cmd = [str(script)] if script.exists() else [sys.executable, '-c', f'import sys; from diffusion_course.cli import {fn}; sys.exit({fn}())']
    return subprocess.run(cmd + [str(a) for a in args], cwd=ROOT, env=ENV, capture_output=True, text=True, timeout=300)


def digest(folder):
    "A fingerprint of every file under `folder` (names and contents)."
    h = hashlib.sha1()
    for p in sorted(Path(folder).rglob('*')):
        if p.is_file(): h.update(p.relative_to(folder).as_posix().encode()); h.update(p.read_bytes())
    return h.hexdigest()


def one_error_line(err: str, prog: str) -> str:
    "The single `prog: error: ...` line in `err` (progress lines aside), with nothing that looks like a traceback."
    lines = [l for l in err.strip().splitlines() if l.strip() and not l.startswith(('reading ', 'sampling: '))]
    assert len(lines) == 1 and lines[0].startswith(f'{prog}: error:') and 'Traceback' not in err, err
    return lines[0]
