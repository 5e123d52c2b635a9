"""diffusion.samplers beyond its lesson: parity with diffusers 0.42 (one step and a short loop), the equalities between samplers,
orders of accuracy on more processes, and the contract (counting, memory, errors).

Conventions bridged for diffusers' Euler, Heun and Euler ancestral schedulers: they keep the state in EDM's coordinates
x0 + sigma eps and divide the model input by sqrt(sigma^2 + 1) (`scale_model_input`), where the course keeps the model's own
coordinates x_t = sqrt(alpha_bar) x0 + sqrt(1 - alpha_bar) eps; so their state is ours times sqrt(sigma^2 + 1) at each step's
noise level, and their starting noise (`init_noise_sigma` = sigma_max for 'linspace' and 'trailing') is replaced by ours
(x_T * sqrt(sigma_max^2 + 1)). DPMSolverMultistepScheduler keeps x_t as we do. Their sigmas are float32, ours float64.
'linspace' spacing: diffusers interpolates sigma linearly between steps, the course log-linearly; we hand our sampler
diffusers' sigmas. DPMSolverMultistepScheduler's whole-step spacings space n + 1 points and drop the last (not DDIM's
spacings): we hand our sampler its timesteps. Its Karras option rounds the timesteps it feeds the model but keeps the
unrounded sigmas; the loop test for it uses a model that does not read t."""
import math

import numpy as np
import pytest
import torch

diffusers = pytest.importorskip("diffusers")
from diffusers import DPMSolverMultistepScheduler, EulerAncestralDiscreteScheduler, EulerDiscreteScheduler, HeunDiscreteScheduler

from diffusion_course.diffusion import ddpm
from diffusion_course.diffusion.continuous import EDM, DiscreteVP, Flow, GaussianMixture, VP, karras_sigmas
from diffusion_course.diffusion.ddim import DDIMSampler
from diffusion_course.diffusion.samplers import (SAMPLERS, DPMSolverSampler, EDMSampler, EulerAncestralSampler, EulerSampler, HeunSampler,
                                                 make_sampler, sample)

SCHED = ddpm.Schedule.linear(1000)
DVP = DiscreteVP(SCHED)
PRED = {'eps': 'epsilon', 'v': 'v_prediction', 'x0': 'sample'}
ANGLES = torch.arange(8) * (2 * math.pi / 8)
MEANS = 0.8 * torch.stack([ANGLES.cos(), ANGLES.sin()], 1)
PARITY = {}  # worst errors, printed by the last test


def _diffusers(cls, spacing='linspace', prediction='eps', karras=False, **kw):
    "A diffusers scheduler on our float64 alpha_bar (its own float32 cumprod drifts by ~1e-6)."
    if karras: kw['use_karras_sigmas'] = True
    ref = cls(num_train_timesteps=1000, trained_betas=SCHED.beta.numpy(), timestep_spacing=spacing, prediction_type=PRED[prediction], **kw)
    ref.alphas_cumprod = SCHED.alpha_bar.clone()
    return ref


def _ours(cls, ref, spacing, prediction, karras, **kw):
    "Our sampler on diffusers' grid: whole steps and Karras grids by our own grid function, 'linspace' from diffusers' sigmas."
    if karras: s = cls(DVP, ref.num_inference_steps, prediction, spacing='karras', **kw)
    elif spacing == 'linspace':  # fractional steps: diffusers' own sigmas, then our steps for them
        sig = (torch.cat([ref.sigmas[:1], ref.sigmas[1:-1:2]]) if cls is HeunSampler else ref.sigmas[:-1]).double()
        s = cls(DVP, prediction=prediction, times=[float(t) for t in DVP.t_from_sigma(sig)] + [-1.0], **kw)
    else: s = cls(DVP, ref.num_inference_steps, prediction, spacing=spacing, **kw)
    grid = torch.tensor(s.sigmas, dtype=torch.float64)
    want = ref.sigmas.double() if cls is not HeunSampler else torch.cat([ref.sigmas[:1], ref.sigmas[1::2]]).double()
    assert torch.allclose(grid, want, rtol=2e-6), (grid[:4], want[:4])  # the same noise levels, to float32
    return s


