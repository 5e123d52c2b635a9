"""FD against the number of model evaluations for every sampler of the course, on dc-train runs, with DDPM over all T steps as
the reference (issue 13's goal: the best sampler within 1.5x of DDPM-1000's FD at 10 evaluations, within 1.1x at 25).

    python benchmarks/samplers.py RUN [--flow FLOW_RUN] [--n 500] [--evals 5,10,25,50,100] [--json out.json]

Every cell of the table samples the same N class-balanced labels (0..9 in turn) from the same starting noise (seed 0), with the
EMA weights and guidance scale 1 (the conditional model: one forward pass per evaluation), and is scored by `Evaluator.mnist`
(the course's digit classifier, 500 held-out reference digits); the ruler (real digits that no model saw, blurred, noisy, one
class, pure noise) is scored at the same N and printed beside. A sampler gets the most grid steps whose run takes at most the
column's evaluations (`samplers.steps_for_evals`: Heun and EDM take 2 n - 1 on a trained chain); the table prints the actual count.
With --json the results are written after every cell and a rerun with the same --json skips the cells already measured, so a
long table can be measured in several shorter runs."""
from __future__ import annotations
import argparse, json, os, sys, time
from pathlib import Path

import torch

from diffusion_course.cli import load_trained, objective_process, parse_labels, sample_fn_for
from diffusion_course.diffusion.continuous import Flow
from diffusion_course.diffusion.samplers import SAMPLERS, steps_for_evals
from diffusion_course.diffusion.schedules import make_schedule
from diffusion_course.evaluation import Evaluator, Protocol, format_table, generate


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split('\n\n')[0], formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument('run', help='a dc-train run folder (an eps, x0 or v model): every sampler, and DDPM over all T steps')
    p.add_argument('--flow', help='a dc-train run trained with --objective flow, measured the same way (no DDPM: it has no chain)')
    p.add_argument('--n', type=int, default=500, help='samples per cell; the ruler uses the same N')
    p.add_argument('--evals', default='5,10,25,50,100', help='model evaluations (columns)')
    p.add_argument('--samplers', default=','.join(SAMPLERS), help='rows')
    p.add_argument('--ddpm-steps', type=int, default=None, help="the reference's steps (default: the run's T); 0: no reference")
    p.add_argument('--cfg-scale', type=float, default=1.0)
    p.add_argument('--seed', type=int, default=0)
    p.add_argument('--batch-size', type=int, default=250)
    p.add_argument('--threads', type=int, default=None, help='torch threads (default: torch decides)')
    p.add_argument('--json', help='write (and resume from) the results here')
    p.add_argument('--fp32', action='store_true', help="the model's forward in fp32 (default: bf16 autocast where the CPU or GPU has native bf16, as the runs trained)")
    p.add_argument('--no-channels-last', dest='channels_last', action='store_false', help='keep NCHW inputs (channels-last is oneDNN\'s fast path for bf16 convolutions)')
    p.add_argument('--only', choices=('all', 'table', 'reference'), default='all', help='measure only the sampler cells, or only DDPM')
    return p.parse_args(argv)


def cpu_has_bf16() -> bool:
    "Whether this CPU has native bf16 (AMX or AVX512-BF16): bf16 autocast pays there."
    try: flags = open('/proc/cpuinfo').read()
    except OSError: return False
    return 'amx_bf16' in flags or 'avx512_bf16' in flags


class FastForward(torch.nn.Module):
    "A model called as model(x, t, y) with its forward under bf16 autocast and channels-last inputs; returns float32 (the samplers' arithmetic stays fp32)."
    def __init__(self, model: torch.nn.Module, bf16: bool, channels_last: bool):
        super().__init__()
        self.model, self.bf16, self.channels_last = model, bf16, channels_last
    def forward(self, x, t, y=None):
        if self.channels_last and x.dim() == 4: x = x.contiguous(memory_format=torch.channels_last)
        with torch.autocast(x.device.type, dtype=torch.bfloat16, enabled=self.bf16): return self.model(x, t, y).float()


def cell_key(run: str, sampler: str, evals: int) -> str: return f"{run}|{sampler}|{evals}"


