"Colab: every notebook's install cell (which pip commands it runs, faked), its Open-in-Colab badge, and where outputs go (`core.out_dir`, `core.course_asset`)."
import configparser, io, json, re, subprocess, sys, tarfile, types
from pathlib import Path

import pytest

from diffusion_course.core import checkout_root, course_asset, out_dir

ROOT = Path(__file__).resolve().parents[1]
CFG = configparser.ConfigParser(delimiters=['='], interpolation=None)
CFG.read(ROOT / 'settings.ini', encoding='utf-8')
SETTINGS = CFG['DEFAULT']
NBS = sorted(p for p in (ROOT / 'nbs').glob('*.ipynb') if p.stem != 'index')  # the index is the README: its badges are the course map
EXTRAS = {'41_dit': '[diffusers]', '50_latent': '[diffusers]', '70_sampling': '[diffusers]', '80_interop': '[hub,diffusers]',
          '60_evaluation': '[eval]'}  # the pretrained DiT-XL/2 and SD's VAE need diffusers, Inception FID torchmetrics[image]
BADGE = re.compile(r'https://colab\.research\.google\.com/github/([^/]+)/([^/]+)/blob/main/nbs/([^)\s"]+\.ipynb)')


def cells(nb: Path) -> list[dict]: return json.loads(nb.read_text(encoding='utf-8'))['cells']
def source(c: dict) -> str: return ''.join(c['source'])


def install_cell(nb: Path) -> str:
    found = [source(c) for c in cells(nb)[:5] if c['cell_type'] == 'code' and "'google.colab' in sys.modules" in source(c)]
    assert len(found) == 1, f"{nb.name}: expected one Colab install cell among the first five, found {len(found)}"
    return found[0]


def test_every_notebook_has_one_install_cell_alike_but_for_its_extras():
    assert len(NBS) >= 20
    texts = {nb.stem: install_cell(nb) for nb in NBS}
    for name, src in texts.items():
        assert src.startswith('#| hide\n'), name
        assert re.search(r"^    extras = '(.*)'  #", src, re.M).group(1) == EXTRAS.get(name, ''), name
        assert 'import diffusion_course' not in src and 'from diffusion_course' not in src  # it runs before the package exists
    generic = {re.sub(r"extras = '.*?'", "extras = ''", s) for s in texts.values()}
    assert len(generic) == 1, 'the install cells differ beyond their extras'


def test_extras_exist_in_settings():
    for extras in set(EXTRAS.values()):
        for name in extras.strip('[]').split(','): assert f'extra_{name}' in SETTINGS, name


class FakePip:
    "Records every command; `index` says whether the package index has a release."
    def __init__(self, index: bool, github: bool = True): self.index, self.github, self.calls = index, github, []
    def __call__(self, cmd, check=False, **kw):
        self.calls.append(list(cmd))
        ok = self.github if any(' @ git+' in a for a in cmd) else self.index
        if check and not ok: raise subprocess.CalledProcessError(1, cmd)
        return subprocess.CompletedProcess(cmd, 0 if ok else 1)


def run_cell(src: str, monkeypatch, colab: bool, index: bool = True, github: bool = True, in_test: bool = False) -> list:
    pip = FakePip(index, github)
    monkeypatch.setattr(subprocess, 'run', pip)
    if colab: monkeypatch.setitem(sys.modules, 'google.colab', types.ModuleType('google.colab'))
    else: monkeypatch.delitem(sys.modules, 'google.colab', raising=False)
    if in_test: monkeypatch.setenv('IN_TEST', '1')
    else: monkeypatch.delenv('IN_TEST', raising=False)
    exec(compile(src, '<install cell>', 'exec'), {'__name__': '__main__'})
    return pip.calls


@pytest.mark.parametrize('nb', ['00_core', '41_dit', '80_interop'])
def test_install_cell_decisions(nb, monkeypatch, capsys):
    src, extras = install_cell(ROOT / 'nbs' / f'{nb}.ipynb'), EXTRAS.get(nb, '')
    pip = [sys.executable, '-m', 'pip', 'install', '-q']
    repo = SETTINGS['git_url']
    assert repo == f"https://github.com/{SETTINGS['user']}/{SETTINGS['lib_name']}"
    assert run_cell(src, monkeypatch, colab=False) == []  # a laptop, CI: nothing
    assert run_cell(src, monkeypatch, colab=True, in_test=True) == []  # nbdev_test on Colab: nothing
    assert run_cell(src, monkeypatch, colab=True, index=True) == [pip + [f'diffusion_course{extras}']]  # a release: the index's
    assert 'GitHub' not in capsys.readouterr().out
    assert run_cell(src, monkeypatch, colab=True, index=False) == [pip + [f'diffusion_course{extras}'],
                                                                   pip + [f'diffusion_course{extras} @ git+{repo}']]  # none: the repository
    assert 'installing it from GitHub' in capsys.readouterr().out
    with pytest.raises(subprocess.CalledProcessError): run_cell(src, monkeypatch, colab=True, index=False, github=False)  # both fail: say so


def test_install_requirement_is_valid():
    from packaging.requirements import Requirement
    for extras in set(EXTRAS.values()) | {''}:
        r = Requirement(f"diffusion_course{extras} @ git+{SETTINGS['git_url']}")
        assert r.name == 'diffusion_course' and r.extras == set(extras.strip('[]').split(',')) - {''} and r.url.startswith('git+https://')


