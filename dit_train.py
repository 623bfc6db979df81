"""
Stage 2: train the TextDiT with flow matching on the frozen VAE's latents.

    python dit_train.py config/dit_tiny.py                        # the embedded default, CPU
    torchrun --nproc_per_node=8 dit_train.py config/dit_328m.py   # the paper's ablation size

The paper's layout: each window is split into a context and a target, ENCODED SEPARATELY (no target
information can reach the context latents). The DiT sees [clean context ; x_t] with
x_t = t * x1 + (1 - t) * x0, x0 ~ N(0, I), and on the target positions either regresses the velocity
x1 - x0 (head='velocity', the paper's MSE) or predicts the target tokens (head='tokens', cross-
entropy; its velocity comes from the expected clean latent, see TextDiT). Classifier-free guidance:
the context is replaced by zeros with probability p_drop_context; a fraction p_uncond of windows
have none.
The block-causal layout (block_len > 0): the whole window, clean and noised block by block, every
block denoised from the clean latents before it (model.block_layout).
"""
import copy
import os
import time

import numpy as np
import torch
import torch.nn.functional as F

from checkpoint import save_checkpoint, load_checkpoint, load_vae, fingerprint
from data import TokenData, load_meta, tokenizer_sha256
from model import (TextDiT, DiTConfig, flow_time, fit_time_cdf, token_latent_means,
                   encode_segments, pack_segments, block_layout, lengths_to_mask, flops_per_token,
                   peak_flops)
from training import (setup, prepare_model, get_lr, parse_keep_steps, micro_batch_rng,
                      sum_over_ranks, check_finite, Meter, write_summary)

# -----------------------------------------------------------------------------
# default config: the embedded dataset, sized for a 2-core CPU
out_dir = 'out/dit_tiny'
vae_ckpt = 'out/vae_tiny/ckpt.pt'
data_dir = 'data/embedded'
init_from = 'scratch'  # 'scratch' or 'resume'
eval_interval = 250
eval_iters = 10
log_interval = 10
max_iters = 500
keep_steps = ''  # also keep these steps' checkpoints in out_dir/step<N>/ (a curve), e.g. '500,1000'
# data: window length uniform in [min_len, block_size]; the context takes a fraction of it uniform
# in [ctx_frac_min, ctx_frac_max] (the paper samples lengths uniformly)
batch_size = 32  # per micro-step: the global batch is batch_size x grad. accumulation x GPUs
gradient_accumulation_steps = 1
block_size = 128
min_len = 16
ctx_frac_min = 0.25
ctx_frac_max = 0.75
p_drop_context = 0.1  # context latents -> zeros (the null condition of CFG)
p_uncond = 0.05       # whole windows as targets with no context (unconditional generation)
# the layout: 0 is the paper's, one target after a context encoded apart; block_len > 0 is
# block-causal (Cola DLM, BD3-LM): the window cut into blocks of block_len latents, each denoised
# from the clean latents before it, in one forward: a window teaches as many boundaries as blocks
block_len = 0
t_per_block = True  # block_len > 0: an independent time per noisy block (BD3-LM), else per window
# block_len > 0, token head: the weight of a next-token cross-entropy on the clean latents. They are
# read causally, so the clean stream is a GPT inside the DiT: every position a lesson of what
# follows clean text, where diffusion gives one a block (few at the high noise where only the past
# tells)
ar_weight = 0.0
# self-conditioning (Analog Bits, LangFlow): on half the batches the targets also read the model's
# own clean estimate from a first forward without gradients, as the sampler gives it the last step's
self_cond = False
# flow matching
# t_schedule: 'logit_normal', 'uniform' or 'learned': information-uniform (CDCD's time warping,
# LangFlow): t where the loss still falls, each stretch of time in proportion to the loss the model
# resolves across it (model.fit_time_cdf), refitted every warp_interval steps from a running mean
# of the loss by t; it starts as logit_normal(t_mean, t_std), and the sampler steps on it too
t_schedule = 'logit_normal'
warp_interval = 50
t_mean = 0.0
t_std = 1.5
# model
# 'velocity': regress x1 - x0 with MSE (the paper); 'tokens': score interpolation, cross-entropy
head = 'velocity'
n_embd = 256
n_head = 4
n_layer = 6
dropout = 0.0
ema_decay = 0.999  # 0 turns EMA off
# optimizer
learning_rate = 1e-3
min_lr = 1e-4
weight_decay = 0.0
beta1 = 0.9
beta2 = 0.99
grad_clip = 1.0
warmup_iters = 100
lr_decay_iters = 0  # cosine decay to min_lr by this step; 0 = max_iters
# system
device = 'cpu'
dtype = 'bfloat16'
compile = False
backend = 'auto'  # of DDP under torchrun: 'auto' is nccl on GPUs, gloo on CPUs
seed = 1337
peak_tflops = 0.0
# -----------------------------------------------------------------------------
exec(open('configurator.py').read())
config = {k: v for k, v in globals().items()
          if not k.startswith('_') and isinstance(v, (int, float, bool, str))}
