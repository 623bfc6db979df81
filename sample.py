"""
Sample continuations from a trained TextLDM: encode the prompt, integrate the flow ODE from noise to
latents with classifier-free guidance (10 second-order steps on the training's logit-normal time
grid), decode. The block-causal DiT writes block after block, each from the text before it.

    python sample.py --prompt "The river flows" --length 48 --cfg 4 --num_samples 3
    python sample.py --solver=euler --steps=50 --cfg_until=1   # the paper's sampler
"""
import math
import os

import torch
import torch.nn.functional as F

from checkpoint import fingerprint, load_checkpoint, load_vae, unwrap_state_dict
from data import get_tokenizer, load_meta, tokenizer_sha256
from model import (TextDiT, DiTConfig, KVCache, causal_mask, flow_time, lengths_to_mask,
                   pack_segments, take_segment)

# guidance of the default DiT (token head), by quality on the curve; velocity head: 8, cfg_until 1
CFG = 2.0
# 10 second-order steps, guided while t < 0.6: 96.6% of the tokens of a 200-step solution (the
# paper's 50 Euler steps: 98.1%), gen. PPL within 5% of those 50 steps', at 17 DiT forwards instead
# of 100 (bench/results/fidelity.md)
STEPS, SOLVER, CFG_UNTIL = 10, 'dpm2m', 0.6
# A block: 2 steps guided at every one. Blocks of 1 (the default DiT's), gen. PPL, 2 steps against
# 3 (bench/results/steps/): 1,201 / 411 against 1,417 / 387 at the demo's 550 training steps, 245 /
# 118 against 217 / 99 at 1000, 63 / 40 against 54 / 34 at 2000 (within 3 steps' intervals), 36 / 29
# against 27 / 27 at 4000 (both under the true text's 46 / 43); at batch 1 they sample at 0.59x the
# GPT's speed, 3 steps at 0.48-0.51x (bench/results/blocks_b1*/sampling.md). Guided at the first 2
# of 3 steps only: 54 / 42 at 4000.
BLOCK_STEPS, BLOCK_CFG_UNTIL = 2, 1.0
# On a CPU bf16 pays only in big matmuls: blocks of 4 at batch 1 (4 latents a forward) sample 2x
# faster in float32, at batch 32 (128) even; a whole continuation of 74 latents even, of 148 1.2x
# faster in bf16 (bench/results/cpu_dtype.md). So bf16 where a forward writes this many or more.
CPU_BF16_MIN_LATENTS = 128
# Block by block, a block's tokens are decoded from its latents and the 8 before them: 99.97% of
# held-out positions get the token the whole text before them gives, and the true token as often
# (99.72%; bench/decode_window.py). The decoder's cost no longer grows with the text, and 8 latents
# cost about half of 16 (its matmuls' rows).
DECODE_WINDOW = 8

def sampling_autocast(device_type, bf16, latents):
    """bf16 autocast if the model trained in it (bf16) and, on a CPU, the forwards write at least
    CPU_BF16_MIN_LATENTS latents (a batch of blocks or targets)."""
    big = device_type != 'cpu' or latents >= CPU_BF16_MIN_LATENTS
    return torch.autocast(device_type, torch.bfloat16, enabled=bf16 and big)

