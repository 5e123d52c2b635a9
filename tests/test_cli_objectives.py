"dc-train --objective and --loss, recorded in the checkpoint; dc-sample and dc-eval follow them with every sampler; combinations that do not fit are refused."
import functools, json

import pytest
import torch

from diffusion_course import cli
from diffusion_course.cli import (SAMPLER_CHOICES, TRAIN_DEFAULTS, build_run, eval_main, load_trained, make_sample_fn, sample_fn_for,
                                  sample_main, train_main)
from diffusion_course.diffusion import ddpm
from diffusion_course.diffusion.continuous import Flow, diffusion_loss
from diffusion_course.diffusion.ddim import DDIMSampler
from diffusion_course.diffusion.iddpm import l_hybrid
from diffusion_course.diffusion.samplers import SAMPLERS, EulerSampler

TINY = ['--steps', '6', '--batch-size', '8', '--every', '3', '--sample-steps', '3', '--n-samples', '10', '--warmup', '2', '--eval-n', '0', '--quiet']


def _train(out, *extra):
    assert train_main(['--out', str(out), *TINY, *extra]) == 0
    return json.loads((out / 'config.json').read_text())


@pytest.fixture(scope='module')
def flow_run(tmp_path_factory):
    out = tmp_path_factory.mktemp('obj') / 'flow'
    return out, _train(out, '--objective', 'flow')


@pytest.fixture(scope='module')
def hybrid_run(tmp_path_factory):
    out = tmp_path_factory.mktemp('obj') / 'hybrid'
    return out, _train(out, '--objective', 'eps', '--loss', 'hybrid')


def test_flow_run_is_recorded_and_samples_with_every_sampler(flow_run, tmp_path, capsys):
    out, cfg = flow_run
    assert (cfg['objective'], cfg['loss'], cfg['prediction'], cfg['learned_variance']) == ('flow', 'simple', 'velocity', False)
    assert cfg['args']['objective'] == 'flow' and json.loads((out / 'step-0000006' / 'config.json').read_text())['objective'] == 'flow'
    model, ck = load_trained(out)
    assert ck['objective'] == 'flow' and model.config.learn_sigma is False
    for name in SAMPLERS:
        grid = tmp_path / f'{name}.png'
        assert sample_main(['--ckpt', str(out), '--sampler', name, '--steps', '3', '--n', '4', '--out', str(grid)]) == 0, name
        assert grid.exists()
    assert 'heun, 3 steps = 4 model evaluations' in capsys.readouterr().err  # Flow starts at sigma = inf: Euler first, then one Heun step and the last Euler
    # the sampler dc-sample builds is the flow model's: Euler on Flow with velocity, not DDIM on the chain
    s = sample_fn_for(ck, 'euler', 5).sampler
    assert isinstance(s, EulerSampler) and isinstance(s.process, Flow) and s.prediction == 'velocity' and s.clip_x0
    assert isinstance(sample_fn_for(ck, 'ddim', 5).sampler, EulerSampler)  # 'ddim' on a flow model: its deterministic first-order sampler


def test_flow_run_samples_what_the_flow_sampler_gives(flow_run):
    "dc-sample's function on a flow checkpoint equals lesson 16's Euler on Flow with the model's velocity, and differs from reading it as eps."
    out, _ = flow_run
    model, ck = load_trained(out)
    x_T, y = torch.randn(3, 1, 32, 32, generator=torch.Generator().manual_seed(0)), torch.arange(3)
    from diffusion_course.diffusion.samplers import sample
    a = sample_fn_for(ck, 'euler', 4, cfg_scale=1.0)(model, x_T, y)
    b = sample(model, EulerSampler(Flow(), 4, 'velocity', clip_x0=True), x_T=x_T, y=y)
    as_eps = make_sample_fn(ddpm.Schedule.linear(1000), 'ddim', 4)(model, x_T, y)
    assert torch.equal(a, b) and (a - as_eps).abs().max() > 1e-3


def test_flow_run_refuses_ddpm_and_evaluates(flow_run, tmp_path, capsys):
    out, _ = flow_run
    assert sample_main(['--ckpt', str(out), '--sampler', 'ddpm', '--steps', '3', '--n', '2', '--out', str(tmp_path / 'g.png')]) == 1
    err = capsys.readouterr().err
    assert "sampler 'ddpm'" in err and "objective is 'flow'" in err and 'dpmpp_2m' in err and not (tmp_path / 'g.png').exists()
    assert eval_main([str(out), '--n', '20', '--sampler', 'dpmpp_2m', '--steps', '3', '--batch-size', '20', '--out', str(tmp_path / 'm.json')]) == 0
    m = json.loads((tmp_path / 'm.json').read_text())
    assert m['protocol']['sampler'] == 'dpmpp_2m' and m['protocol']['steps'] == 3 and m['metrics']['fd'] > 0
    assert eval_main([str(out), '--n', '20', '--sampler', 'ddpm', '--out', str(tmp_path / 'm2.json')]) == 1
    assert "objective is 'flow'" in capsys.readouterr().err


