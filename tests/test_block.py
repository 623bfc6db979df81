"""The block-causal DiT (block_len > 0): each block of a window denoised from the clean latents
before it. No block may read the future in training, and sampling block by block through a KV cache
must compute what training's one forward computes."""
import re

import pytest
import torch

from conftest import TINY_DIT, ok, one_line_error, run_main
from model import KVCache, DiTConfig, TextDiT, TextVAE, VAEConfig, block_layout, causal_mask

def random_dit(block_len, vocab_size=0, C=4, seed=0):
    """A tiny block-causal DiT, every weight random: adaLN-Zero's zero gates would hide a leak."""
    torch.manual_seed(seed)
    dit = TextDiT(DiTConfig(latent_channels=C, block_size=32, n_embd=32, n_head=4, n_layer=2,
                            vocab_size=vocab_size, block_len=block_len))
    for p in dit.parameters():
        torch.nn.init.normal_(p, std=0.3)
    if vocab_size:
        dit.token_latents.normal_()
    return dit.eval()

def causal_vae(seed=0):
    torch.manual_seed(seed)
    return TextVAE(VAEConfig(vocab_size=50, block_size=32, n_embd=32, n_head=4, n_enc_layer=2,
                             n_dec_layer=1, latent_channels=4, causal_encoder=True)).eval()

@pytest.mark.parametrize('T, block_len, offset', [(12, 4, 0), (13, 4, 3), (9, 16, 5), (7, 1, 0)])
def test_block_layout_shows_each_noisy_block_only_the_clean_past_and_itself(T, block_len, offset):
    pos, is_noisy, group, mask = block_layout(T, block_len, offset)
    assert pos.tolist() == 2 * list(range(T)) and is_noisy.tolist() == [False] * T + [True] * T
    block, sizes = group[T:] - 1, torch.bincount(group[T:] - 1)
    assert block[0] == 0 and (block.diff() >= 0).all() and (sizes[1:-1] == block_len).all()
    assert sizes[0] == min(T, block_len - offset)  # so a prompt of any length ends on an edge
    i = torch.arange(T)
    assert torch.equal(mask[:T, :T], i[None, :] <= i[:, None])  # clean: causal
    assert not mask[:T, T:].any()
    assert torch.equal(mask[T:, :T], block[None, :] < block[:, None])  # noisy: the clean past
    assert torch.equal(mask[T:, T:], block[None, :] == block[:, None])  # and itself, both ways

def test_no_latent_the_dit_reads_for_a_block_moves_when_a_token_of_it_changes():
    """The causal VAE's latents of a window, then the DiT's one forward over all blocks (token
    head): a token changed in block b moves no clean latent before block b and no output of blocks
    0..b; the blocks after b read it."""
    vae, dit = causal_vae(), random_dit(block_len=4, vocab_size=50)
    T, B = 14, 3
    pos, is_noisy, group, mask = block_layout(T, 4, offset=2)  # blocks: 0-1, 2-5, 6-9, 10-13
    idx = torch.randint(50, (B, T))
    noise, t = torch.randn(B, T, 4), torch.rand(B, int(group[-1]))
    t = torch.cat([torch.ones(B, 1), t], 1)

    def forward(idx):
        z = vae.encode(idx)[0]
        x = torch.cat([z, noise], 1)  # the noisy stream's input held fixed: the clean one may move
        logits = dit(x, t, is_noisy.expand(B, -1), mask.expand(B, -1, -1), return_logits=True,
                     pos=pos, group=group)
        return z, logits.view(B, T, -1)

    z, out = forward(idx)
    for changed, end in [(6, 10), (9, 10), (2, 6), (13, 14)]:  # end: where its block ends
        idx2 = idx.clone()
        idx2[:, changed] = (idx2[:, changed] + 1) % 50
        z2, out2 = forward(idx2)
        assert torch.equal(z2[:, :changed], z[:, :changed])  # the causal encoder
        assert not torch.allclose(z2[:, changed], z[:, changed])
        torch.testing.assert_close(out2[:, :end], out[:, :end])  # block b and all before it
        if end < T:
            assert not torch.allclose(out2[:, end:], out[:, end:])

