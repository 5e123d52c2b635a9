"""Sampling speed of DDIM-25 on the main job's U-Net: images/s in fp32, under bf16 autocast, compiled, side by side.

    python benchmarks/sampling_speed.py                          # batch 64, guidance 3, 5 interleaved rounds
    python benchmarks/sampling_speed.py --batch 256 --modes fp32 bf16 --rounds 3

The model is the main job's class-conditional U-Net (`trainer_overhead.main_job_model`: UNet-S with base 32, mults
(1,2,4), one block per level, attention at the 8x8 level, ~2.6M parameters) with random weights, in eval mode. A run
samples --batch images by `dc-train`'s own sampling function (`cli.make_sample_fn`: DDIM, 25 trailing steps, eta 0,
classifier-free guidance 3, so every step evaluates the model on 2 x batch inputs) from one fixed noise batch with
labels 0..9 in turn. Modes: `fp32`; `bf16` (the same under CPU/CUDA bf16 autocast: the U-Net in bf16, the DDIM update in
float32); `compile` (torch.compile of the model, fp32) and `compile-bf16`. Each round runs every mode once, in an order
that rotates and reverses from round to round; images/s = batch / seconds of one run; the ratio to fp32 is taken per
round, median and interquartile range over rounds. The compile time (first run) is printed apart. Each mode's samples
are compared with the fp32 samples from the same noise (max and mean absolute difference, images in [-1, 1]): what a
faster mode changes in the images. A benchmark, not a test: nothing is asserted.
"""
from __future__ import annotations
import argparse, os, statistics, sys, time

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from trainer_overhead import main_job_model

from diffusion_course.cli import make_sample_fn
from diffusion_course.diffusion import ddpm

MODES = ['fp32', 'bf16', 'compile', 'compile-bf16']

def quartiles(v): q = statistics.quantiles(v, n=4) if len(v) > 1 else [v[0]] * 3; return q[0], q[2]

def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument('--batch', type=int, default=64)
    ap.add_argument('--steps', type=int, default=25)
    ap.add_argument('--cfg-scale', type=float, default=3.0)
    ap.add_argument('--modes', nargs='+', default=MODES, choices=MODES)
    ap.add_argument('--rounds', type=int, default=5)
    ap.add_argument('--threads', type=int, default=2)
    ap.add_argument('--device', default='cpu')
    a = ap.parse_args(argv)
    torch.set_num_threads(a.threads)
    dev = torch.device(a.device)
    model = main_job_model().to(dev).eval()
    with torch.no_grad():  # random weights everywhere (the zero-initialised output layer would make every mode alike)
        for p in model.parameters(): p.add_(0.02 * torch.randn_like(p))
    sched = ddpm.Schedule.linear(1000)
    sample_fn = make_sample_fn(sched, 'ddim', a.steps, cfg_scale=a.cfg_scale, num_classes=10)
    g = torch.Generator().manual_seed(0)
    x_T = torch.randn(a.batch, 1, 32, 32, generator=g).to(dev)
    y = (torch.arange(a.batch) % 10).to(dev)
    compiled = None
    def run(mode):
        nonlocal compiled
        net = model
        if mode.startswith('compile'):
            if compiled is None: compiled = torch.compile(model)
            net = compiled
        with torch.no_grad(), torch.autocast(dev.type, dtype=torch.bfloat16, enabled=mode.endswith('bf16')):
            out = sample_fn(net, x_T, y)
        if dev.type == 'cuda': torch.cuda.synchronize()
        return out.float()
    first_s, samples = {}, {}
    for mode in a.modes:  # first runs: compile, and the samples compared with fp32's
        t0 = time.perf_counter(); samples[mode] = run(mode); first_s[mode] = time.perf_counter() - t0
    times = {m: [] for m in a.modes}
    for r in range(a.rounds):
        order = a.modes[r % len(a.modes):] + a.modes[:r % len(a.modes)]
        for m in (order if r % 2 == 0 else order[::-1]):
            t0 = time.perf_counter(); run(m); times[m].append(time.perf_counter() - t0)
    print(f"DDIM-{a.steps} sampling, guidance {a.cfg_scale} (2 x {a.batch} model inputs per step), main-job U-Net "
          f"({sum(p.numel() for p in model.parameters()) / 1e6:.2f}M parameters), batch {a.batch} images of 1x32x32; {a.device}, "
          f"torch {torch.__version__}, {torch.get_num_threads()} threads; {a.rounds} interleaved rounds; "
          f"ratio = images/s / fp32 images/s, median [IQR]")
    head = f"{'mode':<14}{'s/run':>8}{'images/s':>10}{'ratio':>8}  {'IQR':<15}{'first run s':>12}  vs fp32 samples: max | mean abs diff"
    print(head); print('-' * len(head))
    ref = 'fp32' if 'fp32' in times else a.modes[0]
    for m in a.modes:
        ratios = [b / t for t, b in zip(times[m], times[ref])]
        lo, hi = quartiles(ratios)
        s = statistics.median(times[m])
        d = (samples[m] - samples[ref]).abs()
        print(f"{m:<14}{s:>8.2f}{a.batch / s:>10.1f}{statistics.median(ratios):>8.2f}  [{lo:.2f}, {hi:.2f}]{'':<3}{first_s[m]:>12.1f}  "
              f"{d.max().item():.3f} | {d.mean().item():.4f}", flush=True)

if __name__ == '__main__':
    main()