def test_hybrid_run_learns_a_variance_and_ddpm_uses_it(hybrid_run, tmp_path):
    out, cfg = hybrid_run
    assert (cfg['objective'], cfg['loss'], cfg['learned_variance']) == ('eps', 'hybrid', True) and cfg['model']['config']['learn_sigma'] is True
    model, ck = load_trained(out)
    assert model(torch.zeros(2, 1, 32, 32), torch.tensor([5, 9]), torch.tensor([1, 2])).shape == (2, 2, 32, 32)  # mean and variance channels
    s = sample_fn_for(ck, 'ddpm', 4).sampler
    assert isinstance(s, ddpm.DDPMSampler) and s.variance == 'learned_range'
    for name in SAMPLER_CHOICES:  # every sampler takes the mean channels and ignores (or, DDPM, uses) the variance
        assert sample_main(['--ckpt', str(out), '--sampler', name, '--steps', '3', '--n', '4', '--out', str(tmp_path / f'{name}.png')]) == 0, name
    assert eval_main([str(out), '--n', '20', '--sampler', 'ddpm', '--steps', '5', '--batch-size', '20', '--out', str(tmp_path / 'm.json')]) == 0
    assert json.loads((tmp_path / 'm.json').read_text())['protocol']['steps'] == 5


def test_losses_are_the_lessons_losses():
    "The loss dc-train builds for each objective is the lesson's: L_simple on x0 or v, flow matching's velocity, L_hybrid."
    sched = ddpm.Schedule.linear(1000)
    x0, y = torch.rand(4, 1, 8, 8) * 2 - 1, torch.arange(4)
    net = lambda x, t, y=None: torch.cat([0.3 * x, torch.tanh(x)], 1)  # a fake model with variance channels
    def same(opts, want):
        torch.manual_seed(0); a = cli.make_loss({**TRAIN_DEFAULTS, **opts}, sched)(net, x0, y)
        torch.manual_seed(0); b = want(net, x0, y)
        assert torch.equal(a, b), opts
    same({'objective': 'v'}, functools.partial(ddpm.l_simple, sched=sched, prediction='v'))
    same({'objective': 'x0'}, functools.partial(ddpm.l_simple, sched=sched, prediction='x0'))
    same({'objective': 'flow'}, functools.partial(diffusion_loss, process=Flow(), prediction='velocity'))
    same({'objective': 'v', 'loss': 'hybrid'}, functools.partial(l_hybrid, sched=sched, prediction='v'))
    r = build_run({**TRAIN_DEFAULTS, 'objective': 'x0', 'steps': 2})
    assert r['config']['prediction'] == 'x0' and isinstance(sample_fn_for(r['config'], 'ddim', 4).sampler, DDIMSampler)
    assert sample_fn_for(r['config'], 'ddim', 4).sampler.prediction == 'x0'


def test_default_run_samples_as_before():
    "An eps run (and a config from before --objective existed) samples with trailing DDIM exactly as make_sample_fn always did."
    sched = ddpm.Schedule.linear(1000)
    model = lambda x, t, y=None: 0.1 * x + 0.01 * t.float().view(-1, 1, 1, 1) / 1000
    x_T = torch.randn(2, 1, 4, 4, generator=torch.Generator().manual_seed(0))
    old = ddpm.sample_loop(model, DDIMSampler(sched, 5, spacing='trailing', clip_x0=True), x_T=x_T, y=None)
    legacy = {'schedule': 'linear', 'T': 1000, 'num_classes': 0}  # no 'objective' key
    assert torch.equal(sample_fn_for(legacy, 'ddim', 5)(model, x_T, None), old)
    assert torch.equal(make_sample_fn(sched, 'ddim', 5)(model, x_T, None), old)


def test_combinations_that_do_not_fit(tmp_path, capsys, flow_run):
    bad = tmp_path / 'bad'
    assert train_main(['--out', str(bad), *TINY, '--objective', 'flow', '--loss', 'hybrid']) == 1
    err = capsys.readouterr().err
    assert '--loss hybrid' in err and 'eps, x0 or v' in err and 'got --objective flow' in err and not bad.exists()
    with pytest.raises(SystemExit): cli.train_parser().parse_args(['--objective', 'score'])  # argparse names the choices
    assert 'eps' in capsys.readouterr().err
    out, _ = flow_run
    assert train_main(['--out', str(out), '--resume', '--steps', '8', '--objective', 'eps', '--quiet']) == 1
    assert '--objective eps (the run has flow)' in capsys.readouterr().err
    assert sample_main(['--ckpt', str(out), '--sampler', 'heun', '--eta', '0.5', '--n', '2', '--out', str(tmp_path / 'g.png')]) == 1
    assert 'got --eta 0.5 with --sampler heun' in capsys.readouterr().err
    with pytest.raises(ValueError, match="unknown sampler 'plms'"): make_sample_fn(ddpm.Schedule.linear(100), 'plms', 2)
    with pytest.raises(ValueError, match="unknown objective 'score'"): make_sample_fn(ddpm.Schedule.linear(100), 'ddim', 2, objective='score')
