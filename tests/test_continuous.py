"diffusion.continuous beyond its lesson: every conversion both ways on every process, the clocks, Tweedie, the losses, and a flow/EDM model trained by the Trainer and sampled end to end."
import math

import pytest
import torch

from diffusion_course.core import seed_everything
from diffusion_course.data import ImageData
from diffusion_course.diffusion import ddpm
from diffusion_course.diffusion.continuous import (OBJECTIVES, PREDICTIONS, SPACINGS, DiscreteVP, EDM, Flow, GaussianMixture, Objective, VP,
                                                   convert, diffusion_loss, edm_precond, edm_weight, from_x0_eps, karras_sigmas, objective,
                                                   to_x0_eps, x0_weight)
from diffusion_course.diffusion.ddim import ddim_timesteps
from diffusion_course.diffusion.schedules import LOG_SNR, make_schedule

SCHED = ddpm.Schedule.linear(1000)
PROCESSES = {'vp_cosine': VP('cosine'), 'vp_linear': VP('linear'), 'vp_sigmoid': VP('sigmoid'), 'vp_laplace': VP('laplace'),
             'discrete_linear': DiscreteVP(SCHED), 'discrete_cosine': DiscreteVP(make_schedule('cosine', 1000)),
             'edm': EDM(), 'edm_unit': EDM(sigma_data=1.0), 'flow': Flow()}
LEVELS = torch.tensor([0.02, 0.1, 0.5, 1.0, 5.0, 50.0], dtype=torch.float64)
ANGLES = torch.arange(8) * (2 * math.pi / 8)
MEANS = 0.8 * torch.stack([ANGLES.cos(), ANGLES.sin()], 1)


