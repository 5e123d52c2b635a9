"Interop beyond the lesson (nbs/80_interop.ipynb): the Hub's upload and download paths offline, every EMA form, the adapter's edges, DiT export refusals."
import dataclasses, shutil, sys
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

from diffusion_course import interop
from diffusion_course.backbones.dit import DiT, DiTConfig, from_diffusers
from diffusion_course.registry import build, list_models

hh = pytest.importorskip('huggingface_hub')

def _random(model, scale=0.02):
    with torch.no_grad():
        for p in model.parameters():
            if p.requires_grad: p.add_(scale * torch.randn_like(p))
    return model

def _same(a, b): return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)

@pytest.fixture
def fake_hub(tmp_path, monkeypatch):
    "The Hub as a local folder: push_to_hub's create_repo/upload_folder and from_pretrained's downloads, no network."
    remote = tmp_path / 'remote'
    calls = []
    def create_repo(self, repo_id, **kw): calls.append(('create_repo', repo_id, kw)); return SimpleNamespace(repo_id=repo_id)
    def upload_folder(self, repo_id, folder_path, **kw):
        calls.append(('upload_folder', repo_id, kw)); shutil.copytree(folder_path, remote / repo_id, dirs_exist_ok=True)
        return f'https://huggingface.co/{repo_id}/commit/0'
    def download(repo_id, filename, **kw):
        calls.append(('download', repo_id, filename))
        p = remote / repo_id / filename
        if not p.exists(): raise hh.errors.EntryNotFoundError(f'{filename} not in {repo_id}')
        return str(p)
    monkeypatch.setattr(hh.HfApi, 'create_repo', create_repo)
    monkeypatch.setattr(hh.HfApi, 'upload_folder', upload_folder)
    import huggingface_hub.hub_mixin as mixin
    monkeypatch.setattr(mixin, 'hf_hub_download', download)
    monkeypatch.setattr(hh, 'hf_hub_download', download)
    return SimpleNamespace(remote=remote, calls=calls)

@pytest.mark.parametrize('name', ['UNet-T', 'DiT-T/2', 'U-ViT-T/2'])
def test_push_to_hub_then_from_pretrained_by_repo_id(fake_hub, name):
    m = _random(build(name, learn_sigma=True))
    url = interop.push_to_hub(m, 'me/tiny', commit_message='test')
    assert url.startswith('https://huggingface.co/me/tiny')
    assert sorted(p.name for p in (fake_hub.remote / 'me/tiny').iterdir()) == ['README.md', 'config.json', 'model.safetensors']
    assert [c[0] for c in fake_hub.calls[:2]] == ['create_repo', 'upload_folder'] and fake_hub.calls[1][2]['commit_message'] == 'test'
    back = interop.from_pretrained('me/tiny')
    assert type(back) is type(m) and back.config == m.config and back.preset == name and _same(back.state_dict(), m.state_dict())
    assert ('download', 'me/tiny', 'model.safetensors') in fake_hub.calls
    card = (fake_hub.remote / 'me/tiny' / 'README.md').read_text()
    assert 'diffusion_course' in card

def test_saved_weights_carry_the_backbones_own_names(tmp_path):
    from safetensors.torch import load_file
    m = build('DiT-T/4')
    interop.save_pretrained(m, tmp_path / 'f')
    assert set(load_file(str(tmp_path / 'f' / 'model.safetensors'))) == set(m.state_dict())  # no 'model.' wrapper prefix

def test_from_pretrained_refuses_a_foreign_folder(tmp_path):
    (tmp_path / 'config.json').write_text('{"hidden_size": 8}')
    with pytest.raises(ValueError, match='save_pretrained'): interop.from_pretrained(tmp_path)

def test_weights_that_do_not_fit_are_refused(tmp_path):
    interop.save_pretrained(build('DiT-T/4'), tmp_path / 'f')
    from safetensors.torch import load_file, save_file
    sd = load_file(str(tmp_path / 'f' / 'model.safetensors')); sd.pop(next(iter(sd)))
    save_file(sd, str(tmp_path / 'f' / 'model.safetensors'))
    with pytest.raises(RuntimeError, match='Missing'): interop.from_pretrained(tmp_path / 'f')

