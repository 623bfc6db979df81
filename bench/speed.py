"""
Speed of TextLDM against the GPT baseline, measured in one run so that the ratios are fair. The
models are untrained (timing does not depend on the weights); each phase runs in a fresh process, so
that its peak memory is its own.

  throughput.json  training tokens/s (median step after warmup) at equal width and number of
                   blocks: GPT n_layer, DiT n_layer, VAE n_layer/2 encoder + n_layer/2 decoder, on
                   one batch of real windows; the VAE with the frozen REPA teacher's forward and
                   without it, the DiT alone and with the frozen VAE's encode
  latency.json     seconds to continue a prompt at batch 1 for each length, TextLDM (VAE encode,
                   sample.py's default sampler with batched CFG, VAE decode) vs the GPT with its KV
                   cache made as deep as needed to match the TextLDM's parameters (VAE + velocity
                   DiT), in float32 and in bf16, the faster compared; and samples/s of
                   sample_batch_length new tokens at each of sample_batches, for the TextLDM of each
                   DiT head with sample.py's solver and guidance interval at each k in ks, and with
                   the paper's sampler (Euler, guided at every step, paper_steps), and for the
                   block-causal token-head DiT of each of block_lens (sample.py's sampler of a
                   block at each of block_steps, block by block through its KV cache)
                   (sampling.md: the table)
  memory           on CPUs the phase's peak resident set (ru_maxrss, torch included; 'own': less
                   the RSS before the phase), on GPUs torch.cuda.max_memory_allocated

    python bench/speed.py                               # config/*_tiny.py's sizes: ~12 min, 2 cores
    python bench/speed.py --device=cuda --compile=True  # compile applies to the training steps
    python bench/speed.py --lengths=64,256 --repeats=5  # a single length: --lengths=64
"""
import copy, json, os, platform, resource, statistics, subprocess, sys, time
from types import SimpleNamespace

import numpy as np
import torch
import torch.nn.functional as F

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
from data import TokenData, load_meta, get_tokenizer
from model import (TextVAE, VAEConfig, TextDiT, DiTConfig, GPT, GPTConfig, encode_segments,
                   pack_segments, take_segment, lengths_to_mask, masked_mean, gaussian_kl,
                   num_params)
from model import flow_time
from sample import (sample_blocks, sample_latents, sampling_autocast, BLOCK_CFG_UNTIL, BLOCK_STEPS,
                    CFG_UNTIL, SOLVER, STEPS)
from training import setup, prepare_model

data_dir, out_dir = 'data/embedded', 'bench/results'
device, dtype, compile = 'cpu', 'bfloat16', False
# as config/*_tiny.py
batch_size, block_size, n_embd, n_head, n_layer, latent_channels = 32, 128, 256, 4, 6, 64
repa_teacher = 'minilm'
warmup, iters = 3, 10                       # training steps: untimed, then timed
lengths, prompt_len, cfg = (64, 128, 256, 512, 1024), 16, 2.0
# sample.py's default sampler at `steps`, the paper's (Euler, always guided)
steps, paper_steps = STEPS, 50
# samples/s: sample.py's solver at each k; the default head first
ks, heads = (4, 8, 16, 32, 50), ('tokens', 'velocity')
# and the block-causal token-head DiT (a causal VAE) of each block length, with sample.py's sampler
block_lens = (2, 1)
block_steps = (BLOCK_STEPS,)  # the solver's steps a block
# sampling runs per length: up to repeats, fewer once budget_s is spent
repeats, budget_s = 3, 20.0
sample_batches, sample_batch_length = (1, 8, 32), 128
quick = False                               # tiny sizes, for the test
phase = ''                                  # internal: the phase a child process measures
exec(open(os.path.join(ROOT, 'configurator.py')).read())
if quick:  # tiny sizes, but for what the command line sets
    given = {arg[2:].split('=')[0] for arg in sys.argv[1:]}
    tiny = dict(batch_size=4, block_size=32, n_embd=64, n_head=2, n_layer=2, warmup=1, iters=2,
                lengths=(8, 16), prompt_len=4, steps=2, ks=(2, 3), paper_steps=3, repeats=1,
                sample_batches=(1, 2), sample_batch_length=8)
    globals().update({k: v for k, v in tiny.items() if k not in given})

SAMPLERS = ([(SOLVER, CFG_UNTIL, k) for k in dict.fromkeys((steps, *ks))]
            + [('euler', 1.0, paper_steps)])