def measure(model, config, evaluator, sampler: str, steps: int, n: int, y, cfg_scale: float, seed: int, batch_size: int, device='cpu') -> dict:
    "Sample n images with `sampler` over `steps` grid steps and score them: the metrics, the evaluations and the seconds."
    fn = sample_fn_for(config, sampler, steps, cfg_scale=cfg_scale)
    t0 = time.time()
    x = generate(model, fn, n, tuple(config['image_shape']), y, seed=seed, batch_size=batch_size, device=device, progress=False)
    secs = time.time() - t0
    m = evaluator.score(x, y)
    return {'sampler': sampler, 'steps': steps, 'evals': len(fn.sampler.timesteps()), 'seconds': round(secs, 1),
            **{k: m[k] for k in ('fd', 'kid', 'precision', 'recall', 'accuracy') if k in m}}


def table(results: dict, runs: dict, samplers, evals, ref: dict | None) -> str:
    "FD per sampler (rows) and evaluation budget (columns), class accuracy in brackets, the actual evaluations where they differ."
    w = 20
    lines = [f"{'sampler':{w}s}" + ''.join(f"{e:>20d}" for e in evals)]
    for tag in runs:
        for s in samplers:
            row = []
            for e in evals:
                r = results.get(cell_key(tag, s, e))
                if r is None: row.append(f"{'-':>20s}"); continue
                note = '' if r['evals'] == e else f" [{r['evals']}]"
                row.append(f"{r['fd']:9.2f} ({r.get('accuracy', float('nan')):.3f}){note}".rjust(20))
            if any(cell_key(tag, s, e) in results for e in evals): lines.append(f"{tag + ' ' + s:{w}s}" + ''.join(row))
    if ref: lines.append(f"{'eps ddpm ' + str(ref['evals']):{w}s}{ref['fd']:9.2f} ({ref.get('accuracy', float('nan')):.3f})  (every column's reference)")
    return '\n'.join(lines)


def goal(results: dict, tag: str, samplers, ref: dict) -> list[str]:
    "Issue 13's goal: the best sampler at <= 10 and <= 25 evaluations against DDPM's FD."
    out = []
    for budget, limit in ((10, 1.5), (25, 1.1)):
        cells = [r for k, r in results.items() if k.startswith(tag + '|') and r['evals'] <= budget and r['sampler'] in samplers
                 and int(k.split('|')[2]) == budget]
        if not cells: continue
        best = min(cells, key=lambda r: r['fd'])
        ratio = best['fd'] / ref['fd']
        out.append(f"goal at {budget} evaluations: best {best['sampler']} ({best['evals']} evaluations) FD {best['fd']:.2f} = {ratio:.2f} x "
                   f"DDPM-{ref['evals']}'s {ref['fd']:.2f}; target <= {limit} x: {'met' if ratio <= limit else 'not met'}")
    return out