def _record(key, ours, theirs):
    "max |ours - theirs| relative to max(1, max |theirs|), kept for the summary."
    err = ((ours - theirs).abs().max() / theirs.abs().max().clamp(min=1)).item()
    PARITY[key] = max(PARITY.get(key, 0.0), err)
    return err


CASES = [('linspace', False), ('leading', False), ('trailing', False), ('linspace', True)]


@pytest.mark.parametrize("cls,ref_cls", [(EulerSampler, EulerDiscreteScheduler), (HeunSampler, HeunDiscreteScheduler)])
@pytest.mark.parametrize("spacing,karras", CASES)
@pytest.mark.parametrize("prediction", ['eps', 'v'])
@pytest.mark.parametrize("n", [4, 10])
def test_euler_and_heun_steps_match_diffusers(cls, ref_cls, spacing, karras, prediction, n):
    "Every step fed the same (x, model output) on both sides; Heun's corrections use what each side kept from its prediction."
    ref = _diffusers(ref_cls, spacing, prediction, karras)
    ref.set_timesteps(n)
    ours = _ours(cls, ref, spacing, prediction, karras)
    assert len(ours.timesteps()) == len(ref.timesteps)
    name = cls.__name__.replace('Sampler', '')
    g = torch.Generator().manual_seed(0)
    for i, (t, t_prev) in enumerate(ours.timesteps()):  # diffusers' Heun: sigmas s0, s1, s1, s2, s2, ..., 0: sigmas[i + 1] is where step i lands
        x, out = torch.randn(3, 2, 4, 4, generator=g), torch.randn(3, 2, 4, 4, generator=g)
        s, s_next = ref.sigmas[i].item(), ref.sigmas[i + 1].item()
        x_ve = x * (s ** 2 + 1) ** 0.5
        ref.scale_model_input(x_ve, ref.timesteps[i])
        r = ref.step(out, ref.timesteps[i], x_ve)
        x_prev, x0_hat = ours.step(out, x, t, t_prev)
        assert _record(f'{name} step', x_prev, r.prev_sample / (s_next ** 2 + 1) ** 0.5) < 1e-5
        assert _record(f'{name} step x0_hat', x0_hat, r.pred_original_sample) < 1e-5


def _fake_model(x, t, y=None):
    "A smooth model output that depends on x and t (fed float32 times)."
    return 0.5 * torch.tanh(x) + 0.3 * torch.sin(t.float() / 300).reshape(-1, 1, 1, 1)


def _fake_model_no_t(x, t, y=None): return 0.5 * torch.tanh(x) - 0.1 * x


def _run_diffusers_ve(ref, model, x_T, sigma0):
    "diffusers' loop for the VE-state schedulers, started from our starting point."
    x = x_T * (sigma0 ** 2 + 1) ** 0.5
    for t in ref.timesteps:
        x = ref.step(model(ref.scale_model_input(x, t), t.expand(len(x))), t, x).prev_sample
    return x


