"""
What the three training scripts (vae_train.py, dit_train.py, ar_train.py) share: the distributed
setup, precision, optimizer, learning-rate schedule and checkpoint files. Each script keeps its own
loop, nanoGPT style; these are the parts that would otherwise be written three times.
"""
import glob
import hashlib
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

from model import lengths_to_mask

def setup(device, dtype, backend, seed, gradient_accumulation_steps):
    """Detect a torchrun launch, pick the device, the DDP backend ('auto': nccl on GPUs, gloo on CPUs) and the
    autocast context. Returns a dict."""
    if device.startswith('cuda') and not torch.cuda.is_available():
        raise SystemExit("error: device is 'cuda' but no GPU is visible: pass --device=cpu")
    if dtype not in ('float32', 'bfloat16', 'float16'):
        raise SystemExit(f"error: dtype '{dtype}' is not one of float32, bfloat16, float16")
    if gradient_accumulation_steps < 1:
        raise SystemExit(f"error: gradient_accumulation_steps must be at least 1, got {gradient_accumulation_steps}")
    ddp = int(os.environ.get('RANK', -1)) != -1
    if ddp:
        if backend == 'auto':
            backend = 'nccl' if device.startswith('cuda') else 'gloo'
        if backend == 'nccl' and not device.startswith('cuda'):
            raise SystemExit("error: backend 'nccl' needs device=cuda: use --backend=gloo (or auto) on CPUs")
        dist.init_process_group(backend=backend)
        rank, local_rank, world = int(os.environ['RANK']), int(os.environ['LOCAL_RANK']), int(os.environ['WORLD_SIZE'])
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
            print("note: this CPU has no native bfloat16 (emulated, it is ~70x slower than float32): running in float32")
        dtype = 'float32'
    ptdtype = {'float32': torch.float32, 'bfloat16': torch.bfloat16, 'float16': torch.float16}[dtype]
    ctx = nullcontext() if ptdtype == torch.float32 else torch.autocast(device_type=device_type, dtype=ptdtype)
    return dict(ddp=ddp, rank=rank, world=world, master=rank == 0, device=device, device_type=device_type, ctx=ctx, dtype=dtype)

def bf16_is_fast(device_type):
    """bfloat16 autocast pays on GPUs and on CPUs with native bf16 (AVX512-BF16, AMX); other CPUs emulate it."""
    return device_type == 'cuda' or torch.ops.mkldnn._is_mkldnn_bf16_supported()

def configure_optimizer(model, weight_decay, learning_rate, betas, device_type):
    # weight decay on matrices only: biases, norms and gains are left alone, as in nanoGPT
    params = [p for p in model.parameters() if p.requires_grad]
    groups = [{'params': [p for p in params if p.dim() >= 2], 'weight_decay': weight_decay},
              {'params': [p for p in params if p.dim() < 2], 'weight_decay': 0.0}]
    return torch.optim.AdamW(groups, lr=learning_rate, betas=betas, fused=device_type == 'cuda')

def prepare_model(model, ckpt, env, compile, weight_decay, learning_rate, betas):
    """Move the model to the device, restore model and optimizer state when resuming (ckpt), then
    compile (before the DDP wrap, as torch.compile wants). Returns (model to train, raw model, optimizer)."""
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
        model = DDP(model, device_ids=[int(os.environ['LOCAL_RANK'])] if env['device_type'] == 'cuda' else None)
    return model, raw_model, optimizer

def get_lr(it, learning_rate, min_lr, warmup_iters, lr_decay_iters):
    """Linear warmup, then cosine decay to min_lr at lr_decay_iters."""
    if it < warmup_iters:
        return learning_rate * (it + 1) / (warmup_iters + 1)
    if it > lr_decay_iters:
        return min_lr
    ratio = (it - warmup_iters) / max(1, lr_decay_iters - warmup_iters)
    return min_lr + 0.5 * (1.0 + math.cos(math.pi * ratio)) * (learning_rate - min_lr)

def micro_steps(model, env, seed, iter_num, accum):
    """Gradient accumulation: yields, for each of the accum micro-steps of step iter_num, a numpy Generator for
    its batch, after seeding torch for its noise. The global batch's micro-batch j = rank * accum + m depends
    only on (seed, j, iter_num): a resumed run sees what an uninterrupted one would have (no generator state
    in the checkpoint), and 2 ranks x 1 micro-step see what 1 rank x 2 micro-steps does.
    Under DDP gradients are averaged across ranks on the last micro-step only."""
    for m in range(accum):
        j = env['rank'] * accum + m
        if env['ddp']:
            model.require_backward_grad_sync = m == accum - 1
        torch.manual_seed(seed + 1000003 * j + iter_num)
        yield np.random.default_rng([seed, 0, j, iter_num])

def sum_over_ranks(sums, env):
    """A step's sums over its micro-steps (a dict of scalar tensors) -> floats summed over all ranks, with one
    all_reduce (gloo has no AVG): rank 0 logs the global batch, and every rank stops on the same NaN."""
    t = torch.stack([v.double() for v in sums.values()])
    if env['ddp']:
        dist.all_reduce(t)
    return dict(zip(sums, t.tolist()))

