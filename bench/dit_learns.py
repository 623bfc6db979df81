"""
What makes the small DiT learn: each lever trains a DiT (and, where it changes the latent, its VAE)
on the embedded default and is scored with the two floors measured in the same run: random tokens at
corpus frequency (unigram) and a GPT trained for the same steps. Figures: the DiT's context gain
(bench/context_gain.py: how much the true context lowers its flow loss against another window's, at
t = 0.2 / 0.35 / 0.5), and eval.py's ROUGE-L, prompt-specific ROUGE-L and generative perplexity
(under that GPT), each with its 95% bootstrap interval, and MAUVE, on the held-out wikipedia and
literary splits. Results: bench/results/dit_learns.json and dit_learns.md (with the LONG levers
trained twice as long).

    python bench/dit_learns.py                          # every lever (hours on 2 cores; resumable)
    python bench/dit_learns.py --levers=tokens --num_samples=100
    python bench/dit_learns.py --cached_only=True       # tabulate what has finished

Each run's folder is out/lev/<name>; a finished run is not trained again, so the script can be
resumed.
"""
import json
import os
import shutil
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

OUT = 'out/lev'
# the latents: VAE name -> vae_train.py overrides of config/vae_tiny.py (the default: REPA on the
# encoder output, C=16, decoder noise of up to 1 latent std); 'base' is the paper's VAE, without
# decoder noise
PAPER = {'dec_noise': 0.0}
VAES = {
    'base': PAPER,
    'dec_noise': {},
    'norepa': {'repa_weight': 0.0},
    'c32': {'latent_channels': 32},
    'c64': {'latent_channels': 64},
}
# the DiTs: name -> (VAE, dit_train.py overrides of config/dit_tiny.py, 500 steps unless a lever
# says). Every override is spelled out, so a row keeps its meaning when the defaults change.
# the paper's head, as config/dit_tiny.py had it
VELOCITY = {'head': 'velocity', 'learning_rate': 1e-3}
TOKENS = {'head': 'tokens', 'learning_rate': 1e-3}
DITS = {
    'base': ('base', VELOCITY),
    'dec_noise': ('dec_noise', VELOCITY),
    'norepa': ('norepa', VELOCITY),
    't_uniform': ('dec_noise', {**VELOCITY, 't_schedule': 'uniform'}),
    't_std12': ('dec_noise', {**VELOCITY, 't_std': 1.2}),
    'c32': ('c32', VELOCITY),
    'c64': ('c64', VELOCITY),
    'tokens': ('dec_noise', TOKENS),
    'tokens_lr2': ('dec_noise', {**TOKENS, 'learning_rate': 2e-3}),
}
DEFAULT = 'dec_noise'  # the embedded default's DiT (config/vae_tiny.py + config/dit_tiny.py)
# lever -> (DiT, eval.py overrides, what it tests); sampling: 50 Euler steps, CFG 2 unless said
LEVERS = {
    'velocity_cfg4': ('dec_noise', {'cfg': 4.0},
                      "the paper's velocity head (MSE) on the default VAE, CFG 4"),
    'velocity_cfg8': ('dec_noise', {'cfg': 8.0}, "the paper's velocity head, CFG 8: THE DEFAULT"),
    'tokens': ('tokens', {},
               'token head: score interpolation over per-token latents, cross-entropy'),
    'tokens_lr2': ('tokens_lr2', {}, 'token head, learning rate 2e-3'),
    'tokens_lr2_cfg4': ('tokens_lr2', {'cfg': 4.0}, 'token head, learning rate 2e-3, CFG 4'),
    'tokens_cfg1': ('tokens', {'cfg': 1.0}, 'token head, no guidance'),
}
DEFAULT_LEVER = 'velocity_cfg8'  # the embedded default: its DiT at sample.CFG
LONG = (DEFAULT_LEVER, 'tokens')  # also trained twice as long: what more compute buys


CACHED_ONLY = False  # --cached_only=True: tabulate the finished runs, start none
METRICS = 'rouge,genppl,mauve'

