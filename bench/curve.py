"""
The compute gap to AR: how many times more training steps the DiT needs than a GPT for text of the
same quality.

Every model continues the same held-out prompts (eval.py's protocol: num_samples per benchmark,
windows of 128 tokens split at 40-60%). A judge GPT that is NOT a contestant (trained longer,
another seed) scores the text: generative perplexity, the outputs' perplexity under the judge after
it reads the prompt. Beside it, per model: MAUVE, the share of words that are real corpus words, how
often a word-unigram classifier puts the continuation in its prompt's source (genre), and how much
the noise decides the words: under the same noise, the share of words two continuations of unrelated
prompts have in common, position by position (a model that writes from its prompt: ~0). For the
DiTs, the knowledge share of the yardstick (bench/context_gain.py) at t = 0.35 and 0.5: (L_unigram -
L_DiT) / (L_unigram - L_GPT), the flow losses of the Bayes denoiser with a unigram prior, of the
DiT, and of the Bayes denoiser with the judge's next-token prior (0: the DiT knows token frequencies
only, 1: what the judge knows).

The gap of a DiT point: its steps over the steps at which the GPT's curve reaches the same
perplexity (log PPL interpolated in log steps on the GPT's best-so-far curve); outside the GPT's
curve it is a bound (> or <).

    python prepare_data.py && python vae_train.py config/vae_tiny.py  # the causal VAE, C = 64
    python ar_train.py config/gpt_tiny.py --out_dir=out/curve/gpt --max_iters=1000 \
        --keep_steps=60,125,250,500,1000
    python ar_train.py config/gpt_tiny.py --out_dir=out/curve/gpt_2000 --max_iters=2000 \
        --keep_steps=2000  # the GPT curve on to 2000 steps, so that the DiTs' 4000 get gaps
    python ar_train.py config/gpt_tiny.py --out_dir=out/curve/gpt_4000 --max_iters=4000 \
        --keep_steps=4000  # and to 4000, so that a DiT ahead of the GPT at 2000 gets a gap
    python dit_train.py config/dit_tiny.py config/dit_tiny_long.py  # the default (blocks of 1):
                                                          # out/curve/dit_b1_c64, 500 to 4000
    python dit_train.py config/dit_tiny.py --max_iters=550 --init_from=resume --keep_steps=550 \
        --out_dir=out/curve/dit_b1_demo550  # the demo's 550 steps: its folder first holds a copy of
        # out/curve/dit_b1_c64/step500/ckpt.pt (and 600 steps: dit_b1_demo600)
    python dit_train.py config/dit_tiny.py config/dit_tiny_long.py --block_len=2 \
        --out_dir=out/curve/dit_b2_c64  # blocks of 2 (the default before blocks of 1 won)
    python dit_train.py config/dit_tiny.py --block_len=2 --max_iters=500 --lr_decay_iters=500 \
        --keep_steps=500 \
        --out_dir=out/curve/dit_b2_c64_decay500  # a demo decayed by step 500 (the run folder
        # dit_b2_c64_decay500_noema: the same checkpoint with its raw weights as its EMA's)
    # the runs below read C = 16 latent channels (the default before C = 64 won): each with
    # --vae_ckpt=out/vae_causal/ckpt.pt (the paper's layout: --vae_ckpt=out/vae_bidir/ckpt.pt)
    python vae_train.py config/vae_tiny.py --latent_channels=16 --out_dir=out/vae_causal
    python dit_train.py config/dit_tiny.py config/dit_tiny_long.py --block_len=2 \
        --out_dir=out/curve/dit_b2
    python dit_train.py config/dit_tiny.py config/dit_tiny_long.py --block_len=4 \
        --out_dir=out/curve/dit_b4_learned                # blocks of 4
    python dit_train.py config/dit_tiny.py config/dit_tiny_long.py --block_len=4 \
        --t_schedule=logit_normal --out_dir=out/curve/dit_b4_ar  # the paper's time distribution
    python dit_train.py config/dit_tiny.py config/dit_tiny_long.py --block_len=4 \
        --t_schedule=logit_normal --self_cond=True --out_dir=out/curve/dit_b4_sc  # self-cond.
    python dit_train.py config/dit_tiny.py config/dit_tiny_long.py --block_len=4 \
        --t_schedule=logit_normal --ar_weight=4 --out_dir=out/curve/dit_b4_ar4  # 4x next-token
        # (levers first go to 1000 steps: --max_iters=1000 --lr_decay_iters=4000)
    python dit_train.py config/dit_tiny.py config/dit_tiny_long.py --block_len=4 --ar_weight=0 \
        --t_schedule=logit_normal --out_dir=out/curve/dit_b4  # no next-token loss
    python dit_train.py config/dit_tiny.py config/dit_tiny_long.py --ar_weight=0 \
        --t_schedule=logit_normal --block_len=16 --out_dir=out/curve/dit_b16  # blocks of 16
    python dit_train.py config/dit_tiny.py config/dit_tiny_long.py --block_len=4 --ar_weight=0 \
        --t_schedule=logit_normal --head=velocity --out_dir=out/curve/dit_b4_vel  # velocity head
    python vae_train.py config/vae_tiny.py --latent_channels=16 --causal_encoder=False \
        --out_dir=out/vae_bidir
    python dit_train.py config/dit_tiny.py --block_len=0 --ar_weight=0 --max_iters=1000 \
        --vae_ckpt=out/vae_bidir/ckpt.pt --out_dir=out/curve/dit_paper --keep_steps=500,1000
                                                          # the paper's layout (the old default)
    python bench/curve.py  # these runs at CFG 2 -> bench/results/curve.*
    # the default's sampler, 2 steps a block, and 3 (the runs of blocks of 1 and 2, CFG 1-3):
    # --steps=2 --solver=dpm2m --cfg_until=1.0 --dits=... (bench/results/steps/dpm2m2_until1.md,
    # dpm2m3_until1.md: their commands)
    python bench/curve.py --steps=4 --solver=dpm2m --cfg_until=0.6 \
        --dits=out/curve/dit_b4_ar:2@2000 --out_file=bench/results/steps/dpm2m4_until0.6.json

The judge is ../shared/judge (its README says how it was made): a GPT of seed 4242 trained 4000
steps, so that points from every session compare.
Each run folder's step<N>/ checkpoints are its curve (trainers' --keep_steps). A model point's
figures are cached in out/curve/points/, so adding a run re-scores only what is new (a block-causal
DiT's point with sample.DECODE_WINDOW: another window re-scores it).
"""
import json
import os
import re
import shlex
import subprocess
import sys
import zlib
from collections import Counter

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
import eval as ev  # noqa: E402
from baselines import load_gpt, load_model  # noqa: E402
from checkpoint import load_checkpoint  # noqa: E402
from data import TokenData, get_tokenizer, load_meta  # noqa: E402
from sample import DECODE_WINDOW  # noqa: E402
from training import bf16_is_fast  # noqa: E402

