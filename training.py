"""
What the three trainers (vae_train.py, dit_train.py, ar_train.py) must do identically, so it is
written once: the distributed setup and precision, the optimizer and learning-rate schedule, the
step's loss across ranks, the stop on a blown-up loss, and the run's record. Each trainer keeps its
own loop, nanoGPT style.
"""
import json
import math
import os
import statistics
import sys
import time
from contextlib import nullcontext

import numpy as np
import torch
import torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel as DDP

from checkpoint import unwrap_state_dict

def setup(device, dtype, backend, seed, gradient_accumulation_steps):
    """Detect a torchrun launch, pick the device (configurator.py has checked that this machine has
    it), the DDP backend ('auto': nccl on GPUs, gloo on CPUs) and the autocast context. Returns a
    dict."""
    if gradient_accumulation_steps < 1:
        raise SystemExit("error: gradient_accumulation_steps must be at least 1, got "
                         f"{gradient_accumulation_steps}")
    ddp = int(os.environ.get('RANK', -1)) != -1
    if ddp:
        if backend == 'auto':
            backend = 'nccl' if device.startswith('cuda') else 'gloo'
        if backend == 'nccl' and not device.startswith('cuda'):
            raise SystemExit("error: backend 'nccl' needs device=cuda: use --backend=gloo (or "
                             "auto) on CPUs")
        dist.init_process_group(backend=backend)
        rank, local_rank, world = (int(os.environ[k]) for k in ('RANK', 'LOCAL_RANK', 'WORLD_SIZE'))
        if device.startswith('cuda'):
            device = f'cuda:{local_rank}'
            torch.cuda.set_device(device)
    else:
        rank, local_rank, world = 0, 0, 1
    torch.manual_seed(seed + rank)
    torch.backends.cuda.matmul.allow_tf32 = True
    torch.backends.cudnn.allow_tf32 = True
    device_type = 'cuda' if 'cuda' in device else 'cpu'
    if dtype == 'bfloat16' and not bf16_is_fast(device_type):
        if rank == 0:
            print("note: this CPU has no native bfloat16 (emulated, it is ~70x slower than "
                  "float32): running in float32")
        dtype = 'float32'
    autocast = (nullcontext() if dtype == 'float32' else
                torch.autocast(device_type=device_type, dtype=torch.bfloat16))
    return dict(ddp=ddp, rank=rank, world=world, master=rank == 0, device=device,
                device_type=device_type, autocast=autocast, dtype=dtype)

def bf16_is_fast(device_type):
    """bfloat16 autocast pays on GPUs and on CPUs with native bf16 (AVX512-BF16, AMX); other CPUs
    emulate it."""
    return device_type == 'cuda' or torch.ops.mkldnn._is_mkldnn_bf16_supported()

def configure_optimizer(model, weight_decay, learning_rate, betas, device_type):
    # weight decay on matrices only: biases, norms and gains are left alone, as in nanoGPT
    params = [p for p in model.parameters() if p.requires_grad]
    groups = [{'params': [p for p in params if p.dim() >= 2], 'weight_decay': weight_decay},
              {'params': [p for p in params if p.dim() < 2], 'weight_decay': 0.0}]
    return torch.optim.AdamW(groups, lr=learning_rate, betas=betas, fused=device_type == 'cuda')

def prepare_model(model, ckpt, env, compile, weight_decay, learning_rate, betas):
    """Move the model to the device, restore model and optimizer state when resuming (ckpt), then
    compile (before the DDP wrap, as torch.compile wants). Returns (model to train, raw model,
    optimizer)."""
    model.to(env['device'])
    if ckpt:
        model.load_state_dict(unwrap_state_dict(ckpt['model']))
    optimizer = configure_optimizer(model, weight_decay, learning_rate, betas, env['device_type'])
    if ckpt:
        optimizer.load_state_dict(ckpt['optimizer'])
    raw_model = model
    if compile:
        model = torch.compile(model)
    if env['ddp']:
        gpu = [int(os.environ['LOCAL_RANK'])] if env['device_type'] == 'cuda' else None
        model = DDP(model, device_ids=gpu)
    return model, raw_model, optimizer