@pytest.mark.parametrize("cls,ref_cls", [(EulerSampler, EulerDiscreteScheduler), (HeunSampler, HeunDiscreteScheduler)])
@pytest.mark.parametrize("spacing,karras", CASES)
@pytest.mark.parametrize("prediction", ['eps', 'v'])
def test_euler_and_heun_loops_match_diffusers(cls, ref_cls, spacing, karras, prediction):
    ref = _diffusers(ref_cls, spacing, prediction, karras)
    ref.set_timesteps(8)
    ours = _ours(cls, ref, spacing, prediction, karras)
    model = _fake_model_no_t if spacing == 'linspace' and not karras else _fake_model  # 'linspace': the two interpolations give other t
    if model is _fake_model: assert np.allclose([t for t, _ in ours.timesteps()], ref.timesteps.numpy(), rtol=0, atol=2e-3)
    x_T = torch.randn(4, 2, 4, 4, generator=torch.Generator().manual_seed(1))
    a, b = sample(model, ours, x_T=x_T), _run_diffusers_ve(ref, model, x_T, ref.sigmas[0].item())
    assert ours.nfe == len(ref.timesteps) == ours.n_evals
    assert _record(f"{cls.__name__.replace('Sampler', '')} loop", a, b) < 1e-5


@pytest.mark.parametrize("spacing,karras", [('linspace', False), ('leading', False), ('trailing', False), ('linspace', True)])
@pytest.mark.parametrize("prediction", ['eps', 'v', 'x0'])
@pytest.mark.parametrize("n", [5, 12, 20])
def test_dpm_solver_step_and_loop_match_diffusers(spacing, karras, prediction, n):
    ref = _diffusers(DPMSolverMultistepScheduler, spacing, prediction, karras)
    ref.set_timesteps(n)
    # its whole-step spacings space n + 1 points and drop the last, unlike DDIM's: its timesteps are our grid
    ours = DPMSolverSampler(DVP, n, prediction, spacing='karras') if karras else DPMSolverSampler(DVP, prediction=prediction, times=ref.timesteps.tolist() + [-1])
    assert torch.allclose(torch.tensor(ours.sigmas, dtype=torch.float64), ref.sigmas.double(), rtol=2e-6)
    if not karras: assert [t for t, _ in ours.timesteps()] == ref.timesteps.tolist()
    g = torch.Generator().manual_seed(2)
    for i, (t, t_prev) in enumerate(ours.timesteps()):  # one step at a time, the same inputs to both (the memory builds up alike)
        x, out = torch.randn(3, 2, 4, 4, generator=g), torch.randn(3, 2, 4, 4, generator=g)
        r = ref.step(out, ref.timesteps[i], x).prev_sample
        assert _record('DPMSolver++(2M) step', ours.step(out, x, t, t_prev)[0], r) < 1e-5, i
    model = _fake_model_no_t if karras else _fake_model
    ref.set_timesteps(n)
    x_T = torch.randn(4, 2, 4, 4, generator=torch.Generator().manual_seed(3))
    x = x_T.clone()
    for t in ref.timesteps: x = ref.step(model(x, t.expand(len(x))), t, x).prev_sample
    assert _record('DPMSolver++(2M) loop', sample(model, ours, x_T=x_T), x) < 1e-5


@pytest.mark.parametrize("spacing", ['leading', 'trailing'])
def test_euler_ancestral_matches_diffusers_with_the_same_noise(spacing):
    ref = _diffusers(EulerAncestralDiscreteScheduler, spacing, 'eps')
    ref.set_timesteps(10)
    ours = EulerAncestralSampler(DVP, 10, eta=1.0, spacing=spacing)
    x_T = torch.randn(4, 2, 4, 4, generator=torch.Generator().manual_seed(4))
    x = x_T * (ref.sigmas[0].item() ** 2 + 1) ** 0.5
    g = torch.Generator().manual_seed(5)
    for t in ref.timesteps: x = ref.step(_fake_model(ref.scale_model_input(x, t), t.expand(len(x))), t, x, generator=g).prev_sample
    a = sample(_fake_model, ours, x_T=x_T, generator=torch.Generator().manual_seed(5))
    assert _record('EulerAncestral loop', a, x) < 1e-5


