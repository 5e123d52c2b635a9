"""The course's DiT against diffusers' `DiTTransformer2DModel`: training-step speed and peak memory, side by side.

    python benchmarks/dit_speed.py                                   # every preset and mode
    python benchmarks/dit_speed.py --rounds 5 --min-time 0.5 --shares  # the same with the profile split: 8.5 min on 2 CPU cores
    python benchmarks/dit_speed.py --presets DiT-S/2 --modes fp32 bf16 --rounds 9

Protocol. Both sides have the identical architecture (32x32x4 latents, 1000 classes, learned sigma; the DiT-T presets
widened to the same inputs) and the same weights: ours is converted from the diffusers twin by `from_diffusers`, and
the two outputs are checked to agree before anything is timed. A training step is a forward on a fixed batch (x, t,
y), a mean-squared loss, the backward, the gradients dropped. Modes: `fp32` eager, `bf16` (eager under CPU/CUDA bf16
autocast), `compile` (torch.compile of the model, fp32) and `compile-bf16`. A measurement runs the two sides' steps
alternately, one at a time, the one going first switching every step, for about --min-time seconds per side (at least
2 steps each), and keeps each side's median seconds per step: a change of load on a shared machine hits both sides
alike, and a step that another process slowed down does not count (in a steady training loop every step does the same
work). Within a preset every round measures every mode once, in an order that rotates and reverses from round to
round. Each round gives the ratio diffusers time / our time per mode (above 1: ours is faster); the median over
rounds is printed with its interquartile range, beside the median milliseconds per step. `best` pairs, round by
round, each side's fastest mode (the one with the lowest median). Peak memory (eager modes): the parameters plus the
highest total of tensor memory allocated during one training step, read from the profiler's allocator events (so it
counts gradients, activations kept for the backward and the temporaries of both passes). --shares profiles three
eager steps per side and splits their operator self time into GEMMs (matrix multiplications, and diffusers' patch
convolution), the attention kernel, the GELU (forward and backward), the LayerNorms, math (the other arithmetic and
reductions of the formulas: modulation, gates, residuals, embeddings, their gradients) and layout (copies,
concatenations, views, allocations, autograd's bookkeeping). Both sides run the same GEMMs, attention and tanh-GELU
on the same tensors, so bounds follow: "if our rest cost nothing" (diffusers' time over our GEMM + attention + GELU
time) bounds any implementation that keeps those kernels; "if our layout cost nothing" (diffusers' time over our time
without the layout share) bounds one that also keeps the formulas' arithmetic as separate eager operators, removing
only copies and bookkeeping. Part of that layout comes with the kernels and with autograd, whoever writes the model:
addmm writes its bias into its output before the GEMM, nn.Linear transposes its weight, the attention's backward
zero-fills its gradients, autograd runs a node per operator and accumulates each parameter's gradient. The rest is
asked for by the model's own code (its reshapes, splits, permutes, concatenations and their gradients): "if the
layout our model's code asks for cost nothing" bounds what rewriting the model in eager PyTorch, with the same
kernels and formulas, could still gain.
A benchmark, not a test: nothing is asserted.
"""
from __future__ import annotations
import argparse, json, os, statistics, tempfile, time

import torch
import torch._dynamo

from diffusion_course.backbones.dit import from_diffusers
from diffusion_course.registry import get_config

PRESETS = ['DiT-T/2', 'DiT-T/4', 'DiT-S/4', 'DiT-S/2', 'DiT-B/4']
MODES = ['fp32', 'bf16', 'compile', 'compile-bf16']

