"""Run the course's notebooks top to bottom at this machine's size and store their outputs in place.

    python tools/run_notebooks.py                         # every notebook in nbs/, in course order
    python tools/run_notebooks.py 12_schedules 60_evaluation   # some of them (names with or without .ipynb)
    python tools/run_notebooks.py --times run_times.json  # also write each notebook's run time
    python tools/run_notebooks.py --online --bench 50_latent   # also the cells that download, and the benchmark re-runs
    python tools/run_notebooks.py --compress-only 30_blocks    # only re-encode the figures already stored (no run)

Each notebook runs in a fresh kernel (execnb's CaptureShell, the engine of `nbdev_test`) from `nbs/`, as a student runs it:
`pick(test, cpu, gpu)` gives the CPU size here and the GPU size on a CUDA machine, `#| slow` cells run (they refresh
`assets/`), `#| gpu` cells run only where CUDA is present, `#| online` cells (they download a dataset or weights) only
with --online, `#| bench` cells (they re-run a maintainers' benchmark, longer than a notebook's CPU size of about
10 minutes) only with --bench, and the `nbdev_export()` cell never runs. A cell whose last line ends in `;` keeps its printed output, as in Jupyter
(execnb alone would drop it). Outputs (text, tables,
figures as PNG) are written into the notebook, which is then cleaned by `nbdev_clean` (no execution counts or
metadata). Stored PNG figures over 24 KiB are re-encoded with a 256-colour palette (about a third of the size; kept only
where it saves a fifth or more), so that the notebooks stay light enough to review. A notebook that raises stops there: its file is left as it was, and the script exits with status 1 after
the others. Prints, per notebook, the wall time, the size of its stored outputs and its slowest cells (those over
`--slow-cells` seconds, 30 by default: where the notebook spends its time).
"""
import argparse, json, os, subprocess, sys, time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
NBS = ROOT / 'nbs'

def flags(cell) -> set:
    "The `#| word` flags on a code cell's first lines."
    out = set()
    for line in cell.source.splitlines():
        if not line.startswith('#|'): break
        out.add(line[2:].strip().split(' ')[0])
    return out

def compress_png(b64: str, min_bytes: int = 24 * 1024) -> str:
    "A base64 PNG re-encoded with an adaptive 256-colour palette, or `b64` itself where that saves less than a fifth."
    import base64, io
    from PIL import Image
    raw = base64.b64decode(b64)
    if len(raw) < min_bytes: return b64
    buf = io.BytesIO()
    Image.open(io.BytesIO(raw)).convert('RGB').quantize(256, method=Image.Quantize.FASTOCTREE).save(buf, 'PNG', optimize=True)
    return base64.b64encode(buf.getvalue()).decode() if buf.tell() < 0.8 * len(raw) else b64

def compress_outputs(nb) -> None:
    "Re-encode, in place, every stored PNG output of notebook `nb` (an execnb notebook or a plain dict) with `compress_png`."
    for cell in nb['cells']:
        for out in cell.get('outputs', []) if cell['cell_type'] == 'code' else []:
            data = out.get('data', {})
            if 'image/png' in data:
                png = data['image/png']
                data['image/png'] = compress_png(png if isinstance(png, str) else ''.join(png))

def output_bytes(nb) -> int:
    return sum(len(json.dumps(c.get('outputs', []))) for c in nb['cells'] if c['cell_type'] == 'code')

