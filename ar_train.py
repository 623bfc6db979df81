"""
The autoregressive baseline: a GPT trained with next-token cross-entropy under the DiT's settings.

    python ar_train.py config/gpt_tiny.py                         # the embedded default, CPU
    torchrun --nproc_per_node=8 ar_train.py config/gpt_medium.py  # the paper's GPT-2-medium

For a fair comparison everything but the objective is the DiT's: the same data and tokenizer,
windows of one length per batch uniform in [min_len, block_size], the same batch size, optimizer,
learning-rate schedule and precision. A window of L tokens gives L - 1 next-token predictions; rows
shorter than the batch's length (short documents) are padded, and the padding is left out of the
loss.
"""
import os
import time

import numpy as np
import torch

from checkpoint import save_checkpoint, load_checkpoint
from data import TokenData, load_meta, tokenizer_sha256
from model import GPT, GPTConfig, lengths_to_mask, flops_per_token, peak_flops
from training import (setup, prepare_model, get_lr, parse_keep_steps, micro_batch_rng,
                      sum_over_ranks, check_finite, Meter, write_summary)

# -----------------------------------------------------------------------------
# default config: the embedded dataset, sized for a 2-core CPU (data and optimizer as in
# dit_train.py)
out_dir = 'out/gpt_tiny'
data_dir = 'data/embedded'
init_from = 'scratch'  # 'scratch' or 'resume' (from out_dir/ckpt.pt)
eval_interval = 250
eval_iters = 10
log_interval = 10
max_iters = 500
# also keep these steps' checkpoints in out_dir/step<N>/ (a curve from one run), e.g. '500,1000'
keep_steps = ''
# data: window length uniform in [min_len, block_size], one length per batch
# per micro-step: the global batch is batch_size x gradient_accumulation_steps x GPUs
batch_size = 32
gradient_accumulation_steps = 1
block_size = 128
min_len = 16
# model
n_embd = 256
n_head = 4
n_layer = 6
dropout = 0.0
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
peak_tflops = 0.0  # the device's peak for MFU where it cannot be looked up (CPUs)
# -----------------------------------------------------------------------------
exec(open('configurator.py').read())  # overrides from the command line or a config file
config = {k: v for k, v in globals().items() if not k.startswith('_')
          and isinstance(v, (int, float, bool, str))}
# -----------------------------------------------------------------------------

if not 2 <= min_len <= block_size:
    raise SystemExit("error: need 2 <= min_len <= block_size (a window of L tokens gives L - 1 "
                     f"predictions), got min_len={min_len}, block_size={block_size}")
keep = parse_keep_steps(keep_steps, max_iters)
env = setup(device, dtype, backend, seed, gradient_accumulation_steps)
device, autocast, master = env['device'], env['autocast'], env['master']
meta = load_meta(data_dir)
train_data, val_data = TokenData(data_dir, 'train'), TokenData(data_dir, 'val')

model_args = dict(vocab_size=meta['vocab_size'], block_size=block_size, n_embd=n_embd,
                  n_head=n_head, n_layer=n_layer, dropout=dropout)
iter_num, ckpt = 0, None
if init_from == 'resume':
    ckpt = load_checkpoint(os.path.join(out_dir, 'ckpt.pt'), 'gpt')
    if ckpt['tokenizer_sha256'] != tokenizer_sha256(meta):
        raise SystemExit(f"error: {out_dir}/ckpt.pt was trained with another tokenizer than the "
                         f"one in {data_dir}")
    model_args, iter_num = ckpt['model_args'], ckpt['iter_num']
    # the loop stops when iter_num reaches max_iters: past it, it would run forever
    if iter_num > max_iters:
        raise SystemExit(f"error: {out_dir}/ckpt.pt is at step {iter_num}, past "
                         f"max_iters={max_iters}: raise max_iters to train on")
model, raw_model, optimizer = prepare_model(GPT(GPTConfig(**model_args)), ckpt, env, compile,
                                            weight_decay, learning_rate, (beta1, beta2))
ckpt = None  # free memory

