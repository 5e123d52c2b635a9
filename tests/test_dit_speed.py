"benchmarks/dit_speed.py: its paired measurement (alternating steps, median per side) and its profile split on the tiny preset (the shares cover the operator time; the layout the model's own code asks for is told apart from the layout inside kernels and autograd)."
import os, sys, time

import torch

sys.path.insert(0, os.path.join(os.path.dirname(__file__), '..', 'benchmarks'))
import dit_speed  # noqa: E402

def test_op_part():
    assert [dit_speed.op_part(k) for k in ('aten::addmm', 'aten::_scaled_dot_product_flash_attention_for_cpu', 'aten::gelu_backward',
                                           'aten::native_layer_norm', 'aten::mul', 'aten::copy_', 'SplitBackward0')] == \
           ['gemm', 'attention', 'gelu', 'norm', 'math', 'layout', 'layout']

def test_breakdown_splits_the_layout():
    ours, dm, cfg = dit_speed.pair('DiT-T/4')
    x, t, y = dit_speed.inputs(cfg, 2, 'cpu')
    for model, call in ((ours, dit_speed.ours_call), (dm, dit_speed.diffusers_call)):
        b = dit_speed.breakdown(dit_speed.make_step(model, call, x, t, y, 'fp32', 'cpu'), steps=1)
        shares = [b[k] for k in ('gemm', 'attention', 'gelu', 'norm', 'math', 'layout')]
        assert abs(sum(shares) - 1) < 1e-9 and all(s > 0 for s in shares), b
        assert 0 < b['model_layout'] < b['layout'], b  # the model's own reshapes exist, and so does layout inside kernels and autograd
        assert b['ops'] > 100, b

def test_layout_owner():
    "The copy addmm makes of its bias belongs to the kernel; the concatenation that undoes the qkv split in the backward belongs to the model."
    lin = torch.nn.Linear(8, 24)
    x = torch.randn(4, 8)
    from torch.profiler import profile, ProfilerActivity
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        q, k, v = lin(x).chunk(3, -1)
        (q * k * v).sum().backward()
    owners = {(e.name, dit_speed.layout_owner(e)) for e in prof.events() if e.name in ('aten::copy_', 'aten::cat', 'SplitBackward0', 'aten::split')}
    assert ('aten::copy_', 'kernel') in owners and ('aten::cat', 'model') in owners and ('aten::split', 'model') in owners, owners
    assert ('SplitBackward0', 'autograd') in owners, owners

def test_paired_alternates_and_takes_medians():
    "Steps alternate one at a time, the first switching every step; each side's figure is its median step, so one slow step does not move it."
    calls, slow = [], iter([0.05])  # the first call of `a` is slowed down, as if another process took the CPU
    def a(): calls.append('a'); time.sleep(next(slow, 0.002))
    def b(): calls.append('b'); time.sleep(0.004)
    ta, tb = dit_speed.paired(a, b, 5, 'cpu')
    assert calls == ['a', 'b', 'b', 'a', 'a', 'b', 'b', 'a', 'a', 'b']
    assert 0.002 <= ta < min(tb, 0.01) and tb >= 0.004, (ta, tb)  # the mean of a's steps would be 0.0116 s
