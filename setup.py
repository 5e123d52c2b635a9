from configparser import ConfigParser
import re, setuptools, shlex

# note: all settings are in settings.ini; edit there, not here
config = ConfigParser(delimiters=['='])
config.read('settings.ini', encoding='utf-8')
cfg = config['DEFAULT']

cfg_keys = 'version description keywords author author_email'.split()
expected = cfg_keys + "lib_name user branch license status min_python audience language".split()
for o in expected: assert o in cfg, f"missing expected setting: {o}"
setup_cfg = {o: cfg[o] for o in cfg_keys}

licenses = {'apache2': ('Apache Software License 2.0', 'OSI Approved :: Apache Software License')}
statuses = ['1 - Planning', '2 - Pre-Alpha', '3 - Alpha', '4 - Beta', '5 - Production/Stable', '6 - Mature', '7 - Inactive']
py_versions = cfg['py_versions'].split()  # the versions CI tests (.github/workflows/ci.yml), not a wish list

requirements = shlex.split(cfg.get('requirements', ''))
dev_requirements = (cfg.get('dev_requirements') or '').split()
# optional extras: settings.ini's `extra_<name> = requirement ...` become `pip install "diffusion_course[<name>]"`
extras = {k[len('extra_'):]: shlex.split(v) for k, v in cfg.items() if k.startswith('extra_')}
extras['dev'] = dev_requirements
lic = licenses.get(cfg['license'].lower(), (cfg['license'], None))

git_url, branch = cfg['git_url'].rstrip('/'), cfg['branch']
raw_url = git_url.replace('https://github.com/', 'https://raw.githubusercontent.com/')

def absolute_links(md: str) -> str:
    "README.md's repository-relative links and images, made absolute for the package index's page."
    def fix(m):
        bang, text, target = m.group(1), m.group(2), m.group(3)
        if re.match(r'[a-z][a-z0-9+.-]*:|#|/', target): return m.group(0)  # already absolute, an anchor, or site-rooted
        base = f'{raw_url}/{branch}' if bang else f'{git_url}/{"tree" if target.endswith("/") else "blob"}/{branch}'
        return f'{bang}[{text}]({base}/{target})'
    return re.sub(r'(!?)\[([^\]]*)\]\(([^)\s]+)\)', fix, md)

setuptools.setup(
    name=cfg['lib_name'],
    license=lic[0],
    classifiers=['Development Status :: ' + statuses[int(cfg['status']) - 1],  # status = 3 is '3 - Alpha'
                 'Intended Audience :: ' + cfg['audience'].title(),
                 'Natural Language :: ' + cfg['language'].title(),
                 'Topic :: Scientific/Engineering :: Artificial Intelligence']
                + ['Programming Language :: Python :: ' + o for o in py_versions]
                + (['License :: ' + lic[1]] if lic[1] else []),
    url=git_url,
    project_urls={'Source': git_url,
                  'Course notebooks': f'{git_url}/tree/{branch}/nbs',
                  'Issues': f'{git_url}/issues',
                  'Changelog': f'{git_url}/blob/{branch}/CHANGELOG.md',
                  'Contributing': f'{git_url}/blob/{branch}/CONTRIBUTING.md'},
    packages=setuptools.find_packages(include=[cfg['lib_name'], cfg['lib_name'] + '.*']),
    include_package_data=True,
    install_requires=requirements,
    extras_require=extras,
    python_requires='>=' + cfg['min_python'],
    long_description=absolute_links(open('README.md', encoding='utf-8').read()),
    long_description_content_type='text/markdown',
    zip_safe=False,
    entry_points={'console_scripts': cfg.get('console_scripts', '').split(),
                  'nbdev': [f'{cfg.get("lib_path")}={cfg.get("lib_path")}._modidx:d']},
    **setup_cfg)
