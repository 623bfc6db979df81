"""What the test modules share: the tiny prepared data, the tiny model sizes, ways to run the
project's scripts (as a user would, in a process of their own, or in this process), and one trained
tiny VAE and DiT on it."""
import io
import os
import re
import runpy
import shlex
import subprocess
import sys
from contextlib import redirect_stderr, redirect_stdout

import numpy as np
import pytest
import torch
from hypothesis import strategies as st

# tests import the project's top-level modules and run its scripts from the repository root
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
os.environ.setdefault('HF_HUB_OFFLINE', '1')
os.environ.setdefault('TRANSFORMERS_OFFLINE', '1')

# The tests' models are tiny: a second thread gains them nothing, and on a busy 2-core machine two
# threads spin and wait on each other (3-4x slower). One thread in this process and in the scripts
# it starts (torchrun gives each rank one too).
torch.set_num_threads(1)
os.environ.setdefault('OMP_NUM_THREADS', '1')

DATA_SETTINGS = dict(dataset='embedded', tokenizer='bpe300', seed=3, val_frac=0.1, test_frac=0.1)

# tiny sizes for the three trainers: a step takes milliseconds
TINY_VAE = ['--n_embd=32', '--n_head=2', '--n_enc_layer=1', '--n_dec_layer=1',
            '--latent_channels=4', '--block_size=32', '--batch_size=8', '--eval_iters=2',
            '--log_interval=1', '--stats_batches=2', '--dtype=float32', '--warmup_iters=2']
TINY_DIT = ['--n_embd=32', '--n_head=2', '--n_layer=2', '--block_size=32', '--batch_size=8',
            '--eval_iters=2', '--log_interval=1', '--dtype=float32', '--warmup_iters=2',
            '--min_len=8']
TINY_GPT = ['--n_embd=32', '--n_head=2', '--n_layer=2', '--block_size=32', '--batch_size=8',
            '--eval_iters=2', '--log_interval=1', '--dtype=float32', '--warmup_iters=2',
            '--min_len=8']

def make_docs():
    """80 small documents of two sources, with the unicode and special-token text a tokenizer must
    survive."""
    words = 'the of river castle king queen music film war city 1984 ünïcödé 🙂'.split()
    rng = np.random.default_rng(0)
    docs = [dict(source='wikipedia', title=f'Article {i}',
                 text=' '.join(rng.choice(words, size=rng.integers(5, 60))) + '.')
            for i in range(50)]
    docs += [dict(source='literary', title=f'Play {i}',
                  text=f'ACT {i}.\n\nScene I. A room.\n\nHAMLET.\n'
                  + '\n'.join(rng.choice(words, size=rng.integers(20, 200))))
             for i in range(30)]
    docs[7]['text'] += ' <|endoftext|> is only text in a document'
    return docs

@pytest.fixture(scope='session')
def tiny_data(tmp_path_factory):
    """A prepared data folder of the tiny documents (BPE of 300 tokens)."""
    import prepare_data
    out = str(tmp_path_factory.mktemp('data') / 'tiny')
    prepare_data.prepare(out, DATA_SETTINGS, os.path.join(ROOT, 'data', 'cache'), num_proc=1,
                         docs=make_docs())
    return out

# any text: what the tokenizer must round-trip and the prompt path must survive
TEXT = st.one_of(
    st.text(max_size=3000),  # any unicode but surrogates, empty included
    st.text(st.characters(max_codepoint=0x9f), max_size=300),  # ASCII, C0 and C1 control characters
    # special-token text, whitespace runs, joiners
    st.lists(st.sampled_from(['<|endoftext|>', '\r\n', '\t', ' ', '\x00', 'ü', '🙂', '\u200d',
                              'the', ' river']), max_size=200).map(''.join),
)

# -----------------------------------------------------------------------------
# README.md's command lines

README_SAMPLE = 'python sample.py --prompt "The river" --length 48 --num_samples 3'

def readme_commands():
    """Each command line in README.md (```sh blocks and `inline code`) that runs a script of the
    project: (the line, the script, its arguments). Templates (with `...`) are left out."""
    text = open(os.path.join(ROOT, 'README.md')).read()
    lines = [line for block in re.findall(r'```sh\n(.*?)```', text, re.S)
             for line in block.splitlines()]
    lines += re.findall(r'`((?:python|torchrun) [^`]*)`', text)
    out = []
    for line in lines:
        words = shlex.split(line, comments=True)
        if (not words or words[0] not in ('python', 'torchrun') or '-m' in words[:2]
                or '...' in words):
            continue
        at = next(i for i, w in enumerate(words) if w.endswith('.py'))  # after torchrun's own flags
        out.append((line.split('#')[0].strip(), words[at], words[at + 1:]))
    return out

# -----------------------------------------------------------------------------
# running the scripts

def run_script(*args, timeout=300):
    """Run one of the project's scripts as a user would; returns the CompletedProcess (never
    raises)."""
    return subprocess.run([sys.executable, *args], cwd=ROOT, capture_output=True, text=True,
                          timeout=timeout, env=dict(os.environ, PYTHONUNBUFFERED='1'))