def diffusers_twin(cfg, seed: int = 0):
    "diffusers' DiTTransformer2DModel with the architecture of our DiTConfig, random weights, the per-block embedders tied."
    from diffusers import DiTTransformer2DModel
    torch.manual_seed(seed)
    dm = DiTTransformer2DModel(num_attention_heads=cfg.heads, attention_head_dim=cfg.dim // cfg.heads, in_channels=cfg.in_channels,
                               out_channels=cfg.in_channels * (2 if cfg.learn_sigma else 1), num_layers=cfg.depth,
                               sample_size=cfg.input_size, patch_size=cfg.patch, num_embeds_ada_norm=cfg.num_classes)
    with torch.no_grad():  # diffusers zero-initialises the adaLN and output layers: small random weights instead, so both sides compute something
        for p in dm.parameters(): p.normal_(0, 0.02)
        emb0 = dm.transformer_blocks[0].norm1.emb  # one embedder, as in the official DiT (diffusers keeps a copy per block)
        for blk in dm.transformer_blocks[1:]: blk.norm1.emb.load_state_dict(emb0.state_dict())
    return dm

def pair(name: str):
    "(ours, diffusers' twin, config) for a preset at 32x32x4 latents, 1000 classes, learned sigma."
    cfg = get_config(name, in_channels=4, input_size=32, num_classes=1000, learn_sigma=True)
    dm = diffusers_twin(cfg)
    ours = from_diffusers(dm)
    return ours, dm, ours.config