def get_batch(data, rng):
    """Inputs x and targets y (B, L - 1) of windows of one length L (only documents shorter than L
    give shorter rows); y is -1 past a row's end, which the loss ignores. Also the window
    lengths."""
    idx, lens = data.sample(batch_size, int(rng.integers(min_len, block_size + 1)), rng)
    y = idx[:, 1:].masked_fill(~lengths_to_mask(lens - 1, idx.size(1) - 1), -1)
    return idx[:, :-1].to(device), y.to(device), lens.to(device)

@torch.no_grad()
def evaluate():
    """Mean val cross-entropy over eval_iters fixed batches."""
    model.eval()
    total = 0.0
    for k in range(eval_iters):
        # the same val batches every time
        x, y, _ = get_batch(val_data, np.random.default_rng([seed, 1, k]))
        with autocast:
            total += raw_model(x, y)[1].item() / eval_iters
    model.train()
    return total

def checkpoint(best_val, folder):
    save_checkpoint(dict(kind='gpt', model=raw_model.state_dict(), optimizer=optimizer.state_dict(),
                         model_args=model_args, iter_num=iter_num, best_val_loss=best_val,
                         config=config,
                         tokenizer_sha256=tokenizer_sha256(meta)), os.path.join(folder, 'ckpt.pt'))

# -----------------------------------------------------------------------------
# the training loop (out_dir is made only now: a mistake found above leaves nothing on disk)
if master:
    os.makedirs(out_dir, exist_ok=True)
    print(f"GPT: {sum(p.numel() for p in raw_model.parameters()) / 1e6:.2f}M parameters, vocab "
          f"{meta['vocab_size']}, global batch {batch_size} x {gradient_accumulation_steps} "
          f"micro-steps x {env['world']} ranks")
meter = Meter(flops_per_token(raw_model, block_size, n_layer, n_embd),
              peak_flops(env['device_type'], peak_tflops), env['world'])
t_start = time.time()
best_val = float('inf')
while True:
    lr = get_lr(iter_num, learning_rate, min_lr, warmup_iters, lr_decay_iters or max_iters)
    for group in optimizer.param_groups:
        group['lr'] = lr

    if iter_num % eval_interval == 0 or iter_num == max_iters or iter_num in keep:
        val_loss = evaluate()
        # never save a broken model over the last good one
        check_finite(val_loss, 'val loss', iter_num, out_dir)
        if master:
            print(f"step {iter_num}: val loss {val_loss:.4f} [{(time.time() - t_start) / 60:.1f} "
                  "min]")
            best_val = min(best_val, val_loss)
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
        j = env['rank'] * gradient_accumulation_steps + micro_step
        rng = micro_batch_rng(seed, j, iter_num)
        x, y, lens = get_batch(train_data, rng)
        with autocast:
            _, loss = model(x, y)
        # every micro-batch weighs the same (so does every rank's under DDP), whatever its number of
        # targets
        (loss / gradient_accumulation_steps).backward()
        loss_sum, tokens = loss_sum + loss.detach(), tokens + lens.sum()
    if grad_clip > 0:
        torch.nn.utils.clip_grad_norm_(model.parameters(), grad_clip)
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)
    sums = sum_over_ranks(dict(loss=loss_sum, tokens=tokens), env)
    # the mean over the global batch
    lossf = sums['loss'] / (gradient_accumulation_steps * env['world'])
    check_finite(lossf, 'loss', iter_num, out_dir)
    dt, tps, mfu = meter.lap(sums['tokens'])
    iter_num += 1
    if iter_num % log_interval == 0 and master:
        print(f"iter {iter_num}: loss {lossf:.4f}, lr {lr:.2e}, {dt * 1000:.0f}ms, {tps:,.0f} tok/s"
              + (f", mfu {mfu:.2%}" if mfu is not None else ""))

if master:
    print(f"done in {(time.time() - t_start) / 60:.2f} min: {out_dir}/ckpt.pt")
    write_summary(out_dir, dict(iters=iter_num, minutes=round((time.time() - t_start) / 60, 2),
                                final_eval=dict(val_loss=val_loss), **meter.summary()))
if env['ddp']:
    torch.distributed.destroy_process_group()
