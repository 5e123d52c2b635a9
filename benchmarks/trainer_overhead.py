"""What `dc-train`'s Trainer costs beyond the training step itself, and what each callback costs.

    python benchmarks/trainer_overhead.py                     # the main job's U-Net, batch 64, 6 rounds of 8 steps
    python benchmarks/trainer_overhead.py --rounds 9 --steps-per-round 12 --no-bf16

The model is the main job's class-conditional U-Net, `build('UNet-S', in_channels=1, num_classes=10, input_size=32,
base=32, mults=(1,2,4), blocks=1, attn_levels=(2,), heads=4, groups=8)`, trained with L_simple (linear schedule,
T = 1000) on the offline MNIST digits, batch 64, AdamW lr 1e-3, gradient clipping at 1.0 (dc-train's default).

Steps/s. Every runner starts from the same weights and trains on its own copy; a round runs each runner for
--steps-per-round optimizer steps, in an order that rotates and reverses from round to round (so that load changes on
a shared machine hit every runner alike). Runners:
  bare        a plain loop: random batch from the data, loss, backward, clip_grad_norm_, AdamW step, zero_grad
              (the same AdamW implementation as the Trainer's: fused or not)
  trainer     `Trainer.fit` with no callbacks (adds: shuffled sharded batches, the LR schedule, the finiteness check
              and `loss.item()` each step)
  +EMA, +progress, +loss plot     the Trainer with that one per-step callback
  +all per-step                   EMA, loss plot and progress bar together, as dc-train runs them between events
  bare, loop AdamW                (optional) the bare loop with AdamW's per-tensor loop instead of its fused kernel
The precision of the bare loop is whatever the Trainer really used (recorded inside the loss: autocast on or off, and
its dtype), so the two always compare like with like; the header prints it. Ratios are per round (trainer time / bare
time, > 1: the trainer is slower), median and interquartile range over rounds.

Events. The callbacks that act every N steps are timed per event, --events times each (median): a ProgressGIF frame
(DDIM-25 with guidance 3 on 40 fixed noises, as dc-train), a SampleGrid (the same sampling, written as a PNG) and a
Checkpoint save (model, EMA, optimizer, random states, to a temporary folder). Then the cost of dc-train's default
cadence over a --job-steps run (a frame at step 0, every job_steps/10 steps; a checkpoint every job_steps/4; one grid
at the end) is given as a share of that run's training time at the trainer's measured step rate.
A benchmark, not a test: nothing is asserted.
"""
from __future__ import annotations
import argparse, contextlib, functools, io, statistics, tempfile, time
from pathlib import Path

import torch

from diffusion_course.cli import make_sample_fn
from diffusion_course.data import mnist_offline
from diffusion_course.diffusion import ddpm
from diffusion_course.registry import build
from diffusion_course.training import EMA, Checkpoint, LossPlot, ProgressBar, ProgressGIF, SampleGrid, Trainer

MAIN_JOB_UNET = dict(in_channels=1, num_classes=10, input_size=32, base=32, mults=(1, 2, 4), blocks=1, attn_levels=(2,), heads=4, groups=8)

def main_job_model(seed: int = 0) -> torch.nn.Module:
    "The main job's class-conditional U-Net (~2.6M parameters)."
    torch.manual_seed(seed)
    return build('UNet-S', **MAIN_JOB_UNET)

class RecordingLoss:
    "L_simple that records the autocast state it ran under (so the bare loop can match the Trainer's precision)."
    def __init__(self, sched):
        self.loss, self.autocast, self.seen = functools.partial(ddpm.l_simple, sched=sched), None, False
    def __call__(self, model, x0, y):
        if not self.seen:
            on, self.seen = torch.is_autocast_enabled('cpu'), True
            self.autocast = torch.get_autocast_dtype('cpu') if on else None
        return self.loss(model, x0, y)

