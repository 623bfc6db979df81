"""
Stage 1: train the TextVAE, L = CE + beta * KL + lambda * REPA.

    python vae_train.py config/vae_tiny.py                       # the embedded default, CPU
    torchrun --nproc_per_node=8 vae_train.py config/vae_350m.py  # the paper's setup

Every token gets one latent of C channels; the decoder reconstructs all tokens at once. REPA aligns
the encoder with a frozen pretrained LM's hidden states (3rd-to-last layer), which is what makes the
latents good for diffusion. At the end the per-channel latent mean/std over training data is stored
in the checkpoint: the DiT normalises latents with it.
"""
import os
import time

import numpy as np
import torch
import torch.nn.functional as F

from checkpoint import save_checkpoint, load_checkpoint
from data import TokenData, load_meta, get_tokenizer, tokenizer_sha256
from model import (TextVAE, VAEConfig, gaussian_kl, lengths_to_mask, masked_mean, flops_per_token,
                   peak_flops)
from training import (setup, prepare_model, get_lr, micro_batch_rng, sum_over_ranks, check_finite,
                      Meter, write_summary)

# -----------------------------------------------------------------------------
# default config: the embedded dataset, sized for a 2-core CPU
out_dir = 'out/vae_tiny'
data_dir = 'data/embedded'
init_from = 'scratch'  # 'scratch' or 'resume' (from out_dir/ckpt.pt)
eval_interval = 100
eval_iters = 10
log_interval = 10
max_iters = 350
# data: random truncation, window lengths uniform in [min_len, block_size]
batch_size = 32  # per micro-step; x gradient_accumulation_steps x GPUs = the global batch
gradient_accumulation_steps = 1
block_size = 128
min_len = 8
# model
n_embd = 256
n_head = 4
n_enc_layer = 2
n_dec_layer = 2
latent_channels = 16
causal_encoder = False  # latents that read no later token, for the block-causal DiT (dit_train.py)
dropout = 0.0
# loss
beta_kl = 1e-3           # weight of the KL, in nats per token summed over channels
dec_noise = 0.0          # decoder-input noise up to this many latent stds: DiT samples decode well
repa_weight = 1.0        # lambda; 0 turns REPA off
repa_teacher = 'minilm'  # 'minilm' (offline), a local folder, or a hub id like 'Qwen/Qwen3-1.7B'
repa_layer = -3          # index into the teacher's hidden states: -3 is the 3rd-to-last layer
# optimizer
learning_rate = 2e-3
min_lr = 2e-4
weight_decay = 0.1
beta1 = 0.9
beta2 = 0.99
grad_clip = 1.0
warmup_iters = 50
lr_decay_iters = 0  # cosine decay to min_lr by this step; 0 = max_iters
# system
device = 'cpu'
dtype = 'bfloat16'
compile = False
backend = 'auto'  # of DDP under torchrun: 'auto' is nccl on GPUs, gloo on CPUs
seed = 1337
peak_tflops = 0.0  # the device's peak for MFU where it cannot be looked up (CPUs)
stats_batches = 20  # training batches used for the latent mean/std stored for the DiT
# -----------------------------------------------------------------------------
exec(open('configurator.py').read())  # overrides from the command line or a config file
config = {k: v for k, v in globals().items()
          if not k.startswith('_') and isinstance(v, (int, float, bool, str))}
# -----------------------------------------------------------------------------

if not 1 <= min_len <= block_size:
    raise SystemExit(f"error: need 1 <= min_len <= block_size, "
                     f"got min_len={min_len}, block_size={block_size}")
env = setup(device, dtype, backend, seed, gradient_accumulation_steps)
device, autocast, master = env['device'], env['autocast'], env['master']
meta = load_meta(data_dir)
train_data, val_data = TokenData(data_dir, 'train'), TokenData(data_dir, 'val')
enc = get_tokenizer(meta, data_dir)
teacher = None
if repa_weight > 0:
    from teacher import Teacher
    # the paper's case (Qwen3 tokens, Qwen3 teacher) needs no alignment; the teacher checks this
    same = meta['tokenizer']['name'] == 'qwen3' and 'qwen3' in repa_teacher.lower()
    teacher = Teacher(enc, repa_teacher, repa_layer, same_tokenizer=same,
                      bf16=env['dtype'] == 'bfloat16', device=device)