def test_a_causal_encoder_ignores_padding_and_the_future():
    vae = causal_vae()
    idx = torch.randint(50, (2, 10))
    mask = torch.arange(10)[None, :] < torch.tensor([[10], [6]])
    mu = vae.encode(idx, mask)[0]
    torch.testing.assert_close(mu[1, :6], vae.encode(idx[1:, :6])[0][0])  # padding: invisible
    assert (mu[1, 6:] == 0).all()

@pytest.mark.parametrize('vocab_size', [0, 50])
@pytest.mark.parametrize('guided', [False, True])
def test_a_block_through_the_kv_cache_is_what_training_computes(vocab_size, guided):
    """The sampler's path (the clean prefix into a KV cache in two chunks, then the noisy block
    reading a frozen view of it) against training's one forward over [clean ; noisy] (block_layout
    with a block edge where the prefix ends); guided: rows [prefix ; zero prefix] in one forward."""
    dit, n, P, B = random_dit(block_len=4, vocab_size=vocab_size), 4, 7, 3
    clean, x, t = torch.randn(B, P, 4), torch.randn(B, n, 4), 0.3
    T = P + n
    pos, is_noisy, group, mask = block_layout(T, n, offset=(-P) % n)

    def training_forward(clean, logits=False):
        rest = torch.randn(B, n, 4), torch.randn(B, P, 4)  # never read
        full = torch.cat([clean, rest[0], rest[1], x], 1)
        times = torch.cat([torch.ones(B, 1), torch.full((B, int(group[-1])), t)], 1)
        out = dit(full, times, is_noisy.expand(B, -1), mask.expand(B, -1, -1), pos=pos, group=group,
                  return_logits=logits)
        return out.view(B, T, -1)[:, -n:] if logits else out[:, -n:]

    rows = torch.cat([clean, torch.zeros_like(clean)]) if guided else clean
    cache = [KVCache() for _ in dit.body.blocks]
    for a, b in [(0, 5), (5, P)]:  # the prompt, then a block written after it
        dit(rows[:, a:b], torch.ones(len(rows)), torch.zeros(len(rows), b - a, dtype=torch.bool),
            causal_mask(b - a, b, 'cpu').expand(len(rows), -1, -1), cache=cache)
    assert len(cache[0]) == P
    view, sees = [c.frozen() for c in cache], torch.ones(len(rows), 1, P + n, dtype=torch.bool)
    is_target, t_rows = torch.ones(len(rows), n, dtype=torch.bool), torch.full((len(rows),), t)
    if not guided:
        want, got = training_forward(clean), dit(x, t_rows, is_target, sees, cache=view)
    else:  # the velocity head guides its velocity, the token head its logits
        cond, null = (training_forward(c, vocab_size > 0) for c in (clean, torch.zeros_like(clean)))
        want = torch.lerp(null, cond, 2.0)
        if vocab_size:
            want = dit.velocity_from_logits(want.flatten(0, 1), x, torch.full((B, 1), t),
                                            is_target[:B])
        got = dit.forward_with_cfg(torch.cat([x, x]), t_rows, is_target, sees, 2.0, cache=view)
    assert len(cache[0]) == P  # a frozen view keeps nothing
    # float32 summed in another order: ~1e-4 of outputs of order 1 (a leak would move them by ~1)
    torch.testing.assert_close(got, want, atol=2e-3, rtol=2e-3)

