"""The main job, measured: `dc-train` with no arguments, end to end in a fresh folder, then every figure beside the ruler.

    python benchmarks/main_job.py                      # the default run (about 10 minutes on 2 CPU cores)
    python benchmarks/main_job.py --keep runs/main-job --assets assets   # keep the run, copy its GIF and grid into assets/
    python benchmarks/main_job.py --sweeps --keep runs/main-job          # also quality against sampling steps and guidance
    python benchmarks/main_job.py --run runs/main-job --sweeps           # only the sweeps, on an existing run

Protocol. `dc-train` runs as a user runs it (a subprocess, default options, PyTorch's default threads) in a new folder;
the wall time counts everything from the command to its last file: data, training, the GIF frames, the sample grid and
the final evaluation (N class-balanced samples from the EMA weights with the run's own sampler, steps and guidance,
scored by the course's digit classifier features against 500 held-out reference digits that training never sees; the
ruler is the same metrics at the same N for real digits, blurred ones, noisy ones, one class only and pure noise).
The bar (issue 9): FD below the ruler's "noise 0.1" row (aim: at most 10x the real-vs-real floor), class accuracy
>= 0.97, no near-copies of training digits, at most 10 minutes. `--sweeps` adds FD, class accuracy and precision /
recall against sampling steps (DDPM 1000, or 1000 Euler steps for a flow model; DDIM 10, 25, 50, 100 at the run's guidance) and against guidance scale
(0 to 8 at the run's DDIM steps), each at the same N and seed, with the floor. A benchmark, not a test: it prints the
verdict, it does not fail.
"""
from __future__ import annotations
import argparse, json, os, shutil, subprocess, sys, tempfile, time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
BAR = dict(minutes=10.0, accuracy=0.97, copies=0.0, aim_floor_multiple=10.0)
STEPS = [('ddim', 10), ('ddim', 25), ('ddim', 50), ('ddim', 100)]  # after the reference: DDPM over all 1,000 steps (eps, x0, v), or 1,000 Euler steps (flow)
SCALES = [0.0, 1.0, 1.5, 2.0, 3.0, 4.0, 6.0, 8.0]


def dc_train(out: Path, extra: list[str]) -> float:
    "Run `dc-train` as a user does; the wall time in seconds, its output streamed."
    script = Path(sys.executable).parent / 'dc-train'
    cmd = [str(script)] if script.exists() else [sys.executable, '-c', 'import sys; from diffusion_course.cli import train_main; sys.exit(train_main())']
    t0 = time.time()
    subprocess.run(cmd + ['--out', str(out), *extra], check=True, cwd=ROOT)
    return time.time() - t0


def verdict(m: dict, ruler: dict, minutes: float | None) -> list[str]:
    "The bar of issue 9, one line per requirement."
    floor, noisy = ruler['real']['fd'], ruler['noise 0.1']['fd']
    lines = [f"FD {m['fd']:.2f} vs the ruler's noise 0.1 row {noisy:.2f}: {'better' if m['fd'] < noisy else 'NOT better'}",
             f"FD / floor {m['fd'] / floor:.1f}x (aim <= {BAR['aim_floor_multiple']:.0f}x): {'met' if m['fd'] <= BAR['aim_floor_multiple'] * floor else 'not met'}",
             f"class accuracy {m['accuracy']:.3f} (bar >= {BAR['accuracy']}): {'met' if m['accuracy'] >= BAR['accuracy'] else 'NOT met'}",
             f"near-copies {m['copies']:.3f} (bar 0): {'met' if m['copies'] <= BAR['copies'] else 'NOT met'}"]
    if minutes is not None: lines.append(f"wall {minutes:.1f} min (bar <= {BAR['minutes']:.0f}): {'met' if minutes <= BAR['minutes'] else 'NOT met'}")
    return lines