class BareLoop:
    "The training step with nothing around it: batch, loss, backward, clipping, AdamW."
    def __init__(self, model, loss_fn, data, batch: int, lr: float, autocast_dtype, grad_clip: float | None, opt_flags: dict, seed: int = 0):
        self.model, self.loss_fn, self.data, self.batch, self.dtype, self.clip = model.train(), loss_fn, data, batch, autocast_dtype, grad_clip
        self.opt = torch.optim.AdamW(model.parameters(), lr=lr, **opt_flags)  # the Trainer's implementation (fused or not)
        self.g = torch.Generator().manual_seed(seed)
    def run(self, n: int):
        for _ in range(n):
            x0, y = self.data.batch(torch.randint(0, len(self.data), (self.batch,), generator=self.g))
            with torch.autocast('cpu', dtype=self.dtype or torch.bfloat16, enabled=self.dtype is not None):
                loss = self.loss_fn(self.model, x0, y)
            loss.backward()
            if self.clip: torch.nn.utils.clip_grad_norm_(self.model.parameters(), self.clip)
            self.opt.step()
            self.opt.zero_grad(set_to_none=True)

class TrainerRun:
    "A Trainer with the given callbacks, advanced n steps at a time by `fit(until=...)`."
    def __init__(self, model, loss_fn, data, batch: int, lr: float, bf16: bool, grad_clip: float | None, callbacks, total: int, compile: bool = False):
        self.t = Trainer(model, loss_fn, data, steps=total, batch_size=batch, lr=lr, warmup=0, grad_clip=grad_clip, device='cpu',
                         bf16=bf16, compile=compile, callbacks=callbacks)
    def run(self, n: int): self.t.fit(until=self.t.step + n)

def quartiles(v): q = statistics.quantiles(v, n=4) if len(v) > 1 else [v[0]] * 3; return q[0], q[2]

def time_event(fn, n: int) -> float:
    "Median seconds of n calls of fn()."
    out = []
    for _ in range(n):
        t0 = time.perf_counter(); fn(); out.append(time.perf_counter() - t0)
    return statistics.median(out)