def integrate(velocity, x, steps, cfg, schedule, mean, std, solver, cfg_until, cdf=None):
    """Integrate dx/dt = velocity(x, t, guided) from x ~ N(0, I) at t = 0 to data at t = 1, at
    evenly spaced quantiles of the training's time distribution (CDCD: step where training put its
    effort); guided while t < cfg_until. Each step moves x to t' along its clean estimate
    x1 = x + (1 - t) v: x' = x + (t' - t) / (1 - t) (x1 - x), Euler's step; solver='dpm2m'
    (DPM-Solver++(2M)) extrapolates x1 from the last step, linearly in log SNR: second order at one
    forward a step. velocity also gets the last step's clean estimate (None at the first), which a
    self-conditioned DiT reads."""
    q = torch.linspace(0, 1, steps + 1, dtype=torch.float64)
    ts = flow_time(q, schedule, mean, std, cdf).tolist()
    lam = [math.log(t / (1 - t)) if 0 < t < 1 else None for t in ts]  # log SNR, None at the ends
    last = None  # the previous step's (x1, guided)
    for k, (t, t_next) in enumerate(zip(ts[:-1], ts[1:])):
        guided = cfg != 1.0 and t < cfg_until
        x1_prev = None if last is None else last[0].float()
        # the conditional half's when guided
        x1 = x + (1 - t) * velocity(x, t, guided, x1_prev).double()
        # second order inside (0, 1), unless the guidance just switched off (x1 jumps there)
        x1_step = x1
        inside = None not in (lam[k - 1], lam[k + 1])
        if solver == 'dpm2m' and last and last[1] == guided and inside:
            x1_step = x1 + (x1 - last[0]) * (lam[k + 1] - lam[k]) / (2 * (lam[k] - lam[k - 1]))
        # in float64, as REPA's sampler
        x, last = x + (t_next - t) / (1 - t) * (x1_step - x), (x1, guided)
    return x.float()

@torch.no_grad()
def sample_latents(dit, ctx, ctx_lens, tgt_lens, steps=STEPS, cfg=CFG, schedule='logit_normal',
                   mean=0.0, std=1.5, generator=None, solver=SOLVER, cfg_until=CFG_UNTIL, cdf=None):
    """The paper's layout: the whole target at once after its context. ctx (B, Tc, C) normalised
    context latents (Tc may be 0), ctx_lens/tgt_lens (B,) -> target latents (B, Tt, C). A guided
    step is one forward of 2B rows [conditional ; null], null = zero context; the others, of B."""
    B, Tt, C = ctx.size(0), int(tgt_lens.max()), dit.config.latent_channels
    pair = torch.cat([ctx, torch.zeros_like(ctx)]), ctx_lens.repeat(2), tgt_lens.repeat(2)

    def velocity(x, t, guided, x1_prev):
        c, c_lens, t_lens = pair if guided else (ctx, ctx_lens, tgt_lens)
        m = 2 if guided else 1
        packed, is_target, mask = pack_segments(c, c_lens, torch.cat([x] * m).float(), t_lens)
        if x1_prev is not None:  # at the target positions, as x
            x1_prev = torch.cat([x1_prev] * m).float()
            x1_prev = pack_segments(torch.zeros_like(c), c_lens, x1_prev, t_lens)[0]
        t = torch.full((packed.size(0),), t, device=x.device)
        if guided:
            v = dit.forward_with_cfg(packed, t, is_target, mask, cfg, x1_prev=x1_prev)
        else:
            v = dit(packed, t, is_target, mask, x1_prev=x1_prev)
        return take_segment(v, ctx_lens, Tt)

    x = torch.randn(B, Tt, C, generator=generator, device=ctx.device, dtype=torch.float64)
    has_ctx = bool((ctx_lens > 0).any())  # else there is nothing to guide by
    cfg_until = cfg_until if has_ctx else 0
    return integrate(velocity, x, steps, cfg, schedule, mean, std, solver, cfg_until, cdf)

