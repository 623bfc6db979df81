"""
How few sampling steps are enough, measured without a good model: from the same noise and the same
prompt, the k-step sample against a ref_steps-step reference of the same sampler (its ODE solved
almost exactly). A sampler that reaches its reference in few steps is fast without changing what the
model writes.

Held-out windows of the val split (num_samples of `window` tokens, each split at half: the first
half is the prompt, the DiT writes the rest). For each DiT (with its guidance scale and interval),
each sampler and each k:
  agreement      the share of decoded target tokens equal to the reference's (%)
  agreement_ode  the same against the paper's sampler at ref_steps (Euler, guided at every step):
                 what the guidance interval changes in what the model writes
  latent_rms     the RMS distance of the sampled latents to the reference's (normalised latents:
                 ~1 per channel)
  genppl         generative perplexity of the samples under an independent judge GPT
                 (eval.gen_perplexity)
  forwards       DiT forwards a sample costs, a guided one (a batch of 2B) counted twice

    python bench/fidelity.py  # -> bench/results/fidelity.json and .md, ~15 minutes on 2 CPU cores
    python bench/fidelity.py --dits=out/dit_tiny --cfgs=2 --cfg_untils=0.6 --num_samples=4 \
        --ks=2,4 --ref_steps=8 --judge= --out_file=/tmp/fid.json
"""
import json
import os
import platform
import shlex
import sys
import time

import numpy as np
import torch

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
from baselines import load_gpt  # noqa: E402
from data import TokenData  # noqa: E402
from eval import gen_perplexity  # noqa: E402
from sample import CFG_UNTIL, LDM, SOLVER, sample_latents  # noqa: E402

dits = ('out/dit_tiny', 'out/dit_tiny', 'out/dit_velocity')  # DiT folders; one may come twice
# the guidance scale of each DiT: the token head's default and the velocity head's
cfgs = (2.0, 2.0, 8.0)
# the guidance interval of each with sample.py's solver (sample.CFG_UNTIL is the default's)
cfg_untils = (0.6, 0.3, 0.6)
# a GPT trained by ar_train.py on the same tokenizer; '' = no generative perplexity
judge = 'out/judge'
ks = (4, 8, 10, 16, 32, 50)
ref_steps = 200
num_samples = 32  # held-out windows
window = 128  # tokens, split at half
batch_size = 32  # windows sampled together (the noise is drawn per batch: seed + its index)
seed = 0
device = 'cpu'
out_file = 'bench/results/fidelity.json'
exec(open(os.path.join(ROOT, 'configurator.py')).read())  # it checks every value of ks, cfgs, ...

if not len(dits) == len(cfgs) == len(cfg_untils):
    raise SystemExit(f"error: give one guidance scale and interval per DiT: {len(dits)} DiTs, "
                     f"{len(cfgs)} cfgs, {len(cfg_untils)} cfg_untils")
gpt, gpt_enc = load_gpt(judge, device) if judge else (None, None)

def windows(ldm):
    """num_samples full windows of the val split (N, window), the same for every DiT of the same
    data."""
    idx, lens = TokenData(ldm.data_dir, 'val').sample(4 * num_samples, window,
                                                      np.random.default_rng(seed))
    idx = idx[lens == window][:num_samples]
    if len(idx) < num_samples:
        raise SystemExit(f"error: the val split gives only {len(idx)} windows of {window} tokens: "
                         "lower --window")
    return idx.to(ldm.device)

