"""
How many latents before a block does the VAE's decoder need? Block by block, sample.py decodes each
new block from its latents and the DECODE_WINDOW latents before it instead of the whole text, so
that the decoder's cost stays flat as the text grows. Here, on held-out windows encoded by the VAE
(its latent means), the token the decoder reads at each position from its latent and the `b` before
it, against the one it reads from all the latents up to it (what block sampling decoded before),
and the share of both equal to the true token; positions with `min_before` latents or more before
them.

    python bench/decode_window.py  # -> bench/results/decode_window.json and .md, ~1 minute
"""
import json
import os
import sys

import numpy as np
import torch

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
from checkpoint import load_vae  # noqa: E402
from data import TokenData  # noqa: E402
from model import lengths_to_mask  # noqa: E402

vae_ckpt, data_dir = 'out/vae_tiny/ckpt.pt', 'data/embedded'
num_windows, window, min_before = 128, 128, 32
befores = (0, 4, 8, 16, 32)  # latents before a position the decoder reads with its own
out_file = 'bench/results/decode_window.json'
exec(open(os.path.join(ROOT, 'configurator.py')).read())
if not os.path.exists(vae_ckpt):
    raise SystemExit(f"error: no {vae_ckpt}: train the VAE first (python vae_train.py "
                     f"config/vae_tiny.py) or pass --vae_ckpt")

vae = load_vae(vae_ckpt, 'cpu')[0].eval().requires_grad_(False)
idx, lens = TokenData(data_dir, 'val').sample(num_windows, window, np.random.default_rng(0))
T, real = idx.size(1), lengths_to_mask(lens, idx.size(1))
i = torch.arange(T)
scored = real & (i >= min_before)  # the positions compared

@torch.no_grad()
def decoded(b):
    """The token read at each position from its latent and the b before it (None: all of them): a
    decoder query sees those keys only, so one forward decodes every position as sampling would."""
    sees = (i[None] <= i[:, None]) & ((i[:, None] - i[None] <= b) if b is not None else True)
    return vae.decode(mu, sees[None] & real[:, None, :] | torch.eye(T, dtype=torch.bool)).argmax(-1)

with torch.no_grad():
    mu = vae.encode(idx, real)[0]
prefix = decoded(None)
share = lambda a, b: round(100 * (a == b)[scored].float().mean().item(), 3)
rows = [dict(before=b, agree_with_prefix=share(decoded(b), prefix),
             true_tokens=share(decoded(b), idx)) for b in befores]
res = dict(command='python ' + ' '.join(sys.argv), vae_ckpt=vae_ckpt, positions=int(scored.sum()),
           prefix_true_tokens=share(prefix, idx), rows=rows)
lines = [f"# The decoder's window in block sampling\n\n`{res['command']}`: {res['positions']:,} "
         f"held-out positions with {min_before}+ latents before them; from all the latents up to "
         f"a position, the decoder reads its true token at {res['prefix_true_tokens']}%.\n",
         "| latents before it | same token as from all before (%) | true token (%) |",
         "|---|---|---|"]
lines += [f"| {r['before']} | {r['agree_with_prefix']} | {r['true_tokens']} |" for r in rows]
os.makedirs(os.path.dirname(out_file), exist_ok=True)
with open(out_file, 'w') as f:
    json.dump(res, f, indent=1)
with open(out_file.replace('.json', '.md'), 'w') as f:
    f.write('\n'.join(lines) + '\n')
print('\n'.join(lines))
