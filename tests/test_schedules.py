"diffusion.schedules as the trainer and the CLI use it: make_schedule(name, T) for every name and T, and bad input."
import math

import pytest
import torch

from diffusion_course.diffusion.ddpm import DDPMSampler, Schedule, l_simple, sample_steps
from diffusion_course.diffusion.iddpm import cosine_schedule
from diffusion_course.diffusion.schedules import (LOG_SNR, LOG_SNR_END, SCHEDULES, laplace_cdf, laplace_schedule, laplace_step_weights,
                                                  log_snr_laplace, make_schedule)

@pytest.mark.parametrize("name", SCHEDULES)
@pytest.mark.parametrize("T", [1, 2, 10, 20, 21, 100, 1000, 4000])
def test_every_schedule_is_valid(name, T):
    s = make_schedule(name, T)
    assert isinstance(s, Schedule) and s.T == T
    for k in ('beta', 'alpha_bar', 'beta_tilde', 'post_coef_x0', 'post_coef_xt', 'log_snr'):
        assert torch.isfinite(getattr(s, k)).all(), k
    assert (s.alpha_bar[1:] < s.alpha_bar[:-1]).all() and (s.beta > 0).all() and (s.beta <= 1).all()
    assert s.log_snr[-1] <= LOG_SNR_END + 1e-6 or name in ('linear', 'cosine', 'laplace')
    if T >= 10 or name not in ('cosine', 'laplace'):  # improved DDPM's cosine betas end at alpha_bar = 0.001 * alpha_bar(1 - 1/T): noisy enough from T = 10 on
        assert s.alpha_bar[-1].sqrt() < 0.01

def test_named_schedules_match_their_papers():
    assert torch.equal(make_schedule('linear', 1000).beta, Schedule.linear(1000).beta)
    assert torch.equal(make_schedule('cosine', 1000).beta, cosine_schedule(1000).beta)
    s = make_schedule(log_snr_laplace, 1000)  # lambda(t) discretised directly
    t = torch.arange(1, 1000, dtype=torch.float64) / 1000
    assert torch.allclose(s.log_snr[:-1], log_snr_laplace(t).clamp(-20, 15), atol=1e-6)
    lap = make_schedule('laplace', 1000)  # the sampler's grid is the cosine one; Laplace is where training draws its steps
    assert torch.equal(lap.beta, cosine_schedule(1000).beta) and lap.train_weights is not None

def test_laplace_log_snr_is_laplace_distributed():
    lam = log_snr_laplace(torch.rand(200_000, generator=torch.Generator().manual_seed(0), dtype=torch.float64))
    assert abs(lam.median().item()) < 0.01 and abs(lam.abs().mean().item() - 0.5) < 0.01

def test_user_schedule_and_bad_input():
    s = make_schedule(lambda t: LOG_SNR['cosine'](t) - 1.0, 500)
    assert s.T == 500
    with pytest.raises(ValueError, match="expected one of"): make_schedule('quadratic', 1000)
    with pytest.raises(ValueError): make_schedule('linear', 0)
    with pytest.raises(ValueError): make_schedule('cosine', 2.5)
    with pytest.raises(ValueError, match="strictly decrease"): make_schedule(lambda t: torch.sin(6 * t), 100)
    with pytest.raises(ValueError): make_schedule(lambda t: t[:3], 10)


def _first_step_weight(s, steps=None):
    smp = DDPMSampler(s, steps=steps)
    return smp.coefficients(*smp.timesteps()[0])['coef_x0']


@pytest.mark.parametrize("name", SCHEDULES)
@pytest.mark.parametrize("T", [1000, 4000])
def test_no_cliff_at_either_end(name, T):
    "Laplace lambda(t) on a uniform grid: first-step weight on the clipped x0_hat 0.21 (0.35 with 100 steps), alpha_bar_0 0.957."
    s = make_schedule(name, T)
    assert _first_step_weight(s) < 0.05 and _first_step_weight(s, 100) < 0.06 and s.alpha_bar[0] > 0.999


def test_direct_laplace_discretisation_has_the_cliff():
    s = make_schedule(log_snr_laplace, 1000)
    assert round(_first_step_weight(s), 2) == 0.21 and round(_first_step_weight(s, 100), 2) == 0.35 and round(s.alpha_bar[0].item(), 3) == 0.957


@pytest.mark.parametrize("mu, b", [(0.0, 0.5), (1.0, 1.0), (-2.0, 0.25)])
def test_laplace_train_weights_are_the_laplace_density(mu, b):
    s = laplace_schedule(1000, mu, b)
    w, lam = s.train_weights, s.log_snr
    assert abs(w.sum().item() - 1) < 1e-12 and (w >= 0).all()
    for q in (-3.0, -1.0, 0.0, 0.5, 2.0):  # the mass below a level matches the CDF, to within one step's share
        x = mu + q * b
        assert abs(w[lam <= x].sum().item() - laplace_cdf(torch.tensor(x), mu, b).item()) < 0.01
    t = sample_steps(s, 100_000, generator=torch.Generator().manual_seed(0))
    assert abs(lam[t].median().item() - mu) < 0.03 and abs((lam[t] - mu).abs().mean().item() - b) < 0.02


def test_l_simple_draws_steps_from_the_train_weights():
    s = laplace_schedule(1000)
    seen = []
    def model(x_t, t, y=None):
        seen.append(t.clone()); return torch.zeros_like(x_t)
    l_simple(model, torch.zeros(20_000, 1), sched=s, generator=torch.Generator().manual_seed(0))
    lam = s.log_snr[seen[0]]
    assert abs(lam.median().item()) < 0.03 and abs(lam.abs().mean().item() - 0.5) < 0.02  # uniform t would give 3.3
    with pytest.raises(ValueError, match="b must be"): laplace_step_weights(s.log_snr, b=0)
    with pytest.raises(ValueError, match="train_weights"): Schedule(s.beta, train_weights=torch.ones(1000))


def test_dc_train_laplace_follows():
    "The CLI builds its schedule with make_schedule, and its loss is l_simple on that schedule: Laplace training, cosine grid."
    from diffusion_course.cli import TRAIN_DEFAULTS, build_run
    run = build_run({**TRAIN_DEFAULTS, 'schedule': 'laplace', 'steps': 2, 'objective': 'eps'})  # eps: the loss is l_simple on the chain
    sched = run['loss'].keywords['sched']
    assert sched is run['sched'] and sched.train_weights is not None and torch.equal(sched.beta, cosine_schedule(1000).beta)