@torch.no_grad()
def sample(ldm, idx, cfg, sampler, k):
    """Every window's target latents (N, Tt, C) and decoded tokens (N, Tt) by sampler (solver,
    cfg_until) in k steps, the DiT forwards per sample (a guided one counts 2: its batch is 2B) and
    the seconds."""
    half, rows, out = window // 2, [], []
    hook = ldm.dit.register_forward_pre_hook(lambda module, args: rows.append(args[0].size(0)))
    t0 = time.time()
    for b in range(0, len(idx), batch_size):
        chunk = idx[b:b + batch_size]
        ctx_lens, tgt_lens = (torch.full((len(chunk),), n, device=ldm.device)
                              for n in (half, window - half))
        ctx = ldm.encode(chunk[:, :half], ctx_lens)
        with ldm.autocast():
            z = sample_latents(ldm.dit, ctx, ctx_lens, tgt_lens, k, cfg, **ldm.times,
                               solver=sampler[0], cfg_until=sampler[1],
                               generator=torch.Generator(device=ldm.device).manual_seed(
                                   seed + b // batch_size))
        out.append((z, ldm.decode(z, tgt_lens)))
    hook.remove()
    z, tokens = torch.cat([z for z, _ in out]), torch.cat([t for _, t in out])
    return z, tokens, sum(rows) / len(idx), time.time() - t0

@torch.no_grad()
def genppl(ldm, idx, tokens):
    texts = lambda ids: [ldm.enc.decode(row.tolist()) for row in ids]
    r = gen_perplexity(gpt, gpt_enc.encode_ordinary, texts(tokens), texts(idx[:, :window // 2]))
    return dict(genppl=round(r['genppl'], 1), genppl_ci=[round(v, 1) for v in r['genppl_ci']])

t_start, results, done = time.time(), [], {}
# a DiT may come twice, with two guidance intervals
for dit_dir, cfg, until in zip(dits, cfgs, cfg_untils):
    ldm = LDM(dit_dir, device=device)
    idx = windows(ldm)
    def run(sampler, k):  # each (DiT, cfg, sampler, k) sampled once
        if (dit_dir, cfg, sampler, k) not in done:
            done[dit_dir, cfg, sampler, k] = sample(ldm, idx, cfg, sampler, k)
        return done[dit_dir, cfg, sampler, k]
    samplers = {f'{SOLVER}, guided while t < {until:g}': (SOLVER, until)}
    # the paper's rows once a DiT
    if not any(r['dit'] == dit_dir and r['cfg'] == cfg for r in results):
        samplers['euler, always guided (the paper)'] = ('euler', 1.0)
    res = dict(dit=dit_dir, head='tokens' if ldm.dit.config.vocab_size else 'velocity', cfg=cfg,
               cfg_until=until, rows=[])
    results.append(res)
    ode = run(('euler', 1.0), ref_steps)
    for name, sampler in samplers.items():
        ref = run(sampler, ref_steps)
        for k in ks:
            z, tok, forwards, sec = run(sampler, k)
            row = dict(sampler=name, k=k, forwards=forwards, seconds=round(sec, 1),
                       agreement=round(100 * (tok == ref[1]).float().mean().item(), 2),
                       agreement_ode=round(100 * (tok == ode[1]).float().mean().item(), 2),
                       latent_rms=round((z - ref[0]).pow(2).mean().sqrt().item(), 4),
                       **(genppl(ldm, idx, tok) if gpt else {}))
            res['rows'].append(row)
            print(f"{dit_dir} ({res['head']}, cfg {cfg:g}) {name}, {k} steps: " +
                  ', '.join(f'{a} {v}' for a, v in row.items()
                            if a not in ('sampler', 'k', 'genppl_ci')), flush=True)
        # the reference itself: its cost, and what the guidance interval changes
        if ref_steps not in ks:
            same_as_ode = round(100 * (ref[1] == ode[1]).float().mean().item(), 2)
            res['rows'].append(dict(sampler=name, k=ref_steps, forwards=ref[2],
                                    seconds=round(ref[3], 1), agreement=100.0,
                                    agreement_ode=same_as_ode, latent_rms=0.0,
                                    **(genppl(ldm, idx, ref[1]) if gpt else {})))

out = dict(results=results, ref_steps=ref_steps, judge=judge,
           windows=f"{num_samples} val windows of {window} tokens split at {window // 2}, batches "
                   f"of {batch_size}, seed {seed}",
           command='python ' + shlex.join(sys.argv), torch=torch.__version__,
           minutes=round((time.time() - t_start) / 60, 1),
           machine=torch.cuda.get_device_name() if device.startswith('cuda')
           else f'{platform.machine()}, {os.cpu_count()} CPUs')
os.makedirs(os.path.dirname(out_file) or '.', exist_ok=True)
with open(out_file, 'w') as f:
    json.dump(out, f, indent=1)
lines = [f"`{out['command']}` ({out['windows']}; reference: {ref_steps} steps of the same sampler; "
         f"the paper's sampler: {ref_steps} euler steps, always guided; judge {judge or 'none'}; "
         f"{out['machine']}, {out['minutes']} min)", '',
         "| DiT | sampler | steps | DiT forwards | agreement % | agreement with the paper's "
         "sampler % | latent RMS | gen. PPL |", '|---|---|---|---|---|---|---|---|']
for res in results:
    label = f"{res['dit']} ({res['head']}, cfg {res['cfg']:g})"
    for r in res['rows']:
        ppl = f"{r['genppl']} [{r['genppl_ci'][0]}, {r['genppl_ci'][1]}]" if 'genppl' in r else ''
        lines.append(f"| {label} | {r['sampler']} | {r['k']} | {r['forwards']:g} | "
                     f"{r['agreement']} | {r['agreement_ode']} | {r['latent_rms']} | {ppl} |")
with open(os.path.splitext(out_file)[0] + '.md', 'w') as f:
    f.write('\n'.join(lines) + '\n')
print(f"wrote {out_file} and {os.path.splitext(out_file)[0]}.md")
