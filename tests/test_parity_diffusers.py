"Parity of diffusion.ddpm and diffusion.iddpm with diffusers' DDPMScheduler: schedules, add_noise, and one ancestral step."
import pytest
import torch

diffusers = pytest.importorskip("diffusers")
from diffusers import DDPMScheduler

from diffusion_course.diffusion.ddpm import DDPMSampler, Schedule, q_sample
from diffusion_course.diffusion.iddpm import cosine_schedule

SCHEDULES = {'linear': lambda T: Schedule.linear(T), 'squaredcos_cap_v2': cosine_schedule}
VARIANCES = {'fixed_small': 'beta_tilde', 'fixed_large': 'beta', 'learned_range': 'learned_range'}
PREDICTIONS = {'eps': 'epsilon', 'x0': 'sample', 'v': 'v_prediction'}

def _ref(name, T=1000, variance='fixed_small', prediction='eps', exact_alpha_bar=None):
    "diffusers' DDPMScheduler with clipping off; `exact_alpha_bar` replaces its float32 cumulative product by ours."
    kw = dict(beta_start=1e-4 * 1000 / T, beta_end=0.02 * 1000 / T) if name == 'linear' else {}
    ref = DDPMScheduler(num_train_timesteps=T, beta_schedule=name, variance_type=variance, clip_sample=False,
                        prediction_type=PREDICTIONS[prediction], **kw)
    if exact_alpha_bar is not None: ref.alphas_cumprod = exact_alpha_bar.clone()
    return ref

@pytest.mark.parametrize("name", SCHEDULES)
@pytest.mark.parametrize("T", [1000, 250, 4000])
def test_betas_and_alpha_bar_match(name, T):
    ref, ours = _ref(name, T), SCHEDULES[name](T)
    assert (ref.betas.double() - ours.beta).abs().max() < 1e-6
    assert (ref.alphas_cumprod.double() - ours.alpha_bar).abs().max() < 1e-6

@pytest.mark.parametrize("name", SCHEDULES)
def test_q_sample_matches_add_noise(name):
    ref, ours = _ref(name), SCHEDULES[name](1000)
    g = torch.Generator().manual_seed(0)
    x0, eps = torch.rand(64, 3, 8, 8, generator=g) * 2 - 1, torch.randn(64, 3, 8, 8, generator=g)
    t = torch.cat([torch.tensor([0, 1, 998, 999]), torch.randint(0, 1000, (60,), generator=g)])
    err = (ref.add_noise(x0, eps, t) - q_sample(ours, x0, t, eps)).abs().max().item()
    assert err < 1e-5, err

def _step_errors(name, variance, prediction='eps', exact=False, n=60, seed=0, steps=None):
    "Max |ours - diffusers| of one step (x_prev, x0_hat; relative to max(1, size)) over `n` random (t, x_t, model output, noise)."
    ours_sched = SCHEDULES[name](1000)
    ref = _ref(name, 1000, variance, prediction, ours_sched.alpha_bar if exact else None)
    sampler = DDPMSampler(ours_sched, VARIANCES[variance], steps=steps, prediction=prediction, clip_x0=False)
    pairs = sampler.timesteps()
    if steps is not None: ref.set_timesteps(timesteps=[t for t, _ in pairs])
    g = torch.Generator().manual_seed(seed)
    idx = [0, len(pairs) - 1, len(pairs) - 2] + torch.randint(0, len(pairs), (n - 3,), generator=g).tolist()
    err_x, err_x0 = 0.0, 0.0
    for k, i in enumerate(idx):
        t, t_prev = pairs[i]
        C = 3
        x_t = torch.randn(2, C, 8, 8, generator=g)
        out = torch.randn(2, C * (2 if variance == 'learned_range' else 1), 8, 8, generator=g)
        if variance == 'learned_range': out[:, C:] = out[:, C:].tanh()  # v in [-1, 1]
        x_prev, x0_hat = sampler.step(out, x_t, t, t_prev, generator=torch.Generator().manual_seed(1000 + k))
        r = ref.step(out, t, x_t, generator=torch.Generator().manual_seed(1000 + k))  # the same noise: one randn of x_t's shape
        scale = max(1.0, x0_hat.abs().max().item())  # x0_hat = x_t / sqrt(alpha_bar) is ~1e4 at the end of the cosine chain
        err_x = max(err_x, (x_prev - r.prev_sample).abs().max().item() / max(1.0, x_prev.abs().max().item()))
        err_x0 = max(err_x0, (x0_hat - r.pred_original_sample).abs().max().item() / scale)
    return err_x, err_x0

@pytest.mark.parametrize("name", SCHEDULES)
@pytest.mark.parametrize("variance", VARIANCES)
def test_step_matches_diffusers(name, variance):
    """One step, diffusers given our float64 alpha_bar: within 1e-5 (relative to the sample's size where x0_hat is huge).

    diffusers keeps alpha_bar as a float32 cumulative product (off by ~1e-7 relative); its step recomputes beta_t as
    1 - alpha_bar_t / alpha_bar_{t-1}, which at small t (beta ~ 1e-4) cancels that error up to ~1e-3. On the same
    alpha_bar the two steps agree to float32 rounding; `test_step_matches_stock_diffusers` bounds the stock difference."""
    err_x, err_x0 = _step_errors(name, variance, exact=True)
    print(f"{name} {variance}: max |x_prev diff| {err_x:.2e}, max |x0_hat diff| {err_x0:.2e} (relative to max(1, |x0_hat|))")
    assert err_x < 1e-5 and err_x0 < 1e-5, (err_x, err_x0)

@pytest.mark.parametrize("name", SCHEDULES)
@pytest.mark.parametrize("prediction", ['x0', 'v'])
def test_step_matches_diffusers_other_predictions(name, prediction):
    err_x, err_x0 = _step_errors(name, 'fixed_small', prediction, exact=True, n=30)
    assert err_x < 1e-5 and err_x0 < 1e-5, (err_x, err_x0)

@pytest.mark.parametrize("name", SCHEDULES)
@pytest.mark.parametrize("variance", VARIANCES)
def test_respaced_step_matches_diffusers_custom_timesteps(name, variance):
    "A 50-step respaced chain equals diffusers' DDPMScheduler with the same custom timesteps."
    from diffusion_course.diffusion.ddpm import respaced_steps
    err_x, err_x0 = _step_errors(name, variance, exact=True, n=30, steps=respaced_steps(1000, 50))
    print(f"respaced {name} {variance}: max |x_prev diff| {err_x:.2e}")
    assert err_x < 1e-5 and err_x0 < 1e-5, (err_x, err_x0)

@pytest.mark.parametrize("name", SCHEDULES)
def test_step_matches_stock_diffusers(name):
    "Stock diffusers (its float32 alpha_bar): the cancellation above makes the difference ~5e-5 relative, far above rounding."
    err_x, err_x0 = _step_errors(name, 'fixed_small')
    print(f"stock {name}: max |x_prev diff| {err_x:.2e}, max |x0_hat diff| {err_x0:.2e}")
    assert err_x < 5e-4 and err_x0 < 5e-5, (err_x, err_x0)
