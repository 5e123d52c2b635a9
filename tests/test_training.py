"Trainer tests that are not lessons: exact resume, EMA across resume, atomic saves under SIGKILL, keep-last-K, NaN, DDP."
import functools, os, signal, subprocess, sys, textwrap, time
from pathlib import Path

import pytest
import torch
from torch import nn

from diffusion_course.core import seed_everything
from diffusion_course.data import ImageData
from diffusion_course.diffusion import ddpm
from diffusion_course.training import (EMA, Checkpoint, CheckpointError, LossPlot, Trainer, latest_checkpoint, list_checkpoints,
                                       load_checkpoint, save_checkpoint)

ROOT = Path(__file__).resolve().parents[1]
ENV = {**os.environ, 'OMP_NUM_THREADS': '1', 'PYTHONPATH': os.pathsep.join([str(ROOT), os.environ.get('PYTHONPATH', '')])}  # the package from this tree

STANDIN = '''
class TinyDenoiser(nn.Module):
    "A stand-in backbone keeping the interface model(x, t, y)."
    def __init__(self, channels=1, width=8, num_classes=10, T=100):
        super().__init__()
        self.inp = nn.Conv2d(channels, width, 3, padding=1)
        self.t_embed, self.y_embed = nn.Embedding(T, width), nn.Embedding(num_classes + 1, width)
        self.out = nn.Sequential(nn.SiLU(), nn.Conv2d(width, channels, 3, padding=1))
    def forward(self, x, t, y=None):
        c = self.t_embed(t) + (self.y_embed(y) if y is not None else 0)
        return self.out(self.inp(x) + c[:, :, None, None])
'''
exec(STANDIN)


def toy_data(n=256, size=8, seed=0):
    g = torch.Generator().manual_seed(seed)
    return ImageData(torch.randint(0, 256, (n, 1, size, size), dtype=torch.uint8, generator=g), torch.arange(n) % 10, name='toy')


DATA = toy_data()
SCHED = ddpm.Schedule.linear(100)
LOSS = functools.partial(ddpm.l_simple, sched=SCHED)


def make_trainer(run_dir, steps=30, every=10, keep=3, loss_fn=LOSS, accum=2, lr=3e-3):
    seed_everything(0)
    return Trainer(TinyDenoiser(), loss_fn, DATA, steps=steps, batch_size=16, lr=lr, warmup=4, decay='cosine', accum=accum,
                   device='cpu', callbacks=[EMA(beta=0.99), LossPlot(), Checkpoint(run_dir, every=every, keep=keep)])


def test_exact_resume_equal_losses_and_ema(tmp_path):
    full = make_trainer(tmp_path / 'full').fit()
    make_trainer(tmp_path / 'part').fit(until=10)  # "killed" after step 10
    resumed = make_trainer(tmp_path / 'part')
    seed_everything(123)  # a different random state before resuming: the checkpoint must restore it
    assert resumed.resume(tmp_path / 'part').name == 'step-0000010' and resumed.step == 10
    assert resumed.ema.ema.step.item() == 10  # the EMA came back with its step counter, not a fresh copy
    resumed.fit()
    a, b = full.callback(LossPlot).losses, resumed.callback(LossPlot).losses
    assert len(a) == len(b) == 30 and a[10:] == b[10:] and a == b  # equal at every later step, bit for bit
    for p, q in zip(full.model.parameters(), resumed.model.parameters()): assert torch.equal(p, q)
    for p, q in zip(full.ema.model.parameters(), resumed.ema.model.parameters()): assert torch.equal(p, q)  # the EMA survived
    assert not all(torch.equal(p, q) for p, q in zip(full.model.parameters(), full.ema.model.parameters()))  # and it averages


def test_keep_last_k_and_final_checkpoint(tmp_path):
    make_trainer(tmp_path, steps=25, every=5, keep=2).fit()
    assert [p.name for p in list_checkpoints(tmp_path)] == ['step-0000020', 'step-0000025']  # 25: the end of the run
    assert not [p for p in tmp_path.iterdir() if p.name.startswith('.')]  # no temporary folders left
    ck = load_checkpoint(tmp_path)
    assert ck['state']['step'] == 25 and set(ck['weights']) == {'model', 'ema'}


def test_nan_stops_with_step_and_last_good_checkpoint(tmp_path):
    calls = {'n': 0}
    def flaky(model, x0, y):  # finite for 6 optimizer steps (2 micro-batches each), then NaN
        calls['n'] += 1
        loss = LOSS(model, x0, y)
        return loss * float('nan') if calls['n'] > 12 else loss
    tr = make_trainer(tmp_path, steps=30, every=5, loss_fn=flaky)
    with pytest.raises(FloatingPointError) as e: tr.fit()
    msg = str(e.value)
    assert 'at step 7' in msg and 'step-0000005' in msg, msg
    assert [p.name for p in list_checkpoints(tmp_path)] == ['step-0000005']
    ck = load_checkpoint(tmp_path)
    assert all(torch.isfinite(v).all() for v in ck['weights']['model'].values())


