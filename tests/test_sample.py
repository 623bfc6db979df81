"""The flow sampler: its time grid (the training's time distribution), its guidance, and its
accuracy on a flow known in closed form; the trained TextLDM (sample.LDM) and sample.py end to end:
any prompt, a prompt too long, the README's lines, and bad input."""
import math
import re
import shlex
from statistics import NormalDist

import pytest
import torch
from hypothesis import given, settings, strategies as st

from baselines import load_model
from conftest import (README_SAMPLE, TEXT, TINY_DIT, ok, one_line_error, readme_commands, run_main,
                      run_script)
from model import TextDiT, fit_time_cdf, flow_time, pack_segments, take_segment
import sample
from sample import LDM, generate, sample_latents

class GaussianFlow(torch.nn.Module):
    """The exact velocity E[x1 - x0 | x_t] for data x1 ~ N(m, s^2) (per channel) and
    x0 ~ N(0, 1): x_t = t x1 + (1-t) x0 is Gaussian, so
    v(x, t) = m + (t s^2 - (1-t)) / (t^2 s^2 + (1-t)^2) (x - t m).
    With a context, m is shifted by the mean of the context latents (so guidance has something to
    do)."""

    def __init__(self, m, s, channels):
        super().__init__()
        self.m, self.s = m, s
        self.config = type('config', (), {'latent_channels': channels, 'vocab_size': 0})

    forward_with_cfg = TextDiT.forward_with_cfg  # the real guidance

    def forward(self, x, t, is_target, mask, x1_prev=None):  # exact: no use for a last estimate
        ctx = (~is_target & mask)[..., None]
        shift = (x * ctx).sum(1, keepdim=True) / ctx.sum(1, keepdim=True).clamp(min=1)
        m, t = self.m + shift, t[:, None, None]
        return m + (t * self.s ** 2 - (1 - t)) / (t ** 2 * self.s ** 2 + (1 - t) ** 2) * (x - t * m)

# -----------------------------------------------------------------------------
# the time distribution and the sampler

def test_the_sampler_time_grid_is_monotone_from_noise_to_data():
    grid = lambda steps, *a: flow_time(torch.linspace(0, 1, steps + 1, dtype=torch.float64), *a)
    for schedule in ('logit_normal', 'uniform'):
        t = grid(50, schedule)
        assert len(t) == 51 and t[0] == 0 and t[-1] == 1 and (t[1:] > t[:-1]).all()
    # the logit-normal grid steps where training draws timesteps: its median is t = sigmoid(mean)
    t = grid(50)
    assert abs(t[25].item() - 0.5) < 1e-9
    expected = 1 / (1 + math.exp(-1.5 * NormalDist().inv_cdf(1 / 50)))
    assert abs(t[1].item() - expected) < 1e-9
    assert abs(grid(50, 'logit_normal', 1.0, 1.5)[25].item() - 1 / (1 + math.exp(-1.0))) < 1e-9

def test_training_timesteps_are_logit_normal():
    """What dit_train.py draws: flow_time of uniform quantiles."""
    t = flow_time(torch.rand(200000, generator=torch.Generator().manual_seed(0)), 'logit_normal',
                  0.5, 1.5)
    logit = torch.log(t / (1 - t))
    assert abs(logit.mean().item() - 0.5) < 0.02 and abs(logit.std().item() - 1.5) < 0.02
    u = flow_time(torch.rand(200000, generator=torch.Generator().manual_seed(0)), 'uniform')
    assert 0 <= u.min() and u.max() < 1 and abs(u.mean().item() - 0.5) < 0.01

def test_the_learned_schedule_puts_time_where_the_loss_falls():
    """Information-uniform: each bin of t gets a share of the draws in proportion to the loss
    resolved across it (central differences of the running minimum), plus an even floor."""
    loss = torch.tensor([6.0, 5.9, 5.0, 3.0, 1.0, 0.2, 0.3, 0.1, 0.1, 0.1])  # 0.3: noise
    cdf = fit_time_cdf(loss, floor=0.1)
    assert cdf[0] == 0 and cdf[-1] == 1 and (cdf.diff() > 0).all()
    falls = torch.tensor([6.0, 6.0, 5.9, 5.0, 3.0, 1.0, 0.2, 0.2, 0.1, 0.1, 0.1, 0.1])
    want = 0.9 * (falls[:-2] - falls[2:]) / (falls[:-2] - falls[2:]).sum() + 0.01
    torch.testing.assert_close(cdf.diff(), want)
    t = flow_time(torch.rand(400000, generator=torch.Generator().manual_seed(0)), 'learned',
                  cdf=cdf)
    share = torch.histogram(t, bins=10, range=(0.0, 1.0))[0] / len(t)
    assert (share - want).abs().max() < 0.004
    q = torch.linspace(0, 1, 11, dtype=torch.float64)  # the sampler's grid: from 0 to 1, monotone
    ts = flow_time(q, 'learned', cdf=cdf)
    assert ts[0] == 0 and ts[-1] == 1 and (ts.diff() > 0).all()
    assert torch.equal(fit_time_cdf(torch.ones(4)), torch.linspace(0, 1, 5))  # flat: uniform
    # a bin not yet seen has the loss of the last one seen before it (the first: the highest)
    gaps = fit_time_cdf(torch.tensor([math.nan, 4.0, math.nan, 2.0, 2.0]), floor=0.0).diff()
    torch.testing.assert_close(gaps, torch.tensor([0.0, 0.0, 0.5, 0.5, 0.0]))