def check_finite(value, what, iter_num, out_dir):
    """Stop a run whose loss blew up, before it can save the broken model over the last good checkpoint."""
    if not math.isfinite(value):
        raise SystemExit(f"error: {what} is {value} at step {iter_num}: stopping; the last good checkpoint is in {out_dir} "
                         f"(lower learning_rate or use dtype=float32, then --init_from=resume)")

def plain_config(namespace):
    """The run's config (module globals of plain type), to store in a checkpoint."""
    return {k: v for k, v in namespace.items() if not k.startswith('_') and isinstance(v, (int, float, bool, str))}

def save_checkpoint(obj, path):
    """Write to a temp file in the same folder, fsync it, then rename: a crash mid-save keeps the last good file,
    and a power cut after the rename cannot leave an empty one (the rename may reach the disk before the data).
    Only one process saves to a path (rank 0), so temp files of earlier saves are leftovers of killed ones."""
    folder = os.path.dirname(path) or '.'
    os.makedirs(folder, exist_ok=True)
    for old in glob.glob(glob.escape(path) + '.tmp.*'):
        os.remove(old)
    tmp = f'{path}.tmp.{os.getpid()}'
    with open(tmp, 'wb') as f:
        torch.save(obj, f)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
    fd = os.open(folder, os.O_RDONLY)  # the folder too, so that the rename itself is on disk
    try:
        os.fsync(fd)
    finally:
        os.close(fd)

def load_checkpoint(path, kind, map_location='cpu'):
    """Load a checkpoint written by save_checkpoint, refusing one of another kind ('vae', 'dit', 'gpt')."""
    if not os.path.isfile(path):
        raise SystemExit(f"error: no checkpoint at {path}: train one first, or point to it with the right out_dir/--ckpt")
    try:
        ckpt = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as e:
        raise SystemExit(f"error: cannot read checkpoint {path} ({type(e).__name__}): the file is damaged or not a textldm checkpoint")
    if not isinstance(ckpt, dict) or ckpt.get('kind') != kind:
        found = ckpt.get('kind') if isinstance(ckpt, dict) else None
        raise SystemExit(f"error: {path} is a {found or 'foreign'} checkpoint, but a {kind} checkpoint is needed here")
    return ckpt

def unwrap_state_dict(sd):
    # torch.compile prefixes parameter names with '_orig_mod.'
    return {k.removeprefix('_orig_mod.'): v for k, v in sd.items()}

class Meter:
    """Throughput and MFU for the iteration log."""

    def __init__(self, flops_per_token, peak, world):
        # tokens are counted over all ranks, so the peak is all the devices'
        self.flops_per_token, self.peak = flops_per_token, None if peak is None else peak * world
        self.t0 = time.time()
        self.step_seconds, self.total_tokens = [], 0

    def lap(self, tokens):
        """Call after each step with the tokens of its global batch; returns (seconds, tokens/s, MFU or None)."""
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
        return dict(train_seconds=round(train_s, 1), tokens_per_s=round(self.total_tokens / max(train_s, 1e-9)),
                    median_step_ms=round(1000 * statistics.median(self.step_seconds or [0]), 1))

def write_summary(out_dir, summary):
    """The run's final figures and its command, next to its checkpoint (bench/ scripts collect them)."""
    summary = dict(summary, command='python ' + ' '.join(sys.argv), torch=torch.__version__,
                   device=torch.cuda.get_device_name() if torch.cuda.is_available() else f'cpu x{os.cpu_count()}')
    with open(os.path.join(out_dir, 'summary.json'), 'w') as f:
        json.dump(summary, f, indent=1)

def fingerprint(state_dict):
    """A short hash of a model's weights: a DiT records the VAE it was trained on."""
    h = hashlib.sha256()
    for k in sorted(state_dict):
        h.update(k.encode())
        h.update(state_dict[k].detach().cpu().contiguous().view(torch.uint8).numpy().tobytes())
    return h.hexdigest()[:16]

def load_vae(path, device):
    """The frozen, trained TextVAE of a vae checkpoint, and the checkpoint (with its latent stats)."""
    from model import TextVAE, VAEConfig
    ckpt = load_checkpoint(path, 'vae')
    if 'latent_mean' not in ckpt:
        raise SystemExit(f"error: {path} has no latent statistics (its training did not finish): finish it with --init_from=resume")
    vae = TextVAE(VAEConfig(**ckpt['model_args']))
    vae.load_state_dict(unwrap_state_dict(ckpt['model']))
    vae.repa_proj = None  # a training-only head
    vae.to(device).eval().requires_grad_(False)
    return vae, ckpt