BENCHES = ('wikipedia', 'literary')
KNOWLEDGE_TS = ('0.35', '0.5')
WORD = re.compile(r"[a-z]+")

def words(text):
    return WORD.findall(text.lower())

def run_points(folder):
    """A training run's curve: {steps: checkpoint folder} of its step<N>/ folders."""
    if not os.path.isdir(folder):
        raise SystemExit(f"error: no run folder {folder}: train it with --keep_steps (see "
                         "bench/curve.py)")
    pts = {int(d[4:]): os.path.join(folder, d) for d in os.listdir(folder)
           if re.fullmatch(r'step\d+', d)}
    if not pts:
        raise SystemExit(f"error: {folder} has no step<N>/ checkpoints: train it with "
                         "--keep_steps=500,1000,...")
    return dict(sorted(pts.items()))

def genre_accuracy(outs, labels, refs):
    """Per output, whether a word-unigram naive Bayes classifier puts it in its sample's source
    (labels). The classifier is fit on the true continuations refs of all samples but the one
    classified (leave one out)."""
    ref_words = [Counter(words(r)) for r in refs]
    totals = {s: sum((c for c, l in zip(ref_words, labels) if l == s), Counter())
              for s in set(labels)}
    vocab = len(set().union(*totals.values())) + 1  # add-one smoothing, one slot for unseen words
    def loglik(out, counts):
        n = sum(counts.values())
        return sum(np.log((counts[w] + 1) / (n + vocab)) for w in words(out))
    fit = lambda s, own, label: totals[s] - own if s == label else totals[s]
    return [max(totals, key=lambda s: loglik(o, fit(s, own, label))) == label
            for o, own, label in zip(outs, ref_words, labels)]

