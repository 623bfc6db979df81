"""The flow sampler: its time grid, its guidance, and its accuracy on a flow known in closed form."""
import math
from statistics import NormalDist

import torch

from model import TextDiT
from sample import time_grid, sample_latents, sample_t

class GaussianFlow(torch.nn.Module):
    """The exact velocity E[x1 - x0 | x_t] for data x1 ~ N(m, s^2) (per channel) and x0 ~ N(0, 1):
    x_t = t x1 + (1-t) x0 is Gaussian, so v(x, t) = m + (t s^2 - (1-t)) / (t^2 s^2 + (1-t)^2) (x - t m).
    With a context, m is shifted by the mean of the context latents (so guidance has something to do)."""

    def __init__(self, m, s, channels):
        super().__init__()
        self.m, self.s = m, s
        self.cfg = type('cfg', (), {'latent_channels': channels, 'vocab_size': 0})

    forward_with_cfg = TextDiT.forward_with_cfg  # the real guidance

    def forward(self, x, t, is_target, mask):
        ctx = (~is_target & mask)[..., None]
        shift = (x * ctx).sum(1, keepdim=True) / ctx.sum(1, keepdim=True).clamp(min=1)
        m, t = self.m + shift, t[:, None, None]
        return m + (t * self.s ** 2 - (1 - t)) / (t ** 2 * self.s ** 2 + (1 - t) ** 2) * (x - t * m)

def test_time_grid_is_monotone_from_noise_to_data():
    for schedule in ('logit_normal', 'uniform'):
        t = time_grid(50, schedule)
        assert len(t) == 51 and t[0] == 0 and t[-1] == 1 and (t[1:] > t[:-1]).all()
    # the logit-normal grid puts its steps where training put its timesteps: its median is t = 0.5
    t = time_grid(50)
    assert abs(t[25].item() - 0.5) < 1e-9
    expected = 1 / (1 + math.exp(-1.5 * NormalDist().inv_cdf(1 / 50)))
    assert abs(t[1].item() - expected) < 1e-9

def test_logit_normal_timesteps():
    t = sample_t(200000, 'logit_normal', 0.0, 1.5, torch.Generator().manual_seed(0))
    logit = torch.log(t / (1 - t))
    assert abs(logit.mean().item()) < 0.02 and abs(logit.std().item() - 1.5) < 0.02

def test_sampler_lands_on_the_gaussian_data_distribution():
    flow = GaussianFlow(m=2.0, s=0.5, channels=4)
    no_ctx = torch.zeros(4000, 0, 4)
    x = sample_latents(flow, no_ctx, torch.zeros(4000, dtype=torch.long), torch.full((4000,), 8), steps=50,
                       generator=torch.Generator().manual_seed(0))
    assert x.shape == (4000, 8, 4)
    assert abs(x.mean().item() - 2.0) < 0.02
    assert abs(x.std().item() - 0.5) < 0.02

def test_guidance_scale_1_is_conditional_and_0_is_unconditional():
    flow = GaussianFlow(m=0.0, s=1.0, channels=2)
    ctx, ctx_lens, tgt_lens = torch.full((2, 3, 2), 5.0), torch.full((2,), 3), torch.full((2,), 4)
    run = lambda c, w: sample_latents(flow, c, ctx_lens, tgt_lens, steps=10, cfg=w, generator=torch.Generator().manual_seed(0))
    assert torch.allclose(run(ctx, 1.0), run(ctx, 0.0) + 5.0, atol=1e-4)  # the context moves the mean by 5
    assert torch.allclose(run(ctx, 0.0), run(torch.zeros_like(ctx), 1.0), atol=1e-6)  # null = zero context
    # w = 3 extrapolates: the unconditional plus 3 times the context's pull
    assert torch.allclose(run(ctx, 3.0), run(ctx, 0.0) + 15.0, atol=1e-3)
