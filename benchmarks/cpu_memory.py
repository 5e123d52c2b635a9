"""What `core.retain_freed_memory` buys a CPU training run: the main job's Trainer step with glibc's default malloc
against the same step in a process that keeps freed memory (as `dc-train`, `dc-sample` and `dc-eval` do on a CPU).

    python benchmarks/cpu_memory.py                        # bf16 (dc-train's default on a CPU with native bf16) and fp32
    python benchmarks/cpu_memory.py --precision bf16 --rounds 7

Protocol. The setting is per process and cannot be undone cleanly, so every measurement is a fresh process: it builds
the main job's U-Net and a `Trainer` exactly as `benchmarks/trainer_overhead.py` does (batch 64 of the offline MNIST
digits, L_simple, AdamW, gradient clipping, no callbacks), runs --warmup steps, then times --steps steps. A round runs
one process of each kind, in an order that alternates from round to round, so that load changes on a shared machine
hit both alike. Printed: the median milliseconds per step of each kind, the ratio default time / retained time per
round (> 1: retaining is faster; median [IQR]), and each kind's largest peak resident memory.
A benchmark, not a test: nothing is asserted.
"""
from __future__ import annotations
import argparse, json, resource, statistics, subprocess, sys, time

from trainer_overhead import quartiles

def worker(retain: bool, bf16: bool, steps: int, warmup: int, threads: int) -> dict:
    import torch
    from diffusion_course.core import retain_freed_memory
    if retain and not retain_freed_memory(): raise SystemExit('retain_freed_memory() does not apply here (it needs Linux with glibc)')
    from trainer_overhead import RecordingLoss, TrainerRun, main_job_model
    from diffusion_course.data import mnist_offline
    from diffusion_course.diffusion import ddpm
    torch.set_num_threads(threads)
    run = TrainerRun(main_job_model(), RecordingLoss(ddpm.Schedule.linear(1000)), mnist_offline(size=32, split='train'), 64, 1e-3, bf16, 1.0, [],
                     warmup + steps + 1)
    run.run(warmup)
    t0 = time.perf_counter(); run.run(steps); ms = 1000 * (time.perf_counter() - t0) / steps
    return {'ms': ms, 'rss_mib': resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}

def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument('--precision', nargs='+', default=['bf16', 'fp32'], choices=['bf16', 'fp32'])
    ap.add_argument('--rounds', type=int, default=5)
    ap.add_argument('--steps', type=int, default=10, help='timed Trainer steps per process')
    ap.add_argument('--warmup', type=int, default=3)
    ap.add_argument('--threads', type=int, default=2)
    ap.add_argument('--worker', choices=['default', 'retain'], help=argparse.SUPPRESS)
    a = ap.parse_args(argv)
    if a.worker:
        print(json.dumps(worker(a.worker == 'retain', a.precision[0] == 'bf16', a.steps, a.warmup, a.threads))); return
    print(f"The main job's Trainer step (UNet-S, batch 64), glibc malloc's default vs freed memory retained; {a.threads} threads, "
          f"{a.rounds} rounds of one fresh process each, {a.steps} steps timed after {a.warmup}")
    for prec in a.precision:
        res = {'default': [], 'retain': []}
        for r in range(a.rounds):
            for kind in (('default', 'retain') if r % 2 == 0 else ('retain', 'default')):
                cmd = [sys.executable, __file__, '--worker', kind, '--precision', prec, '--steps', str(a.steps), '--warmup', str(a.warmup), '--threads', str(a.threads)]
                out = subprocess.run(cmd, capture_output=True, text=True, check=True)
                res[kind].append(json.loads(out.stdout.strip().splitlines()[-1]))
        ratios = [d['ms'] / k['ms'] for d, k in zip(res['default'], res['retain'])]
        lo, hi = quartiles(ratios)
        print(f"{prec}: default {statistics.median(d['ms'] for d in res['default']):.0f} ms/step, retained {statistics.median(k['ms'] for k in res['retain']):.0f} ms/step; "
              f"default / retained {statistics.median(ratios):.2f} [{lo:.2f}, {hi:.2f}]; peak resident memory "
              f"{max(d['rss_mib'] for d in res['default']):.0f} vs {max(k['rss_mib'] for k in res['retain']):.0f} MiB", flush=True)

if __name__ == '__main__':
    main()
