"tools/run_notebooks.py: outputs stored in place, `#| gpu` cells skipped without CUDA, `#| online` and `#| bench` only when asked, the export cell never run, a failing notebook left as it was."
import importlib.util, json
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
spec = importlib.util.spec_from_file_location('run_notebooks', ROOT / 'tools' / 'run_notebooks.py')
rn = importlib.util.module_from_spec(spec); spec.loader.exec_module(rn)


def notebook(path, *sources):
    cells = [{'cell_type': 'markdown', 'id': 'm0', 'metadata': {}, 'source': '# A title'}]
    cells += [{'cell_type': 'code', 'id': f'c{i}', 'metadata': {}, 'execution_count': None, 'outputs': [], 'source': s} for i, s in enumerate(sources)]
    path.write_text(json.dumps({'cells': cells, 'metadata': {'kernelspec': {'name': 'python3', 'display_name': 'Python 3', 'language': 'python'}},
                                'nbformat': 4, 'nbformat_minor': 5}))
    return path


def outputs(path):
    return {c['id']: c.get('outputs', []) for c in json.loads(path.read_text())['cells'] if c['cell_type'] == 'code'}


def test_outputs_stored_and_flags_honoured(tmp_path):
    nb = notebook(tmp_path / 'a.ipynb', 'x = 6 * 7\nprint("x is", x)', '#| gpu\nprint("on a GPU")', '#| slow\nprint("slow ran")',
                  'import nbdev; nbdev.nbdev_export()', 'x')
    ok, secs, size = rn.run_one(nb, gpu=False)
    out = outputs(nb)
    assert ok and secs >= 0 and size > 0
    assert 'x is 42' in ''.join(out['c0'][0]['text'])
    assert out['c1'] == [] and out['c3'] == []  # gpu cell skipped on a CPU; the export cell never runs
    assert 'slow ran' in ''.join(out['c2'][0]['text'])  # slow cells run: they refresh assets/
    assert out['c4'][0]['data']['text/plain'] in ('42', ['42'])


def test_online_and_bench_cells_run_only_when_asked(tmp_path):
    srcs = ('#| online\nprint("downloaded")', '#| bench\nprint("benchmark re-run")', 'print("always")')
    nb = notebook(tmp_path / 'd.ipynb', *srcs)
    assert rn.run_one(nb, gpu=False)[0]
    out = outputs(nb)
    assert out['c0'] == [] and out['c1'] == [] and 'always' in ''.join(out['c2'][0]['text'])
    nb = notebook(tmp_path / 'e.ipynb', *srcs)
    assert rn.run_one(nb, gpu=False, online=True, bench=True)[0]
    out = outputs(nb)
    assert 'downloaded' in ''.join(out['c0'][0]['text']) and 'benchmark re-run' in ''.join(out['c1'][0]['text'])


def test_gpu_cells_run_where_cuda_is(tmp_path):
    nb = notebook(tmp_path / 'b.ipynb', '#| gpu\nprint("on a GPU")')
    assert rn.run_one(nb, gpu=True)[0]
    assert 'on a GPU' in ''.join(outputs(nb)['c0'][0]['text'])


def test_failing_notebook_is_left_unchanged(tmp_path, capsys):
    nb = notebook(tmp_path / 'c.ipynb', 'print("before")', 'raise ValueError("boom")', 'print("after")')
    before = nb.read_text()
    ok, _, _ = rn.run_one(nb, gpu=False)
    assert not ok and nb.read_text() == before
    assert 'boom' in capsys.readouterr().err


def test_main_refuses_test_size_and_unknown_names(monkeypatch, capsys):
    monkeypatch.setenv('IN_TEST', '1')
    with pytest.raises(SystemExit) as e: rn.main(['00_core'])
    assert e.value.code == 2 and 'IN_TEST' in capsys.readouterr().err
    monkeypatch.delenv('IN_TEST')
    with pytest.raises(SystemExit) as e: rn.main(['no_such_notebook'])
    assert e.value.code == 2 and 'no_such_notebook.ipynb' in capsys.readouterr().err


def test_big_figures_are_palette_compressed_small_ones_kept():
    import base64, io
    import numpy as np
    from PIL import Image
    def png(a):
        buf = io.BytesIO(); Image.fromarray(a).save(buf, 'PNG'); return base64.b64encode(buf.getvalue()).decode()
    x = np.linspace(0, 1, 400)
    smooth = (np.stack([np.outer(x, x), np.outer(x, 1 - x), np.outer(1 - x, x)], -1) * 255).astype(np.uint8)  # a 400 x 400 colour ramp
    smooth[::7] = 255  # and lines, like a plot's
    big = png(smooth)
    small = rn.compress_png(big)
    assert len(small) < 0.8 * len(big)
    back = np.asarray(Image.open(io.BytesIO(base64.b64decode(small))).convert('RGB'), dtype=float)
    assert back.shape == smooth.shape and np.abs(back - smooth).mean() < 4  # 256 colours: close to the original
    tiny = png(smooth[:20, :20])
    assert rn.compress_png(tiny) == tiny  # under 24 KiB: stored as made


def test_compress_only_re_encodes_stored_figures(tmp_path, monkeypatch, capsys):
    import base64, io
    import numpy as np
    from PIL import Image
    x = np.linspace(0, 1, 400)
    ramp = (np.stack([np.outer(x, x), np.outer(x, 1 - x), np.outer(1 - x, x)], -1) * 255).astype(np.uint8)  # a 400 x 400 colour ramp
    buf = io.BytesIO(); Image.fromarray(ramp).save(buf, 'PNG'); big = base64.b64encode(buf.getvalue()).decode()
    nb = notebook(tmp_path / 'f.ipynb', 'show()')
    cells = json.loads(nb.read_text())
    cells['cells'][1]['outputs'] = [{'output_type': 'display_data', 'metadata': {}, 'data': {'image/png': big, 'text/plain': '<Figure>'}}]
    nb.write_text(json.dumps(cells))  # a figure stored as made, before compression existed
    monkeypatch.setattr(rn, 'NBS', tmp_path)
    monkeypatch.setattr(rn.subprocess, 'run', lambda *a, **k: None)  # no nbdev_clean outside a repository
    rn.main(['--compress-only', 'f'])
    stored = outputs(nb)['c0'][0]['data']['image/png']
    assert len(stored) < 0.8 * len(big) and Image.open(io.BytesIO(base64.b64decode(stored))).size == (400, 400)
    assert 'f.ipynb' in capsys.readouterr().out


def test_cell_times_cover_the_cells_that_ran(tmp_path):
    nb = notebook(tmp_path / 'f.ipynb', 'import time; time.sleep(0.2)', '#| gpu\nprint("on a GPU")', 'x = 1')
    cells = []
    assert rn.run_one(nb, gpu=False, cell_times=cells)[0]
    assert [(i, line) for i, line, _ in cells] == [(1, 'import time; time.sleep(0.2)'), (3, 'x = 1')]  # indices count the markdown title; the gpu cell is absent
    assert cells[0][2] >= 0.2 > cells[1][2]


def test_prints_kept_in_a_cell_ending_with_a_semicolon(tmp_path):
    nb = notebook(tmp_path / 'g.ipynb', 'print("printed")\nx = 1;')  # execnb alone would drop "printed"
    assert rn.run_one(nb, gpu=False)[0]
    cell = [c for c in json.loads(nb.read_text())['cells'] if c['cell_type'] == 'code'][0]
    assert 'printed' in ''.join(cell['outputs'][0]['text']) and ''.join(cell['source']) == 'print("printed")\nx = 1;'  # the stored source is unchanged