@pytest.mark.parametrize("spacing", ['leading', 'trailing', 'linspace'])
@pytest.mark.parametrize("eta", [0.0, 1.0])
@pytest.mark.parametrize("prediction", ['eps', 'x0', 'v'])
def test_euler_and_euler_ancestral_are_ddim(spacing, eta, prediction):
    toy = GaussianMixture(MEANS, 0.05)
    x_T = torch.randn(300, 2, generator=torch.Generator().manual_seed(6), dtype=torch.float64)
    ddim = ddpm.sample_loop(toy.model(DVP, prediction), DDIMSampler(SCHED, 10, eta=eta, spacing=spacing, prediction=prediction),
                            x_T=x_T, generator=torch.Generator().manual_seed(7))
    s = EulerAncestralSampler(DVP, 10, prediction, eta=eta, spacing=spacing) if eta else EulerSampler(DVP, 10, prediction, spacing=spacing)
    ours = sample(toy.model(DVP, prediction), s, x_T=x_T, generator=torch.Generator().manual_seed(7))
    assert (ours - ddim).abs().max() < 1e-10


def test_edm_without_churn_is_heun_and_with_churn_raises_the_noise():
    edm, toy = EDM(), GaussianMixture(MEANS, 0.1)
    x_T = torch.randn(200, 2, generator=torch.Generator().manual_seed(8), dtype=torch.float64)
    h, e0 = HeunSampler(edm, 12, 'x0'), EDMSampler(edm, 12, 'x0', churn=0)
    assert e0.timesteps() == h.timesteps() and torch.equal(sample(toy.model(edm, 'x0'), h, x_T=x_T), sample(toy.model(edm, 'x0'), e0, x_T=x_T))
    e = EDMSampler(edm, 12, 'x0', churn=40, s_tmin=0.05, s_tmax=50)
    gamma = min(40 / 12, 2 ** 0.5 - 1)
    for m in e.plan:
        if m.kind == 'predict':
            s = e.sigmas[m.i]
            assert math.isclose(e.sigma_of(m.t), s * (1 + gamma) if 0.05 <= s <= 50 else s, rel_tol=1e-12)
    assert e.init_std == edm.prior_std(e.plan[0].t) and e.n_evals == 23
    a, b = (sample(toy.model(edm, 'x0'), e, x_T=x_T, generator=torch.Generator().manual_seed(k)) for k in (0, 1))
    assert (a - b).norm(dim=1).mean() > 1e-3 and e.nfe == 23


def _orders(process, prediction, spacing, Ns, n_ref, std=0.1, names=('euler', 'heun', 'dpmpp_2m')):
    toy = GaussianMixture(MEANS, std)
    model = toy.model(process, prediction)
    x_T = torch.randn(128, 2, generator=torch.Generator().manual_seed(9), dtype=torch.float64)
    ref = sample(model, HeunSampler(process, n_ref, prediction, spacing=spacing), x_T=x_T)
    slopes = {}
    for name in names:
        errs, evals = [], []
        for N in Ns:
            s = make_sampler(name, process, N, prediction, spacing=spacing)
            errs.append((sample(model, s, x_T=x_T) - ref).norm(dim=1).pow(2).mean().sqrt().item()); evals.append(s.nfe)
        slopes[name] = -np.polyfit(np.log(evals), np.log(errs), 1)[0]
    return slopes


@pytest.mark.parametrize("name,prediction,spacing", [('edm', 'edm', 'karras'), ('flow', 'velocity', 'uniform'), ('vp_linear', 'v', 'log'),
                                                     ('discrete', 'eps', 'karras')])
def test_orders_of_accuracy_on_other_processes(name, prediction, spacing):
    process = {'edm': EDM(), 'flow': Flow(), 'vp_linear': VP('linear'), 'discrete': DVP}[name]
    slopes = _orders(process, prediction, spacing, [16, 32, 64], 1024)
    print(name, {k: round(v, 2) for k, v in slopes.items()})
    assert 0.85 < slopes['euler'] < 1.25 and 1.75 < slopes['heun'] < 2.6 and 1.75 < slopes['dpmpp_2m'] < 2.6, slopes


