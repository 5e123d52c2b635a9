"The evaluation module: FD and KID against torchmetrics' own computation, the shipped digit classifier, the ruler, dc-eval end to end."
import json

import pytest
import torch

from diffusion_course.evaluation import (DIGIT_CLASSIFIER_FILE, DIGIT_FEATURES, Evaluator, class_metrics, digit_classifier,
                                         frechet_distance, kid, load_classifier, memorisation, mmd2_poly, precision_recall)

tm_fid = pytest.importorskip('torchmetrics.image.fid')
tm_kid = pytest.importorskip('torchmetrics.image.kid')


class Features(torch.nn.Module):
    "A 'network' that returns its input: torchmetrics then computes its metrics on the features we give it."
    def __init__(self, d):
        super().__init__()
        self.num_features = d
    def forward(self, x): return x


def random_features(n, d, seed, shift=0.0, scale=1.0):
    g = torch.Generator().manual_seed(seed)
    mix = torch.randn(d, d, generator=g, dtype=torch.float64) / d ** 0.5  # correlated features
    return (torch.randn(n, d, generator=g, dtype=torch.float64) @ mix) * scale + shift


@pytest.mark.parametrize('n,d,shift,scale', [(2000, 64, 0.0, 1.0), (1000, 32, 0.3, 1.5), (500, 128, 0.1, 0.7), (100, 256, 0.0, 1.0)])
def test_fd_matches_torchmetrics(n, d, shift, scale):
    a, b = random_features(n, d, 0), random_features(n + 37, d, 1, shift, scale)
    m = tm_fid.FrechetInceptionDistance(feature=Features(d))
    m.update(a, real=True); m.update(b, real=False)
    ref = m.compute().item()
    ours = frechet_distance(a, b)
    assert abs(ours - ref) <= 1e-6 * abs(ref), (ours, ref)  # (100, 256): fewer rows than features, singular covariances


def test_fd_of_known_gaussians():
    # N(0, I) against N(mu, 4 I) in D dims: ||mu||^2 + D (1 + 4 - 2 * 2) = ||mu||^2 + D
    g = torch.Generator().manual_seed(0)
    a, b = torch.randn(200_000, 4, generator=g, dtype=torch.float64), 2 * torch.randn(200_000, 4, generator=g, dtype=torch.float64) + 1
    assert abs(frechet_distance(a, b) - 8.0) < 0.05


@pytest.mark.filterwarnings('ignore:Metric `Kernel Inception Distance` will save')
@pytest.mark.parametrize('n_real,n_fake,d,subsets,size', [(300, 250, 16, 20, 100), (200, 200, 64, 10, 150)])
def test_kid_matches_torchmetrics(n_real, n_fake, d, subsets, size):
    a, b = random_features(n_real, d, 2), random_features(n_fake, d, 3, 0.2)
    m = tm_kid.KernelInceptionDistance(feature=Features(d), subsets=subsets, subset_size=size)
    m.update(a, real=True); m.update(b, real=False)
    torch.manual_seed(7)  # torchmetrics draws its subsets from the global generator; ours from a generator seeded alike
    ref_mean, ref_std = (v.item() for v in m.compute())
    mean, std = kid(a, b, subsets=subsets, subset_size=size, seed=7)
    assert abs(mean - ref_mean) <= 1e-6 * abs(ref_mean) and abs(std - ref_std) <= 1e-6 * abs(ref_std), (mean, ref_mean, std, ref_std)
    m = min(len(a), len(b))  # torchmetrics' MMD assumes two sets of one size (ours takes any)
    assert abs(mmd2_poly(a[:m], b[:m]) - tm_kid.poly_mmd(a[:m], b[:m]).item()) < 1e-9


