"`core.retain_freed_memory`: in a fresh process, a freed 24 MiB buffer goes back to the OS by default and stays with it."
import platform, subprocess, sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent

CODE = '''
import os, sys, torch
from diffusion_course.core import retain_freed_memory
if sys.argv[1] == 'retain': assert retain_freed_memory()
def rss(): return int(open('/proc/self/statm').read().split()[1]) * os.sysconf('SC_PAGE_SIZE')
x = torch.ones(6 * 2**20)  # 24 MiB, every page touched
before = rss(); del x
print((before - rss()) / 2**20)
'''

def _released_mib(mode: str) -> float:
    out = subprocess.run([sys.executable, '-c', CODE, mode], capture_output=True, text=True, check=True, cwd=ROOT)
    return float(out.stdout.strip().splitlines()[-1])

@pytest.mark.skipif(platform.system() != 'Linux' or platform.libc_ver()[0] != 'glibc', reason='mallopt is glibc; /proc is Linux')
def test_freed_memory_is_retained():
    assert _released_mib('default') > 20  # glibc serves a 24 MiB block from mmap and unmaps it when freed
    assert _released_mib('retain') < 1  # kept for the next allocation

def test_reports_whether_it_applies():
    from diffusion_course.core import retain_freed_memory
    assert retain_freed_memory() == (platform.libc_ver()[0] == 'glibc')
