"""
A quick read of whether the DiT generates: continuations of held-out documents scored with ROUGE-L
against the true continuation, next to the unigram floor (random tokens drawn by training-corpus
frequency) and the context-shuffle figure (share of output tokens unchanged when the contexts are
shuffled under the same noise: lower = the context is used).

    python bench/dit_probe.py --out_dir=out/dit_tiny --n=64 --cfg=2.0
"""
import json
import os
import sys
import time

import numpy as np
import torch
from rouge_score import rouge_scorer

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from sample import generate
from training import LDM

out_dir = 'out/dit_tiny'
n = 64
window = 96  # tokens per test sample (context + target)
cfg = 2.0
steps = 50
seed = 0
tag = ''
exec(open('configurator.py').read())

ldm = LDM(out_dir)
data_dir = ldm.data_dir
docs = [json.loads(line) for line in open(os.path.join(data_dir, 'test.jsonl'))]
rng = np.random.default_rng(seed)
prompts, refs, lens = [], [], []
for k in rng.permutation(len(docs)):
    ids = ldm.enc.encode_ordinary(docs[k]['text'])[:window]
    if len(ids) < 32:
        continue
    cut = int(len(ids) * rng.uniform(0.4, 0.6))
    prompts.append(ldm.enc.decode(ids[:cut]))
    refs.append(ldm.enc.decode(ids[cut:]))
    lens.append(len(ids) - cut)
    if len(prompts) == n:
        break
t0 = time.time()
outs = generate(ldm, prompts, lens, steps, cfg, seed)
dt = time.time() - t0
perm = np.roll(np.arange(len(prompts)), 1)
shuffled = generate(ldm, [prompts[i] for i in perm], lens, steps, cfg, seed)  # same noise, other contexts
# unigram floor: tokens drawn by training-corpus frequency
train = np.memmap(os.path.join(data_dir, 'train.bin'), dtype=np.dtype(ldm.meta['dtype']), mode='r')
freq = np.bincount(train, minlength=ldm.meta['vocab_size']).astype(np.float64)
unigram = [ldm.enc.decode(rng.choice(len(freq), size=m, p=freq / freq.sum()).tolist()) for m in lens]

scorer = rouge_scorer.RougeScorer(['rougeL'])
rl = lambda hyps: float(np.mean([scorer.score(r, h)['rougeL'].fmeasure for r, h in zip(refs, hyps)]))
same = [np.mean([a == b for a, b in zip(ldm.enc.encode_ordinary(x), ldm.enc.encode_ordinary(y))] or [1.0])
        for x, y in zip(outs, shuffled)]
res = dict(tag=tag, out_dir=out_dir, n=len(prompts), cfg=cfg, steps=steps, rougeL=rl(outs), rougeL_unigram=rl(unigram),
           rougeL_true_other=rl([refs[i] for i in perm]), ctx_shuffle_unchanged=float(np.mean(same)), sample_s=dt)
print(json.dumps(res))
for p, o in list(zip(prompts, outs))[:3]:
    print('---', repr(p[-120:]), '>>>', repr(o))