def run_main(script, *args):
    """Run a script's __main__ in this process, from the repository root with `args` as its command
    line, and return what run_script would: its exit status and its stdout and stderr. Python ends a
    process that raises SystemExit('error: ...') with status 1 and the message as stderr's one line:
    so does this. Any other exception is raised here, as it would be a traceback there. Saves the
    2-3 s of a new interpreter that imports torch, where the test does not need a process of its own
    (warnings, argv bytes, torchrun)."""
    path = os.path.join(ROOT, script)
    out, err, code = io.StringIO(), io.StringIO(), 0
    # a script may switch autograd off globally
    argv, cwd, grad = sys.argv, os.getcwd(), torch.is_grad_enabled()
    sys.argv = [path, *args]
    os.chdir(ROOT)
    try:
        with redirect_stdout(out), redirect_stderr(err):
            runpy.run_path(path, run_name='__main__')
    except SystemExit as e:
        if isinstance(e.code, str):
            err.write(e.code + '\n')
        code = 1 if isinstance(e.code, str) else e.code or 0
    finally:
        sys.argv = argv
        os.chdir(cwd)
        torch.set_grad_enabled(grad)
    return subprocess.CompletedProcess([path, *args], code, out.getvalue(), err.getvalue())

def one_line_error(proc, message):
    """A user mistake: a non-zero exit, no traceback, and one line on stderr, `error: ...` holding
    message."""
    lines = proc.stderr.strip().splitlines()
    assert proc.returncode != 0 and 'Traceback' not in proc.stderr, proc.stderr[-3000:]
    assert len(lines) == 1 and lines[0].startswith('error: ') and message in lines[0], \
        proc.stderr[-3000:]

def ok(proc):
    """A run that succeeded: its stdout."""
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
    return proc.stdout

def iter_losses(out):
    """The training loss of every step a trainer logged."""
    return [float(x) for x in re.findall(r'^iter \d+: loss ([-\d.]+)', out, re.M)]

def straight_and_resumed(script, out_dir, total, common):
    """Run `script` for `total` steps in out_dir/a, and for total/2 then resumed to `total` in
    out_dir/b. Returns the straight run's log and the per-step losses of both (the resumed run's
    from total/2 on)."""
    straight = ok(run_main(script, f'--out_dir={out_dir}/a', f'--max_iters={total}', *common))
    ok(run_main(script, f'--out_dir={out_dir}/b', f'--max_iters={total // 2}', *common))
    resumed = ok(run_main(script, f'--out_dir={out_dir}/b', f'--max_iters={total}',
                          '--init_from=resume', *common))
    return straight, iter_losses(straight), iter_losses(resumed)

def same_weights(dir_a, dir_b, atol=1e-6):
    wa = torch.load(f'{dir_a}/ckpt.pt', weights_only=True)['model']
    wb = torch.load(f'{dir_b}/ckpt.pt', weights_only=True)['model']
    return wa.keys() == wb.keys() and all(torch.allclose(wa[k], wb[k], atol=atol) for k in wa)

# -----------------------------------------------------------------------------
# one trained tiny TextLDM for the whole run, shared by every module. A test that would write into
# their folders works on a copy.

VAE_STEPS = 60

@pytest.fixture(scope='session')
def vae_dir(tiny_data, tmp_path_factory):
    """A tiny VAE (REPA off) trained for VAE_STEPS steps, evaluated every 30, on 64-token windows
    (the README's 48 new tokens fit): its folder, with the run's log as log.txt."""
    out = str(tmp_path_factory.mktemp('vae'))
    log = ok(run_main('vae_train.py', f'--data_dir={tiny_data}', f'--out_dir={out}',
                      f'--max_iters={VAE_STEPS}', '--eval_interval=30', '--repa_weight=0',
                      '--learning_rate=1e-2', *TINY_VAE, '--block_size=64'))
    with open(f'{out}/log.txt', 'w') as f:
        f.write(log)
    return out

@pytest.fixture(scope='session')
def dit_dir(vae_dir, tiny_data, tmp_path_factory):
    """A tiny DiT (velocity head) on vae_dir's VAE, 2 steps, 64-token windows: enough to sample, not
    to be good."""
    out = str(tmp_path_factory.mktemp('dit'))
    ok(run_main('dit_train.py', f'--data_dir={tiny_data}', f'--vae_ckpt={vae_dir}/ckpt.pt',
                f'--out_dir={out}', '--max_iters=2', '--eval_interval=2', *TINY_DIT,
                '--block_size=64'))
    return out

@pytest.fixture(scope='session')
def gpt_dir(tiny_data, tmp_path_factory):
    """A tiny GPT (32-token context), 10 steps: enough to run it and to judge, not to be good."""
    out = str(tmp_path_factory.mktemp('gpt'))
    ok(run_main('ar_train.py', f'--data_dir={tiny_data}', f'--out_dir={out}', '--eval_interval=10',
                '--max_iters=10', *TINY_GPT))
    return out
