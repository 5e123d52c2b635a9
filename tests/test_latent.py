"Latent diffusion: the autoencoder interface (from-scratch VAE and diffusers' AutoencoderKL, offline), checkpoints, the latent cache, training on latents."
import functools, json

import pytest
import torch

from diffusion_course.blocks import num_params
from diffusion_course.data import ImageData, mnist_offline
from diffusion_course.diffusion import ddpm
from diffusion_course.latent import (COMPARISON, PIXEL_BASELINES, Autoencoder, DiffusersAutoencoder, KLAutoencoder, LatentData, VAEConfig,
                                     build_comparison, dataset_fingerprint, encode_dataset, gaussian_kl, latent_cache_path,
                                     latent_sample_fn, latent_stats, load_autoencoder, measure_scale_factor, psnr, reparameterize,
                                     save_autoencoder, train_autoencoder, vae_loss)
from diffusion_course.registry import build
from diffusion_course.training import EMA, CheckpointError, Trainer, sample_with, save_checkpoint


@pytest.fixture(scope='module')
def digits():
    d = mnist_offline()
    return ImageData(d.x[:256], d.y[:256], d.classes, name='mnist-256')


@pytest.fixture(scope='module')
def trained(digits):
    return train_autoencoder(digits, beta=1e-3, steps=12, batch_size=32, seed=0)


def tiny_autoencoder_kl():
    from diffusers import AutoencoderKL
    torch.manual_seed(0)
    return AutoencoderKL(in_channels=3, out_channels=3, down_block_types=('DownEncoderBlock2D',) * 3,
                         up_block_types=('UpDecoderBlock2D',) * 3, block_out_channels=(8, 16, 16), layers_per_block=1,
                         latent_channels=4, norm_num_groups=4, sample_size=32).eval()


def test_kl_autoencoder_shapes_and_errors():
    ae = KLAutoencoder().eval()
    x = torch.rand(2, 1, 32, 32) * 2 - 1
    z = ae.encode(x)
    assert z.shape == (2, 4, 8, 8) and ae.decode(z).shape == x.shape and ae.latent_shape((1, 32, 32)) == (4, 8, 8)
    x_hat, mean, logvar = ae(x)
    assert x_hat.shape == x.shape and mean.shape == logvar.shape == z.shape
    with pytest.raises(ValueError, match='1-channel'): ae.encode(torch.zeros(1, 3, 32, 32))
    with pytest.raises(ValueError, match='divisible'): ae.encode(torch.zeros(1, 1, 30, 32))
    with pytest.raises(ValueError, match=r'\(B, 4, h, w\)'): ae.decode(torch.zeros(1, 2, 8, 8))
    with pytest.raises(ValueError, match='positive'): ae.scale_factor = 0.0
    assert KLAutoencoder(VAEConfig(widths=(8, 16, 16, 32))).latent_shape((1, 32, 32)) == (4, 4, 4)


def test_scale_factor_round_trip():
    torch.manual_seed(0)
    ae = KLAutoencoder().eval()
    x = torch.rand(3, 1, 32, 32) * 2 - 1
    with torch.no_grad():
        z1, r1 = ae.encode(x), ae.decode(ae.encode(x))
        ae.scale_factor = 0.18215
        z2, r2 = ae.encode(x), ae.decode(ae.encode(x))
    assert ae.scale_factor == 0.18215  # stored in float64: exact
    assert torch.allclose(z2, 0.18215 * z1) and torch.allclose(r1, r2, atol=1e-5)
    assert ae.state_dict()['latent_scale'].item() == 0.18215  # travels with the weights


def test_kl_and_reparameterisation():
    mu, lv = torch.tensor([0.5, -1.0]), torch.tensor([0.3, -0.7])
    z = reparameterize(mu.expand(100_000, 2), lv.expand(100_000, 2), torch.Generator().manual_seed(0))
    assert torch.allclose(z.mean(0), mu, atol=0.02) and torch.allclose(z.std(0), (0.5 * lv).exp(), atol=0.02)
    mc = (torch.distributions.Normal(mu, (0.5 * lv).exp()).log_prob(z) - torch.distributions.Normal(0., 1.).log_prob(z)).mean(0)
    assert torch.allclose(mc, gaussian_kl(mu, lv), atol=0.01)
    assert gaussian_kl(torch.zeros(3), torch.zeros(3)).abs().max() == 0