class NotRun(Exception):
    pass

def run(cmd, done, log):
    """Run cmd (a list) from the repository root unless `done` exists; its output goes to log."""
    if not os.path.exists(os.path.join(ROOT, done)):
        if CACHED_ONLY:
            raise NotRun('python ' + ' '.join(cmd))
        print('$', ' '.join(cmd), flush=True)
        with open(os.path.join(ROOT, log), 'w') as f:
            if subprocess.run([sys.executable] + cmd, cwd=ROOT, stdout=f,
                              stderr=subprocess.STDOUT).returncode:
                raise SystemExit(f"error: `python {' '.join(cmd)}` failed: see {log}")
    return 'python ' + ' '.join(cmd)

PAPER_SAMPLER = ['--steps=50', '--solver=euler', '--cfg_until=1.0']  # as these results were made

def evaluate(name, model_args, num_samples, judge, shuffle=True, metrics='rouge,genppl'):
    """eval.py's results for one model (cached in out/lev/eval/<name>_n<num_samples>.json) and its
    command."""
    out_file = f'{OUT}/eval/{name}_n{num_samples}.json'
    cmd = ['eval.py', *PAPER_SAMPLER, *model_args, f'--num_samples={num_samples}',
           f'--metrics={metrics}', f'--judge={judge}', f'--shuffle_test={shuffle}',
           f'--out_file={out_file}']
    command = run(cmd, out_file, out_file[:-4] + 'log')
    with open(os.path.join(ROOT, out_file)) as f:
        return dict(json.load(f)['results'], eval_command=command)

def overrides(d):
    return [f'--{k}={v}' for k, v in d.items()]

def train_gpt(iters, out_dir=f'{OUT}/gpt'):
    """A GPT of the DiT's width trained on the same windows for `iters` steps -> its folder,
    command."""
    return out_dir, run(['ar_train.py', 'config/gpt_tiny.py', f'--out_dir={out_dir}',
                         f'--max_iters={iters}'], f'{out_dir}/summary.json', f'{out_dir}.log')

def train_dit(name, iters):
    """The DiT `name` of DITS (and its VAE) -> its folder and a record of both trainings."""
    vae, dit_over = DITS[name]
    vae_dir = f'{OUT}/vae_{vae}'
    dit_dir = f'{OUT}/dit_{name}' + (f'_{iters}' if iters != 500 else '')
    vae_cmd = run(['vae_train.py', 'config/vae_tiny.py', f'--out_dir={vae_dir}']
                  + overrides(VAES[vae]), f'{vae_dir}/summary.json', f'{vae_dir}.log')
    dit_cmd = run(['dit_train.py', 'config/dit_tiny.py', f'--out_dir={dit_dir}',
                   f'--vae_ckpt={vae_dir}/ckpt.pt',
                   f'--max_iters={iters}'] + overrides(dit_over), f'{dit_dir}/summary.json',
                  f'{dit_dir}.log')
    with open(os.path.join(ROOT, vae_dir, 'summary.json')) as f:
        vae_sum = json.load(f)
    with open(os.path.join(ROOT, dit_dir, 'summary.json')) as f:
        dit_sum = json.load(f)
    return dit_dir, dict(vae_recon_acc=vae_sum['final_eval']['acc_mu'],
                         vae_minutes=vae_sum['minutes'], dit_minutes=dit_sum['minutes'],
                         dit_val_loss=dit_sum['final_eval']['ema'], vae_command=vae_cmd,
                         dit_command=dit_cmd)