def test_without_huggingface_hub_the_message_names_the_extra(monkeypatch):
    monkeypatch.setattr(interop, '_HUB_CLASS', None)
    monkeypatch.setitem(sys.modules, 'huggingface_hub', None)
    with pytest.raises(ImportError, match=r'pip install "diffusion_course\[hub\]"'): interop.save_pretrained(build('UNet-T'), 'x')

def test_ema_state_dict_from_every_form():
    from ema_pytorch import EMA as _EMA
    from diffusion_course.training import EMA
    model = _random(build('UNet-T'))
    cb = EMA(beta=0.9); cb.setup(SimpleNamespace(model=model))
    cb.ema.update(); cb.ema.update()  # the first updates copy the weights
    with torch.no_grad():
        for p in model.parameters(): p.add_(1.0)
    cb.ema.update()  # now the average lags behind the moved weights
    want = cb.ema.ema_model.state_dict()
    saved = cb.ema.state_dict()
    assert any(k.startswith('ema_model.') for k in saved) and {'initted', 'step'} <= set(saved)
    for form in (cb, cb.ema, cb.ema.ema_model, saved, want):
        got = interop.ema_state_dict(form)
        assert _same(got, want)
    assert not _same(want, model.state_dict())
    assert isinstance(cb.ema, _EMA)

def test_adapter_timesteps_and_outputs():
    m = _random(build('DiT-T/4', learn_sigma=True)).eval()
    c = m.config
    x, y = torch.randn(3, c.in_channels, c.input_size, c.input_size), torch.tensor([1, 2, 3])
    a = interop.DiffusersAdapter(m)
    with torch.no_grad():
        ref = m(x, torch.full((3,), 500), y)
        for t in (500, torch.tensor(500), torch.tensor([500]), torch.full((3,), 500), torch.tensor(500.0)):
            assert torch.equal(a(x, t, y).sample, ref)
        assert torch.equal(a(x, 500, y, return_dict=False)[0], ref)
        assert interop.DiffusersAdapter(m, variance=False)(x, 500, y).sample.shape[1] == c.in_channels
    with pytest.raises(ValueError, match='integer steps'): a(x, torch.tensor(500.5), y)
    assert a.config.sample_size == c.input_size and a.config.out_channels == 2 * c.in_channels and a.dtype == torch.float32

def test_diffusers_scheduler_rejects_unknown_kind():
    from diffusion_course.diffusion.ddpm import Schedule
    with pytest.raises(ValueError, match='ddim'): interop.diffusers_scheduler(Schedule.linear(100), 'euler')

_DIT = DiTConfig(in_channels=4, input_size=16, patch=2, dim=64, depth=2, heads=2, num_classes=10, freq_shift=1.0, mlp_norm_eps=1e-5)

@pytest.mark.parametrize('learn_sigma', [False, True])
def test_dit_round_trip_through_diffusers(learn_sigma):
    pytest.importorskip('diffusers')
    cfg = dataclasses.replace(_DIT, learn_sigma=learn_sigma, class_dropout_prob=0.25)
    dit = _random(DiT(cfg), 0.1).eval()
    dm = interop.to_diffusers(dit).eval()
    x, t, y = torch.randn(2, 4, 16, 16), torch.tensor([3, 900]), torch.tensor([4, 10])
    with torch.no_grad(): assert torch.allclose(dm(x, timestep=t, class_labels=y).sample, dit(x, t, y), atol=1e-5)
    back = from_diffusers(dm)
    assert back.config == cfg and _same(back.state_dict(), dit.state_dict())

@pytest.mark.parametrize('change,why', [(dict(freq_shift=0.0), 'freq_shift'), (dict(block='adaln'), 'block'), (dict(num_classes=0), 'unconditional'),
                                        (dict(multi_hot=True), 'multi-hot'), (dict(mlp_ratio=2.0), 'mlp_ratio')])
def test_dit_export_refuses_what_diffusers_cannot_hold(change, why):
    pytest.importorskip('diffusers')
    with pytest.raises(ValueError, match=why): interop.to_diffusers(DiT(dataclasses.replace(_DIT, **change)))
