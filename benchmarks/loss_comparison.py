"""The tiny backbones trained the same way on offline MNIST: same seed, same batches, same steps, same optimiser.

    python benchmarks/loss_comparison.py                        # 150 steps, batch 16 (a few minutes on a laptop CPU)
    python benchmarks/loss_comparison.py --steps 1000 --batch 64 --device cuda

Each preset is built with in_channels=1, num_classes=10, input_size=32, no learned variance, trained with
core.quick_train (AdamW, lr --lr, grad clip 1) on L_simple (linear schedule, T=1000) with label dropout, and reported
with: its parameters, the mean training loss of the first 10 and the last 20 steps, a fixed-noise loss (256 digits,
fixed t and eps, eval mode: the least noisy figure to compare), and CPU time per training step (process time, so
that other processes on a shared machine inflate it less than wall-clock time). Tiny presets only: this compares
how quickly each design starts to learn at a toy size, not how good it becomes.
"""
from __future__ import annotations
import argparse, functools, time

import torch

from diffusion_course.core import make_generator, quick_train, seed_everything
from diffusion_course.data import mnist_offline
from diffusion_course.diffusion import ddpm
from diffusion_course.registry import build

DEFAULT = ['UNet-T', 'DiT-T/2', 'U-ViT-T/2', 'DiffiT-T', 'XSwin-T']

@torch.no_grad()
def fixed_noise_loss(model, data, sched, n: int = 256, seed: int = 1, device='cpu') -> float:
    "L_simple on n fixed digits with fixed steps and noise, in eval mode (no label dropout)."
    g = make_generator(seed)
    x0, y = data.batch(torch.randperm(len(data), generator=g)[:n])
    t = torch.randint(0, sched.T, (n,), generator=g)
    eps = torch.randn(x0.shape, generator=g)
    model.eval()
    losses = [ddpm.l_simple(model, x0[i:i + 64].to(device), y[i:i + 64].to(device), sched=sched, t=t[i:i + 64].to(device),
                            eps=eps[i:i + 64].to(device)).item() * len(x0[i:i + 64]) for i in range(0, n, 64)]
    return sum(losses) / n

def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument('--presets', nargs='+', default=DEFAULT)
    ap.add_argument('--steps', type=int, default=150)
    ap.add_argument('--batch', type=int, default=16)
    ap.add_argument('--lr', type=float, default=1e-3)
    ap.add_argument('--seed', type=int, default=0)
    ap.add_argument('--device', default='cpu')
    ap.add_argument('--threads', type=int, default=None, help='torch CPU threads')
    a = ap.parse_args(argv)
    if a.threads: torch.set_num_threads(a.threads)
    data, sched = mnist_offline(), ddpm.Schedule.linear(1000)
    loss_fn = functools.partial(ddpm.l_simple, sched=sched)
    print(f"offline MNIST 32x32, {a.steps} steps, batch {a.batch}, AdamW lr {a.lr}, seed {a.seed}, device {a.device}")
    head = f"{'preset':<12}{'params':>9}{'first 10':>10}{'last 20':>10}{'fixed-noise':>13}{'CPU ms/step':>13}"
    print(head); print('-' * len(head))
    for name in a.presets:
        seed_everything(a.seed)
        model = build(name, in_channels=1, num_classes=10, input_size=32, learn_sigma=False).to(a.device)
        n = sum(p.numel() for p in model.parameters() if p.requires_grad)
        c0 = time.process_time()
        losses = quick_train(model, loss_fn, data.batches(a.batch, seed=a.seed, device=a.device), steps=a.steps, lr=a.lr,
                             device=a.device, progress=False)
        ms = 1000 * (time.process_time() - c0) / a.steps
        first, last = sum(losses[:10]) / 10, sum(losses[-20:]) / 20
        print(f"{name:<12}{n / 1e6:>8.2f}M{first:>10.4f}{last:>10.4f}{fixed_noise_loss(model, data, sched, device=a.device):>13.4f}{ms:>13.0f}",
              flush=True)

if __name__ == '__main__':
    main()
