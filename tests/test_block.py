"""The block-causal DiT (block_len > 0): each block of a window denoised from the clean latents before it.
No block may read the future in training, and sampling block by block through a KV cache must compute what
training's one forward computes."""
import re

import pytest
import torch

from conftest import TINY_DIT, ok, one_line_error, run_main
from model import KVCache, DiTConfig, TextDiT, TextVAE, VAEConfig, block_layout, causal_mask

def random_dit(block_len, vocab_size=0, C=4, seed=0):
    """A tiny block-causal DiT with every weight random: adaLN-Zero's zero gates would hide any leak."""
    torch.manual_seed(seed)
    dit = TextDiT(DiTConfig(latent_channels=C, block_size=32, n_embd=32, n_head=4, n_layer=2,
                            vocab_size=vocab_size, block_len=block_len))
    for p in dit.parameters():
        torch.nn.init.normal_(p, std=0.3)
    if vocab_size:
        dit.token_latents.normal_()
    return dit.eval()

@pytest.mark.parametrize('T, block_len, offset', [(12, 4, 0), (13, 4, 3), (9, 16, 5), (7, 1, 0)])
def test_block_layout_shows_each_noisy_block_only_the_clean_past_and_itself(T, block_len, offset):
    pos, is_noisy, group, mask = block_layout(T, block_len, offset)
    assert pos.tolist() == 2 * list(range(T)) and is_noisy.tolist() == [False] * T + [True] * T
    block = group[T:] - 1
    assert block[0] == 0 and (block.diff() >= 0).all() and (torch.bincount(block)[1:-1] == block_len).all()
    assert torch.bincount(block)[0] == min(T, block_len - offset)  # a prompt of any length ends on an edge
    i = torch.arange(T)
    assert torch.equal(mask[:T, :T], i[None, :] <= i[:, None]) and not mask[:T, T:].any()  # clean: causal
    assert torch.equal(mask[T:, :T], block[None, :] < block[:, None])  # noisy: the clean blocks before
    assert torch.equal(mask[T:, T:], block[None, :] == block[:, None])  # and itself, both ways

def test_no_latent_the_dit_reads_for_a_block_moves_when_a_token_of_it_changes():
    """The causal VAE's latents of a window, then the DiT's one forward over all blocks (token head): a
    token changed in block b moves no clean latent before block b and no output of blocks 0..b."""
    torch.manual_seed(0)
    vae = TextVAE(VAEConfig(vocab_size=50, block_size=32, n_embd=32, n_head=4, n_enc_layer=2, n_dec_layer=1,
                            latent_channels=4, causal_encoder=True)).eval()
    dit = random_dit(block_len=4, vocab_size=50)
    T, B = 14, 3
    pos, is_noisy, group, mask = block_layout(T, 4, offset=2)  # blocks: 0-1, 2-5, 6-9, 10-13
    idx = torch.randint(50, (B, T))
    noise, t = torch.randn(B, T, 4), torch.rand(B, int(group[-1]))
    t = torch.cat([torch.ones(B, 1), t], 1)

    def forward(idx):
        z = vae.encode(idx)[0]
        x = torch.cat([z, noise], 1)  # the noisy stream's input held fixed: only the clean stream may move
        logits = dit(x, t, is_noisy.expand(B, -1), mask.expand(B, -1, -1), return_logits=True, pos=pos,
                     group=group)
        return z, logits.view(B, T, -1)

    z, out = forward(idx)
    for changed, first_moved_block in [(6, 2), (9, 2), (2, 1), (13, 3)]:
        idx2 = idx.clone()
        idx2[:, changed] = (idx2[:, changed] + 1) % 50
        z2, out2 = forward(idx2)
        start = 2 + 4 * (first_moved_block - 1)  # where the changed token's block begins
        assert torch.equal(z2[:, :changed], z[:, :changed])  # the causal encoder
        assert not torch.allclose(z2[:, changed], z[:, changed])
        torch.testing.assert_close(out2[:, :start + 4], out[:, :start + 4])  # block b and all before it
        if start + 4 < T:  # the blocks after b read it
            assert not torch.allclose(out2[:, start + 4:], out[:, start + 4:])

def test_a_causal_encoder_ignores_padding_and_the_future():
    torch.manual_seed(0)
    vae = TextVAE(VAEConfig(vocab_size=50, block_size=32, n_embd=32, n_head=4, n_enc_layer=2, n_dec_layer=1,
                            latent_channels=4, causal_encoder=True)).eval()
    idx = torch.randint(50, (2, 10))
    mask = torch.arange(10)[None, :] < torch.tensor([[10], [6]])
    mu = vae.encode(idx, mask)[0]
    torch.testing.assert_close(mu[1, :6], vae.encode(idx[1:, :6])[0][0])  # right padding changes nothing
    assert (mu[1, 6:] == 0).all()

