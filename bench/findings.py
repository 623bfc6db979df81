"""
The paper's findings, reproduced at CPU scale on the embedded benchmarks (eval.py's
text-continuation protocol), with the runs of bench/dit_learns.py (same seeds, same data, every DiT
500 steps unless said):
  1. REPA on vs off: the VAE's reconstruction and the generation of a DiT trained on each latent
     space;
  2. TextLDM vs the GPT baseline at the same training tokens and at the same wall-clock;
  3. the time distribution: logit-normal std 1.5 vs 1.2 vs uniform;
  4. the CFG scale: 1, 1.5, 2, 3, 4;
  5. latent channels: 16, 32, 64;
  6. a training curve like the paper's Figure 4: ROUGE-L and MAUVE of TextLDM and the GPT at the
     same steps.
Results: bench/results/findings.json, findings.md and findings.png. A '## Reading' section already
in findings.md (written by a person after looking at the numbers) is kept when the tables are
rewritten.

    python bench/findings.py                    # hours on 2 cores; every finished run is reused
    python bench/findings.py --cached_only=True    # tabulate what has finished, start nothing
"""
import json
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import dit_learns
from dit_learns import (DEFAULT, OUT, ROOT, NotRun, curve, evaluate, lever, timed_alone, train_dit,
                        train_gpt, write_keeping_reading)
sys.path.insert(0, ROOT)
from sample import CFG

# the arms: name -> (DiT of dit_learns.DITS, eval.py overrides, what); sampled with CFG 2 unless
# said
ARMS = {DEFAULT: (DEFAULT, {}, 'the default VAE and DiT'),
        f'{DEFAULT}_cfg{CFG:g}': (DEFAULT, {'cfg': CFG}, 'the default'),
        **{k: (k, {}, k) for k in ('norepa', 't_std12', 't_uniform', 'c32', 'c64')}}
arm_lever = lambda name, n, iters, gpt: lever(name, n, iters, gpt, True, 'rouge,genppl', ARMS[name])
# python bench/train_tiny.py gpt, on the machine of bench/results/vae_tiny.json and dit_tiny.json
GPT_STEP_S = 0.501
CURVE_STEPS = (125, 250, 500)  # the last is the default run's length: its schedule is the default's
BENCHES = ('wikipedia', 'literary')

def arm(fn, *args, **kwargs):
    """fn's results, or with --cached_only=True a note of the command that has not run yet."""
    try:
        return fn(*args, **kwargs)
    except NotRun as e:
        return {'not_run': str(e)}

def table(rows, keys=('rougeL', 'genppl')):
    names = {'rougeL': 'ROUGE-L', 'genppl': 'gen. PPL', 'mauve': 'MAUVE',
             'ctx_unchanged': 'ctx-shuffle unchanged %'}
    head = '| arm | ' + ' | '.join(f'{b} {names[k]}' for b in BENCHES for k in keys) + ' |'
    lines = [head, '|---' * (1 + len(BENCHES) * len(keys)) + '|']
    for name, r in rows.items():
        if 'not_run' in r:
            lines.append(f"| {name} | not run yet: `{r['not_run']}` |")
            continue
        cells = []
        for b in BENCHES:
            for k in keys:
                v, ci = r[b].get(k), r[b].get(k + '_ci')
                cells.append('' if v is None else f'{v:.1f}'
                             + (f' [{ci[0]:.1f}, {ci[1]:.1f}]' if ci else ''))
        lines.append(f'| {name} | ' + ' | '.join(cells) + ' |')
    return '\n'.join(lines)

def figure(points_dit, points_gpt, path):
    import matplotlib
    matplotlib.use('Agg')
    import matplotlib.pyplot as plt
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.8))
    for ax, key, label in zip(axes, ('rougeL', 'mauve'), ('ROUGE-L', 'MAUVE')):
        for points, name, style in ((points_dit, 'TextLDM', 'o-'),
                                    (points_gpt, 'GPT (same steps)', 's--')):
            for b, color in zip(BENCHES, ('C0', 'C1')):
                ax.plot(list(points), [p[b][key] for p in points.values()], style, color=color,
                        label=f'{name}, {b}')
        ax.set_xscale('log', base=2)
        ax.set_xlabel('training step')
        ax.set_ylabel(label)
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=7)
    fig.suptitle('Training curve on the embedded benchmarks (cf. the paper\'s Figure 4)')
    fig.tight_layout()
    fig.savefig(path, dpi=120)