@torch.no_grad()
def sample_blocks(ldm, idx, lens, length, steps, cfg, generator, solver, cfg_until):
    """The block-causal layout: block after block, each integrated from noise as a whole target
    is, the DiT reading the clean latents before it through a KV cache; then decoded, and its tokens
    encoded again as the clean latents the next block reads (as training made them). idx (B, P)
    right-padded prompts of lengths lens (B,) -> the new tokens (B, length). Guidance: null = zero
    clean latents."""
    dit, n, (B, P) = ldm.dit, ldm.dit.config.block_len, idx.shape
    rows = 2 * B if cfg != 1.0 and cfg_until > 0 else B  # [conditional ; null] if a step is guided
    # left-padded, so that every row's text ends where the next block starts
    seq, real = take_segment(idx, lens - P, P), lengths_to_mask(lens, P).flip(1)
    cache = [KVCache() for _ in dit.body.blocks]
    enc_cache = [KVCache() for _ in ldm.vae.encoder.blocks]  # of the causal VAE encoder
    z = seq.new_zeros(B, 0, dit.config.latent_channels)
    conds = {}  # the DiT's modulations by (time, new clean latents): the same in every block
    while seq.size(1) - P < length:
        L, new = seq.size(1), seq.size(1) - z.size(1)
        all_real = bool(real.all())  # then no mask but the causal one: a faster attention
        # the newest tokens see the real ones up to them (a padding query sees itself: with
        # nothing to see, it would be NaN)
        own = (torch.arange(L) == torch.arange(L - new, L)[:, None]).to(real.device)
        sees_new = (real[:, None, :] | own) & causal_mask(new, L, real.device)
        # their clean latents, the causal encoder reading the text before them from its cache
        # (RoPE sees relative positions only: the left padding moves no latent)
        z_new = ldm.vae.encode(seq[:, L - new:], None if all_real else sees_new, enc_cache)[0]
        z = torch.cat([z, (z_new - ldm.mean) / ldm.std], 1)
        # they enter the DiT's cache at t = 1 in the block's first forward, as training's clean
        # stream: causal; the block sees the real clean latents and itself
        real = torch.cat([real, real.new_ones(B, n)], 1)
        sees = None if all_real else real[:, None, :]
        first = torch.cat([F.pad(sees_new, (0, n)), real[:, None, :].expand(-1, n, -1)], 1)
        fresh = torch.cat([z[:, L - new:], torch.zeros_like(z[:, L - new:])])[:rows]  # null: zeros
        group = (torch.arange(new + n, device=seq.device) >= new).long()  # 0: clean, 1: the block

        def velocity(x, t, guided, x1_prev):
            m, first_step = 2 if guided else 1, len(cache[0]) < L
            key = (t, first_step and new)
            x, t = torch.cat([x] * m).float(), x.new_full((m * B, 1), t, dtype=torch.float32)
            x1_prev = None if x1_prev is None else torch.cat([x1_prev] * m)
            if first_step:  # (of m * B = rows rows)
                x, t, mask = torch.cat([fresh, x], 1), torch.cat([torch.ones_like(t), t], 1), first
                layout = dict(cache=cache, group=group)
            else:
                mask, layout = sees, dict(cache=[c.frozen(m * B) for c in cache])
            is_target = torch.ones_like(x[..., 0], dtype=torch.bool)
            is_target[:, :x.size(1) - n] = False
            # the modulations depend on the times alone: computed once per time of the grid
            if key not in conds:
                conds[key] = dit.condition(t[:1], layout.get('group'))
            layout['cond'] = conds[key]
            if guided:
                mask = None if mask is None else mask.repeat(2, 1, 1)
                v = dit.forward_with_cfg(x, t, is_target, mask, cfg, x1_prev=x1_prev, **layout)
            else:
                v = dit(x, t, is_target, mask, x1_prev=x1_prev, **layout)
            for c in cache:  # keep the clean latents' keys, not the block's
                c.trim(L)
            return v[:, -n:]

        x = torch.randn(B, n, z.size(2), generator=generator, device=seq.device,
                        dtype=torch.float64)
        x = integrate(velocity, x, steps, cfg, **ldm.times, solver=solver, cfg_until=cfg_until)
        # the block's tokens from it and the DECODE_WINDOW latents before it, not the whole text
        window = torch.cat([z[:, -DECODE_WINDOW:], x], 1) * ldm.std + ldm.mean
        logits = ldm.vae.decode(window, None if all_real else real[:, -window.size(1):], last=n)
        seq = torch.cat([seq, logits.argmax(-1)], 1)
    return seq[:, P:P + length]

