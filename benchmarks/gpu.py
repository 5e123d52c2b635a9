"""DiT-B/2 training throughput on a CUDA device: images/s and model FLOPs utilisation (MFU), ours against diffusers.

    python benchmarks/gpu.py                              # DiT-B/2, 32x32x4 latents, bf16 autocast, batch 256, at most ~5 minutes
    python benchmarks/gpu.py --peak-tflops 989 --batch 128 --no-diffusers

A training step: forward on a fixed batch (bf16 autocast, fp32 weights), mean-squared loss, backward, a fused AdamW step.
Images/s = batch * steps / seconds (CUDA-synchronised, after warm-up). MFU = images/s * 6 * (forward multiply-adds per
image) / (the device's peak dense bf16 FLOP/s): a training step is counted as 6x the forward multiply-adds (forward 2,
backward 4 FLOPs per multiply-add), as in the scaling-law literature; attention is included. The forward multiply-adds
are counted by torch.utils.flop_counter on the meta device and checked against the analytic count (`dit_forward_macs`);
DiT-B/2 at 32x32x4 is 23.0 G, the paper's 23.01 "Gflops". The peak comes from a table of known GPUs by name (dense, no
sparsity), or --peak-tflops. Each of ours and diffusers' DiTTransformer2DModel (identical architecture) runs eager and
under torch.compile; a mode whose turn would pass the --time-limit is skipped and said so. Refuses without CUDA.
"""
from __future__ import annotations
import argparse, os, sys, time

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

# dense (non-sparse) bf16 tensor-core peak, TFLOP/s, by a substring of torch.cuda.get_device_name(); first match wins
PEAK_BF16_TFLOPS = [
    ('GH200', 989.0), ('H200', 989.0), ('H100 PCIe', 756.0), ('H100 NVL', 835.0), ('H100', 989.0), ('H800', 989.0),
    ('B200', 2250.0), ('A100', 312.0), ('A800', 312.0), ('L40S', 362.0), ('L4', 121.0), ('A10G', 70.0), ('A10', 125.0),
    ('RTX 4090', 165.0), ('T4', 65.0),  # T4: fp16 (it has no bf16 tensor cores)
    ('V100', 125.0),  # fp16, no bf16
]

def peak_tflops(device_name: str) -> float | None:
    "The dense bf16 peak of a known GPU (TFLOP/s), None when the name is not in the table."
    for key, value in PEAK_BF16_TFLOPS:
        if key.lower() in device_name.lower(): return value
    return None

