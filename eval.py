"""
The TextLDM paper's text continuation: continue each document's first ~half, score it against the
true rest.

N documents per benchmark, each cut to block_size tokens of the model's tokenizer and split at a
token boundary drawn uniformly in [40%, 60%] of its length; the model (one of baselines.py's)
continues the prefix by as many tokens as the true rest has, and ROUGE-1/2/L, BERTScore and MAUVE
compare its continuations with the true ones (and a prompt-specific ROUGE-L with another sample's,
see rouge).

    python eval.py --model=textldm --out_dir=out/dit_tiny --num_samples=200 --shuffle_test=True
    python eval.py --model=unigram --block_size=128    # the floor: tokens at corpus frequency
    python eval.py --model=reference --block_size=128  # the ceiling: the true continuation itself
    python eval.py config/eval_paper.py --model=gpt2-large

Writes out/eval/<model>.json (every figure, a few samples, the config and the command) and, next to
it, table.md: one row per JSON in that folder, like the paper's Table 1 (table.py).
"""
import json
import math
import os
import shlex
import sys
import time
import zlib

import numpy as np
import torch
from tqdm import tqdm

from baselines import MODELS, hf_load, load_gpt, load_model
from sample import CFG, SOLVER
from table import save_run

EMBEDDED = ('wikipedia', 'literary')  # the sources in the data folder's test.jsonl
HF_BENCHMARKS = {  # load_dataset arguments; each has a 'text' column
    'tinystories': dict(path='roneneldan/TinyStories', split='validation'),
    # lm1b is a loading script, which datasets 4+ no longer runs: the hub's parquet export of it
    'lm1b': dict(path='billion-word-benchmark/lm1b', revision='refs/convert/parquet', split='test'),
    'wikipedia_hf': dict(path='wikimedia/wikipedia', name='20231101.en', split='train'),
    'wikisource': dict(path='wikimedia/wikisource', name='20231201.en', split='train'),
}
METRICS = {'rouge': ('rouge1', 'rouge2', 'rougeL', 'rougeL_specific'), 'bertscore': ('bertscore',),
           'mauve': ('mauve',), 'genppl': ('genppl',)}

def parse_list(value, valid, what):
    names = [v.strip() for v in value.split(',') if v.strip()]
    bad = [v for v in names if v not in valid]
    if bad or not names:
        raise SystemExit(f"error: unknown {what} '{','.join(bad)}': choose from {', '.join(valid)} "
                         "(comma-separated)")
    return names

# -----------------------------------------------------------------------------
# the protocol: samples, and the model's continuations of them (generate: see baselines.py)

def documents(name, rng, data_dir, hf_local_dir='', seed=0):
    """The benchmark's document texts in a seeded random order (a generator: hub streams are read
    lazily)."""
    if name in EMBEDDED:
        path = os.path.join(data_dir, 'test.jsonl')
        if not os.path.exists(path):
            raise SystemExit(f"error: no {path}: run `python prepare_data.py` (or point --data_dir "
                             "to prepared data)")
        with open(path) as f:
            docs = [d['text'] for d in map(json.loads, f) if d['source'] == name]
        yield from (docs[i] for i in rng.permutation(len(docs)))
        return
    from datasets import load_dataset
    if hf_local_dir:  # a stand-in file read by the same streaming code as the hub copy
        paths = (os.path.join(hf_local_dir, f'{name}.{e}') for e in ('parquet', 'jsonl'))
        files = [p for p in paths if os.path.exists(p)]
        if not files:
            raise SystemExit(f"error: no {name}.parquet or {name}.jsonl in {hf_local_dir} (the "
                             "--hf_local_dir stand-ins)")
        args = dict(path='parquet' if files[0].endswith('parquet') else 'json', data_files=files[0],
                    split='train')
    else:
        args = HF_BENCHMARKS[name]
    try:
        ds = load_dataset(**args, streaming=True)
    except Exception as e:
        raise SystemExit(f"error: cannot load {name} ({type(e).__name__}: "
                         f"{str(e).splitlines()[0][:120]}): go online, or pass stand-in files with "
                         "--hf_local_dir")
    # streaming shuffle: the shard order is shuffled and documents are drawn from a 10k-document
    # buffer, so a 1000-sample draw never downloads a whole 20 GB dump
    for row in ds.shuffle(seed=seed, buffer_size=10_000):
        yield row['text']

