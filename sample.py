"""
Sample continuations from a trained TextLDM: encode the prompt, integrate the flow ODE from noise
to latents with classifier-free guidance (Euler, on the training's logit-normal time grid), decode.

    python sample.py --prompt "The river flows" --length 48 --cfg 4 --num_samples 3
    python sample.py                         # no prompt: unconditional passages
"""
import torch

from model import pack_segments, take_segment

# The default guidance scale, chosen by quality: on the embedded default, 8 against 4 gives lower generative
# perplexity and higher MAUVE on both benchmarks, ROUGE-L within noise (bench/results/dit_learns.md).
CFG = 8.0

def sample_t(n, schedule='logit_normal', mean=0.0, std=1.5, generator=None, device='cpu'):
    """Training timesteps in (0, 1), 1 = data: logit-normal (SD3) or uniform."""
    if schedule == 'uniform':
        return torch.rand(n, generator=generator, device=device)
    return torch.sigmoid(mean + std * torch.randn(n, generator=generator, device=device))

def time_grid(steps, schedule='logit_normal', mean=0.0, std=1.5):
    """steps+1 times from 0 (noise) to 1 (data) at the quantiles of the training distribution
    (CDCD: sample where training put its effort); t_k = sigmoid(mean + std * Phi^-1(k / steps))."""
    q = torch.linspace(0, 1, steps + 1, dtype=torch.float64)
    t = q if schedule == 'uniform' else torch.sigmoid(mean + std * torch.special.ndtri(q))
    t[0], t[-1] = 0.0, 1.0
    return t

@torch.no_grad()
def sample_latents(dit, ctx, ctx_lens, tgt_lens, steps=50, cfg=CFG, schedule='logit_normal', mean=0.0, std=1.5,
                   generator=None):
    """Euler integration of dx/dt = v(x, t, context) from x ~ N(0, I) at t=0 to data at t=1.
    ctx (B, Tc, C) normalised context latents (Tc may be 0), ctx_lens/tgt_lens (B,) -> target latents (B, Tt, C).
    Guidance: null + cfg * (conditional - null), null = zero context, both from one batched forward
    (TextDiT.forward_with_cfg: on the velocity, or on the token head's logits)."""
    B, Tt, C = ctx.size(0), int(tgt_lens.max()), dit.cfg.latent_channels
    x = torch.randn(B, Tt, C, generator=generator, device=ctx.device, dtype=torch.float64)
    guided = cfg != 1.0 and bool((ctx_lens > 0).any())
    if guided:  # the batch is [conditional ; unconditional]
        ctx, ctx_lens, tgt_lens = torch.cat([ctx, torch.zeros_like(ctx)]), ctx_lens.repeat(2), tgt_lens.repeat(2)
    ts = time_grid(steps, schedule, mean, std)
    for k in range(steps):
        xin = torch.cat([x, x]) if guided else x
        packed, is_target, mask = pack_segments(ctx, ctx_lens, xin.float(), tgt_lens)
        t = torch.full((packed.size(0),), float(ts[k]), device=x.device)
        v = dit.forward_with_cfg(packed, t, is_target, mask, cfg) if guided else dit(packed, t, is_target, mask)
        v = take_segment(v.double(), ctx_lens[:B], Tt)  # (B, Tt, C): the conditional half when guided
        x = x + (ts[k + 1] - ts[k]).item() * v  # accumulate in float64, as REPA's sampler does
    return x.float()

def check_length(ldm, length):
    longest = min(ldm.block_size, ldm.vae_block_size)
    if not 1 <= length <= longest:
        raise SystemExit(f"error: --length must be between 1 and {longest} tokens for this model, got {length}")

@torch.no_grad()
def generate(ldm, prompts, length, steps=50, cfg=CFG, seed=0):
    """Continue each prompt (a string; '' for an unconditional passage) by `length` tokens (an int, or one
    per prompt) -> list of strings. A prompt longer than the model's context keeps its end (with a warning)."""
    lengths = [length] * len(prompts) if isinstance(length, int) else list(length)
    for n in set(lengths):
        check_length(ldm, n)
    ids = [ldm.enc.encode_ordinary(p) for p in prompts]
    room = [min(ldm.block_size - n, ldm.vae_block_size) for n in lengths]
    if any(len(i) > r for i, r in zip(ids, room)):
        print("warning: a prompt is longer than the context this model has beside the new tokens: keeping its end")
        ids = [i[len(i) - r:] if len(i) > r else i for i, r in zip(ids, room)]
    ctx_lens = torch.tensor([len(i) for i in ids], device=ldm.device)
    tgt_lens = torch.tensor(lengths, device=ldm.device)
    idx = torch.zeros(len(ids), max(1, int(ctx_lens.max())), dtype=torch.long, device=ldm.device)
    for b, i in enumerate(ids):
        idx[b, :len(i)] = torch.tensor(i, dtype=torch.long)
    ctx = ldm.encode(idx, ctx_lens)  # the prompt is encoded on its own, as in training
    g = torch.Generator(device=ldm.device).manual_seed(seed)
    with ldm.autocast():
        z = sample_latents(ldm.dit, ctx, ctx_lens, tgt_lens, steps, cfg, ldm.schedule, ldm.t_mean, ldm.t_std, g)
    tokens = ldm.decode(z, tgt_lens)
    return [ldm.enc.decode(row[:n].tolist()) for row, n in zip(tokens, lengths)]

if __name__ == '__main__':
    from training import LDM
    out_dir = 'out/dit_tiny'  # the DiT's folder; its checkpoint names the VAE it was trained on
    vae_ckpt = ''             # to override the VAE checkpoint path stored in the DiT checkpoint
    prompt = ''
    length = 48
    steps = 50
    cfg = CFG  # guidance scale
    num_samples = 1
    seed = 0
    device = 'cpu'
    exec(open('configurator.py').read())
    # the configurator has checked every number's range (its _RANGES) and the device
    bad = next((i for i, c in enumerate(prompt) if 0xD800 <= ord(c) < 0xE000), None)  # undecodable bytes arrive as lone surrogates
    if bad is not None:
        raise SystemExit(f"error: --prompt is not UTF-8 text (character {bad} is {prompt[bad]!r}, an undecodable byte "
                         f"or a lone surrogate): pass the prompt in UTF-8")
    ldm = LDM(out_dir, vae_ckpt or None, device)
    check_length(ldm, length)
    texts = generate(ldm, [prompt] * num_samples, length, steps, cfg, seed)
    print(f"prompt: {prompt!r}" if prompt else "unconditional")
    for k, text in enumerate(texts):
        print(f"--- sample {k + 1}/{num_samples} (cfg {cfg}, {steps} steps) ---")
        print(f"{prompt} >>> {text}" if prompt else text)