env = setup(device, dtype, 'auto', 1337, 1)
dev, autocast, gpu = env['device'], env['autocast'], env['device_type'] == 'cuda'
meta = load_meta(data_dir)
V, n_enc = meta['vocab_size'], n_layer // 2
batch = TokenData(data_dir, 'train').sample(batch_size, block_size, np.random.default_rng(0))
idx, lens = (t.to(dev) for t in batch)
mask = lengths_to_mask(lens, idx.size(1))

def timed(fn, n_warmup, n, budget=float('inf')):
    """Median seconds of fn() over up to n runs (at least one; no more once budget seconds are
    spent), and the runs."""
    for _ in range(n_warmup):
        fn()
    times = []
    while not times or (len(times) < n and sum(times) < budget):
        t0 = time.perf_counter()
        fn()
        if gpu:
            torch.cuda.synchronize()
        times.append(time.perf_counter() - t0)
    return statistics.median(times), len(times)

def make_vae(T, repa_dim=0, causal_encoder=False):
    return TextVAE(VAEConfig(V, T, n_embd, n_head, n_enc, n_layer - n_enc, latent_channels,
                             repa_dim, causal_encoder))

def train_step(name, model, loss_fn, ema=False):
    """Training steps as the scripts take them (autocast, backward, clip, AdamW, the DiT's EMA) ->
    {name: figures}."""
    model, raw, opt = prepare_model(model, None, env, compile, 0.0, 1e-3, (0.9, 0.99))
    shadow = copy.deepcopy(raw).requires_grad_(False) if ema else None
    def step():
        with autocast:
            loss = loss_fn(model)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        opt.zero_grad(set_to_none=True)
        if shadow is not None:
            with torch.no_grad():
                for pe, p in zip(shadow.parameters(), raw.parameters()):
                    pe.lerp_(p, 1.0 - 0.999)
    sec, _ = timed(step, warmup, iters)
    r = dict(tokens_per_s=round(lens.sum().item() / sec), step_ms=round(1000 * sec, 1),
             params=num_params(raw, False))
    print(f"{name}: {r['tokens_per_s']:,} tok/s, {r['step_ms']} ms/step, "
          f"{r['params'] / 1e6:.2f}M params", flush=True)
    return {name: r}

def vae_phase():
    from teacher import Teacher
    # as vae_train.py
    same = meta['tokenizer']['name'] == 'qwen3' and 'qwen3' in repa_teacher.lower()
    teacher = Teacher(get_tokenizer(meta, data_dir), repa_teacher, -3, same,
                      bf16=dtype == 'bfloat16', device=dev)
    # vae_train.py's loss: CE + beta KL - cosine to the teacher's features (no grad)
    def loss_fn(teacher):
        def loss(model):
            logits, mu, logvar, repa = model(idx, mask)
            ce = F.cross_entropy(logits.float().flatten(0, 1), idx.flatten(),
                                 reduction='none').view_as(idx)
            out = masked_mean(ce, mask) + 1e-3 * masked_mean(gaussian_kl(mu, logvar), mask)
            if teacher is None:
                return out
            return out - masked_mean(F.cosine_similarity(repa.float(), teacher(idx, lens), dim=-1),
                                     mask)
        return loss
    return {**train_step('vae_with_teacher', make_vae(block_size, teacher.width), loss_fn(teacher)),
            **train_step('vae_without_teacher', make_vae(block_size), loss_fn(None))}

def dit_phase():
    vae = make_vae(block_size).to(dev).eval().requires_grad_(False)
    # dit_train.py's context/target split and CFG dropout
    rng, L = np.random.default_rng(1), lens.cpu().numpy()
    ctx_frac = rng.uniform(0.25, 0.75, batch_size)
    ctx_lens = torch.from_numpy(np.clip(np.floor(ctx_frac * L), 1, L - 1).astype(np.int64)).to(dev)
    keep = torch.from_numpy(rng.random(batch_size) >= 0.1).to(dev)[:, None, None]
    # the frozen VAE, context and target apart
    encode = lambda: encode_segments(vae, idx, lens, ctx_lens)
    def loss_fn(latents):  # dit_train.py's flow_loss (less the latent normalisation: elementwise)
        def loss(model):
            zc, x1, tgt_lens = latents or encode()
            t = flow_time(torch.rand(batch_size, device=dev))[:, None, None]
            x0 = torch.randn_like(x1)
            x, is_target, m = pack_segments(zc * keep, ctx_lens, t * x1 + (1 - t) * x0, tgt_lens)
            v = take_segment(model(x, t.flatten(), is_target, m).float(), ctx_lens, x1.size(1))
            return masked_mean((v - (x1 - x0)) ** 2, lengths_to_mask(tgt_lens, x1.size(1)))
        return loss
    with autocast:
        latents = encode()
    dit = lambda: TextDiT(DiTConfig(latent_channels, block_size, n_embd, n_head, n_layer))
    return {**train_step('dit_body', dit(), loss_fn(latents), ema=True),
            **train_step('dit_with_vae_encode', dit(), loss_fn(None), ema=True)}