@pytest.mark.parametrize('vocab_size', [0, 50])
def test_a_block_through_the_kv_cache_is_what_training_computes(vocab_size):
    """The sampler's path (the clean prefix into a KV cache in two chunks, then the noisy block reading a
    frozen view of it, guided or not) against training's one forward over [clean ; noisy] (block_layout
    with a block edge where the prefix ends)."""
    dit, n, P, B = random_dit(block_len=4, vocab_size=vocab_size), 4, 7, 3
    clean, x, t = torch.randn(B, P, 4), torch.randn(B, n, 4), 0.3
    T = P + n
    pos, is_noisy, group, mask = block_layout(T, n, offset=(-P) % n)
    full_x = torch.cat([clean, torch.randn(B, n, 4), torch.randn(B, P, 4), x], 1)  # the rest: never read
    times = torch.cat([torch.ones(B, 1), torch.full((B, int(group[-1])), t)], 1)
    want = dit(full_x, times, is_noisy.expand(B, -1), mask.expand(B, -1, -1), pos=pos, group=group)[:, -n:]

    cache = [KVCache() for _ in dit.body.blocks]
    for a, b in [(0, 5), (5, P)]:  # the prompt, then a block written after it
        dit(clean[:, a:b], torch.ones(B), torch.zeros(B, b - a, dtype=torch.bool),
            causal_mask(b - a, b, 'cpu').expand(B, -1, -1), cache=cache)
    assert len(cache[0]) == P
    sees = torch.ones(B, 1, P + n, dtype=torch.bool)
    got = dit(x, torch.full((B,), t), torch.ones(B, n, dtype=torch.bool), sees,
              cache=[c.frozen() for c in cache])
    assert len(cache[0]) == P  # a frozen view keeps nothing
    # float32 in another order of summation: ~1e-4 of outputs of order 1 (a leak or a lost key moves them by ~1)
    torch.testing.assert_close(got, want, atol=2e-3, rtol=2e-3)

def test_block_mode_needs_a_causal_vae(vae_dir, tiny_data, tmp_path):
    proc = run_main('dit_train.py', f'--data_dir={tiny_data}', f'--vae_ckpt={vae_dir}/ckpt.pt',
                    f'--out_dir={tmp_path}/dit', '--block_len=4', *TINY_DIT)
    one_line_error(proc, 'causal_encoder=True')

@pytest.fixture(scope='module')
def causal_vae(vae_dir, tmp_path_factory):
    """vae_dir's VAE with its encoder made causal (the same weights): a VAE block mode may train on."""
    ckpt = torch.load(f'{vae_dir}/ckpt.pt', weights_only=True)
    ckpt['model_args']['causal_encoder'] = True
    path = tmp_path_factory.mktemp('causal_vae') / 'ckpt.pt'
    torch.save(ckpt, path)
    return str(path)

@pytest.mark.parametrize('head', ['velocity', 'tokens'])
def test_block_mode_trains_and_samples_block_by_block(causal_vae, tiny_data, tmp_path, head):
    out = f'{tmp_path}/dit'
    log = ok(run_main('dit_train.py', f'--data_dir={tiny_data}', f'--vae_ckpt={causal_vae}', f'--out_dir={out}',
                      '--block_len=4', f'--head={head}', '--max_iters=20', '--eval_interval=10', *TINY_DIT))
    val = [float(v) for v in re.findall(r'val loss ([\d.]+)', log)]
    assert len(val) == 3 and val[-1] < val[0], log[-2000:]
    from sample import LDM, generate, sample_blocks
    ldm = LDM(out)
    prompts = ['the river', '', 'a much longer prompt than the others']
    idx = [ldm.enc.encode_ordinary(p) for p in prompts]
    lens = torch.tensor([len(i) for i in idx])
    idx = torch.tensor([i + [0] * (int(lens.max()) - len(i)) for i in idx])  # right-padded, as generate pads
    g = torch.Generator().manual_seed(1)
    for length in (9, 4, 1):  # 3 blocks of 4 (the last one cut), one whole block, one cut
        tokens = sample_blocks(ldm, idx, lens, length, 3, 2.0, g, 'dpm2m', 0.6)
        assert tokens.shape == (3, length) and 0 <= tokens.min() and tokens.max() < ldm.enc.n_vocab
    texts = generate(ldm, prompts, [9, 5, 3], steps=3, cfg=2.0, seed=1)
    assert len(texts) == 3 and generate(ldm, prompts, [9, 5, 3], steps=3, cfg=2.0, seed=1) == texts