def split_window(ids, decode, rng):
    """Cut a window of token ids at a token boundary drawn uniformly in [40%, 60%] of its length ->
    (prefix text, target text, target tokens, window tokens). A byte-level BPE may spread a
    character over two tokens: the cut moves to the nearest boundary in the range where the two
    halves decode to the window's text (None if there is none)."""
    n = len(ids)
    lo, hi = max(1, math.ceil(0.4 * n)), min(n - 1, math.floor(0.6 * n))
    want = min(max(round(rng.uniform(0.4, 0.6) * n), lo), hi)
    text = decode(ids)
    for cut in sorted(range(lo, hi + 1), key=lambda c: abs(c - want)):
        prefix, target = decode(ids[:cut]), decode(ids[cut:])
        if prefix + target == text:
            return prefix, target, n - cut, n
    return None

def make_samples(docs, encode, decode, block_size, n, min_tokens, rng):
    """n samples (prompt, target, target tokens, window tokens) from documents in random order. Each
    document gives its first block_size tokens (the paper's truncation); only if that leaves fewer
    than n samples (the literary benchmark has ~40 long documents) do the later non-overlapping
    block_size windows of the documents make up the rest, drawn at random. Windows under min_tokens
    are skipped."""
    samples, later = [], []
    for text in docs:
        ids = encode(text)
        windows = [w for w in (ids[i:i + block_size] for i in range(0, len(ids), block_size))
                   if len(w) >= min_tokens]
        if not windows:  # the whole document is shorter than min_tokens
            continue
        s = split_window(windows[0], decode, rng)
        samples += [s] if s else []
        later += windows[1:]
        if len(samples) == n:
            return samples
    for k in rng.permutation(len(later)):
        s = split_window(later[k], decode, rng)
        samples += [s] if s else []
        if len(samples) == n:
            break
    return samples

def continue_all(gen, prompts, lengths, windows, batch_size, seed, shuffle_test, desc):
    """Continuations in batches of similar window, then target, length (a DiT pads its batch to the
    longest context + target, an AR model generates the longest target). With shuffle_test, each
    batch is generated again with its prompts rolled by one under the same seed (the same noise). ->
    (outputs, outputs with the other prompts or None)"""
    order = sorted(range(len(prompts)), key=lambda i: (windows[i], lengths[i]))
    outs, shuffled = [None] * len(prompts), [None] * len(prompts)
    for b, start in enumerate(tqdm(range(0, len(order), batch_size), desc=desc)):
        rows = order[start:start + batch_size]
        p, n = [prompts[i] for i in rows], [lengths[i] for i in rows]
        for i, text in zip(rows, gen(p, n, seed + b)):
            outs[i] = text
        if shuffle_test:
            for i, text in zip(rows, gen(p[1:] + p[:1], n, seed + b)):
                shuffled[i] = text
    return outs, (shuffled if shuffle_test else None)

def unchanged_share(outs, shuffled, encode):
    """Share of output tokens (by position) that stay the same when the prompts are shuffled: 1 =
    the context is ignored, lower = it is used."""
    a, b = [encode(t) for t in outs], [encode(t) for t in shuffled]
    same = sum(sum(x == y for x, y in zip(u, v)) for u, v in zip(a, b))
    return same / max(1, sum(max(len(u), len(v)) for u, v in zip(a, b)))

# -----------------------------------------------------------------------------
# metrics: each compares outputs with the true targets (and reads the prompts) -> figures, in
# percent

def bootstrap_ci(stat, n, seed=0, draws=1000):
    """95% interval of stat(sample indices) over resamplings of the n samples with replacement."""
    rng = np.random.default_rng(seed)
    values = [stat(rng.integers(0, n, n)) for _ in range(draws)]
    return [float(np.percentile(values, 2.5)), float(np.percentile(values, 97.5))]

def other_sample(refs):
    """For each sample, another one of about the same target length (its neighbour in order of ROUGE
    tokens)."""
    from rouge_score import tokenizers
    tok = tokenizers.DefaultTokenizer()
    order = np.argsort([len(tok.tokenize(r)) for r in refs], kind='stable')
    other = np.empty(len(refs), dtype=np.int64)
    # the longest takes the one before it
    other[order[:-1]], other[order[-1]] = order[1:], order[-2]
    return other

