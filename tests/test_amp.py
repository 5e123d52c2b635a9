"Mixed precision that fits the device: the choice (faked devices), and fp16 with a GradScaler trained on the CPU (scaling, unscale before clipping, accumulation, overflow, checkpoint and exact resume)."
import functools

import pytest
import torch
from torch import nn

import diffusion_course.core as core
import diffusion_course.training as training
from diffusion_course.core import autocast, bf16_pays, mixed_precision, seed_everything
from diffusion_course.data import ImageData
from diffusion_course.diffusion import ddpm
from diffusion_course.training import Checkpoint, Trainer, load_checkpoint


class TinyDenoiser(nn.Module):
    def __init__(self, width=8, T=100):
        super().__init__()
        self.inp, self.t_embed = nn.Conv2d(1, width, 3, padding=1), nn.Embedding(T, width)
        self.out = nn.Sequential(nn.SiLU(), nn.Conv2d(width, 1, 3, padding=1))
    def forward(self, x, t, y=None): return self.out(self.inp(x) + self.t_embed(t)[:, :, None, None])


g = torch.Generator().manual_seed(0)
DATA = ImageData(torch.randint(0, 256, (256, 1, 8, 8), dtype=torch.uint8, generator=g), torch.arange(256) % 10, name='toy')
LOSS = functools.partial(ddpm.l_simple, sched=ddpm.Schedule.linear(100))
def plain_loss(model, x0, y):  # no randomness: the same batch gives the same loss however it is split
    return (model(x0, torch.zeros(len(x0), dtype=torch.long)) - x0).pow(2).mean()


# the choice

@pytest.mark.parametrize('cap, want', [((6, 1), torch.float16), ((7, 0), torch.float16), ((7, 5), torch.float16),  # P100, V100, T4
                                       ((8, 0), torch.bfloat16), ((8, 6), torch.bfloat16), ((9, 0), torch.bfloat16)])  # A100, RTX 30xx, H100
def test_cuda_choice(cap, want, monkeypatch):
    monkeypatch.setattr(torch.cuda, 'get_device_capability', lambda device=None: cap)
    monkeypatch.setattr(torch.cuda, 'is_bf16_supported', lambda *a, **k: True)  # what torch says on a T4 (emulated bf16): not the rule
    assert mixed_precision('cuda') == mixed_precision(torch.device('cuda', 0)) == want
    assert bf16_pays('cuda') == (want == torch.bfloat16)
    assert mixed_precision('cuda', enabled=False) is None


@pytest.mark.parametrize('native', [True, False])
def test_cpu_and_other_choice(native, monkeypatch):
    monkeypatch.setattr(core, 'cpu_has_bf16', lambda: native)
    assert mixed_precision('cpu') == (torch.bfloat16 if native else None) and bf16_pays('cpu') == native
    assert mixed_precision('cpu', enabled=False) is None and mixed_precision('mps') is None and mixed_precision('meta') is None


@pytest.mark.parametrize('native', [True, False])
def test_trainer_takes_the_choice(native, monkeypatch):
    monkeypatch.setattr(core, 'cpu_has_bf16', lambda: native)
    t = Trainer(TinyDenoiser(), LOSS, DATA, steps=1, batch_size=8, device='cpu')
    assert t.amp_dtype == (torch.bfloat16 if native else None) and t.scaler is None  # bf16 needs no scaler
    assert Trainer(TinyDenoiser(), LOSS, DATA, steps=1, batch_size=8, device='cpu', bf16=False).amp_dtype is None  # the user's switch


def test_autocast_takes_a_dtype():
    lin = nn.Linear(4, 4)
    for arg, want in [(True, torch.bfloat16), (torch.float16, torch.float16), (torch.bfloat16, torch.bfloat16), (False, torch.float32), (None, torch.float32)]:
        with autocast('cpu', arg): assert lin(torch.randn(2, 4)).dtype == want, arg


def test_sampling_uses_the_dtype_given():
    from diffusion_course.cli import make_sample_fn
    seen = []
    def model(x, t, y=None):
        seen.append(torch.get_autocast_dtype('cpu') if torch.is_autocast_enabled('cpu') else None)
        return torch.zeros_like(x)
    for arg, want in [(torch.float16, torch.float16), (True, torch.bfloat16), (False, None)]:
        seen.clear()
        out = make_sample_fn(ddpm.Schedule.linear(100), 'ddim', 3, bf16=arg)(model, torch.randn(2, 1, 4, 4), None)
        assert out.dtype == torch.float32 and seen and set(seen) == {want}, (arg, seen)


# fp16 with a GradScaler, on the CPU

@pytest.fixture
def fp16(monkeypatch):
    "Trainers built while this fixture is active train as on a T4: fp16 autocast and a GradScaler (CPU autocast has fp16)."
    monkeypatch.setattr(training, 'mixed_precision', lambda device, enabled=True: torch.float16 if enabled else None)
    def with_scale(init_scale=2.0 ** 16):
        monkeypatch.setattr(torch.amp, 'GradScaler', functools.partial(REAL_SCALER, init_scale=init_scale))
    return with_scale

REAL_SCALER = torch.amp.GradScaler


def make(steps=6, accum=1, batch_size=16, loss=LOSS, grad_clip=1.0, callbacks=(), seed=0):
    seed_everything(seed)
    return Trainer(TinyDenoiser(), loss, DATA, steps=steps, batch_size=batch_size, lr=3e-3, warmup=0, accum=accum, grad_clip=grad_clip,
                   device='cpu', seed=seed, callbacks=list(callbacks))


