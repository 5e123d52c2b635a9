"diffusion.schedules as the trainer and the CLI use it: make_schedule(name, T) for every name and T, and bad input."
import math

import pytest
import torch

from diffusion_course.diffusion.ddpm import Schedule
from diffusion_course.diffusion.iddpm import cosine_schedule
from diffusion_course.diffusion.schedules import LOG_SNR, LOG_SNR_END, SCHEDULES, log_snr_laplace, make_schedule

@pytest.mark.parametrize("name", SCHEDULES)
@pytest.mark.parametrize("T", [1, 2, 10, 20, 21, 100, 1000, 4000])
def test_every_schedule_is_valid(name, T):
    s = make_schedule(name, T)
    assert isinstance(s, Schedule) and s.T == T
    for k in ('beta', 'alpha_bar', 'beta_tilde', 'post_coef_x0', 'post_coef_xt', 'log_snr'):
        assert torch.isfinite(getattr(s, k)).all(), k
    assert (s.alpha_bar[1:] < s.alpha_bar[:-1]).all() and (s.beta > 0).all() and (s.beta <= 1).all()
    assert s.log_snr[-1] <= LOG_SNR_END + 1e-6 or name in ('linear', 'cosine')
    if T >= 10 or name != 'cosine':  # improved DDPM's cosine betas end at alpha_bar = 0.001 * alpha_bar(1 - 1/T): noisy enough from T = 10 on
        assert s.alpha_bar[-1].sqrt() < 0.01

def test_named_schedules_match_their_papers():
    assert torch.equal(make_schedule('linear', 1000).beta, Schedule.linear(1000).beta)
    assert torch.equal(make_schedule('cosine', 1000).beta, cosine_schedule(1000).beta)
    s = make_schedule('laplace', 1000)
    t = torch.arange(1, 1000, dtype=torch.float64) / 1000
    assert torch.allclose(s.log_snr[:-1], log_snr_laplace(t).clamp(-20, 15), atol=1e-6)

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