def gpt_phase():
    # as ar_train.py: L - 1 predictions
    y = idx[:, 1:].masked_fill(~lengths_to_mask(lens - 1, idx.size(1) - 1), -1)
    return train_step('gpt', GPT(GPTConfig(V, block_size, n_embd, n_head, n_layer)),
                      lambda model: model(idx[:, :-1], y)[1])

def sampling_phase(which):
    """Seconds at batch 1 for each length (the TextLDM: the default sampler of its first head), then
    samples/s at each of sample_batches, by the TextLDM (VAE + DiT of each head, with each of
    SAMPLERS) or by the GPT whose depth matches the TextLDM's parameters (VAE + velocity DiT,
    counted on the 'meta' device) in float32 and under bf16 autocast (its faster one is the one
    compared); the memory after batch 1 too."""
    T = max(lengths + (sample_batch_length,)) + prompt_len
    make_dit = lambda head: TextDiT(DiTConfig(latent_channels, T, n_embd, n_head, n_layer,
                                              V if head == 'tokens' else 0))
    gpt = lambda depth: GPT(GPTConfig(V, T, n_embd, n_head, depth))
    with torch.device('meta'):
        p_vae, p_dit, p1, p2 = [num_params(m, False)
                                for m in (make_vae(T), make_dit('velocity'), gpt(1), gpt(2))]
    depth = max(1, round(1 + (p_vae + p_dit - p1) / (p2 - p1)))
    ready = lambda m: m.to(dev).eval().requires_grad_(False)
    if which == 'gpt':
        models, ways = {'gpt': ready(gpt(depth))}, [('gpt', d) for d in ('float32', 'bfloat16')]
    else:
        vae = ready(make_vae(T))
        models = {head: (vae, ready(make_dit(head))) for head in heads}
        ways = [(h, s) for h in heads for s in SAMPLERS]
        causal = ready(make_vae(T, causal_encoder=True))
        for n in block_lens:  # what sample_blocks reads of sample.LDM
            dit = ready(TextDiT(DiTConfig(latent_channels, T, n_embd, n_head, n_layer, V, n)))
            models[f'tokens, blocks of {n}'] = SimpleNamespace(
                dit=dit, vae=causal, mean=0.0, std=1.0, times=dict(schedule='logit_normal',
                                                                   mean=0.0, std=1.5))
            ways += [(f'tokens, blocks of {n}', (SOLVER, BLOCK_CFG_UNTIL, k))
                     for k in block_steps]
    g = torch.Generator(dev).manual_seed(0)
    @torch.no_grad()
    def sample(name, how, n, B):
        prompt, full = idx[:1, :prompt_len].expand(B, -1), lambda n: torch.full((B,), n, device=dev)
        if which == 'gpt':  # how: the dtype
            with torch.autocast(env['device_type'], torch.bfloat16, enabled=how == 'bfloat16'):
                return models[name].generate(prompt, n, generator=g)
        # the dtype as sample.generate chooses it
        dtype_for = lambda latents: sampling_autocast(env['device_type'], dtype == 'bfloat16',
                                                      latents)
        if isinstance(models[name], SimpleNamespace):  # block by block, as sample.generate
            with dtype_for(B * models[name].dit.config.block_len):
                return sample_blocks(models[name], prompt, full(prompt_len), n, how[2], cfg, g,
                                     how[0], how[1])
        (vae, dit), (solver, until, k) = models[name], how
        zc = vae.encode(prompt)[0]
        # as sample.generate: the prompt's encode in float32, the DiT and the decode by its rule
        with dtype_for(B * (prompt_len + n)):
            z = sample_latents(dit, zc, full(prompt_len), full(n), k, cfg, solver=solver,
                               cfg_until=until, generator=g)
            return vae.decode(z).argmax(-1)
    for name, how in ways:
        sample(name, how, lengths[0], 1)  # warmup
    out = dict(params=dict(ldm=p_vae + p_dit, ldm_vae=p_vae, ldm_dit=p_dit,
                           gpt=p1 + (depth - 1) * (p2 - p1), gpt_n_layer=depth))
    first = ways[:2] if which == 'gpt' else ways[:1]  # the GPT's two dtypes; the TextLDM's default
    for n in lengths:
        runs = [timed(lambda: sample(*way, n, 1), 0, repeats, budget_s) for way in first]
        out[n] = min(runs)
        print(f"{which} batch 1, {n} tokens: {out[n][0]:.3f} s (median of {out[n][1]})", flush=True)
    out['memory_after_batch1'] = memory()
    out['rows'] = []
    for name, how in ways:
        for B in sample_batches:
            sec, runs = timed(lambda: sample(name, how, sample_batch_length, B), 0, repeats,
                              budget_s)
            way = (dict(dtype=how) if which == 'gpt' else
                   dict(zip(('solver', 'cfg_until', 'steps'), how)))
            out['rows'].append(dict(model=name, **way, batch=B, samples_per_s=round(B / sec, 3),
                                    runs=runs))
            print(f"{name} {how}, batch {B}, {sample_batch_length} tokens: "
                  f"{B / sec:.2f} samples/s", flush=True)
    return out