# -----------------------------------------------------------------------------

if not 2 <= min_len <= block_size or not 0 < ctx_frac_min <= ctx_frac_max < 1:
    raise SystemExit("error: need 2 <= min_len <= block_size and "
                     "0 < ctx_frac_min <= ctx_frac_max < 1")
if ar_weight and not (block_len and head == 'tokens'):
    raise SystemExit("error: ar_weight > 0 needs the block-causal layout (block_len > 0) and "
                     "head='tokens'")
keep = parse_keep_steps(keep_steps, max_iters)
env = setup(device, dtype, backend, seed, gradient_accumulation_steps)
device, autocast, master = env['device'], env['autocast'], env['master']
meta = load_meta(data_dir)
train_data, val_data = TokenData(data_dir, 'train'), TokenData(data_dir, 'val')
vae, vae_ck = load_vae(vae_ckpt, device)
if vae_ck['tokenizer_sha256'] != tokenizer_sha256(meta):
    raise SystemExit(f"error: the VAE {vae_ckpt} was trained with another tokenizer than the one "
                     f"in {data_dir}")
if block_len and not vae.config.causal_encoder:
    raise SystemExit("error: block_len > 0 needs a VAE whose encoder is causal (a clean latent "
                     "must not read the block being denoised): train one with "
                     "--causal_encoder=True")
if block_size > vae.config.block_size:
    raise SystemExit(f"error: block_size {block_size} is longer than the VAE's "
                     f"{vae.config.block_size}")
lat_mean, lat_std = vae_ck['latent_mean'].to(device), vae_ck['latent_std'].to(device)
C = vae.config.latent_channels

model_args = dict(latent_channels=C, block_size=block_size, n_embd=n_embd, n_head=n_head,
                  n_layer=n_layer, vocab_size=meta['vocab_size'] if head == 'tokens' else 0,
                  block_len=block_len, self_cond=self_cond, dropout=dropout)
iter_num, ckpt = 0, None
if init_from == 'resume':
    ckpt = load_checkpoint(os.path.join(out_dir, 'ckpt.pt'), 'dit')
    if ckpt['vae_fingerprint'] != fingerprint(vae.state_dict()):
        raise SystemExit(f"error: {out_dir}/ckpt.pt was trained on another VAE than {vae_ckpt}")
    model_args, iter_num = ckpt['model_args'], ckpt['iter_num']
    for key, now in (('block_len', block_len), ('self_cond', self_cond)):
        if model_args.get(key, 0) != now:  # the inputs train what the model reads
            raise SystemExit(f"error: {out_dir}/ckpt.pt was trained with {key}="
                             f"{model_args.get(key, 0)}: resume with that {key}")
    if iter_num > max_iters:  # the loop stops when iter_num reaches max_iters: else, never
        raise SystemExit(f"error: {out_dir}/ckpt.pt is at step {iter_num}, past "
                         f"max_iters={max_iters}: raise max_iters to train on")

def token_latents(n_batches=50):
    """E for the token head: each token's mean normalised latent over training windows."""
    def encode(idx, lens):
        with autocast:
            return (vae.encode(idx, lengths_to_mask(lens, idx.size(1)))[0] - lat_mean) / lat_std
    rngs = (np.random.default_rng([seed, 3, k]) for k in range(n_batches))
    batches = (train_data.sample(batch_size, block_size, rng) for rng in rngs)
    batches = ((idx.to(device), lens.to(device)) for idx, lens in batches)
    return token_latent_means(encode, batches, meta['vocab_size'])[0]

dit = TextDiT(DiTConfig(**model_args))
if dit.config.vocab_size and ckpt is None:
    dit.token_latents.copy_(token_latents())
model, raw_model, optimizer = prepare_model(dit, ckpt, env, compile, weight_decay, learning_rate,
                                            (beta1, beta2))
ema = copy.deepcopy(raw_model).requires_grad_(False) if ema_decay > 0 else None
if ema is not None and ckpt and ckpt['ema'] is not None:
    ema.load_state_dict(ckpt['ema'])
