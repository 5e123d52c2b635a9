"""One sampling loop: `samplers.sample` runs through `ddpm.sample_loop`. The two loops as they were before they were merged are
copied here verbatim, and every sampler of the course (DDPM, DDIM, and each of `samplers.SAMPLERS` on a discrete, an EDM and a
flow process) must give bit-identical samples and frames through the merged code."""
import pytest
import torch

from diffusion_course.diffusion import ddpm
from diffusion_course.diffusion.continuous import EDM, DiscreteVP, Flow, GaussianMixture
from diffusion_course.diffusion.ddim import DDIMSampler
from diffusion_course.diffusion.samplers import SAMPLERS, make_sampler, sample

SCHED = ddpm.Schedule.linear(1000)
MEANS = torch.tensor([[0.8, 0.0], [-0.8, 0.3], [0.0, -0.7]])


@torch.no_grad()
def old_sample_loop(model, sampler, shape=None, y=None, x_T=None, generator=None, device=None, keep_x0=False, keep_every=1):
    "ddpm.sample_loop before the merge (progress bar left out)."
    if x_T is None:
        device = device or (generator.device if generator is not None else 'cpu')
        x_T = torch.randn(tuple(shape), generator=generator, device=device)
    x, frames = x_T, []
    pairs = sampler.timesteps()
    n = len(pairs)
    for i, (t, t_prev) in enumerate(pairs):
        tt = torch.full((len(x),), t, device=x.device, dtype=torch.long)
        x, x0_hat = sampler.step(model(x, tt, y), x, t, t_prev, generator=generator)
        if keep_x0 and (i % keep_every == 0 or i == n - 1): frames.append(x0_hat.detach().cpu())
    return (x, frames) if keep_x0 else x


@torch.no_grad()
def old_sample(model, sampler, shape=None, y=None, x_T=None, generator=None, device=None, keep_x0=False, keep_every=1):
    "samplers.sample before the merge (progress bar left out)."
    if x_T is None:
        device = device or (generator.device if generator is not None else 'cpu')
        x_T = torch.randn(tuple(shape), generator=generator, device=device)
    if hasattr(sampler, 'reset'): sampler.reset()
    x, frames = x_T * float(getattr(sampler, 'init_std', 1.0)), []
    t_dtype = torch.float64 if x.dtype == torch.float64 else torch.float32
    pairs = sampler.timesteps()
    n = len(pairs)
    for i, (t, t_prev) in enumerate(pairs):
        tt = torch.full((len(x),), t, device=x.device, dtype=torch.long if isinstance(t, int) else t_dtype)
        x, x0_hat = sampler.step(model(x, tt, y), x, t, t_prev, generator=generator)
        if keep_x0 and (i % keep_every == 0 or i == n - 1): frames.append(x0_hat.detach().cpu())
    return (x, frames) if keep_x0 else x


def _same(a, b):
    (xa, fa), (xb, fb) = a, b
    return torch.equal(xa, xb) and len(fa) == len(fb) and all(torch.equal(p, q) for p, q in zip(fa, fb))


def _run(loop, model, sampler, dtype, **kw):
    g = torch.Generator().manual_seed(3)
    return loop(model, sampler, shape=(64, 2), generator=g, keep_x0=True, keep_every=2, **kw) if dtype is None else \
        loop(model, sampler, x_T=torch.randn(64, 2, generator=torch.Generator().manual_seed(1), dtype=dtype), generator=g, keep_x0=True, keep_every=2, **kw)


@pytest.mark.parametrize("dtype", [None, torch.float64])
@pytest.mark.parametrize("make", ['ddpm', 'ddpm_respaced', 'ddim', 'ddim_eta', 'ddim_learned'])
def test_lesson_10_samplers_unchanged(make, dtype):
    "DDPM and DDIM through the merged sample_loop, and through samplers.sample, equal the old sample_loop bit for bit."
    model = GaussianMixture(MEANS, 0.1).model(DiscreteVP(SCHED))
    s = {'ddpm': lambda: ddpm.DDPMSampler(SCHED), 'ddpm_respaced': lambda: ddpm.DDPMSampler(SCHED, 'beta', steps=17),
         'ddim': lambda: DDIMSampler(SCHED, 10), 'ddim_eta': lambda: DDIMSampler(SCHED, 12, eta=1.0, spacing='leading'),
         'ddim_learned': lambda: DDIMSampler(SCHED, 8, clip_x0=True)}[make]
    old = _run(old_sample_loop, model, s(), dtype)
    assert _same(_run(ddpm.sample_loop, model, s(), dtype), old)
    assert _same(_run(sample, model, s(), dtype), old)
    assert torch.is_tensor(old[0]) and old[0].isfinite().all() and old[0].abs().max() > 0.3  # samples, not zeros


@pytest.mark.parametrize("dtype", [None, torch.float64])
@pytest.mark.parametrize("process", ['discrete', 'edm', 'flow'])
def test_lesson_16_samplers_unchanged(process, dtype):
    "Every sampler of lesson 16 through samplers.sample (now lesson 10's loop underneath) equals the old samplers.sample bit for bit."
    proc, pred = {'discrete': (DiscreteVP(SCHED), 'eps'), 'edm': (EDM(), 'edm'), 'flow': (Flow(), 'velocity')}[process]
    model = GaussianMixture(MEANS, 0.1).model(proc, pred)
    fractional = 0
    for name in SAMPLERS:
        if name == 'ddim' and process == 'discrete': continue  # DDIMSampler: the test above
        for kw in ({}, {'clip_x0': True}):
            s1, s2 = make_sampler(name, proc, 6, pred, **kw), make_sampler(name, proc, 6, pred, **kw)
            fractional += any(isinstance(t, float) and not float(t).is_integer() for pair in s1.timesteps() for t in pair)
            assert _same(_run(sample, model, s1, dtype), _run(old_sample, model, s2, dtype)), (name, kw)
    assert fractional > 0  # the float-time path was exercised


def test_sample_loop_hands_fractional_times_as_floats():
    "The one behaviour that changed: a fractional time reaches the model as a float (the old loop truncated it to an integer)."
    seen = []
    def model(x, t, y=None):
        seen.append(t.dtype)
        return torch.zeros_like(x)
    s = make_sampler('euler', DiscreteVP(SCHED), 4)  # a Karras grid between whole steps
    ddpm.sample_loop(model, s, shape=(2, 2), generator=torch.Generator().manual_seed(0))
    assert seen[0] == torch.long and seen.count(torch.float32) >= 2  # T - 1 is a whole step; the Karras levels below it are not
    seen.clear()
    ddpm.sample_loop(model, DDIMSampler(SCHED, 4), shape=(2, 2), generator=torch.Generator().manual_seed(0))
    assert seen == [torch.long] * 4
