"""Wall time of importing the package and its modules, each in a fresh interpreter (median of 5 runs).

    python benchmarks/import_time.py
"""
import statistics, subprocess, sys, time

STATEMENTS = ['import diffusion_course',
              'import diffusion_course.core',
              'import diffusion_course.diffusion.ddpm',
              'import diffusion_course.training' ]

def wall(stmt, runs=5):
    times = []
    for _ in range(runs):
        t0 = time.perf_counter()
        r = subprocess.run([sys.executable, '-c', stmt], capture_output=True, text=True)
        times.append(time.perf_counter() - t0)
        if r.returncode: return None
    return statistics.median(times)

if __name__ == '__main__':
    base = wall('pass')
    print(f"{'statement':45s} {'seconds':>8s}   (interpreter start-up alone: {base:.3f} s)")
    for s in STATEMENTS:
        t = wall(s)
        print(f"{s:45s} {'n/a' if t is None else f'{t:8.3f}'}")