# the learned schedule: the loss by t (WARP_BINS bins, a running mean) and the CDF fitted to it,
# first the logit-normal's
WARP_BINS = 50
time_cdf = loss_by_t = None
if t_schedule == 'learned':
    edges = torch.linspace(0, 1, WARP_BINS + 1)
    time_cdf = torch.special.ndtr((torch.logit(edges) - t_mean) / t_std)
    loss_by_t = torch.full((WARP_BINS,), float('nan'))
    if ckpt and ckpt.get('time_warp'):
        time_cdf, loss_by_t = ckpt['time_warp']['cdf'], ckpt['time_warp']['loss_by_t']
ckpt = None  # free memory

# -----------------------------------------------------------------------------
# a batch and its flow-matching loss, in either layout

def get_batch(data, rng):
    """Windows, their context lengths (0 = unconditional) and which contexts are dropped for CFG."""
    # one length per batch: no padding
    idx, lens = data.sample(batch_size, int(rng.integers(min_len, block_size + 1)), rng)
    frac = rng.uniform(ctx_frac_min, ctx_frac_max, size=batch_size)
    ctx_lens = np.floor(frac * lens.numpy()).astype(np.int64)
    ctx_lens = np.clip(ctx_lens, 1, lens.numpy() - 1)
    ctx_lens[rng.random(batch_size) < p_uncond] = 0
    drop = torch.from_numpy(rng.random(batch_size) < p_drop_context)
    return idx.to(device), lens.to(device), torch.from_numpy(ctx_lens).to(device), drop.to(device)

def paper_inputs(idx, lens, ctx_lens, drop, generator):
    """The paper's layout: [clean context ; x_t of the target], one time per window. Context and
    target are encoded SEPARATELY by the frozen VAE. -> the DiT's inputs, the velocity x1 - x0 and t
    per position."""
    with autocast:
        zc, x1, tgt_lens = encode_segments(vae, idx, lens, ctx_lens)
    zc, x1 = (zc - lat_mean) / lat_std, (x1 - lat_mean) / lat_std
    zc = zc * (~drop)[:, None, None]  # the null condition: zero context vectors
    q = torch.rand(idx.size(0), generator=generator, device=device)
    t = flow_time(q, t_schedule, t_mean, t_std, time_cdf)
    x0 = torch.randn(x1.shape, generator=generator, device=device)
    xt = t[:, None, None] * x1 + (1 - t[:, None, None]) * x0
    x, is_target, mask = pack_segments(zc, ctx_lens, xt, tgt_lens)
    velocity = pack_segments(torch.zeros_like(zc), ctx_lens, x1 - x0, tgt_lens)[0]
    return dict(x=x, t=t, is_target=is_target, mask=mask), velocity, t[:, None].expand_as(is_target)

def block_inputs(idx, lens, drop, generator):
    """The block-causal layout: [clean window ; the window noised block by block] (block_layout),
    blocks' edges at a random offset, so that a prompt of any length ends where a block starts."""
    B, T = idx.shape
    with autocast:  # the causal encoder: a clean latent reads no token after it
        x1 = (vae.encode(idx, lengths_to_mask(lens, T))[0] - lat_mean) / lat_std
    offset = int(torch.randint(block_len, (1,), generator=generator, device=device))
    pos, is_noisy, group, layout = block_layout(T, block_len, offset, device)
    n_blocks = int(group[-1])
    q = torch.rand(B, n_blocks if t_per_block else 1, generator=generator, device=device)
    t = flow_time(q, t_schedule, t_mean, t_std, time_cdf).expand(B, n_blocks)
    t_noisy = t[:, group[T:] - 1, None]  # (B, T, 1)
    x0 = torch.randn(x1.shape, generator=generator, device=device)
    x = torch.cat([x1 * (~drop)[:, None, None], t_noisy * x1 + (1 - t_noisy) * x0], 1)
    real = lengths_to_mask(lens, T).repeat(1, 2)  # (B, 2T)
    t = torch.cat([torch.ones_like(t[:, :1]), t], 1)  # the clean latents are at t = 1
    inputs = dict(x=x, t=t, is_target=is_noisy & real, mask=layout & real[:, None, :], pos=pos,
                  group=group)
    return inputs, torch.cat([torch.zeros_like(x1), x1 - x0], 1), t[:, group]