def test_a_learned_schedule_trains_and_the_sampler_steps_on_it(vae_dir, tiny_data, tmp_path):
    out = tmp_path / 'dit'
    ok(run_main('dit_train.py', f'--data_dir={tiny_data}', f'--vae_ckpt={vae_dir}/ckpt.pt',
                f'--out_dir={out}', '--t_schedule=learned', '--warp_interval=5', '--max_iters=20',
                '--eval_interval=10', '--head=tokens', *TINY_DIT))
    warp = torch.load(out / 'ckpt.pt', weights_only=True)['time_warp']
    assert (~warp['loss_by_t'].isnan()).sum() > 10  # the bins of t seen in 20 steps
    torch.testing.assert_close(warp['cdf'], fit_time_cdf(warp['loss_by_t']))  # the last refit
    ldm = LDM(str(out))
    assert torch.equal(ldm.times['cdf'], warp['cdf'])
    assert len(generate(ldm, ['the river'], 4, steps=3)[0]) > 0

def test_sampler_lands_on_the_gaussian_data_distribution():
    flow = GaussianFlow(m=2.0, s=0.5, channels=4)
    no_ctx = torch.zeros(4000, 0, 4)
    x = sample_latents(flow, no_ctx, torch.zeros(4000, dtype=torch.long), torch.full((4000,), 8),
                       steps=50, generator=torch.Generator().manual_seed(0))
    assert x.shape == (4000, 8, 4)
    assert abs(x.mean().item() - 2.0) < 0.02
    assert abs(x.std().item() - 0.5) < 0.02

def old_euler(flow, ctx, ctx_lens, tgt_lens, steps, cfg, generator):
    """The sampler before its solver and guidance options, kept verbatim as the reference."""
    B, Tt, C = ctx.size(0), int(tgt_lens.max()), flow.config.latent_channels
    x = torch.randn(B, Tt, C, generator=generator, device=ctx.device, dtype=torch.float64)
    ctx, ctx_lens, tgt_lens = (torch.cat([ctx, torch.zeros_like(ctx)]), ctx_lens.repeat(2),
                               tgt_lens.repeat(2))
    ts = flow_time(torch.linspace(0, 1, steps + 1, dtype=torch.float64))
    for k in range(steps):
        packed, is_target, mask = pack_segments(ctx, ctx_lens, torch.cat([x, x]).float(), tgt_lens)
        t = torch.full((packed.size(0),), float(ts[k]), device=x.device)
        v = take_segment(flow.forward_with_cfg(packed, t, is_target, mask, cfg).double(),
                         ctx_lens[:B], Tt)
        x = x + (ts[k + 1] - ts[k]).item() * v
    return x.float()

def test_the_euler_solver_is_the_old_sampler():
    flow = GaussianFlow(m=1.0, s=0.5, channels=3)
    ctx, ctx_lens, tgt_lens = (torch.randn(4, 5, 3), torch.tensor([5, 2, 1, 3]),
                               torch.tensor([6, 6, 2, 4]))
    new = sample_latents(flow, ctx, ctx_lens, tgt_lens, 7, 3.0, solver='euler', cfg_until=1.0,
                         generator=torch.Generator().manual_seed(0))
    old = old_euler(flow, ctx, ctx_lens, tgt_lens, 7, 3.0, torch.Generator().manual_seed(0))
    # the step in x1 form is Euler's up to float64 rounding
    assert torch.allclose(new, old, rtol=0, atol=1e-6)