def rouge(outs, refs, prompts=None):
    from rouge_score import rouge_scorer
    scorer = rouge_scorer.RougeScorer(['rouge1', 'rouge2', 'rougeL'])
    scores = [scorer.score(r, o) for o, r in zip(outs, refs)]
    res = {k: 100 * float(np.mean([s[k].fmeasure for s in scores]))
           for k in ('rouge1', 'rouge2', 'rougeL')}
    rl = 100 * np.array([s['rougeL'].fmeasure for s in scores])
    res['rougeL_ci'] = bootstrap_ci(lambda i: rl[i].mean(), len(rl))
    if len(refs) > 1:
        # prompt-specific ROUGE-L: against the sample's own target minus against another sample's.
        # What any text of the domain shares with any target (the, of, and, ...) cancels, so a model
        # that ignores its prompt scores ~0. The other target is one of about the same length: every
        # model is told its target's length, and ROUGE-L's F-measure favours equal lengths, which
        # would credit even a prompt-blind model.
        rl_l = rouge_scorer.RougeScorer(['rougeL'])
        rl_other = 100 * np.array([rl_l.score(refs[j], o)['rougeL'].fmeasure
                                   for o, j in zip(outs, other_sample(refs))])
        d = rl - rl_other
        res['rougeL_specific'] = float(d.mean())
        res['rougeL_specific_ci'] = bootstrap_ci(lambda i: d[i].mean(), len(d))
    return res

@torch.no_grad()
def gen_perplexity(gpt, encode, outs, prompts):
    """Generative perplexity: exp of the mean negative log-likelihood of the output tokens under a
    judge GPT that reads each prompt first (the prompt keeps its end where both would pass the
    judge's context)."""
    nll, count = np.zeros(len(outs)), np.zeros(len(outs))
    device, T = gpt.wte.weight.device, gpt.config.block_size
    for i, (o, p) in enumerate(zip(tqdm(outs, desc='generative perplexity', leave=False), prompts)):
        out_ids = encode(o)[:T - 1]
        ctx_ids = encode(p)[-(T - len(out_ids)):] if p and out_ids else []
        x = torch.tensor(ctx_ids + out_ids, device=device)[None]
        if x.size(1) < 2:
            continue
        # log-probabilities of tokens 1..
        logp = torch.log_softmax(gpt(x)[0][0, :-1].float(), -1).gather(-1, x[0, 1:, None])[:, 0]
        # the output's tokens (from its 2nd without a prompt)
        scored = logp[len(ctx_ids) - 1:] if ctx_ids else logp
        nll[i], count[i] = -scored.sum().item(), scored.numel()
    ppl = lambda i: float(np.exp(nll[i].sum() / max(1, count[i].sum())))
    return {'genppl': ppl(np.arange(len(outs))), 'genppl_ci': bootstrap_ci(ppl, len(outs))}

class Featurizer:
    """One vector per text for MAUVE: the last token's final hidden state for a causal LM (what
    MAUVE itself does with gpt2-large), the mean over tokens for an encoder such as
    all-MiniLM-L6-v2."""

    def __init__(self, name, device, batch_size=64):
        from transformers import AutoModel, AutoTokenizer
        self.tok = hf_load(AutoTokenizer, name)
        self.model = hf_load(AutoModel, name).to(device).eval()
        self.causal = any(a.endswith(('LMHeadModel', 'ForCausalLM'))
                          for a in self.model.config.architectures or [])
        self.tok.pad_token = self.tok.pad_token or self.tok.eos_token
        self.tok.padding_side = 'right'
        # MAUVE reads at most 1024 tokens
        self.max_len = min(1024, self.model.config.max_position_embeddings)
        self.device, self.batch_size = device, batch_size

    @torch.no_grad()
    def __call__(self, texts):
        order = np.argsort([len(t) for t in texts])  # similar lengths together: less padding
        feats = [None] * len(texts)
        for s in range(0, len(texts), self.batch_size):
            rows = order[s:s + self.batch_size]
            batch = self.tok([texts[i] or ' ' for i in rows], padding=True, truncation=True,
                             max_length=self.max_len, return_tensors='pt').to(self.device)
            h = self.model(**batch).last_hidden_state  # (B, T, D)
            m = batch['attention_mask']
            if self.causal:
                f = h[torch.arange(len(rows)), m.sum(1) - 1]
            else:
                f = (h * m[..., None]).sum(1) / m.sum(1, keepdim=True)
            for i, v in zip(rows, f.float().cpu().numpy()):
                feats[i] = v
        return np.stack(feats)

