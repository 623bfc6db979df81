"""The DiT can read its context: a copy task with no VAE. Each of 16 tokens has a fixed random
latent (unit scale, like the VAE's normalised latents); a window is a random sequence of 8 tokens as
the context, then the same 8 as the target. A tiny TextDiT trained for seconds as dit_train.py
trains it, then sampled by the real sampler and decoded to the nearest token latent, must write the
context back, and must not when it is given another row's context. Copying is the one thing here it
can only do by reading the context: the target tokens are uniform and independent, so without it
the best is chance (1/16)."""
import pytest
import torch
import torch.nn.functional as F

from model import (DiTConfig, TextDiT, flow_time, lengths_to_mask, masked_mean, pack_segments,
                   take_segment)
from sample import sample_latents

V, C, L = 16, 8, 8

def train_copy(head, iters=150, batch_size=32, p_drop_context=0.1, lr=3e-3, seed=0):
    """-> the trained DiT and the token latents E (V, C). The loss is dit_train.py's flow_loss
    without the VAE."""
    torch.manual_seed(seed)
    E = torch.randn(V, C)
    dit = TextDiT(DiTConfig(latent_channels=C, block_size=2 * L, n_embd=64, n_head=4, n_layer=2,
                            vocab_size=V if head == 'tokens' else 0))
    if head == 'tokens':
        dit.token_latents.copy_(E)  # exact; dit_train.py's token_latents() measures them on a VAE
    opt = torch.optim.AdamW(dit.parameters(), lr=lr, weight_decay=0.0, betas=(0.9, 0.99))
    g = torch.Generator().manual_seed(seed)
    lens = torch.full((batch_size,), L)
    tmask = lengths_to_mask(lens, L)
    for _ in range(iters):
        tokens = torch.randint(V, (batch_size, L), generator=g)
        x1 = E[tokens]  # the target's latents; the context's are the same
        drop = torch.rand(batch_size, generator=g) < p_drop_context
        zc = x1 * (~drop)[:, None, None]  # the null condition of CFG: zero context vectors
        # as dit_train.py draws it
        t = flow_time(torch.rand(batch_size, generator=g), 'logit_normal', 0.0, 1.5)
        x0 = torch.randn(x1.shape, generator=g)
        xt = t[:, None, None] * x1 + (1 - t[:, None, None]) * x0
        x, is_target, mask = pack_segments(zc, lens, xt, lens)
        if head == 'tokens':
            logits = dit(x, t, is_target, mask, return_logits=True)
            loss = F.cross_entropy(logits.float(), tokens[tmask])  # the target positions' logits
        else:
            v = take_segment(dit(x, t, is_target, mask), lens, L)
            loss = masked_mean((v - (x1 - x0)) ** 2, tmask)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(dit.parameters(), 1.0)
        opt.step()
    return dit.eval(), E

def copy_accuracy(dit, E, ctx_tokens, tokens, cfg, steps=10, seed=1):
    """Share of target tokens equal to `tokens` when sampling with the context `ctx_tokens`."""
    lens = torch.full((tokens.size(0),), L)
    z = sample_latents(dit, E[ctx_tokens], lens, lens, steps, cfg,
                       generator=torch.Generator().manual_seed(seed))
    nearest = ((z[:, :, None, :] - E) ** 2).sum(-1).argmin(-1)  # (B, L)
    return (nearest == tokens).float().mean().item()

# 4-6 s each on one core (training is most of it); untrained, either head copies 5% (chance). The
# token head learns the copy a little later: at 150 steps it copies 96-100% over seeds 0-2, at 200
# steps 99-100% (the velocity head 100% at 150)
@pytest.mark.parametrize('head, iters', [('velocity', 150), ('tokens', 200)])
def test_dit_copies_its_context_and_not_another_rows(head, iters):
    dit, E = train_copy(head, iters)
    tokens = torch.randint(V, (64, L), generator=torch.Generator().manual_seed(123))  # new windows
    other = tokens.roll(1, 0)  # each row gets the next row's context
    for cfg in (1.0, 2.0):  # without guidance (one pass) and with it (context and null batched)
        assert copy_accuracy(dit, E, tokens, tokens, cfg) >= 0.9, (head, cfg)
        # with another row's context its own tokens come back only by chance (1/16), the other's do
        assert copy_accuracy(dit, E, other, tokens, cfg) < 0.15, (head, cfg)
        assert copy_accuracy(dit, E, other, other, cfg) >= 0.9, (head, cfg)
