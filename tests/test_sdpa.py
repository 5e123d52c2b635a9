"blocks.sdpa: the same attention as F.scaled_dot_product_attention, computed in fp32 for bf16 inputs on a CPU."
import torch, torch.nn.functional as F
from diffusion_course.blocks import Attention, sdpa


def test_sdpa_fp32_is_plain_sdpa():
    q, k, v = torch.randn(3, 2, 4, 5, 8).unbind(0)
    mask = torch.randn(5, 5)
    assert torch.equal(sdpa(q, k, v), F.scaled_dot_product_attention(q, k, v))
    assert torch.equal(sdpa(q, k, v, attn_mask=mask, scale=1.0), F.scaled_dot_product_attention(q, k, v, attn_mask=mask, scale=1.0))


def test_sdpa_bf16_on_cpu_runs_in_fp32():
    q, k, v = torch.randn(3, 2, 4, 16, 8).unbind(0)
    mask = torch.randn(16, 16)
    qb, kb, vb = q.bfloat16(), k.bfloat16(), v.bfloat16()
    want = F.scaled_dot_product_attention(qb.float(), kb.float(), vb.float(), attn_mask=mask.bfloat16().float())
    with torch.autocast('cpu', dtype=torch.bfloat16):  # autocast must not cast the fp32 computation back to bf16
        got = sdpa(qb, kb, vb, attn_mask=mask.bfloat16())
    assert got.dtype == torch.bfloat16 and torch.equal(got, want.bfloat16())
    att = Attention(16, heads=2)
    with torch.autocast('cpu', dtype=torch.bfloat16): y = att(torch.randn(2, 10, 16))
    assert y.dtype == torch.bfloat16 and torch.isfinite(y).all()
