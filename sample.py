"""
Sample continuations from a trained TextLDM: encode the prompt, integrate the flow ODE from noise to latents with
classifier-free guidance (10 second-order steps on the training's logit-normal time grid), decode.

    python sample.py --prompt "The river flows" --length 48 --cfg 4 --num_samples 3
    python sample.py --solver=euler --steps=50 --cfg_until=1   # the paper's sampler
"""
import math
import os

import torch

from checkpoint import fingerprint, load_checkpoint, load_vae, unwrap_state_dict
from data import get_tokenizer, load_meta, tokenizer_sha256
from model import TextDiT, DiTConfig, flow_time, lengths_to_mask, pack_segments, take_segment

CFG = 2.0  # guidance of the default DiT (token head), by quality on the curve; the velocity head: 8, cfg_until 1
# 10 second-order steps, guided while t < 0.6: 96.6% of the tokens of a 200-step solution (the paper's 50 Euler
# steps: 98.1%), gen. PPL within 5% of those 50 steps', at 17 DiT forwards instead of 100 (bench/results/fidelity.md)
STEPS, SOLVER, CFG_UNTIL = 10, 'dpm2m', 0.6

@torch.no_grad()
def sample_latents(dit, ctx, ctx_lens, tgt_lens, steps=STEPS, cfg=CFG, schedule='logit_normal', mean=0.0, std=1.5,
                   generator=None, solver=SOLVER, cfg_until=CFG_UNTIL):
    """Integrate dx/dt = v(x, t, context) from x ~ N(0, I) at t = 0 to data at t = 1, at evenly spaced quantiles of
    the training's time distribution (CDCD: step where training put its effort). ctx (B, Tc, C) normalised context
    latents (Tc may be 0), ctx_lens/tgt_lens (B,) -> target latents (B, Tt, C).
    Each step moves x to t' along its clean estimate x1 = x + (1 - t) v: x' = x + (t' - t) / (1 - t) (x1 - x), Euler's
    step; solver='dpm2m' (DPM-Solver++(2M)) extrapolates x1 from the last step, linearly in log SNR: second order at
    one forward a step. Guidance while t < cfg_until: null + cfg * (conditional - null), null = zero context, in
    one batched forward of 2B rows; after it, forwards of B rows."""
    B, Tt, C = ctx.size(0), int(tgt_lens.max()), dit.config.latent_channels
    x = torch.randn(B, Tt, C, generator=generator, device=ctx.device, dtype=torch.float64)
    ts = flow_time(torch.linspace(0, 1, steps + 1, dtype=torch.float64), schedule, mean, std).tolist()
    lam = [math.log(t / (1 - t)) if 0 < t < 1 else None for t in ts]  # log SNR, None at the two ends
    pair = torch.cat([ctx, torch.zeros_like(ctx)]), ctx_lens.repeat(2), tgt_lens.repeat(2)  # [conditional ; null]
    has_ctx, last = bool((ctx_lens > 0).any()), None  # last: the previous step's (x1, guided)
    for k, (t, t_next) in enumerate(zip(ts[:-1], ts[1:])):
        guided = cfg != 1.0 and t < cfg_until and has_ctx
        c, c_lens, t_lens = pair if guided else (ctx, ctx_lens, tgt_lens)
        packed, is_target, mask = pack_segments(c, c_lens, (torch.cat([x, x]) if guided else x).float(), t_lens)
        t_in = torch.full((packed.size(0),), t, device=x.device)
        v = dit.forward_with_cfg(packed, t_in, is_target, mask, cfg) if guided else dit(packed, t_in, is_target, mask)
        x1 = x + (1 - t) * take_segment(v.double(), ctx_lens, Tt)  # the conditional half's when guided
        x1_step = x1  # second order inside (0, 1), unless the guidance just switched off (x1 jumps there)
        if solver == 'dpm2m' and last and last[1] == guided and None not in (lam[k - 1], lam[k + 1]):
            x1_step = x1 + (x1 - last[0]) * (lam[k + 1] - lam[k]) / (2 * (lam[k] - lam[k - 1]))
        x, last = x + (t_next - t) / (1 - t) * (x1_step - x), (x1, guided)  # in float64, as REPA's sampler
    return x.float()

