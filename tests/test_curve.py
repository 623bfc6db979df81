"""bench/curve.py's reading of the curve: the GPT steps of equal quality, the gap's bounds, and the
text figures."""
import os
import sys

import pytest

from conftest import ROOT, one_line_error, run_script
sys.path.insert(0, os.path.join(ROOT, 'bench'))
import curve  # noqa: E402

def gpt_curve(ppls):
    return {s: {'wikipedia': {'genppl': p}, 'literary': {'genppl': p}} for s, p in ppls.items()}

def test_equal_quality_is_read_off_the_gpt_curve_in_log_log():
    gpt = gpt_curve({30: 1000.0, 60: 500.0, 120: 250.0})
    assert curve.steps_for_quality(gpt, 'wikipedia', 500.0) == (pytest.approx(60.0), '=')
    # halfway in log PPL between two points is halfway in log steps
    assert curve.steps_for_quality(gpt, 'wikipedia',
                                   (500.0 * 250.0) ** 0.5) == (pytest.approx((60 * 120) ** 0.5),
                                                               '=')
    # worse than the GPT's first point
    assert curve.steps_for_quality(gpt, 'wikipedia', 2000.0) == (30.0, '<')
    assert curve.steps_for_quality(gpt, 'wikipedia', 100.0) == (120.0, '>')  # better than its last

def test_a_noisy_gpt_curve_is_read_best_so_far():
    gpt = gpt_curve({30: 1000.0, 60: 400.0, 120: 450.0, 240: 200.0})  # 120 is worse than 60: noise
    assert curve.steps_for_quality(gpt, 'literary', 400.0) == (pytest.approx(60.0), '=')
    assert curve.steps_for_quality(gpt, 'literary', 300.0)[0] == pytest.approx(
        120 * 2 ** (curve.np.log(400 / 300) / curve.np.log(400 / 200)))

def test_the_gap_is_a_bound_outside_the_gpt_curve():
    gpt = gpt_curve({30: 1000.0, 60: 500.0, 120: 250.0})
    dits = {600: {b: {'genppl': 500.0} for b in curve.BENCHES},
            2000: {b: {'genppl': 5000.0} for b in curve.BENCHES}}
    g = curve.gaps(gpt, dits)
    assert g[600]['wikipedia'] == dict(gap=pytest.approx(10.0), bound='=',
                                       gpt_steps=pytest.approx(60.0))
    assert g[2000]['literary']['bound'] == '>'
    assert g[2000]['literary']['gap'] == pytest.approx(2000 / 30)

def test_genre_is_told_by_words_and_leaves_the_own_target_out():
    refs = ['the king and the queen speak', 'thou art my lord and king',
            'the river flows through the city', 'the city has a river and a bridge']
    labels = ['literary', 'literary', 'wikipedia', 'wikipedia']
    assert curve.genre_accuracy(['my lord the king', 'thou king', 'a bridge in the city',
                                 'river city'], labels, refs) == [True, True, True, True]
    # 'queen' is only in the first sample's own target: left out, it is no evidence for literary
    assert curve.genre_accuracy(['queen city', 'thou king', 'a bridge', 'river'], labels,
                                refs)[0] is False

def test_same_noise_share_counts_words_by_position():
    assert curve.same_noise_share(['The river, the city'], ['the river. The city']) == 1.0
    assert curve.same_noise_share(['a b c d'], ['a x c']) == 0.5  # 2 of the longer's 4 positions
    assert curve.same_noise_share(['a b'], ['c d']) == 0.0

@pytest.mark.parametrize('dits, message', [
    ('{run}:nan', 'the guidance scale in --dits ({run}:nan) must be a finite number, got nan'),
    ('{run}:-4', 'the guidance scale in --dits ({run}:-4) must be at least 0, got -4.0'),
    ('{run}:2@abc', "--dits takes folder:cfg, or folder:cfg@steps+steps, comma-separated"),
    ('{run}:2@500+2000',
     '{run} has no step2000/ checkpoint (--dits: {run}:2@500+2000): it has steps 500, 1000'),
])
def test_a_bad_dit_run_is_one_line_and_creates_nothing(tmp_path, dits, message):
    """--dits=folder:cfg@steps: the guidance scale in cfg's range, and every step asked for kept by
    the run."""
    run = tmp_path / 'run'
    for step in ('step500', 'step1000'):
        (run / step).mkdir(parents=True)
    p = run_script('bench/curve.py', '--dits=' + dits.format(run=run),
                   f'--out_file={tmp_path}/out/curve.json')
    one_line_error(p, message.format(run=run))
    assert os.listdir(tmp_path) == ['run']

def test_a_run_timed_alone_once_is_not_timed_again(gpt_dir):
    """solo_step_ms keeps each run's timing (out/curve/timing/<run>/): a table of another sampler
    reads it again instead of training again; another number of steps is timed anew."""
    import json
    import shutil
    timing = os.path.join(ROOT, 'out/curve/timing', os.path.basename(gpt_dir))
    os.makedirs(timing, exist_ok=True)
    try:
        with open(os.path.join(timing, 'summary.json'), 'w') as f:
            json.dump(dict(iters=3, median_step_ms=123.0), f)
        assert curve.solo_step_ms(gpt_dir, 'gpt', 3) == 123.0
        fresh = curve.solo_step_ms(gpt_dir, 'gpt', 2)
        assert fresh != 123.0 and fresh > 0
        with open(os.path.join(timing, 'summary.json')) as f:
            assert json.load(f)['iters'] == 2
    finally:
        shutil.rmtree(timing)
