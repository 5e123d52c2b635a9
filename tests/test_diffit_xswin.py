"DiffiT and XSwin beyond the common backbone checks: masks and padding, odd sizes, bad input, pinned parameter counts."
import dataclasses

import pytest
import torch
import torch.nn.functional as F
from einops import rearrange

from diffusion_course.backbones.diffit import (PRESETS as DIFFIT_PRESETS, DiffiT, DiffiTConfig, LatentDiffiT, TMSA,
                                               relative_position_index)
from diffusion_course.backbones.xswin import (PRESETS as XSWIN_PRESETS, WindowAttention, XSwinDiffusion, attention_mask,
                                              window_attention, window_padding)
from diffusion_course.blocks import num_params, window_partition, window_reverse
from diffusion_course.registry import build, list_models


def _wake(model, std=0.05, seed=0):
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters(): p.add_(std * torch.randn(p.shape, generator=g))
    return model


def test_registered():
    assert {'DiffiT-T', 'DiffiT-CIFAR10', 'DiffiT-Latent-T/4', 'DiffiT-Latent-XL/2'} == set(list_models('diffit'))
    assert {'XSwin-T', 'XSwin-Seed', 'XSwin-Seed-XAttn'} == set(list_models('xswin'))
    assert {'DiffiT-T', 'DiffiT-Latent-T/4', 'XSwin-T'} <= set(list_models(tiny=True))
    assert type(build('DiffiT-Latent-T/4')) is LatentDiffiT and type(build('XSwin-T')) is XSwinDiffusion


@pytest.mark.parametrize('name, expected', [('DiffiT-T', 95_129), ('DiffiT-CIFAR10', 50_599_779), ('DiffiT-Latent-T/4', 149_012),
                                            ('DiffiT-Latent-XL/2', 561_069_792), ('XSwin-T', 272_067), ('XSwin-Seed', 35_504_774),
                                            ('XSwin-Seed-XAttn', 36_590_744)])
def test_parameter_counts(name, expected):
    with torch.device('meta'): model = build(name)
    assert num_params(model) == expected


def test_relative_position_index_covers_the_table():
    for w in (1, 2, 3, 5):
        idx = relative_position_index(w)
        assert idx.shape == (w * w, w * w) and set(idx.flatten().tolist()) == set(range((2 * w - 1) ** 2))
        assert (idx.diagonal() == (2 * w - 1) * (w - 1) + (w - 1)).all()  # offset (0, 0) sits in the middle of the table


def test_tmsa_rejects_wrong_token_count():
    with pytest.raises(ValueError, match='16'): TMSA(8, 2, 4)(torch.randn(1, 9, 8), torch.randn(1, 8))


def _swin_reference_regions(Hp, Wp, w, s):
    "Swin's own construction of the shifted-window regions (microsoft/Swin-Transformer), for comparison."
    img = torch.zeros(Hp, Wp)
    cnt = 0
    for hs in (slice(0, -w), slice(-w, -s), slice(-s, None)):
        for ws in (slice(0, -w), slice(-w, -s), slice(-s, None)):
            img[hs, ws] = cnt; cnt += 1
    win = window_partition(img[None, :, :, None], w)[..., 0]
    return win[:, :, None] == win[:, None, :]


@pytest.mark.parametrize('H, W, w, s', [(8, 8, 4, 2), (4, 4, 2, 1), (12, 8, 4, 2), (6, 6, 2, 1)])
def test_shift_mask_equals_swin_when_no_padding(H, W, w, s):
    assert torch.equal(attention_mask(H, W, w, s), _swin_reference_regions(H, W, w, s))


@pytest.mark.parametrize('H, W, w, s', [(6, 6, 4, 2), (5, 7, 4, 2), (3, 3, 4, 0), (10, 6, 4, 2)])
def test_mask_rows_never_empty_and_padding_invisible(H, W, w, s):
    m = attention_mask(H, W, w, s)
    Hp, Wp = H + window_padding(H, w), W + window_padding(W, w)
    assert (Hp % w, Wp % w) == (0, 0) and Hp - H < w and Wp - W < w
    assert m.any(-1).all()  # every query sees at least itself
    real = torch.zeros(Hp, Wp, dtype=torch.bool); real[:H, :W] = True
    real = window_partition(torch.roll(real, (-s, -s), (0, 1))[None, :, :, None], w)[..., 0]
    assert not (m & real[:, :, None] & ~real[:, None, :]).any()


def test_wraparound_pairs_never_attend():
    H = W = 8; w, s = 4, 2
    m = attention_mask(H, W, w, s)
    rows, cols = torch.meshgrid(torch.arange(H), torch.arange(W), indexing='ij')
    orig = torch.stack([rows, cols], -1)  # original coordinates
    rolled = window_partition(torch.roll(orig, (-s, -s), (0, 1))[None].float(), w)  # (nW, N, 2)
    d = (rolled[:, :, None] - rolled[:, None, :]).abs().amax(-1)  # (nW, N, N) Chebyshev distance in the original image
    assert not (m & (d >= w)).any()  # allowed pairs are true neighbours (within one window's span), never wrapped