def same_noise_share(outs, shuffled):
    """Share of words that two continuations of different prompts under the same noise have in
    common, by position."""
    a, b = [words(t) for t in outs], [words(t) for t in shuffled]
    same = sum(sum(x == y for x, y in zip(u, v)) for u, v in zip(a, b))
    return same / max(1, sum(max(len(u), len(v)) for u, v in zip(a, b)))

def mauve_ci(featurize, outs, refs, draws, seed=0):
    """MAUVE and its 95% interval over resamplings of the samples (the features computed once)."""
    import mauve
    p, q = featurize(outs), featurize(refs)
    score = lambda i, j: 100 * float(mauve.compute_mauve(p_features=p[i], q_features=q[j],
                                                         seed=seed, verbose=False).mauve)
    rng, n = np.random.default_rng(seed), len(outs)
    boot = [score(rng.integers(0, n, n), rng.integers(0, n, n)) for _ in range(draws)]
    ci = [float(np.percentile(boot, 2.5)), float(np.percentile(boot, 97.5))]
    return score(np.arange(n), np.arange(len(refs))), ci

def knowledge_share(dit_dir, judge_gpt, num_windows):
    """The yardstick at KNOWLEDGE_TS: the DiT's flow loss between the unigram-prior and the
    judge-prior denoisers."""
    from context_gain import context_gain, gpt_gain
    from sample import LDM
    ldm = LDM(dit_dir)
    if ldm.dit.config.block_len:  # the yardstick reads the paper's layout: one context, one target
        return None
    dit, yard = context_gain(ldm, num_windows), gpt_gain(ldm, judge_gpt, num_windows)
    out = {}
    for t in KNOWLEDGE_TS:
        l_dit = dit['table'][t]['true']['loss']
        l_uni, l_gpt = yard['loss'][t]['unigram'], yard['loss'][t]['true']
        out[t] = dict(share=(l_uni - l_dit) / (l_uni - l_gpt), dit=l_dit, unigram=l_uni,
                      judge=l_gpt)
    return out

def score_point(model, folder, cfg, ctx, sampler=(50, 'euler', 1.0)):
    """Every figure of one model (one checkpoint) on every benchmark; a DiT's sampler: (steps,
    solver, guided while t < cfg_until), by default the paper's."""
    steps, solver, cfg_until = sampler
    gen, encode, _, _ = load_model(model, folder, 'cpu', ctx['data_dir'], steps, cfg,
                                   solver=solver, cfg_until=cfg_until)
    res, all_outs = {}, []
    for b in BENCHES:
        s = ctx['samples'][b]
        outs, shuffled = ev.continue_all(gen, s['prompts'], s['lengths'], s['windows'], 32, 0, True,
                                         f'{folder or model} {b}')
        ppl = ev.gen_perplexity(ctx['judge'], encode, outs, s['prompts'])
        mv, mv_ci = mauve_ci(ctx['featurize'], outs, s['targets'], ctx['mauve_draws'])
        ws = [w for o in outs for w in words(o)]
        res[b] = dict(genppl=ppl['genppl'], genppl_ci=ppl['genppl_ci'], mauve=mv, mauve_ci=mv_ci,
                      real_words=sum(w in ctx['corpus_words'] for w in ws) / max(1, len(ws)),
                      same_noise_words=same_noise_share(outs, shuffled),
                      examples=outs[:ctx['examples']])
        all_outs += outs
    right = genre_accuracy(all_outs, ctx['all_labels'], ctx['all_targets'])
    for b in BENCHES:
        res[b]['genre'] = float(np.mean([r for r, label in zip(right, ctx['all_labels'])
                                         if label == b]))
    return res