def _pair(shape=(6, 3, 4, 4), seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(shape, generator=g, dtype=torch.float64), torch.randn(shape, generator=g, dtype=torch.float64)


@pytest.mark.parametrize("name", PROCESSES)
@pytest.mark.parametrize("src", PREDICTIONS)
def test_every_conversion_both_ways(name, src):
    p = PROCESSES[name]
    x0, eps = _pair()
    c = p.coefs(p.t_from_sigma(LEVELS), x0)
    x_t = c.a * x0 + c.b * eps
    out = from_x0_eps(x0, eps, c, src)
    x0_hat, eps_hat = to_x0_eps(out, x_t, c, src)
    assert torch.allclose(x0_hat, x0, atol=1e-9) and torch.allclose(eps_hat, eps, atol=1e-9)
    for dst in PREDICTIONS:
        there = convert(out, x_t, c, src, dst)
        assert torch.allclose(there, from_x0_eps(x0, eps, c, dst), atol=1e-8, rtol=1e-9), dst
        assert torch.allclose(convert(there, x_t, c, dst, src), out, atol=1e-8, rtol=1e-9), dst


@pytest.mark.parametrize("name", PROCESSES)
def test_scalar_coefficients_match_batched(name):
    p = PROCESSES[name]
    x0, eps = _pair((1, 2))
    t = p.t_from_sigma(LEVELS[2:3])
    cb, cs = p.coefs(t, x0), p.coefs(float(t[0]))
    for pred in PREDICTIONS:
        assert torch.allclose(from_x0_eps(x0, eps, cb, pred), from_x0_eps(x0, eps, cs, pred), rtol=1e-12, atol=1e-12)


def test_special_cases_of_the_conversions():
    "Tweedie's eps = -sqrt(1 - alpha_bar) score; v is lesson 10's v; flow's velocity is eps - x0; EDM's F is -v for sigma_data = 1."
    x0, eps = _pair()
    steps = torch.tensor([0, 1, 250, 500, 900, 999])
    dvp = PROCESSES['discrete_linear']
    c = dvp.coefs(steps, x0)
    ab = SCHED.alpha_bar[steps].reshape(-1, 1, 1, 1)
    assert torch.allclose(from_x0_eps(x0, eps, c, 'eps'), -(1 - ab).sqrt() * from_x0_eps(x0, eps, c, 'score'))
    assert torch.allclose(from_x0_eps(x0, eps, c, 'v'), ddpm.v_from_x0_eps(SCHED, x0, steps, eps))
    x_t = ddpm.q_sample(SCHED, x0, steps, eps)
    assert torch.allclose(dvp.q_sample(x0, steps, eps), x_t)
    assert torch.allclose(to_x0_eps(eps, x_t, c, 'eps')[0], ddpm.x0_from_eps(SCHED, x_t, steps, eps))
    fl = Flow()
    cf = fl.coefs(torch.rand(6, dtype=torch.float64), x0)
    assert torch.allclose(from_x0_eps(x0, eps, cf, 'velocity'), eps - x0)
    e1, vp = EDM(sigma_data=1.0), VP('cosine')
    assert torch.allclose(from_x0_eps(x0, eps, e1.coefs(LEVELS, x0), 'edm'), -from_x0_eps(x0, eps, vp.coefs(vp.t_from_sigma(LEVELS), x0), 'v'))


@pytest.mark.parametrize("name", PROCESSES)
def test_clock_inverse_and_coefficients(name):
    p = PROCESSES[name]
    lo = max(0.011, getattr(p, 'sigma_min', 0.0))
    sig = torch.tensor([lo, 0.3, 1.0, 7.0, 60.0], dtype=torch.float64)
    t = p.t_from_sigma(sig)
    assert torch.allclose(p.sigma(t), sig, rtol=1e-9)
    assert torch.allclose(p.log_snr(t), -2 * sig.log(), rtol=1e-9, atol=1e-9)
    assert p.sigma(p.t_clean) == 0
    if isinstance(p, (VP, DiscreteVP)): assert torch.allclose(p.signal(t) ** 2 + p.noise(t) ** 2, torch.ones(5, dtype=torch.float64))
    f, g2 = p.sde(t)
    assert (g2 > 0).all(), g2  # a diffusion coefficient, not an anti-diffusion
    da, db = p.derivatives(t)
    lo, hi = (0.0, 1.0) if isinstance(p, (VP, Flow)) else (-1.0, 1e9)  # stay inside the clock's domain (Laplace crowds its ends)
    h = 1e-4 * torch.minimum(t - lo, hi - t).clamp(max=1e-2)
    assert torch.allclose(da, (p.signal(t + h) - p.signal(t - h)) / (2 * h), rtol=1e-4, atol=1e-6)
    assert torch.allclose(db, (p.noise(t + h) - p.noise(t - h)) / (2 * h), rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize("name", PROCESSES)
@pytest.mark.parametrize("spacing", ['karras', 'log', 'uniform'])
def test_grids_decrease_to_clean(name, spacing):
    p = PROCESSES[name]
    times = p.grid(7, spacing)
    sig = p.sigma(times)
    assert len(times) == 8 and times[-1] == p.t_clean and sig[-1] == 0 and (sig[1:] < sig[:-1]).all()
    if spacing == 'karras': assert torch.allclose(sig[:-1], karras_sigmas(7, p.sigma_min, p.sigma_max), rtol=1e-6)  # Laplace's clock crowds t near 0 and 1


@pytest.mark.parametrize("spacing", ['leading', 'trailing', 'linspace'])
def test_discrete_whole_step_grids_are_ddims(spacing):
    dvp = PROCESSES['discrete_linear']
    assert dvp.grid(10, spacing) == ddim_timesteps(1000, 10, spacing) + [-1]
    with pytest.raises(ValueError, match='spacing'): PROCESSES['edm'].grid(10, spacing)


def test_discrete_vp_interpolates_log_snr_and_quantizes():
    dvp = PROCESSES['discrete_linear']
    assert torch.allclose(dvp.signal(torch.arange(1000)) ** 2, SCHED.alpha_bar, rtol=0, atol=1e-14)
    lam = SCHED.log_snr
    assert torch.allclose(dvp.log_snr(torch.tensor(10.25, dtype=torch.float64)), 0.75 * lam[10] + 0.25 * lam[11])
    q = DiscreteVP(SCHED, quantize=True).grid(12)
    assert all(float(t).is_integer() for t in q) and q[-1] == -1 and q == sorted(set(q), reverse=True)
    with pytest.raises(ValueError, match='range'): dvp.t_from_sigma(torch.tensor([1e4]))
    with pytest.raises(ValueError, match=r'-1 \(clean\)'): dvp.signal(torch.tensor([-0.5]))
    with pytest.raises(ValueError, match=r'\[0, 999\]'): dvp.signal(torch.tensor([1000.0]))


def test_karras_sigmas_match_edm_eq5_and_reject_bad_ranges():
    s = karras_sigmas(18)
    i = torch.arange(18, dtype=torch.float64)
    want = (80 ** (1 / 7) + i / 17 * (0.002 ** (1 / 7) - 80 ** (1 / 7))) ** 7
    assert torch.allclose(s, want) and karras_sigmas(1).tolist() == [80.0]
    for bad in (dict(n=0), dict(n=5, sigma_min=0.0), dict(n=5, sigma_min=90.0)):
        with pytest.raises(ValueError): karras_sigmas(**bad)


def test_edm_preconditioning_is_the_process():
    edm = EDM()
    x0, eps = _pair()
    c_skip, c_out, c_in, c_noise = edm_precond(LEVELS)
    assert torch.allclose(c_skip, 0.25 / (LEVELS ** 2 + 0.25)) and torch.allclose(c_out, 0.5 * LEVELS / (LEVELS ** 2 + 0.25).sqrt())
    x = x0 + LEVELS.reshape(-1, 1, 1, 1) * eps
    assert torch.allclose(edm.q_sample(x0, LEVELS, eps), c_in.reshape(-1, 1, 1, 1) * x)
    assert torch.allclose(edm.model_time(LEVELS), 1000 * c_noise) and torch.allclose(edm.time_of(edm.model_time(LEVELS)), LEVELS)
    F = from_x0_eps(x0, eps, edm.coefs(LEVELS, x0), 'edm')
    assert torch.allclose(F, (x0 - c_skip.reshape(-1, 1, 1, 1) * x) / c_out.reshape(-1, 1, 1, 1))
    assert torch.allclose(edm_weight(LEVELS) * c_out ** 2, torch.ones(6, dtype=torch.float64))


def test_training_time_distributions():
    g = torch.Generator().manual_seed(0)
    s = EDM().sample_t(200_000, g).log()
    assert abs(s.mean() + 1.2) < 0.02 and abs(s.std() - 1.2) < 0.02
    t = Flow().sample_t(200_000, g)
    assert abs(torch.logit(t).mean()) < 0.02 and abs(torch.logit(t).std() - 1) < 0.02
    assert (Flow(t_dist='uniform').sample_t(1000, g) < 1).all() and abs(Flow(t_dist='uniform').sample_t(100_000, g).mean() - 0.5) < 0.01
    d = DiscreteVP(SCHED).sample_t(10_000, g)
    assert d.dtype == torch.long and d.min() >= 0 and d.max() <= 999
    with pytest.raises(ValueError, match='t_dist'): Flow(t_dist='beta')
    with pytest.raises(ValueError, match='log-SNR'): VP('quadratic')


@pytest.mark.parametrize("name", ['vp_cosine', 'discrete_linear', 'edm', 'flow'])
def test_mixture_is_exact_tweedie(name):
    "The exact model's eps equals -b times the autograd score of the closed-form log-density."
    p, toy = PROCESSES[name], GaussianMixture(MEANS, 0.1)
    x = 1.3 * torch.randn(64, 2, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    t = p.t_from_sigma(LEVELS.repeat(11)[:64])
    mt = p.model_time(t)
    c = p.coefs(t, x)
    x_ve = (x / c.a).requires_grad_(True)
    score, = torch.autograd.grad(toy.log_prob(x_ve, p.sigma(t)).sum(), x_ve)
    assert torch.allclose(toy.model(p, 'eps')(x, mt), -c.b * score / c.a, atol=1e-9)
    assert torch.allclose(toy.model(p, 'score')(x, mt), score / c.a, atol=1e-9)


def test_mixture_matches_lesson_10s_denoiser():
    x = torch.randn(100, 2, generator=torch.Generator().manual_seed(2), dtype=torch.float64)
    t = torch.randint(0, 1000, (100,), generator=torch.Generator().manual_seed(3))
    ours = GaussianMixture(MEANS, 0.05, weights=torch.arange(1, 9) / 36).model(DiscreteVP(SCHED))(x, t)
    assert torch.allclose(ours, ddpm.MixtureDenoiser(SCHED, MEANS, 0.05, weights=torch.arange(1, 9) / 36)(x, t), atol=1e-9)
    with pytest.raises(ValueError, match=r'\(B, 2\)'): GaussianMixture(MEANS, 0.05).x0_hat(torch.zeros(3, 3), 1.0, 0.5)


def _fake(x, t, y=None): return 0.3 * x + 1e-3 * t.float().reshape(-1, *([1] * (x.dim() - 1)))


def test_diffusion_loss_is_l_simple_and_reads_learned_variance_outputs():
    g = torch.Generator().manual_seed(4)
    x0, eps = torch.rand(8, 1, 4, 4, generator=g) * 2 - 1, torch.randn(8, 1, 4, 4, generator=g)
    t = torch.randint(0, 1000, (8,), generator=g)
    dvp = PROCESSES['discrete_linear']
    for pred in ('eps', 'x0', 'v'):
        ours = diffusion_loss(_fake, x0, process=dvp, prediction=pred, t=t, eps=eps)
        assert torch.allclose(ours, ddpm.l_simple(_fake, x0, sched=SCHED, prediction=pred, t=t, eps=eps), rtol=1e-6)
    doubled = lambda x, t, y=None: torch.cat([_fake(x, t), 7 + x], 1)  # a learned-variance model: 2C channels
    assert torch.allclose(diffusion_loss(doubled, x0, process=dvp, t=t, eps=eps), diffusion_loss(_fake, x0, process=dvp, t=t, eps=eps))


@pytest.mark.parametrize("name", ['vp_cosine', 'discrete_linear', 'edm', 'flow'])
@pytest.mark.parametrize("pred", PREDICTIONS)
def test_x0_weight_is_the_implied_weighting(name, pred):
    p = PROCESSES[name]
    x0, eps = _pair((6, 5))
    delta = 0.01 * _pair((6, 5), seed=5)[0]
    c = p.coefs(p.t_from_sigma(LEVELS), x0)
    x_t = c.a * x0 + c.b * eps
    bad = from_x0_eps(x0 + delta, (x_t - c.a * (x0 + delta)) / c.b, c, pred)
    lhs = ((bad - from_x0_eps(x0, eps, c, pred)) ** 2).sum(1, keepdim=True)
    assert torch.allclose(lhs, x0_weight(c, pred) * (delta ** 2).sum(1, keepdim=True), rtol=1e-8)


def test_weightings_and_bad_input():
    g = torch.Generator().manual_seed(6)
    x0 = torch.rand(8, 1, 4, 4, generator=g) * 2 - 1
    edm = EDM()
    t = edm.sample_t(8, torch.Generator().manual_seed(7))
    eps = torch.randn(x0.shape, generator=g)
    plain = diffusion_loss(_fake, x0, process=edm, prediction='x0', t=t, eps=eps)
    weighted = diffusion_loss(_fake, x0, process=edm, prediction='x0', weighting='edm', t=t, eps=eps)
    by_hand = diffusion_loss(_fake, x0, process=edm, prediction='x0', weighting=lambda s: edm_weight(s, 0.5), t=t, eps=eps)
    assert torch.allclose(weighted, by_hand) and not torch.allclose(weighted, plain)
    with pytest.raises(ValueError, match='weighting'): diffusion_loss(_fake, x0, process=edm, weighting='snr')
    with pytest.raises(ValueError, match='prediction'): diffusion_loss(_fake, x0, process=edm, prediction='noise')
    with pytest.raises(ValueError, match='one time per sample'): diffusion_loss(_fake, x0, process=edm, t=t[:3])
    with pytest.raises(ValueError, match='one time per sample'): edm.coefs(t[:3], x0)
    with pytest.raises(ValueError, match='like'): edm.coefs(t)
    with pytest.raises(ValueError, match='objective'): objective('ddpm')
    with pytest.raises(ValueError, match='shape of x0'): edm.q_sample(x0, t, eps[:4])


def test_objectives_by_name():
    for name in OBJECTIVES:
        obj = objective(name)
        assert isinstance(obj, Objective) and obj.prediction in PREDICTIONS
        loss = obj(_fake, torch.rand(4, 1, 4, 4) * 2 - 1, generator=torch.Generator().manual_seed(0))
        assert loss.ndim == 0 and torch.isfinite(loss)
    assert objective('v', make_schedule('cosine', 100)).process.sched.T == 100
    assert (objective('flow').process.__class__, objective('flow').prediction) == (Flow, 'velocity')
    assert (objective('edm').process.__class__, objective('edm').prediction) == (EDM, 'edm')


def _toy_images(n=64, size=8):
    g = torch.Generator().manual_seed(0)
    x = torch.zeros(n, 1, size, size, dtype=torch.uint8)
    x[:, :, 2:6, 2:6] = torch.randint(128, 256, (n, 1, 1, 1), generator=g, dtype=torch.uint8)  # a bright square of random brightness
    return ImageData(x, torch.arange(n) % 10, name='squares')


@pytest.mark.parametrize("name", ['flow', 'edm', 'v'])
def test_trainer_trains_and_every_sampler_samples(name, tmp_path):
    "A DiT-T/4 with learned sigma, trained by the course's Trainer on each objective, sampled by every sampler through model(x, t, y)."
    from diffusion_course.registry import build
    from diffusion_course.training import Trainer, Checkpoint, load_checkpoint
    from diffusion_course.diffusion.samplers import SAMPLERS, make_sampler, sample
    from diffusion_course.diffusion.guidance import guided
    seed_everything(0)
    model = build('DiT-T/4', in_channels=1, input_size=8, num_classes=10, learn_sigma=True)
    obj = objective(name, ddpm.Schedule.linear(100))
    trainer = Trainer(model, obj, _toy_images(), steps=40, batch_size=16, lr=3e-3, warmup=2, device='cpu', callbacks=[Checkpoint(tmp_path, every=40)])
    trainer.fit()
    assert trainer.loss is not None and math.isfinite(trainer.loss)
    model.eval()
    again = build('DiT-T/4', in_channels=1, input_size=8, num_classes=10, learn_sigma=True).eval()
    again.load_state_dict(load_checkpoint(tmp_path)['weights']['model'])  # the checkpoint restores the model
    x, t = torch.randn(2, 1, 8, 8), obj.process.model_time(obj.process.sample_t(2)).float()
    assert torch.allclose(again(x, t, torch.tensor([1, 2])), model(x, t, torch.tensor([1, 2])))
    y = torch.arange(4)
    for sampler in SAMPLERS:
        s = make_sampler(sampler, obj.process, 4, obj.prediction, clip_x0=True)
        x = sample(guided(model, 2.0), s, (4, 1, 8, 8), y=y, generator=torch.Generator().manual_seed(0))
        assert x.shape == (4, 1, 8, 8) and torch.isfinite(x).all() and x.abs().max() <= 1 + 1e-5, sampler