PHASES = dict(vae=vae_phase, dit=dit_phase, gpt=gpt_phase,
              ldm_sampling=lambda: sampling_phase('ldm'),
              gpt_sampling=lambda: sampling_phase('gpt'))
# ru_maxrss is in bytes on macOS, in KiB on Linux
rss_mib = lambda: (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
                   / (2 ** 20 if sys.platform == 'darwin' else 2 ** 10))
# torch, the modules and the batch: what a phase's own memory is counted from
rss_before = rss_mib()
def memory():
    """The phase's peak so far in MiB (its process is fresh)."""
    if gpu:
        return dict(gpu_max_allocated=round(torch.cuda.max_memory_allocated() / 2 ** 20))
    return dict(peak_rss=round(rss_mib()), own=round(rss_mib() - rss_before))

phase_file = lambda p: os.path.join(out_dir, f'.speed_{p}.json')
if phase:  # a child: measure one phase, then its memory
    result = PHASES[phase]()
    with open(phase_file(phase), 'w') as f:
        json.dump(dict(result, memory=memory()), f)
    sys.exit()

os.makedirs(out_dir, exist_ok=True)
res, t_start = {}, time.time()
for p in PHASES:
    print(f"--- {p}", flush=True)
    child = [sys.executable, os.path.abspath(__file__), *sys.argv[1:], f'--phase={p}']
    if subprocess.run(child).returncode:
        raise SystemExit(f"error: phase {p} failed")
    with open(phase_file(p)) as f:
        res[p] = json.load(f)
    os.remove(phase_file(p))
cpus = f'{platform.processor() or platform.machine()}, {os.cpu_count()} CPUs'
run = dict(command='python ' + ' '.join(sys.argv), torch=torch.__version__,
           torch_threads=torch.get_num_threads(),
           machine=torch.cuda.get_device_name() if gpu else cpus,
           minutes=round((time.time() - t_start) / 60, 1),
           memory_note='MiB; ' + ('torch.cuda.max_memory_allocated' if gpu else
                                  "peak_rss: the phase process's peak resident set (ru_maxrss, "
                                  "torch included); own: less the RSS before the phase"))
r3 = lambda a, b: round(a / b, 3)
stages = {k: v for p in ('vae', 'dit', 'gpt') for k, v in res[p].items() if k != 'memory'}
tps = {k: v['tokens_per_s'] for k, v in stages.items()}
throughput = dict(
    matched=f"width {n_embd}, {n_head} heads, {n_layer} blocks each (VAE {n_enc} encoder + "
            f"{n_layer - n_enc} decoder); one batch of {batch_size} windows of {block_size} "
            f"tokens; {dtype}; compile={compile}; REPA teacher {repa_teacher}",
    stages=stages,
    ratios=dict(dit_over_gpt=r3(tps['dit_body'], tps['gpt']),
                vae_cost_over_gpt=r3(tps['gpt'], tps['vae_with_teacher']),
                goals='dit_over_gpt >= 0.9, vae_cost_over_gpt <= 1.5',
                dit_with_vae_encode_over_gpt=r3(tps['dit_with_vae_encode'], tps['gpt']),
                vae_cost_over_gpt_without_teacher=r3(tps['gpt'], tps['vae_without_teacher'])),
    memory_mib={p: res[p]['memory'] for p in ('vae', 'dit', 'gpt')}, **run)
