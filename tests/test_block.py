"""The block-causal DiT (block_len > 0): each block of a window denoised from the clean latents
before it. No block may read the future in training, and sampling block by block through a KV cache
must compute what training's one forward computes."""
import re
from types import SimpleNamespace

import pytest
import torch

from conftest import TINY_DIT, ok, one_line_error, run_main
from model import (KVCache, DiTConfig, TextDiT, TextVAE, VAEConfig, block_layout, causal_mask,
                   lengths_to_mask)
import sample
from sample import integrate, sample_blocks

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
    """The sampler's path against training's one forward over [clean ; noisy] (block_layout with a
    block edge where the prefix ends); guided: rows [prefix ; zero prefix] in one forward. The
    sampler's path: the prompt into a KV cache; then the block's first step, which reads the
    clean latents written since (a block decoded) beside the block and keeps only theirs in the
    cache; then the block's other steps through a frozen view of it."""
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

    if not guided:
        want = training_forward(clean)
    else:  # the velocity head guides its velocity, the token head its logits
        cond, null = (training_forward(c, vocab_size > 0) for c in (clean, torch.zeros_like(clean)))
        want = torch.lerp(null, cond, 2.0)
        if vocab_size:
            want = dit.velocity_from_logits(want.flatten(0, 1), x, torch.full((B, 1), t),
                                            torch.ones(B, n, dtype=torch.bool))

    def step(x, t, is_target, sees, **layout):  # x: every row, [conditional ; null] if guided
        if guided:
            return dit.forward_with_cfg(x, t, is_target, sees, 2.0, **layout)
        return dit(x, t, is_target, sees, **layout)

    rows = torch.cat([clean, torch.zeros_like(clean)]) if guided else clean
    R, new, xs = len(rows), P - 5, torch.cat([x] * (2 if guided else 1))
    cache = [KVCache() for _ in dit.body.blocks]  # the prompt: 5 latents; then a block of 2 decoded
    dit(rows[:, :5], torch.ones(R), torch.zeros(R, 5, dtype=torch.bool),
        causal_mask(5, 5, 'cpu').expand(R, -1, -1), cache=cache)
    # the first step: [the new clean latents ; the block], at t = 1 and t
    sees_first = torch.cat([torch.cat([causal_mask(new, P, 'cpu'), torch.zeros(new, n).bool()], 1),
                            torch.ones(n, P + n, dtype=torch.bool)]).expand(R, -1, -1)
    in_block = (torch.arange(new + n) >= new).long()
    first = step(torch.cat([rows[:, 5:], xs], 1), torch.tensor([[1.0, t]]).expand(R, -1),
                 in_block.bool().expand(R, -1), sees_first, cache=cache, group=in_block)
    for c in cache:
        c.trim(P)
    assert len(cache[0]) == P
    view, sees = [c.frozen() for c in cache], torch.ones(R, 1, P + n, dtype=torch.bool)
    later = step(xs, torch.full((R,), t), torch.ones(R, n, dtype=torch.bool), sees, cache=view)
    assert len(cache[0]) == P  # a frozen view keeps nothing
    # float32 summed in another order: ~1e-4 of outputs of order 1 (a leak would move them by ~1)
    torch.testing.assert_close(later, want, atol=2e-3, rtol=2e-3)
    torch.testing.assert_close(first[:, -n:], want, atol=2e-3, rtol=2e-3)