model_args = dict(vocab_size=meta['vocab_size'], block_size=block_size, n_embd=n_embd,
                  n_head=n_head, n_enc_layer=n_enc_layer, n_dec_layer=n_dec_layer,
                  latent_channels=latent_channels, repa_dim=teacher.width if teacher else 0,
                  causal_encoder=causal_encoder, dropout=dropout)
iter_num, ckpt = 0, None
if init_from == 'resume':
    ckpt = load_checkpoint(os.path.join(out_dir, 'ckpt.pt'), 'vae')
    if ckpt['tokenizer_sha256'] != tokenizer_sha256(meta):
        raise SystemExit(f"error: {out_dir}/ckpt.pt was trained with another tokenizer "
                         f"than the one in {data_dir}")
    if teacher is not None and ckpt['model_args']['repa_dim'] != teacher.width:
        raise SystemExit(f"error: {out_dir}/ckpt.pt was trained with REPA features of width "
                         f"{ckpt['model_args']['repa_dim']} (0: REPA off), but teacher "
                         f"'{repa_teacher}' has {teacher.width}: resume with its teacher, "
                         f"or repa_weight=0")
    model_args = ckpt['model_args']
    iter_num = ckpt['iter_num']
    if iter_num > max_iters:  # the loop stops at max_iters exactly: past it, it would run forever
        raise SystemExit(f"error: {out_dir}/ckpt.pt is at step {iter_num}, "
                         f"past max_iters={max_iters}: raise max_iters to train on")
model, raw_model, optimizer = prepare_model(TextVAE(VAEConfig(**model_args)), ckpt, env, compile,
                                            weight_decay, learning_rate, (beta1, beta2))
ckpt = None  # free memory

def get_batch(data, rng):
    # random truncation: one length per batch (rows of one length waste no compute on padding; only
    # documents shorter than it give shorter rows)
    idx, lens = data.sample(batch_size, int(rng.integers(min_len, block_size + 1)), rng)
    return idx.to(device), lens.to(device)

def losses(idx, lens, train=True):
    """All the VAE's losses and diagnostics on one batch."""
    mask = lengths_to_mask(lens, idx.size(1))
    with autocast:
        logits, mu, logvar, repa = model(idx, mask, sample=True,
                                         noise_std=dec_noise if train else 0.0)
    ce = F.cross_entropy(logits.float().flatten(0, 1), idx.flatten(), reduction='none').view_as(idx)
    out = dict(ce=masked_mean(ce, mask), kl=masked_mean(gaussian_kl(mu, logvar), mask))
    out['acc_z'] = masked_mean((logits.argmax(-1) == idx).float(), mask)
    out['loss'] = out['ce'] + beta_kl * out['kl']
    if teacher is not None:
        target = teacher(idx, lens)  # (B, T, width), no grad: the stop-gradient of REPA
        cos = F.cosine_similarity(repa.float(), target, dim=-1)
        out['repa_cos'] = masked_mean(cos, mask)
        out['loss'] = out['loss'] - repa_weight * out['repa_cos']
    out['sigma'] = masked_mean(torch.exp(0.5 * logvar), mask)
    out['mu_std'] = mu[mask].std()
    return out

@torch.no_grad()
def evaluate():
    """Mean of every loss over eval_iters val batches, plus reconstruction accuracy from mu."""
    model.eval()
    sums = {}
    for k in range(eval_iters):
        idx, lens = get_batch(val_data, np.random.default_rng([seed, 1, k]))  # fixed val batches
        out = losses(idx, lens, train=False)
        mask = lengths_to_mask(lens, idx.size(1))
        with autocast:
            logits = raw_model.decode(raw_model.encode(idx, mask)[0], mask)
        out['acc_mu'] = masked_mean((logits.argmax(-1) == idx).float(), mask)
        for k, v in out.items():
            sums[k] = sums.get(k, 0.0) + v.item() / eval_iters
    model.train()
    return sums

@torch.no_grad()
def latent_stats():
    """Per-channel mean and std of sampled training latents: what the DiT normalises with."""
    torch.manual_seed(seed)  # the same statistics whatever the run's history (resumed, distributed)
    zs = []
    for k in range(stats_batches):
        idx, lens = get_batch(train_data, np.random.default_rng([seed, 2, k]))
        mask = lengths_to_mask(lens, idx.size(1))
        with autocast:
            mu, logvar, _ = raw_model.encode(idx, mask)
        z = mu + torch.exp(0.5 * logvar) * torch.randn_like(mu)
        zs.append(z[mask].float())
    z = torch.cat(zs)
    return z.mean(0).cpu(), z.std(0).cpu()

