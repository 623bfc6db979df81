"""
The DiT's headline figure: how much the TRUE context lowers its flow loss, against another window's context.
A DiT that has learned language conditions on its prompt; one that has learned only per-position token
frequencies predicts the same velocity whatever the context, and its gain is ~0.

Held-out windows of `window` tokens are split at `context` tokens; the target is noised to a fixed t with one
noise draw, and the DiT (EMA weights) predicts its velocity three times: with the true context, with another
window's context (the batch rolled by one) and with the zero (null) context. Reported per t: the flow loss
and the token accuracy of the decoded clean-target estimate x1 = x_t + (1 - t) v; the summary is the
relative loss drop (other - true) / other at t = 0.2, 0.35, 0.5.

    python bench/context_gain.py --out_dir=out/dit_tiny      # -> bench/results/context_gain_dit_tiny.json
"""
import json
import os
import sys

import numpy as np
import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from data import TokenData  # noqa: E402
from model import encode_segments, pack_segments, take_segment  # noqa: E402

TS = (0.05, 0.2, 0.35, 0.5, 0.65, 0.8)
SUMMARY_TS = (0.2, 0.35, 0.5)

@torch.no_grad()
def context_gain(ldm, num_windows=256, window=96, context=48, batch_size=64, seed=0):
    """-> dict: per t, loss and decoded-token accuracy for the true / other / null context, and the gains."""
    data = TokenData(ldm.data_dir, 'val')
    rng = np.random.default_rng(seed)
    idx, lens = data.sample(4 * num_windows, window, rng)
    idx = idx[lens == window][:num_windows].to(ldm.device)  # full windows only: every row has the same split
    if len(idx) < 2:
        raise SystemExit(f"error: the val split has fewer than 2 documents of {window} tokens: lower --window")
    g = torch.Generator(device=ldm.device).manual_seed(seed)
    rows = {t: {k: [0.0, 0.0] for k in ('true', 'other', 'null')} for t in TS}  # [loss sum, acc sum]
    n_tok = 0
    for b in range(0, len(idx), batch_size):
        chunk = idx[b:b + batch_size]
        B = len(chunk)
        lens, ctx_lens = torch.full((B,), window, device=ldm.device), torch.full((B,), context, device=ldm.device)
        zc, x1, tgt_lens = encode_segments(ldm.vae, chunk, lens, ctx_lens)
        zc, x1 = (zc - ldm.mean) / ldm.std, (x1 - ldm.mean) / ldm.std
        tokens = chunk[:, context:]
        x0 = torch.randn(x1.shape, generator=g, device=ldm.device)
        contexts = {'true': zc, 'other': zc.roll(1, 0), 'null': torch.zeros_like(zc)}
        for t in TS:
            xt = t * x1 + (1 - t) * x0
            for name, c in contexts.items():
                x, is_target, mask = pack_segments(c, ctx_lens, xt, tgt_lens)
                with ldm.autocast():
                    v = ldm.dit(x, torch.full((B,), t, device=ldm.device), is_target, mask)
                v = take_segment(v.float(), ctx_lens, x1.size(1))
                rows[t][name][0] += ((v - (x1 - x0)) ** 2).mean(-1).sum().item()
                rows[t][name][1] += (ldm.decode(xt + (1 - t) * v, tgt_lens) == tokens).sum().item()
        n_tok += tokens.numel()
    table = {t: {name: dict(loss=s[0] / n_tok, acc=s[1] / n_tok) for name, s in r.items()} for t, r in rows.items()}
    gain = {t: (table[t]['other']['loss'] - table[t]['true']['loss']) / table[t]['other']['loss'] for t in TS}
    return dict(windows=len(idx), window=window, context=context, table={str(t): v for t, v in table.items()},
                gain={str(t): g for t, g in gain.items()}, summary={str(t): gain[t] for t in SUMMARY_TS})

def markdown(res):
    lines = ['| t | loss true / other / null | token acc true / other / null | gain |', '|---|---|---|---|']
    for t, r in res['table'].items():
        lines.append(f"| {t} | {r['true']['loss']:.3f} / {r['other']['loss']:.3f} / {r['null']['loss']:.3f} | "
                     f"{r['true']['acc']:.3f} / {r['other']['acc']:.3f} / {r['null']['acc']:.3f} | {100 * res['gain'][t]:.1f}% |")
    return '\n'.join(lines)

if __name__ == '__main__':
    from training import LDM
    out_dir = 'out/dit_tiny'
    num_windows = 256
    device = 'cpu'
    out_file = ''  # '' = bench/results/context_gain_<DiT folder name>.json
    exec(open('configurator.py').read())
    res = context_gain(LDM(out_dir, device=device), num_windows)
    res['command'] = 'python ' + ' '.join(sys.argv)
    print(markdown(res))
    print('context gain at t = 0.2 / 0.35 / 0.5: ' + ' / '.join(f'{100 * g:.1f}%' for g in res['summary'].values()))
    out_file = out_file or f'bench/results/context_gain_{os.path.basename(out_dir.rstrip("/"))}.json'
    os.makedirs(os.path.dirname(out_file), exist_ok=True)
    with open(out_file, 'w') as f:
        json.dump(res, f, indent=1)
