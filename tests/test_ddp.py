"""Data parallelism is gradient accumulation: torchrun with 2 processes (gloo, CPU) of batch B each
trains exactly as 1 process of batch B with gradient_accumulation_steps=2, the same global batch:
the same logged losses (rank 0 logs the mean over the ranks) and the same weights. Each script runs
three times: 2 ranks for 4 steps; 1 process for 2 steps; 2 ranks resuming that for steps 3 and 4,
which also checks init_from='resume' under DDP. A mistake under torchrun is said once, not once per
rank."""
import socket

import pytest
import torch

from conftest import TINY_DIT, TINY_GPT, TINY_VAE, iter_losses, ok, run_main, run_script

def torchrun(*args):
    with socket.socket() as s:  # a free port for the rendezvous
        s.bind(('127.0.0.1', 0))
        port = s.getsockname()[1]
    return run_script('-m', 'torch.distributed.run', '--nproc_per_node=2', f'--master_port={port}',
                      *args)

@pytest.fixture(autouse=True)
def one_thread(monkeypatch):
    # what torchrun gives each process; the single process (this one, where tests/conftest.py sets
    # one torch thread) has it too, so matrix products sum in the same order
    monkeypatch.setenv('OMP_NUM_THREADS', '1')
    assert torch.get_num_threads() == 1

@pytest.mark.parametrize('script', ['vae_train.py', 'dit_train.py', 'ar_train.py'])
def test_two_ranks_train_as_two_micro_steps(script, tiny_data, tmp_path, request):
    args = {'vae_train.py': ['--repa_weight=0', *TINY_VAE],
            'dit_train.py': [f"--vae_ckpt={request.getfixturevalue('vae_dir')}/ckpt.pt", *TINY_DIT],
            'ar_train.py': TINY_GPT}[script]
    args = [script, f'--data_dir={tiny_data}', '--eval_interval=2', '--lr_decay_iters=4', *args]
    ddp = iter_losses(ok(torchrun(*args, f'--out_dir={tmp_path}/a', '--max_iters=4')))
    single = iter_losses(ok(run_main(*args, f'--out_dir={tmp_path}/b', '--max_iters=2',
                                     '--gradient_accumulation_steps=2')))
    resumed = iter_losses(ok(torchrun(*args, f'--out_dir={tmp_path}/b', '--max_iters=4',
                                      '--init_from=resume')))
    # the log's 4 decimals
    assert len(ddp) == 4 and single + resumed == pytest.approx(ddp, abs=1.5e-4)
    wa = torch.load(f'{tmp_path}/a/ckpt.pt', weights_only=True)['model']
    wb = torch.load(f'{tmp_path}/b/ckpt.pt', weights_only=True)['model']
    assert all(torch.allclose(wa[k], wb[k], atol=1e-5) for k in wa)

@pytest.mark.skipif(torch.cuda.is_available(), reason='a GPU is visible')
def test_no_gpu_under_torchrun_is_said_once(tmp_path):
    proc = torchrun('dit_train.py', f'--out_dir={tmp_path}/out', '--device=cuda', *TINY_DIT)
    message = ("error: device is 'cuda' but no GPU is visible: pass --device=cpu "
               "(under torchrun too: DDP then uses gloo)")
    out = proc.stdout + proc.stderr
    assert proc.returncode != 0 and message in out and out.count('no GPU is visible') == 1, out
    assert not (tmp_path / 'out').exists()