@torch.no_grad()
def generate(ldm, prompts, length, steps=STEPS, cfg=CFG, seed=0, solver=SOLVER, cfg_until=CFG_UNTIL):
    """Continue each prompt (a string; '' for an unconditional passage) by `length` tokens (an int, or one
    per prompt) -> list of strings. A prompt longer than the model's context keeps its end (with a warning)."""
    lengths = [length] * len(prompts) if isinstance(length, int) else list(length)
    if not all(1 <= n <= ldm.longest for n in lengths):
        raise SystemExit(f"error: --length must be between 1 and {ldm.longest} tokens for this model, got {length}")
    ids = [ldm.enc.encode_ordinary(p) for p in prompts]
    room = [min(ldm.dit.config.block_size - n, ldm.vae.config.block_size) for n in lengths]
    if any(len(i) > r for i, r in zip(ids, room)):
        print("warning: a prompt is longer than the context this model has beside the new tokens: keeping its end"
              + (" (none of it: the new tokens fill the context)" if any(r == 0 < len(i) for i, r in zip(ids, room)) else ""))
        ids = [i[len(i) - r:] if len(i) > r else i for i, r in zip(ids, room)]
    ctx_lens, tgt_lens = torch.tensor([len(i) for i in ids], device=ldm.device), torch.tensor(lengths, device=ldm.device)
    idx = torch.tensor([i + [0] * (max(1, *map(len, ids)) - len(i)) for i in ids], device=ldm.device)  # right-padded
    ctx = ldm.encode(idx, ctx_lens)  # the prompt is encoded on its own, as in training
    with ldm.autocast():
        z = sample_latents(ldm.dit, ctx, ctx_lens, tgt_lens, steps, cfg, **ldm.times, solver=solver, cfg_until=cfg_until,
                           generator=torch.Generator(device=ldm.device).manual_seed(seed))
        tokens = ldm.decode(z, tgt_lens)  # in bf16 too: its vocabulary head costs what the GPT's does
    return [ldm.enc.decode(row[:n].tolist()) for row, n in zip(tokens, lengths)]

class LDM:
    """A trained TextLDM: tokenizer, frozen VAE, DiT (EMA weights when present) and the latent statistics
    and time distribution the DiT was trained with."""

    def __init__(self, dit_dir, vae_ckpt=None, device='cpu'):
        ckpt = load_checkpoint(os.path.join(dit_dir, 'ckpt.pt'), 'dit')
        run = ckpt['config']  # the DiT's training run
        vae_ckpt = vae_ckpt or run['vae_ckpt']
        self.vae, vae_ck = load_vae(vae_ckpt, device)
        if fingerprint(self.vae.state_dict()) != ckpt['vae_fingerprint']:
            raise SystemExit(f"error: the DiT in {dit_dir} was trained on another VAE than {vae_ckpt}: "
                             f"pass the VAE it was trained on with --vae_ckpt")
        self.data_dir, meta = run['data_dir'], load_meta(run['data_dir'])
        if tokenizer_sha256(meta) != vae_ck['tokenizer_sha256']:
            raise SystemExit(f"error: the tokenizer in {self.data_dir} is not the one the VAE was trained with")
        self.enc = get_tokenizer(meta, self.data_dir)
        self.dit = TextDiT(DiTConfig(**ckpt['model_args']))
        self.dit.load_state_dict(unwrap_state_dict(ckpt['ema'] or ckpt['model']))
        self.dit.to(device).eval().requires_grad_(False)
        self.mean, self.std = vae_ck['latent_mean'].to(device), vae_ck['latent_std'].to(device)
        self.times, self.device = dict(schedule=run['t_schedule'], mean=run['t_mean'], std=run['t_std']), device
        self.longest = min(self.dit.config.block_size, self.vae.config.block_size)  # context + new tokens
        # bf16 as in training, where it is native (GPUs; CPUs with AVX512-BF16/AMX: there it is 2x faster too)
        self.bf16 = run['dtype'] == 'bfloat16' and (device.startswith('cuda') or torch.ops.mkldnn._is_mkldnn_bf16_supported())

    def autocast(self):
        return torch.autocast(torch.device(self.device).type, torch.bfloat16, enabled=self.bf16)

    def encode(self, idx, lens):
        """Token ids (B, T) with lengths (B,) -> normalised latent means (B, T, C)."""
        return (self.vae.encode(idx, lengths_to_mask(lens, idx.size(1)))[0] - self.mean) / self.std

    def decode(self, z, lens):
        """Normalised latents (B, T, C) with lengths (B,) -> token ids (B, T), the most likely at each position."""
        return self.vae.decode(z * self.std + self.mean, lengths_to_mask(lens, z.size(1))).argmax(-1)

if __name__ == '__main__':
    out_dir = 'out/dit_tiny'  # the DiT's folder; its checkpoint names the VAE it was trained on
    vae_ckpt = ''             # to override the VAE checkpoint path stored in the DiT checkpoint
    prompt = ''
    length = 48
    steps = STEPS
    solver = SOLVER  # 'dpm2m' (second order) or 'euler' (the paper's)
    cfg = CFG  # guidance scale
    cfg_until = CFG_UNTIL  # guidance while t < cfg_until (1.0: at every step)
    num_samples = 1
    seed = 0
    device = 'cpu'
    exec(open('configurator.py').read())  # it checks every number's range and the device
    bad = next((i for i, c in enumerate(prompt) if 0xD800 <= ord(c) < 0xE000), None)  # undecodable bytes arrive as lone surrogates
    if bad is not None:
        raise SystemExit(f"error: --prompt is not UTF-8 text (character {bad} is {prompt[bad]!r}, an undecodable byte "
                         f"or a lone surrogate): pass the prompt in UTF-8")
    texts = generate(LDM(out_dir, vae_ckpt or None, device), [prompt] * num_samples, length, steps, cfg, seed, solver, cfg_until)
    print(f"prompt: {prompt!r}" if prompt else "unconditional")
    for k, text in enumerate(texts):
        print(f"--- sample {k + 1}/{num_samples} (cfg {cfg} while t < {cfg_until}, {steps} {solver} steps) ---")
        print(f"{prompt} >>> {text}" if prompt else text)
