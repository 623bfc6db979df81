"""The training scripts end to end at tiny sizes: they learn, checkpoints round-trip, resuming reproduces
an uninterrupted run, and bad input gets one clear line."""
import re
import shutil

import pytest
import torch

from conftest import one_line_error, run_script

TINY_VAE = ['--n_embd=32', '--n_head=2', '--n_enc_layer=1', '--n_dec_layer=1', '--latent_channels=4',
            '--block_size=32', '--batch_size=8', '--eval_iters=2', '--log_interval=1', '--stats_batches=2',
            '--dtype=float32', '--warmup_iters=2']
TINY_DIT = ['--n_embd=32', '--n_head=2', '--n_layer=2', '--block_size=32', '--batch_size=8', '--eval_iters=2',
            '--log_interval=1', '--dtype=float32', '--warmup_iters=2', '--min_len=8']

def ok(proc):
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
    return proc.stdout

def iter_losses(out):
    return [float(x) for x in re.findall(r'^iter \d+: loss ([-\d.]+)', out, re.M)]

def straight_and_resumed(script, out_dir, total, common):
    """Run `script` for `total` steps in out_dir/a, and for total/2 then resumed to `total` in out_dir/b.
    Returns the straight run's log and the per-step losses of both (the resumed run's from total/2 on)."""
    straight = ok(run_script(script, f'--out_dir={out_dir}/a', f'--max_iters={total}', *common))
    ok(run_script(script, f'--out_dir={out_dir}/b', f'--max_iters={total // 2}', *common))
    resumed = ok(run_script(script, f'--out_dir={out_dir}/b', f'--max_iters={total}', '--init_from=resume', *common))
    return straight, iter_losses(straight), iter_losses(resumed)

def same_weights(dir_a, dir_b):
    wa = torch.load(f'{dir_a}/ckpt.pt', weights_only=True)['model']
    wb = torch.load(f'{dir_b}/ckpt.pt', weights_only=True)['model']
    return all(torch.allclose(wa[k], wb[k], atol=1e-6) for k in wa)

@pytest.fixture(scope='module')
def vae_dir(tiny_data, tmp_path_factory):
    out = str(tmp_path_factory.mktemp('vae'))
    ok(run_script('vae_train.py', f'--data_dir={tiny_data}', f'--out_dir={out}', '--max_iters=60', '--eval_interval=30',
                  '--repa_weight=0', '--learning_rate=1e-2', *TINY_VAE))
    return out

def test_vae_learns_and_stores_latent_stats(vae_dir):
    ckpt = torch.load(f'{vae_dir}/ckpt.pt', weights_only=True)
    assert ckpt['kind'] == 'vae' and ckpt['iter_num'] == 60 and ckpt['latent_std'].shape == (4,)
    assert (ckpt['latent_std'] > 0).all()

def test_vae_resume_reproduces_the_uninterrupted_run(tiny_data, tmp_path):
    common = [f'--data_dir={tiny_data}', '--repa_weight=0', '--lr_decay_iters=8', '--eval_interval=4', *TINY_VAE]
    _, a, b = straight_and_resumed('vae_train.py', tmp_path, 8, common)
    assert len(a) == 8 and len(b) == 4
    assert a[4:] == pytest.approx(b, rel=1e-5)
    assert same_weights(f'{tmp_path}/a', f'{tmp_path}/b')

def test_vae_with_repa_aligns(tiny_data, tmp_path):
    out = ok(run_script('vae_train.py', f'--data_dir={tiny_data}', f'--out_dir={tmp_path}', '--max_iters=40',
                        '--eval_interval=40', '--learning_rate=1e-2', *TINY_VAE))
    cos = [float(x) for x in re.findall(r'repa_cos ([-\d.]+)', out)]
    assert len(cos) == 2 and cos[0] < 0.1 and cos[1] > cos[0] + 0.2  # the REPA loss falls