def mauve_score(featurize, outs, refs, num_buckets=0, seed=0):
    """MAUVE of the outputs (p) against the true targets (q) on our features. mauve keeps its own
    k-means settings (PCA to 90% of the variance, 5 restarts of at most 500 iterations, seeded); 0
    buckets = 'auto', its N/10 heuristic, which suits small N."""
    import mauve
    out = mauve.compute_mauve(p_features=featurize(outs), q_features=featurize(refs),
                              num_buckets=num_buckets or 'auto', seed=seed, verbose=False)
    return {'mauve': 100 * float(out.mauve)}

def load_metrics(names, device, mauve_featurizer='minilm', mauve_buckets=0,
                 bertscore_model='minilm', bertscore_layers=4, batch_size=64, seed=0, judge=''):
    """metric name -> function(outputs, targets, prompts) -> {figure: value}; the models load here,
    before any generation."""
    fns = {}
    if 'rouge' in names:
        fns['rouge'] = rouge
    if 'bertscore' in names:
        from bert_score import BERTScorer
        from teacher import resolve
        scorer = BERTScorer(model_type=resolve(bertscore_model),
                            num_layers=bertscore_layers or None, batch_size=batch_size,
                            device=device)
        f1 = lambda outs, refs: 100 * float(scorer.score(outs, refs)[2].mean())
        fns['bertscore'] = lambda outs, refs, _: {'bertscore': f1(outs, refs)}
    if 'mauve' in names:
        featurize = Featurizer(mauve_featurizer, device, batch_size)
        fns['mauve'] = lambda outs, refs, _: mauve_score(featurize, outs, refs, mauve_buckets, seed)
    if 'genppl' in names:
        if not judge:
            raise SystemExit("error: the genppl metric needs a judge: --judge=<folder of a GPT "
                             "trained by ar_train.py>")
        gpt, enc = load_gpt(judge, device)
        encode = enc.encode_ordinary
        fns['genppl'] = lambda outs, refs, prompts: gen_perplexity(gpt, encode, outs, prompts)
    return fns

# -----------------------------------------------------------------------------
# main: the config, then per benchmark samples -> continuations -> metrics, then the record
# (table.py)