def checkpoint(best_val, final=False):
    ckpt = dict(kind='vae', model=raw_model.state_dict(), optimizer=optimizer.state_dict(),
                model_args=model_args, iter_num=iter_num, best_val_loss=best_val, config=config,
                tokenizer_sha256=tokenizer_sha256(meta))
    if final:
        ckpt['latent_mean'], ckpt['latent_std'] = latent_stats()
    save_checkpoint(ckpt, os.path.join(out_dir, 'ckpt.pt'))

# -----------------------------------------------------------------------------
# the training loop (out_dir is made only now: a mistake found above leaves nothing on disk)
if master:
    os.makedirs(out_dir, exist_ok=True)
    print(f"TextVAE: {sum(p.numel() for p in raw_model.parameters()) / 1e6:.2f}M parameters, "
          f"C={latent_channels}, "
          f"REPA {'off' if teacher is None else f'{repa_teacher} layer {repa_layer}'}, "
          f"global batch {batch_size} x {gradient_accumulation_steps} micro-steps "
          f"x {env['world']} ranks")
meter = Meter(flops_per_token(raw_model, block_size, n_enc_layer + n_dec_layer, n_embd),
              peak_flops(env['device_type'], peak_tflops), env['world'])
t_start = time.time()
best_val = float('inf')
while True:
    lr = get_lr(iter_num, learning_rate, min_lr, warmup_iters, lr_decay_iters or max_iters)
    for group in optimizer.param_groups:
        group['lr'] = lr

    if iter_num % eval_interval == 0 or iter_num == max_iters:
        ev = evaluate()
        check_finite(ev['loss'], 'val loss', iter_num, out_dir)  # never overwrite a good ckpt
        if master:
            print(f"step {iter_num}: val acc(mu) {ev['acc_mu']:.4%} acc(z) {ev['acc_z']:.4%} "
                  f"ce {ev['ce']:.4f} kl {ev['kl']:.2f} "
                  f"repa_cos {ev.get('repa_cos', float('nan')):.3f} sigma {ev['sigma']:.3f} "
                  f"mu_std {ev['mu_std']:.3f} [{(time.time() - t_start) / 60:.1f} min]")
            best_val = min(best_val, ev['loss'])
            if iter_num > 0:
                checkpoint(best_val, final=iter_num == max_iters)
    if iter_num == max_iters:
        break

    sums = {}
    for micro_step in range(gradient_accumulation_steps):
        if env['ddp']:  # average the gradients across ranks on the last micro-step only
            model.require_backward_grad_sync = micro_step == gradient_accumulation_steps - 1
        rng = micro_batch_rng(seed, env['rank'] * gradient_accumulation_steps + micro_step,
                              iter_num)
        idx, lens = get_batch(train_data, rng)
        out = losses(idx, lens)
        # every micro-batch (every rank's, under DDP) weighs the same, whatever its number of tokens
        (out['loss'] / gradient_accumulation_steps).backward()
        for k, v in dict(out, tokens=lens.sum()).items():
            sums[k] = sums.get(k, 0) + v.detach()
    if grad_clip > 0:
        torch.nn.utils.clip_grad_norm_(model.parameters(), grad_clip)
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)
    sums = sum_over_ranks(sums, env)
    # means over the global batch
    avg = {k: v / (gradient_accumulation_steps * env['world']) for k, v in sums.items()}
    loss = avg['loss']
    check_finite(loss, 'loss', iter_num, out_dir)
    dt, tps, mfu = meter.lap(sums['tokens'])
    iter_num += 1
    if iter_num % log_interval == 0 and master:
        print(f"iter {iter_num}: loss {loss:.4f} ce {avg['ce']:.4f} kl {avg['kl']:.2f} "
              f"acc {avg['acc_z']:.3f} repa {avg.get('repa_cos', float('nan')):.3f} "
              f"sigma {avg['sigma']:.3f}, {dt * 1000:.0f}ms, {tps:,.0f} tok/s"
              + (f", mfu {mfu:.2%}" if mfu is not None else ""))

if master:
    print(f"done in {(time.time() - t_start) / 60:.2f} min: {out_dir}/ckpt.pt")
    write_summary(out_dir, dict(iters=iter_num, minutes=round((time.time() - t_start) / 60, 2),
                                final_eval=ev, **meter.summary()))
if env['ddp']:
    torch.distributed.destroy_process_group()