def main(argv=None):
    a = parse_args(argv)
    if a.threads: torch.set_num_threads(a.threads)
    evals, samplers = [int(e) for e in a.evals.split(',')], [s for s in a.samplers.split(',') if s]
    bad = [s for s in samplers if s not in SAMPLERS]
    if bad: raise SystemExit(f"unknown sampler(s) {bad}; expected some of {SAMPLERS}")
    saved = json.loads(Path(a.json).read_text()) if a.json and Path(a.json).exists() else {}
    def save():
        if a.json: Path(a.json).write_text(json.dumps({'cells': results, 'n': a.n, 'seed': a.seed, 'cfg_scale': a.cfg_scale, 'ruler': ruler,
                                                       'protocol': protocol.to_dict(), 'precision': precision, 'checkpoints': checkpoints}, indent=1))
    runs = {'eps': a.run, **({'flow': a.flow} if a.flow else {})}
    device = torch.device('cuda' if torch.cuda.is_available() else 'cpu')
    models = {t: load_trained(r, device=device) for t, r in runs.items()}
    bf16 = not a.fp32 and all(c.get('args', {}).get('bf16', False) for _, c in models.values()) and (torch.cuda.is_available() or cpu_has_bf16())
    models = {t: (FastForward(m.to(memory_format=torch.channels_last) if a.channels_last else m, bf16, a.channels_last), c) for t, (m, c) in models.items()}
    precision = ('bf16 autocast' if bf16 else 'fp32') + (', channels-last' if a.channels_last else '')
    checkpoints = {t: str(Path(c['checkpoint']).resolve()) for t, (_, c) in models.items()}
    same = saved and all(saved.get(k) == v for k, v in (('n', a.n), ('seed', a.seed), ('cfg_scale', a.cfg_scale), ('precision', precision))) \
        and all(saved.get('checkpoints', {}).get(t) == c for t, c in checkpoints.items())
    if saved and not same: print(f"{a.json} holds another measurement (checkpoints, N, seed, guidance or precision differ): measuring afresh", flush=True)
    results = dict(saved['cells']) if same else {}
    config0 = models['eps'][1]
    evaluator = Evaluator.mnist(size=config0['image_shape'][-1])
    t0 = time.time()
    ruler = evaluator.ruler(a.n)
    y = parse_labels(None, a.n, config0)  # 0, 1, ..., 9, 0, ...: class-balanced
    protocol = Protocol(a.n, 'sampler per row', None, a.cfg_scale, 'ema', a.seed, evaluator.extractor.name, evaluator.reference_name, checkpoint=config0['checkpoint'])
    for t, (_, cfg) in models.items():
        print(f"{t}: {cfg['checkpoint']} (objective {cfg.get('objective', 'eps')}, model {cfg['model'].get('preset')}, "
              f"{sum(p.numel() for p in models[t][0].parameters()):,} parameters); forward in {precision}", flush=True)
    if a.only in ('all', 'table'):
        for t, (model, cfg) in models.items():
            process, prediction = objective_process(cfg.get('objective', 'eps'), make_schedule(cfg['schedule'], cfg['T']))
            for e in evals:  # column by column: a run cut short keeps whole columns of the cheap budgets
                for s in samplers:
                    if s == 'ddim' and isinstance(process, Flow): continue  # on a flow model 'ddim' is Euler: measured once
                    k = cell_key(t, s, e)
                    if k in results: continue
                    steps = steps_for_evals(s, process, e, prediction)
                    results[k] = measure(model, cfg, evaluator, s, steps, a.n, y, a.cfg_scale, a.seed, a.batch_size, device)
                    r = results[k]
                    print(f"{t:4s} {s:9s} {r['evals']:4d} evaluations ({steps} steps): FD {r['fd']:8.2f}  accuracy {r.get('accuracy', 0):.3f}  "
                          f"{r['seconds']:.0f} s", flush=True)
                    save()
    ref_steps = config0['T'] if a.ddpm_steps is None else a.ddpm_steps
    if ref_steps and a.only in ('all', 'reference') and cell_key('eps', 'ddpm', ref_steps) not in results:
        model, cfg = models['eps']
        results[cell_key('eps', 'ddpm', ref_steps)] = r = measure(model, cfg, evaluator, 'ddpm', ref_steps, a.n, y, a.cfg_scale, a.seed, a.batch_size, device)
        print(f"eps  ddpm      {r['evals']:4d} evaluations: FD {r['fd']:8.2f}  accuracy {r.get('accuracy', 0):.3f}  {r['seconds']:.0f} s", flush=True)
        save()
    ref = results.get(cell_key('eps', 'ddpm', ref_steps)) if ref_steps else None
    print(f"\n{protocol}; forward in {precision}; sampler and evaluations per cell; {torch.get_num_threads()} threads, {time.time() - t0:.0f} s this run")
    print("FD (class accuracy) against model evaluations; [n]: the evaluations actually taken (Heun, EDM: 2 x steps - 1)")
    print(table(results, runs, samplers, evals, ref))
    if ref:
        for t in runs: print('\n'.join(f"{t}: {line}" for line in goal(results, t, samplers, ref)))
    print(f"\nruler at N = {a.n} (real digits no model saw, degraded):")
    print(format_table(ruler))
    save()
    return results


if __name__ == '__main__':
    main()
