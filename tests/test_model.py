"""The shared Block, the TextVAE and the TextDiT on tiny sizes."""
import torch
import torch.nn.functional as F

from model import (Block, TextVAE, VAEConfig, TextDiT, DiTConfig, gaussian_kl, lengths_to_mask,
                   rope_cache, add_decoder_noise, pack_segments, take_segment, encode_segments)

def test_causal_block_ignores_the_future():
    torch.manual_seed(0)
    block = Block(32, 4, causal=True)
    x = torch.randn(2, 10, 32)
    y = block(x, rope_cache(torch.arange(10), 8))
    x2 = x.clone()
    x2[:, 6:] = torch.randn(2, 4, 32)
    y2 = block(x2, rope_cache(torch.arange(10), 8))
    assert torch.allclose(y[:, :6], y2[:, :6], atol=1e-6)
    assert not torch.allclose(y[:, 6:], y2[:, 6:])

def test_padding_is_invisible_to_real_positions():
    torch.manual_seed(0)
    vae = TextVAE(VAEConfig(vocab_size=50, n_embd=32, n_head=4, latent_channels=4))
    idx = torch.randint(0, 50, (2, 12))
    mask = lengths_to_mask(torch.tensor([7, 12]), 12)
    mu, _, _ = vae.encode(idx, mask)
    idx2 = idx.clone()
    idx2[0, 7:] = (idx2[0, 7:] + 1) % 50  # change only row 0's padding
    mu2, _, _ = vae.encode(idx2, mask)
    assert torch.allclose(mu[0, :7], mu2[0, :7], atol=1e-6)
    assert (mu2[0, 7:] == 0).all()  # padded latents are zeros
    # and the same tokens encode the same unpadded
    mu3, _, _ = vae.encode(idx[:1, :7])
    assert torch.allclose(mu[0, :7], mu3[0], atol=1e-5)

def test_adaln_zero_block_is_identity_and_fresh_dit_outputs_zero():
    block = Block(32, 4, adaln=True)
    torch.nn.init.zeros_(block.adaln[-1].weight)
    torch.nn.init.zeros_(block.adaln[-1].bias)
    x = torch.randn(2, 5, 32)
    mods = block.modulation(torch.randn(2, 1, 32))
    assert torch.equal(block(x, rope_cache(torch.arange(5), 8), mods=mods), x)
    dit = TextDiT(DiTConfig(latent_channels=8, n_embd=32, n_head=4, n_layer=2))
    v = dit(torch.randn(3, 9, 8), torch.rand(3), torch.rand(3, 9) > 0.5)
    assert v.shape == (3, 9, 8) and (v == 0).all()

def test_kl_matches_torch_distributions():
    mu, logvar = torch.randn(3, 5, 8), torch.randn(3, 5, 8)
    q = torch.distributions.Normal(mu, torch.exp(0.5 * logvar))
    p = torch.distributions.Normal(torch.zeros_like(mu), torch.ones_like(mu))
    expected = torch.distributions.kl_divergence(q, p).sum(-1)
    assert torch.allclose(gaussian_kl(mu, logvar), expected, atol=1e-5)

def test_vae_overfits_a_batch():
    torch.manual_seed(0)
    vae = TextVAE(VAEConfig(vocab_size=64, n_embd=64, n_head=4, latent_channels=8))
    idx = torch.randint(0, 64, (4, 24))
    mask = lengths_to_mask(torch.tensor([24, 20, 16, 9]), 24)
    opt = torch.optim.AdamW(vae.parameters(), lr=3e-3)
    for _ in range(150):
        logits, mu, logvar, _ = vae(idx, mask)
        loss = (F.cross_entropy(logits[mask], idx[mask])
                + 1e-3 * gaussian_kl(mu, logvar)[mask].mean())
        opt.zero_grad()
        loss.backward()
        opt.step()
    logits = vae.decode(vae.encode(idx, mask)[0], mask)
    assert (logits.argmax(-1)[mask] == idx[mask]).float().mean() == 1.0