def layout_sampler(ldm, steps, cfg_until):
    """steps, cfg_until; where None, the default of the DiT's layout (a block's, a whole
    continuation's)."""
    block = bool(ldm.dit.config.block_len)
    return (steps or (BLOCK_STEPS if block else STEPS),
            (BLOCK_CFG_UNTIL if block else CFG_UNTIL) if cfg_until is None else cfg_until)

@torch.no_grad()
def generate(ldm, prompts, length, steps=None, cfg=CFG, seed=0, solver=SOLVER, cfg_until=None):
    """Continue each prompt (a string; '' for an unconditional passage) by `length` tokens (an int,
    or one per prompt) -> list of strings. A prompt longer than the model's context keeps its end
    (with a warning). steps and cfg_until: None is the layout's default."""
    steps, cfg_until = layout_sampler(ldm, steps, cfg_until)
    lengths = [length] * len(prompts) if isinstance(length, int) else list(length)
    if not all(1 <= n <= ldm.longest for n in lengths):
        raise SystemExit(f"error: --length must be between 1 and {ldm.longest} tokens for this "
                         f"model, got {length}")
    ids = [ldm.enc.encode_ordinary(p) for p in prompts]
    room = [min(ldm.dit.config.block_size - n, ldm.vae.config.block_size) for n in lengths]
    if any(len(i) > r for i, r in zip(ids, room)):
        none_left = any(r == 0 < len(i) for i, r in zip(ids, room))
        print("warning: a prompt is longer than the context this model has beside the new tokens: "
              "keeping its end"
              + (" (none of it: the new tokens fill the context)" if none_left else ""))
        ids = [i[len(i) - r:] if len(i) > r else i for i, r in zip(ids, room)]
    ctx_lens = torch.tensor([len(i) for i in ids], device=ldm.device)
    tgt_lens = torch.tensor(lengths, device=ldm.device)
    width = max(1, *map(len, ids))
    idx = torch.tensor([i + [0] * (width - len(i)) for i in ids], device=ldm.device)  # right-padded
    gen = torch.Generator(device=ldm.device).manual_seed(seed)
    if ldm.dit.config.block_len:
        with ldm.autocast(len(prompts) * ldm.dit.config.block_len):
            tokens = sample_blocks(ldm, idx, ctx_lens, max(lengths), steps, cfg, gen, solver,
                                   cfg_until)
        return [ldm.enc.decode(row[:n].tolist()) for row, n in zip(tokens, lengths)]
    ctx = ldm.encode(idx, ctx_lens)  # the prompt is encoded on its own, as in training
    with ldm.autocast(len(prompts) * (width + max(lengths))):
        z = sample_latents(ldm.dit, ctx, ctx_lens, tgt_lens, steps, cfg, **ldm.times, generator=gen,
                           solver=solver, cfg_until=cfg_until)
        tokens = ldm.decode(z, tgt_lens)  # in bf16 too: its vocabulary head costs as the GPT's
    return [ldm.enc.decode(row[:n].tolist()) for row, n in zip(tokens, lengths)]

