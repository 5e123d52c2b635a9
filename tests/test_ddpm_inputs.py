"Bad input to diffusion.ddpm and diffusion.iddpm: a ValueError that names the expected and the actual values."
from functools import partial

import pytest
import torch

from diffusion_course.diffusion.ddpm import (DDPMSampler, MixtureDenoiser, Schedule, check_images, l_simple, linear_betas,
                                             q_posterior, q_sample, respaced_steps, sample_loop, split_output, to_x0_eps)
from diffusion_course.diffusion.iddpm import (cosine_betas, discretized_gaussian_log_likelihood, l_hybrid, l_vlb,
                                              p_mean_variance, respace, vlb_bpd, vlb_terms)

S = Schedule.linear(100)
X = torch.zeros(2, 1, 4, 4)
T2 = torch.tensor([0, 5])
zero = lambda x, t, y=None: torch.zeros_like(x)

@pytest.mark.parametrize("fn", [linear_betas, cosine_betas])
@pytest.mark.parametrize("T", [0, -1, 2.5, True])
def test_T_must_be_a_positive_integer(fn, T):
    with pytest.raises(ValueError, match=r"T must be an integer >= 1, got " + repr(T).replace('.', r'\.')):
        fn(T)

@pytest.mark.parametrize("beta", [torch.tensor([]), torch.zeros(3), torch.tensor([0.1, 1.5]), torch.ones(2, 2) * 0.1])
def test_bad_betas(beta):
    with pytest.raises(ValueError, match="betas must"):
        Schedule(beta)

def test_bad_alpha_bar():
    with pytest.raises(ValueError, match=r"strictly decreasing in \[0, 1\), got values from 0.5 to 0.9"):
        Schedule.from_alpha_bar(torch.tensor([0.9, 0.5, 0.7]))
    with pytest.raises(ValueError, match="got values from 0.5 to 1"):
        Schedule.from_alpha_bar(torch.tensor([1.0, 0.5]))

@pytest.mark.parametrize("t", [torch.tensor([0, 100]), torch.tensor([-1, 3])])
def test_t_outside_range(t):
    with pytest.raises(ValueError, match=r"t must lie in \[0, 100\), got values from"):
        q_sample(S, X, t, X)
    with pytest.raises(ValueError, match=r"t must lie in \[0, 100\)"):
        q_posterior(S, X, X, t)
    with pytest.raises(ValueError, match=r"t must lie in \[0, 100\)"):
        l_simple(zero, X, sched=S, t=t)

def test_float_t():
    with pytest.raises(ValueError, match="integer steps, got dtype torch.float32"):
        q_sample(S, X, torch.tensor([0.0, 1.0]), X)

@pytest.mark.parametrize("t,t_prev", [(100, 99), (-1, -2), (5, 5), (5, 7), (5, -2)])
def test_sampler_step_outside_range(t, t_prev):
    with pytest.raises(ValueError, match=rf"t in \[0, 100\) to t_prev in \[-1, t\), got t={t}, t_prev={t_prev}"):
        DDPMSampler(S).step(X, X, t, t_prev)

@pytest.mark.parametrize("kw,msg", [(dict(variance='fixed_small'), "unknown variance 'fixed_small'; expected one of"),
                                    (dict(prediction='epsilon'), "unknown prediction 'epsilon'; expected one of"),
                                    (dict(steps=[0, 100]), r"steps must be distinct integers in \[0, 100\)"),
                                    (dict(steps=[3, 3]), r"steps must be distinct integers in \[0, 100\)")])
def test_unknown_sampler_names(kw, msg):
    with pytest.raises(ValueError, match=msg):
        DDPMSampler(S, **kw)

def test_unknown_prediction_names():
    with pytest.raises(ValueError, match="unknown prediction 'score'"):
        to_x0_eps(S, X, T2, X, 'score')
    with pytest.raises(ValueError, match="unknown prediction 'score'"):
        l_simple(zero, X, sched=S, prediction='score')
    with pytest.raises(ValueError, match="unknown prediction 'score'"):
        l_hybrid(zero, X, sched=S, prediction='score')
    with pytest.raises(ValueError, match="unknown variance 'fixed_large'"):
        p_mean_variance(S, X, X, T2, variance='fixed_large')

@pytest.mark.parametrize("T,n", [(10, 0), (10, 11)])
def test_respaced_steps_range(T, n):
    with pytest.raises(ValueError, match=rf"must lie in \[1, {T}\], got {n}"):
        respaced_steps(T, n)
    with pytest.raises(ValueError, match="T must be an integer"):
        respaced_steps(0, 1)

