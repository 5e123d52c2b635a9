"Parity of diffusion.ddim with diffusers' DDIMScheduler (0.42): one step, and the timesteps of each spacing."
import numpy as np
import pytest
import torch

diffusers = pytest.importorskip("diffusers")
from diffusers import DDIMScheduler

from diffusion_course.diffusion.ddim import DDIMSampler, SPACINGS, ddim_timesteps
from diffusion_course.diffusion.ddpm import Schedule, linear_betas
from diffusion_course.diffusion.schedules import make_schedule

PRED_NAMES = {'eps': 'epsilon', 'x0': 'sample', 'v': 'v_prediction'}

def _diffusers(T=1000, spacing='leading', prediction='eps', sched=None):
    "diffusers' DDIM with clipping off; given `sched`, it uses that schedule's alpha_bar (float64) so both sides step on the same numbers."
    kw = dict(trained_betas=sched.beta.numpy()) if sched is not None else dict(beta_schedule='linear', beta_start=1e-4, beta_end=0.02)
    ref = DDIMScheduler(num_train_timesteps=T, clip_sample=False, set_alpha_to_one=True, steps_offset=0,
                        timestep_spacing=spacing, prediction_type=PRED_NAMES[prediction], **kw)
    if sched is not None: ref.alphas_cumprod = sched.alpha_bar.clone()  # diffusers keeps a float32 cumprod, which drifts ~1e-6
    return ref

def test_linear_schedule_matches_diffusers():
    "Same betas; diffusers' float32 cumulative product drifts from our float64 one by a few 1e-7 relative."
    ref, ours = _diffusers(), Schedule.linear(1000)
    assert torch.allclose(ref.betas.double(), ours.beta, rtol=1e-6, atol=0)
    rel = ((ref.alphas_cumprod.double() - ours.alpha_bar) / ours.alpha_bar).abs().max().item()
    assert rel < 1e-5, rel

@pytest.mark.parametrize("spacing", SPACINGS)
@pytest.mark.parametrize("T,n", [(1000, 1), (1000, 3), (1000, 7), (1000, 10), (1000, 50), (1000, 999), (1000, 1000), (10, 3), (4000, 25), (100, 30)])
def test_timesteps_match_diffusers(spacing, T, n):
    ref = _diffusers(T, spacing)
    ref.set_timesteps(n)
    assert ddim_timesteps(T, n, spacing) == ref.timesteps.tolist()
    assert [t for t, _ in DDIMSampler(Schedule.linear(T) if T >= 20 else make_schedule('linear', T), n, spacing=spacing).timesteps()] == ref.timesteps.tolist()

def _max_step_error(sched, ref, n, eta, prediction, seed=0):
    ours = DDIMSampler(sched, n, eta=eta, spacing='leading', prediction=prediction, clip_x0=False)
    ref.set_timesteps(n)
    assert [t for t, _ in ours.timesteps()] == ref.timesteps.tolist()
    g = torch.Generator().manual_seed(seed)
    worst_prev = worst_x0 = 0.0
    for t, t_prev in ours.timesteps():
        x_t, out, noise = (torch.randn(4, 3, 8, 8, generator=g) for _ in range(3))
        r = ref.step(out, t, x_t, eta=eta, variance_noise=noise)
        x_prev, x0_hat = ours.step(out, x_t, t, t_prev, noise=noise)
        worst_prev = max(worst_prev, (x_prev - r.prev_sample).abs().max().item())
        ab = float(sched.alpha_bar[t])
        worst_x0 = max(worst_x0, (x0_hat - r.pred_original_sample).abs().max().item() * ab ** 0.5)  # x0_hat scaled back to x_t's units
    return worst_prev, worst_x0

@pytest.mark.parametrize("eta", [0.0, 1.0])
@pytest.mark.parametrize("n", [10, 50, 1000])
def test_step_matches_diffusers(eta, n):
    worst_prev, worst_x0 = _max_step_error(Schedule.linear(1000), _diffusers(sched=Schedule.linear(1000)), n, eta, 'eps')
    print(f"eta={eta} n={n}: max |x_prev - diffusers| = {worst_prev:.2e}")
    assert worst_prev < 1e-5 and worst_x0 < 1e-5

@pytest.mark.parametrize("eta", [0.0, 1.0])
def test_step_matches_diffusers_own_linear_schedule(eta):
    "Against diffusers' own float32 schedule the steps still agree to 1e-4 (the gap is the float32 cumprod, not the step)."
    worst_prev, _ = _max_step_error(Schedule.linear(1000), _diffusers(), 50, eta, 'eps')
    assert worst_prev < 1e-4

@pytest.mark.parametrize("prediction", ['x0', 'v'])
@pytest.mark.parametrize("eta", [0.0, 1.0])
def test_step_matches_diffusers_other_predictions(prediction, eta):
    worst_prev, _ = _max_step_error(Schedule.linear(1000), _diffusers(prediction=prediction, sched=Schedule.linear(1000)), 25, eta, prediction)
    assert worst_prev < 1e-5

@pytest.mark.parametrize("name", ['cosine', 'laplace'])
def test_step_matches_diffusers_any_schedule(name):
    sched = make_schedule(name, 1000)
    for eta in (0.0, 1.0):
        worst_prev, _ = _max_step_error(sched, _diffusers(sched=sched), 20, eta, 'eps')
        assert worst_prev < 1e-5, (name, eta)

def test_diffusers_prev_step_is_only_right_for_leading():
    "diffusers steps to t - T//n; for trailing (T=1000, n=3) that is 333, but the next listed step is 332."
    ref = _diffusers(spacing='trailing'); ref.set_timesteps(3)
    assert ref.timesteps.tolist() == [999, 666, 332]
    assert 666 - 1000 // 3 == 333
    assert DDIMSampler(Schedule.linear(1000), 3, spacing='trailing').timesteps()[1] == (666, 332)

def test_bad_input():
    s = Schedule.linear(1000)
    for bad in (dict(steps=0), dict(steps=1001), dict(spacing='even'), dict(eta=-0.5), dict(prediction='score')):
        with pytest.raises(ValueError): DDIMSampler(s, **{'steps': 10, **bad})
    with pytest.raises(ValueError): ddim_timesteps(1000, 10, 'even')