def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument('--batch', type=int, default=64)
    ap.add_argument('--lr', type=float, default=1e-3)
    ap.add_argument('--grad-clip', type=float, default=1.0)
    ap.add_argument('--no-bf16', dest='bf16', action='store_false', help="the Trainer's bf16 flag off (default on, as dc-train)")
    ap.add_argument('--rounds', type=int, default=6)
    ap.add_argument('--steps-per-round', type=int, default=8)
    ap.add_argument('--events', type=int, default=2, help='timed calls of each event callback')
    ap.add_argument('--no-grid', action='store_true', help='skip timing the sample grid (the same sampling as a GIF frame)')
    ap.add_argument('--job-steps', type=int, default=2000, help='the run length over which the event cadence is costed')
    ap.add_argument('--threads', type=int, default=2)
    ap.add_argument('--runners', nargs='+', default=['bare', 'trainer', '+EMA', '+progress', '+loss plot', '+all per-step'])
    a = ap.parse_args(argv)
    torch.set_num_threads(a.threads)
    data = mnist_offline(size=32, split='train')
    sched = ddpm.Schedule.linear(1000)
    init = main_job_model().state_dict()
    n_params = sum(p.numel() for p in main_job_model().parameters())
    total = a.rounds * a.steps_per_round + 10
    def fresh():
        m = main_job_model(); m.load_state_dict(init); return m
    loss = RecordingLoss(sched)
    per_step = {'trainer': [], '+EMA': [EMA(beta=0.999)], '+progress': [ProgressBar()], '+loss plot': [LossPlot()],
                '+all per-step': [EMA(beta=0.999), LossPlot(), ProgressBar()]}
    runners = {}
    for name in a.runners:
        if name.startswith('bare'): continue
        runners[name] = TrainerRun(fresh(), loss, data, a.batch, a.lr, a.bf16, a.grad_clip, per_step[name], total)
    first = next(iter(runners.values()))
    with contextlib.redirect_stdout(io.StringIO()): first.run(1)  # the Trainer's first step tells the precision it uses
    if 'bare' in a.runners:
        flags = {k: first.t.opt.defaults[k] for k in ('fused', 'foreach') if k in first.t.opt.defaults}
        runners = {'bare': BareLoop(fresh(), loss, data, a.batch, a.lr, loss.autocast, a.grad_clip, flags), **runners}
    if 'bare, loop AdamW' in a.runners:  # what the fused optimizer saves: the bare loop with the per-tensor Python loop of AdamW
        runners['bare, loop AdamW'] = BareLoop(fresh(), loss, data, a.batch, a.lr, loss.autocast, a.grad_clip, dict(foreach=False))
    for name, r in runners.items():
        if r is not first:
            with contextlib.redirect_stdout(io.StringIO()): r.run(1)  # warm-up
    precision = 'fp32' if loss.autocast is None else f'{loss.autocast} autocast'.replace('torch.', '')
    print(f'Trainer overhead: main-job U-Net ({n_params / 1e6:.2f}M parameters), batch {a.batch}, AdamW lr {a.lr}, grad clip {a.grad_clip}; '
          f"Trainer(bf16={a.bf16}) ran in {precision} on the CPU with AdamW(fused={first.t.opt.defaults.get('fused')}), and so does the bare loop; torch {torch.__version__}, {torch.get_num_threads()} threads; "
          f'{a.rounds} interleaved rounds of {a.steps_per_round} steps; ratio = runner time / bare time (> 1: slower), median [IQR]', flush=True)
    keys, times = list(runners), {k: [] for k in runners}
    for r in range(a.rounds):
        order = keys[r % len(keys):] + keys[:r % len(keys)]
        for k in (order if r % 2 == 0 else order[::-1]):
            with contextlib.redirect_stdout(io.StringIO()):  # the progress bar's lines (it still formats and writes them)
                t0 = time.perf_counter(); runners[k].run(a.steps_per_round)
                times[k].append((time.perf_counter() - t0) / a.steps_per_round)
    base = 'bare' if 'bare' in times else keys[0]
    head = f"{'runner':<16}{'ms/step':>9}{'steps/s':>9}{'ratio':>8}  IQR"
    print(head); print('-' * (len(head) + 12))
    for k in keys:
        ratios = [t / b for t, b in zip(times[k], times[base])]
        ms = 1000 * statistics.median(times[k])
        lo, hi = quartiles(ratios)
        print(f"{k:<16}{ms:>9.1f}{1000 / ms:>9.2f}{statistics.median(ratios):>8.3f}  [{lo:.3f}, {hi:.3f}]", flush=True)
    # events: GIF frame, sample grid, checkpoint (on the '+all per-step' trainer when present: it has the EMA to sample from)
    host = runners.get('+all per-step', runners.get('+EMA', first)).t
    sample_fn = make_sample_fn(sched, 'ddim', 25, cfg_scale=3.0, num_classes=10)
    with tempfile.TemporaryDirectory() as d:
        gif = ProgressGIF(sample_fn, Path(d) / 'progress.gif', n=40, num_classes=10); gif.setup(host)
        grid = SampleGrid(sample_fn, Path(d) / 'samples.png', n=40, num_classes=10)
        ck = Checkpoint(Path(d) / 'run', every=10**9, keep=2)
        frame_s = time_event(lambda: gif.frame(host), a.events)
        grid_s = float('nan') if a.no_grid else time_event(lambda: grid.sample(host), a.events)
        ckpt_s = time_event(lambda: ck.save(host), a.events)
    step_s = statistics.median(times['trainer' if 'trainer' in times else keys[-1]])
    per_step_cb = statistics.median(times['+all per-step']) - statistics.median(times['trainer']) if {'+all per-step', 'trainer'} <= set(times) else 0.0
    S = a.job_steps
    frames, ckpts = 1 + 10, 4  # dc-train: every = S/10 (plus the step-0 frame), ckpt_every = S/4 (the last one at step S)
    train_s = S * step_s
    print(f"\nevents (median of {a.events}): GIF frame {frame_s:.2f} s (DDIM-25, guidance 3, 40 images), sample grid {grid_s:.2f} s, "
          f"checkpoint {ckpt_s:.2f} s")
    print(f"a {S}-step dc-train run at the trainer's {1 / step_s:.2f} steps/s: training {train_s:.0f} s; per-step callbacks "
          f"{S * per_step_cb:.0f} s ({S * per_step_cb / train_s:.1%}); {frames} GIF frames {frames * frame_s:.0f} s ({frames * frame_s / train_s:.1%}); "
          f"{ckpts} checkpoints {ckpts * ckpt_s:.1f} s ({ckpts * ckpt_s / train_s:.1%}); 1 sample grid {grid_s:.0f} s ({grid_s / train_s:.1%})")

if __name__ == '__main__':
    main()
