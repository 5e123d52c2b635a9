"""Where one training step of each small backbone spends its time: the three most expensive operations of each.

    python benchmarks/profile_backbones.py                     # the default presets below, batch 8, 2 threads
    python benchmarks/profile_backbones.py --presets XSwin-T --top 5 --steps 3

Per preset: one training step (forward on a fixed batch in training mode, mean-squared loss, backward, gradients
dropped) after two warm-up steps, --steps times under torch.profiler (CPU); the operators ranked by their self time
(time inside the operator, not in operators it calls), summed over the profiled steps, each shown with its share of the
profiled time, its calls per step and its most expensive input shapes. The step time printed is the median of the
profiled steps (the profiler adds a little). A benchmark, not a test: nothing is asserted.
"""
from __future__ import annotations
import argparse, statistics, time
from collections import defaultdict

import torch
from torch.profiler import ProfilerActivity, profile

from diffusion_course.registry import build

PRESETS = ['UNet-T', 'UNet-S', 'DiT-T/2', 'U-ViT-T/2', 'DiffiT-T', 'DiffiT-Latent-T/4', 'XSwin-T']

def training_step(name: str, batch: int, seed: int = 0):
    "A function running one training step of the preset `name` on a fixed batch."
    torch.manual_seed(seed)
    model = build(name).train()
    with torch.no_grad():  # leave the zero initialisation, so that every branch computes what it will in training
        for p in model.parameters():
            if p.requires_grad: p.add_(0.02 * torch.randn_like(p))
    cfg, g = model.config, torch.Generator().manual_seed(seed)
    x = torch.randn(batch, cfg.in_channels, cfg.input_size, cfg.input_size, generator=g)
    t = torch.randint(0, 1000, (batch,), generator=g)
    y = torch.randint(0, cfg.num_classes, (batch,), generator=g) if cfg.num_classes else None
    params = list(model.parameters())
    def step():
        model(x, t, y).square().mean().backward()
        for p in params: p.grad = None
    return step, model

def top_ops(prof, steps: int, top: int):
    "[(name, self seconds per step, share, calls per step, most expensive input shapes)] of the `top` operators."
    by_name, by_shape = defaultdict(lambda: [0.0, 0]), defaultdict(float)
    for e in prof.key_averages(group_by_input_shape=True):
        if e.key.startswith(('ProfilerStep', 'autograd::engine')): continue
        by_name[e.key][0] += e.self_cpu_time_total; by_name[e.key][1] += e.count
        by_shape[e.key, str(e.input_shapes)] += e.self_cpu_time_total
    total = sum(v[0] for v in by_name.values())
    rows = []
    for name, (us, calls) in sorted(by_name.items(), key=lambda kv: -kv[1][0])[:top]:
        shape = max((s for (n, s) in by_shape if n == name), key=lambda s: by_shape[name, s])
        rows.append((name, us / 1e6 / steps, us / total, calls / steps, shape))
    return rows

def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument('--presets', nargs='+', default=PRESETS)
    ap.add_argument('--batch', type=int, default=8)
    ap.add_argument('--steps', type=int, default=2, help='profiled steps per preset')
    ap.add_argument('--top', type=int, default=3)
    ap.add_argument('--threads', type=int, default=2, help='torch CPU threads')
    a = ap.parse_args(argv)
    torch.set_num_threads(a.threads)
    print(f'one training step (forward, MSE, backward), batch {a.batch}, fp32, CPU with {torch.get_num_threads()} threads, '
          f'{a.steps} profiled steps after 2 warm-up; operators by self time')
    for name in a.presets:
        step, model = training_step(name, a.batch)
        step(); step()
        times = []
        with profile(activities=[ProfilerActivity.CPU], record_shapes=True) as prof:
            for _ in range(a.steps):
                t0 = time.perf_counter(); step(); times.append(time.perf_counter() - t0)
        n = sum(p.numel() for p in model.parameters())
        print(f'\n{name}: {n / 1e6:.2f}M parameters, {1000 * statistics.median(times):.1f} ms per step')
        for op, sec, share, calls, shape in top_ops(prof, a.steps, a.top):
            print(f'  {op:<48}{1000 * sec:>8.1f} ms {share:>6.1%} {calls:>6.0f} calls   e.g. {shape[:90]}')

if __name__ == '__main__':
    main()