if __name__ == '__main__':
    model = 'textldm'  # one of MODELS
    # textldm: the DiT's folder ('' = out/dit_tiny); gpt: its folder ('' = out/gpt_tiny);
    # gpt2*: a local folder with the weights ('' = the hub id, or its copy in the local HF cache)
    out_dir = ''
    vae_ckpt = ''  # textldm: overrides the VAE checkpoint path stored in the DiT checkpoint
    # its test.jsonl holds the embedded benchmarks; reference/unigram use its tokenizer
    data_dir = 'data/embedded'
    # also tinystories, lm1b, wikipedia_hf, wikisource (Hugging Face hub)
    benchmarks = 'wikipedia,literary'
    # stand-ins for the hub benchmarks: <dir>/<benchmark>.parquet or .jsonl with a 'text' column
    hf_local_dir = ''
    num_samples = 1000  # per benchmark
    block_size = 1024  # tokens per sample before the split, capped at the model's context
    min_tokens = 8  # shorter windows are skipped: both halves keep at least 3 tokens
    # also genppl: the outputs' perplexity under a judge GPT (--judge)
    metrics = 'rouge,mauve,bertscore'
    # genppl: the folder of a GPT trained by ar_train.py on the same tokenizer, e.g. out/gpt_tiny
    judge = ''
    # MAUVE's features: 'minilm' (offline: all-MiniLM-L6-v2, mean over tokens) or a causal LM such
    # as 'gpt2-large' (the last token's, as MAUVE computes them); a local folder or a hub id
    mauve_featurizer = 'minilm'
    mauve_buckets = 0  # k-means clusters; 0 = 'auto' (N/10)
    bertscore_model = 'minilm'  # or 'roberta-large' (the usual one)
    # the layer it reads; 0 = bert-score's default for a model it knows (roberta-large: 17)
    bertscore_layers = 4
    steps = None  # textldm: the solver's steps (a block's); None: sample.py's for the DiT's layout
    solver = SOLVER  # textldm: 'dpm2m' or 'euler'
    cfg = CFG  # textldm: guidance scale
    cfg_until = None  # textldm: guidance while t < cfg_until; None: sample.py's for the layout
    greedy = False  # gpt, gpt2*: sampling settings
    temperature = 1.0
    top_k = 0  # 0 = off
    top_p = 1.0  # 1.0 = off
    # also report the share of output tokens unchanged when the prompts are shuffled
    shuffle_test = False
    batch_size = 32  # prompts generated together
    seed = 0
    device = 'cpu'
    out_file = ''  # '' = out/eval/<model>.json
    config_keys = [k for k, v in globals().items() if not k.startswith('_')
                   and isinstance(v, (int, float, bool, str))]
    exec(open('configurator.py').read())
    config = {k: globals()[k] for k in config_keys}

    parse_list(model, MODELS, 'model')
    bench_names = parse_list(benchmarks, EMBEDDED + tuple(HF_BENCHMARKS), 'benchmark')
    metric_names = parse_list(metrics, tuple(METRICS), 'metric')
    if not 5 <= min_tokens <= block_size:  # the configurator checked the other counts
        raise SystemExit(f"error: need 5 <= min_tokens <= block_size, got {min_tokens} and "
                         f"{block_size}")
    if shuffle_test and model == 'reference':
        raise SystemExit("error: shuffle_test needs a model that reads its prompt, not 'reference'")
    torch.manual_seed(seed)
    from transformers.utils import logging as hf_logging
    # generation and tokenizer-length notices would drown the progress bars
    hf_logging.set_verbosity_error()
    scorers = load_metrics(metric_names, device, mauve_featurizer, mauve_buckets, bertscore_model,
                           bertscore_layers, 64, seed, judge)
    gen, encode, decode, context = load_model(model, out_dir, device, data_dir, steps, cfg,
                                              vae_ckpt, greedy, temperature, top_k, top_p,
                                              solver, cfg_until)
    window = min(block_size, context)

    t_start, results, examples, seconds = time.time(), {}, {}, {}
    for name in bench_names:
        # a benchmark's samples ignore the others
        rng = np.random.default_rng([seed, zlib.crc32(name.encode())])
        samples = make_samples(documents(name, rng, data_dir, hf_local_dir, seed), encode, decode,
                               window, num_samples, min_tokens, rng)
        if not samples:
            raise SystemExit(f"error: benchmark {name} gave no sample of at least {min_tokens} "
                             "tokens")
        if len(samples) < num_samples:
            print(f"note: {name} gives only {len(samples)} windows of up to {window} tokens "
                  f"(num_samples={num_samples})")
        prompts, targets, lengths, windows = map(list, zip(*samples))
        t0 = time.time()
        if gen is None:
            outs, shuffled = targets, None
        else:
            outs, shuffled = continue_all(gen, prompts, lengths, windows, batch_size, seed,
                                          shuffle_test, f'{model} on {name}')
        t1 = time.time()
        res = dict(n=len(samples), target_tokens_mean=float(np.mean(lengths)))
        for m in metric_names:
            res.update(scorers[m](outs, targets, prompts))
        if shuffled is not None:
            res['ctx_unchanged'] = 100 * unchanged_share(outs, shuffled, encode)
        results[name] = res
        seconds[name] = dict(generate=round(t1 - t0, 1), metrics=round(time.time() - t1, 1))
        examples[name] = [dict(prompt=p, target=t, output=o)
                          for p, t, o in list(zip(prompts, targets, outs))[:3]]
        print(f"{name}: "
              + ', '.join(f'{k} {v:.4g}' for k, v in res.items() if not k.endswith('_ci'))
              + f"  (seconds: {seconds[name]})")

    out_file = out_file or os.path.join('out', 'eval', f'{model}.json')
    machine = (torch.cuda.get_device_name() if device.startswith('cuda') else
               f'cpu x{os.cpu_count()}')
    run = dict(label=model + (f' ({out_dir})' if out_dir else ''), model=model, window=window,
               results=results, seconds=dict(seconds, total=round(time.time() - t_start, 1)),
               examples=examples, config=config, command='python ' + shlex.join(sys.argv),
               torch=torch.__version__, device=machine)
    print(f"wrote {out_file} and {save_run(out_file, run)}")
