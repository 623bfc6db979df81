"""
The DiT's headline figure: how much the TRUE context lowers its flow loss, against another window's
context. A DiT that has learned language conditions on its prompt; one that has learned only
per-position token frequencies predicts the same velocity whatever the context, and its gain is ~0.

Held-out windows of `window` tokens are split at `context` tokens; the target is noised to a fixed t
with one noise draw, and the DiT (EMA weights) predicts its velocity three times: with the true
context, with another window's context (the batch rolled by one) and with the zero (null) context.
Reported per t: the flow loss and the token accuracy of the decoded clean-target estimate x1 = x_t +
(1 - t) v; the summary is the relative loss drop (other - true) / other at t = 0.2, 0.35, 0.5, and
the gain on the first 4 target positions, where the context says the most.

The yardstick (--gpt_dir): what an autoregressive GPT knows of the context, in the same units. On
the same windows, its next-token cross-entropy on the target with the true and with another window's
context, and the latent MSE of its expected clean latent sum_i p(i) E_i (E: each token's mean
latent), the estimate of x1 that a DiT with the GPT's knowledge would make at t -> 0, given (unlike
the DiT) the true earlier target tokens.

    python bench/context_gain.py --out_dir=out/dit_tiny --gpt_dir=out/gpt
    # -> bench/results/context_gain_dit_tiny.json
"""
import json
import os
import sys

import numpy as np
import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from data import TokenData  # noqa: E402
from model import encode_segments, pack_segments, take_segment, token_latent_means  # noqa: E402

TS = (0.05, 0.2, 0.35, 0.5, 0.65, 0.8)
SUMMARY_TS = (0.2, 0.35, 0.5)
FIRST = 4  # the first target positions, right after the context

def windows(ldm, num_windows, window, seed):
    """num_windows full held-out windows of `window` tokens (B, window): every row has the same
    split."""
    idx, lens = TokenData(ldm.data_dir, 'val').sample(4 * num_windows, window,
                                                      np.random.default_rng(seed))
    idx = idx[lens == window][:num_windows].to(ldm.device)
    if len(idx) < 2:
        raise SystemExit(f"error: the val split has fewer than 2 documents of {window} tokens: "
                         "lower --window")
    return idx

def rel_gain(true, other):
    return (other - true) / other

@torch.no_grad()
def context_gain(ldm, num_windows=256, window=96, context=48, batch_size=64, seed=0):
    """-> dict: per t, loss and decoded-token accuracy for the true / other / null context, and the
    gains."""
    idx = windows(ldm, num_windows, window, seed)
    g = torch.Generator(device=ldm.device).manual_seed(seed)
    # per t and context: [loss sum, acc sum, loss sum over the first FIRST target positions]
    rows = {t: {k: [0.0, 0.0, 0.0] for k in ('true', 'other', 'null')} for t in TS}
    for b in range(0, len(idx), batch_size):
        chunk = idx[b:b + batch_size]
        B = len(chunk)
        lens = torch.full((B,), window, device=ldm.device)
        ctx_lens = torch.full((B,), context, device=ldm.device)
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
                loss = ((v - (x1 - x0)) ** 2).mean(-1)  # (B, Tt)
                rows[t][name][0] += loss.sum().item()
                rows[t][name][1] += (ldm.decode(xt + (1 - t) * v, tgt_lens) == tokens).sum().item()
                rows[t][name][2] += loss[:, :FIRST].sum().item()
    n_tok, n_first = len(idx) * (window - context), len(idx) * FIRST
    table = {t: {name: dict(loss=s[0] / n_tok, acc=s[1] / n_tok, loss_first=s[2] / n_first)
                 for name, s in r.items()}
             for t, r in rows.items()}
    gain = {t: rel_gain(table[t]['true']['loss'], table[t]['other']['loss']) for t in TS}
    gain_first = {t: rel_gain(table[t]['true']['loss_first'], table[t]['other']['loss_first'])
                  for t in TS}
    return dict(windows=len(idx), window=window, context=context,
                table={str(t): v for t, v in table.items()},
                gain={str(t): g for t, g in gain.items()},
                gain_first={str(t): g for t, g in gain_first.items()},
                summary={str(t): gain[t] for t in SUMMARY_TS})

def bayes_x1(log_prior, xt, t, E):
    """E[x1 | x_t] when x1 is one of the token latents E (V, C), drawn with log-probabilities
    log_prior (..., V): the posterior p(i | x_t) ~ prior(i) N(x_t; t E_i, (1 - t)^2 I), xt (..., C)
    -> (..., C)."""
    # up to a constant in i
    log_lik = (2 * t * xt @ E.T - t * t * (E * E).sum(-1)) / (2 * (1 - t) ** 2)
    return (log_prior + log_lik).softmax(-1) @ E

