"""The adversarial run of dc-train, dc-sample and the Trainer (issue 15), replayed: each failure it found, and what must hold instead.

Every user mistake ends in one line naming the expected and the actual values, exit status 1, no traceback, and nothing on disk
lost or overwritten. Items are named by their number in the issue (1-15) or by what they test (the "Smaller" list)."""
import errno, json, os, shutil, signal, struct, subprocess, sys, time, zlib
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors.torch import load_file, save_file

from diffusion_course import cli
from diffusion_course.cli import GridCanvas, LIMITS, check_out_dir, lock_run, sample_main, train_main, unlock_run
from diffusion_course.core import image_grid
from diffusion_course.data import CELEBA_ATTRS, load_dataset
from diffusion_course.diffusion import ddpm
from diffusion_course.training import (Checkpoint, CheckpointError, EMA, Trainer, WarmupDecay, list_checkpoints, load_checkpoint)

from cli_helpers import ENV, ROOT, digest, one_error_line

FAST = ['--model', 'UNet-T', '--size', '16', '--steps', '4', '--batch-size', '4', '--every', '2', '--ckpt-every', '2', '--sample-steps', '2', '--n-samples', '4',
        '--T', '50', '--quiet']


def write_images(folder, n, size=16, seed=0, suffix='.png'):
    folder = Path(folder); folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    for i in range(n): Image.fromarray(rng.integers(0, 256, (size, size, 3), dtype=np.uint8)).save(folder / f'{i:03d}{suffix}')
    return folder


def one_line(capsys, prog):
    "The single error line the command printed (and nothing that looks like a traceback or torch's advice)."
    return one_error_line(capsys.readouterr().err, prog)


def fails(capsys, prog, argv, *words):
    "Run dc-train or dc-sample in this process: exit status 1, one line holding every word of `words`."
    main = train_main if prog == 'dc-train' else sample_main
    capsys.readouterr()  # what earlier commands printed
    assert main([str(a) for a in argv]) == 1
    line = one_line(capsys, prog)
    for w in words: assert w in line, line
    return line


@pytest.fixture(scope='module')
def data(tmp_path_factory):
    "Two classes of 8 random 16x16 images."
    root = tmp_path_factory.mktemp('data') / 'imgs'
    write_images(root / 'a', 8, seed=1); write_images(root / 'b', 8, seed=2)
    return root


@pytest.fixture(scope='module')
def trained(tmp_path_factory, data):
    "A finished 4-step run with checkpoints at steps 2 and 4."
    out = tmp_path_factory.mktemp('trained') / 'run'
    assert train_main(['--dataset', str(data), '--out', str(out), *FAST]) == 0
    assert [p.name for p in list_checkpoints(out)] == ['step-0000002', 'step-0000004']
    return out


@pytest.fixture
def run_copy(trained, tmp_path):
    "A copy of the finished run to tamper with."
    out = tmp_path / 'run'
    shutil.copytree(trained, out)
    return out