def test_dpm2m_is_far_closer_to_the_exact_solution_than_euler():
    """On the Gaussian flow, whose ODE solution is known: x0 -> m + s * x0 at t = 1. Halving the
    step halves Euler's error (first order); DPM-Solver++(2M)'s is 5x smaller at 8 steps and stays
    well below. Its first and last steps are Euler's (the log SNR is infinite at t = 0 and 1), so
    its error does not fall at a clean second order."""
    flow, B = GaussianFlow(m=2.0, s=0.5, channels=4), 64
    x0 = torch.randn(B, 8, 4, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    def error(solver, steps):
        x = sample_latents(flow, torch.zeros(B, 0, 4), torch.zeros(B, dtype=torch.long),
                           torch.full((B,), 8), steps, solver=solver, schedule='uniform',
                           generator=torch.Generator().manual_seed(0))
        return (x.double() - (2.0 + 0.5 * x0)).pow(2).mean().sqrt().item()
    euler, dpm = [error('euler', n) for n in (8, 16, 32)], [error('dpm2m', n) for n in (8, 16, 32)]
    assert all(1.8 < a / b < 2.2 for a, b in zip(euler, euler[1:])), euler
    assert (all(a > b for a, b in zip(dpm, dpm[1:]))
            and all(d < e / 4 for d, e in zip(dpm, euler))), (dpm, euler)

def test_each_solver_step_hands_the_velocity_the_last_clean_estimate():
    """Self-conditioning's input: step k reads the clean estimate x + (1 - t) v of step k - 1."""
    handed, estimates = [], []
    def velocity(x, t, guided, x1_prev):
        handed.append(x1_prev)
        v = 2.0 * x.sin() + t  # any field
        estimates.append(x + (1 - t) * v)
        return v
    x = torch.randn(3, 4, 2, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    sample.integrate(velocity, x, 6, 1.0, 'logit_normal', 0.0, 1.5, 'dpm2m', 0.0)
    assert len(handed) == 6 and handed[0] is None
    for got, want in zip(handed[1:], estimates):
        torch.testing.assert_close(got, want.float())

class Counted(GaussianFlow):
    """The Gaussian flow that records the batch of every forward."""
    rows = []

    def forward(self, x, t, is_target, mask, x1_prev=None):
        self.rows.append(x.size(0))
        return super().forward(x, t, is_target, mask)

@pytest.mark.parametrize('solver', ['dpm2m', 'euler'])
def test_guidance_only_while_t_is_below_cfg_until(solver):
    flow = Counted(m=0.0, s=1.0, channels=2)
    ctx, ctx_lens, tgt_lens = torch.full((3, 2, 2), 5.0), torch.full((3,), 2), torch.full((3,), 4)
    def run(cfg, until):
        flow.rows.clear()
        return sample_latents(flow, ctx, ctx_lens, tgt_lens, 10, cfg, solver=solver,
                              cfg_until=until, generator=torch.Generator().manual_seed(0))
    # an interval that covers nothing: conditional forwards of the batch alone, as without guidance
    assert torch.equal(run(4.0, 0.0), run(1.0, 1.0)) and flow.rows == [3] * 10
    run(4.0, 1.0)
    assert flow.rows == [6] * 10  # every step guided: [conditional ; null] in one forward
    run(4.0, 0.5)  # the logit-normal grid of 10 steps has 5 times below its median 0.5
    assert flow.rows == [6] * 5 + [3] * 5

def test_guidance_scale_1_is_conditional_and_0_is_unconditional():
    flow = GaussianFlow(m=0.0, s=1.0, channels=2)
    ctx, ctx_lens, tgt_lens = torch.full((2, 3, 2), 5.0), torch.full((2,), 3), torch.full((2,), 4)
    run = lambda c, w: sample_latents(flow, c, ctx_lens, tgt_lens, steps=10, cfg=w, cfg_until=1.0,
                                      generator=torch.Generator().manual_seed(0))  # always guided
    assert torch.allclose(run(ctx, 1.0), run(ctx, 0.0) + 5.0, atol=1e-4)  # the context adds 5
    # null = zero context
    assert torch.allclose(run(ctx, 0.0), run(torch.zeros_like(ctx), 1.0), atol=1e-6)
    # w = 3 extrapolates: the unconditional plus 3 times the context's pull
    assert torch.allclose(run(ctx, 3.0), run(ctx, 0.0) + 15.0, atol=1e-3)

# -----------------------------------------------------------------------------
# the trained TextLDM

@pytest.fixture(scope='module')
def ldm(dit_dir):
    return LDM(dit_dir)

def test_ldm_loads_what_the_dit_was_trained_with(ldm, dit_dir, vae_dir, tiny_data):
    ckpt = torch.load(f'{dit_dir}/ckpt.pt', weights_only=True)
    vae_ck = torch.load(f'{vae_dir}/ckpt.pt', weights_only=True)
    run = ckpt['config']
    assert ldm.times == dict(schedule=run['t_schedule'], mean=run['t_mean'], std=run['t_std'],
                             cdf=None)  # no learned schedule
    assert (torch.equal(ldm.mean, vae_ck['latent_mean'])
            and torch.equal(ldm.std, vae_ck['latent_std']))
    assert ldm.longest == 64 and ldm.data_dir == tiny_data and not ldm.bf16  # trained in float32
    assert not ldm.dit.training and not ldm.vae.training
    ema = ckpt['ema'] or ckpt['model']
    # the EMA weights when there are
    assert all(torch.equal(v, ema[k]) for k, v in ldm.dit.state_dict().items())
    # encode -> normalised latents of the prompt; decode -> token ids of the latents' length
    idx = torch.tensor([ldm.enc.encode_ordinary('the river king queen')])
    lens = torch.tensor([idx.size(1)])
    z = ldm.encode(idx, lens)
    assert z.shape == (1, idx.size(1), ldm.vae.config.latent_channels)
    assert ldm.decode(z, lens).shape == idx.shape

def test_generate_checks_the_length_and_reproduces_from_the_seed(ldm):
    for bad in (0, 65, [4, 0], [4, 65]):
        with pytest.raises(SystemExit, match=re.escape(
                f'--length must be between 1 and 64 tokens for this model, got {bad}')):
            generate(ldm, ['the river'] * (len(bad) if isinstance(bad, list) else 1), bad, steps=2)
    prompts = ['the river', 'king', '']
    a = generate(ldm, prompts, [3, 64, 5], steps=2, seed=1)
    assert a == generate(ldm, prompts, [3, 64, 5], steps=2, seed=1) and len(a) == 3
    assert a != generate(ldm, prompts, [3, 64, 5], steps=2, seed=2)

@settings(max_examples=25, deadline=None)
@given(prompt=TEXT, length=st.integers(1, 32))
def test_generate_survives_any_prompt(ldm, prompt, length):
    texts = generate(ldm, [prompt, ''], length, steps=2)
    assert len(texts) == 2 and all(isinstance(t, str) for t in texts)

# -----------------------------------------------------------------------------
# sample.py

def test_sample_keeps_the_end_of_a_long_prompt(dit_dir):
    out = ok(run_main('sample.py', f'--out_dir={dit_dir}', '--prompt=' + 'the river king ' * 40,
                      '--length=8', '--steps=2'))
    assert 'warning: a prompt is longer than the context' in out and '--- sample 1/1' in out

def test_sample_takes_any_text_as_the_prompt(dit_dir):
    out = ok(run_main('sample.py', f'--out_dir={dit_dir}', '--prompt=1984', '--length=4',
                      '--steps=2'))
    assert "prompt: '1984'" in out and '1984 >>> ' in out  # not refused as an int

def test_the_sampler_options_reach_the_sampler_from_sample_py_and_eval(dit_dir, monkeypatch):
    out = ok(run_main('sample.py', f'--out_dir={dit_dir}', '--prompt=the river', '--length=4',
                      '--steps=3', '--solver=euler', '--cfg_until=0.5'))
    assert '(cfg 2.0 while t < 0.5, 3 euler steps)' in out
    seen, real = [], sample.sample_latents
    monkeypatch.setattr(sample, 'sample_latents', lambda *a, **kw:
                        seen.append((a[4:6], kw['solver'], kw['cfg_until'])) or real(*a, **kw))
    load_model('textldm', dit_dir, 'cpu', '', 3, 2.0, solver='euler',
               cfg_until=0.5)[0](['the river'], [4], 1)  # as eval.py calls it
    assert seen == [((3, 2.0), 'euler', 0.5)]

@pytest.mark.parametrize('line', [README_SAMPLE, 'python sample.py'])
def test_the_readme_sample_lines_run_as_written(dit_dir, line):
    assert line in [c[0] for c in readme_commands()]
    out = ok(run_main(*shlex.split(line)[1:], '--out_dir', dit_dir))  # not out/dit_tiny
    if line == README_SAMPLE:
        assert "prompt: 'The river'" in out and out.count('The river >>> ') == 3
    else:
        assert 'unconditional' in out and out.count('--- sample') == 1

@pytest.mark.parametrize('args, message', [
    # --length=0, --steps=0, --cfg=-1, --cfg=1e999, --num_samples=0: the configurator's ranges
    # (tests/test_configurator.py)
    (['--length=100000'], '--length must be between 1 and 64 tokens for this model, got 100000'),
    (['--out_dir=/nonexistent'], 'no checkpoint at /nonexistent/ckpt.pt'),
    (['--solver=rk4'], "solver must be one of dpm2m, euler, got 'rk4'"),
    (['--cfg_until=2'], 'cfg_until must be in [0, 1], got 2.0'),
])
def test_sample_bad_input_is_one_clear_line(dit_dir, args, message):
    one_line_error(run_main('sample.py', f'--out_dir={dit_dir}', *args), message)

def test_a_prompt_that_is_not_utf8_is_one_line(dit_dir):
    # a byte that is not UTF-8 reaches Python's argv as a lone surrogate, which a strict UTF-8
    # stdout cannot print: only a process of its own gets its arguments as bytes
    one_line_error(run_script('sample.py', f'--out_dir={dit_dir}', b'--prompt=caf\xff'),
                   "--prompt is not UTF-8 text (character 3 is '\\udcff'")