def test_precision_recall_by_brute_force():
    real, fake = random_features(60, 5, 4), random_features(50, 5, 5, 0.5)
    def knn(f, k=3): return torch.tensor([sorted(((f[i] - f[j]).norm().item() for j in range(len(f)) if j != i))[k - 1] for i in range(len(f))])
    def inside(p, c, r): return sum(any((p[i] - c[j]).norm() <= r[j] for j in range(len(c))) for i in range(len(p))) / len(p)
    prec, rec = precision_recall(real, fake)
    assert abs(prec - inside(fake, real, knn(real))) < 1e-12 and abs(rec - inside(real, fake, knn(fake))) < 1e-12
    assert precision_recall(real, real) == (1.0, 1.0)


def test_class_metrics_and_copies():
    m = class_metrics(torch.tensor([0, 1, 2, 3]), torch.tensor([0, 1, 2, 0]), 4)
    assert m['accuracy'] == 0.75 and abs(m['class_entropy'] - 2.0) < 1e-12
    assert class_metrics(torch.zeros(10, dtype=torch.long), torch.arange(10), 10)['class_entropy'] == 0.0
    train = torch.rand(20, 1, 8, 8) * 2 - 1
    m = memorisation(torch.cat([train[:5], torch.rand(5, 1, 8, 8) * 2 - 1]), train, threshold=0.05)
    assert m['copies'] == 0.5
    with pytest.raises(ValueError, match='differ in size'): memorisation(torch.zeros(2, 1, 4, 4), train, 0.1)


def test_shipped_classifier():
    clf = load_classifier(DIGIT_CLASSIFIER_FILE)
    assert DIGIT_CLASSIFIER_FILE.stat().st_size < 1_000_000
    from diffusion_course.data import mnist_offline
    ref = mnist_offline(32, 'reference')
    x, y = ref.batch(torch.arange(len(ref)))
    ext = digit_classifier()
    acc = (ext.predict(x) == y).float().mean().item()
    assert acc >= 0.98 and abs(acc - clf.meta['holdout_accuracy']) < 1e-6  # the stated held-out accuracy, on digits it never saw
    assert ext.predict(x[:, :, 2:-2, 2:-2]).eq(y).float().mean().item() == acc  # 28-pixel digits are padded to 32
    assert ext.features(x[:7]).shape == (7, clf.feature_dim) and ext.name == DIGIT_FEATURES


@pytest.fixture(scope='module')
def mnist_eval():
    return Evaluator.mnist()


def test_ruler_orders_the_damage(mnist_eval):
    r = mnist_eval.ruler(200)
    fd = {k: v['fd'] for k, v in r.items()}
    assert fd['real'] < fd['noise 0.1'] < fd['noise 0.2'] < fd['pure noise'] and fd['real'] < fd['blur 3x3'] and fd['real'] < fd['one class']
    assert fd['noise 0.1'] > 5 * fd['real']  # the features see noise
    assert r['real']['copies'] == 0 and r['real']['accuracy'] > 0.95 and r['one class']['class_entropy'] < 0.5 < r['real']['recall']
    train = mnist_eval.train[:200]
    assert mnist_eval.score(train, torch.arange(200) % 10)['copies'] == 1.0  # training digits handed in as samples: all copies


def test_dc_eval_writes_metrics(tmp_path):
    from diffusion_course.cli import eval_main, train
    run = tmp_path / 'run'
    train(['--out', str(run), '--model', 'UNet-T', '--steps', '4', '--batch-size', '8', '--sample-steps', '2', '--n-samples', '10', '--eval-n', '0', '--quiet'])
    assert eval_main([str(run), '--n', '40', '--steps', '3']) == 0
    out = json.loads((run / 'metrics.json').read_text())
    assert set(out) >= {'protocol', 'metrics', 'ruler'}
    p = out['protocol']
    assert (p['n'], p['sampler'], p['steps'], p['cfg_scale'], p['weights'], p['features']) == (40, 'ddim', 3, 1.5, 'ema', DIGIT_FEATURES)
    every = {'fd', 'kid', 'kid_std', 'precision', 'recall', 'nn_train', 'copies', 'accuracy', 'class_entropy'}
    assert every <= set(out['metrics']) and all(every <= set(row) for row in out['ruler'].values())
    assert set(out['ruler']) == {'real', 'blur 3x3', 'noise 0.1', 'noise 0.2', 'one class', 'pure noise'}
    assert eval_main([str(run), '--n', '501']) == 1  # more than the ruler's 500 real digits: refused before sampling
    assert eval_main([str(run), '--n', '12', '--steps', '2', '--fp32', '--out', str(tmp_path / 'fp32.json')]) == 0
    assert json.loads((tmp_path / 'fp32.json').read_text())['protocol']['precision'] == 'fp32'


