"benchmarks/gpu.py on a machine without a GPU: its arguments, its FLOP count, its peak table, and its refusal without CUDA."
import dataclasses, os, sys

import pytest
import torch

sys.path.insert(0, os.path.join(os.path.dirname(__file__), '..', 'benchmarks'))
import gpu  # noqa: E402

from diffusion_course.backbones.dit import PRESETS  # noqa: E402

def test_defaults_and_overrides():
    a = gpu.parse_args([])
    assert (a.preset, a.batch, a.peak_tflops, a.no_compile, a.no_diffusers) == ('DiT-B/2', 256, None, False, False)
    assert a.time_limit <= 300  # the whole command stays within five minutes
    a = gpu.parse_args(['--peak-tflops', '500', '--batch', '64', '--no-compile', '--steps', '5'])
    assert (a.peak_tflops, a.batch, a.no_compile, a.steps) == (500.0, 64, True, 5)

@pytest.mark.parametrize('argv', [['--batch', '0'], ['--peak-tflops', '-3'], ['--steps', 'many']])
def test_bad_arguments_exit(argv):
    with pytest.raises(SystemExit): gpu.parse_args(argv)

@pytest.mark.parametrize('name, tflops', [('NVIDIA H100 80GB HBM3', 989), ('NVIDIA H100 PCIe', 756), ('NVIDIA H200', 989),
                                          ('NVIDIA A100-SXM4-80GB', 312), ('NVIDIA L4', 121), ('Tesla T4', 65), ('NVIDIA A10G', 70)])
def test_peak_table(name, tflops):
    assert gpu.peak_tflops(name) == tflops

def test_unknown_gpu_has_no_peak():
    assert gpu.peak_tflops('Some Future Accelerator') is None

@pytest.mark.parametrize('name, paper', [('DiT-S/2', 6.06), ('DiT-B/2', 23.01), ('DiT-XL/2', 118.64)])
def test_forward_macs_match_the_paper_and_the_flop_counter(name, paper):
    "The DiT paper's 'Gflops' are multiply-adds; the counter (FLOPs / 2) and the analytic formula agree with them."
    cfg = PRESETS[name]
    counted, analytic = gpu.counted_forward_macs(cfg), gpu.dit_forward_macs(cfg)
    assert abs(counted - analytic) / analytic < 1e-3, (counted, analytic)
    assert abs(counted / 1e9 - paper) / paper < 2e-3, counted

def test_analytic_macs_scale_with_batch_and_depth():
    cfg = PRESETS['DiT-B/2']
    assert gpu.dit_forward_macs(cfg, batch=4) == 4 * gpu.dit_forward_macs(cfg)
    deeper = dataclasses.replace(cfg, depth=24)
    assert gpu.dit_forward_macs(deeper) > 1.9 * gpu.dit_forward_macs(cfg)

@pytest.mark.skipif(torch.cuda.is_available(), reason='a CUDA device is present: nothing to refuse')
def test_refuses_without_cuda():
    with pytest.raises(SystemExit, match='needs a CUDA device'): gpu.main(['--steps', '1'])