@pytest.mark.parametrize('head', ['velocity', 'tokens'])
def test_dit_trains_resumes_and_samples(vae_dir, tiny_data, tmp_path, head):
    common = [f'--data_dir={tiny_data}', f'--vae_ckpt={vae_dir}/ckpt.pt', '--lr_decay_iters=40', '--eval_interval=20',
              f'--head={head}', *TINY_DIT]
    _, a, b = straight_and_resumed('dit_train.py', tmp_path, 40, common)
    assert a[20:] == pytest.approx(b, rel=1e-5)
    assert sum(a[-10:]) < sum(a[:10])  # the training loss (MSE or cross-entropy) goes down
    out = ok(run_script('sample.py', f'--out_dir={tmp_path}/a', '--prompt=the river', '--length=6', '--steps=4', '--num_samples=2'))
    assert out.count('--- sample') == 2

@pytest.mark.parametrize('args, message', [
    (['--max_iter=3'], "unknown config key 'max_iter': did you mean 'max_iters'"),
    (['--max_iters=three'], "--max_iters expects int"),
    (['config/no_such.py'], "config file 'config/no_such.py' not found"),
    (['--data_dir=/nonexistent'], "no prepared data in /nonexistent"),
    (['--repa_layer=9'], "out of range"),
    (['--repa_teacher=/nonexistent/teacher'], "teacher '/nonexistent/teacher' is not a model folder"),
    (['--repa_teacher=no-such-org/no-such-model'], "cannot load teacher 'no-such-org/no-such-model' offline: download it"),
    (['--gradient_accumulation_steps=0'], "gradient_accumulation_steps must be at least 1"),
])
def test_vae_bad_input_is_one_clear_line(tiny_data, args, message):
    one_line_error(run_script('vae_train.py', f'--data_dir={tiny_data}', '--out_dir=/tmp/never', *TINY_VAE, *args), message)

@pytest.mark.parametrize('args, message', [
    # --length=0, --steps=0, --cfg=-1, --cfg=1e999, --num_samples=0: the configurator's ranges (tests/test_configurator.py)
    (['--length=100000'], '--length must be between 1 and'),
    (['--out_dir=/nonexistent'], 'no checkpoint at /nonexistent/ckpt.pt'),
    # a byte that is not UTF-8 reaches Python's argv as a lone surrogate, which a strict UTF-8 stdout cannot print
    ([b'--prompt=caf\xff'], "--prompt is not UTF-8 text (character 3 is '\\udcff'"),
])
def test_sample_bad_input_is_one_clear_line(dit_dir, args, message):
    one_line_error(run_script('sample.py', f'--out_dir={dit_dir}', *args), message)

@pytest.fixture(scope='module')
def dit_dir(vae_dir, tiny_data, tmp_path_factory):
    out = str(tmp_path_factory.mktemp('dit'))
    ok(run_script('dit_train.py', f'--data_dir={tiny_data}', f'--vae_ckpt={vae_dir}/ckpt.pt', f'--out_dir={out}',
                  '--max_iters=2', '--eval_interval=2', *TINY_DIT))
    return out

def test_sampling_or_resuming_a_dit_refuses_a_vae_it_was_not_trained_on(vae_dir, dit_dir, tiny_data, tmp_path):
    ckpt = torch.load(f'{vae_dir}/ckpt.pt', weights_only=True)
    ckpt['model']['to_moments.weight'] += 0.01  # another VAE of the same shape
    torch.save(ckpt, tmp_path / 'other.pt')
    one_line_error(run_script('sample.py', f'--out_dir={dit_dir}', f'--vae_ckpt={tmp_path}/other.pt'),
                   f'the DiT in {dit_dir} was trained on another VAE than {tmp_path}/other.pt')
    shutil.copytree(dit_dir, tmp_path / 'dit')
    one_line_error(run_script('dit_train.py', f'--data_dir={tiny_data}', f'--out_dir={tmp_path}/dit', f'--vae_ckpt={tmp_path}/other.pt',
                              '--init_from=resume', *TINY_DIT), f'{tmp_path}/dit/ckpt.pt was trained on another VAE than {tmp_path}/other.pt')

def test_sample_keeps_the_end_of_a_long_prompt(dit_dir):
    out = ok(run_script('sample.py', f'--out_dir={dit_dir}', '--prompt=' + 'the river king ' * 40, '--length=8', '--steps=2'))
    assert 'warning: a prompt is longer than the context' in out and '--- sample 1/1' in out

def test_dit_refuses_a_checkpoint_of_another_kind(vae_dir, tiny_data):
    one_line_error(run_script('sample.py', f'--out_dir={vae_dir}'), 'is a vae checkpoint, but a dit checkpoint is needed')