def reference_blocks(ldm, prompt, length, steps, cfg, cfg_until, generator):
    """sample.sample_blocks for one prompt without a KV cache: each step of a block one forward over
    [all its clean latents ; the block], as training's layout reads them."""
    dit, n, seq = ldm.dit, ldm.dit.config.block_len, prompt
    while len(seq) - len(prompt) < length:
        L = len(seq)
        z = ldm.encode(seq[None], torch.tensor([L]))
        group = (torch.arange(L + n) >= L).long()  # 0: clean (causal), 1: the block (sees all)
        mask = torch.cat([torch.cat([causal_mask(L, L, 'cpu'), torch.zeros(L, n).bool()], 1),
                          torch.ones(n, L + n, dtype=torch.bool)])

        def velocity(x, t, guided, x1_prev):
            rows = torch.cat([z, torch.zeros_like(z)]) if guided else z
            R = len(rows)
            x = torch.cat([rows, torch.cat([x.float()] * R)], 1)
            args = (x, torch.tensor([[1.0, t]]).expand(R, -1), group.bool().expand(R, -1),
                    mask.expand(R, -1, -1))
            v = dit.forward_with_cfg(*args, cfg, group=group) if guided else dit(*args, group=group)
            return v[:, -n:]

        x = torch.randn(1, n, z.size(2), generator=generator, dtype=torch.float64)
        x = integrate(velocity, x, steps, cfg, **ldm.times, solver='dpm2m', cfg_until=cfg_until)
        window = torch.cat([z, x], 1)[:, -(sample.DECODE_WINDOW + n):]  # the newest latents
        seq = torch.cat([seq, ldm.vae.decode(window, last=n)[0].argmax(-1)])
    return seq[len(prompt):len(prompt) + length]

@pytest.mark.parametrize('cfg, decode_window', [(1.0, 16), (3.0, 16), (3.0, 2)])
def test_block_sampling_through_the_cache_writes_what_the_cache_free_reference_writes(
        cfg, decode_window, monkeypatch):
    monkeypatch.setattr(sample, 'DECODE_WINDOW', decode_window)
    vae, dit = causal_vae(), random_dit(block_len=4, vocab_size=50)
    encode = lambda idx, lens: vae.encode(idx, lengths_to_mask(lens, idx.size(1)))[0]
    ldm = SimpleNamespace(dit=dit, vae=vae, mean=0.0, std=1.0, encode=encode,
                          times=dict(schedule='logit_normal', mean=0.0, std=1.5))
    prompt = torch.tensor([3, 14, 15, 9, 26])
    with torch.no_grad():
        want = reference_blocks(ldm, prompt, 10, 3, cfg, 0.5, torch.Generator().manual_seed(0))
    got = sample_blocks(ldm, prompt[None], torch.tensor([5]), 10, 3, cfg,
                        torch.Generator().manual_seed(0), 'dpm2m', 0.5)
    assert got[0].tolist() == want.tolist()

def test_a_left_padded_row_writes_what_it_writes_alone(monkeypatch):
    """In a batch, a short prompt is left-padded: its latents, read through the encoder's and the
    DiT's KV caches, and its blocks must not move (each row's noise made independent of the batch
    so that the rows compare)."""
    vae, dit = causal_vae(), random_dit(block_len=3, vocab_size=50)
    for p in vae.parameters():  # large random weights: every latent moves the tokens
        torch.nn.init.normal_(p, std=0.3)
    ldm = SimpleNamespace(dit=dit, vae=vae, mean=0.5, std=2.0,
                          times=dict(schedule='logit_normal', mean=0.0, std=1.5))
    randn, draws = torch.randn, {}

    def noise_by_row(B, n, C, generator, device, dtype):  # row b's k-th draw: seed (b, k)
        draws[B] = draws.get(B, -1) + 1
        return torch.stack([randn(n, C, generator=torch.Generator().manual_seed(100 * b + draws[B]),
                                  dtype=dtype) for b in range(B)])
    monkeypatch.setattr(torch, 'randn', noise_by_row)
    short, long = [3, 14, 15], [9, 26, 5, 35, 8, 9, 7]
    batch = torch.tensor([short + [0] * 4, long])
    with torch.no_grad():
        both = sample_blocks(ldm, batch, torch.tensor([3, 7]), 8, 2, 2.0, None, 'dpm2m', 1.0)
        alone = sample_blocks(ldm, torch.tensor([short]), torch.tensor([3]), 8, 2, 2.0, None,
                              'dpm2m', 1.0)
    assert both[0].tolist() == alone[0].tolist()

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
