"benchmarks/samplers.py on tiny runs: every sampler of both objectives, the DDPM reference, the ruler, resuming from its JSON."
import importlib.util, json
from pathlib import Path

import pytest

from diffusion_course.cli import train_main
from diffusion_course.diffusion.samplers import SAMPLERS

ROOT = Path(__file__).resolve().parents[1]
TINY = ['--model', 'UNet-T', '--steps', '4', '--batch-size', '8', '--every', '4', '--sample-steps', '2', '--n-samples', '10', '--warmup', '1', '--eval-n', '0', '--quiet']


def _bench():
    spec = importlib.util.spec_from_file_location('bench_samplers', ROOT / 'benchmarks' / 'samplers.py')
    mod = importlib.util.module_from_spec(spec); spec.loader.exec_module(mod)
    return mod


@pytest.fixture(scope='module')
def runs(tmp_path_factory):
    d = tmp_path_factory.mktemp('bench')
    assert train_main(['--out', str(d / 'eps'), *TINY, '--objective', 'eps']) == 0
    assert train_main(['--out', str(d / 'flow'), *TINY, '--objective', 'flow']) == 0
    return d


def test_table_reference_ruler_and_resume(runs, capsys):
    bench, out = _bench(), runs / 'b.json'
    args = [str(runs / 'eps'), '--flow', str(runs / 'flow'), '--n', '20', '--evals', '3,5', '--ddpm-steps', '10', '--json', str(out), '--batch-size', '20']
    res = bench.main(args)
    text = capsys.readouterr().out
    flow_samplers = [s for s in SAMPLERS if s != 'ddim']  # on a flow model 'ddim' is Euler: measured once
    assert set(res) == {f'eps|{s}|{e}' for s in SAMPLERS for e in (3, 5)} | {f'flow|{s}|{e}' for s in flow_samplers for e in (3, 5)} | {'eps|ddpm|10'}
    assert res['eps|heun|5']['evals'] == 5 and res['eps|heun|5']['steps'] == 3 and res['flow|heun|5']['evals'] == 4  # Flow: Euler from sigma = inf
    assert res['eps|ddpm|10']['evals'] == 10 and all(r['evals'] <= int(k.split('|')[2]) for k, r in res.items() if 'ddpm' not in k)
    for needle in ('N = 20', 'guidance 1', 'EMA weights', 'digit-classifier-v1', 'eps dpmpp_2m', 'flow heun', 'eps ddpm 10', 'ruler at N = 20', 'pure noise'):
        assert needle in text, needle
    saved = json.loads(out.read_text())
    assert saved['n'] == 20 and 'real' in saved['ruler'] and saved['cells'].keys() == res.keys()
    again = bench.main(args)  # every cell is in the JSON: nothing is sampled again
    assert again == res and ' s this run' in capsys.readouterr().out


def test_goal_lines():
    bench = _bench()
    cells = {'eps|heun|10': {'sampler': 'heun', 'evals': 9, 'fd': 14.0}, 'eps|ddim|10': {'sampler': 'ddim', 'evals': 10, 'fd': 20.0},
             'eps|dpmpp_2m|25': {'sampler': 'dpmpp_2m', 'evals': 25, 'fd': 10.5}}
    lines = bench.goal(cells, 'eps', SAMPLERS, {'evals': 1000, 'fd': 10.0})
    assert lines[0].startswith('goal at 10 evaluations: best heun (9 evaluations) FD 14.00 = 1.40 x') and lines[0].endswith('met')
    assert '1.05 x' in lines[1] and lines[1].endswith(': met')
    assert bench.goal({'eps|ddim|10': {'sampler': 'ddim', 'evals': 10, 'fd': 16.0}}, 'eps', SAMPLERS, {'evals': 1000, 'fd': 10.0})[0].endswith('not met')


def test_another_measurement_starts_afresh(runs, capsys):
    bench, out = _bench(), runs / 'c.json'
    base = [str(runs / 'eps'), '--samplers', 'ddim', '--evals', '3', '--ddpm-steps', '0', '--json', str(out), '--batch-size', '30']
    first = bench.main(base + ['--n', '20'])
    assert set(first) == {'eps|ddim|3'} and 'afresh' not in capsys.readouterr().out
    second = bench.main(base + ['--n', '30'])  # another N: the stored cell does not apply
    assert 'measuring afresh' in capsys.readouterr().out and set(second) == {'eps|ddim|3'} and json.loads(out.read_text())['n'] == 30
