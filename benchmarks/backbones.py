"""Forward+backward speed and memory of the backbones, and our DiT against diffusers' DiTTransformer2DModel.

    python benchmarks/backbones.py                                  # default presets, CPU (and CUDA when present)
    python benchmarks/backbones.py --presets DiT-S/2 DiT-B/4 --batch 16 --steps 10 --device cuda

Per preset and device: milliseconds per training step (forward + backward of a mean-squared output; the fastest of
--steps after --warmup, the figure least disturbed by other processes on a shared machine; --stat median for the median), and peak memory: on CUDA torch.cuda.max_memory_allocated (bf16 autocast); on CPU an estimate,
parameters + gradients + the tensors autograd saves for backward (fp32). For every adaLN-Zero DiT preset the same is
measured for diffusers' DiTTransformer2DModel at the identical config, and the ratio ours / diffusers printed beside
it (below 1: ours is faster). A benchmark, not a test: nothing is asserted.
"""
from __future__ import annotations
import argparse, statistics, time

import torch

from diffusion_course.registry import build

DEFAULT = ['UNet-T', 'UNet-S', 'DiT-T/2', 'U-ViT-T/2', 'DiffiT-T', 'DiffiT-Latent-T/4', 'XSwin-T', 'DiT-S/4', 'DiT-S/2', 'DiT-B/4']

def diffusers_twin(cfg):
    "diffusers' DiTTransformer2DModel with the same architecture as our DiTConfig (adaLN-Zero only)."
    from diffusers import DiTTransformer2DModel
    return DiTTransformer2DModel(num_attention_heads=cfg.heads, attention_head_dim=cfg.dim // cfg.heads, in_channels=cfg.in_channels,
                                 out_channels=cfg.in_channels * (2 if cfg.learn_sigma else 1), num_layers=cfg.depth,
                                 sample_size=cfg.input_size, patch_size=cfg.patch, num_embeds_ada_norm=cfg.num_classes)

def _runner(model, cfg, batch: int, device: str, call):
    "A function running one training step (forward + backward) of `model` on a fixed batch, and its parameters."
    model = model.to(device).train()
    g = torch.Generator().manual_seed(0)
    x = torch.randn(batch, cfg.in_channels, cfg.input_size, cfg.input_size, generator=g).to(device)
    t = torch.randint(0, 1000, (batch,), generator=g).to(device)
    y = torch.randint(0, cfg.num_classes, (batch,), generator=g).to(device) if cfg.num_classes else None
    cuda, params = device.startswith('cuda'), list(model.parameters())
    def step(hooks=None):
        with torch.autocast('cuda', dtype=torch.bfloat16, enabled=cuda):
            if hooks is None: out = call(model, x, t, y)
            else:
                with torch.autograd.graph.saved_tensors_hooks(*hooks): out = call(model, x, t, y)
            loss = out.float().square().mean()
        loss.backward()
        for p in params: p.grad = None
    return step, params

def measure(runners: list, device: str, steps: int, warmup: int, stat: str = 'min') -> list[tuple[float, float]]:
    "(ms per forward+backward, peak MiB) of each runner; the runners' steps are interleaved so that load changes hit all alike."
    cuda = device.startswith('cuda')
    for step, _ in runners:
        for _ in range(warmup): step()
    times = [[] for _ in runners]
    for _ in range(steps):
        for (step, _), ts in zip(runners, times):
            if cuda: torch.cuda.synchronize()
            t0 = time.perf_counter(); step()
            if cuda: torch.cuda.synchronize()
            ts.append(1000 * (time.perf_counter() - t0))
    out = []
    for (step, params), ts in zip(runners, times):
        if cuda:
            torch.cuda.reset_peak_memory_stats(); step(); mem = torch.cuda.max_memory_allocated() / 2**20
        else:  # parameters + gradients + what autograd saves (views of one storage counted twice: an upper bound)
            saved = [0]
            def pack(x): saved[0] += x.numel() * x.element_size(); return x
            step((pack, lambda x: x))
            nbytes = sum(p.numel() * p.element_size() for p in params) + sum(p.numel() * p.element_size() for p in params if p.requires_grad)
            mem = (nbytes + saved[0]) / 2**20
        out.append(((min(ts) if stat == 'min' else statistics.median(ts)), mem))
    return out

ours_call = lambda m, x, t, y: m(x, t, y)
diffusers_call = lambda m, x, t, y: m(x, timestep=t, class_labels=y).sample

def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument('--presets', nargs='+', default=DEFAULT)
    ap.add_argument('--batch', type=int, default=8)
    ap.add_argument('--steps', type=int, default=5)
    ap.add_argument('--warmup', type=int, default=2)
    ap.add_argument('--device', nargs='+', default=None, help="cpu and/or cuda (default: cpu, plus cuda when present)")
    ap.add_argument('--threads', type=int, default=None, help='torch CPU threads')
    ap.add_argument('--stat', choices=['min', 'median'], default='min')
    ap.add_argument('--no-diffusers', action='store_true')
    a = ap.parse_args(argv)
    if a.threads: torch.set_num_threads(a.threads)
    devices = a.device or (['cpu'] + (['cuda'] if torch.cuda.is_available() else []))
    print(f'batch {a.batch}, {a.stat} of {a.steps} steps after {a.warmup} warm-up; CPU fp32 with {torch.get_num_threads()} threads'
          + (f'; CUDA bf16 autocast on {torch.cuda.get_device_name()}' if 'cuda' in devices else ''))
    head = f"{'preset':<12}{'params':>9} {'device':<6}{'ms/step':>10}{'peak MiB':>10}  {'diffusers ms':>12}{'d. MiB':>9}{'ours/diffusers':>15}"
    print(head); print('-' * len(head))
    for name in a.presets:
        torch.manual_seed(0)
        model = build(name)
        cfg = model.config
        n = sum(p.numel() for p in model.parameters())
        twin = None
        if not a.no_diffusers and type(model).__name__ == 'DiT' and cfg.block == 'adaln_zero' and cfg.num_classes:
            try: twin = diffusers_twin(cfg)
            except ImportError: twin = None
        for dev in devices:
            runners = [_runner(model, cfg, a.batch, dev, ours_call)] + ([_runner(twin, cfg, a.batch, dev, diffusers_call)] if twin is not None else [])
            res = measure(runners, dev, a.steps, a.warmup, a.stat)
            (ms, mem) = res[0]
            row = f'{name:<12}{n / 1e6:>8.2f}M {dev:<6}{ms:>10.1f}{mem:>10.0f}'
            if twin is not None:
                dms, dmem = res[1]
                row += f'  {dms:>12.1f}{dmem:>9.0f}{ms / dms:>15.2f}'
            print(row, flush=True)
            model.to('cpu'); twin is not None and twin.to('cpu')

if __name__ == '__main__':
    main()