def test_fp16_trainer_scales_every_micro_batch_and_unscales_once(fp16, monkeypatch):
    t = make(steps=4, accum=2)
    assert t.amp_dtype == torch.float16 and isinstance(t.scaler, REAL_SCALER) and t.scaler.is_enabled()
    calls = {'scale': 0, 'unscale_': 0, 'step': 0, 'update': 0}
    for name in calls:
        real = getattr(t.scaler, name)
        def spy(*a, _real=real, _name=name, **k): calls[_name] += 1; return _real(*a, **k)
        monkeypatch.setattr(t.scaler, name, spy)
    w0 = [p.detach().clone() for p in t.model.parameters()]
    t.fit()
    assert calls == {'scale': 8, 'unscale_': 4, 'step': 4, 'update': 4}
    assert all(not torch.equal(a, b) for a, b in zip(w0, t.model.parameters()))  # it trained


def test_fp16_clips_the_true_gradient(fp16):
    "The norm the clip sees is the unscaled one: the fp32 gradient's norm, not 2^16 times it."
    fp16()
    a = make(loss=plain_loss); a.train_step()
    with pytest.MonkeyPatch.context() as m:
        m.setattr(training, 'mixed_precision', lambda device, enabled=True: None)
        b = make(loss=plain_loss); b.train_step()
    assert b.scaler is None and a.scaler.get_scale() == 2.0 ** 16
    assert abs(a.grad_norm.item() / b.grad_norm.item() - 1) < 0.02, (a.grad_norm, b.grad_norm)


def test_fp16_accumulation_matches_one_big_batch(fp16):
    one, two = make(loss=plain_loss, batch_size=32), make(loss=plain_loss, batch_size=16, accum=2)
    one.train_step(); two.train_step()
    assert abs(one.grad_norm.item() / two.grad_norm.item() - 1) < 0.02, (one.grad_norm, two.grad_norm)


def test_fp16_overflow_skips_the_step_and_halves_the_scale(fp16):
    fp16(2.0 ** 40)  # far too large: the scaled gradients overflow fp16
    t = make(steps=60)
    w0 = [p.detach().clone() for p in t.model.parameters()]
    assert t.train_step() > 0  # no FloatingPointError: an overflow is the scaler's to handle
    assert t.scaler.get_scale() == 2.0 ** 39 and all(torch.equal(a, b) for a, b in zip(w0, t.model.parameters()))  # skipped
    t.fit()
    assert t.scaler.get_scale() < 2.0 ** 30 and all(not torch.equal(a, b) for a, b in zip(w0, t.model.parameters()))  # then trained


def test_fp16_nan_gradients_still_stop_the_run(fp16):
    def nan_grad(model, x0, y):
        w = model.out[1].weight.sum()
        return LOSS(model, x0, y) + 0.0 * torch.sqrt(w - w.detach())  # finite loss, NaN gradient at every scale
    t = make(steps=40, loss=nan_grad)
    with pytest.raises(FloatingPointError, match="non-finite.*loss scale had fallen below 1"): t.fit()
    assert 17 <= t.step <= 18  # 2^16 halved to below 1: 17 skipped steps, then the stop


def test_fp16_checkpoint_round_trip_and_exact_resume(fp16, tmp_path):
    fp16(2.0 ** 40)  # the first steps overflow, so the scale a resume starts from decides which steps are taken
    full = make(steps=40, callbacks=[Checkpoint(tmp_path / 'full', every=10)]).fit()
    part = make(steps=40, callbacks=[Checkpoint(tmp_path / 'part', every=10)])
    part.fit(until=10)
    state = load_checkpoint(tmp_path / 'part')['state']
    assert state['scaler'] == part.scaler.state_dict() and state['scaler']['scale'] < 2.0 ** 40
    resumed = make(steps=40, callbacks=[Checkpoint(tmp_path / 'part', every=10)])
    assert resumed.scaler.get_scale() == 2.0 ** 40  # fresh
    resumed.resume(tmp_path / 'part')
    assert resumed.scaler.state_dict() == state['scaler']
    resumed.fit()
    assert resumed.scaler.state_dict() == full.scaler.state_dict()
    for p, q in zip(full.model.parameters(), resumed.model.parameters()): assert torch.equal(p, q)


def test_resume_across_precisions(fp16, tmp_path, monkeypatch):
    "A bf16/fp32 checkpoint resumes on a T4 with a fresh scaler; a T4's checkpoint resumes where there is no scaler."
    fp16()
    a = make(steps=4, callbacks=[Checkpoint(tmp_path / 'fp16', every=2)]); a.fit(until=2)
    with pytest.MonkeyPatch.context() as m:
        m.setattr(training, 'mixed_precision', lambda device, enabled=True: None)
        b = make(steps=4, callbacks=[Checkpoint(tmp_path / 'fp32', every=2)]); b.fit(until=2)
        assert 'scaler' not in load_checkpoint(tmp_path / 'fp32')['state']
        c = make(steps=4, callbacks=[Checkpoint(tmp_path / 'fp16', every=2)]); c.resume(tmp_path / 'fp16'); c.fit()
        assert c.scaler is None and c.step == 4
    d = make(steps=4, callbacks=[Checkpoint(tmp_path / 'fp32', every=2)]); d.resume(tmp_path / 'fp32')
    assert d.scaler.get_scale() == 2.0 ** 16; d.fit()
    assert d.step == 4
