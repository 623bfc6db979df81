"""The training scripts end to end at tiny sizes: they learn, resuming reproduces an uninterrupted
run, gradients are clipped, a loss that blows up stops the run before it can overwrite the last good
checkpoint, and bad input gets one clear line."""
import hashlib
import re
import shutil

import pytest
import torch

from conftest import (TINY_DIT, TINY_GPT, TINY_VAE, VAE_STEPS, ok, one_line_error, run_main,
                      run_script, same_weights, straight_and_resumed)

def digest(path):
    with open(path, 'rb') as f:
        return hashlib.sha256(f.read()).hexdigest()

def val_lines(log, key):
    """`key` of every `step N: val ...` line of a trainer's log."""
    return [float(x) for x in re.findall(rf'^step \d+: val .*?{key} ([-\d.]+)', log, re.M)]

# -----------------------------------------------------------------------------
# the VAE

def test_vae_learns_and_stores_latent_stats(vae_dir):
    ckpt = torch.load(f'{vae_dir}/ckpt.pt', weights_only=True)
    assert (ckpt['kind'] == 'vae' and ckpt['iter_num'] == VAE_STEPS
            and ckpt['latent_std'].shape == (4,))
    assert (ckpt['latent_std'] > 0).all() and ckpt['latent_mean'].isfinite().all()
    log = open(f'{vae_dir}/log.txt').read()
    ce = val_lines(log, 'ce')
    # the reconstruction loss falls (ln 300 = 5.7 at first)
    assert len(ce) == 3 and ce[-1] < 0.7 * ce[0], log[-3000:]

def test_vae_with_repa_aligns_and_resume_reproduces_the_uninterrupted_run(tiny_data, tmp_path):
    """With the REPA teacher on (its alignment in the loss), a run stopped halfway and resumed
    takes the same steps as one that never stopped, and the REPA cosine rises."""
    common = [f'--data_dir={tiny_data}', '--lr_decay_iters=20', '--eval_interval=10',
              '--learning_rate=1e-2', *TINY_VAE]
    straight, a, b = straight_and_resumed('vae_train.py', tmp_path, 20, common)
    assert len(a) == 20 and len(b) == 10
    assert a[10:] == pytest.approx(b, rel=1e-5)
    assert same_weights(f'{tmp_path}/a', f'{tmp_path}/b')
    cos = val_lines(straight, 'repa_cos')
    # the REPA loss falls
    assert len(cos) == 3 and cos[0] < 0.1 and cos[-1] > cos[0] + 0.2, straight[-3000:]

# -----------------------------------------------------------------------------
# the DiT

@pytest.mark.parametrize('head', [['--head=velocity'], ['--head=tokens']])
def test_dit_trains_resumes_and_samples(vae_dir, tiny_data, tmp_path, head):
    common = [f'--data_dir={tiny_data}', f'--vae_ckpt={vae_dir}/ckpt.pt', '--lr_decay_iters=40',
              '--eval_interval=20', *head, *TINY_DIT]
    straight, a, b = straight_and_resumed('dit_train.py', tmp_path, 40, common)
    assert len(a) == 40 and len(b) == 20
    assert a[20:] == pytest.approx(b, rel=1e-5)
    assert same_weights(f'{tmp_path}/a', f'{tmp_path}/b')
    # the loss (MSE or cross-entropy) goes down: in training (0.73-0.82 of the first 10 steps' over
    # seeds) and on the fixed val batches
    val = val_lines(straight, 'loss')
    assert sum(a[-10:]) < sum(a[:10]) and len(val) == 3 and val[-1] < val[0], straight[-3000:]
    out = ok(run_main('sample.py', f'--out_dir={tmp_path}/a', '--prompt=the river', '--length=6',
                      '--steps=4', '--num_samples=2'))
    assert out.count('--- sample') == 2

def test_resuming_past_max_iters_is_one_line(vae_dir, dit_dir, tiny_data, tmp_path):
    dit = shutil.copytree(dit_dir, tmp_path / 'dit')  # trained for 2 steps
    before = digest(dit / 'ckpt.pt')
    one_line_error(run_main('dit_train.py', f'--data_dir={tiny_data}',
                            f'--vae_ckpt={vae_dir}/ckpt.pt', f'--out_dir={dit}',
                            '--init_from=resume', '--max_iters=1', *TINY_DIT, '--block_size=64'),
                   f'{dit}/ckpt.pt is at step 2, past max_iters=1: raise max_iters to train on')
    assert digest(dit / 'ckpt.pt') == before

# -----------------------------------------------------------------------------
# all three trainers

def test_every_trainer_clips_its_gradients_by_default(vae_dir, tiny_data, tmp_path, monkeypatch):
    clip = torch.nn.utils.clip_grad_norm_
    calls = []
    monkeypatch.setattr(torch.nn.utils, 'clip_grad_norm_', lambda params, max_norm, *a, **kw:
                        calls.append(max_norm) or clip(params, max_norm, *a, **kw))
    for script, tiny in [('vae_train.py', [*TINY_VAE, '--repa_weight=0']),
                         ('dit_train.py', [f'--vae_ckpt={vae_dir}/ckpt.pt', *TINY_DIT]),
                         ('ar_train.py', TINY_GPT)]:
        calls.clear()
        ok(run_main(script, f'--data_dir={tiny_data}', f'--out_dir={tmp_path}/{script}',
                    '--max_iters=2', '--eval_interval=2', *tiny))
        assert len(calls) == 2 and all(0 < c < float('inf') for c in calls), (script, calls)