@torch.no_grad()
def gpt_gain(ldm, gpt, num_windows=256, window=96, context=48, batch_size=64, seed=0, n_batches=50):
    """The yardstick: the flow loss of the Bayes denoiser whose prior over each target token is the
    GPT's next-token distribution (given the context and the TRUE earlier target tokens): the
    posterior over tokens p(i | x_t) ~ p_gpt(i) N(x_t; t E_i, (1 - t)^2 I), with E_i token i's mean
    latent, gives x1 = p(. | x_t) @ E. With the true and another window's context, at the same t as
    context_gain; and with a unigram prior (the floor: what knowing only token frequencies gives).
    Also the GPT's cross-entropy on the target."""
    idx = windows(ldm, num_windows, window, seed)
    train = TokenData(ldm.data_dir, 'train')
    batches = (train.sample(batch_size, window, np.random.default_rng([seed, 3, k]))
               for k in range(n_batches))
    # E and the unigram frequencies, from training windows
    on_device = ((idx.to(ldm.device), lens.to(ldm.device)) for idx, lens in batches)
    E, counts = token_latent_means(ldm.encode, on_device, gpt.config.vocab_size)
    log_unigram = (counts + 1).log() - (counts + 1).sum().log()
    g = torch.Generator(device=ldm.device).manual_seed(seed)
    loss = {t: {k: 0.0 for k in ('true', 'other', 'unigram')} for t in TS}
    ce = {k: 0.0 for k in ('true', 'other')}
    for b in range(0, len(idx), batch_size):
        chunk = idx[b:b + batch_size]
        B, tokens = len(chunk), chunk[:, context:]
        x1 = ldm.encode(tokens, torch.full((B,), window - context, device=ldm.device))
        x0 = torch.randn(x1.shape, generator=g, device=ldm.device)
        priors = {'unigram': log_unigram.expand(*tokens.shape, len(log_unigram))}
        for name, c in (('true', chunk[:, :context]), ('other', chunk[:, :context].roll(1, 0))):
            # the predictions of the target
            logits = gpt(torch.cat([c, tokens], 1))[0][:, context - 1:-1].float()
            ce[name] += torch.nn.functional.cross_entropy(logits.transpose(1, 2), tokens,
                                                          reduction='sum').item()
            priors[name] = logits.log_softmax(-1)
        for t in TS:
            xt = t * x1 + (1 - t) * x0
            for name, prior in priors.items():
                x1_hat = bayes_x1(prior, xt, t, E)
                loss[t][name] += (((x1_hat - x1) / (1 - t)) ** 2).mean(-1).sum().item()
    n_tok = len(idx) * (window - context)
    loss = {str(t): {k: v / n_tok for k, v in r.items()} for t, r in loss.items()}
    return dict(loss=loss, gain={t: rel_gain(r['true'], r['other']) for t, r in loss.items()},
                ce={k: v / n_tok for k, v in ce.items()},
                ce_gain=rel_gain(ce['true'] / n_tok, ce['other'] / n_tok))

def markdown(res):
    head = '| t | loss true / other / null | token acc true / other / null | gain | gain, first 4 |'
    lines = [head, '|---|---|---|---|---|']
    for t, r in res['table'].items():
        lines.append(f"| {t} | {r['true']['loss']:.3f} / {r['other']['loss']:.3f} / "
                     f"{r['null']['loss']:.3f} | {r['true']['acc']:.3f} / {r['other']['acc']:.3f} "
                     f"/ {r['null']['acc']:.3f} | {100 * res['gain'][t]:.1f}% | "
                     f"{100 * res['gain_first'][t]:.1f}% |")
    if 'gpt' in res:
        y = res['gpt']
        lines += ['', "the yardstick: a Bayes denoiser with the GPT's next-token prior (its "
                  f"cross-entropy on the target {y['ce']['true']:.2f} true / "
                  f"{y['ce']['other']:.2f} other context, a gain of {100 * y['ce_gain']:.1f}%)", '',
                  '| t | DiT loss (true ctx) | denoiser loss: unigram prior / GPT prior, true / '
                  'other ctx | GPT-prior gain |', '|---|---|---|---|']
        for t, r in y['loss'].items():
            lines.append(f"| {t} | {res['table'][t]['true']['loss']:.3f} | {r['unigram']:.3f} / "
                         f"{r['true']:.3f} / {r['other']:.3f} | {100 * y['gain'][t]:.1f}% |")
    return '\n'.join(lines)

if __name__ == '__main__':
    from baselines import load_gpt
    from sample import LDM
    out_dir = 'out/dit_tiny'
    gpt_dir = ''  # a GPT trained on the same data: its own context gain as the yardstick
    num_windows = 256
    device = 'cpu'
    out_file = ''  # '' = bench/results/context_gain_<DiT folder name>.json
    exec(open('configurator.py').read())
    ldm = LDM(out_dir, device=device)
    res = context_gain(ldm, num_windows)
    if gpt_dir:
        res['gpt'] = dict(gpt_gain(ldm, load_gpt(gpt_dir, device)[0], num_windows), gpt_dir=gpt_dir)
    res['command'] = 'python ' + ' '.join(sys.argv)
    print(markdown(res))
    print('context gain at t = 0.2 / 0.35 / 0.5: '
          + ' / '.join(f'{100 * g:.1f}%' for g in res['summary'].values()))
    name = os.path.basename(out_dir.rstrip('/'))
    out_file = out_file or f'bench/results/context_gain_{name}.json'
    os.makedirs(os.path.dirname(out_file), exist_ok=True)
    with open(out_file, 'w') as f:
        json.dump(res, f, indent=1)
