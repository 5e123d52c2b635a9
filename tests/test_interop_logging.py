"Logging a run (MetricsLog as JSONL and CSV, resumed runs, optional TensorBoard/wandb), dc-train's log.csv, and the device it picks (MPS)."
import csv, json
from pathlib import Path

import pytest
import torch
from torch import nn

from diffusion_course import cli
from diffusion_course.data import ImageData
from diffusion_course.training import Callback, Checkpoint, MetricsLog, TensorBoardLog, Trainer, WandbLog

class Tiny(nn.Module):
    def __init__(self):
        super().__init__(); self.conv = nn.Conv2d(1, 1, 3, padding=1)
    def forward(self, x, t, y=None): return self.conv(x)

def _loss(model, x0, y): return (model(x0, None) - x0).square().mean()

class Scores(Callback):
    def __init__(self): self.history = []
    def on_step_end(self, trainer):
        if trainer.step % 4 == 0: self.history.append({'step': trainer.step, 'fd': torch.tensor(1.0 / trainer.step), 'per_class': [1, 2]})

def _trainer(run, log, steps=12):
    torch.manual_seed(0)
    data = ImageData(torch.randint(0, 255, (32, 1, 8, 8), dtype=torch.uint8), torch.zeros(32, dtype=torch.long))
    return Trainer(Tiny(), _loss, data, steps=steps, batch_size=4, lr=1e-2, warmup=2, device='cpu',
                   callbacks=[Scores(), MetricsLog(log, every=3), Checkpoint(run, every=6, keep=3)])

def test_jsonl_log_holds_rows_and_evaluations_and_resumes_without_duplicates(tmp_path):
    log = tmp_path / 'log.jsonl'
    _trainer(tmp_path, log).fit()
    lines = [json.loads(l) for l in log.read_text().splitlines()]
    train = [l for l in lines if l['kind'] == 'train']; evals = [l for l in lines if l['kind'] == 'eval']
    assert [l['step'] for l in train] == [3, 6, 9, 12] and set(train[0]) == {'kind', 'step', 'loss', 'lr', 'steps_per_s', 'seconds'}
    assert [e['step'] for e in evals] == [4, 8, 12] and evals[0]['fd'] == 0.25 and evals[0]['source'] == 'Scores' and evals[0]['per_class'] == [1, 2]
    import shutil; shutil.rmtree(tmp_path / 'step-0000012')  # as if it stopped after step 9 with its last checkpoint at 6
    again = _trainer(tmp_path, log); assert again.resume(tmp_path).name == 'step-0000006'; again.fit()
    lines2 = [json.loads(l) for l in log.read_text().splitlines()]
    assert [l['step'] for l in lines2 if l['kind'] == 'train'] == [3, 6, 9, 12] and [l['step'] for l in lines2 if l['kind'] == 'eval'] == [4, 8, 12]
    assert lines2[:2] == lines[:2]

def test_csv_log_puts_evaluations_beside_it(tmp_path):
    _trainer(tmp_path, tmp_path / 'm.csv').fit()
    rows = list(csv.DictReader(open(tmp_path / 'm.csv')))
    evals = list(csv.DictReader(open(tmp_path / 'm-eval.csv')))
    assert [r['step'] for r in rows] == ['3', '6', '9', '12'] and [e['step'] for e in evals] == ['4', '8', '12']
    assert float(evals[1]['fd']) == 0.125 and json.loads(evals[0]['per_class']) == [1, 2]

def test_bad_log_arguments():
    with pytest.raises(ValueError, match='.csv or .jsonl'): MetricsLog('log.txt')
    with pytest.raises(ValueError, match='every'): MetricsLog('log.csv', every=0)

def test_optional_loggers(tmp_path):
    import importlib.util
    for name, make in (('tensorboard', lambda: TensorBoardLog(tmp_path / 'tb', every=3)), ('wandb', lambda: WandbLog(every=3, mode='disabled'))):
        if importlib.util.find_spec(name) is None:
            with pytest.raises(ImportError, match=f'pip install {name}'): make()
        else:
            lg = make()
            t = _trainer(tmp_path / name, tmp_path / f'{name}.csv'); t.callbacks.append(lg); t.fit()
            assert len(lg.rows) == 4 and len(lg.evals) == 3

def test_dc_train_writes_its_log_into_the_run_folder(tmp_path):
    out = tmp_path / 'run'
    cli.train(['--model', 'UNet-T', '--steps', '20', '--batch-size', '4', '--every', '20', '--ckpt-every', '20', '--sample-steps', '2',
               '--n-samples', '2', '--out', str(out), '--quiet'])
    rows = list(csv.DictReader(open(out / 'log.csv')))
    assert [int(r['step']) for r in rows] == [10, 20] and all(float(r['loss']) > 0 and float(r['steps_per_s']) > 0 for r in rows)

def test_device_default_prefers_cuda_then_mps(monkeypatch):
    mps = getattr(torch.backends, 'mps', None)
    if mps is None: pytest.skip('this torch has no MPS backend module')
    monkeypatch.setattr(torch.cuda, 'is_available', lambda: False)
    monkeypatch.setattr(mps, 'is_available', lambda: True)
    assert cli.pick_device(None) == torch.device('mps')
    assert cli.pick_device('cpu') == torch.device('cpu')
    monkeypatch.setenv('WORLD_SIZE', '2')  # gloo cannot carry MPS tensors: several processes stay on the CPU
    assert cli.pick_device(None) == torch.device('cpu')
    monkeypatch.delenv('WORLD_SIZE')
    monkeypatch.setattr(mps, 'is_available', lambda: False)
    assert cli.pick_device(None) == torch.device('cpu')
    monkeypatch.setattr(torch.cuda, 'is_available', lambda: True)
    assert cli.pick_device(None) == torch.device('cuda')