def sweep_table(run: Path, n: int, configs: list[tuple[str, dict]]) -> list[dict]:
    "Score the run at each configuration (same N, seed and reference); rows of figures."
    from diffusion_course.evaluation import evaluate_checkpoint
    rows = []
    for name, kw in configs:
        r = evaluate_checkpoint(run, n=n, progress=False, **kw)
        m, floor = r['metrics'], r['ruler']['real']['fd']
        rows.append(dict(setting=name, fd=m['fd'], fd_over_floor=m['fd'] / floor, accuracy=m['accuracy'], precision=m['precision'],
                         recall=m['recall'], copies=m['copies'], sample_s=r['seconds']['sample'], protocol=r['protocol']))
        print(f"  {name:<16s} FD {m['fd']:8.2f} ({m['fd'] / floor:5.1f}x floor)  accuracy {m['accuracy']:.3f}  precision {m['precision']:.2f}  "
              f"recall {m['recall']:.2f}  copies {m['copies']:.3f}  [{r['seconds']['sample']:.0f} s sampling]", flush=True)
    return rows


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument('--run', help='measure this existing run instead of training one (no wall time then)')
    p.add_argument('--keep', help='train into this folder and keep it (default: a temporary folder, deleted)')
    p.add_argument('--assets', help="copy the run's progress.gif, samples.png and eval figures into this folder (as dc-train-*.png/gif)")
    p.add_argument('--sweeps', action='store_true', help='also quality against sampling steps and guidance scale')
    p.add_argument('--sweep-n', type=int, default=500, help='N of each sweep point')
    p.add_argument('--json', help='write every figure here')
    p.add_argument('dc_train_args', nargs=argparse.REMAINDER, help='after --: extra dc-train options (the default run has none)')
    a = p.parse_args()
    extra = [x for x in a.dc_train_args if x != '--']
    tmp = None
    if a.run: run, wall = Path(a.run), None
    else:
        if a.keep:
            run = Path(a.keep)
            if run.exists() and any(run.iterdir()): p.error(f"--keep {run} is not empty: the benchmark trains a new run (measure an existing one with --run)")
        else: tmp = tempfile.mkdtemp(prefix='main-job-'); run = Path(tmp) / 'run'
        print(f"dc-train {' '.join(extra) or '(no arguments)'} --out {run}", flush=True)
        wall = dc_train(run, extra)
    try:
        summary = json.loads((run / 'summary.json').read_text()) if (run / 'summary.json').exists() else {}
        res = json.loads((run / 'metrics.json').read_text())
        from diffusion_course.evaluation import Protocol, format_table
        cfg = json.loads((run / 'config.json').read_text())
        import torch
        from diffusion_course.cli import load_trained
        params = sum(q.numel() for q in load_trained(run)[0].parameters())
        print(f"\nmodel {cfg['args']['model']}, {params:,} parameters; {cfg['args']['steps']} steps of {cfg['args']['batch_size']}; "
              f"torch {torch.__version__}, {torch.get_num_threads()} threads, {os.cpu_count()} CPUs")
        if wall is not None:
            ev = summary.get('eval', {})
            print(f"wall {wall:.0f} s end to end ({wall / 60:.1f} min): training {summary['seconds']:.0f} s ({summary['steps_per_s']} steps/s, "
                  f"GIF frames and grid included), final evaluation {ev.get('seconds', float('nan')):.0f} s")
        print(Protocol(**res['protocol']))
        print(format_table({'samples': res['metrics'], **res['ruler']}, floor=res['ruler']['real']['fd']))
        print('\n'.join(verdict(res['metrics'], res['ruler'], None if wall is None else wall / 60)))
        out = dict(wall_s=wall, summary=summary, metrics=res['metrics'], ruler=res['ruler'], protocol=res['protocol'])
        if a.sweeps:
            w = cfg['args']['cfg_scale']
            print(f"\nquality against sampling steps (guidance {w:g}, N = {a.sweep_n}, seed 0, EMA weights):", flush=True)
            ref = 'euler' if cfg.get('objective') == 'flow' else 'ddpm'  # a flow model has no DDPM chain: its reference solves the ODE in 1,000 Euler steps
            out['steps_sweep'] = sweep_table(run, a.sweep_n, [(f"{s.upper()} {k}", dict(sampler=s, steps=k)) for s, k in [(ref, 1000)] + STEPS])
            k = cfg['args']['sample_steps']
            print(f"\nquality against guidance scale (DDIM {k}, N = {a.sweep_n}, seed 0, EMA weights; 0: unconditional, 1: conditional, no guidance):", flush=True)
            out['guidance_sweep'] = sweep_table(run, a.sweep_n, [(f"guidance {s:g}", dict(cfg_scale=s)) for s in SCALES])
            print(f"(real-data floor at N = {a.sweep_n}: FD {res['ruler']['real']['fd']:.2f}; noise 0.1: {res['ruler']['noise 0.1']['fd']:.2f})")
        if a.json: Path(a.json).write_text(json.dumps(out, indent=1, default=float))
        if a.assets:
            dst = Path(a.assets); dst.mkdir(parents=True, exist_ok=True)
            for src, name in (('progress.gif', 'dc-train-progress.gif'), ('samples.png', 'dc-train-samples.png'), ('eval.png', 'dc-train-eval.png')):
                if (run / src).exists(): shutil.copy(run / src, dst / name)
            print(f"copied the run's figures into {dst}/")
    finally:
        if tmp: shutil.rmtree(tmp, ignore_errors=True)


if __name__ == '__main__':
    main()
