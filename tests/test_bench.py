"""bench/: speed.py end to end at a tiny size (every phase in its own process, both reports
written), and the math of context_gain.py's yardstick."""
import json

from conftest import ok, one_line_error, run_main, run_script
from sample import BLOCK_CFG_UNTIL, BLOCK_STEPS, CFG_UNTIL, SOLVER

def test_speed_bench_writes_throughput_and_latency(tiny_data, tmp_path):
    p = run_script('bench/speed.py', '--quick=True', f'--data_dir={tiny_data}',
                   f'--out_dir={tmp_path}', '--lengths=(6, 12)')
    assert p.returncode == 0, p.stdout + p.stderr
    with open(tmp_path / 'throughput.json') as f:
        tr = json.load(f)
    with open(tmp_path / 'latency.json') as f:
        lat = json.load(f)
    assert set(tr['stages']) == {'vae_with_teacher', 'vae_without_teacher', 'dit_body',
                                 'dit_with_vae_encode', 'gpt'}
    assert all(s['tokens_per_s'] > 0 and s['step_ms'] > 0 and s['params'] > 0
               for s in tr['stages'].values())
    # with the teacher, the VAE has its REPA head
    stages = tr['stages']
    assert stages['vae_with_teacher']['params'] > stages['vae_without_teacher']['params']
    assert set(tr['ratios']) >= {'dit_over_gpt', 'dit_with_vae_encode_over_gpt',
                                 'vae_cost_over_gpt'}
    assert all(v > 0 for k, v in tr['ratios'].items() if k != 'goals')
    assert set(lat['batch1_seconds']) == {'6', '12'}
    assert all(v['ldm'] > 0 and v['gpt'] > 0 and v['runs'] == [1, 1]
               for v in lat['batch1_seconds'].values())
    # samples/s at each batch: the GPT in float32 and bf16 (its faster compared), the TextLDM of
    # each head with sample.py's sampler at each k and with the paper's (Euler, guided at every
    # step), and the block-causal DiT of each block length with sample.py's sampler of a block
    sps = lat['samples_per_s']
    assert {(r['dtype'], r['batch']) for r in sps['gpt_rows']} == \
        {(d, b) for d in ('float32', 'bfloat16') for b in (1, 2)}
    assert sps['gpt'] == {str(b): max(r['samples_per_s'] for r in sps['gpt_rows']
                                      if r['batch'] == b) for b in (1, 2)}
    way = lambda r: (r['model'], r['solver'], r['cfg_until'], r['steps'], r['batch'])
    samplers = [(SOLVER, CFG_UNTIL, 2), (SOLVER, CFG_UNTIL, 3), ('euler', 1.0, 3)]
    blocks = {(f'tokens, blocks of {n}', SOLVER, BLOCK_CFG_UNTIL, BLOCK_STEPS, b)  # a block's
              for n in (2, 1) for b in (1, 2)}
    assert {way(r) for r in sps['ldm']} == {(h, *s, b) for h in ('tokens', 'velocity')
                                            for s in samplers for b in (1, 2)} | blocks
    assert all(r['samples_per_s'] > 0
               and r['over_gpt'] == round(r['samples_per_s'] / sps['gpt'][str(r['batch'])], 3)
               for r in sps['ldm'])
    assert sps['default'] == next(r for r in sps['ldm']
                                  if way(r) == ('tokens', SOLVER, CFG_UNTIL, 2, 2))
    table = (tmp_path / 'sampling.md').read_text()
    assert table.count('| TextLDM') == 8 and table.count('| GPT + KV cache') == 2
    assert '| TextLDM, tokens, blocks of 1 | dpm2m |' in table
    # the GPT is made as deep as needed to match the TextLDM's parameters
    params = lat['params']
    assert params['ldm'] == params['ldm_vae'] + params['ldm_dit']
    assert abs(params['gpt'] / params['ldm'] - 1) < 0.1
    for report in (tr, lat):
        assert report['command'].startswith('python bench/speed.py')
        assert report['torch'] and report['machine']
    assert all(m['peak_rss'] > m['own'] > 0 for m in tr['memory_mib'].values())
    assert not list(tmp_path.glob('.speed_*'))  # the phases' files are cleaned up

