"The package as the index shows it: metadata that matches settings.ini and CI, absolute README links, extras, the release and docs scripts."
import configparser, importlib.metadata as md, importlib.util, re, shutil, subprocess, sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
CFG = configparser.ConfigParser(delimiters=['=']); CFG.read(ROOT / 'settings.ini')
S = CFG['DEFAULT']

def _absolute_links():
    "setup.py's README rewriting, without running setup()."
    src = (ROOT / 'setup.py').read_text()
    ns = {'cfg': S, 're': re}
    exec(src[src.index('git_url, branch ='):src.index('setuptools.setup(')], ns)
    return ns['absolute_links']

def test_readme_links_become_absolute_for_the_index():
    fix = _absolute_links()
    out = fix('![g](assets/a.gif) [n](nbs/10_ddpm.ipynb) [p](pdfs/) [x](https://x.org/a) [h](#install) [m](mailto:a@b)')
    assert out == ('![g](https://raw.githubusercontent.com/diffusion-course/diffusion_course/main/assets/a.gif) '
                   '[n](https://github.com/diffusion-course/diffusion_course/blob/main/nbs/10_ddpm.ipynb) '
                   '[p](https://github.com/diffusion-course/diffusion_course/tree/main/pdfs/) [x](https://x.org/a) [h](#install) [m](mailto:a@b)')
    readme = fix((ROOT / 'README.md').read_text())
    relative = [t for t in re.findall(r'\]\(([^)\s]+)\)', readme) if not re.match(r'[a-z][a-z0-9+.-]*:|#', t)]
    assert not relative, relative[:5]

def test_installed_metadata_matches_settings():
    meta = md.metadata('diffusion_course')
    statuses = ['1 - Planning', '2 - Pre-Alpha', '3 - Alpha', '4 - Beta', '5 - Production/Stable', '6 - Mature', '7 - Inactive']
    classifiers = meta.get_all('Classifier')
    assert f"Development Status :: {statuses[int(S['status']) - 1]}" in classifiers, classifiers
    pys = [c.rsplit(' ', 1)[-1] for c in classifiers if c.startswith('Programming Language :: Python :: ')]
    assert pys == S['py_versions'].split() and meta['Requires-Python'] == f">={S['min_python']}" and pys[0] == S['min_python']
    urls = dict(u.split(', ', 1) for u in meta.get_all('Project-URL'))
    assert {'Source', 'Issues', 'Changelog'} <= set(urls) and all(u.startswith(S['git_url']) for u in urls.values())
    extras = set(meta.get_all('Provides-Extra'))
    assert {'datasets', 'hub', 'diffusers', 'dev'} <= extras
    reqs = meta.get_all('Requires-Dist')
    assert 'torchvision; extra == "datasets"' in reqs and any(r.startswith('huggingface_hub') and 'extra == "hub"' in r for r in reqs)
    runtime = [r for r in reqs if 'extra ==' not in r]
    assert not [r for r in runtime if re.match(r'(fastprogress|mlxtend|torchvision|scipy|pandas|diffusers|huggingface)', r)], runtime

def test_ci_matrix_is_what_the_classifiers_claim():
    ci = (ROOT / '.github/workflows/ci.yml').read_text()
    matrix = re.search(r"python: \[([^\]]*)\]", ci).group(1)
    assert [v.strip(" '\"") for v in matrix.split(',')] == S['py_versions'].split()
    assert 'bash .ci/run' in ci and 'download.pytorch.org/whl/cpu' in ci and 'scripts/release_check.sh' in ci

def test_changelog_has_this_version_and_release_script_parses():
    assert re.search(rf"^## \[?{re.escape(S['version'])}\]?", (ROOT / 'CHANGELOG.md').read_text(), re.M)
    for sh in ('release_check.sh', 'api_docs.sh'):
        subprocess.run(['bash', '-n', str(ROOT / 'scripts' / sh)], check=True)
    import diffusion_course
    assert diffusion_course.__version__ == S['version']

@pytest.mark.skipif(importlib.util.find_spec('torchvision') is not None, reason='torchvision is installed here')
def test_missing_torchvision_names_the_extra():
    from diffusion_course.data import load_dataset
    with pytest.raises(ImportError, match=re.escape('pip install "diffusion_course[datasets]"')): load_dataset('cifar10')

@pytest.mark.skipif(importlib.util.find_spec('pdoc') is None or shutil.which('bash') is None, reason='pdoc is in [dev]')
def test_api_reference_builds(tmp_path):
    r = subprocess.run(['bash', str(ROOT / 'scripts/api_docs.sh'), str(tmp_path / 'api')], capture_output=True, text=True, cwd=ROOT)
    assert r.returncode == 0, r.stderr[-2000:]
    pages = {p.relative_to(tmp_path / 'api').as_posix() for p in (tmp_path / 'api').rglob('*.html')}
    for mod in ('diffusion_course/training.html', 'diffusion_course/interop.html', 'diffusion_course/backbones/dit.html', 'index.html'):
        assert mod in pages, sorted(pages)
    page = (tmp_path / 'api/diffusion_course/interop.html').read_text()
    assert 'save_pretrained' in page and 'to_diffusers' in page

def test_readme_renders_echo_false_cells_as_their_markdown_output():
    spec = importlib.util.spec_from_file_location('readme', ROOT / '.ci' / 'readme.py')
    readme = importlib.util.module_from_spec(spec); spec.loader.exec_module(readme)
    code = lambda src, *outs: {'cell_type': 'code', 'source': src, 'outputs': list(outs)}
    table = {'output_type': 'execute_result', 'data': {'text/markdown': '| a |\n|---|\n| ![g](../assets/g.gif) |', 'text/plain': '<Markdown>'}}
    out = readme.render({'cells': [code('#| echo: false\nMarkdown(t)', table),
                                   code('print(1)\nprint(2)', {'output_type': 'stream', 'text': '1\n'}, {'output_type': 'stream', 'text': '2\n'})]})
    assert 'Markdown(t)' not in out and '| ![g](assets/g.gif) |' in out and '<Markdown>' not in out  # output only, links from the repository root
    assert '```python\nprint(1)\nprint(2)\n```\n\n```\n1\n2\n```' in out  # other cells: code, then their text outputs in one block
