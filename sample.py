"""
Sample continuations from a trained TextLDM: encode the prompt, integrate the flow ODE from noise
to latents with classifier-free guidance (Euler, on the training's logit-normal time grid), decode.

    python sample.py --prompt "The river flows" --length 48 --cfg 4 --num_samples 3
    python sample.py                         # no prompt: unconditional passages
"""
import os

import torch

from checkpoint import fingerprint, load_checkpoint, load_vae, unwrap_state_dict
from data import get_tokenizer, load_meta, tokenizer_sha256
from model import TextDiT, DiTConfig, flow_time, lengths_to_mask, pack_segments, take_segment

CFG = 2.0  # guidance of the default DiT (token head), by quality on the curve; the velocity head: 8 (curve.md)

@torch.no_grad()
def sample_latents(dit, ctx, ctx_lens, tgt_lens, steps=50, cfg=CFG, schedule='logit_normal', mean=0.0, std=1.5,
                   generator=None):
    """Euler integration of dx/dt = v(x, t, context) from x ~ N(0, I) at t = 0 to data at t = 1, at evenly
    spaced quantiles of the training's time distribution (CDCD: step where training put its effort).
    ctx (B, Tc, C) normalised context latents (Tc may be 0), ctx_lens/tgt_lens (B,) -> target latents (B, Tt, C).
    Guidance: null + cfg * (conditional - null), null = zero context, both from one batched forward."""
    B, Tt, C = ctx.size(0), int(tgt_lens.max()), dit.config.latent_channels
    x = torch.randn(B, Tt, C, generator=generator, device=ctx.device, dtype=torch.float64)
    guided = cfg != 1.0 and bool((ctx_lens > 0).any())
    if guided:  # the batch is [conditional ; null context]
        ctx, ctx_lens, tgt_lens = torch.cat([ctx, torch.zeros_like(ctx)]), ctx_lens.repeat(2), tgt_lens.repeat(2)
    ts = flow_time(torch.linspace(0, 1, steps + 1, dtype=torch.float64), schedule, mean, std)
    for k in range(steps):
        packed, is_target, mask = pack_segments(ctx, ctx_lens, (torch.cat([x, x]) if guided else x).float(), tgt_lens)
        t = torch.full((packed.size(0),), float(ts[k]), device=x.device)
        v = dit.forward_with_cfg(packed, t, is_target, mask, cfg) if guided else dit(packed, t, is_target, mask)
        v = take_segment(v.double(), ctx_lens[:B], Tt)  # (B, Tt, C): the conditional half when guided
        x = x + (ts[k + 1] - ts[k]).item() * v  # accumulate in float64, as REPA's sampler does
    return x.float()

@torch.no_grad()
def generate(ldm, prompts, length, steps=50, cfg=CFG, seed=0):
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
    idx = torch.zeros(len(ids), max(1, int(ctx_lens.max())), dtype=torch.long, device=ldm.device)
    for b, i in enumerate(ids):
        idx[b, :len(i)] = torch.tensor(i, dtype=torch.long)
    ctx = ldm.encode(idx, ctx_lens)  # the prompt is encoded on its own, as in training
    with ldm.autocast():
        z = sample_latents(ldm.dit, ctx, ctx_lens, tgt_lens, steps, cfg, **ldm.times,
                           generator=torch.Generator(device=ldm.device).manual_seed(seed))
    return [ldm.enc.decode(row[:n].tolist()) for row, n in zip(ldm.decode(z, tgt_lens), lengths)]

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
        self.times = dict(schedule=run['t_schedule'], mean=run['t_mean'], std=run['t_std'])
        self.device = device
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
    steps = 50
    cfg = CFG  # guidance scale
    num_samples = 1
    seed = 0
    device = 'cpu'
    exec(open('configurator.py').read())  # it checks every number's range and the device
    bad = next((i for i, c in enumerate(prompt) if 0xD800 <= ord(c) < 0xE000), None)  # undecodable bytes arrive as lone surrogates
    if bad is not None:
        raise SystemExit(f"error: --prompt is not UTF-8 text (character {bad} is {prompt[bad]!r}, an undecodable byte "
                         f"or a lone surrogate): pass the prompt in UTF-8")
    texts = generate(LDM(out_dir, vae_ckpt or None, device), [prompt] * num_samples, length, steps, cfg, seed)
    print(f"prompt: {prompt!r}" if prompt else "unconditional")
    for k, text in enumerate(texts):
        print(f"--- sample {k + 1}/{num_samples} (cfg {cfg}, {steps} steps) ---")
        print(f"{prompt} >>> {text}" if prompt else text)