def test_counting_memory_and_the_old_loop():
    toy = GaussianMixture(MEANS, 0.1)
    x_T = torch.randn(50, 2, generator=torch.Generator().manual_seed(10), dtype=torch.float64)
    for name in SAMPLERS:
        s = make_sampler(name, DVP, 6, spacing='trailing')
        whole = all(isinstance(t, int) for pair in s.timesteps() for t in pair)  # whole steps stay integers
        assert whole == (name != 'edm'), name  # EDM's raised noise levels fall between steps
        loop = ddpm.sample_loop if whole else sample  # lesson 10's loop casts times to integers: only for whole steps
        a = loop(toy.model(DVP), s, x_T=x_T, generator=torch.Generator().manual_seed(0))
        b = loop(toy.model(DVP), s, x_T=x_T, generator=torch.Generator().manual_seed(0))  # a second run: the memory restarts
        c = sample(toy.model(DVP), s, x_T=x_T, generator=torch.Generator().manual_seed(0))
        assert torch.equal(a, b) and torch.equal(a, c), name
        if name != 'ddim': assert s.nfe == s.n_evals == len(s.timesteps())
    assert make_sampler('heun', DVP, 6).n_evals == 11 and make_sampler('heun', Flow(), 6, 'velocity').n_evals == 10  # sigma = inf starts with Euler


def test_contract_errors_and_options():
    heun, dpm = HeunSampler(DVP, 5), DPMSolverSampler(DVP, 5)
    x, out = torch.randn(2, 3), torch.randn(2, 3)
    with pytest.raises(ValueError, match='not a step'): heun.step(out, x, 123.5, 100)
    with pytest.raises(ValueError, match='in order'): heun.step(out, x, *heun.timesteps()[1])  # a correction before its prediction
    dpm.step(out, x, *dpm.timesteps()[0])
    with pytest.raises(ValueError, match='in order'): dpm.step(out, x, *dpm.timesteps()[2])
    with pytest.raises(ValueError, match='prediction'): EulerSampler(DVP, 5, 'noise')
    with pytest.raises(ValueError, match='strictly decrease'): EulerSampler(DVP, times=[500.0, 600.0, -1.0])
    with pytest.raises(ValueError, match='at least 2'): EulerSampler(DVP, times=[500.0])
    with pytest.raises(ValueError, match='eta'): EulerAncestralSampler(DVP, 5, eta=-1)
    with pytest.raises(ValueError, match='churn'): EDMSampler(DVP, 5, churn=-1)
    with pytest.raises(ValueError, match='unknown sampler'): make_sampler('plms', DVP)
    with pytest.raises(ValueError, match='shape or x_T'): sample(lambda x, t, y: x, heun)
    big = lambda x, t, y=None: torch.cat([torch.full_like(x, 50.0), torch.zeros_like(x)], 1)  # x0_hat far outside [-1, 1], plus a variance half
    s = EulerSampler(DVP, 5, 'x0', clip_x0=True)
    x0 = sample(big, s, (4, 1, 2, 2))
    assert x0.shape == (4, 1, 2, 2) and torch.allclose(x0, torch.ones_like(x0))
    frames = sample(big, s, (4, 1, 2, 2), keep_x0=True, keep_every=2)[1]
    assert len(frames) == 3 and frames[0].shape == (4, 1, 2, 2)
    assert isinstance(make_sampler('ddim', DVP, 5), DDIMSampler) and type(make_sampler('ddim', Flow(), 5, 'velocity')) is EulerSampler
    assert type(make_sampler('ddim', EDM(), 5, eta=1.0)) is EulerAncestralSampler


def test_zz_print_parity_errors():
    "The worst parity errors of this file's diffusers tests (run them first: pytest -s prints this)."
    for k, v in sorted(PARITY.items()): print(f"{k:24s} max |ours - diffusers| / max(1, max |diffusers|) = {v:.2e}")