def curve(kind, steps, num_samples, judge, shuffle=False, metrics='rouge,mauve', name=None,
          cfg=4.0):
    """One run of the default DiT (or the GPT) to steps[-1] with its schedule set for that many
    steps, evaluated at each of `steps` (a resumed run reproduces the uninterrupted one; the DiT
    sampled with guidance `cfg`) -> {step: results}. With --cached_only, the points so far."""
    vae, dit_over = DITS[DEFAULT]
    work, points = f"{OUT}/{name or 'curve_' + kind}", {}
    for step in steps:
        done = f'{work}_{step}'
        if kind == 'dit':
            cmd = ['dit_train.py', 'config/dit_tiny.py',
                   f'--vae_ckpt={OUT}/vae_{vae}/ckpt.pt'] + overrides(dit_over)
        else:
            cmd = ['ar_train.py', 'config/gpt_tiny.py']
        cmd += [f'--out_dir={work}', f'--max_iters={step}', f'--lr_decay_iters={steps[-1]}',
                f'--eval_interval={steps[0]}',
                f"--init_from={'resume' if step > steps[0] else 'scratch'}"]
        model = ['--model=textldm', f'--cfg={cfg:.1f}'] if kind == 'dit' else ['--model=gpt']
        try:
            command = run(cmd, f'{done}/summary.json', f'{done}.log')
            if not os.path.exists(os.path.join(ROOT, done, 'summary.json')):
                shutil.copytree(os.path.join(ROOT, work), os.path.join(ROOT, done))
            label = os.path.basename(work) + (f'_cfg{cfg:g}' if kind == 'dit' else '') + f'_{step}'
            points[step] = dict(evaluate(label, model + [f'--out_dir={done}'], num_samples, judge,
                                         shuffle, metrics), train_command=command)
            if kind == 'dit':
                points[step]['context_gain'] = gain(done)
        except NotRun:
            break
    return points

def timed_alone(stage):
    """The default `stage` ('vae' or 'dit') timed alone on the 2-core machine by bench/train_tiny.py
    (the runs here share the CPU, so their own clocks are not comparable): its
    bench/results/<stage>_tiny.json."""
    with open(os.path.join(ROOT, f'bench/results/{stage}_tiny.json')) as f:
        return json.load(f)

def write_keeping_reading(path, text):
    """Write a results page, keeping the '## Reading' section a person wrote under the previous
    tables."""
    old = open(path).read().split('## Reading', 1) if os.path.exists(path) else []
    with open(path, 'w') as f:
        f.write(text + ('\n## Reading' + old[1] if len(old) > 1 else ''))

def gain(dit_dir, judge):
    """bench/context_gain.py's table for a trained DiT, with the GPT `judge` as its yardstick
    (cached next to it), and its command."""
    out_file = f'{dit_dir}.gain.json'
    command = run(['bench/context_gain.py', f'--out_dir={dit_dir}', f'--gpt_dir={judge}',
                   f'--out_file={out_file}'], out_file, f'{dit_dir}.gain.log')
    with open(os.path.join(ROOT, out_file)) as f:
        return dict(json.load(f), gain_command=command)

def lever(name, num_samples, iters, judge, shuffle=False, metrics=METRICS, spec=None):
    """Train (or reuse) the DiT of lever `name` (or of spec: (DiT, eval.py overrides, what)), score
    it."""
    dit, eval_over, what = spec or LEVERS[name]
    dit_dir, record = train_dit(dit, iters)
    res = evaluate(name + (f'_{iters}' if iters != 500 else '') + ('_shuffle' if shuffle else ''),
                   ['--model=textldm', f'--out_dir={dit_dir}']
                   + overrides({'cfg': 2.0, **eval_over}), num_samples, judge, shuffle, metrics)
    return dict(res, what=what, context_gain=gain(dit_dir, judge), **record)

BENCHES = ('wikipedia', 'literary')

def cells(r):
    """A row's figures: context gain at t = 0.2 / 0.35 / 0.5, then per benchmark ROUGE-L,
    prompt-specific ROUGE-L, generative perplexity (each with its 95% interval) and MAUVE."""
    fmt = lambda b, k: f"{r[b][k]:.1f} [{r[b][k + '_ci'][0]:.1f}, {r[b][k + '_ci'][1]:.1f}]"
    out = [' / '.join(f'{100 * g:.1f}' for g in r['context_gain']['summary'].values())
           if 'context_gain' in r else '']
    for b in BENCHES:
        out += [fmt(b, 'rougeL'), fmt(b, 'rougeL_specific'), fmt(b, 'genppl'),
                f"{r[b]['mauve']:.1f}"]
    return out