def test_padded_keys_do_not_matter():
    torch.manual_seed(0)
    attn = _wake(WindowAttention(8, 2, 4)).eval()
    H = W = 6; w, s = 4, 2
    x = torch.randn(2, H * W, 8)
    with torch.no_grad():
        ours = window_attention(attn, x, (H, W), shift=s)
        a = rearrange(x, 'b (h w) d -> b h w d', h=H)
        a = F.pad(a, (0, 0, 0, 2, 0, 2)); a[:, H:] = 100 * torch.randn_like(a[:, H:]); a[:, :, W:] = 100 * torch.randn_like(a[:, :, W:])
        a = torch.roll(a, (-s, -s), (1, 2))
        out = window_reverse(attn(window_partition(a, w), None, attention_mask(H, W, w, s)), w, 8, 8)
        out = rearrange(torch.roll(out, (s, s), (1, 2))[:, :H, :W], 'b h w d -> b (h w) d')
    torch.testing.assert_close(ours, out, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize('size', [(40, 40), (48, 32)])
def test_xswin_odd_grids_and_non_square(size):
    model = _wake(build('XSwin-T', learn_sigma=True))  # 40: grids 20 -> 10 (padded to 12 in windows of 4) -> 5
    x = torch.randn(2, 1, *size)
    out = model(x, torch.tensor([3, 700]), torch.tensor([1, 10]))
    assert out.shape == (2, 2, *size) and torch.isfinite(out).all()
    out.square().mean().backward()
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in model.parameters())


def test_xswin_bad_input():
    model = build('XSwin-T')
    with pytest.raises(ValueError, match='36x36'): model(torch.randn(1, 1, 36, 36), torch.zeros(1, dtype=torch.long))
    with pytest.raises(ValueError, match='got 2'): model(torch.randn(1, 2, 32, 32), torch.zeros(1, dtype=torch.long))
    with pytest.raises(ValueError, match='divisible'): XSwinDiffusion(dataclasses.replace(XSWIN_PRESETS['XSwin-T'], input_size=36))
    with pytest.raises(ValueError, match='heads'): XSwinDiffusion(dataclasses.replace(XSWIN_PRESETS['XSwin-T'], heads=(1,)))


def test_diffit_bad_input_and_unconditional():
    model = build('DiffiT-T')
    with pytest.raises(ValueError, match='20x20'): model(torch.randn(1, 1, 20, 20), torch.zeros(1, dtype=torch.long))
    with pytest.raises(ValueError, match='grid 8 must be divisible by the window 3'): LatentDiffiT(dataclasses.replace(DIFFIT_PRESETS['DiffiT-Latent-T/4'], window=3))
    lat = build('DiffiT-Latent-T/4')
    with pytest.raises(ValueError, match='32x32'): lat(torch.randn(1, 1, 16, 16), torch.zeros(1, dtype=torch.long))
    unc = build('DiffiT-T', num_classes=0)
    assert unc.y_embedder is None and unc(torch.randn(2, 1, 32, 32), torch.tensor([1, 2])).shape == (2, 1, 32, 32)
    with pytest.raises(ValueError, match='unconditional'): unc(torch.randn(2, 1, 32, 32), torch.tensor([1, 2]), torch.tensor([0, 1]))


def test_latent_diffit_windowed_tmsa_and_global_default():
    cfg = DIFFIT_PRESETS['DiffiT-Latent-T/4']  # 8 x 8 tokens
    glob, win = LatentDiffiT(cfg), LatentDiffiT(dataclasses.replace(cfg, window=4))
    assert glob.blocks[0].attn.window == 8 and win.blocks[0].attn.window == 4
    out = _wake(win)(torch.randn(2, 1, 32, 32), torch.tensor([5, 50]), torch.tensor([0, 9]))
    assert out.shape == (2, 1, 32, 32) and torch.isfinite(out).all()


def test_diffit_windows_clip_to_small_grids():
    model = DiffiT(DiffiTConfig(input_size=16, in_channels=1, widths=(8, 8, 8), depths=(1, 1, 1), heads=(1, 1, 1), window=8, groups=4))
    assert model.windows == [8, 8, 4]  # the 4 x 4 level attends over its whole grid
    assert len({id(b) for stage in (*model.down_stages, *model.up_stages) for b in stage}) == 6  # distinct blocks
    assert model(torch.randn(1, 1, 16, 16), torch.tensor([1])).shape == (1, 1, 16, 16)


def test_xswin_seed_is_the_trained_configuration():
    "run_diffusion.py: final_downsample=False, residual_cross_attention=False; the bottleneck at 384 wide on 16 x 16 tokens."
    cfg = XSWIN_PRESETS['XSwin-Seed']
    assert (cfg.patch, cfg.dim, cfg.depths, cfg.heads, cfg.window, cfg.vit_depth, cfg.vit_heads, cfg.num_classes) == (1, 192, (3, 3), (6, 12), 2, 3, 12, 101)
    assert not cfg.final_downsample and not cfg.cross_attn and XSWIN_PRESETS['XSwin-Seed-XAttn'].cross_attn
    with torch.device('meta'): m = build('XSwin-Seed')
    assert (m.vit_dim, m.grid, len(m.merges)) == (384, 16, 1) and m.decoder[-1].expand is None


@pytest.mark.parametrize('size', [(32, 32), (40, 24)])
def test_xswin_without_final_merge_runs_and_trains(size):
    model = _wake(build('XSwin-T', final_downsample=False, learn_sigma=True))
    x = torch.randn(2, 1, *size)
    out = model(x, torch.tensor([3, 700]), torch.tensor([1, 10]))
    assert out.shape == (2, 2, *size) and torch.isfinite(out).all()
    out.square().mean().backward()
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in model.parameters())
