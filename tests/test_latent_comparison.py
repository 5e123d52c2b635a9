"benchmarks/latent_comparison.py end to end at a tiny size: every output written, the table complete, the autoencoder reused from its folder."
import importlib.util, json
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope='module')
def bench():
    spec = importlib.util.spec_from_file_location('latent_comparison', ROOT / 'benchmarks' / 'latent_comparison.py')
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_tiny_comparison(bench, tmp_path):
    args = ['--backbones', 'DiT in-context', 'U-Net (pixels)', '--steps', '3', '--vae-steps', '3', '--n-samples', '10', '--n-eval', '20', '--sample-steps', '2',
            '--time-rounds', '1', '--time-steps', '1', '--warmup', '0', '--out', str(tmp_path / 'run')]
    rows = bench.main(args)
    out = tmp_path / 'run'
    assert [r['backbone'] for r in rows] == ['DiT in-context', 'U-Net (pixels)'] and [r['space'] for r in rows] == ['latents', 'pixels']
    assert all(r['ms_per_step'] > 0 and r['params'] > 0 and r['heldout_loss'] > 0 for r in rows)
    for f in ('loss_curves.png', 'table.md', 'results.json', 'samples/dit-in-context.png', 'samples/u-net-pixels.png', 'autoencoder/config.json'):
        assert (out / f).exists(), f
    res = json.loads((out / 'results.json').read_text())
    assert res['protocol']['steps'] == 3 and res['autoencoder']['scale_factor'] > 0
    assert (out / 'table.md').read_text().count('\n') == 5  # header, rule, the reconstructions, two rows
    assert all(r['n_eval'] == 20 and r['fd'] > r['fd_ruler'] > 0 and 0 <= r['class_acc'] <= 1 for r in rows)  # scored beside the ruler at N = 20
    assert res['autoencoder']['fd_reconstruction'] > res['autoencoder']['fd_ruler'] == res['ruler']['real']['fd'] and res['evaluation']['n'] == 20
    again = bench.main(['--backbones', 'DiT in-context', '--steps', '2', '--n-samples', '10', '--n-eval', '0', '--sample-steps', '2', '--time-rounds', '1',
                        '--time-steps', '1', '--out', str(tmp_path / 'again'), '--autoencoder', str(out / 'autoencoder'), '--cache', str(out / 'cache')])
    assert len(again) == 1 and 'loaded from' in json.loads((tmp_path / 'again' / 'results.json').read_text())['autoencoder']['note']


def test_unknown_backbone(bench, tmp_path):
    with pytest.raises(SystemExit): bench.main(['--backbones', 'DiT-XXL', '--out', str(tmp_path)])