def dit_forward_macs(cfg, batch: int = 1) -> int:
    "Analytic multiply-adds of one DiT forward (adaLN-Zero): patch embedding, embedders, blocks with attention, final layer."
    D, p, C = cfg.dim, cfg.patch, cfg.in_channels
    T, H = (cfg.input_size // p) ** 2, int(D * cfg.mlp_ratio)
    out = C * (2 if cfg.learn_sigma else 1)
    embed = T * p * p * C * D + 256 * D + D * D  # patchify conv; timestep MLP (the label embedding is a lookup)
    block = 6 * D * D + T * 3 * D * D + 2 * T * T * D + T * D * D + 2 * T * D * H  # adaLN, qkv, QK^T and PV, proj, MLP
    final = 2 * D * D + T * D * p * p * out
    return batch * (embed + cfg.depth * block + final)

def counted_forward_macs(cfg) -> int:
    "Multiply-adds of one forward of our DiT for one image, counted by torch.utils.flop_counter (FLOPs / 2) on the meta device."
    from torch.utils.flop_counter import FlopCounterMode
    from diffusion_course.backbones.dit import DiT
    with torch.device('meta'):
        m = DiT(cfg)
        x, t = torch.randn(1, cfg.in_channels, cfg.input_size, cfg.input_size), torch.zeros(1, dtype=torch.long)
        with FlopCounterMode(display=False) as counter: m(x, t)  # y=None: the null label, the same compute
    return counter.get_total_flops() // 2

def parse_args(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument('--preset', default='DiT-B/2')
    ap.add_argument('--batch', type=int, default=256)
    ap.add_argument('--steps', type=int, default=20, help='timed steps per mode')
    ap.add_argument('--warmup', type=int, default=3, help='untimed steps per mode (the first one compiles)')
    ap.add_argument('--peak-tflops', type=float, default=None, help="the device's peak dense bf16 TFLOP/s (default: from the table by name)")
    ap.add_argument('--time-limit', type=float, default=270.0, help='seconds; modes that would start later are skipped')
    ap.add_argument('--no-compile', action='store_true')
    ap.add_argument('--no-diffusers', action='store_true')
    a = ap.parse_args(argv)
    if a.batch < 1 or a.steps < 1 or a.warmup < 1: ap.error(f'batch, steps and warmup must be >= 1, got {a.batch}, {a.steps}, {a.warmup}')
    if a.peak_tflops is not None and a.peak_tflops <= 0: ap.error(f'--peak-tflops must be positive, got {a.peak_tflops}')
    return a

def require_cuda():
    "Exit with a clear message unless a CUDA device is present."
    if not torch.cuda.is_available():
        raise SystemExit(f'benchmarks/gpu.py needs a CUDA device, and torch.cuda.is_available() is False here '
                         f'(torch {torch.__version__}, CUDA build {torch.version.cuda}). On CPU use benchmarks/dit_speed.py.')

def run_mode(model, call, x, t, y, compile_: bool, steps: int, warmup: int) -> tuple[float, float]:
    "(seconds per step, seconds of warm-up including compilation) of training steps with bf16 autocast and fused AdamW."
    fn = torch.compile(model) if compile_ else model
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4, fused=True)
    def step():
        with torch.autocast('cuda', dtype=torch.bfloat16):
            loss = call(fn, x, t, y).float().square().mean()
        loss.backward(); opt.step(); opt.zero_grad(set_to_none=True)
    torch.cuda.synchronize(); t0 = time.perf_counter()
    for _ in range(warmup): step()
    torch.cuda.synchronize(); t1 = time.perf_counter()
    for _ in range(steps): step()
    torch.cuda.synchronize()
    return (time.perf_counter() - t1) / steps, t1 - t0

def main(argv=None):
    a = parse_args(argv)
    require_cuda()
    from dit_speed import diffusers_call, inputs, ours_call, pair
    start = time.perf_counter()
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = True
    name = torch.cuda.get_device_name()
    peak = a.peak_tflops or peak_tflops(name)
    if peak is None: raise SystemExit(f'unknown peak bf16 FLOP/s for {name!r}: pass --peak-tflops')
    ours, dm, cfg = pair(a.preset)
    macs = counted_forward_macs(cfg)
    analytic = dit_forward_macs(cfg)
    print(f'{a.preset} on {name} (peak {peak:.0f} TFLOP/s dense bf16{" from --peak-tflops" if a.peak_tflops else ""}); torch {torch.__version__}; '
          f'batch {a.batch}, 32x32x4 latents, 1000 classes, bf16 autocast, fused AdamW; {a.warmup} warm-up + {a.steps} timed steps per mode')
    print(f'forward: {macs / 1e9:.2f} G multiply-adds per image (analytic {analytic / 1e9:.2f} G); a training step counts 6x: '
          f'{6 * macs / 1e9:.1f} GFLOP per image')
    x, t, y = inputs(cfg, a.batch, 'cuda')
    sides = [('ours', ours, ours_call)] + ([] if a.no_diffusers else [('diffusers', dm, diffusers_call)])
    modes = [False] + ([] if a.no_compile else [True])
    head = f"{'model':<11}{'mode':<9}{'ms/step':>9}{'images/s':>10}{'TFLOP/s':>9}{'MFU':>7}{'warm-up s':>11}"
    print(head); print('-' * len(head))
    results = {}
    for compile_ in modes:
        for side, model, call in sides:
            mode = 'compile' if compile_ else 'eager'
            if time.perf_counter() - start > a.time_limit:
                print(f'{side:<11}{mode:<9}skipped: the --time-limit of {a.time_limit:.0f} s is spent'); continue
            torch.manual_seed(0)
            model = model.cuda().train()
            sec, warm = run_mode(model, call, x, t, y, compile_, a.steps, a.warmup)
            ips = a.batch / sec
            tflops = ips * 6 * macs / 1e12
            results[side, mode] = ips
            print(f'{side:<11}{mode:<9}{1000 * sec:>9.1f}{ips:>10.0f}{tflops:>9.1f}{tflops / peak:>7.1%}{warm:>11.1f}', flush=True)
            model.cpu(); torch.cuda.empty_cache()
    for mode in ('eager', 'compile'):
        if ('ours', mode) in results and ('diffusers', mode) in results:
            print(f'{mode}: ours / diffusers images/s = {results["ours", mode] / results["diffusers", mode]:.2f}')
    print(f'total {time.perf_counter() - start:.0f} s')

if __name__ == '__main__':
    main()