def test_failed_save_leaves_previous_checkpoint(tmp_path, monkeypatch):
    m = TinyDenoiser()
    save_checkpoint(tmp_path / 'step-0000001', {'model': m.state_dict()}, {'step': 1})
    def boom(*a, **k): raise OSError('disk full (simulated)')
    monkeypatch.setattr(torch, 'save', boom)
    with pytest.raises(OSError): save_checkpoint(tmp_path / 'step-0000002', {'model': m.state_dict()}, {'step': 2})
    assert [p.name for p in list_checkpoints(tmp_path)] == ['step-0000001']
    assert load_checkpoint(tmp_path)['state']['step'] == 1


def test_corrupt_or_missing_checkpoint_raises_clearly(tmp_path):
    with pytest.raises(CheckpointError, match='does not exist'): load_checkpoint(tmp_path / 'nope')
    with pytest.raises(CheckpointError, match='no checkpoint'): load_checkpoint(tmp_path)
    p = save_checkpoint(tmp_path / 'step-0000001', {'model': TinyDenoiser().state_dict()}, {'step': 1})
    (p / 'model.safetensors').write_bytes(b'\x00' * 10)
    with pytest.raises(CheckpointError, match='corrupt'): load_checkpoint(tmp_path)


KILL_SCRIPT = '''
import sys, torch
from diffusion_course.training import save_checkpoint, prune_checkpoints
run = sys.argv[1]
weights = {'model': {f'w{i}': torch.full((256, 1024), float(i)) for i in range(8)}}  # 8 MiB per checkpoint
step = 0
print('ready', flush=True)
while True:
    step += 1
    save_checkpoint(f'{run}/step-{step:07d}', weights, {'step': step}, {'step': step})
    prune_checkpoints(run, keep=2)
'''