def test_train_autoencoder_scale_factor(digits, trained):
    assert isinstance(trained, KLAutoencoder) and not trained.training and trained.info['beta'] == 1e-3
    with torch.no_grad(): z = trained.encode(digits.batch(torch.arange(len(digits)))[0])
    assert abs(z.std().item() - 1) < 1e-3  # measured on these digits: unit std exactly
    assert abs(measure_scale_factor(trained, digits.batch(torch.arange(64))[0]) * trained.moments(digits.batch(torch.arange(64))[0])[0].std().item() - 1) < 1e-4
    torch.manual_seed(0)
    loss = vae_loss(trained, digits.batch(torch.arange(8))[0], beta=1e-3)
    assert loss.dim() == 0 and torch.isfinite(loss)


def test_psnr_and_latent_stats():
    x = torch.zeros(2, 1, 4, 4)
    assert torch.allclose(psnr(x, x + 0.02), torch.tensor(40.0), atol=1e-3)
    s = latent_stats(torch.randn(3000, 4, 4, 4, generator=torch.Generator().manual_seed(0)))
    assert abs(s['std'] - 1) < 0.02 and s['fd_normal'] < 0.02
    with pytest.raises(ValueError): latent_stats(torch.zeros(1, 4, 2, 2))


def test_save_load_round_trip(tmp_path, trained, digits):
    path = save_autoencoder(trained, tmp_path / 'vae', note='test')
    cfg = json.loads((path / 'config.json').read_text())
    assert cfg['kind'] == 'kl-autoencoder' and cfg['latent_shape'] == [4, 8, 8] and cfg['note'] == 'test' and cfg['beta'] == 1e-3
    ae = load_autoencoder(path)
    x = digits.batch(torch.arange(16))[0]
    with torch.no_grad(): assert torch.equal(ae.encode(x), trained.encode(x)) and torch.equal(ae.decode(ae.encode(x)), trained.decode(trained.encode(x)))
    assert ae.scale_factor == trained.scale_factor and ae.fingerprint() == trained.fingerprint() == cfg['fingerprint']
    with pytest.raises(CheckpointError, match='no autoencoder'): load_autoencoder(tmp_path / 'missing')
    save_checkpoint(tmp_path / 'denoiser', {'model': {'w': torch.zeros(1)}}, {}, {'model': {}})
    with pytest.raises(CheckpointError, match='not an autoencoder'): load_autoencoder(tmp_path / 'denoiser')
    with pytest.raises(ValueError, match='KLAutoencoder'): save_autoencoder(DiffusersAutoencoder(tiny_autoencoder_kl()), tmp_path / 'x')


def test_diffusers_autoencoder_offline(tmp_path):
    vae = tiny_autoencoder_kl()
    ae = DiffusersAutoencoder(vae)
    assert isinstance(ae, Autoencoder) and ae.scale_factor == vae.config.scaling_factor == 0.18215
    assert (ae.in_channels, ae.latent_channels, ae.downsample) == (3, 4, 4) and ae.latent_shape((3, 32, 32)) == (4, 8, 8)
    x = torch.rand(2, 3, 32, 32) * 2 - 1
    with torch.no_grad():
        z = ae.encode(x)
        assert torch.allclose(z, vae.encode(x).latent_dist.mean * 0.18215)
        assert torch.allclose(ae.decode(z), vae.decode(z / 0.18215).sample, atol=1e-6)
        zs = ae.encode(x, sample=True, generator=torch.Generator().manual_seed(0))
        assert zs.shape == z.shape and not torch.equal(zs, z)
        ae.scale_factor = 0.5  # the round trip holds for any scale
        assert torch.allclose(ae.decode(ae.encode(x)), vae.decode(vae.encode(x).latent_dist.mean).sample, atol=1e-5)
    measure_scale_factor(ae, x)
    with torch.no_grad(): assert abs(ae.encode(x).std().item() - 1) < 1e-4
    gray = DiffusersAutoencoder(vae, gray=True)
    with torch.no_grad(): out = gray.decode(gray.encode(x[:, :1]))
    assert gray.in_channels == 1 and out.shape == (2, 1, 32, 32)
    vae.save_pretrained(tmp_path / 'kl')
    loaded = load_autoencoder(tmp_path / 'kl')
    with torch.no_grad(): assert isinstance(loaded, DiffusersAutoencoder) and torch.allclose(loaded.encode(x), vae.encode(x).latent_dist.mean * 0.18215, atol=1e-6)