def steps_for_quality(gpt, bench, ppl):
    """The GPT steps whose perplexity would be ppl, on the GPT's best-so-far curve (log-log
    interpolation) -> (steps, '=' | '<' | '>'): '<' where ppl is worse than the GPT's first point,
    '>' where better than its last."""
    steps = np.array(sorted(gpt), dtype=float)
    curve = np.minimum.accumulate(np.log([gpt[int(s)][bench]['genppl'] for s in steps]))
    if np.log(ppl) >= curve[0]:
        return steps[0], '<'
    if np.log(ppl) <= curve[-1]:
        return steps[-1], '>'
    k = int(np.argmax(curve <= np.log(ppl)))  # the first GPT point at least as good
    # interpolate in log steps between points k - 1 and k (on a flat stretch, the earlier step)
    frac = (curve[k - 1] - np.log(ppl)) / max(curve[k - 1] - curve[k], 1e-12)
    return float(np.exp(np.log(steps[k - 1])
                        + frac * (np.log(steps[k]) - np.log(steps[k - 1])))), '='

def gaps(gpt, dit_points):
    """The compute gap of every DiT point on every benchmark: (DiT steps / GPT steps of equal
    quality, '=' | '>' | '<')."""
    out = {}
    for steps, res in dit_points.items():
        out[steps] = {}
        for b in BENCHES:
            s, where = steps_for_quality(gpt, b, res[b]['genppl'])
            out[steps][b] = dict(gap=steps / s, bound={'=': '=', '<': '>', '>': '<'}[where],
                                 gpt_steps=s)
    return out

def solo_step_ms(folder, kind, steps):
    """A run's median training step in ms, timed again for `steps` steps in a fresh process with its
    script and config (from its checkpoint), once (out/curve/timing/<run>/): run this script alone
    on the machine. steps=0: the run's own median (summary.json), which is solo only if the run had
    the machine to itself."""
    if steps == 0:
        with open(os.path.join(folder, 'summary.json')) as f:
            return json.load(f)['median_step_ms']
    ckpt = load_checkpoint(os.path.join(folder, 'ckpt.pt'), kind)
    cfg = dict(ckpt['config'], out_dir=os.path.join('out/curve/timing', os.path.basename(folder)),
               max_iters=steps, keep_steps='', eval_interval=steps, eval_iters=1,
               init_from='scratch')
    summary = os.path.join(ROOT, cfg['out_dir'], 'summary.json')
    if os.path.exists(summary):  # timed before, as many steps: each sampler's table reuses it
        with open(summary) as f:
            timed = json.load(f)
        if timed['iters'] == steps:
            return timed['median_step_ms']
    script = {'gpt': 'ar_train.py', 'dit': 'dit_train.py'}[kind]
    proc = subprocess.run([sys.executable, script, *(f'--{k}={v}' for k, v in cfg.items())],
                          cwd=ROOT, capture_output=True, text=True)
    if proc.returncode:
        raise SystemExit(f"error: timing {folder} failed: {proc.stderr.strip().splitlines()[-1]}")
    with open(summary) as f:
        return json.load(f)['median_step_ms']

