"dc-train itself under torchrun: two CPU processes (gloo) write one checkpoint, hold identical weights, and resume exactly."
import os, socket, subprocess, sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from diffusion_course.training import list_checkpoints, load_checkpoint

ROOT = Path(__file__).resolve().parents[1]
ENV = {**os.environ, 'OMP_NUM_THREADS': '1', 'PYTHONPATH': os.pathsep.join([str(ROOT), os.environ.get('PYTHONPATH', '')])}
TINY = ['--model', 'UNet-T', '--size', '16', '--batch-size', '4', '--sample-steps', '2', '--n-samples', '4', '--T', '50', '--warmup', '2', '--quiet']

HOOK = '''
import sys, torch
from diffusion_course import cli
dump_dir, argv = sys.argv[1], sys.argv[2:]
fit = cli.Trainer.fit
def fit_and_dump(self, *a, **k):  # dc-train unchanged; afterwards each process writes the weights it holds
    out = fit(self, *a, **k)
    torch.save({'model': self.model.state_dict(), 'ema': self.ema.model.state_dict(), 'step': self.step}, f"{dump_dir}/rank{self.rank}.pt")
    return out
cli.Trainer.fit = fit_and_dump
sys.exit(cli.train_main(argv))
'''


def free_port() -> int:
    with socket.socket() as s:
        s.bind(('127.0.0.1', 0))
        return s.getsockname()[1]


def torchrun(tmp_path, *args, dump=None):
    "torchrun --nproc_per_node 2 of the dc-train command (or, with `dump`, of dc-train's entry point that also saves each rank's weights)."
    launch = [sys.executable, '-m', 'torch.distributed.run', '--nproc_per_node', '2', '--master_addr', '127.0.0.1', '--master_port', str(free_port())]
    script = Path(sys.executable).parent / 'dc-train'
    if dump is not None:
        hook = tmp_path / 'hook.py'; hook.write_text(HOOK)
        cmd = launch + [str(hook), str(dump)]
    elif script.exists(): cmd = launch + ['--no-python', str(script)]  # the installed command
    else:
        entry = tmp_path / 'dc_train.py'; entry.write_text('import sys; from diffusion_course.cli import train_main; sys.exit(train_main())')
        cmd = launch + [str(entry)]
    r = subprocess.run(cmd + [str(a) for a in args], cwd=ROOT, env=ENV, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    return r


def weights(dump):
    s0, s1 = (torch.load(dump / f'rank{i}.pt', weights_only=True) for i in range(2))
    for part in ('model', 'ema'):
        for k in s0[part]: assert torch.equal(s0[part][k], s1[part][k]), (part, k)  # identical on both processes
    return s0


def test_dc_train_under_torchrun(tmp_path):
    rng = np.random.default_rng(0)
    for c in 'ab':
        (tmp_path / 'imgs' / c).mkdir(parents=True)
        for i in range(8): Image.fromarray(rng.integers(0, 256, (16, 16, 3), dtype=np.uint8)).save(tmp_path / 'imgs' / c / f'{i}.png')
    data = ['--dataset', tmp_path / 'imgs', *TINY]
    # six steps in one go: one checkpoint, written once, and the same weights on both processes
    full, dump_full = tmp_path / 'full', tmp_path / 'dump-full'; dump_full.mkdir()
    r = torchrun(tmp_path, *data, '--out', full, '--steps', '6', '--every', '3', '--ckpt-every', '6', dump=dump_full)
    assert r.stderr.count('dc-train: 6 steps in') == 1 and '2 x cpu' in r.stderr  # rank 0 reports, once
    assert [p.name for p in list_checkpoints(full)] == ['step-0000006']
    assert not [p.name for p in full.iterdir() if p.name.startswith('.')]
    a = weights(dump_full)
    ck = load_checkpoint(full)
    assert len(ck['state']['rng']) == 2 and ck['state']['world'] == 2
    for k, v in ck['weights']['model'].items(): assert torch.equal(v, a['model'][k]), k
    # the dc-train command for three steps, then --resume for three more under torchrun: the same weights, bit for bit
    part, dump_part = tmp_path / 'part', tmp_path / 'dump-part'; dump_part.mkdir()
    torchrun(tmp_path, *data, '--out', part, '--steps', '3', '--every', '3', '--ckpt-every', '3')
    assert [p.name for p in list_checkpoints(part)] == ['step-0000003']
    r = torchrun(tmp_path, '--out', part, '--resume', '--steps', '6', '--every', '3', '--ckpt-every', '6', dump=dump_part)
    assert r.stderr.count('resumed from') == 1
    b = weights(dump_part)
    assert b['step'] == 6
    for part_ in ('model', 'ema'):
        for k in a[part_]: assert torch.equal(a[part_][k], b[part_][k]), (part_, k)
