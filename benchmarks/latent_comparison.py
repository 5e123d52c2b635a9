"""The seeds' backbone comparison, on latents: every backbone of the course trained alike on the latents of the offline
MNIST digits (and the pixel-space U-Net on the digits themselves, for reference).

    python benchmarks/latent_comparison.py                                   # the default size (600 steps, N = 500), meant for < 30 min on 2 cores
    python benchmarks/latent_comparison.py --steps 250 --vae-steps 800 --threads 2 --out assets/latent_comparison
                                                                      # the saved run 50_latent shows: 17.2 min on 2 shared cores
    python benchmarks/latent_comparison.py --steps 40 --vae-steps 100 --n-eval 100 --out runs/latent-comparison-small   # a quick check
    python benchmarks/latent_comparison.py --pixel-run /work/scratch/mainjob/run   # adds a dc-train run (e.g. the main job's U-Net), scored alike
    python benchmarks/latent_comparison.py --autoencoder runs/latent-comparison/autoencoder             # reuse an autoencoder
    python benchmarks/latent_comparison.py --device cuda --steps 20000 --vae-steps 5000 --batch 128     # on a GPU
    python benchmarks/latent_comparison.py --dataset cifar10 --size 64 --autoencoder stabilityai/sd-vae-ft-ema \
        --device cuda --steps 20000 --batch 128                       # Stable Diffusion latents of a real dataset (downloads)

Protocol. The autoencoder is `latent.train_autoencoder` (KL weight --beta, --vae-steps steps of batch 64, seed 0) unless
--autoencoder names a saved one (`latent.load_autoencoder`: a course checkpoint, a diffusers AutoencoderKL folder or a hub
name; a diffusers VAE takes the digits as gray RGB, so give it --size 64 for 8x8 latents). The 4,000 training digits are
encoded once (posterior means, times the scale factor) and cached under --cache; the held-out figures use the 1,000
reference digits (another --dataset: its test split). Each backbone of `latent.COMPARISON` is
built through the registry with its small preset, then trained by the course's `Trainer` with the same steps, batch, seed,
AdamW learning rate, warmup, gradient clipping (1.0), EMA (0.999), loss (L_simple, eps-prediction, linear schedule,
T = 1000, label dropout 0.1) and the same batches; sampled from the EMA weights with DDIM (--sample-steps, trailing
spacing, no clipping of x0_hat on latents) and classifier-free guidance --cfg-scale, from one fixed noise batch, and
decoded. Reported per backbone: parameters; milliseconds per training step (forward, backward, AdamW; batch --batch;
timed after training, interleaved round-robin across the backbones, median of --time-rounds rounds, so that the
machine's load falls on all alike); the mean training loss of the first 10 and the last 50 steps; a held-out loss (L_simple on
500 reference digits' latents with fixed steps and noise, EMA weights, no label dropout); a sample grid. The pixel U-Net's
losses are on pixels: the same noise-prediction error, but of a different data, so read its loss beside the others with
care. FD and class accuracy: --n-eval class-balanced samples (labels 0..9 in turn, the same noise for every backbone, the EMA
weights, the sampler above), decoded and scored by `evaluation.Evaluator.mnist` (features of the course's shipped digit
classifier, against 500 held-out reference digits), beside the ruler at the same N: the FD of 500 other held-out real digits
(the floor no model can beat at this N), and the other rows of the ruler in results.json. The autoencoder's reconstructions
of those real digits are scored alike: no latent model's decoded samples can do better than its decoder. (Another --dataset:
no FD, the evaluator measures digits.) --pixel-run adds a row for a dc-train run in pixel space (its own recipe and steps;
scored alike, through `evaluation.evaluate_checkpoint`), e.g. the main job's U-Net.

Writes under --out: loss_curves.png (smoothed training losses, one curve per backbone), table.md, results.json (the
protocol and every figure, the ruler included), samples/<backbone>.png (the first --n-samples scored samples), autoencoder/
(when trained here).
"""
from __future__ import annotations
import argparse, copy, functools, json, re, statistics, sys, time
from pathlib import Path

import torch