L, G = res['ldm_sampling'], res['gpt_sampling']
# its faster dtype
gpt_rate = {b: max(r['samples_per_s'] for r in G['rows'] if r['batch'] == b)
            for b in sample_batches}
rows = [dict(r, over_gpt=r3(r['samples_per_s'], gpt_rate[r['batch']])) for r in L['rows']]
key = lambda r: (r['model'], r['solver'], r['cfg_until'], r['steps'])
default = next((r for r in rows if key(r) == (heads[0], *SAMPLERS[0])
                and r['batch'] == max(sample_batches)), None)
latency = dict(
    setting=f"prompt {prompt_len} tokens; TextLDM: VAE encode, the solver's steps with CFG {cfg} "
            "(one batched forward of [context ; null] while t < cfg_until, then the conditional "
            f"batch alone), the DiT and the decode under {dtype} autocast where a forward writes "
            "sample.CPU_BF16_MIN_LATENTS latents or more on a CPU (as sample.generate); "
            f"GPT: KV cache, a sampled token at a time, in float32 and under {dtype} autocast, its "
            f"faster one compared; batch 1 by length: the {heads[0]} head, {SAMPLERS[0]}",
    params=L['params'],
    batch1_seconds={n: dict(ldm=round(L[n][0], 3), gpt=round(G[n][0], 3),
                            ldm_over_gpt=r3(L[n][0], G[n][0]), runs=[L[n][1], G[n][1]])
                    for n in map(str, lengths)},
    samples_per_s=dict(length=sample_batch_length, gpt={str(b): v for b, v in gpt_rate.items()},
                       gpt_rows=G['rows'], ldm=rows, default=default),
    memory_mib={w: dict(after_batch1=res[p]['memory_after_batch1'], whole_phase=res[p]['memory'])
                for w, p in (('ldm', 'ldm_sampling'), ('gpt', 'gpt_sampling'))}, **run)
table = [f"samples/s, {sample_batch_length} new tokens after a {prompt_len}-token prompt, and x "
         f"the GPT with its KV cache (`{run['command']}`; {run['machine']}, "
         f"{torch.get_num_threads()} threads)", '', '| model | solver | steps | guided while | '
         + ' | '.join(f'batch {b}' for b in sample_batches) + ' |',
         '|---|---|---|---|' + '---|' * len(sample_batches)]
for r in G['rows'][::len(sample_batches)]:
    cells = [next(c for c in G['rows'] if c['dtype'] == r['dtype'] and c['batch'] == b)
             for b in sample_batches]
    table.append(f"| GPT + KV cache, {L['params']['gpt'] / 1e6:.1f}M, {r['dtype']} | | | | "
                 + ' | '.join(f"{c['samples_per_s']:.2f}" for c in cells) + ' |')
for k in dict.fromkeys(map(key, rows)):
    cells = [next(r for r in rows if key(r) == k and r['batch'] == b) for b in sample_batches]
    table.append(f"| TextLDM, {k[0]}{' head' if k[0] in heads else ''} | {k[1]} | {k[3]} | "
                 f"t < {k[2]:g} | "
                 + ' | '.join(f"{c['samples_per_s']:.2f} ({c['over_gpt']:.2f}x)" for c in cells)
                 + ' |')
with open(os.path.join(out_dir, 'sampling.md'), 'w') as f:
    f.write('\n'.join(table) + '\n')
for name, obj in (('throughput', throughput), ('latency', latency)):
    with open(os.path.join(out_dir, f'{name}.json'), 'w') as f:
        json.dump(obj, f, indent=1)
batch1 = {n: v['ldm_over_gpt'] for n, v in latency['batch1_seconds'].items()}
print(json.dumps(dict(throughput['ratios'], ldm_over_gpt_seconds_batch1=batch1,
                      ldm_over_gpt_samples_per_s_default=default and default['over_gpt'])))
print('\n'.join(table))
print(f"wrote {out_dir}/throughput.json, {out_dir}/latency.json and {out_dir}/sampling.md in "
      f"{run['minutes']} min")