class LDM:
    """A trained TextLDM, ready to sample: tokenizer, frozen VAE, DiT (EMA weights when present) and
    the latent statistics the DiT was trained with."""

    def __init__(self, dit_dir, vae_ckpt=None, device='cpu'):
        from data import get_tokenizer, load_meta, tokenizer_sha256
        from model import TextDiT, DiTConfig
        ckpt = load_checkpoint(os.path.join(dit_dir, 'ckpt.pt'), 'dit')
        cfg = ckpt['config']
        self.vae, vae_ck = load_vae(vae_ckpt or cfg['vae_ckpt'], device)
        if fingerprint(self.vae.state_dict()) != ckpt['vae_fingerprint']:
            raise SystemExit(f"error: the DiT in {dit_dir} was trained on another VAE than {vae_ckpt or cfg['vae_ckpt']}: "
                             f"pass the VAE it was trained on with --vae_ckpt")
        meta = load_meta(cfg['data_dir'])
        if tokenizer_sha256(meta) != vae_ck['tokenizer_sha256']:
            raise SystemExit(f"error: the tokenizer in {cfg['data_dir']} is not the one the VAE was trained with")
        self.enc, self.meta, self.data_dir = get_tokenizer(meta, cfg['data_dir']), meta, cfg['data_dir']
        self.dit = TextDiT(DiTConfig(**ckpt['model_args']))
        self.dit.load_state_dict(unwrap_state_dict(ckpt['ema'] or ckpt['model']))
        self.dit.to(device).eval().requires_grad_(False)
        self.mean, self.std = vae_ck['latent_mean'].to(device), vae_ck['latent_std'].to(device)
        self.schedule, self.t_mean, self.t_std = cfg['t_schedule'], cfg['t_mean'], cfg['t_std']
        self.device, self.block_size, self.vae_block_size = device, self.dit.cfg.block_size, self.vae.cfg.block_size
        # sample in the precision the DiT trained in, where bf16 is native (2x faster on such a CPU too)
        self.bf16 = cfg['dtype'] == 'bfloat16' and bf16_is_fast(torch.device(device).type)

    def autocast(self):
        return torch.autocast(torch.device(self.device).type, torch.bfloat16, enabled=self.bf16)

    @torch.no_grad()
    def encode(self, idx, lens):
        """Token ids (B, T) with lengths (B,) -> normalised latent means (B, T, C)."""
        mask = lengths_to_mask(lens, idx.size(1))
        return (self.vae.encode(idx, mask)[0] - self.mean) / self.std

    @torch.no_grad()
    def decode(self, z, lens):
        """Normalised latents (B, T, C) with lengths (B,) -> token ids (B, T), the most likely at each position."""
        return self.vae.decode(z * self.std + self.mean, lengths_to_mask(lens, z.size(1))).argmax(-1)

def load_gpt(out_dir, device):
    """The trained GPT of out_dir/ckpt.pt, ready to sample, and its tokenizer."""
    from data import get_tokenizer, load_meta, tokenizer_sha256
    from model import GPT, GPTConfig
    ckpt = load_checkpoint(os.path.join(out_dir, 'ckpt.pt'), 'gpt')
    data_dir = ckpt['config']['data_dir']
    meta = load_meta(data_dir)
    if tokenizer_sha256(meta) != ckpt['tokenizer_sha256']:
        raise SystemExit(f"error: the tokenizer in {data_dir} is not the one the GPT in {out_dir} was trained with")
    model = GPT(GPTConfig(**ckpt['model_args']))
    model.load_state_dict(unwrap_state_dict(ckpt['model']))
    model.to(device).eval().requires_grad_(False)
    return model, get_tokenizer(meta, data_dir)

@torch.no_grad()
def gpt_generate(model, enc, prompts, lengths, temperature=1.0, top_k=None, top_p=None, greedy=False, seed=0):
    """Continue each prompt (a non-empty string) by `lengths` tokens (an int, or one per prompt) -> list of
    strings. GPT.generate takes prompts of one length, so prompts of equal token length are sampled together
    (shortest first, from one generator): a sample depends on the seed and the whole list of prompts.
    A prompt longer than the context left beside its new tokens keeps its end."""
    lengths = [lengths] * len(prompts) if isinstance(lengths, int) else list(lengths)
    block_size, device = model.cfg.block_size, model.wte.weight.device
    if not all(1 <= n < block_size for n in lengths):
        raise SystemExit(f"error: every length must be between 1 and {block_size - 1} tokens for this GPT")
    ids = [enc.encode_ordinary(p) for p in prompts]
    if not all(ids):  # documents are not separated by <|endoftext|> in training: there is no start token
        raise SystemExit("error: the GPT needs a non-empty prompt")
    if any(len(i) + n > block_size for i, n in zip(ids, lengths)):
        print("warning: a prompt is longer than the context this GPT has beside the new tokens: keeping its end")
        ids = [i[max(0, len(i) - (block_size - n)):] for i, n in zip(ids, lengths)]
    groups = {}
    for b, i in enumerate(ids):
        groups.setdefault(len(i), []).append(b)
    g = torch.Generator(device=device).manual_seed(seed)
    out = [None] * len(prompts)
    for T, rows in sorted(groups.items()):
        idx = torch.tensor([ids[b] for b in rows], dtype=torch.long, device=device)
        new = model.generate(idx, max(lengths[b] for b in rows), temperature, top_k, top_p, greedy, g)[:, T:]
        for b, row in zip(rows, new):
            out[b] = enc.decode(row[:lengths[b]].tolist())
    return out
