"""What a practitioner's fresh install must do: import, build every tiny preset, train a few steps from the packaged digits, sample, save and load.

Run by scripts/release_check.sh from outside the repository (so that the installed package is tested, not the source tree)."""
import importlib.metadata as md, importlib.util, json, re, subprocess, sys, tempfile
from pathlib import Path

import torch
import diffusion_course
from diffusion_course.registry import build, list_models
from diffusion_course.data import mnist_offline

root = Path(diffusion_course.__file__).resolve().parent
assert 'site-packages' in str(root), f"the smoke test must import the installed package, got {root}"
meta = md.metadata('diffusion_course')
assert meta['Version'] == diffusion_course.__version__, (meta['Version'], diffusion_course.__version__)
for gone in ('fastprogress', 'mlxtend', 'torchvision', 'scipy', 'pandas'):  # the runtime install stays lean
    assert importlib.util.find_spec(gone) is None, f"{gone} was installed by the runtime requirements"
assert 'Development Status :: 3 - Alpha' in meta.get_all('Classifier'), meta.get_all('Classifier')
assert {'datasets', 'hub', 'diffusers', 'dev'} <= set(meta.get_all('Provides-Extra')), meta.get_all('Provides-Extra')
readme = meta.get_payload() if hasattr(meta, 'get_payload') else meta['Description']
relative = [t for t in re.findall(r'\]\(([^)\s]+)\)', readme) if not re.match(r'[a-z][a-z0-9+.-]*:|#', t)]
assert not relative, f"relative links on the package index's page: {relative[:5]}"

digits = mnist_offline(size=32, split='all')  # the digits ship in the wheel
assert digits.x.shape == (5000, 1, 32, 32) and digits.y.shape == (5000,), (digits.x.shape, digits.y.shape)
for name in list_models(tiny=True):
    m = build(name).eval()
    c = m.config
    x = torch.randn(2, c.in_channels, c.input_size, c.input_size)
    y = None if not c.num_classes else (torch.zeros(2, c.num_classes) if getattr(c, 'multi_hot', False) else torch.zeros(2, dtype=torch.long))
    with torch.no_grad(): assert m(x, torch.tensor([0, 999]), y).shape == x.shape, name

with tempfile.TemporaryDirectory() as d:
    for cmd in ('dc-train', 'dc-sample', 'dc-eval'):
        subprocess.run([cmd, '--help'], check=True, capture_output=True)
    run = Path(d) / 'run'
    r = subprocess.run(['dc-train', '--model', 'UNet-T', '--steps', '4', '--batch-size', '8', '--every', '2', '--ckpt-every', '4',
                        '--sample-steps', '2', '--n-samples', '4', '--out', str(run), '--quiet'], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr[-2000:]
    assert (run / 'config.json').exists() and (run / 'samples.png').exists(), sorted(p.name for p in run.iterdir())
    logs = sorted(p.name for p in run.iterdir() if p.suffix in ('.csv', '.jsonl'))
    r = subprocess.run(['dc-sample', '--ckpt', str(run), '--n', '4', '--steps', '2', '--out', str(Path(d) / 's.png')], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr[-2000:]
print(f"smoke test passed: diffusion_course {diffusion_course.__version__} from {root}, torch {torch.__version__}, "
      f"{len(list_models(tiny=True))} tiny presets, dc-train 4 steps, dc-sample; run logs: {logs}")