@pytest.mark.parametrize('vocab_size', [0, 50])
def test_self_conditioning_reads_the_last_estimate_at_the_targets_only(vocab_size):
    x, t = torch.randn(2, 10, 4), torch.rand(2)
    is_target, mask = (torch.arange(10) >= 6).expand(2, -1), torch.ones(2, 10, dtype=torch.bool)
    estimate, other = torch.randn(2, 10, 4), torch.randn(2, 10, 4)
    other[:, 6:] = estimate[:, 6:]  # the same at the targets
    torch.manual_seed(0)
    config = DiTConfig(latent_channels=4, block_size=16, n_embd=32, n_head=4, n_layer=2,
                       vocab_size=vocab_size, self_cond=True)
    new = TextDiT(config)  # until it learns to read it, the estimate changes nothing
    assert torch.equal(new(x, t, is_target, mask, x1_prev=estimate), new(x, t, is_target, mask))
    dit = TextDiT(config)
    for p in [*dit.parameters()] + ([dit.token_latents] if vocab_size else []):
        torch.nn.init.normal_(p, std=0.3)
    plain = dit(x, t, is_target, mask)
    read = dit(x, t, is_target, mask, x1_prev=estimate)
    assert (read - plain)[:, 6:].abs().amax() > 0.1
    assert torch.equal(dit(x, t, is_target, mask, x1_prev=other), read)
    assert torch.equal(dit(x, t, is_target, mask, x1_prev=torch.zeros_like(x)), plain)

def test_block_mode_needs_a_causal_vae_and_ar_weight_needs_block_mode(vae_dir, tiny_data, tmp_path):
    common = [f'--data_dir={tiny_data}', f'--vae_ckpt={vae_dir}/ckpt.pt', f'--out_dir={tmp_path}/d']
    one_line_error(run_main('dit_train.py', *common, '--block_len=4', *TINY_DIT),
                   'causal_encoder=True')
    one_line_error(run_main('dit_train.py', *common, '--ar_weight=1.0', '--head=tokens', *TINY_DIT),
                   'ar_weight > 0 needs the block-causal layout')

@pytest.fixture(scope='module')
def causal_vae_ckpt(vae_dir, tmp_path_factory):
    """vae_dir's VAE with its encoder made causal (the same weights): one block mode trains on."""
    ckpt = torch.load(f'{vae_dir}/ckpt.pt', weights_only=True)
    ckpt['model_args']['causal_encoder'] = True
    path = tmp_path_factory.mktemp('causal_vae') / 'ckpt.pt'
    torch.save(ckpt, path)
    return str(path)

@pytest.mark.parametrize('args', [['--head=velocity'], ['--head=tokens'],
                                  ['--head=tokens', '--ar_weight=1.0', '--self_cond=True']])
def test_block_mode_trains_and_samples_block_by_block(causal_vae_ckpt, tiny_data, tmp_path, args):
    out = f'{tmp_path}/dit'
    log = ok(run_main('dit_train.py', f'--data_dir={tiny_data}', f'--vae_ckpt={causal_vae_ckpt}',
                      f'--out_dir={out}', '--block_len=4', *args, '--max_iters=20',
                      '--eval_interval=10', *TINY_DIT))
    val = [float(v) for v in re.findall(r'val loss ([\d.]+)', log)]
    assert len(val) == 3 and val[-1] < val[0], log[-2000:]
    resumed = run_main('dit_train.py', f'--data_dir={tiny_data}', f'--vae_ckpt={causal_vae_ckpt}',
                       f'--out_dir={out}', '--block_len=8', *args, '--max_iters=30',
                       '--init_from=resume', *TINY_DIT)
    one_line_error(resumed, 'trained with block_len=4: resume with that block_len')
    from sample import LDM, generate, sample_blocks
    ldm = LDM(out)
    prompts = ['the river', '', 'a much longer prompt than the others']
    idx = [ldm.enc.encode_ordinary(p) for p in prompts]
    lens = torch.tensor([len(i) for i in idx])
    idx = torch.tensor([i + [0] * (int(lens.max()) - len(i)) for i in idx])  # right-padded
    g = torch.Generator().manual_seed(1)
    for length in (9, 4, 1):  # 3 blocks of 4 (the last one cut), one whole block, one cut
        tokens = sample_blocks(ldm, idx, lens, length, 3, 2.0, g, 'dpm2m', 0.6)
        assert tokens.shape == (3, length) and 0 <= tokens.min() and tokens.max() < ldm.enc.n_vocab
    texts = generate(ldm, prompts, [9, 5, 3], steps=3, cfg=2.0, seed=1)
    assert len(texts) == 3 and generate(ldm, prompts, [9, 5, 3], steps=3, cfg=2.0, seed=1) == texts