def run_one(path: Path, gpu: bool, online: bool = False, bench: bool = False, cell_times: list | None = None) -> tuple[bool, float, int]:
    "Execute `path` in place; return (ok, seconds, bytes of stored outputs). `cell_times` (a list) receives (cell index, first line, seconds) per cell run."
    skipped = {flag for flag, on in (('gpu', gpu), ('online', online), ('bench', bench)) if not on}
    from execnb.nbio import read_nb, write_nb
    from execnb.shell import CaptureShell
    nb = read_nb(path)
    def skip(cell):
        if cell.cell_type != 'code': return True
        if 'nbdev_export(' in cell.source: return True
        return bool(flags(cell) & skipped)
    started = {}
    def start(cell):
        if skip(cell): return True
        started['t'], started['source'] = time.time(), cell.source
        if cell.source.rstrip().endswith(';'): cell.source += '\npass'  # execnb drops the printed output of a cell ending in ';' (Jupyter keeps it): end it otherwise, same code
        return False
    def stop(cell):
        cell.source = started['source']
        if cell_times is not None: cell_times.append((cell.idx_, cell.source.splitlines()[0][:60] if cell.source else '', time.time() - started['t']))
    t0 = time.time()
    shell = CaptureShell(path, mpl_format='png')
    cwd = os.getcwd(); os.chdir(path.parent)
    try:
        shell.run_all(nb, exc_stop=True, preproc=start, postproc=stop)
    except Exception:
        sys.stderr.write(shell.prettytb(fname=path) + '\n')
        return False, time.time() - t0, 0
    finally:
        os.chdir(cwd)
    compress_outputs(nb)
    write_nb(nb, path)
    return True, time.time() - t0, output_bytes(nb)

def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    p.add_argument('notebooks', nargs='*', help='names in nbs/ (default: all of them, in course order)')
    p.add_argument('--times', help='write {notebook: seconds} here (JSON)')
    p.add_argument('--online', action='store_true', help='also run `#| online` cells (they download datasets or weights)')
    p.add_argument('--compress-only', action='store_true', help="only re-encode the notebooks' stored figures; run nothing")
    p.add_argument('--bench', action='store_true', help='also run `#| bench` cells (benchmark re-runs, 10-30 min each on 2 cores)')
    p.add_argument('--slow-cells', type=float, default=30.0, help='list the cells that took longer than this many seconds')
    a = p.parse_args(argv)
    if os.environ.get('IN_TEST'): p.error('IN_TEST is set: the notebooks would run at their test size; unset it')
    names = [n if n.endswith('.ipynb') else n + '.ipynb' for n in a.notebooks] or sorted(f.name for f in NBS.glob('*.ipynb'))
    missing = [n for n in names if not (NBS / n).exists()]
    if missing: p.error(f"no such notebook in {NBS}: {', '.join(missing)}")
    if a.compress_only:
        for n in names:
            nb = json.loads((NBS / n).read_text())
            before = output_bytes(nb); compress_outputs(nb)
            (NBS / n).write_text(json.dumps(nb, indent=1, ensure_ascii=False) + '\n')
            subprocess.run(['nbdev_clean', '--fname', str(NBS / n)], cwd=ROOT, check=True)
            print(f"{n:28s} outputs {before / 1024:7.0f} -> {output_bytes(nb) / 1024:7.0f} KiB")
        return
    import torch
    gpu = torch.cuda.is_available()
    print(f"running {len(names)} notebook(s) at their {'GPU' if gpu else 'CPU'} size", flush=True)
    times, failed = {}, []
    for n in names:
        cells = []
        ok, secs, size = run_one(NBS / n, gpu, a.online, a.bench, cells)
        times[n] = round(secs, 1)
        print(f"{n:28s} {'ok    ' if ok else 'FAILED'} {secs / 60:6.1f} min  outputs {size / 1024:7.0f} KiB"
              + ('  (over 1 MiB: compress its figures)' if size > 2**20 else ''), flush=True)
        for idx, line, s in sorted(cells, key=lambda c: -c[2]):
            if s > a.slow_cells: print(f"    cell {idx:3d} {s / 60:5.1f} min  {line}", flush=True)
        if not ok: failed.append(n)
    for n in names:
        if n not in failed: subprocess.run(['nbdev_clean', '--fname', str(NBS / n)], cwd=ROOT, check=True)
    if a.times: Path(a.times).write_text(json.dumps(times, indent=1) + '\n')
    if failed: sys.exit(f"failed: {', '.join(failed)}")

if __name__ == '__main__':
    main()