def get_lr(it, learning_rate, min_lr, warmup_iters, lr_decay_iters):
    """Linear warmup, then cosine decay to min_lr at lr_decay_iters."""
    if it < warmup_iters:
        return learning_rate * (it + 1) / (warmup_iters + 1)
    if it > lr_decay_iters:
        return min_lr
    ratio = (it - warmup_iters) / max(1, lr_decay_iters - warmup_iters)
    return min_lr + 0.5 * (1.0 + math.cos(math.pi * ratio)) * (learning_rate - min_lr)

def parse_keep_steps(keep_steps, max_iters):
    """'500,1000' -> {500, 1000}: the steps whose checkpoint a trainer also keeps in
    out_dir/step<N>/ckpt.pt, so one run gives a training curve (every step of it on the run's own
    learning-rate schedule)."""
    try:
        steps = {int(s) for s in keep_steps.split(',') if s.strip()}
    except ValueError:
        raise SystemExit("error: keep_steps must be comma-separated step numbers like '500,1000', "
                         f"got {keep_steps!r}")
    if any(not 1 <= s <= max_iters for s in steps):
        raise SystemExit(f"error: keep_steps must lie in 1..max_iters={max_iters}, got "
                         f"{keep_steps!r}")
    return steps

def micro_batch_rng(seed, j, iter_num):
    """Micro-batch j (= rank * accumulation steps + micro-step) of step iter_num draws its data from
    the returned numpy Generator and its noise from torch's generator, seeded here from (seed, j,
    step) alone: a resumed run sees what an uninterrupted one would (no generator state in the
    checkpoint), and 2 ranks x 1 micro-step train exactly as 1 rank x 2 micro-steps."""
    torch.manual_seed(seed + 1000003 * j + iter_num)
    return np.random.default_rng([seed, 0, j, iter_num])

def sum_over_ranks(sums, env):
    """A step's sums over its micro-steps (a dict of scalar tensors) -> floats summed over all
    ranks, with one all_reduce (gloo has no AVG): rank 0 logs the global batch, and every rank stops
    on the same NaN."""
    t = torch.stack([v.double() for v in sums.values()])
    if env['ddp']:
        dist.all_reduce(t)
    return dict(zip(sums, t.tolist()))

def check_finite(value, what, iter_num, out_dir):
    """Stop a run whose loss blew up, before it can save the broken model over the last good
    checkpoint."""
    if not math.isfinite(value):
        raise SystemExit(f"error: {what} is {value} at step {iter_num}: stopping; the last good "
                         f"checkpoint is in {out_dir} (lower learning_rate or use dtype=float32, "
                         "then --init_from=resume)")

class Meter:
    """Throughput and MFU for the iteration log."""

    def __init__(self, flops_per_token, peak, world):
        # tokens are counted over all ranks, so the peak is all the devices'
        self.flops_per_token, self.peak = flops_per_token, None if peak is None else peak * world
        self.t0 = time.time()
        self.step_seconds, self.total_tokens = [], 0

    def lap(self, tokens):
        """Call after each step with the tokens of its global batch; returns (seconds, tokens/s, MFU
        or None)."""
        now = time.time()
        dt, self.t0 = now - self.t0, now
        self.step_seconds.append(dt)
        self.total_tokens += tokens
        tps = tokens / max(dt, 1e-9)
        mfu = None if self.peak is None else tps * self.flops_per_token / self.peak
        return dt, tps, mfu

    def summary(self):
        """Training throughput over the whole run (evaluation excluded), for summary.json."""
        train_s = sum(self.step_seconds)
        return dict(train_seconds=round(train_s, 1),
                    tokens_per_s=round(self.total_tokens / max(train_s, 1e-9)),
                    median_step_ms=round(1000 * statistics.median(self.step_seconds or [0]), 1))

def write_summary(out_dir, summary):
    """The run's final figures and its command, next to its checkpoint (bench/ scripts collect
    them)."""
    summary = dict(summary, command='python ' + ' '.join(sys.argv), torch=torch.__version__,
                   device=torch.cuda.get_device_name() if torch.cuda.is_available()
                   else f'cpu x{os.cpu_count()}')
    with open(os.path.join(out_dir, 'summary.json'), 'w') as f:
        json.dump(summary, f, indent=1)