def figure(res, path):
    import matplotlib
    import matplotlib.ticker
    matplotlib.use('Agg')
    import matplotlib.pyplot as plt
    fig, axes = plt.subplots(2, 2, figsize=(11, 7.5))
    runs = {'GPT': res['gpt']} | {f"DiT {k}": v for k, v in res['dits'].items()}
    for col, b in enumerate(BENCHES):
        for row, unit in enumerate(('steps', 'minutes')):
            ax = axes[row, col]
            for (name, run), style in zip(runs.items(), ('ks-', 'o-', 'd-', '^-', 'v-', 'x-')):
                xs = [s * (run['step_ms'] / 60000 if unit == 'minutes' else 1)
                      for s in run['points']]
                ys = [p[b]['genppl'] for p in run['points'].values()]
                ax.plot(xs, ys, style, label=name)
            ax.axhline(res['unigram'][b]['genppl'], color='grey', ls=':', label='unigram floor')
            ax.set_xscale('log')
            ax.set_yscale('log')
            for axis in (ax.xaxis, ax.yaxis):  # plain numbers, no crowded minor labels
                axis.set_major_formatter(matplotlib.ticker.FormatStrFormatter('%g'))
                axis.set_minor_formatter(matplotlib.ticker.NullFormatter())
            ax.set_xlabel('training steps' if unit == 'steps'
                          else 'minutes on this CPU (median step x steps)')
            ax.set_ylabel('generative perplexity (judge)')
            ax.set_title(b)
            ax.grid(alpha=0.3, which='both')
    axes[0, 0].legend(fontsize=8)
    fig.suptitle(f"Quality per training step: DiTs against GPTs, judged by {res['judge']} (lower "
                 "is better)")
    fig.tight_layout()
    fig.savefig(path, dpi=110)

def markdown(res):
    fmt = lambda r, b: (f"{r[b]['genppl']:,.0f} [{r[b]['genppl_ci'][0]:,.0f}, "
                        f"{r[b]['genppl_ci'][1]:,.0f}] | {r[b]['mauve']:.1f} "
                        f"[{r[b]['mauve_ci'][0]:.1f}, {r[b]['mauve_ci'][1]:.1f}] | "
                        f"{100 * r[b]['real_words']:.0f}% | {100 * r[b]['genre']:.0f}% | "
                        f"{100 * r[b]['same_noise_words']:.0f}%")
    head = ' | '.join(f"{b}: gen. PPL | MAUVE | real words | genre | same-noise words"
                      for b in BENCHES)
    lines = [f"# The compute gap to AR\n\n`{res['command']}`\n\nJudge: `{res['judge']}` (not a "
             f"contestant). {res['num_samples']} samples per benchmark, [95% bootstrap interval] "
             "(MAUVE's: resampled sets repeat samples, which MAUVE's clustering scores "
             "differently, so read it as a spread, not a confidence interval). Minutes: a run's "
             f"median step x steps, on {res['machine']}, "
             f"{'timed alone' if res['solo_steps'] else 'from the runs (not timed alone)'}.\n",
             f"| model | steps | minutes | {head} | gap (wiki / lit) | knowledge share t=0.35 / "
             "0.5 |", '|' + '---|' * (5 * len(BENCHES) + 5)]
    lines.append(f"| unigram floor | 0 | 0 | {' | '.join(fmt(res['unigram'], b) for b in BENCHES)} "
                 "| | |")
    for name, run in [('GPT', res['gpt'])] + list(res['dits'].items()):
        for s, r in run['points'].items():
            g = run.get('gaps', {}).get(s)
            gap = ' / '.join(f"{g[b]['bound'].replace('=', '')}{g[b]['gap']:.1f}x"
                             for b in BENCHES) if g else ''
            ks = run.get('knowledge', {}).get(s)
            ks = ' / '.join(f"{ks[t]['share']:.2f}" for t in KNOWLEDGE_TS) if ks else ''
            lines.append(f"| {name} | {s} | {s * run['step_ms'] / 60000:.1f} | "
                         f"{' | '.join(fmt(r, b) for b in BENCHES)} | {gap} | {ks} |")
    lines.append('\n## The same prompts, every model\n')
    for b in BENCHES:
        for i, p in enumerate(res['prompts'][b]):
            lines.append(f"### {b} {i + 1}\n\nprompt: {p!r}\n")
            for name, run in [('GPT', res['gpt'])] + list(res['dits'].items()):
                for s, r in run['points'].items():
                    lines.append(f"- {name} {s}: {r[b]['examples'][i]!r}")
            lines.append('')
    return '\n'.join(lines)