if __name__ == '__main__':
    args = dict(a[2:].split('=', 1) for a in sys.argv[1:])
    n = int(args.get('num_samples', 64))
    dit_learns.CACHED_ONLY = args.get('cached_only', 'False') == 'True'
    os.makedirs(os.path.join(ROOT, OUT, 'eval'), exist_ok=True)
    gpt, gpt_cmd = train_gpt(500)
    res = {'command': 'python bench/findings.py ' + ' '.join(sys.argv[1:])}

    # the embedded default samples with sample.CFG
    default = arm_lever(f'{DEFAULT}_cfg{CFG:g}', n, 500, gpt)
    res['repa'] = {'REPA on': arm_lever(DEFAULT, n, 500, gpt),
                   'REPA off': arm(arm_lever, 'norepa', n, 500, gpt)}
    # the GPT steps that take the VAE's and DiT's minutes (whole scripts), all three timed alone on
    # one machine by bench/train_tiny.py vae|dit|gpt: the GPT's median step there was GPT_STEP_S
    vae_dit_minutes = timed_alone('vae')['minutes'] + timed_alone('dit')['minutes']
    wall_iters = 50 * round(vae_dit_minutes * 60 / GPT_STEP_S / 50)
    def wall():
        wall_gpt = train_gpt(wall_iters, f"{OUT}/gpt_{wall_iters}")[0]
        return evaluate(f'gpt_{wall_iters}', ['--model=gpt', f'--out_dir={wall_gpt}'], n, gpt)
    same_tokens = evaluate('gpt', ['--model=gpt', f'--out_dir={gpt}'], n, gpt)
    res['ar'] = {f'TextLDM (VAE 350 + DiT 500 steps, CFG {CFG:g})': default,
                 'GPT, same training tokens (500 steps)': dict(same_tokens, train_command=gpt_cmd),
                 f'GPT, same wall-clock ({wall_iters} steps)': arm(wall),
                 'unigram floor': evaluate('unigram', ['--model=unigram', '--block_size=128'], n,
                                           gpt, False)}
    schedules = (('logit-normal 1.5 (default)', DEFAULT), ('logit-normal 1.2', 't_std12'),
                 ('uniform', 't_uniform'))
    res['t_schedule'] = {label: arm(arm_lever, k, n, 500, gpt) for label, k in schedules}
    dit_dir, _ = train_dit(DEFAULT, 500)
    textldm = lambda c: ['--model=textldm', f'--out_dir={dit_dir}', f'--cfg={c:.1f}']
    res['cfg'] = {f'cfg {c:g}': arm(evaluate, f'{DEFAULT}_cfg{c:g}', textldm(c), n, gpt)
                  for c in (1, 1.5, 2, 3, 4, 6, 8)}
    channels = (('C=16 (default)', DEFAULT), ('C=32', 'c32'), ('C=64', 'c64'))
    res['channels'] = {label: arm(arm_lever, k, n, 500, gpt) for label, k in channels}
    # the curve was measured when CFG 4 was the default (ROUGE-L at 4 and 8 are within noise,
    # dit_learns.md)
    res['curve'] = {'TextLDM': curve('dit', CURVE_STEPS, n, gpt, cfg=4.0),
                    'GPT': curve('gpt', CURVE_STEPS, n, gpt)}

    out = os.path.join(ROOT, 'bench/results')
    with open(os.path.join(out, 'findings.json'), 'w') as f:
        json.dump(res, f, indent=1)
    figure(res['curve']['TextLDM'], res['curve']['GPT'], os.path.join(out, 'findings.png'))
    md = os.path.join(out, 'findings.md')
    recon = ' / '.join(f"{k} {100 * v['vae_recon_acc']:.2f}%" for k, v in res['repa'].items()
                       if 'vae_recon_acc' in v)
    parts = [f"# The paper's findings at CPU scale\n\n{n} samples per benchmark, [95% bootstrap "
             "interval]; generative perplexity under the same-budget GPT. Every command: "
             f"findings.json. `{res['command']}`",
             f"## 1. REPA on vs off (CFG 2)\nHeld-out VAE reconstruction: {recon}.\n\n"
             + table(res['repa'], ('rougeL', 'genppl', 'ctx_unchanged')),
             "## 2. TextLDM vs the GPT baseline\n" + table(res['ar'], ('rougeL', 'genppl')),
             "## 3. Time distribution (CFG 2)\n"
             + table(res['t_schedule'], ('rougeL', 'genppl', 'ctx_unchanged')),
             "## 4. CFG scale\n" + table(res['cfg'], ('rougeL', 'genppl', 'ctx_unchanged')),
             "## 5. Latent channels (CFG 2)\nHeld-out VAE reconstruction: " + ' / '.join(
                 f"{k} {100 * v['vae_recon_acc']:.2f}%" for k, v in res['channels'].items()
                 if 'vae_recon_acc' in v) + ".\n\n"
             + table(res['channels'], ('rougeL', 'genppl', 'ctx_unchanged')),
             "## 6. Training curve (findings.png; TextLDM sampled with CFG 4)\n" + '\n\n'.join(
                 f'{name}\n\n'
                 + table({f'step {s}': p for s, p in pts.items()}, ('rougeL', 'mauve'))
                 for name, pts in res['curve'].items())]
    write_keeping_reading(md, '\n\n'.join(parts) + '\n')
    print(open(md).read())