def popen_train(*args):
    "dc-train in a child process (its own Python: signals and locks as in real use)."
    cmd = [sys.executable, '-c', 'import sys; from diffusion_course.cli import train_main; sys.exit(train_main())', *map(str, args)]
    return subprocess.Popen(cmd, cwd=ROOT, env=ENV, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def wait_for(path, proc, timeout=60):
    t0 = time.time()
    while not Path(path).exists():
        assert proc.poll() is None, proc.communicate()[1][-3000:]
        assert time.time() - t0 < timeout, f'{path} never appeared'
        time.sleep(0.05)


# 1. A one-class image folder (flat, or one sub-folder) trains an unconditional model: labels are not passed to it.
@pytest.mark.parametrize('layout', ['flat', 'one-subfolder'])
def test_01_one_class_folder_trains(tmp_path, capsys, layout):
    imgs = write_images(tmp_path / 'imgs' / ('' if layout == 'flat' else 'cats'), 8)
    out = tmp_path / 'run'
    assert train_main(['--dataset', str(tmp_path / 'imgs'), '--out', str(out), *FAST]) == 0, capsys.readouterr().err
    assert json.loads((out / 'config.json').read_text())['num_classes'] == 0
    assert sample_main(['--ckpt', str(out), '--n', '3', '--steps', '2', '--out', str(tmp_path / 'g.png')]) == 0
    assert imgs.exists() and Image.open(tmp_path / 'g.png').size == (3 * 18 + 2, 18 + 2)


# 2. A negative --grad-clip would reverse every gradient: refused.
def test_02_negative_grad_clip(tmp_path, capsys, data):
    fails(capsys, 'dc-train', ['--dataset', data, '--out', tmp_path / 'o', *FAST, '--grad-clip', '-1'], '--grad-clip', '>= 0', '-1')
    assert not (tmp_path / 'o').exists()
    with pytest.raises(ValueError, match='grad_clip'): Trainer(torch.nn.Linear(1, 1), None, None, steps=1, grad_clip=-1.0)


# 3. Extending a cosine run: the learning rate follows the schedule of the new length.
def test_03_extended_run_decays_over_its_new_length(tmp_path, data):
    out = tmp_path / 'run'
    opts = ['--dataset', data, '--out', out, *FAST, '--decay', 'cosine', '--warmup', '0', '--lr', '1e-3', '--keep', '10']
    assert train_main([str(a) for a in opts]) == 0
    assert train_main(['--out', str(out), '--resume', '--steps', '8', '--quiet']) == 0
    lr6 = load_checkpoint(out / 'step-0000006')['state']['opt']['param_groups'][0]['lr']  # the rate of step 7
    assert lr6 == pytest.approx(1e-3 * WarmupDecay(0, 8, 'cosine')(6)) and lr6 > 2e-4  # the old schedule had ended at 1e-4


# 4. Ctrl-C saves a checkpoint that --resume continues; a run with no checkpoint starts again.
def test_04_ctrl_c_saves_a_checkpoint(tmp_path, data):
    out = tmp_path / 'run'
    p = popen_train('--dataset', data, '--out', out, *FAST[:-1], '--steps', '2000', '--every', '1000', '--ckpt-every', '1000')
    wait_for(out / 'config.json', p); time.sleep(0.5)
    p.send_signal(signal.SIGINT)
    _, err = p.communicate(timeout=60)
    assert p.returncode == 130 and 'Traceback' not in err, err[-3000:]
    last = err.strip().splitlines()[-1]
    assert last.startswith('dc-train: interrupted: stopped at step') and 'saved checkpoint' in last and '--resume' in last, err
    (ck,) = list_checkpoints(out)
    step = int(ck.name.split('-')[1])
    assert 0 < step < 2000 and load_checkpoint(ck)['state']['step'] == step
    assert train_main(['--out', str(out), '--resume', '--steps', str(step + 2), '--quiet']) == 0
    assert list_checkpoints(out)[-1].name == f'step-{step + 2:07d}'


def test_04_run_without_checkpoint_is_restartable(tmp_path, capsys, data):
    for resume in (False, True):
        out = tmp_path / f'run{int(resume)}'
        nan = ['--dataset', data, '--out', out, *FAST, '--lr', '1e30', '--warmup', '0', '--ckpt-every', '100']
        fails(capsys, 'dc-train', nan, 'at step 2', 'no checkpoint was written yet')
        assert (out / 'config.json').exists() and not list_checkpoints(out)
        again = ['--out', out, '--resume', '--lr', '1e-3'] if resume else ['--dataset', data, '--out', out, *FAST]
        assert train_main([str(a) for a in again]) == 0, capsys.readouterr().err
        assert list_checkpoints(out)[-1].name == 'step-0000004'


# 5. Two processes on one run: the second stops at once with one line; a SIGKILL leaves no stale lock.
def test_05_run_folder_is_locked(tmp_path, capsys, data):
    out = tmp_path / 'run'
    p = popen_train('--dataset', data, '--out', out, *FAST[:-1], '--steps', '2000', '--every', '1000', '--ckpt-every', '1000')
    try:
        wait_for(out / 'config.json', p)
        before = (out / 'config.json').read_bytes()
        fails(capsys, 'dc-train', ['--dataset', data, '--out', out, *FAST], 'another process', str(out))
        fails(capsys, 'dc-train', ['--out', out, '--resume', '--quiet'], 'another process')
        assert (out / 'config.json').read_bytes() == before
    finally: p.kill(); p.wait()
    assert train_main(['--out', str(out), '--resume', '--steps', '2', '--every', '2', '--quiet']) == 0  # the lock died with its process


def test_05_lock_is_exclusive(tmp_path):
    fd = lock_run(tmp_path)
    try:
        with pytest.raises(cli.UsageError, match='another process'): lock_run(tmp_path)
    finally: unlock_run(fd)
    unlock_run(lock_run(tmp_path))  # free again


# 6. NaN gradients under a finite loss stop the step; NaN weights are never saved, and never sampled from.
class Tiny(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = torch.nn.Conv2d(3, 3, 3, padding=1)
    def forward(self, x, t, y=None): return self.conv(x)


def test_06_nan_gradient_with_finite_loss(tmp_path, data):
    sched = ddpm.Schedule.linear(50)
    calls = {'n': 0}
    def loss_fn(model, x0, y):
        calls['n'] += 1
        loss = ddpm.l_simple(model, x0, None, sched=sched)
        if calls['n'] < 4: return loss
        w = model.conv.weight.sum()
        return loss + 0.0 * torch.sqrt(w - w.detach())  # the value is the loss; its gradient is 0 * inf = NaN
    torch.manual_seed(0)
    tr = Trainer(Tiny(), loss_fn, load_dataset(str(data), size=16), steps=10, batch_size=4, lr=1e-3, warmup=0, grad_clip=None,
                 device='cpu', callbacks=[EMA(), Checkpoint(tmp_path, every=1, keep=5)])
    with pytest.raises(FloatingPointError, match='gradients became non-finite') as e: tr.fit()
    assert 'at step 4' in str(e.value) and 'step-0000003' in str(e.value)
    for ck in list_checkpoints(tmp_path):
        assert all(torch.isfinite(v).all() for v in load_checkpoint(ck)['weights']['model'].values())
    with torch.no_grad(): tr.model.conv.weight[0, 0, 0, 0] = float('nan')
    with pytest.raises(FloatingPointError, match='NaN or inf'): tr.checkpointer.save(tr)
    assert [p.name for p in list_checkpoints(tmp_path)][-1] == 'step-0000003'


def test_06_sampling_refuses_nan_weights(run_copy, tmp_path, capsys):
    ck = run_copy / 'step-0000004'
    ema = load_file(str(ck / 'ema.safetensors'))
    k = next(k for k in ema if k.startswith('ema_model.') and ema[k].is_floating_point())
    ema[k][...] = float('nan'); save_file(ema, str(ck / 'ema.safetensors'))
    fails(capsys, 'dc-sample', ['--ckpt', run_copy, '--out', tmp_path / 'g.png'], 'NaN or inf', k[len('ema_model.'):], 'step-0000002')
    assert not (tmp_path / 'g.png').exists()


# 7. dc-sample --n large: batches of --batch-size, a progress line per batch, the grid built a batch at a time.
def test_07_sampling_in_batches(trained, tmp_path, capsys, monkeypatch):
    seen = []
    make = cli.make_sample_fn
    def spy(*a, **k):
        fn = make(*a, **k)
        wrapped = lambda model, x_T, y: (seen.append(len(x_T)), fn(model, x_T, y))[1]
        wrapped.sampler = fn.sampler  # dc-sample reads the sampler's evaluations from it
        return wrapped
    monkeypatch.setattr(cli, 'make_sample_fn', spy)
    assert sample_main(['--ckpt', str(trained), '--n', '50', '--batch-size', '16', '--steps', '2', '--nrow', '10', '--out', str(tmp_path / 'g.png')]) == 0
    assert seen == [16, 16, 16, 2] and 'sampling: 4/4' in capsys.readouterr().err
    assert Image.open(tmp_path / 'g.png').size == (10 * 18 + 2, 5 * 18 + 2)
    fails(capsys, 'dc-sample', ['--ckpt', trained, '--n', LIMITS['samples'] + 1, '--out', tmp_path / 'h.png'], 'at most', '100,001')
    fails(capsys, 'dc-sample', ['--ckpt', trained, '--n', 2000, '--gif', tmp_path / 'd.gif', '--out', tmp_path / 'h.png'], '--gif', '2,000')
    assert not (tmp_path / 'h.png').exists()


def test_07_grid_canvas_equals_image_grid():
    x = torch.rand(13, 3, 5, 7) * 2 - 1
    for nrow in (4, 20):
        c = GridCanvas(13, (3, 5, 7), nrow)
        for i in range(0, 13, 5): c.add(x[i:i + 5])
        assert np.array_equal(c.pixels, image_grid(x, nrow=nrow))


# 8. --resume with another --n-samples: refused before any training (the GIF's frames keep one size).
def test_08_resume_with_other_n_samples(run_copy, capsys):
    before = digest(run_copy)
    fails(capsys, 'dc-train', ['--out', run_copy, '--resume', '--steps', '6', '--n-samples', '8'], '--n-samples 8', 'the run has 4')
    assert digest(run_copy) == before


# 9. Bad dataset files: one line naming the file, nothing written.
def _bomb_png(path):
    "A tiny PNG file whose header claims 100,000 x 100,000 pixels."
    def chunk(kind, body): return struct.pack('>I', len(body)) + kind + body + struct.pack('>I', zlib.crc32(kind + body))
    path.write_bytes(b'\x89PNG\r\n\x1a\n' + chunk(b'IHDR', struct.pack('>IIBBBBB', 100_000, 100_000, 1, 0, 0, 0, 0))
                     + chunk(b'IDAT', zlib.compress(b'')) + chunk(b'IEND', b''))


@pytest.mark.parametrize('kind, words', [
    ('corrupt', ['bad.png', 'cannot read']), ('empty', ['bad.png', 'cannot read']), ('truncated', ['bad.png', 'cannot read']),
    ('symlink', ['bad.png', 'No such file']), ('bomb', ['bad.png', 'decompression bomb']),
    ('folder-named-png', ['needs at least 100 images', 'has 8']), ('single', ['--batch-size 4', 'has 1'])])
def test_09_bad_dataset_files(tmp_path, capsys, kind, words):
    imgs = tmp_path / 'imgs'
    if kind == 'single': write_images(imgs, 1)
    else: write_images(imgs / 'a', 8)
    bad = imgs / 'a' / 'bad.png'
    if kind == 'corrupt': bad.write_bytes(b'not an image at all' * 10)
    if kind == 'empty': bad.write_bytes(b'')
    if kind == 'truncated': data = (imgs / 'a' / '000.png').read_bytes(); bad.write_bytes(data[:len(data) // 2])
    if kind == 'symlink': bad.symlink_to(tmp_path / 'nowhere.png')
    if kind == 'bomb': _bomb_png(bad)
    if kind == 'folder-named-png': bad.mkdir()
    extra = ['--batch-size', '100'] if kind == 'folder-named-png' else []
    fails(capsys, 'dc-train', ['--dataset', imgs, '--out', tmp_path / 'o', *FAST, *extra], *words)
    assert not (tmp_path / 'o').exists()


def test_09_hidden_files_and_folders_are_skipped(tmp_path):
    write_images(tmp_path / 'a', 2); write_images(tmp_path / 'b', 2)
    write_images(tmp_path / '.ipynb_checkpoints', 2); (tmp_path / 'a' / '.DS_Store.png').write_bytes(b'junk')
    d = load_dataset(str(tmp_path), size=16)
    assert d.classes == ['a', 'b'] and len(d) == 4


# 10. --out checked before any work: a file, under a file, not writable, ''; dc-sample's --out and --gif before sampling.
def test_10_train_out_checked_first(tmp_path, capsys, data, monkeypatch):
    f = tmp_path / 'f'; f.write_text('precious')
    fails(capsys, 'dc-train', ['--dataset', data, '--out', f, *FAST], 'is a file', str(f))
    fails(capsys, 'dc-train', ['--dataset', data, '--out', f / 'run', *FAST], 'which is a file')
    fails(capsys, 'dc-train', ['--dataset', data, '--out', '', *FAST], 'must name a folder')
    ro = tmp_path / 'ro'; ro.mkdir()
    real = os.access
    monkeypatch.setattr(os, 'access', lambda p, mode, **k: False if Path(p) == ro else real(p, mode, **k))  # root ignores chmod
    fails(capsys, 'dc-train', ['--dataset', data, '--out', ro / 'run', *FAST], 'not writable', str(ro))
    fails(capsys, 'dc-train', ['--dataset', data, '--out', ro, *FAST], 'not writable')
    assert f.read_text() == 'precious' and list(ro.iterdir()) == []


def test_10_sample_outputs_checked_before_loading(trained, tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(cli, 'load_trained', lambda *a, **k: pytest.fail('loaded the checkpoint before checking --out'))
    f = tmp_path / 'f'; f.write_text('precious')
    fails(capsys, 'dc-sample', ['--ckpt', trained, '--out', f / 'g.png'], 'which is a file')
    fails(capsys, 'dc-sample', ['--ckpt', trained, '--gif', f / 'd.gif', '--out', tmp_path / 'g.png'], '--gif', 'which is a file')
    fails(capsys, 'dc-sample', ['--ckpt', trained, '--out', tmp_path], 'is a folder')
    fails(capsys, 'dc-sample', ['--ckpt', trained, '--gif', tmp_path / 'd.jpg'], '--gif', "'.jpg'")
    assert f.read_text() == 'precious'


# 11. --device: unknown, or a kind this machine does not have, in both commands.
@pytest.mark.parametrize('device, words', [('foo', ["unknown --device 'foo'"]), ('cuda', ['CUDA']), ('cuda:7', ['cuda:7']), ('mps', ['MPS']),
                                           ('meta', ["'meta'"])])
def test_11_device(trained, data, tmp_path, capsys, device, words):
    if device.startswith('cuda') and torch.cuda.device_count() > 7: pytest.skip('this machine has the devices')
    if device == 'cuda' and torch.cuda.is_available(): pytest.skip('CUDA is present')
    if device == 'mps' and getattr(torch.backends, 'mps', None) and torch.backends.mps.is_available(): pytest.skip('MPS is present')
    fails(capsys, 'dc-train', ['--dataset', data, '--out', tmp_path / 'o', '--device', device, *FAST], *words)
    fails(capsys, 'dc-sample', ['--ckpt', trained, '--out', tmp_path / 'g.png', '--device', device], *words)
    assert not list(tmp_path.iterdir())


# 12. A full disk during a save: one clear line, no .tmp-step-* left, the earlier checkpoint intact.
def test_12_disk_full_during_save(tmp_path, capsys, data, monkeypatch):
    import safetensors.torch
    real, calls = safetensors.torch.save_file, {'n': 0}
    def full(*a, **k):
        calls['n'] += 1
        if calls['n'] > 2: raise OSError(errno.ENOSPC, 'No space left on device')  # the second checkpoint's first file
        return real(*a, **k)
    monkeypatch.setattr(safetensors.torch, 'save_file', full)
    out = tmp_path / 'run'
    fails(capsys, 'dc-train', ['--dataset', data, '--out', out, *FAST], 'step-0000004', 'disk is full')
    assert [p.name for p in list_checkpoints(out)] == ['step-0000002'] and load_checkpoint(out)['state']['step'] == 2
    assert not [p.name for p in out.iterdir() if p.name.startswith('.')]


# 13. --resume on a checkpoint that does not fit: state.pt without its keys, a class added to the data, an edited model.
def test_13_state_without_keys(run_copy, capsys):
    torch.save({'step': 4}, run_copy / 'step-0000004' / 'state.pt')
    before = digest(run_copy)
    fails(capsys, 'dc-train', ['--out', run_copy, '--resume', '--steps', '6'], 'step-0000004', 'lacks', "'opt'")
    assert digest(run_copy) == before


def test_13_class_added_to_dataset(tmp_path, capsys, data):
    imgs = tmp_path / 'imgs'; shutil.copytree(data, imgs)
    out = tmp_path / 'run'
    assert train_main(['--dataset', str(imgs), '--out', str(out), *FAST]) == 0
    write_images(imgs / 'c', 4)
    before = digest(out)
    fails(capsys, 'dc-train', ['--out', out, '--resume', '--steps', '6'], 'dataset changed', "['a', 'b', 'c']", "['a', 'b']")
    assert digest(out) == before


@pytest.mark.parametrize('where, words', [('args', ["'base' is 32 here, 8 there"]), ('spec', ["'base' is 8 here, 16 there"])])
def test_13_edited_model(run_copy, capsys, where, words):
    for f in (run_copy / 'config.json', run_copy / 'step-0000004' / 'config.json'):
        cfg = json.loads(f.read_text())
        if where == 'args': cfg['args']['model'] = 'UNet-S'
        else: cfg['model']['config']['base'] = 16
        f.write_text(json.dumps(cfg))
    before = digest(run_copy)
    fails(capsys, 'dc-train', ['--out', run_copy, '--resume', '--steps', '6'], *words)
    assert digest(run_copy) == before


# 14. A checkpoint config naming an unknown family, a callable that is not a config dataclass, or a huge model.
@pytest.mark.parametrize('edit, words', [
    (lambda m: m.update(family='nope'), ['unknown backbone family', "'nope'"]),
    (lambda m: m.update(config_type='UNet'), ["config_type 'UNet'", 'UNetConfig']),
    (lambda m: m['config'].update(base=10**9), ["'base'", '1000000000', 'at most']),
    (lambda m: m['config'].update(base=4096), ['parameters', 'at most']),
    (lambda m: m['config'].update(foo=1), ["no field(s) ['foo']"])])
def test_14_model_spec_checked(run_copy, tmp_path, capsys, edit, words):
    f = run_copy / 'step-0000004' / 'config.json'
    cfg = json.loads(f.read_text()); edit(cfg['model']); f.write_text(json.dumps(cfg))
    t0 = time.time()
    fails(capsys, 'dc-sample', ['--ckpt', run_copy, '--out', tmp_path / 'g.png'], *words)
    assert time.time() - t0 < 10 and not (tmp_path / 'g.png').exists()


# 15. Upper bounds, checked before any allocation.
@pytest.mark.parametrize('args, words', [(['--T', 10**12], ['--T 1000000000000', 'at most 100,000']),
                                         (['--n-samples', 10**9], ['--n-samples', 'at most 1,000']),
                                         (['--size', 10**6], ['--size 1000000', 'at most 2,048'])])
def test_15_bounds(tmp_path, capsys, data, args, words):
    fails(capsys, 'dc-train', ['--dataset', data, '--out', tmp_path / 'o', *FAST, *args], 'too large', *words)
    assert not (tmp_path / 'o').exists()


# Smaller items.
@pytest.mark.parametrize('prog, args, flag', [('dc-train', ['--cfg-scale', 'nan'], '--cfg-scale'), ('dc-train', ['--grad-clip', 'inf'], '--grad-clip'),
                                              ('dc-train', ['--lr', 'nan'], '--lr'), ('dc-train', ['--lr', 'inf'], '--lr'),
                                              ('dc-sample', ['--eta', 'nan'], '--eta'), ('dc-sample', ['--cfg-scale', 'inf'], '--cfg-scale')])
def test_nonfinite_numbers(trained, tmp_path, capsys, data, prog, args, flag):
    argv = ['--dataset', data, '--out', tmp_path / 'o', *FAST] if prog == 'dc-train' else ['--ckpt', trained, '--out', tmp_path / 'g.png']
    fails(capsys, prog, [*argv, *args], flag, 'finite')
    assert not list(tmp_path.iterdir())


def test_finished_run_and_fewer_steps(run_copy, capsys):
    before = digest(run_copy)
    fails(capsys, 'dc-train', ['--out', run_copy, '--resume'], 'finished', 'step 4 of 4')
    fails(capsys, 'dc-train', ['--out', run_copy, '--resume', '--steps', '2'], '--steps 2', '4 steps')
    assert digest(run_copy) == before


def test_resume_without_config_json(run_copy):
    (run_copy / 'config.json').unlink()
    assert train_main(['--out', str(run_copy), '--resume', '--steps', '5', '--quiet']) == 0
    assert list_checkpoints(run_copy)[-1].name == 'step-0000005' and (run_copy / 'config.json').exists()


def test_tampered_state_never_shows_weights_only_advice(run_copy, tmp_path, capsys):
    torch.save({'step': 4, 'x': os.system}, run_copy / 'step-0000004' / 'state.pt')  # a pickled callable: refused, never run
    line = fails(capsys, 'dc-sample', ['--ckpt', run_copy, '--out', tmp_path / 'g.png'], 'not safe to load', 'system')
    assert 'weights_only' not in line
    line = fails(capsys, 'dc-train', ['--out', run_copy, '--resume', '--steps', '6'], 'not safe to load')
    assert 'weights_only' not in line


def test_out_with_other_files_and_empty_out(tmp_path, capsys, data):
    out = tmp_path / 'mine'; out.mkdir()
    (out / 'samples.png').write_bytes(b'my own picture'); (out / 'notes.txt').write_text('mine')
    fails(capsys, 'dc-train', ['--dataset', data, '--out', out, *FAST], 'samples.png', 'would overwrite')
    assert (out / 'samples.png').read_bytes() == b'my own picture' and sorted(p.name for p in out.iterdir()) == ['notes.txt', 'samples.png']
    fails(capsys, 'dc-train', ['--dataset', data, '--out', '', *FAST], "got ''")
    fails(capsys, 'dc-train', ['--dataset', '', '--out', tmp_path / 'o', *FAST], "--dataset", "got ''")  # not the working folder


def test_out_is_a_checkpoint(run_copy, capsys, data):
    before = digest(run_copy)
    fails(capsys, 'dc-train', ['--dataset', data, '--out', run_copy / 'step-0000004', *FAST], 'is a checkpoint', str(run_copy))
    fails(capsys, 'dc-train', ['--out', run_copy / 'step-0000004', '--resume', '--steps', '6'], 'is a checkpoint')
    assert digest(run_copy) == before


def test_corrupt_newest_checkpoint_names_the_previous(run_copy, tmp_path, capsys):
    (run_copy / 'step-0000004' / 'state.pt').write_bytes(b'garbage')
    before = digest(run_copy)
    prev = str(run_copy / 'step-0000002')
    fails(capsys, 'dc-sample', ['--ckpt', run_copy, '--out', tmp_path / 'g.png'], 'corrupt', f'--ckpt {prev}')
    fails(capsys, 'dc-train', ['--out', run_copy, '--resume', '--steps', '6'], 'corrupt', prev, 'mv ', '--resume again')
    assert digest(run_copy) == before
    assert sample_main(['--ckpt', prev, '--n', '2', '--steps', '2', '--out', str(tmp_path / 'g.png')]) == 0  # the advice works
    os.rename(run_copy / 'step-0000004', run_copy / 'step-0000004.broken')  # as the message says
    assert train_main(['--out', str(run_copy), '--resume', '--steps', '6', '--quiet']) == 0
    assert (run_copy / 'step-0000004.broken' / 'state.pt').read_bytes() == b'garbage'  # kept for the user to inspect


def test_nrow_and_every(trained, tmp_path, capsys, data):
    fails(capsys, 'dc-sample', ['--ckpt', trained, '--nrow', '-2', '--out', tmp_path / 'g.png'], '--nrow', '-2')
    fails(capsys, 'dc-train', ['--dataset', data, '--out', tmp_path / 'o', *FAST, '--steps', '1500', '--every', '1'], '1501 GIF frames', 'at most 100')
    assert not list(tmp_path.iterdir())


def test_relative_dataset_resumes_from_elsewhere(tmp_path, data, monkeypatch):
    shutil.copytree(data, tmp_path / 'imgs')
    monkeypatch.chdir(tmp_path)
    assert train_main(['--dataset', 'imgs', '--out', 'run', *FAST]) == 0
    assert json.loads(Path('run/config.json').read_text())['args']['dataset'] == str(tmp_path / 'imgs')
    (tmp_path / 'elsewhere').mkdir(); monkeypatch.chdir(tmp_path / 'elsewhere')
    assert train_main(['--out', '../run', '--resume', '--steps', '5', '--quiet']) == 0


# Untested path: the multi-hot (CelebA) route end to end, on a stand-in in CelebA's own file layout.
def celeba_standin(root, n=24, seed=0):
    "n images of 20x24 (CelebA's aspect) in img_align_celeba/, their 40 flags in list_attr_celeba.txt, a train/valid split."
    rng = np.random.default_rng(seed)
    (root / 'img_align_celeba').mkdir(parents=True)
    rows = []
    for i in range(n):
        name = f'{i + 1:06d}.jpg'
        Image.fromarray(rng.integers(0, 256, (24, 20, 3), dtype=np.uint8)).save(root / 'img_align_celeba' / name)
        rows.append(name + ' ' + ' '.join(f'{v:2d}' for v in rng.choice([-1, 1], 40)))
    (root / 'list_attr_celeba.txt').write_text('\n'.join([str(n), ' '.join(CELEBA_ATTRS) + ' ', *rows]) + '\n')
    (root / 'list_eval_partition.txt').write_text(''.join(f'{i + 1:06d}.jpg {int(i >= n - 4)}\n' for i in range(n)))
    return root


def test_multi_hot_end_to_end(tmp_path, capsys):
    root = celeba_standin(tmp_path / 'celeba')
    d = load_dataset(str(root), size=16, attrs=['Smiling', 'Male'])
    assert len(d) == 20 and d.multi_hot and d.classes == ['Smiling', 'Male'] and d.y.shape == (20, 2)
    out = tmp_path / 'run'
    assert train_main(['--dataset', str(root), '--attrs', 'Smiling,Male,Young', '--out', str(out), *FAST]) == 0, capsys.readouterr().err
    cfg = json.loads((out / 'config.json').read_text())
    assert cfg['multi_hot'] and cfg['num_classes'] == 3 and cfg['classes'] == ['Smiling', 'Male', 'Young'] and cfg['model']['config']['multi_hot']
    assert sample_main(['--ckpt', str(out), '--labels', 'Smiling,Young', '--cfg-scale', '2', '--n', '4', '--steps', '2',
                        '--out', str(tmp_path / 'g.png'), '--gif', str(tmp_path / 'd.gif')]) == 0
    assert Image.open(tmp_path / 'g.png').size == (4 * 18 + 2, 18 + 2) and Image.open(tmp_path / 'd.gif').size == (4 * 18 + 2, 18 + 2)
    capsys.readouterr()
    fails(capsys, 'dc-sample', ['--ckpt', out, '--labels', 'Bald', '--out', tmp_path / 'h.png'], "unknown label 'Bald'", 'Smiling')
    fails(capsys, 'dc-train', ['--dataset', root, '--attrs', 'Smiling,Nope', '--out', tmp_path / 'o', *FAST], "['Nope']")
    fails(capsys, 'dc-train', ['--dataset', tmp_path / 'celeba' / 'img_align_celeba', '--attrs', 'Smiling', '--out', tmp_path / 'o', *FAST], '--attrs')
