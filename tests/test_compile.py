"Every backbone compiles as one graph: torch.compile(fullgraph=True) traces each tiny preset without a graph break or a host sync."
import os

import pytest
import torch

from diffusion_course.registry import build, list_models

from test_backbones import _inputs

def _compile_available() -> bool:
    if os.environ.get('DC_SKIP_COMPILE'): return False
    try: return torch._dynamo.is_dynamo_supported()
    except Exception: return False

pytestmark = [pytest.mark.compile, pytest.mark.skipif(not _compile_available(), reason='torch.compile unavailable here (or DC_SKIP_COMPILE set)')]

@pytest.mark.parametrize('name', list_models(tiny=True))
def test_tiny_preset_traces_as_one_graph(name):
    "Dynamo capture only (backend='eager'): fullgraph=True raises on any graph break, and a host sync (.item(), a tensor in an if) is one."
    torch._dynamo.reset()
    torch.manual_seed(0)
    model = build(name, learn_sigma=True)
    x, t, y = _inputs(model.config)
    out = torch.compile(model, fullgraph=True, backend='eager')(x, t, y)  # training mode, as the trainer calls it: label dropout traced too
    assert out.shape == (x.shape[0], 2 * x.shape[1], *x.shape[2:])

def test_label_check_stays_in_eager_mode():
    "The label-range check is skipped only while compiling: eager calls still get the clear ValueError."
    model = build('DiT-T/4').eval()
    x, t, y = _inputs(model.config)
    y[0] = model.config.num_classes + 1
    with pytest.raises(ValueError, match=str(model.config.num_classes + 1)): model(x, t, y)

@pytest.mark.skipif(not os.environ.get('DC_RUN_INDUCTOR'), reason='inductor compiles C++ for minutes on a cold cache on 2 CPU cores: set DC_RUN_INDUCTOR=1')
def test_inductor_training_step_matches_eager():
    "One real compile (inductor, fullgraph): forward and gradients of a tiny DiT match eager mode."
    torch._dynamo.reset()
    torch.manual_seed(0)
    model = build('DiT-T/4', learn_sigma=True, class_dropout_prob=0.0)
    with torch.no_grad():
        for p in model.parameters():
            if p.requires_grad: p.add_(0.02 * torch.randn_like(p))  # leave the zero initialisation
    x, t, y = _inputs(model.config)
    def grads(m):
        out = m(x, t, y); out.square().mean().backward()
        g = [p.grad.clone() for p in model.parameters() if p.requires_grad]
        model.zero_grad(set_to_none=True)
        return out.detach(), g
    ref, g_ref = grads(model)
    out, g = grads(torch.compile(model, fullgraph=True))
    assert torch.allclose(out, ref, atol=1e-5)
    assert all(torch.allclose(a, b, atol=1e-5, rtol=1e-4) for a, b in zip(g, g_ref))

@pytest.mark.skipif(not os.environ.get('DC_RUN_INDUCTOR'), reason='inductor compiles C++ for minutes on a cold cache on 2 CPU cores: set DC_RUN_INDUCTOR=1')
def test_trainer_compile_on_cpu():
    "`Trainer(compile=True)` (dc-train --compile) trains on the CPU: three inductor-compiled steps of UNet-T, finite losses, the weights moved, and the saved model is the plain module."
    import functools, math
    from diffusion_course.data import mnist_offline
    from diffusion_course.diffusion import ddpm
    from diffusion_course.training import EMA, Trainer
    torch._dynamo.reset()
    torch.manual_seed(0)
    model = build('UNet-T', in_channels=1, num_classes=10)
    before = [p.detach().clone() for p in model.parameters()]
    loss = functools.partial(ddpm.l_simple, sched=ddpm.Schedule.linear(1000))
    trainer = Trainer(model, loss, mnist_offline(size=32), steps=3, batch_size=8, warmup=0, device='cpu', compile=True,
                      callbacks=[EMA(beta=0.9)])
    assert trainer.train_model is not trainer.model  # the compiled wrapper trains; the module itself is saved and sampled
    trainer.fit()
    assert trainer.step == 3 and math.isfinite(trainer.loss)
    assert any(not torch.equal(a, p) for a, p in zip(before, model.parameters()))
    assert not any(k.startswith('_orig_mod') for k in trainer.checkpoint_state()[0]['model'])