def test_kill_during_save_never_leaves_a_corrupt_checkpoint(tmp_path):
    script = tmp_path / 'saver.py'; script.write_text(KILL_SCRIPT)
    interrupted = 0
    for trial, delay in enumerate((0.3, 0.55, 0.8)):
        run = tmp_path / f'run{trial}'
        proc = subprocess.Popen([sys.executable, str(script), str(run)], cwd=ROOT, env=ENV, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        assert proc.stdout.readline().strip() == b'ready', proc.stderr.read().decode()
        time.sleep(delay)
        proc.send_signal(signal.SIGKILL); proc.wait()
        found = list_checkpoints(run)
        interrupted += any(p.name.startswith(('.tmp-', '.trash-')) for p in run.iterdir())  # the kill landed inside a save or a prune
        for p in found:  # every checkpoint under its final name is whole
            ck = load_checkpoint(p)
            assert ck['state']['step'] == ck['config']['step'] == int(p.name.split('-')[1])
            assert torch.equal(ck['weights']['model']['w7'], torch.full((256, 1024), 7.0))
        if found: assert latest_checkpoint(run) == found[-1]
    assert interrupted >= 1  # the test really killed a save half-way at least once


DDP_SCRIPT = '''
import functools, os, sys, torch
from torch import nn
from diffusion_course.data import ImageData
from diffusion_course.diffusion import ddpm
from diffusion_course.training import Trainer, EMA, Checkpoint, cleanup_distributed
{standin}
out = sys.argv[1]
torch.manual_seed(int(os.environ['RANK']))  # different initial weights on each rank: DDP must broadcast rank 0's
g = torch.Generator().manual_seed(0)
data = ImageData(torch.randint(0, 256, (256, 1, 8, 8), dtype=torch.uint8, generator=g), torch.arange(256) % 10)
loss = functools.partial(ddpm.l_simple, sched=ddpm.Schedule.linear(100))
tr = Trainer(TinyDenoiser(), loss, data, steps=8, batch_size=8, lr=1e-2, warmup=2, device='cpu',
             callbacks=[EMA(beta=0.9), Checkpoint(out + '/run', every=100, keep=3)])
first = next(iter(tr.batches.sampler))
tr.fit()
torch.save({{'model': tr.model.state_dict(), 'ema': tr.ema.model.state_dict(), 'first': first, 'loss': tr.loss}}, f"{{out}}/rank{{tr.rank}}.pt")
cleanup_distributed()
'''


def test_ddp_two_processes_identical_weights_one_checkpoint(tmp_path):
    script = tmp_path / 'ddp.py'; script.write_text(DDP_SCRIPT.format(standin=STANDIN))
    r = subprocess.run([sys.executable, '-m', 'torch.distributed.run', '--nproc_per_node', '2', '--master_port', str(29500 + os.getpid() % 1000),
                        str(script), str(tmp_path)], cwd=ROOT, env=ENV, capture_output=True, text=True, timeout=240)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    s0, s1 = (torch.load(tmp_path / f'rank{i}.pt', weights_only=True) for i in range(2))
    for k in s0['model']: assert torch.equal(s0['model'][k], s1['model'][k]), k
    for k in s0['ema']: assert torch.equal(s0['ema'][k], s1['ema'][k]), k
    assert s0['first'] != s1['first'] and s0['loss'] == s1['loss']  # disjoint shards; the logged loss is the all-reduced one
    assert [p.name for p in list_checkpoints(tmp_path / 'run')] == ['step-0000008']  # one checkpoint, written once
    assert sorted(p.name for p in (tmp_path / 'run').iterdir()) == ['step-0000008']
    ck = load_checkpoint(tmp_path / 'run')
    for k, v in ck['weights']['model'].items(): assert torch.equal(v, s0['model'][k])
    assert len(ck['state']['rng']) == 2  # each rank's random state, for an exact resume


def test_resume_at_an_epoch_boundary_is_exact(tmp_path):
    "256 images in batches of 16 (accum 2): an epoch is 8 steps; a checkpoint at step 8 resumes into the next epoch, not an empty batch."
    full = make_trainer(tmp_path / 'full', steps=12, every=100).fit()
    make_trainer(tmp_path / 'part', steps=12, every=8).fit(until=8)
    resumed = make_trainer(tmp_path / 'part', steps=12, every=100)
    assert resumed.resume(tmp_path / 'part').name == 'step-0000008' and resumed.batches.state_dict() == {'epoch': 0, 'pos': 256}
    resumed.fit()
    assert full.callback(LossPlot).losses == resumed.callback(LossPlot).losses
    for p, q in zip(full.model.parameters(), resumed.model.parameters()): assert torch.equal(p, q)


def test_ctrl_c_saves_the_last_whole_step_and_resumes_exactly(tmp_path):
    "SIGINT in the middle of step 5: the step finishes, is saved, `TrainingInterrupted` names the checkpoint; the resumed run is exact."
    from diffusion_course.training import Callback, TrainingInterrupted
    class CtrlC(Callback):
        def on_step_start(self, trainer):
            if trainer.step == 4: os.kill(os.getpid(), signal.SIGINT)  # arrives while step 5 runs
    full = make_trainer(tmp_path / 'full', steps=10, every=100).fit()
    tr = make_trainer(tmp_path / 'part', steps=10, every=100)
    tr.callbacks.append(CtrlC())
    before = signal.getsignal(signal.SIGINT)  # Python's default handler, or SIG_IGN in a shell's background job
    with pytest.raises(TrainingInterrupted) as e: tr.fit()
    assert e.value.step == 5 and e.value.checkpoint.name == 'step-0000005' and 'saved checkpoint' in str(e.value)
    assert signal.getsignal(signal.SIGINT) is before  # the handler is put back
    resumed = make_trainer(tmp_path / 'part', steps=10, every=100)
    assert resumed.resume(tmp_path / 'part').name == 'step-0000005'
    resumed.fit()
    assert full.callback(LossPlot).losses == resumed.callback(LossPlot).losses


def test_resume_with_more_steps_follows_the_new_schedule(tmp_path):
    make_trainer(tmp_path, steps=10, every=10).fit()
    longer = make_trainer(tmp_path, steps=20, every=100)
    longer.resume(tmp_path)
    from diffusion_course.training import WarmupDecay
    assert longer.opt.param_groups[0]['lr'] == pytest.approx(3e-3 * WarmupDecay(4, 20, 'cosine')(10))  # not the end of the 10-step cosine
    longer.fit(until=11)
    assert longer.opt.param_groups[0]['lr'] == pytest.approx(3e-3 * WarmupDecay(4, 20, 'cosine')(11))


def test_resume_refuses_a_checkpoint_that_does_not_fit(tmp_path):
    make_trainer(tmp_path, steps=4, every=4).fit()
    other = Trainer(nn.Conv2d(1, 1, 3, padding=1), LOSS, DATA, steps=8, batch_size=16, device='cpu', callbacks=[Checkpoint(tmp_path / 'x')])
    with pytest.raises(CheckpointError, match=r"does not fit the model: .*missing") as e: other.resume(tmp_path)
    assert '\n' not in str(e.value)
    before = [p.detach().clone() for p in other.model.parameters()]
    assert all(torch.equal(p, q) for p, q in zip(before, other.model.parameters()))  # nothing loaded
    ck = latest_checkpoint(tmp_path)
    torch.save({'step': 4}, ck / 'state.pt')
    with pytest.raises(CheckpointError, match=r"lacks \['steps', 'world', 'opt'"): make_trainer(tmp_path, steps=8).resume(tmp_path)