def test_every_notebook_has_one_badge_to_itself():
    for nb in NBS:
        cs = cells(nb)
        found = [(i, m) for i, c in enumerate(cs) for m in BADGE.findall(source(c))]
        assert len(found) == 1, f"{nb.name}: {len(found)} Colab badges"
        (i, (user, repo, name)), = found
        assert (user, repo, name) == (SETTINGS['user'], SETTINGS['lib_name'], nb.name), found
        assert i <= 1 and cs[i]['cell_type'] == 'markdown', f"{nb.name}: the badge is not at the top (cell {i})"
        assert 'https://colab.research.google.com/assets/colab-badge.svg' in source(cs[i])


def test_index_course_map_has_the_same_badges():
    found = [m for c in cells(ROOT / 'nbs' / 'index.ipynb') for m in BADGE.findall(source(c))]
    assert sorted(name for _, _, name in found) == sorted(nb.name for nb in NBS)  # one per notebook, each to an existing one
    assert {(u, r) for u, r, _ in found} == {(SETTINGS['user'], SETTINGS['lib_name'])}


def test_no_notebook_writes_outside_its_folder():
    for nb in NBS:
        for c in cells(nb):
            if c['cell_type'] == 'code': assert "'../assets" not in source(c), f"{nb.name} writes to ../assets"


# out_dir and course_asset

@pytest.fixture
def places(tmp_path):
    (tmp_path / 'clone' / 'nbs').mkdir(parents=True)
    (tmp_path / 'clone' / 'settings.ini').write_text('[DEFAULT]\nlib_name = diffusion_course\nuser = x\n')
    (tmp_path / 'other' / 'nbs').mkdir(parents=True)
    (tmp_path / 'other' / 'settings.ini').write_text('[DEFAULT]\nlib_name = another_course\n')
    (tmp_path / 'drive' / 'MyDrive').mkdir(parents=True)
    (tmp_path / 'content').mkdir()
    return tmp_path


def test_out_dir_in_a_checkout(places):
    nbs = places / 'clone' / 'nbs'
    assert checkout_root(nbs) == checkout_root(places / 'clone') == (places / 'clone').resolve()
    assert out_dir('10_ddpm', start=nbs, drive=places / 'drive') == (places / 'clone' / 'assets').resolve()  # even with Drive mounted
    run = out_dir('dc-train', kind='runs', start=nbs, drive=places / 'drive')
    assert run == (places / 'clone' / 'runs' / 'dc-train').resolve() and run.is_dir()


def test_out_dir_on_colab_with_drive(places):
    d = out_dir('10_ddpm', start=places / 'content', drive=places / 'drive')
    assert d == places / 'drive' / 'MyDrive' / 'diffusion_course' / '10_ddpm' and d.is_dir()
    assert out_dir('dc-train', kind='runs', start=places / 'content', drive=places / 'drive') == places / 'drive' / 'MyDrive' / 'diffusion_course' / 'dc-train'


def test_out_dir_elsewhere(places):
    for start in (places / 'content', places / 'other' / 'nbs'):  # no checkout (another project's settings.ini is not one), no Drive
        assert checkout_root(start) is None
        d = out_dir('10_ddpm', start=start, drive=places / 'no-drive')
        assert d == start.resolve() / 'runs' / '10_ddpm' and d.is_dir()
    assert not (places / 'no-drive').exists()
    with pytest.raises(ValueError, match="kind must be"): out_dir('x', kind='pictures', start=places / 'content')


def test_the_repository_itself_is_a_checkout():
    assert checkout_root(ROOT / 'nbs') == ROOT and out_dir(start=ROOT / 'nbs') == ROOT / 'assets'


def tarball(tmp_path: Path) -> str:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode='w:gz') as tar:
        for name, data in {'diffusion_course-main/assets/latent_comparison/table.md': b'| a |',
                           'diffusion_course-main/assets/latent_comparison/samples/u-vit.png': b'png',
                           'diffusion_course-main/assets/other.png': b'x', 'diffusion_course-main/README.md': b'r'}.items():
            info = tarfile.TarInfo(name); info.size = len(data); tar.addfile(info, io.BytesIO(data))
    (tmp_path / 'repo.tar.gz').write_bytes(buf.getvalue())
    return (tmp_path / 'repo.tar.gz').as_uri()


def test_course_asset_in_a_checkout(places):
    (places / 'clone' / 'assets' / 'latent_comparison').mkdir(parents=True)
    nbs = places / 'clone' / 'nbs'
    assert course_asset('latent_comparison', start=nbs, url='file:///nonexistent') == (places / 'clone' / 'assets' / 'latent_comparison').resolve()
    with pytest.raises(FileNotFoundError, match='missing from the checkout'): course_asset('nothing', start=nbs)
    assert course_asset('latent_comparison', start=ROOT / 'nbs') == ROOT / 'assets' / 'latent_comparison'  # what 50_latent reads


def test_course_asset_outside_a_checkout_is_fetched_once(places, monkeypatch):
    monkeypatch.chdir(places / 'content')
    got = course_asset('latent_comparison', start=places / 'content', url=tarball(places))
    assert got == places / 'content' / 'runs' / 'course-assets' / 'latent_comparison'
    assert (got / 'table.md').read_bytes() == b'| a |' and (got / 'samples' / 'u-vit.png').read_bytes() == b'png'
    assert not (got.parent / 'other.png').exists() and not (got.parent / 'README.md').exists()  # only what was asked for
    assert course_asset('latent_comparison', start=places / 'content', url='file:///nonexistent') == got  # cached: no second fetch
    with pytest.raises(FileNotFoundError, match='https://github.com/diffusion-course/diffusion_course/tree/main/assets/missing'):
        course_asset('missing', start=places / 'content', url='file:///nonexistent')
