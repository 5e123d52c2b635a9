"Latent runs from the command line: dc-train-ae, dc-train --autoencoder (from-scratch and diffusers AutoencoderKL, offline), dc-sample and dc-eval decoding, and the errors."
import json, shutil

import pytest
import torch
from PIL import Image

from diffusion_course.cli import UsageError, eval_main, evaluate, load_trained, sample, sample_main, train, train_main
from diffusion_course.latent import load_autoencoder, load_run_autoencoder, train_ae, train_ae_main
from diffusion_course.training import CheckpointError

TINY = ['--steps', '4', '--batch-size', '8', '--every', '2', '--sample-steps', '2', '--n-samples', '10', '--quiet']


@pytest.fixture(scope='module')
def cache(tmp_path_factory):
    mp = pytest.MonkeyPatch()
    d = tmp_path_factory.mktemp('cache')
    mp.setenv('DC_CACHE', str(d))  # the latent cache of dc-train
    yield d
    mp.undo()


@pytest.fixture(scope='module')
def vae(tmp_path_factory, cache):
    out = tmp_path_factory.mktemp('ae') / 'vae'
    summary = train_ae(['--out', str(out), '--steps', '8', '--batch-size', '16', '--quiet'])
    return out, summary


@pytest.fixture(scope='module')
def run(tmp_path_factory, vae):
    out = tmp_path_factory.mktemp('latent') / 'run'
    summary = train(['--model', 'DiT-T/2', '--autoencoder', str(vae[0]), '--out', str(out), *TINY, '--objective', 'eps'])  # eps: the DDPM chain is sampled below too
    assert summary['steps'] == 4
    return out


def test_train_ae_writes_a_run(vae):
    out, s = vae
    assert {p.name for p in out.iterdir()} >= {'config.json', 'loss.png', 'reconstructions.png', 'summary.json', 'step-0000008'}
    assert s['latent_shape'] == [4, 8, 8] and s['scale_factor'] > 0 and s['heldout_n'] == 500 and 0 < s['psnr_heldout'] < 60
    ae = load_autoencoder(out)  # the run folder loads: its newest checkpoint
    assert ae.scale_factor == s['scale_factor'] and ae.info['steps'] == 8
    assert Image.open(out / 'reconstructions.png').size[0] > 10 * 32


def test_train_ae_errors(vae, tmp_path, capsys):
    assert train_ae_main(['--out', str(vae[0]), '--steps', '1']) == 1
    assert 'already holds a run' in capsys.readouterr().err
    assert train_ae_main(['--out', str(tmp_path / 'w'), '--widths', '8,x']) == 1
    assert 'comma-separated integers' in capsys.readouterr().err
    assert train_ae_main(['--out', str(tmp_path / 'w'), '--widths', '8,8,8,8,8,8,8', '--steps', '1']) == 1  # 32 px cannot halve 6 times
    assert 'divisible' in capsys.readouterr().err
    assert not (tmp_path / 'w').exists()


def test_checkpoint_records_the_autoencoder(run, vae):
    cfg = json.loads((run / 'config.json').read_text())
    rec = cfg['autoencoder']
    assert cfg['image_shape'] == rec['latent_shape'] == [4, 8, 8] and rec['image_shape'] == [1, 32, 32]  # the denoiser sees latents
    assert rec['source'] == str(vae[0].resolve()) and rec['fingerprint'] == load_autoencoder(vae[0]).fingerprint()
    assert cfg['model']['config']['in_channels'] == 4 and cfg['model']['config']['input_size'] == 8
    assert Image.open(run / 'samples.png').size == Image.open(run / 'progress.png').size  # decoded digits in the run's grids
    model, config = load_trained(run)
    ae, shape = load_run_autoencoder(config)
    assert shape == (1, 32, 32) and ae.fingerprint() == rec['fingerprint']
    with torch.no_grad(): assert model(torch.zeros(2, 4, 8, 8), torch.zeros(2, dtype=torch.long), torch.zeros(2, dtype=torch.long)).shape == (2, 4, 8, 8)


