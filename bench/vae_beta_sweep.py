"""
The KL weight (beta) of the TextVAE: reconstruction against latent smoothness. For each beta, train
the tiny VAE and report held-out reconstruction accuracy, KL (nats/token), mean posterior sigma, the
latent std, and how well the decoder reads imprecise latents (accuracy when decoding mu + noise of
0.5 latent std per channel: a DiT's samples are never exact). Results:
bench/results/vae_beta_sweep.json.

    python bench/vae_beta_sweep.py --max_iters=300 --betas=1e-4,1e-3,1e-2
"""
import json
import os
import subprocess
import sys

import numpy as np
import torch

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
from data import TokenData
from model import lengths_to_mask
from checkpoint import load_vae

args = dict(a[2:].split('=', 1) for a in sys.argv[1:])
betas = [float(b) for b in args.get('betas', '1e-4,1e-3,1e-2').split(',')]
max_iters = int(args.get('max_iters', 300))
results = []
for beta in betas:
    out_dir = f'out/bench_vae_beta_{beta:g}'
    cmd = [sys.executable, 'vae_train.py', 'config/vae_tiny.py', f'--beta_kl={beta}',
           f'--max_iters={max_iters}', f'--out_dir={out_dir}', '--eval_interval=100',
           '--log_interval=100']
    subprocess.run(cmd, cwd=ROOT, check=True)
    summary = json.load(open(os.path.join(ROOT, out_dir, 'summary.json')))
    vae, ck = load_vae(os.path.join(ROOT, out_dir, 'ckpt.pt'), 'cpu')
    val = TokenData(os.path.join(ROOT, 'data/embedded'), 'val')
    hits = total = 0
    for k in range(10):  # decoding under noise, on fixed val windows
        idx, lens = val.sample(32, 128, np.random.default_rng([0, k]))
        mask = lengths_to_mask(lens, idx.size(1))
        with torch.no_grad():
            mu = vae.encode(idx, mask)[0]
            noise = torch.randn(mu.shape, generator=torch.Generator().manual_seed(k))
            z = mu + 0.5 * ck['latent_std'] * noise
            pred = vae.decode(z, mask).argmax(-1)
        hits += (pred == idx)[mask].sum().item()
        total += mask.sum().item()
    ev = summary['final_eval']
    results.append(dict(beta=beta, val_recon_acc=ev['acc_mu'], kl_nats_per_token=ev['kl'],
                        mean_sigma=ev['sigma'], latent_std=ev['mu_std'],
                        repa_cos=ev.get('repa_cos'), acc_under_half_std_noise=hits / total,
                        minutes=summary['minutes'], command=' '.join(['python'] + cmd[1:])))
    print(json.dumps(results[-1]))
os.makedirs(os.path.join(ROOT, 'bench/results'), exist_ok=True)
with open(os.path.join(ROOT, 'bench/results/vae_beta_sweep.json'), 'w') as f:
    json.dump(dict(command='python bench/vae_beta_sweep.py ' + ' '.join(sys.argv[1:]),
                   results=results), f, indent=1)