def test_dc_train_ends_with_evaluation(tmp_path, capsys):
    from diffusion_course.cli import train, train_main
    run = tmp_path / 'run'
    s = train(['--out', str(run), '--model', 'UNet-T', '--steps', '4', '--batch-size', '8', '--sample-steps', '2', '--n-samples', '10',
               '--eval-n', '24', '--eval-every', '2', '--quiet'])
    out = json.loads((run / 'metrics.json').read_text())
    assert out['protocol']['n'] == 24 and out['protocol']['steps'] == 2 and out['protocol']['checkpoint'].endswith('step-0000004')
    assert [h['step'] for h in out['history']] == [2, 4] and (run / 'eval.png').stat().st_size > 0  # --eval-every: FD against steps
    assert s['eval']['fd'] == out['metrics']['fd'] and s['eval']['floor'] == out['ruler']['real']['fd'] > 0
    assert json.loads((run / 'summary.json').read_text())['eval']['n'] == 24
    assert 'noise 0.1' in capsys.readouterr().err  # the table with its ruler is printed
    for bad, words in ((['--eval-n', '3'], '--eval-n'), (['--eval-n', '501'], '[6, 500]'), (['--eval-every', '0'], '--eval-every 0')):
        assert train_main(['--out', str(tmp_path / 'o'), '--model', 'UNet-T', '--quiet', *bad]) == 1
        assert words in capsys.readouterr().err
    assert not (tmp_path / 'o').exists()


def test_evaluation_needs_neither_torchmetrics_nor_scipy():
    import subprocess, sys
    code = "import sys, diffusion_course.evaluation; print(','.join(sorted(m.split('.')[0] for m in sys.modules)))"
    mods = set(subprocess.run([sys.executable, '-c', code], capture_output=True, text=True, check=True).stdout.strip().split(','))
    assert not mods & {'torchmetrics', 'scipy', 'matplotlib', 'torchvision'}, sorted(mods & {'torchmetrics', 'scipy', 'matplotlib', 'torchvision'})


def test_inception_features_feed_uint8_rgb_in_batches():
    import importlib.util
    from diffusion_course.evaluation import InceptionFeatures
    if importlib.util.find_spec('torch_fidelity') is None:  # nothing downloads under test: construct only where it cannot
        with pytest.raises(ImportError, match='torch-fidelity'): InceptionFeatures()
    seen = []
    def net(u8):  # stands in for Inception: checks what it is fed
        seen.append((u8.dtype, tuple(u8.shape)))
        return u8.float().mean((1, 2, 3))[:, None].expand(-1, 2048)
    inc = object.__new__(InceptionFeatures)
    inc.net, inc.device, inc.batch_size = net, torch.device('cpu'), 4
    f = inc.features(torch.linspace(-1, 1, 10 * 16).reshape(10, 1, 4, 4))
    assert f.shape == (10, 2048) and f.dtype == torch.float64
    assert seen == [(torch.uint8, (4, 3, 4, 4)), (torch.uint8, (4, 3, 4, 4)), (torch.uint8, (2, 3, 4, 4))]
    with pytest.raises(ValueError, match='1 or 3'): inc.features(torch.zeros(2, 2, 4, 4))
