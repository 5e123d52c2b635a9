"DiT weight compatibility: diffusers' DiTTransformer2DModel conversion, the official layout, exact parameter counts."
import dataclasses

import pytest
import torch

from diffusion_course.backbones.dit import DiT, PRESETS, config_from_state_dict, from_diffusers, from_official
from diffusion_course.blocks import num_params, pos_embed_2d

OFFICIAL = {'DiT-S/2': 32_963_360, 'DiT-B/2': 130_512_416, 'DiT-L/2': 458_102_816, 'DiT-XL/2': 675_129_632}

@pytest.mark.parametrize('name', list(OFFICIAL))
def test_official_param_counts(name):
    with torch.device('meta'):  # no memory, no optimiser
        assert num_params(DiT(PRESETS[name])) == OFFICIAL[name]

def _tiny_diffusers(learn_sigma=True, seed=0):
    diffusers = pytest.importorskip('diffusers')
    torch.manual_seed(seed)
    dm = diffusers.DiTTransformer2DModel(num_attention_heads=2, attention_head_dim=16, in_channels=4,
                                         out_channels=8 if learn_sigma else 4, num_layers=3, sample_size=16, patch_size=2,
                                         num_embeds_ada_norm=10).eval()
    with torch.no_grad():  # random weights everywhere (diffusers zero-initialises some), then tie the per-block embedders
        for p in dm.parameters(): p.normal_(0, 0.1)
        emb0 = dm.transformer_blocks[0].norm1.emb
        for blk in dm.transformer_blocks[1:]: blk.norm1.emb.load_state_dict(emb0.state_dict())
    return dm

@pytest.mark.parametrize('learn_sigma', [True, False])
def test_from_diffusers_parity(learn_sigma):
    dm = _tiny_diffusers(learn_sigma)
    ours = from_diffusers(dm).eval()
    g = torch.Generator().manual_seed(1)
    x, t, y = torch.randn(3, 4, 16, 16, generator=g), torch.tensor([0, 417, 999]), torch.tensor([1, 7, 10])
    with torch.no_grad():
        ref = dm(x, timestep=t, class_labels=y).sample
        out = ours(x, t, y)
    err = (out - ref).abs().max().item()
    print(f'diffusers conversion max abs error: {err:.2e} (output scale {ref.abs().max().item():.2f})')
    assert out.shape == ref.shape == (3, 8 if learn_sigma else 4, 16, 16)
    assert err < 1e-5

def test_from_diffusers_refuses_untied_embedders():
    dm = _tiny_diffusers()
    with torch.no_grad(): dm.transformer_blocks[2].norm1.emb.timestep_embedder.linear_1.weight.add_(1)
    with pytest.raises(ValueError, match='embedder'): from_diffusers(dm)

def test_pos_embed_matches_diffusers():
    emb = pytest.importorskip('diffusers.models.embeddings')
    ref = emb.get_2d_sincos_pos_embed(64, 8, base_size=8, output_type='pt')
    assert torch.allclose(pos_embed_2d(64, 8), ref.float(), atol=1e-6)

def test_official_layout_roundtrip():
    cfg = dataclasses.replace(PRESETS['DiT-S/8'], depth=2)  # official key names, small
    sd = DiT(cfg).state_dict()
    keys = set(sd)
    for k in ['pos_embed', 'x_embedder.proj.weight', 't_embedder.mlp.0.weight', 't_embedder.mlp.2.bias', 'y_embedder.embedding_table.weight',
              'blocks.1.attn.qkv.weight', 'blocks.1.attn.proj.bias', 'blocks.1.mlp.fc1.weight', 'blocks.1.mlp.fc2.bias',
              'blocks.1.adaLN_modulation.1.weight', 'final_layer.linear.weight', 'final_layer.adaLN_modulation.1.bias']:
        assert k in keys, k
    assert config_from_state_dict(sd) == cfg
    m = from_official(sd)
    x, t, y = torch.randn(2, 4, 32, 32), torch.tensor([3, 500]), torch.tensor([5, 1000])
    ref = DiT(cfg); ref.load_state_dict(sd)
    with torch.no_grad(): assert torch.equal(m.eval()(x, t, y), ref.eval()(x, t, y))
