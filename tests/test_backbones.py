"The checks every backbone passes: each tiny preset of every registered family (DiffiT and XSwin join once registered)."
import dataclasses

import pytest
import torch

from diffusion_course.registry import build, from_spec, get_config, list_models, spec

TINY = list_models(tiny=True)

def _inputs(cfg, B=3, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(B, cfg.in_channels, cfg.input_size, cfg.input_size, generator=g)
    t = torch.randint(0, 1000, (B,), generator=g)
    K = cfg.num_classes
    if getattr(cfg, 'multi_hot', False):
        y = torch.randint(0, 2, (B, K), generator=g).float(); y[-1] = -1  # the last row is the null condition
    else:
        y = torch.randint(0, K, (B,), generator=g); y[-1] = K
    return x, t, (y if K else None)

def test_tiny_presets_cover_the_families():
    assert {'UNet-T', 'DiT-T/2', 'U-ViT-T/2'} <= set(TINY)
    assert {'DiT-T/4-adaLN', 'DiT-T/4-cross', 'DiT-T/4-in-context'} <= set(TINY)  # all four DiT block designs

@pytest.mark.parametrize('name', TINY)
@pytest.mark.parametrize('learn_sigma', [False, True])
def test_output_shape(name, learn_sigma):
    model = build(name, learn_sigma=learn_sigma).eval()
    x, t, y = _inputs(model.config)
    with torch.no_grad(): out = model(x, t, y)
    assert out.shape == (x.shape[0], x.shape[1] * (2 if learn_sigma else 1), *x.shape[2:])
    assert torch.isfinite(out).all()

@pytest.mark.parametrize('name', TINY)
def test_gradients_reach_every_parameter(name):
    torch.manual_seed(0)
    model = build(name, learn_sigma=True)
    with torch.no_grad():  # leave the zero initialisation (adaLN-Zero, zero heads), which blocks gradients at step 0
        for p in model.parameters():
            if p.requires_grad: p.add_(0.02 * torch.randn_like(p))
    x, t, y = _inputs(model.config)
    model(x, t, y).square().mean().backward()
    missing = [n for n, p in model.named_parameters() if p.requires_grad and (p.grad is None or not p.grad.abs().sum() > 0)]
    assert not missing, f'no gradient reaches {missing}'

@pytest.mark.parametrize('name', TINY)
def test_eval_is_deterministic_and_batch_independent(name):
    torch.manual_seed(0)
    model = build(name).eval()
    x, t, y = _inputs(model.config)
    with torch.no_grad():
        a, b = model(x, t, y), model(x, t, y)
        one = model(x[:1], t[:1], y[:1] if y is not None else None)
    assert torch.equal(a, b)
    assert torch.allclose(a[:1], one, atol=1e-5)  # no BatchNorm: an image's output ignores the rest of the batch

@pytest.mark.parametrize('name', TINY)
def test_cfg_at_scale_one_is_conditional(name):
    torch.manual_seed(0)
    model = build(name, learn_sigma=True)
    with torch.no_grad():
        for p in model.parameters():
            if p.requires_grad: p.add_(0.02 * torch.randn_like(p))
    model.eval()
    x, t, y = _inputs(model.config)
    if y is None: pytest.skip('unconditional preset')
    with torch.no_grad():
        cond, guided = model(x, t, y), model.forward_with_cfg(x, t, y, 1.0)
        uncond, g3 = model(x, t, None), model.forward_with_cfg(x, t, y, 3.0)
    assert torch.allclose(guided, cond, atol=1e-5)
    C = x.shape[1]
    assert torch.allclose(g3[:, :C], uncond[:, :C] + 3 * (cond[:, :C] - uncond[:, :C]), atol=1e-4)  # all mean channels guided
    assert torch.allclose(g3[:, C:], cond[:, C:], atol=1e-5)  # the variance channels come from the conditional half

@pytest.mark.parametrize('name', TINY)
def test_bf16_autocast_runs(name):
    model = build(name).eval()
    x, t, y = _inputs(model.config)
    with torch.no_grad(), torch.autocast('cpu', dtype=torch.bfloat16):
        out = model(x, t, y)
    assert out.shape[0] == x.shape[0] and torch.isfinite(out.float()).all()

@pytest.mark.parametrize('name', TINY)
def test_bad_input_raises_value_errors_naming_the_values(name):
    model = build(name).eval()
    cfg = model.config
    x, t, y = _inputs(cfg)
    C, S = cfg.in_channels, cfg.input_size
    bad_c = torch.randn(len(x), C + 1, S, S)
    with pytest.raises(ValueError, match=str(C + 1)): model(bad_c, t, y)
    if getattr(model, 'size_multiple', 1) > 1 or getattr(model, 'fixed_size', False):
        with pytest.raises(ValueError, match=str(S + 1)): model(torch.randn(len(x), C, S + 1, S + 1), t, y)
    if cfg.num_classes and not getattr(cfg, 'multi_hot', False):
        yb = y.clone(); yb[0] = cfg.num_classes + 1
        with pytest.raises(ValueError, match=str(cfg.num_classes + 1)): model(x, t, yb)
    with pytest.raises(ValueError): model(x, t[:1], y)

@pytest.mark.parametrize('name', TINY)
def test_spec_roundtrip(name):
    model = build(name, learn_sigma=True)
    again = from_spec(spec(model))
    assert type(again) is type(model) and again.config == model.config
    again.load_state_dict(model.state_dict())

def test_registry_overrides_and_errors():
    m = build('UNet-T', in_channels=1, num_classes=10)
    assert m.config.in_channels == 1 and m.config.num_classes == 10 and not m.config.learn_sigma
    assert build('UNet-T', in_channels=1, num_classes=10, learn_sigma=True).config.learn_sigma
    cfg = get_config('DiT-T/2', input_size=16, class_dropout_prob=0.0, in_channels=3)
    assert (cfg.input_size, cfg.class_dropout_prob, cfg.in_channels) == (16, 0.0, 3)
    with pytest.raises(ValueError, match='no option'): build('UNet-T', patch_size=2)
    with pytest.raises(ValueError, match='unknown model'): build('UNet-Huge')
    assert 'DiT-XL/2' in list_models('dit') and not set(list_models('unet')) & set(list_models('dit'))
