"""Latent DiffiT against the released layout (NVlabs/DiffiT, `diffit/diffit.py`, `Diffit()`): a small re-statement of that
model written from its code's structure (no import of it), random weights copied into ours, outputs compared."""
import math

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

from diffusion_course.backbones.diffit import PRESETS, LatentDiffiT, LatentDiffiTConfig
from diffusion_course.blocks import num_params, pos_embed_2d


class RefAttention(nn.Module):
    "The released DiffiTAttention: qkv(x) + qkv_temb(c) (both with biases), explicit softmax(q k^T / sqrt(d) + B) v."
    def __init__(self, dim, heads, window):
        super().__init__()
        self.heads, self.window = heads, window
        self.qkv, self.qkv_temb, self.proj = nn.Linear(dim, 3 * dim), nn.Linear(dim, 3 * dim), nn.Linear(dim, dim)
        self.relative_position_bias_table = nn.Parameter(torch.randn((2 * window - 1) ** 2, heads) * 0.02)
        coords = torch.stack(torch.meshgrid(torch.arange(window), torch.arange(window), indexing='ij')).flatten(1)  # (2, N)
        rel = (coords[:, :, None] - coords[:, None, :]).permute(1, 2, 0) + (window - 1)  # (N, N, 2)
        self.register_buffer('relative_position_index', rel[..., 0] * (2 * window - 1) + rel[..., 1])

    def forward(self, x, c):
        B, N, D = x.shape
        qkv = (self.qkv(x) + self.qkv_temb(c)[:, None]).reshape(B, N, 3, self.heads, D // self.heads).permute(2, 0, 3, 1, 4)
        q, k, v = qkv.unbind(0)  # (B, heads, N, d)
        attn = q * (D // self.heads) ** -0.5 @ k.transpose(-2, -1)
        bias = self.relative_position_bias_table[self.relative_position_index.view(-1)].view(N, N, -1).permute(2, 0, 1)
        attn = (attn + bias[None]).softmax(-1)
        return self.proj((attn @ v).transpose(1, 2).reshape(B, N, D))


class RefBlock(nn.Module):
    "LayerNorm without affine (eps 1e-6), attention, LayerNorm, MLP (fc1, tanh-GELU, fc2)."
    def __init__(self, dim, heads, window):
        super().__init__()
        self.norm1, self.norm2 = nn.LayerNorm(dim, elementwise_affine=False, eps=1e-6), nn.LayerNorm(dim, elementwise_affine=False, eps=1e-6)
        self.attn = RefAttention(dim, heads, window)
        self.fc1, self.fc2 = nn.Linear(dim, 4 * dim), nn.Linear(4 * dim, dim)

    def forward(self, x, c):
        x = x + self.attn(self.norm1(x), c)
        return x + self.fc2(F.gelu(self.fc1(self.norm2(x)), approximate='tanh'))


class RefLatentDiffiT(nn.Module):
    "The released latent model: patch embedding + fixed sin-cos positions, blocks with global TMSA, final LayerNorm, SiLU, Linear."
    def __init__(self, input_size=16, patch=2, in_channels=4, dim=64, depth=2, heads=4, num_classes=10):
        super().__init__()
        self.patch, self.grid, self.out_channels = patch, input_size // patch, 2 * in_channels
        self.x_proj = nn.Conv2d(in_channels, dim, patch, stride=patch)
        self.register_buffer('pos_embed', pos_embed_2d(dim, self.grid)[None])
        self.t_mlp = nn.Sequential(nn.Linear(256, dim), nn.SiLU(), nn.Linear(dim, dim))
        self.y_table = nn.Embedding(num_classes + 1, dim)
        self.blocks = nn.ModuleList([RefBlock(dim, heads, self.grid) for _ in range(depth)])
        self.norm_final = nn.LayerNorm(dim, elementwise_affine=False, eps=1e-6)
        self.linear = nn.Linear(dim, patch * patch * self.out_channels)

    def forward(self, x, t, y):
        h = self.x_proj(x).flatten(2).transpose(1, 2) + self.pos_embed  # (B, T, D)
        freqs = torch.exp(-math.log(10000) * torch.arange(128, dtype=torch.float32) / 128)
        args = t[:, None].float() * freqs[None]
        c = self.t_mlp(torch.cat([torch.cos(args), torch.sin(args)], -1).to(self.t_mlp[0].weight.dtype)) + self.y_table(y)
        for blk in self.blocks: h = blk(h, c)
        h = self.linear(F.silu(self.norm_final(h)))  # (B, T, p*p*C_out): LayerNorm, SiLU, Linear
        p, g, C = self.patch, self.grid, self.out_channels
        return torch.einsum('nhwpqc->nchpwq', h.reshape(-1, g, g, p, p, C)).reshape(-1, C, g * p, g * p)


def load_released(ref: RefLatentDiffiT, ours: LatentDiffiT):
    "Copy the released layout's weights into ours; the time projection's bias adds to the spatial one (both are constants)."
    sd = {'x_embedder.proj.weight': ref.x_proj.weight, 'x_embedder.proj.bias': ref.x_proj.bias,
          't_embedder.mlp.0.weight': ref.t_mlp[0].weight, 't_embedder.mlp.0.bias': ref.t_mlp[0].bias,
          't_embedder.mlp.2.weight': ref.t_mlp[2].weight, 't_embedder.mlp.2.bias': ref.t_mlp[2].bias,
          'y_embedder.embedding_table.weight': ref.y_table.weight}
    for i, b in enumerate(ref.blocks):
        sd.update({f'blocks.{i}.attn.qkv_s.weight': b.attn.qkv.weight, f'blocks.{i}.attn.qkv_s.bias': b.attn.qkv.bias + b.attn.qkv_temb.bias,
                   f'blocks.{i}.attn.qkv_t.weight': b.attn.qkv_temb.weight,
                   f'blocks.{i}.attn.rel_bias.table': b.attn.relative_position_bias_table,
                   f'blocks.{i}.attn.proj.weight': b.attn.proj.weight, f'blocks.{i}.attn.proj.bias': b.attn.proj.bias,
                   f'blocks.{i}.mlp.fc1.weight': b.fc1.weight, f'blocks.{i}.mlp.fc1.bias': b.fc1.bias,
                   f'blocks.{i}.mlp.fc2.weight': b.fc2.weight, f'blocks.{i}.mlp.fc2.bias': b.fc2.bias})
    sd.update({'decoder.weight': ref.linear.weight, 'decoder.bias': ref.linear.bias})
    own = ours.state_dict()
    for k, v in own.items():  # LayerNorm affine parameters, where ours has them: the identity
        if k not in sd: sd[k] = torch.ones_like(v) if k.endswith('weight') else torch.zeros_like(v)
    ours.load_state_dict({k: v.detach().clone() for k, v in sd.items()})
    return ours


@pytest.mark.parametrize('dtype, tol', [(torch.float32, 1e-5), (torch.float64, 1e-12)])
def test_released_layout_parity(dtype, tol):
    torch.manual_seed(0)
    ref = RefLatentDiffiT().eval()
    with torch.no_grad():
        for p in ref.parameters(): p.normal_(0, 0.2)
    cfg = LatentDiffiTConfig(input_size=16, in_channels=4, patch=2, dim=64, depth=2, heads=4, num_classes=10)
    ref = ref.to(dtype)
    ours = load_released(ref, LatentDiffiT(cfg).to(dtype)).eval()
    x, t, y = torch.randn(3, 4, 16, 16, dtype=dtype), torch.tensor([0, 400, 999]), torch.tensor([1, 5, 10])
    with torch.no_grad(): out, want = ours(x, t, y), ref(x, t, y)
    err = (out - want).abs().max().item()
    print(f'{dtype}: max |ours - released layout| = {err:.1e} (output scale {want.abs().max().item():.2f})')
    assert err < tol


def test_released_parameter_count():
    "Diffit(): depth 28, width 1152, 16 heads, patch 2: 561.3M parameters in the released code (its position embedding counted)."
    cfg = PRESETS['DiffiT-Latent-XL/2']
    assert (cfg.depth, cfg.dim, cfg.heads, cfg.patch) == (28, 1152, 16, 2)
    D, T, N = 1152, 256, 28
    released = (4 * 4 * D + D) + T * D + (256 * D + D + D * D + D) + 1001 * D \
        + N * (3 * D * D + 3 * D + 3 * D * D + 3 * D + 31 ** 2 * 16 + D * D + D + 8 * D * D + 5 * D) + (D * 32 + 32)
    assert round(released / 1e6, 1) == 561.3
    with torch.device('meta'): ours = num_params(LatentDiffiT(cfg))
    assert ours == released - T * D + (2 * N + 1) * 2 * D - N * 3 * D  # buffer not parameter, affine LayerNorms, no time bias