def flow_loss(net, batch, generator=None):
    """The training loss, and the loss and t of every target latent (for the loss-by-t log): the
    velocity head's MSE to x1 - x0, or the token head's cross-entropy on the target tokens."""
    idx, lens, ctx_lens, drop = batch
    if block_len:
        inputs, velocity, t = block_inputs(idx, lens, drop, generator)
        tokens = idx.repeat(1, 2)
    else:
        inputs, velocity, t = paper_inputs(idx, lens, ctx_lens, drop, generator)
        tokens = idx[:, :velocity.size(1)]  # the packed layout keeps each window's order
    is_target, B, T = inputs['is_target'], idx.size(0), idx.size(1)
    if self_cond and torch.rand(1, generator=generator, device=device) < 0.5:
        with torch.no_grad(), autocast:
            v = net(**inputs).float()
        inputs['x1_prev'] = (inputs['x'] + (1 - t[..., None]) * v) * is_target[..., None]
    if ar_weight:  # the head at every position, clean and noisy
        inputs['head_at'] = torch.ones_like(is_target)
    with autocast:
        out = net(**inputs, return_logits=head == 'tokens')
    if ar_weight:
        out, out_clean = out.view(B, 2 * T, -1)[is_target], out.view(B, 2 * T, -1)[:, :T - 1]
        next_ok = lengths_to_mask(lens - 1, T - 1)  # clean latent i predicts token i + 1
        ar = F.cross_entropy(out_clean[next_ok].float(), idx[:, 1:][next_ok])
    if head == 'tokens':  # the logits are the target positions', in the order of x[is_target]
        per_latent = F.cross_entropy(out.float(), tokens[is_target], reduction='none')
    else:
        per_latent = ((out[is_target].float() - velocity[is_target]) ** 2).mean(-1)
    loss = per_latent.mean() + (ar_weight * ar if ar_weight else 0.0)
    return loss, per_latent, t[is_target]

@torch.no_grad()
def evaluate():
    """Val loss of the model (and of the EMA), overall and binned by t, on fixed batches, noise."""
    out = {}
    for name, net in [('model', raw_model)] + ([('ema', ema)] if ema is not None else []):
        net.eval()
        losses, ts = [], []
        for k in range(eval_iters):
            batch = get_batch(val_data, np.random.default_rng([seed, 1, k]))
            _, per_latent, t = flow_loss(net, batch, torch.Generator(device).manual_seed(k))
            losses.append(per_latent)
            ts.append(t)
        net.train()
        losses, ts = torch.cat(losses), torch.cat(ts)
        bins = torch.bucketize(ts, torch.tensor(T_BINS[1:-1], device=device))
        out[name] = losses.mean().item()
        out[name + '_by_t'] = [losses[bins == b].mean().item() if (bins == b).any()
                               else float('nan') for b in range(len(T_BINS) - 1)]
    return out

def track_loss_by_t(per_latent, t, rate=0.05):
    """The learned schedule's input: the running mean of the loss in each bin of t. Each rank keeps
    its own (their data is alike)."""
    bins = (t.float() * WARP_BINS).long().clamp(0, WARP_BINS - 1).cpu()
    n = torch.bincount(bins, minlength=WARP_BINS)
    mean = torch.bincount(bins, per_latent.detach().float().cpu(), WARP_BINS) / n.clamp(min=1)
    first, seen = loss_by_t.isnan() & (n > 0), ~loss_by_t.isnan() & (n > 0)
    loss_by_t[first] = mean[first]
    loss_by_t[seen] = loss_by_t[seen].lerp(mean[seen], rate)

def checkpoint(best_val, folder):
    ckpt = dict(kind='dit', model=raw_model.state_dict(),
                ema=ema.state_dict() if ema is not None else None, optimizer=optimizer.state_dict(),
                model_args=model_args, iter_num=iter_num, best_val_loss=best_val, config=config,
                time_warp=dict(cdf=time_cdf, loss_by_t=loss_by_t) if time_cdf is not None else None,
                vae_fingerprint=fingerprint(vae.state_dict()),
                tokenizer_sha256=tokenizer_sha256(meta))
    save_checkpoint(ckpt, os.path.join(folder, 'ckpt.pt'))

# -----------------------------------------------------------------------------
# the training loop (out_dir is made only now: a mistake found above leaves nothing on disk)
if master:
    os.makedirs(out_dir, exist_ok=True)
    n_params = sum(p.numel() for p in raw_model.parameters())
    times = {'logit_normal': f"logit_normal({t_mean}, {t_std})", 'uniform': 'uniform',
             'learned': f"learned, from logit_normal({t_mean}, {t_std})"}[t_schedule]
    print(f"TextDiT: {n_params / 1e6:.2f}M parameters on C={C} latents, t ~ {times}, global batch "
          f"{batch_size} x {gradient_accumulation_steps} micro-steps x {env['world']} ranks")