def test_latent_cache(tmp_path, trained, digits):
    lat = encode_dataset(trained, digits, tmp_path)
    again = encode_dataset(trained, digits, tmp_path)
    assert not lat.from_cache and again.from_cache and lat.path == again.path and lat.path.exists()
    assert torch.equal(lat.z, again.z) and torch.equal(again.y, digits.y) and again.classes == digits.classes
    assert [p.name for p in tmp_path.iterdir()] == [lat.path.name]  # no temporary file left behind
    with torch.no_grad(): assert torch.allclose(lat.z[:8], trained.encode(digits.batch(torch.arange(8))[0]), atol=1e-6)
    other = load_autoencoder(save_autoencoder(trained, tmp_path / 'copy'))
    assert latent_cache_path(other, digits, tmp_path) == lat.path  # same weights, same file
    with torch.no_grad(): other.decoder.net[-1].bias += 1e-4
    assert latent_cache_path(other, digits, tmp_path) != lat.path
    half = ImageData(digits.x[:128], digits.y[:128], digits.classes)
    assert dataset_fingerprint(half) != dataset_fingerprint(digits) and latent_cache_path(trained, half, tmp_path) != lat.path
    assert latent_cache_path(trained, digits, tmp_path, sample=True) != lat.path
    sampled = encode_dataset(trained, digits, tmp_path, sample=True)
    assert not torch.equal(sampled.z, lat.z)
    assert not encode_dataset(trained, digits, False).from_cache and encode_dataset(trained, digits, False).path is None


def test_latent_data_interface():
    z, y = torch.randn(20, 4, 8, 8), torch.arange(20) % 10
    d = LatentData(z, y, [str(i) for i in range(10)])
    assert len(d) == 20 and d.shape == (4, 8, 8) and d.num_classes == 10 and not d.multi_hot
    zb, yb = d.batch(torch.tensor([3, 5]))
    assert torch.equal(zb, z[[3, 5]]) and torch.equal(yb, y[[3, 5]])
    assert next(d.batches(4))[0].shape == (4, 4, 8, 8)
    with pytest.raises(ValueError): LatentData(z, y[:5])
    with pytest.raises(ValueError): LatentData(z.long(), y)


def test_trainer_on_latents_and_decoded_samples(trained, digits):
    lat = encode_dataset(trained, digits, False)
    sched = ddpm.Schedule.linear(1000)
    torch.manual_seed(0)
    model = build('DiT-T/2', in_channels=4, input_size=8, num_classes=10)
    trainer = Trainer(model, functools.partial(ddpm.l_simple, sched=sched), lat, steps=4, batch_size=16, warmup=0, callbacks=[EMA()])
    trainer.fit()
    assert trainer.image_shape == (4, 8, 8) and torch.isfinite(torch.tensor(trainer.loss))
    for scale in (1.0, 3.0):
        fn = latent_sample_fn(trained, sched, steps=3, cfg_scale=scale, num_classes=10)
        x = sample_with(trainer, fn, torch.randn(6, 4, 8, 8), torch.arange(6))
        assert x.shape == (6, 1, 32, 32) and x.min() >= -1 and x.max() <= 1
    z0 = latent_sample_fn(trained, sched, steps=3, decode=False)(trainer.eval_model(), torch.randn(2, 4, 8, 8), torch.arange(2))
    assert z0.shape == (2, 4, 8, 8)


def test_latent_sampler_does_not_clip():
    "x0_hat of latents is not clipped to [-1, 1]: a model that predicts zero noise returns x_T scaled up, beyond 1."
    sched = ddpm.Schedule.linear(1000)
    zero = lambda x, t, y=None: torch.zeros_like(x)
    z_T = torch.full((1, 4, 2, 2), 2.0)
    z0 = latent_sample_fn(None, sched, steps=5, decode=False)(zero, z_T, None)
    assert z0.min() > 1.5


@pytest.mark.parametrize('label', list(COMPARISON))
def test_comparison_presets(label):
    shape = (1, 32, 32) if label in PIXEL_BASELINES else (4, 8, 8)
    model = build_comparison(label, shape).eval()
    x = torch.randn(2, *shape)
    out = model(x, torch.tensor([0, 999]), torch.tensor([3, 10]))  # 10: the null class
    assert out.shape == x.shape
    assert 400_000 < num_params(model) < 800_000  # comparable sizes


def test_build_comparison_errors():
    with pytest.raises(ValueError, match='unknown comparison backbone'): build_comparison('DiT-XXL', (4, 8, 8))
    with pytest.raises(ValueError, match='square'): build_comparison('U-ViT', (4, 8, 16))
