"""bench/: speed.py end to end at a tiny size (every phase in its own process, both reports written), and the math of
context_gain.py's yardstick."""
import json

from conftest import run_script

def test_speed_bench_writes_throughput_and_latency(tiny_data, tmp_path):
    p = run_script('bench/speed.py', '--quick=True', f'--data_dir={tiny_data}', f'--out_dir={tmp_path}', '--lengths=(6, 12)')
    assert p.returncode == 0, p.stdout + p.stderr
    with open(tmp_path / 'throughput.json') as f:
        tr = json.load(f)
    with open(tmp_path / 'latency.json') as f:
        lat = json.load(f)
    assert set(tr['stages']) == {'vae_with_teacher', 'vae_without_teacher', 'dit_body', 'dit_with_vae_encode', 'gpt'}
    assert all(s['tokens_per_s'] > 0 and s['step_ms'] > 0 and s['params'] > 0 for s in tr['stages'].values())
    # with the teacher, the VAE has its REPA head
    assert tr['stages']['vae_with_teacher']['params'] > tr['stages']['vae_without_teacher']['params']
    assert set(tr['ratios']) >= {'dit_over_gpt', 'dit_with_vae_encode_over_gpt', 'vae_cost_over_gpt'}
    assert all(v > 0 for k, v in tr['ratios'].items() if k != 'goals')
    assert set(lat['batch1_seconds']) == {'6', '12'}
    assert all(v['ldm'] > 0 and v['gpt'] > 0 and v['runs'] == [1, 1] for v in lat['batch1_seconds'].values())
    assert lat['batch']['ldm_samples_per_s'] > 0 and lat['batch']['gpt_samples_per_s'] > 0
    # the GPT is made as deep as needed to match the TextLDM's parameters
    params = lat['params']
    assert params['ldm'] == params['ldm_vae'] + params['ldm_dit'] and abs(params['gpt'] / params['ldm'] - 1) < 0.1
    for report in (tr, lat):
        assert report['command'].startswith('python bench/speed.py') and report['torch'] and report['machine']
    assert all(m['peak_rss'] > m['own'] > 0 for m in tr['memory_mib'].values())
    assert not list(tmp_path.glob('.speed_*'))  # the phases' files are cleaned up

def test_the_yardstick_denoiser_is_the_exact_posterior_mean():
    """bench/context_gain.bayes_x1 against the posterior written out with Gaussian densities, and its limits."""
    import os
    import sys
    import torch
    from conftest import ROOT
    sys.path.insert(0, os.path.join(ROOT, 'bench'))
    from context_gain import bayes_x1
    g = torch.Generator().manual_seed(0)
    V, C, t = 7, 3, 0.4
    E, prior = torch.randn(V, C, generator=g, dtype=torch.float64), torch.rand(V, generator=g, dtype=torch.float64)
    prior /= prior.sum()
    xt = torch.randn(5, C, generator=g, dtype=torch.float64)
    density = torch.exp(-((xt[:, None] - t * E) ** 2).sum(-1) / (2 * (1 - t) ** 2))  # (5, V), up to a constant
    post = prior * density / (prior * density).sum(-1, keepdim=True)
    assert torch.allclose(bayes_x1(prior.log(), xt, t, E), post @ E)
    # a certain prior gives its token whatever x_t; near t = 1 a flat prior gives the token x_t came from
    certain = torch.full((V,), -1e9, dtype=torch.float64).index_fill(0, torch.tensor([2]), 0.0)
    assert torch.allclose(bayes_x1(certain, xt, t, E), E[2].expand(5, C))
    noisy = 0.99 * E + 0.01 * torch.randn(V, C, generator=g, dtype=torch.float64)
    assert torch.allclose(bayes_x1(torch.zeros(V, dtype=torch.float64), noisy, 0.99, E), E, atol=1e-6)

def test_paper_sizes_quick_runs_the_three_trainers(tiny_data, tmp_path):
    """bench/paper_sizes.py at tiny sizes: the three real trainers at batch 1 and 2, the VAE with REPA to a tiny local
    Qwen3 stand-in teacher (the tiny data's BPE is not Qwen3's, so the teacher takes the span-alignment path)."""
    import re
    p = run_script('bench/paper_sizes.py', '--quick=True', f'--data_dir={tiny_data}', f'--out_dir={tmp_path}',
                   f'--work_dir={tmp_path}/runs')
    assert p.returncode == 0, p.stdout + p.stderr
    with open(tmp_path / 'paper_sizes_quick.json') as f:
        r = json.load(f)
    assert set(r['steps']) == {'vae_350m', 'dit_328m', 'gpt_medium'}
    for s in r['steps'].values():
        assert all(s[b]['peak_rss_mib'] > 0 and s[b]['median_step_ms'] > 0 for b in ('batch1', 'batch2'))
        assert s['params_m'] > 0 and s['projected_mib'] > 0 and s['paper_batch'] in (8, 16, 32)
    assert r['command'].startswith('python bench/paper_sizes.py') and 'LINEAR PROJECTION' in r['memory_note']
    log = open(r['steps']['vae_350m']['batch1']['log']).read()
    assert 'qwen3-standin layer -3' in log and re.search(r'repa_cos -?\d', log)  # REPA ran, with a finite cosine
    assert not list((tmp_path / 'runs').glob('*/ckpt.pt'))  # the checkpoints are cleaned up