def test_the_yardstick_denoiser_is_the_exact_posterior_mean():
    """bench/context_gain.bayes_x1 against the posterior written out with Gaussian densities, and
    its limits."""
    import os
    import sys
    import torch
    from conftest import ROOT
    sys.path.insert(0, os.path.join(ROOT, 'bench'))
    from context_gain import bayes_x1
    g = torch.Generator().manual_seed(0)
    V, C, t = 7, 3, 0.4
    E = torch.randn(V, C, generator=g, dtype=torch.float64)
    prior = torch.rand(V, generator=g, dtype=torch.float64)
    prior /= prior.sum()
    xt = torch.randn(5, C, generator=g, dtype=torch.float64)
    # (5, V), up to a constant
    density = torch.exp(-((xt[:, None] - t * E) ** 2).sum(-1) / (2 * (1 - t) ** 2))
    post = prior * density / (prior * density).sum(-1, keepdim=True)
    assert torch.allclose(bayes_x1(prior.log(), xt, t, E), post @ E)
    # a certain prior gives its token whatever x_t; near t = 1 a flat prior gives the token x_t came
    # from
    certain = torch.full((V,), -1e9, dtype=torch.float64).index_fill(0, torch.tensor([2]), 0.0)
    assert torch.allclose(bayes_x1(certain, xt, t, E), E[2].expand(5, C))
    noisy = 0.99 * E + 0.01 * torch.randn(V, C, generator=g, dtype=torch.float64)
    flat = torch.zeros(V, dtype=torch.float64)
    assert torch.allclose(bayes_x1(flat, noisy, 0.99, E), E, atol=1e-6)

def test_paper_sizes_quick_runs_the_three_trainers(tiny_data, tmp_path):
    """bench/paper_sizes.py at tiny sizes: the three real trainers at batch 1 and 2, the VAE with
    REPA to a tiny local Qwen3 stand-in teacher (the tiny data's BPE is not Qwen3's, so the teacher
    takes the span-alignment path)."""
    import re
    p = run_script('bench/paper_sizes.py', '--quick=True', f'--data_dir={tiny_data}',
                   f'--out_dir={tmp_path}', f'--work_dir={tmp_path}/runs')
    assert p.returncode == 0, p.stdout + p.stderr
    with open(tmp_path / 'paper_sizes_quick.json') as f:
        r = json.load(f)
    assert set(r['steps']) == {'vae_350m', 'dit_328m', 'gpt_medium'}
    for s in r['steps'].values():
        assert all(s[b]['peak_rss_mib'] > 0 and s[b]['median_step_ms'] > 0
                   for b in ('batch1', 'batch2'))
        assert s['params_m'] > 0 and s['projected_mib'] > 0 and s['paper_batch'] in (8, 16, 32)
    assert r['command'].startswith('python bench/paper_sizes.py')
    assert 'LINEAR PROJECTION' in r['memory_note']
    log = open(r['steps']['vae_350m']['batch1']['log']).read()
    # REPA ran, with a finite cosine
    assert 'qwen3-standin layer -3' in log and re.search(r'repa_cos -?\d', log)
    assert not list((tmp_path / 'runs').glob('*/ckpt.pt'))  # the checkpoints are cleaned up