def test_pack_and_take_segments():
    ctx, tgt = torch.randn(3, 5, 4), torch.randn(3, 7, 4)
    ctx_lens, tgt_lens = torch.tensor([5, 2, 0]), torch.tensor([3, 7, 4])
    x, is_target, mask = pack_segments(ctx, ctx_lens, tgt, tgt_lens)
    assert x.shape == (3, 9, 4)
    assert (torch.equal(x[0, :5], ctx[0]) and torch.equal(x[0, 5:8], tgt[0, :3])
            and (x[0, 8] == 0).all())
    assert torch.equal(x[1, :2], ctx[1, :2]) and torch.equal(x[1, 2:], tgt[1])
    assert torch.equal(x[2, :4], tgt[2, :4]) and not mask[2, 4:].any()
    assert (is_target.sum(1).tolist() == tgt_lens.tolist()
            and mask.sum(1).tolist() == (ctx_lens + tgt_lens).tolist())
    back = take_segment(x, ctx_lens, 7)
    for b in range(3):
        assert torch.equal(back[b, :tgt_lens[b]], tgt[b, :tgt_lens[b]])

def test_context_latents_do_not_see_the_target():
    torch.manual_seed(0)
    vae = TextVAE(VAEConfig(vocab_size=50, n_embd=32, n_head=4, latent_channels=4))
    idx = torch.randint(0, 50, (2, 16))
    lens, ctx_lens = torch.tensor([16, 12]), torch.tensor([6, 5])
    zc, zt, tgt_lens = encode_segments(vae, idx, lens, ctx_lens)
    idx2 = idx.clone()
    idx2[0, 6:] = (idx2[0, 6:] + 7) % 50  # another target, the same context
    idx2[1, 5:12] = (idx2[1, 5:12] + 3) % 50
    zc2, zt2, _ = encode_segments(vae, idx2, lens, ctx_lens)
    assert torch.equal(zc, zc2)
    assert not torch.allclose(zt, zt2)
    # the target is encoded on its own: as if it were a sequence by itself
    alone = vae.encode(idx[:1, 6:16])[0]
    assert torch.allclose(zt[0, :10], alone[0], atol=1e-5) and tgt_lens.tolist() == [10, 7]

def test_dit_overfits_a_few_latent_sequences():
    torch.manual_seed(0)
    dit = TextDiT(DiTConfig(latent_channels=4, n_embd=64, n_head=4, n_layer=2))
    opt = torch.optim.AdamW(dit.parameters(), lr=2e-3)
    ctx, x1 = torch.randn(4, 6, 4), torch.randn(4, 8, 4)
    ctx_lens, tgt_lens = torch.full((4,), 6), torch.full((4,), 8)

    def loss_at(t, x0):
        xt = t[:, None, None] * x1 + (1 - t[:, None, None]) * x0
        x, is_target, mask = pack_segments(ctx, ctx_lens, xt, tgt_lens)
        v = take_segment(dit(x, t, is_target, mask), ctx_lens, 8)
        return ((v - (x1 - x0)) ** 2).mean()

    g = torch.Generator().manual_seed(1)
    fixed = [(torch.rand(4, generator=g), torch.randn(4, 8, 4, generator=g)) for _ in range(8)]
    before = sum(loss_at(t, x0).item() for t, x0 in fixed)
    for _ in range(500):
        loss = loss_at(torch.rand(4), torch.randn(4, 8, 4))
        opt.zero_grad()
        loss.backward()
        opt.step()
    after = sum(loss_at(t, x0).item() for t, x0 in fixed)
    # 4 sequences: the velocity field is nearly determined by (x_t, t, context): the loss collapses
    assert after < 0.3 * before

def test_decoder_noise_grows_with_the_latents_so_growing_them_cannot_beat_it():
    mu = torch.randn(8, 10, 4) * torch.tensor([1.0, 2.0, 4.0, 8.0])
    mask = torch.ones(8, 10, dtype=torch.bool)
    mask[:, 7:] = False
    torch.manual_seed(1)
    noise = add_decoder_noise(mu, mu, mask, 1.0) - mu
    torch.manual_seed(1)
    noise_of_grown = add_decoder_noise(10 * mu, 10 * mu, mask, 1.0) - 10 * mu
    assert torch.allclose(noise_of_grown, 10 * noise, rtol=1e-4, atol=1e-4)
    per_channel = noise[mask].std(0) / mu[mask].std(0)  # each channel's noise follows its own std
    assert 0.2 < per_channel.min() and per_channel.max() / per_channel.min() < 1.5
