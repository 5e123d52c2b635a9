"Per-step scales in float32 and bfloat16 against float64: the schedule keeps float64 tables and `gather` rounds them once."
import pytest
import torch

from diffusion_course.diffusion.ddpm import (Schedule, eps_from_x0, gather, q_sample, v_from_x0_eps, x0_from_eps, x0_from_v)
from diffusion_course.diffusion.iddpm import cosine_schedule, prior_bpd
from diffusion_course.diffusion.schedules import make_schedule

SCHEDULES = {'linear-1000': lambda: Schedule.linear(1000), 'cosine-1000': lambda: cosine_schedule(1000),
             'cosine-4000': lambda: cosine_schedule(4000), 'laplace-1000': lambda: make_schedule('laplace', 1000)}
DTYPES = [torch.float32, torch.bfloat16, torch.float16]


def _rel(a, ref): return ((a.double() - ref) / ref).abs()


@pytest.mark.parametrize('name', SCHEDULES)
@pytest.mark.parametrize('dtype', DTYPES)
def test_q_sample_scales_within_one_ulp(name, dtype):
    s = SCHEDULES[name]()
    t = torch.arange(s.T)
    zeros, ones = torch.zeros(s.T, 1, dtype=dtype), torch.ones(s.T, 1, dtype=dtype)
    noise = q_sample(s, zeros, t, ones).flatten()  # sqrt(1 - alpha_bar_t)
    signal = q_sample(s, ones, t, zeros).flatten()  # sqrt(alpha_bar_t)
    eps = torch.finfo(dtype).eps
    assert (noise > 0).all(), f"{name} {dtype}: q_sample adds no noise at steps {(noise == 0).nonzero().flatten()[:5].tolist()}"
    assert _rel(noise, (1 - s.alpha_bar).sqrt()).max() < eps
    ok = s.alpha_bar.sqrt() > torch.finfo(dtype).tiny * 1e3  # values representable as normal numbers in dtype
    assert _rel(signal[ok], s.alpha_bar.sqrt()[ok]).max() < eps


def test_bfloat16_noise_at_t0():
    "The issue's figures: before the tables, bf16 q_sample added no noise for the first 10 (linear), 21 or 85 (cosine) steps."
    for make in SCHEDULES.values():
        s = make()
        x_t = q_sample(s, torch.zeros(4, 1, 2, 2, dtype=torch.bfloat16), torch.zeros(4, dtype=torch.long), torch.ones(4, 1, 2, 2, dtype=torch.bfloat16))
        assert (x_t > 0).all() and abs(x_t[0, 0, 0, 0].item() / s.sqrt_one_minus_alpha_bar[0].item() - 1) < 2 ** -7


@pytest.mark.parametrize('name', ['linear-1000', 'cosine-4000'])
def test_float32_conversions_match_float64(name):
    s = SCHEDULES[name]()
    g = torch.Generator().manual_seed(0)
    t = torch.cat([torch.arange(20), torch.randint(0, s.T, (200,), generator=g)])
    x0, eps = torch.rand(len(t), 3, generator=g, dtype=torch.float64) * 2 - 1, torch.randn(len(t), 3, generator=g, dtype=torch.float64)
    x_t = q_sample(s, x0, t, eps)
    want = {'x0': x0, 'eps': eps, 'v': v_from_x0_eps(s, x0, t, eps)}
    x_t32, x032, eps32 = x_t.float(), x0.float(), eps.float()
    got = {'x0': x0_from_eps(s, x_t32, t, eps32), 'eps': eps_from_x0(s, x_t32, t, x032), 'v': v_from_x0_eps(s, x032, t, eps32)}
    for k in got: assert got[k].dtype == torch.float32
    amp_x0 = s.sqrt_recip_alpha_bar[t][:, None]  # how much x0 = x_t / sqrt(alpha_bar) - ... amplifies the rounding of x_t
    amp_eps = (s.sqrt_recip_alpha_bar / s.sqrt_recipm1_alpha_bar)[t][:, None]  # and eps = (x_t / sqrt(alpha_bar) - x0) / sqrt(1 / alpha_bar - 1)
    assert (got['v'].double() - want['v']).abs().max() < 1e-6
    assert ((got['x0'].double() - x0) / amp_x0).abs().max() < 1e-6  # float32 rounding, amplified as the math must, no more
    assert ((got['eps'].double() - eps) / amp_eps).abs().max() < 1e-6
    assert (got['x0'][t < 20].double() - x0[t < 20]).abs().max() < 1e-6
    assert ((x0_from_v(s, x_t32, t, got['v']).double() - x0) / amp_x0).abs().max() < 1e-6


def test_gather_rounds_once_and_keeps_device_and_dtype():
    s = cosine_schedule(4000)
    x = torch.zeros(3, 2, dtype=torch.bfloat16)
    out = gather(s.sqrt_one_minus_alpha_bar, torch.tensor([0, 1, 3999]), x)
    assert out.dtype == torch.bfloat16 and out.shape == (3, 1)
    assert torch.equal(out.flatten(), s.sqrt_one_minus_alpha_bar[[0, 1, 3999]].to(torch.bfloat16))


def test_prior_bpd_float32_close_to_float64():
    s = cosine_schedule(1000)
    x0 = torch.rand(4, 1, 8, 8, generator=torch.Generator().manual_seed(0), dtype=torch.float64) * 2 - 1
    assert torch.allclose(prior_bpd(s, x0.float()).double(), prior_bpd(s, x0), rtol=1e-4, atol=1e-9)