def test_respace_bad_steps():
    with pytest.raises(ValueError, match=r"distinct integers in \[0, 100\), got \[0, 5, 5\]"):
        respace(S, [0, 5, 5])
    with pytest.raises(ValueError, match=r"in \[0, 100\)"):
        respace(S, [0, 100])

def test_images_outside_range():
    with pytest.raises(ValueError, match=r"\[-1, 1\], got values from -1 to 3"):
        check_images(torch.tensor([-1.0, 3.0]))
    bad = torch.full((2, 1, 4, 4), 2.0)
    with pytest.raises(ValueError, match=r"\[-1, 1\], got values from 2 to 2"):
        discretized_gaussian_log_likelihood(bad, bad, torch.zeros(1))
    with pytest.raises(ValueError, match=r"\[-1, 1\]"):
        vlb_bpd(zero, bad * 127.5, sched=S, n_steps=2)

def test_mismatched_shapes():
    with pytest.raises(ValueError, match=r"eps must have the shape of x0 \(2, 1, 4, 4\), got \(2, 1, 4, 3\)"):
        q_sample(S, X, T2, torch.zeros(2, 1, 4, 3))
    with pytest.raises(ValueError, match="one step per image: expected 2, got 3"):
        q_sample(S, X, torch.tensor([0, 1, 2]), X)
    with pytest.raises(ValueError, match=r"one shape, got \(2, 1, 4, 4\) and \(2, 2, 4, 4\)"):
        q_posterior(S, X, torch.zeros(2, 2, 4, 4), T2)
    with pytest.raises(ValueError, match="one step per sample: expected 2, got 1"):
        q_posterior(S, X, X, torch.tensor([0]))
    with pytest.raises(ValueError, match="model output has 3 channels; expected 1 or 2"):
        split_output(torch.zeros(2, 3, 4, 4), 1)
    with pytest.raises(ValueError, match=r"mean must have the shape of x \(2, 1, 4, 4\), got \(2, 1, 4, 3\)"):
        discretized_gaussian_log_likelihood(X, torch.zeros(2, 1, 4, 3), torch.zeros(1))
    with pytest.raises(ValueError, match=r"one shape, got \(2, 1, 4, 4\) and \(2, 1, 2, 2\)"):
        vlb_terms(S, X, X, torch.zeros(2, 1, 2, 2), T2)

def test_learned_variance_needs_2C_channels():
    with pytest.raises(ValueError, match="output with 2 channels, got 1"):
        l_hybrid(zero, X, sched=S)
    with pytest.raises(ValueError, match="needs a model output with 2 channels, got 1"):
        l_vlb(zero, X, sched=S)
    with pytest.raises(ValueError, match="learned_range' needs a model that outputs 2x the channels"):
        sample_loop(zero, DDPMSampler(S, 'learned_range', steps=3), (2, 1, 4, 4))

def test_mixture_denoiser_shapes():
    with pytest.raises(ValueError, match=r"means must be \(K, D\), got shape \(3,\)"):
        MixtureDenoiser(S, torch.zeros(3), 0.1)
    with pytest.raises(ValueError, match=r"weights must be \(2,\), got shape \(3,\)"):
        MixtureDenoiser(S, torch.zeros(2, 2), 0.1, torch.ones(3) / 3)
    with pytest.raises(ValueError, match=r"x_t must be \(B, 2\), got shape \(4, 3\)"):
        MixtureDenoiser(S, torch.zeros(2, 2), 0.1)(torch.zeros(4, 3), torch.zeros(4, dtype=torch.long))

def test_sample_loop_needs_a_shape():
    with pytest.raises(ValueError, match="either shape or x_T"):
        sample_loop(zero, DDPMSampler(S))

def test_vlb_bpd_n_steps():
    with pytest.raises(ValueError, match="n_steps must be >= 2 .* got 1"):
        vlb_bpd(zero, X, sched=S, n_steps=1)

def test_exported_functions_run_outside_the_notebook():
    "The exported module imports what it uses (a notebook's namespace can hide a missing import)."
    x0 = torch.randint(0, 256, (2, 1, 4, 4)).float() / 127.5 - 1
    model = lambda x, t, y=None: torch.cat([torch.zeros_like(x), torch.zeros_like(x)], 1)
    out = vlb_bpd(model, x0, sched=S, n_steps=5, generator=torch.Generator().manual_seed(0))
    assert out['total'].shape == (2,) and torch.isfinite(out['total']).all() and len(out['t']) <= 5
    assert torch.isfinite(l_hybrid(model, x0, sched=S)) and torch.isfinite(l_vlb(model, x0, sched=S))
    x = sample_loop(model, DDPMSampler(S, 'learned_range', steps=4), (2, 1, 4, 4), generator=torch.Generator().manual_seed(0))
    assert x.shape == (2, 1, 4, 4)