def inputs(cfg, batch: int, device: str, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(batch, cfg.in_channels, cfg.input_size, cfg.input_size, generator=g)
    t, y = torch.randint(0, 1000, (batch,), generator=g), torch.randint(0, cfg.num_classes, (batch,), generator=g)
    return x.to(device), t.to(device), y.to(device)

def ours_call(m, x, t, y): return m(x, t, y)
def diffusers_call(m, x, t, y): return m(x, timestep=t, class_labels=y, return_dict=False)[0]

def check_same_function(ours, dm, cfg, device: str) -> float:
    "Max abs difference of the two outputs in eval mode (no label dropout): the twins must compute the same function."
    x, t, y = inputs(cfg, 2, device, seed=1)
    with torch.no_grad():
        a, b = ours.eval()(x, t, y), diffusers_call(dm.eval(), x, t, y)
    ours.train(); dm.train()
    return (a - b).abs().max().item()

def make_step(model, call, x, t, y, mode: str, device: str):
    "A function running one training step of `model` in `mode` (the model compiled once here for the compile modes)."
    fn = torch.compile(model) if mode.startswith('compile') else model
    bf16, params = mode.endswith('bf16'), list(model.parameters())
    def step():
        with torch.autocast(device.split(':')[0], dtype=torch.bfloat16, enabled=bf16):
            out = call(fn, x, t, y)
        out.float().square().mean().backward()
        for p in params: p.grad = None
    return step

def sync(device: str):
    if device.startswith('cuda'): torch.cuda.synchronize()

def timed(step, n: int, device: str) -> float:
    "Seconds per step over n consecutive steps."
    sync(device); t0 = time.perf_counter()
    for _ in range(n): step()
    sync(device)
    return (time.perf_counter() - t0) / n

def paired(a, b, n: int, device: str) -> tuple[float, float]:
    "Median seconds per step of two step functions run alternately, n steps each, the one going first switching every step."
    times = ([], [])
    for i in range(n):
        for k in ((0, 1) if i % 2 == 0 else (1, 0)):
            sync(device); t0 = time.perf_counter(); (a, b)[k](); sync(device)
            times[k].append(time.perf_counter() - t0)
    return statistics.median(times[0]), statistics.median(times[1])

def peak_mib(step, model, device: str) -> float:
    "Parameters + the highest tensor memory allocated during one step, MiB."
    params = sum(p.numel() * p.element_size() for p in model.parameters())
    if device.startswith('cuda'):
        torch.cuda.synchronize(); base = torch.cuda.memory_allocated(); torch.cuda.reset_peak_memory_stats()
        step(); torch.cuda.synchronize()
        return (params + torch.cuda.max_memory_allocated() - base) / 2**20
    from torch.profiler import profile, ProfilerActivity
    with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof: step()
    with tempfile.TemporaryDirectory() as d:
        path = os.path.join(d, 'trace.json'); prof.export_chrome_trace(path)
        events = json.load(open(path))['traceEvents']
    allocated = [e['args']['Total Allocated'] for e in events if e.get('name') == '[memory]']
    return (params + max(allocated, default=0)) / 2**20

GEMM_OPS = ('aten::mm', 'aten::addmm', 'aten::bmm', 'aten::baddbmm', 'aten::mkldnn_convolution', 'aten::convolution_backward',
            'aten::_weight_int4pack_mm', 'mkldnn::_linear_pointwise')
LAYOUT_OPS = ('copy_', 'clone', 'contiguous', 'cat', 'view', '_unsafe_view', 'reshape', 't', 'transpose', 'permute', 'as_strided',
              'expand', 'unsqueeze', 'squeeze', 'split', 'split_with_sizes', 'chunk', 'unbind', 'slice', 'select', 'narrow', 'detach',
              'alias', 'empty', 'empty_like', 'empty_strided', 'zeros', 'zeros_like', 'ones_like', 'fill_', 'zero_', '_to_copy', 'to',
              'linear', 'matmul', 'flatten', 'unflatten', 'expand_as', 'lift_fresh', 'result_type', 'resolve_conj', 'resolve_neg')

def op_part(key: str) -> str:
    "The share a profiled operator's self time counts in: gemm, attention, gelu, norm, layout (copies, views, allocation, autograd bookkeeping) or math."
    if key in GEMM_OPS: return 'gemm'
    if 'attention' in key: return 'attention'
    if 'gelu' in key: return 'gelu'
    if 'layer_norm' in key: return 'norm'
    if key.removeprefix('aten::') in LAYOUT_OPS or key.endswith(('Backward0', 'Backward1', 'AccumulateGrad')): return 'layout'
    return 'math'  # the elementwise arithmetic and reductions of the model's formulas (modulation, gates, residuals, their gradients)

KERNEL_NODES = ('Addmm', 'Mm', 'Bmm', 'Convolution', 'NativeLayerNorm', 'Gelu', 'ScaledDotProduct')  # autograd nodes whose layout work belongs to the kernel

def layout_owner(e) -> str:
    "Who asks for a profiled layout operator: 'autograd' (its nodes, the gradient accumulation), 'kernel' (another operator's call: addmm writing its bias, linear's transposes, the attention's zero fills, a reduction's) or 'model' (the model's own reshapes, splits, permutes, concatenations and their gradients)."
    if e.name.endswith(('Backward0', 'Backward1', 'AccumulateGrad')) or e.name == 'detach': return 'autograd'
    if e.name == 'aten::linear': return 'kernel'  # nn.Linear's entry to its GEMM
    p = e.cpu_parent
    while p is not None and not p.name.startswith(('ProfilerStep', 'autograd::engine')):
        if p.name == 'aten::linear' or op_part(p.name) != 'layout' or p.name.startswith(KERNEL_NODES): return 'kernel'
        p = p.cpu_parent
    return 'model'

def breakdown(step, steps: int = 3) -> dict:
    "Shares of `steps` profiled steps' operator self time by `op_part`, the layout share the model's own code asks for (`layout_owner`), and the aten operator calls per step."
    from torch.profiler import profile, ProfilerActivity
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        for _ in range(steps): step()
    parts = dict.fromkeys(('gemm', 'attention', 'gelu', 'norm', 'math', 'layout'), 0.0)
    model_layout, ops = 0.0, 0
    for e in prof.events():
        if e.name.startswith(('ProfilerStep', 'autograd::engine')): continue
        part = op_part(e.name)
        parts[part] += e.self_cpu_time_total
        ops += e.name.startswith('aten::')  # operator calls (nested ones included): at tiny sizes each costs about the same fixed overhead
        if part == 'layout' and layout_owner(e) == 'model': model_layout += e.self_cpu_time_total
    total = sum(parts.values())
    return {k: v / total for k, v in parts.items()} | {'model_layout': model_layout / total, 'ops': ops / steps}

def quartiles(v): q = statistics.quantiles(v, n=4) if len(v) > 1 else [v[0]] * 3; return q[0], q[2]

def bench_preset(name: str, modes: list[str], batch: int, rounds: int, min_time: float, device: str, memory: bool,
                 profile_shares: bool = False) -> dict:
    if any(m.startswith('compile') for m in modes): torch._dynamo.reset()  # each preset compiles afresh: otherwise the presets' graphs pile up in one cache and past its recompile limit the later ones silently run eager
    ours, dm, cfg = pair(name)
    ours, dm = ours.to(device), dm.to(device)
    err = check_same_function(ours, dm, cfg, device)
    x, t, y = inputs(cfg, batch, device)
    runners, compile_s, failed = {}, {}, {}
    for mode in modes:
        steps = {}
        for side, model, call in (('ours', ours, ours_call), ('diffusers', dm, diffusers_call)):
            try:
                step = make_step(model, call, x, t, y, mode, device)
                t0 = time.perf_counter(); step(); compile_s[side, mode] = time.perf_counter() - t0  # first call: compiles
                step()
            except Exception as e:  # a mode that does not run (e.g. no compiler) is reported, not fatal
                failed[mode] = f"{side}: {type(e).__name__}: {' '.join(str(e).split())[:160]}"
                break
            steps[side] = step
        if mode in failed: continue
        n = max(2, round(min_time / timed(steps['ours'], 1, device)))  # steps per side per measurement: at least one going first, one second
        runners[mode] = (steps['ours'], steps['diffusers'], n)
    modes = [m for m in modes if m not in failed]
    times = {(side, m): [] for m in modes for side in ('ours', 'diffusers')}
    for r in range(rounds):
        order = modes[r % len(modes):] + modes[:r % len(modes)]
        for mode in (order if r % 2 == 0 else order[::-1]):
            ours_step, diffusers_step, n = runners[mode]
            o, d = paired(ours_step, diffusers_step, n, device)
            times['ours', mode].append(o); times['diffusers', mode].append(d)
    res = {'name': name, 'params': sum(p.numel() for p in ours.parameters()), 'err': err, 'modes': {}, 'failed': failed}
    for mode in modes:
        ratios = [d / o for o, d in zip(times['ours', mode], times['diffusers', mode])]
        res['modes'][mode] = dict(ours_ms=1000 * statistics.median(times['ours', mode]), diffusers_ms=1000 * statistics.median(times['diffusers', mode]),
                                  ratio=statistics.median(ratios), iqr=quartiles(ratios),
                                  compile_s=(compile_s['ours', mode], compile_s['diffusers', mode]))
        if memory and not mode.startswith('compile'):
            res['modes'][mode]['mib'] = (peak_mib(runners[mode][0], ours, device), peak_mib(runners[mode][1], dm, device))
        if profile_shares and not mode.startswith('compile') and device == 'cpu':
            res['modes'][mode]['shares'] = (breakdown(runners[mode][0]), breakdown(runners[mode][1]))
    best = {side: min(modes, key=lambda m: statistics.median(times[side, m])) for side in ('ours', 'diffusers')}
    ratios = [d / o for o, d in zip(times['ours', best['ours']], times['diffusers', best['diffusers']])]
    res['best'] = dict(ours=best['ours'], diffusers=best['diffusers'], ratio=statistics.median(ratios), iqr=quartiles(ratios),
                       ours_ms=1000 * statistics.median(times['ours', best['ours']]), diffusers_ms=1000 * statistics.median(times['diffusers', best['diffusers']]))
    return res

def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument('--presets', nargs='+', default=PRESETS)
    ap.add_argument('--modes', nargs='+', default=MODES, choices=MODES)
    ap.add_argument('--batch', type=int, default=8)
    ap.add_argument('--rounds', type=int, default=7, help='interleaved rounds per preset (each measures every mode once, the two sides side by side)')
    ap.add_argument('--min-time', type=float, default=0.3, help='seconds per side per measurement (the steps of the two sides alternate; at least 2 each)')
    ap.add_argument('--threads', type=int, default=2, help='torch CPU threads')
    ap.add_argument('--device', default='cpu')
    ap.add_argument('--no-memory', action='store_true')
    ap.add_argument('--shares', action='store_true', help='also profile three eager steps per side: time shares of GEMMs, attention, GELU, the rest')
    a = ap.parse_args(argv)
    torch.set_num_threads(a.threads)
    print(f'DiT training step, ours vs diffusers {__import__("diffusers").__version__} (torch {torch.__version__}): batch {a.batch}, '
          f'32x32x4 latents, 1000 classes, learned sigma; {a.device}, {torch.get_num_threads()} threads; {a.rounds} interleaved rounds, '
          f'about {a.min_time} s per side per measurement, the two sides\' steps alternating; ratio = diffusers time / our time (> 1: ours faster), median [IQR] over rounds')
    head = f"{'preset':<9}{'mode':<14}{'ours ms':>9}{'diff. ms':>10}{'ratio':>7}{'  IQR':<13}{'ours MiB':>9}{'diff. MiB':>10}{'mem ratio':>10}{'compile s':>12}"
    print(head); print('-' * len(head))
    for name in a.presets:
        r = bench_preset(name, a.modes, a.batch, a.rounds, a.min_time, a.device, not a.no_memory, a.shares)
        print(f"{name:<9}{r['params'] / 1e6:.2f}M parameters; outputs agree to {r['err']:.1e}")
        for mode, why in r['failed'].items(): print(f"{'':<9}{mode:<14}did not run ({why})")
        for mode, m in r['modes'].items():
            mem = f"{m['mib'][0]:>9.0f}{m['mib'][1]:>10.0f}{m['mib'][1] / m['mib'][0]:>10.2f}" if 'mib' in m else ' ' * 29
            comp = f"{m['compile_s'][0]:>5.0f}/{m['compile_s'][1]:<5.0f}" if mode.startswith('compile') else ''
            print(f"{'':<9}{mode:<14}{m['ours_ms']:>9.1f}{m['diffusers_ms']:>10.1f}{m['ratio']:>7.2f}  [{m['iqr'][0]:.2f}, {m['iqr'][1]:.2f}]{mem}{comp:>12}")
        for mode, m in r['modes'].items():
            if 'shares' in m:
                o, d = m['shares']
                kernels = o['gemm'] + o['attention'] + o['gelu']
                print(f"{'':<9}{mode} shares of operator time: " + '; '.join(f"{side} " + ', '.join(f"{k} {v[k]:.0%}" for k in ('gemm', 'attention', 'gelu', 'norm', 'math', 'layout'))
                                                                        for side, v in (('ours', o), ('diffusers', d))))
                print(f"{'':<9}{mode} ratio if our rest (norm + math + layout) cost nothing: {m['diffusers_ms'] / (m['ours_ms'] * kernels):.2f}; "
                      f"if our layout cost nothing: {m['diffusers_ms'] / (m['ours_ms'] * (1 - o['layout'])):.2f}; "
                      f"if the layout our model's code asks for cost nothing ({o['model_layout']:.1%} of our time, diffusers' {d['model_layout']:.1%}): "
                      f"{m['diffusers_ms'] / (m['ours_ms'] * (1 - o['model_layout'])):.2f}; "
                      f"aten operator calls per step, ours {o['ops']:,.0f}, diffusers {d['ops']:,.0f}")
        b = r['best']
        print(f"{'':<9}{'best':<14}{b['ours_ms']:>9.1f}{b['diffusers_ms']:>10.1f}{b['ratio']:>7.2f}  [{b['iqr'][0]:.2f}, {b['iqr'][1]:.2f}]"
              f"  ours: {b['ours']}, diffusers: {b['diffusers']}", flush=True)

if __name__ == '__main__':
    main()