n_streams = 2 if block_len else 1  # the block-causal layout reads every latent twice
flops = n_streams * flops_per_token(raw_model, n_streams * block_size, n_layer, n_embd)
meter = Meter(flops, peak_flops(env['device_type'], peak_tflops), env['world'])
t_start = time.time()
best_val = float('inf')
T_BINS = [0.0, 0.2, 0.4, 0.6, 0.8, 1.0]  # the val loss is logged by t in these bins
bin_names = ' '.join(f'{a:.1f}-{b:.1f}' for a, b in zip(T_BINS, T_BINS[1:]))
while True:
    lr = get_lr(iter_num, learning_rate, min_lr, warmup_iters, lr_decay_iters or max_iters)
    for group in optimizer.param_groups:
        group['lr'] = lr

    if iter_num % eval_interval == 0 or iter_num == max_iters or iter_num in keep:
        ev = evaluate()
        # never save a broken model over the last good one
        check_finite(ev['model'], 'val loss', iter_num, out_dir)
        if master:
            key = 'ema' if ema is not None else 'model'
            print(f"step {iter_num}: val loss {ev['model']:.4f}"
                  + (f" ema {ev['ema']:.4f}" if ema is not None else "")
                  + f" | {key} by t [{bin_names}]: "
                  + ' '.join(f'{x:.3f}' for x in ev[key + '_by_t'])
                  + (" | learned t quartiles " + ' '.join(
                      f'{x:.2f}' for x in flow_time(torch.tensor([0.25, 0.5, 0.75]), 'learned',
                                                    cdf=time_cdf).tolist())
                     if time_cdf is not None else '')
                  + f" [{(time.time() - t_start) / 60:.1f} min]")
            best_val = min(best_val, ev[key])
            if iter_num > 0:
                checkpoint(best_val, out_dir)
            if iter_num in keep:
                checkpoint(best_val, os.path.join(out_dir, f'step{iter_num}'))
    if iter_num == max_iters:
        break

    loss_sum = tokens = 0
    for micro_step in range(gradient_accumulation_steps):
        if env['ddp']:  # average the gradients across ranks on the last micro-step only
            model.require_backward_grad_sync = micro_step == gradient_accumulation_steps - 1
        place = env['rank'] * gradient_accumulation_steps + micro_step
        rng = micro_batch_rng(seed, place, iter_num)
        batch = get_batch(train_data, rng)
        loss, per_latent, t = flow_loss(model, batch)
        if time_cdf is not None:
            track_loss_by_t(per_latent, t)
        # every micro-batch weighs the same (so does every rank's under DDP), whatever its targets
        (loss / gradient_accumulation_steps).backward()
        loss_sum, tokens = loss_sum + loss.detach(), tokens + batch[1].sum()
    if grad_clip > 0:
        torch.nn.utils.clip_grad_norm_(model.parameters(), grad_clip)
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)
    if ema is not None:  # with a warmup, so a short run's EMA is not dominated by its first steps
        decay = min(ema_decay, (1 + iter_num) / (10 + iter_num))
        with torch.no_grad():
            for pe, p in zip(ema.parameters(), raw_model.parameters()):
                pe.lerp_(p, 1.0 - decay)
    sums = sum_over_ranks(dict(loss=loss_sum, tokens=tokens), env)
    # the mean over the global batch
    lossf = sums['loss'] / (gradient_accumulation_steps * env['world'])
    check_finite(lossf, 'loss', iter_num, out_dir)
    dt, tps, mfu = meter.lap(sums['tokens'])
    iter_num += 1
    if time_cdf is not None and iter_num % warp_interval == 0:
        time_cdf = fit_time_cdf(loss_by_t)
    if iter_num % log_interval == 0 and master:
        print(f"iter {iter_num}: loss {lossf:.4f}, lr {lr:.2e}, {dt * 1000:.0f}ms, {tps:,.0f} tok/s"
              + (f", mfu {mfu:.2%}" if mfu is not None else ""))

if master:
    print(f"done in {(time.time() - t_start) / 60:.2f} min: {out_dir}/ckpt.pt")
    minutes = round((time.time() - t_start) / 60, 2)
    write_summary(out_dir, dict(iters=iter_num, minutes=minutes, final_eval=ev, **meter.summary()))
if env['ddp']:
    torch.distributed.destroy_process_group()