from diffusion_course.blocks import num_params
from diffusion_course.cli import make_sample_fn
from diffusion_course.core import make_generator, save_image_grid, seed_everything, setup_matplotlib
from diffusion_course.data import DATASETS, load_dataset, mnist_offline
from diffusion_course.diffusion import ddpm
from diffusion_course.evaluation import Evaluator, Protocol, evaluate_checkpoint, format_table, generate
from diffusion_course.latent import (COMPARISON, PIXEL_BASELINES, build_comparison, encode_dataset, latent_sample_fn,
                                     load_autoencoder, psnr, reconstruct, save_autoencoder, train_autoencoder)
from diffusion_course.training import EMA, LossPlot, Trainer, sample_with


def evaluate(evaluator: Evaluator | None, samples: torch.Tensor, labels: torch.Tensor) -> dict:
    """FD, KID, precision, recall and class accuracy of decoded `samples` (asked for `labels`), with the ruler's floor at the same N.

    {'fd', 'fd_ruler', 'class_acc', ...}: `fd_ruler` is the FD of as many held-out real digits against the same reference (the
    best any model can reach at this N); {} without an evaluator (the table shows '-')."""
    if evaluator is None or len(samples) < 2 * evaluator.k: return {}
    m = evaluator.score(samples, labels)
    return {'n_eval': len(samples), 'fd': m['fd'], 'fd_ruler': evaluator.floor(len(samples)), 'class_acc': m.get('accuracy'),
            'kid': m['kid'], 'precision': m['precision'], 'recall': m['recall']}


@torch.no_grad()
def heldout_loss(model, data, sched, n: int = 500, seed: int = 1, device='cpu') -> float:
    "L_simple on the first n items of `data` with fixed steps and noise, in eval mode (no label dropout)."
    g = make_generator(seed)
    x0, y = data.batch(torch.arange(min(n, len(data))))
    t = torch.randint(0, sched.T, (len(x0),), generator=g)
    eps = torch.randn(x0.shape, generator=g)
    was = model.training
    model.eval()
    total = sum(ddpm.l_simple(model, x0[i:i + 100].to(device), y[i:i + 100].to(device), sched=sched, t=t[i:i + 100].to(device),
                              eps=eps[i:i + 100].to(device)).item() * len(x0[i:i + 100]) for i in range(0, len(x0), 100))
    model.train(was)
    return total / len(x0)


def time_steps(models: dict, datasets: dict, loss_fn, batch: int, rounds: int, steps: int, device) -> dict:
    "Milliseconds per training step (forward, backward, AdamW) of each model: interleaved round-robin, median over rounds."
    times = {k: [] for k in models}
    opts = {k: torch.optim.AdamW(m.parameters(), lr=1e-4) for k, m in models.items()}
    batches = {k: datasets[k].batch(torch.arange(batch)) for k in models}
    for r in range(rounds + 1):  # round 0 warms up
        for k, m in models.items():
            x, y = (t.to(device) for t in batches[k])
            if device.type == 'cuda': torch.cuda.synchronize()
            t0 = time.perf_counter()
            for _ in range(steps):
                loss = loss_fn(m, x, y)
                opts[k].zero_grad(set_to_none=True); loss.backward(); opts[k].step()
            if device.type == 'cuda': torch.cuda.synchronize()
            if r: times[k].append(1000 * (time.perf_counter() - t0) / steps)
    return {k: statistics.median(v) for k, v in times.items()}


