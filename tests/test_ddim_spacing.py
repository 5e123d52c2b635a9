"DDIM step spacings for every n: exactly n distinct steps in [0, T), from noise to data; trailing is the default."
import numpy as np
import pytest

from diffusion_course.diffusion.ddim import SPACINGS, DDIMSampler, ddim_timesteps
from diffusion_course.diffusion.ddpm import Schedule


@pytest.mark.parametrize('T', [100, 1000, 4000])
@pytest.mark.parametrize('spacing', SPACINGS)
def test_every_n_gives_n_distinct_steps(T, spacing):
    for n in range(1, T + 1):
        s = ddim_timesteps(T, n, spacing)
        assert len(s) == n and len(set(s)) == n, (n, len(s))
        assert s == sorted(s, reverse=True) and 0 <= s[-1] and s[0] <= T - 1, (n, s[:2], s[-2:])
        if spacing == 'trailing' or spacing == 'linspace' and n > 1: assert s[0] == T - 1  # start at the noisiest step
        if spacing != 'trailing': assert s[-1] == 0


def test_trailing_equals_diffusers_formula_where_that_formula_is_right():
    "diffusers: np.round(np.arange(T, 0, -T / n)) - 1, which returns n + 1 steps (the last -1) for 62 values of n at T = 1000."
    for T, n_bad in ((1000, 62), (4000, 274)):
        bad = 0
        for n in range(1, T + 1):
            theirs = [int(v) for v in np.round(np.arange(T, 0, -T / n)) - 1]
            if len(theirs) == n: assert ddim_timesteps(T, n, 'trailing') == theirs, n
            else: bad += 1; assert theirs[-1] == -1 and theirs[:n] == ddim_timesteps(T, n, 'trailing'), n
        assert bad == n_bad


def test_sampler_default_is_trailing_and_builds_for_every_n():
    sched = Schedule.linear(1000)
    assert DDIMSampler(sched, 10).spacing == 'trailing' and DDIMSampler(sched, 10).timesteps()[0] == (999, 899)
    for n in range(1, 1001):
        pairs = DDIMSampler(sched, n).timesteps()
        assert len(pairs) == n and pairs[-1][1] == -1 and all(tp < t for t, tp in pairs)