def test_keep_steps_keeps_a_curve_from_one_run(tiny_data, tmp_path):
    """--keep_steps: the run's checkpoints at those steps stay in out_dir/step<N>/ (the last one is
    ckpt.pt too)."""
    ok(run_main('ar_train.py', f'--data_dir={tiny_data}', f'--out_dir={tmp_path}/gpt',
                '--max_iters=6', '--eval_interval=100', '--keep_steps=2,6', *TINY_GPT))
    kept = {d.name: torch.load(d / 'ckpt.pt', weights_only=True)
            for d in sorted((tmp_path / 'gpt').glob('step*'))}
    assert list(kept) == ['step2', 'step6'] and [c['iter_num'] for c in kept.values()] == [2, 6]
    assert kept['step6']['config']['max_iters'] == 6  # the kept steps are on the run's own schedule
    assert digest(tmp_path / 'gpt' / 'step6' / 'ckpt.pt') == digest(tmp_path / 'gpt' / 'ckpt.pt')
    assert not torch.equal(kept['step2']['model']['wte.weight'],
                           kept['step6']['model']['wte.weight'])

@pytest.mark.parametrize('keep, message', [
    ('2,x', "keep_steps must be comma-separated step numbers like '500,1000'"),
    ('0,4', 'keep_steps must lie in 1..max_iters=4'),
])
def test_bad_keep_steps_is_one_line(tiny_data, tmp_path, keep, message):
    one_line_error(run_main('ar_train.py', f'--data_dir={tiny_data}', f'--out_dir={tmp_path}/gpt',
                            '--max_iters=4', f'--keep_steps={keep}', *TINY_GPT), message)
    assert not (tmp_path / 'gpt').exists()

# a loss that becomes NaN: a huge learning rate turns the weights to garbage in one step

def blow_up(src, dst, tiny_data, eval_interval):
    """Resume a copy of the trained VAE (step VAE_STEPS) with a learning rate that ruins it in one
    step."""
    shutil.copytree(src, dst)
    return run_main('vae_train.py', f'--data_dir={tiny_data}', f'--out_dir={dst}',
                    f'--eval_interval={eval_interval}', '--repa_weight=0', '--learning_rate=1e30',
                    '--init_from=resume', f'--max_iters={VAE_STEPS + 8}', *TINY_VAE,
                    '--block_size=64')

def test_nan_loss_stops_with_one_line_and_keeps_the_last_good_checkpoint(
        vae_dir, tiny_data, tmp_path):
    # step VAE_STEPS ruins the weights; the next step's loss is nan
    proc = blow_up(vae_dir, tmp_path / 'vae', tiny_data, 100)
    one_line_error(proc, f'error: loss is nan at step {VAE_STEPS + 1}')
    assert digest(tmp_path / 'vae' / 'ckpt.pt') == digest(f'{vae_dir}/ckpt.pt')

def test_an_eval_step_after_the_blowup_does_not_overwrite_the_last_good_checkpoint(
        vae_dir, tiny_data, tmp_path):
    # step VAE_STEPS ruins the weights; the next step evaluates them first (val loss nan) and must
    # stop without saving
    proc = blow_up(vae_dir, tmp_path / 'vae', tiny_data, VAE_STEPS + 1)
    one_line_error(proc, f'error: val loss is nan at step {VAE_STEPS + 1}')
    assert digest(tmp_path / 'vae' / 'ckpt.pt') == digest(f'{vae_dir}/ckpt.pt')

# -----------------------------------------------------------------------------
# bad input: one line, before anything is created

@pytest.mark.parametrize('args, message', [
    (['--max_iter=3'], "unknown config key 'max_iter': did you mean 'max_iters'"),
    (['--max_iters=three'], "--max_iters expects int"),
    (['config/no_such.py'], "config file 'config/no_such.py' not found"),
    (['--data_dir=/nonexistent'], "no prepared data in /nonexistent"),
    (['--repa_layer=9'], "out of range"),
    (['--repa_teacher=/nonexistent/teacher'],
     "teacher '/nonexistent/teacher' is not a model folder"),
    (['--gradient_accumulation_steps=0'], "gradient_accumulation_steps must be at least 1"),
    (['--min_len=40'], "need 1 <= min_len <= block_size, got min_len=40, block_size=32"),
])
def test_vae_bad_input_is_one_clear_line(tiny_data, tmp_path, args, message):
    one_line_error(run_main('vae_train.py', f'--data_dir={tiny_data}', f'--out_dir={tmp_path}/out',
                            *TINY_VAE, *args), message)
    if not args[0].startswith('--repa'):  # the teacher is loaded after out_dir is made
        assert not (tmp_path / 'out').exists()

def test_bad_input_is_one_line_in_a_process_of_its_own(tiny_data, tmp_path):
    """As a user sees it: the real process's whole stderr, whatever loading a teacher prints."""
    one_line_error(run_script('vae_train.py', f'--data_dir={tiny_data}',
                              f'--out_dir={tmp_path}/out', *TINY_VAE,
                              '--repa_teacher=no-such-org/no-such-model'),
                   "cannot load teacher 'no-such-org/no-such-model' offline: download it")