if __name__ == '__main__':
    # GPT runs with step<N>/ checkpoints, comma-separated: the contestants (a step kept by two: the
    # first run's); the first run's step is timed
    gpt_dirs = 'out/curve/gpt,out/curve/gpt_2000,out/curve/gpt_4000'
    # DiT runs as folder:cfg (all its kept steps) or folder:cfg@500+2000, comma-separated
    dits = ('out/curve/dit_b2_c64:2,out/curve/dit_b2:2,'
            'out/curve/dit_b4_learned:2@500+1000+2000+4000,'
            'out/curve/dit_b4_ar:2,out/curve/dit_b4_sc:2,out/curve/dit_b4_ar4:2@1000,'
            'out/curve/dit_b4:2@1000,out/curve/dit_b4_vel:2@500+1000,out/curve/dit_b16:2@1000,'
            'out/curve/dit_paper:2@1000')
    judge = '../shared/judge'  # a GPT that is not a contestant, trained longer
    data_dir = 'data/embedded'
    num_samples = 64  # per benchmark
    num_windows = 128  # the yardstick's held-out windows
    mauve_draws = 20  # bootstrap draws of MAUVE's interval
    examples = 2  # samples shown per model and benchmark, the same prompts for all
    # each run's step time, timed again alone on this machine (0: from the run's own summary.json)
    solo_steps = 50
    # the DiTs' sampler: by default the paper's, 50 Euler steps guided at every one
    steps, solver, cfg_until = 50, 'euler', 1.0
    score_only = False  # only score the checkpoints kept so far (while the runs go on), then stop
    out_file = 'bench/results/curve.json'
    exec(open(os.path.join(ROOT, 'configurator.py')).read())
    sys.path.insert(0, os.path.join(ROOT, 'bench'))
    specs = []  # (folder, cfg, [steps], as given); every one checked before any folder is read
    for d in filter(None, dits.split(',')):
        spec, _, only = d.partition('@')
        try:
            run, cfg = spec.split(':')
            specs.append((run, float(cfg), [int(s) for s in only.split('+')] if only else [], d))
        except ValueError:
            raise SystemExit("error: --dits takes folder:cfg, or folder:cfg@steps+steps, "
                             "comma-separated (like out/curve/dit_tokens:2,"
                             f"out/curve/dit_tokens:4@2000), got {d!r}")
        # configurator.py's check: the message --cfg would get
        _check(f'the guidance scale in --dits ({d})', specs[-1][1], 'cfg')
    dit_runs = []  # (folder, cfg, {steps: checkpoint folder})
    for run, cfg, only, d in specs:
        pts = run_points(run)
        if set(only) - set(pts):
            raise SystemExit(f"error: {run} has no step{min(set(only) - set(pts))}/ checkpoint "
                             f"(--dits: {d}): it has steps {', '.join(map(str, pts))}")
        dit_runs.append((run, cfg, {s: p for s, p in pts.items() if not only or s in only}))
    gpt_dirs = gpt_dirs.split(',')
    gpt_points = {s: p for d in reversed(gpt_dirs) for s, p in run_points(d).items()}
    gpt_points = dict(sorted(gpt_points.items()))
    contestants = {os.path.realpath(p) for p in [*gpt_points.values(), *gpt_dirs]}
    if os.path.realpath(judge) in contestants:
        raise SystemExit(f"error: the judge {judge} is a contestant: train a GPT of its own (see "
                         "bench/curve.py)")
    from transformers.utils import logging as hf_logging
    hf_logging.set_verbosity_error()

    judge_gpt, enc = load_gpt(judge, 'cpu')
    meta = load_meta(data_dir)
    ctx = dict(data_dir=data_dir, judge=judge_gpt, featurize=ev.Featurizer('minilm', 'cpu'),
               mauve_draws=mauve_draws, examples=examples, samples={})
    for b in BENCHES:
        # as eval.py: the same samples for every model
        rng = np.random.default_rng([0, zlib.crc32(b.encode())])
        samples = ev.make_samples(ev.documents(b, rng, data_dir), enc.encode_ordinary, enc.decode,
                                  128, num_samples, 8, rng)
        ctx['samples'][b] = dict(zip(('prompts', 'targets', 'lengths', 'windows'),
                                     map(list, zip(*samples))))
    ctx['all_targets'] = [t for b in BENCHES for t in ctx['samples'][b]['targets']]
    ctx['all_labels'] = [b for b in BENCHES for _ in ctx['samples'][b]['targets']]
    train_text = get_tokenizer(meta, data_dir).decode(TokenData(data_dir, 'train').tokens.tolist())
    ctx['corpus_words'] = set(words(train_text))

    os.makedirs('out/curve/points', exist_ok=True)
    settings = dict(num_samples=num_samples, judge=judge, mauve_draws=mauve_draws,
                    examples=examples)
    def cached(key, fn, **more):  # more: settings of this point alone
        path = os.path.join('out/curve/points', re.sub(r'[^\w.-]+', '_', key) + '.json')
        if os.path.exists(path):
            with open(path) as f:
                saved = json.load(f)
            if saved['settings'] == dict(settings, **more):
                return saved['result']
        result = fn()
        with open(path, 'w') as f:
            json.dump(dict(settings=dict(settings, **more), result=result), f)
        return result
    def decoding(folder):  # a block-causal DiT's tokens also depend on the decoder's window
        args = load_checkpoint(os.path.join(folder, 'ckpt.pt'), 'dit')['model_args']
        return dict(decode_window=DECODE_WINDOW) if args.get('block_len') else {}

    bf16 = 'native' if bf16_is_fast('cpu') else 'no native'
    res = dict(command='python ' + shlex.join(sys.argv), judge=judge, num_samples=num_samples,
               solo_steps=solo_steps, machine=f"cpu x{os.cpu_count()}, {bf16} bf16",
               prompts={b: ctx['samples'][b]['prompts'][:examples] for b in BENCHES},
               unigram=cached('unigram', lambda: score_point('unigram', '', 1.0, ctx)))
    res['gpt'] = dict(run=','.join(gpt_dirs), points={
        s: cached(f'gpt_{os.path.dirname(d)}_{s}', lambda: score_point('gpt', d, 1.0, ctx))
        for s, d in gpt_points.items()})
    def knowledge(run, pts):  # the yardstick's points (none for a block-causal DiT)
        shares = {s: cached(f'know_{run}_{s}', lambda: knowledge_share(d, judge_gpt, num_windows))
                  for s, d in pts.items()}
        return {s: k for s, k in shares.items() if k}

    sampler = (steps, solver, cfg_until)
    how = '' if sampler == (50, 'euler', 1.0) else f' {solver} {steps} until {cfg_until:g}'
    res['dits'] = {f'{os.path.basename(run)} cfg {cfg:g}{how}': dict(run=run, points={
        s: cached(f'dit_{run}_{s}_cfg{cfg:g}{how}',
                  lambda: score_point('textldm', d, cfg, ctx, sampler), **decoding(d))
        for s, d in pts.items()},
        knowledge=knowledge(run, pts)) for run, cfg, pts in dit_runs}
    # runs still going: score (and cache) what they have kept so far, write nothing else
    if score_only:
        for name, r in [('GPT', res['gpt'])] + list(res['dits'].items()):
            print(name,
                  {s: [round(p[b]['genppl']) for b in BENCHES] for s, p in r['points'].items()})
        sys.exit()
    res['gpt']['step_ms'] = solo_step_ms(gpt_dirs[0], 'gpt', solo_steps)
    timed = {}  # a run sampled at several guidance scales is timed once
    for r in res['dits'].values():
        if r['run'] not in timed:
            timed[r['run']] = solo_step_ms(r['run'], 'dit', solo_steps)
        r.update(step_ms=timed[r['run']], gaps=gaps(res['gpt']['points'], r['points']))
    os.makedirs(os.path.dirname(out_file), exist_ok=True)
    with open(out_file, 'w') as f:
        json.dump(res, f, indent=1)
    figure(res, out_file.replace('.json', '.png'))
    md = markdown(res)
    with open(out_file.replace('.json', '.md'), 'w') as f:
        f.write(md + '\n')
    print(md.split('\n## ')[0])