def slug(label: str) -> str: return re.sub(r'[^a-z0-9]+', '-', label.lower()).strip('-')


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument('--backbones', nargs='+', default=list(COMPARISON), help='labels of latent.COMPARISON')
    ap.add_argument('--steps', type=int, default=600, help='training steps per backbone')
    ap.add_argument('--batch', type=int, default=64)
    ap.add_argument('--lr', type=float, default=1e-3)
    ap.add_argument('--warmup', type=int, default=50)
    ap.add_argument('--seed', type=int, default=0)
    ap.add_argument('--autoencoder', help='a saved autoencoder (folder or hub name); default: train one here')
    ap.add_argument('--beta', type=float, default=1e-3, help='KL weight of the autoencoder trained here')
    ap.add_argument('--vae-steps', type=int, default=1000, help='training steps of the autoencoder trained here')
    ap.add_argument('--dataset', default='mnist-offline', help=f"one of {', '.join(DATASETS)} (others download through torchvision)")
    ap.add_argument('--size', type=int, default=32, help='image size (64 for an 8x-downsampling VAE such as SD)')
    ap.add_argument('--sample-steps', type=int, default=25)
    ap.add_argument('--cfg-scale', type=float, default=3.0)
    ap.add_argument('--n-samples', type=int, default=40, help='samples per grid (labels 0..9 in turn)')
    ap.add_argument('--n-eval', type=int, default=500, help='samples scored per backbone (FD, class accuracy); the ruler at the same N; 0: none')
    ap.add_argument('--eval-batch', type=int, default=250, help='samples drawn at once for the scoring')
    ap.add_argument('--pixel-run', help='a dc-train run in pixel space to score beside (its own recipe), e.g. the main job\'s U-Net')
    ap.add_argument('--time-rounds', type=int, default=3, help='rounds of the interleaved step timing')
    ap.add_argument('--time-steps', type=int, default=5, help='steps per backbone per timing round')
    ap.add_argument('--device', default='cpu')
    ap.add_argument('--threads', type=int, default=None, help='torch CPU threads')
    ap.add_argument('--cache', default=None, help='latent cache folder (default: OUT/cache)')
    ap.add_argument('--out', default='runs/latent-comparison')
    a = ap.parse_args(argv)
    unknown = [b for b in a.backbones if b not in COMPARISON]
    if unknown: ap.error(f"unknown backbones {unknown}; expected labels of latent.COMPARISON: {list(COMPARISON)}")
    if a.threads: torch.set_num_threads(a.threads)
    out, device, t_start = Path(a.out), torch.device(a.device), time.time()
    (out / 'samples').mkdir(parents=True, exist_ok=True)
    if a.dataset == 'mnist-offline': data, ref = mnist_offline(a.size), mnist_offline(a.size, split='reference')
    else: data, ref = load_dataset(a.dataset, size=a.size), load_dataset(a.dataset, train=False, size=a.size)
    if data.multi_hot: ap.error(f"--dataset {a.dataset} has multi-hot labels; the comparison samples one class per image (use a class dataset)")
    K = data.num_classes
    evaluator = Evaluator.mnist(a.size, device=device) if a.n_eval and a.dataset == 'mnist-offline' else None
    if evaluator is not None and not 2 * evaluator.k <= a.n_eval <= len(evaluator.real):
        ap.error(f"--n-eval must lie in [{2 * evaluator.k}, {len(evaluator.real)}] (the ruler's real digits), got {a.n_eval}")

    # the autoencoder, then the latents (cached)
    t0 = time.time()
    if a.autoencoder: ae, vae_note = load_autoencoder(a.autoencoder, device=device, gray=data.shape[0] == 1), f"loaded from {a.autoencoder}"
    else:
        ae = train_autoencoder(data, beta=a.beta, steps=a.vae_steps, seed=a.seed, device=device)
        save_autoencoder(ae, out / 'autoencoder')
        vae_note = f"trained here: beta {a.beta:g}, {a.vae_steps} steps, saved to {out / 'autoencoder'}"
    x_ref = ref.batch(torch.arange(len(ref)))[0]
    vae = {'note': vae_note, 'seconds': round(time.time() - t0, 1), 'scale_factor': ae.scale_factor,
           'psnr_reference': psnr(x_ref, reconstruct(ae, x_ref)).mean().item(), 'fingerprint': ae.fingerprint()[:16]}
    cache = Path(a.cache) if a.cache else out / 'cache'
    t0 = time.time()
    lat, lat_ref = encode_dataset(ae, data, cache), encode_dataset(ae, ref, cache)
    vae['encode_seconds'] = round(time.time() - t0, 2)
    if evaluator is not None:  # the decoder's bound: reconstructions of held-out real digits, scored like samples
        x_real, y_real = evaluator.ruler_images(a.n_eval)['real']
        rec = evaluate(evaluator, reconstruct(ae, x_real), y_real)
        vae.update(fd_reconstruction=rec['fd'], fd_ruler=rec['fd_ruler'], class_acc_reconstruction=rec['class_acc'], n_eval=a.n_eval)
        print(f"autoencoder reconstructions of {a.n_eval} held-out digits: FD {rec['fd']:.2f} (ruler: real digits {rec['fd_ruler']:.2f}), "
              f"class accuracy {rec['class_acc']:.1%}", flush=True)
    print(f"autoencoder {vae_note} ({vae['seconds']} s): scale factor {ae.scale_factor:.4f}, reconstruction PSNR "
          f"{vae['psnr_reference']:.2f} dB on {len(ref):,} held-out images; latents {lat.shape}, "
          f"{'read from' if lat.from_cache else 'encoded to'} {lat.path} ({vae['encode_seconds']} s)", flush=True)

    sched = ddpm.Schedule.linear(1000)
    loss_fn = functools.partial(ddpm.l_simple, sched=sched)
    y = torch.arange(a.n_samples) % K
    rows, curves, trained, train_sets = [], {}, {}, {}
    for label in a.backbones:
        pixel = label in PIXEL_BASELINES
        train_data, ref_data = (data, ref) if pixel else (lat, lat_ref)
        seed_everything(a.seed)
        model = build_comparison(label, train_data.shape, num_classes=K)
        plot = LossPlot(smooth=0.95)
        trainer = Trainer(model, loss_fn, train_data, steps=a.steps, batch_size=a.batch, lr=a.lr, warmup=a.warmup, seed=a.seed,
                          device=device, callbacks=[EMA(beta=0.999), plot])
        t0 = time.time()
        trainer.fit()
        train_s = time.time() - t0
        sample_fn = (make_sample_fn(sched, 'ddim', a.sample_steps, cfg_scale=a.cfg_scale, num_classes=K) if pixel
                     else latent_sample_fn(ae, sched, a.sample_steps, cfg_scale=a.cfg_scale, num_classes=K))
        t0 = time.time()
        if evaluator is not None:  # --n-eval samples from one fixed noise for every backbone; the grid shows the first ones
            model_eval = trainer.eval_model().eval()
            y_eval = torch.arange(a.n_eval) % K
            samples = generate(model_eval, sample_fn, a.n_eval, train_data.shape, y_eval, seed=a.seed + 1, batch_size=a.eval_batch,
                               device=device, progress=False)
            scores = evaluate(evaluator, samples, y_eval)
            samples = samples[:a.n_samples]
        else:
            x_T = torch.randn((a.n_samples, *train_data.shape), generator=make_generator(a.seed + 1))
            samples, scores = sample_with(trainer, sample_fn, x_T, y), {}
        sample_s = time.time() - t0
        save_image_grid(samples, out / 'samples' / f'{slug(label)}.png', nrow=K if len(samples) % K == 0 else 8)
        L = plot.losses
        row = {'backbone': label, 'space': 'pixels' if pixel else 'latents', 'shape': list(train_data.shape), 'params': num_params(model),
               'train_seconds': round(train_s, 1), 'loss_first10': sum(L[:10]) / len(L[:10]), 'loss_last50': sum(L[-50:]) / len(L[-50:]),
               'heldout_loss': heldout_loss(trainer.eval_model(), ref_data, sched, device=device), 'sample_seconds': round(sample_s, 1), **scores}
        rows.append(row); curves[label] = plot.smoothed()
        trained[label], train_sets[label] = copy.deepcopy(model).train(), train_data
        print(f"{label:<26} {row['params']:>9,} params  {train_s:6.1f} s  loss {row['loss_first10']:.3f} -> {row['loss_last50']:.3f}  "
              f"held-out {row['heldout_loss']:.3f}" + (f"  FD {row['fd']:.1f} (ruler {row['fd_ruler']:.1f}), class acc {row['class_acc']:.0%}"
                                                      if 'fd' in row else ''), flush=True)
    if a.pixel_run:  # a pixel-space dc-train run with its own recipe, scored alike
        res = evaluate_checkpoint(a.pixel_run, n=a.n_eval or 40, sampler='ddim', steps=a.sample_steps, cfg_scale=a.cfg_scale,
                                  seed=a.seed + 1, evaluator=evaluator, batch_size=a.eval_batch, device=device, progress=False)
        run_cfg = json.loads((Path(a.pixel_run) / 'config.json').read_text())
        save_image_grid(res['samples'][:a.n_samples], out / 'samples' / 'pixel-run.png', nrow=K if a.n_samples % K == 0 else 8)
        from diffusion_course.cli import load_trained
        m = res['metrics']
        rows.append({'backbone': f"{run_cfg['model'].get('preset', 'model')} (dc-train run)", 'space': 'latents' if run_cfg.get('autoencoder') else 'pixels',
                     'shape': run_cfg['image_shape'],
                     'params': num_params(load_trained(a.pixel_run)[0]), 'run': str(a.pixel_run), 'run_steps': run_cfg['args'].get('steps'),
                     'n_eval': m['n'], 'fd': m['fd'], 'fd_ruler': res['ruler']['real']['fd'], 'class_acc': m.get('accuracy'),
                     'kid': m['kid'], 'precision': m['precision'], 'recall': m['recall']})

    ms = time_steps(trained, train_sets, loss_fn, a.batch, a.time_rounds, a.time_steps, device)
    for r in rows: r['ms_per_step'] = round(ms[r['backbone']], 1) if r['backbone'] in ms else None

    plt = setup_matplotlib()
    fig, ax = plt.subplots(figsize=(8, 4.5))
    for label, c in curves.items():
        ax.plot(range(1, len(c) + 1), c, label=label, ls='--' if label in PIXEL_BASELINES else '-')
    ax.set_yscale('log'); ax.set_xlabel('step'); ax.set_ylabel('L_simple (smoothed)')
    ax.set_title(f'{a.dataset} latents {tuple(lat.shape)}: {a.steps} steps, batch {a.batch}, lr {a.lr:g}, seed {a.seed}')
    ax.legend(fontsize=8); fig.savefig(out / 'loss_curves.png', dpi=110, bbox_inches='tight'); plt.close(fig)

    cell = lambda r, k, f: f.format(r[k]) if r.get(k) is not None else '-'
    n_eval = f" at N = {a.n_eval}" if evaluator is not None else ''
    head = f'| backbone | space | params | ms/step | loss first 10 | loss last 50 | held-out loss | FD{n_eval} (ruler) | class acc |'
    lines = [head, '|' + '---|' * 9]
    if evaluator is not None and 'fd_reconstruction' in vae:
        lines.append(f"| autoencoder reconstructions (the decoder's bound) | pixels | - | - | - | - | - | "
                     f"{vae['fd_reconstruction']:.2f} ({vae['fd_ruler']:.2f}) | {vae['class_acc_reconstruction']:.0%} |")
    for r in rows:
        fd = f"{r['fd']:.2f} ({r['fd_ruler']:.2f})" if r.get('fd') is not None else '-'
        lines.append(f"| {r['backbone']} | {r['space']} | {r['params']:,} | {cell(r, 'ms_per_step', '{:.0f}')} | {cell(r, 'loss_first10', '{:.4f}')} | "
                     f"{cell(r, 'loss_last50', '{:.4f}')} | {cell(r, 'heldout_loss', '{:.4f}')} | {fd} | {cell(r, 'class_acc', '{:.0%}')} |")
    total = time.time() - t_start
    protocol = {k: v for k, v in vars(a).items()}
    protocol.update(threads_used=torch.get_num_threads(), latent_shape=list(lat.shape), schedule='linear, T=1000', loss='L_simple (eps)',
                    sampler=f'DDIM {a.sample_steps} trailing, cfg {a.cfg_scale}, EMA 0.999', total_seconds=round(total, 1))
    result = {'protocol': protocol, 'autoencoder': vae, 'rows': rows}
    if evaluator is not None:
        ruler = evaluator.ruler(a.n_eval)
        result['evaluation'] = Protocol(a.n_eval, 'ddim', a.sample_steps, a.cfg_scale, 'ema', a.seed + 1, evaluator.extractor.name,
                                        evaluator.reference_name).to_dict()
        result['ruler'] = ruler
    table = '\n'.join(lines)
    (out / 'table.md').write_text(table + '\n')
    (out / 'results.json').write_text(json.dumps(result, indent=2))
    print('\n' + table)
    if evaluator is not None:
        print(f"\nthe ruler: real digits and what is done to them ({Protocol(a.n_eval, features=evaluator.extractor.name, reference=evaluator.reference_name)}):\n"
              f"{format_table(ruler)}")
    print(f"\ntotal {total / 60:.1f} min on {torch.get_num_threads()} threads ({device}); wrote {out}/: loss_curves.png, table.md, "
          f"results.json, samples/", flush=True)
    return rows


if __name__ == '__main__':
    main()