def test_fidelity_bench_measures_k_steps_against_the_reference(dit_dir, gpt_dir, tmp_path):
    out = tmp_path / 'fid.json'
    ok(run_main('bench/fidelity.py', f'--dits={dit_dir}', '--cfgs=3', '--cfg_untils=0.5',
                '--num_samples=4', '--window=16', '--batch_size=2', '--ks=1,2', '--ref_steps=3',
                f'--judge={gpt_dir}', f'--out_file={out}'))
    res = json.loads(out.read_text())['results'][0]
    rows = {(r['sampler'], r['k']): r for r in res['rows']}
    default, paper = sorted({r['sampler'] for r in res['rows']},
                            key=lambda s: s.startswith('euler, always'))
    assert set(rows) == {(s, k) for s in (default, paper) for k in (1, 2, 3)}
    # the reference (k = ref_steps) is its own sampler's exactly; the k-step samples are measured
    # against it
    assert all(rows[(s, 3)]['agreement'] == 100 and rows[(s, 3)]['latent_rms'] == 0
               for s in (default, paper))
    assert all(0 <= r['agreement'] <= 100 and r['latent_rms'] >= 0 for r in rows.values())
    # the paper's sampler guides every step (2 forwards); the default only while t < 0.5 (the grid's
    # first steps)
    assert [rows[(paper, k)]['forwards'] for k in (1, 2, 3)] == [2, 4, 6]
    assert rows[(default, 1)]['forwards'] == 2 and 3 < rows[(default, 3)]['forwards'] < 6
    assert rows[(paper, 3)]['agreement_ode'] == 100
    assert all(r['genppl'] > 1 and r['genppl_ci'][0] <= r['genppl'] <= r['genppl_ci'][1]
               for r in rows.values())
    assert (tmp_path / 'fid.md').read_text().count(f'| {dit_dir} (velocity, cfg 3)') == 6

def test_fidelity_bench_bad_input_is_one_clear_line(dit_dir):
    one_line_error(run_main('bench/fidelity.py', f'--dits={dit_dir},{dit_dir}', '--cfgs=2',
                            '--judge='),
                   'give one guidance scale and interval per DiT: 2 DiTs, 1 cfgs')

def test_demo_overlap_counts_the_words_same_noise_continuations_share(tmp_path):
    # sample k of every prompt: the same noise. Pairs (sample 1): 'a b c d' / 'a b x y' share 2 of
    # 4 words, 'a b c d' / 'z z z z' and 'a b x y' / 'z z z z' none; sample 2: all different
    lines = ["prompt: 'one'", "one >>> a b c d", "one >>> q r s t", "prompt: 'two'",
             "two >>> a b x y", "two >>> e f g h", "prompt: 'three'", "three >>> z z z z",
             "three >>> i j k l", "unconditional", "u v w"]
    path = tmp_path / 'samples.txt'
    path.write_text('\n'.join(lines) + '\n')
    out = ok(run_main('bench/demo_overlap.py', f'--path={path}'))
    assert '3 prompts, 6 same-noise pairs' in out and '8% on average, 50% at most' in out, out
    path.write_text("unconditional\nu v w\n")
    one_line_error(run_main('bench/demo_overlap.py', f'--path={path}'), 'fewer than two prompts')
    missing = run_main('bench/demo_overlap.py', f'--path={tmp_path}/none.txt')
    one_line_error(missing, 'run bash demo.sh')

def test_decode_window_compares_each_window_with_all_the_latents_before(vae_dir, tiny_data,
                                                                        tmp_path):
    """A window that reaches the first latent decodes as all of them do: 100% the same tokens."""
    out = tmp_path / 'dw.json'
    ok(run_main('bench/decode_window.py', f'--vae_ckpt={vae_dir}/ckpt.pt',
                f'--data_dir={tiny_data}', '--num_windows=8', '--window=32', '--min_before=4',
                '--befores=0,2,40', f'--out_file={out}'))
    rows = {r['before']: r for r in json.loads(out.read_text())['rows']}
    assert rows[40]['agree_with_prefix'] == 100.0
    assert all(0 <= r['agree_with_prefix'] <= 100 and 0 <= r['true_tokens'] <= 100
               for r in rows.values())
    assert '| 2 |' in (tmp_path / 'dw.md').read_text()
    missing = run_main('bench/decode_window.py', f'--vae_ckpt={tmp_path}/none.pt')
    one_line_error(missing, 'train the VAE first')