class LDM:
    """A trained TextLDM: tokenizer, frozen VAE, DiT (EMA weights when present) and the latent
    statistics and time distribution the DiT was trained with."""

    def __init__(self, dit_dir, vae_ckpt=None, device='cpu'):
        ckpt = load_checkpoint(os.path.join(dit_dir, 'ckpt.pt'), 'dit')
        run = ckpt['config']  # the DiT's training run
        vae_ckpt = vae_ckpt or run['vae_ckpt']
        self.vae, vae_ck = load_vae(vae_ckpt, device)
        if fingerprint(self.vae.state_dict()) != ckpt['vae_fingerprint']:
            raise SystemExit(f"error: the DiT in {dit_dir} was trained on another VAE than "
                             f"{vae_ckpt}: pass the VAE it was trained on with --vae_ckpt")
        self.data_dir, meta = run['data_dir'], load_meta(run['data_dir'])
        if tokenizer_sha256(meta) != vae_ck['tokenizer_sha256']:
            raise SystemExit(f"error: the tokenizer in {self.data_dir} is not the one the VAE was "
                             f"trained with")
        self.enc = get_tokenizer(meta, self.data_dir)
        self.dit = TextDiT(DiTConfig(**ckpt['model_args']))
        self.dit.load_state_dict(unwrap_state_dict(ckpt['ema'] or ckpt['model']))
        self.dit.to(device).eval().requires_grad_(False)
        self.mean, self.std = vae_ck['latent_mean'].to(device), vae_ck['latent_std'].to(device)
        self.times = dict(schedule=run['t_schedule'], mean=run['t_mean'], std=run['t_std'],
                          cdf=(ckpt.get('time_warp') or {}).get('cdf'))  # a learned schedule's
        self.device = device
        # context + new tokens
        self.longest = min(self.dit.config.block_size, self.vae.config.block_size)
        # bf16 as in training, where it is native (GPUs; CPUs with AVX512-BF16/AMX: 2x faster too)
        native = device.startswith('cuda') or torch.ops.mkldnn._is_mkldnn_bf16_supported()
        self.bf16 = run['dtype'] == 'bfloat16' and native

    def autocast(self, latents=CPU_BF16_MIN_LATENTS):
        return sampling_autocast(torch.device(self.device).type, self.bf16, latents)

    def encode(self, idx, lens):
        """Token ids (B, T) with lengths (B,) -> normalised latent means (B, T, C)."""
        return (self.vae.encode(idx, lengths_to_mask(lens, idx.size(1)))[0] - self.mean) / self.std

    def decode(self, z, lens):
        """Normalised latents (B, T, C) with lengths (B,) -> the most likely token ids (B, T)."""
        mask = lengths_to_mask(lens, z.size(1))
        return self.vae.decode(z * self.std + self.mean, mask).argmax(-1)

if __name__ == '__main__':
    out_dir = 'out/dit_tiny'  # the DiT's folder; its checkpoint names the VAE it was trained on
    vae_ckpt = ''             # to override the VAE checkpoint path stored in the DiT checkpoint
    prompt = ''
    length = 48
    steps = None  # the solver's steps (a block's); None: 10 for a whole continuation, 2 a block
    solver = SOLVER  # 'dpm2m' (second order) or 'euler' (the paper's)
    cfg = CFG  # guidance scale
    # guidance while t < cfg_until (1.0: at every step); None: 0.6 for a whole continuation, 1 for
    # a block
    cfg_until = None
    num_samples = 1
    seed = 0
    device = 'cpu'
    exec(open('configurator.py').read())  # it checks every number's range and the device
    # undecodable bytes arrive as lone surrogates
    bad = next((i for i, c in enumerate(prompt) if 0xD800 <= ord(c) < 0xE000), None)
    if bad is not None:
        raise SystemExit(f"error: --prompt is not UTF-8 text (character {bad} is "
                         f"{prompt[bad]!r}, an undecodable byte or a lone surrogate): pass the "
                         f"prompt in UTF-8")
    ldm = LDM(out_dir, vae_ckpt or None, device)
    steps, cfg_until = layout_sampler(ldm, steps, cfg_until)
    texts = generate(ldm, [prompt] * num_samples, length, steps, cfg, seed, solver, cfg_until)
    print(f"prompt: {prompt!r}" if prompt else "unconditional")
    for k, text in enumerate(texts):
        print(f"--- sample {k + 1}/{num_samples} (cfg {cfg} while t < {cfg_until}, "
              f"{steps} {solver} steps) ---")
        print(f"{prompt} >>> {text}" if prompt else text)