def table(rows, first='run'):
    metrics = ('ROUGE-L', 'prompt-specific ROUGE-L', 'gen. PPL', 'MAUVE')
    head = [first, 'context gain % (t = 0.2 / 0.35 / 0.5)'] + [f'{b} {k}' for b in BENCHES
                                                               for k in metrics]
    lines = ['| ' + ' | '.join(head) + ' |', '|---' * len(head) + '|']
    lines += [f'| {name} | ' + ' | '.join(cells(r)) + ' |' for name, r in rows.items()]
    return '\n'.join(lines)

if __name__ == '__main__':
    args = dict(a[2:].split('=', 1) for a in sys.argv[1:])
    names = args.get('levers', ','.join(LEVERS)).split(',')
    unknown = [n for n in names if n not in LEVERS]
    if unknown:
        raise SystemExit(f"error: unknown lever {','.join(unknown)}: choose from "
                         f"{', '.join(LEVERS)}")
    num_samples, dit_iters = int(args.get('num_samples', 64)), int(args.get('dit_iters', 500))
    CACHED_ONLY = args.get('cached_only', 'False') == 'True'
    os.makedirs(os.path.join(ROOT, OUT, 'eval'), exist_ok=True)

    # the floors, measured in the same run: a GPT trained for as many steps as each DiT, and unigram
    # text
    gpt, gpt_cmd = train_gpt(dit_iters)
    rows = {'unigram floor': dict(evaluate('unigram', ['--model=unigram', '--block_size=128'],
                                           num_samples, gpt, False, METRICS),
                                  what='random tokens at training-corpus frequency'),
            'same-budget GPT': dict(evaluate('gpt', ['--model=gpt', f'--out_dir={gpt}'],
                                             num_samples, gpt, False, METRICS),
                                    what=f'GPT, same width, {dit_iters} steps',
                                    train_command=gpt_cmd)}
    for name in dict.fromkeys(names + [DEFAULT_LEVER]):
        try:
            rows[name] = lever(name, num_samples, dit_iters, gpt)
        except NotRun as e:
            print(f'not run yet, left out: {name} ({e})')
    # what more compute buys: DiTs trained twice as long (the schedule set for it)
    long = {}
    for name in LONG:
        try:
            long[name] = {dit_iters: rows.get(name) or lever(name, num_samples, dit_iters, gpt),
                          2 * dit_iters: lever(name, num_samples, 2 * dit_iters, gpt)}
        except NotRun as e:
            print(f'not run yet, left out: {name} at {2 * dit_iters} steps ({e})')
    with open(os.path.join(ROOT, 'bench/results/dit_learns.json'), 'w') as f:
        json.dump(dict(command='python bench/dit_learns.py ' + ' '.join(sys.argv[1:]), rows=rows,
                       long_run=long), f, indent=1)
    minutes = lambda steps: (timed_alone('vae')['minutes']
                             + steps * timed_alone('dit')['median_step_ms'] / 60e3)
    text = (table(rows) + '\n\n' + '\n'.join(f"- {name}: {r['what']}" for name, r in rows.items()) +
            f"\n\n{num_samples} samples per benchmark; [95% bootstrap interval]; generative "
            "perplexity under the same-budget GPT; sampled with CFG 2 unless the lever says. "
            f"Commands: dit_learns.json.\n\nWhat more compute buys: {', '.join(LONG)} trained "
            f"{2 * dit_iters} steps with the schedule set for them ; minutes = the VAE and the "
            "DiT's steps timed alone on the 2-core CPU (bench/results/vae_tiny.json, "
            "dit_tiny.json)\n\n" +
            table({f'{name}, {s} steps, {minutes(s):.0f} min': r for name, runs in long.items()
                   for s, r in runs.items()}, 'DiT, steps') + '\n')
    write_keeping_reading(os.path.join(ROOT, 'bench/results/dit_learns.md'), text)
    print(text)
