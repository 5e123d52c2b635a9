"dc-train and dc-sample end to end, and every way a user can get them wrong: one line, non-zero exit, nothing overwritten."
import importlib.util, json, shutil

import pytest
from PIL import Image

from diffusion_course.cli import sample_main, train_main

from cli_helpers import console, digest, one_error_line

TINY = ['--model', 'UNet-T', '--steps', '6', '--batch-size', '8', '--every', '3', '--sample-steps', '2', '--n-samples', '10', '--eval-n', '0', '--quiet']


@pytest.fixture(scope='module')
def run(tmp_path_factory):
    out = tmp_path_factory.mktemp('cli') / 'run'
    r = console('dc-train', '--out', out, *TINY)
    assert r.returncode == 0, r.stderr[-3000:]
    assert 'dc-train: 6 steps in' in r.stderr
    return out


def test_train_writes_everything(run):
    names = {p.name for p in run.iterdir()}
    assert {'config.json', 'loss.png', 'samples.png', 'progress.gif', 'progress.png', 'summary.json', 'step-0000006'} <= names
    cfg = json.loads((run / 'config.json').read_text())
    assert cfg['model']['preset'] == 'UNet-T' and cfg['num_classes'] == 10 and cfg['args']['cfg_dropout'] == 0.1
    assert Image.open(run / 'progress.gif').n_frames == 3  # steps 0, 3, 6
    assert json.loads((run / 'summary.json').read_text())['steps'] == 6


def test_sample_grid_and_gif(run, tmp_path):
    grid, gif = tmp_path / 'grid.png', tmp_path / 'denoise.gif'
    r = console('dc-sample', '--ckpt', run, '--sampler', 'ddim', '--steps', '4', '--eta', '0.5', '--cfg-scale', '3',
                '--labels', '3,7', '--n', '4', '--seed', '1', '--out', grid, '--gif', gif)
    assert r.returncode == 0, r.stderr[-3000:]
    assert Image.open(grid).size[0] > 4 * 32 and Image.open(gif).n_frames == 4
    assert sample_main(['--ckpt', str(run / 'step-0000006'), '--sampler', 'euler', '--steps', '3', '--n', '10', '--out', str(tmp_path / 'g2.png')]) == 0


def test_existing_run_is_not_overwritten(run, capsys):
    before = digest(run)
    assert train_main(['--out', str(run), *TINY]) == 1
    assert 'already holds a run' in one_error_line(capsys.readouterr().err, 'dc-train')
    assert train_main(['--out', str(run), '--resume', '--model', 'UNet-S', '--quiet']) == 1
    assert 'differ' in one_error_line(capsys.readouterr().err, 'dc-train')
    assert digest(run) == before


@pytest.mark.parametrize('args, words', [
    (['--steps', '0'], 'must be >= 1'),
    (['--model', 'UNet-Nope'], 'unknown --model'),
    (['--cfg-dropout', '1.5'], '--cfg-dropout'),
    (['--lr', '-1'], '--lr'),
    (['--dataset', 'no/such/folder'], 'unknown dataset'),
    (['--resume'], 'no run'),
])
def test_bad_train_arguments(tmp_path, capsys, args, words):
    out = tmp_path / 'out'
    assert train_main(['--out', str(out), *args]) == 1
    assert words in one_error_line(capsys.readouterr().err, 'dc-train')
    assert not out.exists()  # nothing written


def test_argparse_errors_exit_nonzero(tmp_path, capsys):
    with pytest.raises(SystemExit) as e: train_main(['--steps', 'many', '--out', str(tmp_path / 'o')])
    assert e.value.code == 2 and 'invalid int value' in capsys.readouterr().err
    with pytest.raises(SystemExit) as e: sample_main([])  # --ckpt is required
    assert e.value.code == 2 and '--ckpt' in capsys.readouterr().err
    assert not list(tmp_path.iterdir())


@pytest.mark.skipif(importlib.util.find_spec('torchvision') is not None, reason='torchvision is installed here: cifar10 would download')
def test_dataset_needing_torchvision(tmp_path, capsys):
    assert train_main(['--dataset', 'cifar10', '--out', str(tmp_path / 'o')]) == 1
    assert 'torchvision' in one_error_line(capsys.readouterr().err, 'dc-train') and not (tmp_path / 'o').exists()


def test_missing_and_corrupt_checkpoint(run, tmp_path, capsys):
    grid = tmp_path / 'grid.png'; grid.write_bytes(b'precious')
    assert sample_main(['--ckpt', str(tmp_path / 'nowhere'), '--out', str(grid)]) == 1
    assert 'does not exist' in one_error_line(capsys.readouterr().err, 'dc-sample')
    bad = tmp_path / 'bad'; shutil.copytree(run, bad)
    ck = sorted(bad.glob('step-*'))[-1]
    data = (ck / 'ema.safetensors').read_bytes(); (ck / 'ema.safetensors').write_bytes(data[:len(data) // 2])  # truncated
    assert sample_main(['--ckpt', str(bad), '--out', str(grid)]) == 1
    assert 'corrupt' in one_error_line(capsys.readouterr().err, 'dc-sample')
    (ck / 'state.pt').write_bytes(b'garbage')
    before = digest(bad)
    assert train_main(['--out', str(bad), '--resume', '--quiet']) == 1  # resuming from it fails the same way
    assert 'corrupt' in one_error_line(capsys.readouterr().err, 'dc-train')
    assert grid.read_bytes() == b'precious' and digest(bad) == before  # nothing overwritten


@pytest.mark.parametrize('args, words', [
    (['--labels', '12'], 'unknown label'),
    (['--steps', '5000'], 'at most'),
    (['--n', '0'], '>= 1'),
    (['--sampler', 'ddpm', '--eta', '1'], 'ddim only'),
    (['--out', 'grid.xyz'], 'suffix'),
])
def test_bad_sample_arguments(run, tmp_path, capsys, args, words):
    args = [a if a != 'grid.xyz' else str(tmp_path / a) for a in args]
    assert sample_main(['--ckpt', str(run), *args] + ([] if '--out' in args else ['--out', str(tmp_path / 'g.png')])) == 1
    assert words in one_error_line(capsys.readouterr().err, 'dc-sample')
    assert not list(tmp_path.iterdir())