def test_sample_and_eval_decode(run, tmp_path):
    grid, gif = tmp_path / 'grid.png', tmp_path / 'denoise.gif'
    sample(['--ckpt', str(run), '--n', '10', '--steps', '3', '--cfg-scale', '3', '--out', str(grid), '--gif', str(gif)])
    assert Image.open(grid).size == (10 * 34 + 2, 34 + 2)  # ten 32 x 32 digits in a row (2-pixel padding), not 8 x 8 latents
    assert Image.open(gif).n_frames >= 2  # decoded x0_hat frames (identical consecutive frames merge in a GIF)
    sample(['--ckpt', str(run), '--n', '4', '--sampler', 'ddpm', '--steps', '3', '--out', str(tmp_path / 'ddpm.png')])
    res = evaluate([str(run), '--n', '20', '--steps', '3', '--out', str(tmp_path / 'metrics.json')])
    assert res['samples'].shape == (20, 1, 32, 32) and res['samples'].abs().max() <= 1
    assert res['metrics']['n'] == 20 and res['metrics']['fd'] > res['ruler']['real']['fd'] and 'accuracy' in res['metrics']
    assert json.loads((tmp_path / 'metrics.json').read_text())['protocol']['n'] == 20


def test_resume_keeps_the_autoencoder(run, vae, tmp_path):
    copy = tmp_path / 'run'
    shutil.copytree(run, copy)
    with pytest.raises(UsageError, match='--autoencoder'):  # another autoencoder on resume: refused by name
        train(['--out', str(copy), '--resume', '--steps', '6', '--autoencoder', str(tmp_path / 'other'), '--quiet'])
    summary = train(['--out', str(copy), '--resume', '--steps', '6', '--quiet'])  # the recorded one, again from the cache
    assert summary['steps'] == 2


def test_missing_changed_and_misfit_autoencoder(run, vae, tmp_path, capsys):
    out = tmp_path / 'g.png'
    moved = vae[0].with_name('vae-moved')
    vae[0].rename(moved)
    try:
        assert sample_main(['--ckpt', str(run), '--n', '2', '--out', str(out)]) == 1
        err = capsys.readouterr().err
        assert 'was trained on the latents of the autoencoder' in err and str(vae[0].resolve()) in err and 'does not load' in err
        assert eval_main([str(run), '--n', '10']) == 1 and 'does not load' in capsys.readouterr().err
        train_ae(['--out', str(vae[0]), '--steps', '2', '--seed', '1', '--quiet'])  # another autoencoder at the recorded path
        assert sample_main(['--ckpt', str(run), '--n', '2', '--out', str(out)]) == 1
        assert 'is not the one the model trained with' in capsys.readouterr().err
        shutil.rmtree(vae[0])
        train_ae(['--out', str(vae[0]), '--steps', '2', '--widths', '8,16', '--quiet'])  # one that makes 16 x 16 latents
        assert sample_main(['--ckpt', str(run), '--n', '2', '--out', str(out)]) == 1
        err = capsys.readouterr().err
        assert 'its model takes latents [4, 8, 8]' in err and 'makes [4, 16, 16]' in err
    finally:
        shutil.rmtree(vae[0], ignore_errors=True)
        moved.rename(vae[0])
    assert not out.exists()
    # a model that cannot take the latents: 28-pixel digits make 7 x 7 latents, which patches of 2 do not tile
    assert train_main(['--model', 'DiT-T/2', '--autoencoder', str(vae[0]), '--size', '28', '--out', str(tmp_path / 'r28'), *TINY]) == 1
    err = capsys.readouterr().err
    assert 'cannot take the latents [4, 7, 7]' in err and 'patch' in err and not (tmp_path / 'r28').exists()
    assert train_main(['--autoencoder', str(tmp_path / 'nowhere'), '--out', str(tmp_path / 'r'), *TINY]) == 1
    assert 'no autoencoder at' in capsys.readouterr().err


def tiny_autoencoder_kl():
    from diffusers import AutoencoderKL
    torch.manual_seed(0)
    return AutoencoderKL(in_channels=3, out_channels=3, down_block_types=('DownEncoderBlock2D',) * 3,
                         up_block_types=('UpDecoderBlock2D',) * 3, block_out_channels=(8, 16, 16), layers_per_block=1,
                         latent_channels=4, norm_num_groups=4, sample_size=32).eval()


def test_diffusers_autoencoder_through_the_cli(tmp_path, cache):
    "A diffusers AutoencoderKL folder (a small random one: offline) behind --autoencoder; gray digits go in as gray RGB."
    tiny_autoencoder_kl().save_pretrained(tmp_path / 'kl')
    out = tmp_path / 'run'
    train(['--model', 'DiT-T/2', '--autoencoder', str(tmp_path / 'kl'), '--out', str(out), *TINY])
    rec = json.loads((out / 'config.json').read_text())['autoencoder']
    assert rec['class'] == 'DiffusersAutoencoder' and rec['gray'] and rec['scale_factor'] == 0.18215 and rec['latent_shape'] == [4, 8, 8]
    res = evaluate([str(out), '--n', '10', '--steps', '2', '--out', str(tmp_path / 'm.json')])
    assert res['samples'].shape == (10, 1, 32, 32)
