"""The command line, in-process: `--key value` as well as `--key=value`, the ranges of every number,
the device, config files, and every command line of README.md parsed as written by the real
configurator of its script; through the real scripts, a mistake is one line and creates nothing."""
import glob
import os
import re
import sys

import pytest
import torch

from conftest import README_SAMPLE, ROOT, one_line_error, readme_commands, run_main, run_script

SCRIPTS = ['vae_train.py', 'dit_train.py', 'ar_train.py', 'sample.py', 'eval.py', 'prepare_data.py']
# the bench scripts with numbers among their options (their configurator checks them too)
BENCH = ['bench/fidelity.py', 'bench/speed.py', 'bench/curve.py', 'bench/context_gain.py']

class Parsed(Exception):
    pass

def config_of(script, args, monkeypatch):
    """The globals a script has right after its configurator ran on args: its own code up to and
    including the exec of configurator.py, in this process, and nothing after it. A user mistake
    raises SystemExit."""
    path = os.path.join(ROOT, script)
    src = open(path).read()
    call = re.findall(r"exec\(open\(.*'configurator\.py'\)+\.read\(\)\)", src)
    assert len(call) == 1, script
    src = src.replace(call[0], call[0] + '; raise _Parsed()')
    monkeypatch.chdir(ROOT)
    monkeypatch.setattr(sys, 'argv', [path, *args])
    ns = {'__name__': '__main__', '__file__': path, '_Parsed': Parsed}
    with pytest.raises(Parsed):
        exec(compile(src, path, 'exec'), ns)
    return ns

def refused(script, args, monkeypatch):
    """The one-line error a script's configurator ends these arguments with."""
    with pytest.raises(SystemExit) as e:
        config_of(script, args, monkeypatch)
    return str(e.value)

# -----------------------------------------------------------------------------
# --key value

def test_key_space_value_is_the_same_as_key_equals_value(monkeypatch):
    spaced = config_of('sample.py',
                       ['--prompt', 'The river', '--length', '48', '--cfg', '2', '--device', 'cpu'],
                       monkeypatch)
    joined = config_of('sample.py',
                       ['--prompt=The river', '--length=48', '--cfg=2', '--device=cpu'],
                       monkeypatch)
    for k in ('prompt', 'length', 'cfg', 'device'):
        assert spaced[k] == joined[k]
    assert (spaced['prompt'], spaced['length'], spaced['cfg']) == ('The river', 48, 2.0)
    # text is text in either form, a negative number is a value, and a config file still works
    # beside them
    assert config_of('sample.py', ['--prompt', '1984'], monkeypatch)['prompt'] == '1984'
    ns = config_of('dit_train.py', ['config/dit_tiny.py', '--t_mean', '-0.5', '--batch_size', '8'],
                   monkeypatch)
    assert (ns['t_mean'], ns['batch_size']) == (-0.5, 8)

@pytest.mark.parametrize('args', [['--prompt'], ['--prompt', '--length', '3'],
                                  ['--length', '3', '--prompt']])
def test_a_key_without_a_value_is_one_line(monkeypatch, args):
    assert refused('sample.py', args, monkeypatch) == \
        "error: argument '--prompt' needs a value: use --prompt VALUE or --prompt=VALUE"

def test_mistakes_in_the_space_form_get_the_same_lines(monkeypatch):
    assert refused('vae_train.py', ['--max_iter', '3'], monkeypatch).startswith(
        "error: unknown config key 'max_iter': did you mean 'max_iters'?")
    assert refused('vae_train.py', ['--max_iters', 'three'], monkeypatch) == \
        "error: --max_iters expects int (like 350), got 'three'"

# -----------------------------------------------------------------------------
# ranges and the device

@pytest.mark.parametrize('script, arg, message', [
    ('vae_train.py', '--batch_size=0', 'batch_size must be at least 1, got 0'),
    ('dit_train.py', '--max_iters=-5', 'max_iters must be at least 0, got -5'),
    ('ar_train.py', '--eval_interval=0', 'eval_interval must be at least 1, got 0'),
    ('vae_train.py', '--learning_rate=0', 'learning_rate must be greater than 0, got 0.0'),
    ('dit_train.py', '--p_uncond=1.5', 'p_uncond must be in [0, 1], got 1.5'),
    ('dit_train.py', '--ema_decay=1', 'ema_decay must be in [0, 1), got 1.0'),
    ('eval.py', '--top_p=0', 'top_p must be in (0, 1], got 0.0'),
    ('eval.py', '--seed=-1', 'seed must be at least 0, got -1'),
    ('prepare_data.py', '--val_frac=1', 'val_frac must be in [0, 1), got 1.0'),
    ('sample.py', '--length=0', 'length must be at least 1, got 0'),
    ('sample.py', '--steps=0', 'steps must be at least 1, got 0'),
    ('sample.py', '--num_samples=0', 'num_samples must be at least 1, got 0'),
    ('sample.py', '--cfg=-1', 'cfg must be at least 0, got -1.0'),
    ('sample.py', '--cfg=1e999', 'cfg must be a finite number, got inf'),
    ('dit_train.py', '--t_mean=-1e999', 't_mean must be a finite number, got -inf'),
    # nan and inf are floats, though no Python literals
    *[('sample.py', f'--cfg={x}', f'cfg must be a finite number, got {v}')
      for x, v in [('nan', 'nan'), ('inf', 'inf'), ('-Infinity', '-inf'), ('+NaN', 'nan')]],
    ('dit_train.py', '--t_mean=-inf', 't_mean must be a finite number, got -inf'),
    ('vae_train.py', '--device=foo', "device 'foo' is not one of cpu, cuda, cuda:N"),
    # text options and their choices; float16 is refused (it would need loss scaling)
    *[(s, '--dtype=float16', "dtype must be one of float32, bfloat16, got 'float16'")
      for s in ['vae_train.py', 'dit_train.py', 'ar_train.py']],
    ('dit_train.py', '--head=logits', "head must be one of velocity, tokens, got 'logits'"),
    ('dit_train.py', '--t_schedule=cosine',
     "t_schedule must be one of logit_normal, uniform, learned, got 'cosine'"),
    ('vae_train.py', '--init_from=resum', "init_from must be one of scratch, resume, got 'resum'"),
    ('ar_train.py', '--backend=mpi', "backend must be one of auto, nccl, gloo, got 'mpi'"),
    ('ar_train.py', '--device=cuda:x', "device 'cuda:x' is not one of cpu, cuda, cuda:N"),
    ('eval.py', '--device=meta', "device 'meta' is not one of cpu, cuda, cuda:N"),
    # what numpy and torch take: a seed below 2**63 (the scripts add offsets), floats finite in
    # float32, counts that can be allocated
    ('eval.py', '--seed=18446744073709551616',
     'seed must be less than 9223372036854775808, got 18446744073709551616'),
    ('sample.py', '--cfg=1e39',
     'cfg must be finite in float32 (at most 3.4e38 in size), got 1e+39'),
    ('dit_train.py', '--t_mean=-1e308',
     't_mean must be finite in float32 (at most 3.4e38 in size), got -1e+308'),
    ('eval.py', '--temperature=1e-50', 'temperature must be at least 0.001, got 1e-50'),
    ('sample.py', '--steps=1000000000000', 'steps must be at most 10000, got 1000000000000'),
    ('sample.py', '--num_samples=1000000000000',
     'num_samples must be at most 10000, got 1000000000000'),
    ('vae_train.py', '--block_size=1000000000',
     'block_size must be at most 100000, got 1000000000'),
])
def test_a_number_out_of_its_range_a_bad_choice_or_a_bad_device_is_one_line(
        monkeypatch, script, arg, message):
    assert refused(script, [arg], monkeypatch) == 'error: ' + message

def test_the_device_must_be_on_this_machine(monkeypatch):
    monkeypatch.setattr(torch.cuda, 'is_available', lambda: False)
    assert refused('sample.py', ['--device=cuda'], monkeypatch) == \
        "error: device is 'cuda' but no GPU is visible: pass --device=cpu " \
        "(under torchrun too: DDP then uses gloo)"
    monkeypatch.setattr(torch.cuda, 'is_available', lambda: True)
    monkeypatch.setattr(torch.cuda, 'device_count', lambda: 2)
    assert config_of('ar_train.py', ['--device=cuda:1'], monkeypatch)['device'] == 'cuda:1'
    assert refused('ar_train.py', ['--device=cuda:2'], monkeypatch) == \
        "error: device 'cuda:2' does not exist: this machine has 2 GPU(s), cuda:0 and up"

@pytest.mark.parametrize('source, message', [
    ('seed = (\n', "does not run: SyntaxError: '(' was never closed"),
    ("seed = 'three'\n", "'seed' in config file '{path}' expects int (like 1337), got 'three'"),
    ('sed = 3\n', "config file '{path}' sets unknown key 'sed': did you mean 'seed'?"),
])
def test_a_bad_config_file_is_one_line(tmp_path, monkeypatch, source, message):
    path = tmp_path / 'cfg.py'
    path.write_text(source)
    error = refused('prepare_data.py', [str(path)], monkeypatch)
    assert error.startswith('error: ') and '\n' not in error and message.format(path=path) in error

def test_a_file_that_is_no_config_file_is_one_line(tmp_path, monkeypatch):
    """A checkpoint or a folder given where a config file goes: it cannot be read as text."""
    (tmp_path / 'ckpt.pt').write_bytes(b'PK\x03\x04\xff\xfe\x00binary')
    for path, why in [(tmp_path / 'ckpt.pt', 'UnicodeDecodeError'),
                      (tmp_path, 'IsADirectoryError')]:
        assert refused('sample.py', [str(path)], monkeypatch) == (
            f"error: '{path}' is no config file ({why}): a config file is Python text that assigns "
            f"config variables (see config/); pass other values as --key=value")

# -----------------------------------------------------------------------------
# list options (a tuple default): comma-separated values, each typed and checked as a number option

def test_a_list_option_takes_comma_separated_values(monkeypatch):
    for args in [['--lengths=64,256'], ['--lengths=(64, 256)'], ['--lengths', '64,256']]:
        assert config_of('bench/speed.py', args, monkeypatch)['lengths'] == (64, 256)
    assert config_of('bench/speed.py', ['--lengths=64'], monkeypatch)['lengths'] == (64,)
    assert config_of('bench/speed.py', ['--lengths=64,'], monkeypatch)['lengths'] == (64,)
    assert config_of('bench/speed.py', ['--heads=velocity'], monkeypatch)['heads'] == ('velocity',)
    ns = config_of('bench/fidelity.py', ['--dits=a,b', '--cfgs=2,8', '--cfg_untils=1,0.5'],
                   monkeypatch)
    assert (ns['dits'], ns['cfgs'], ns['cfg_untils']) == (('a', 'b'), (2.0, 8.0), (1.0, 0.5))

@pytest.mark.parametrize('script, arg, message', [
    ('bench/fidelity.py', '--ks=abc', "every value of --ks expects int (like 4), got 'abc'"),
    ('bench/fidelity.py', '--ks=4.5', 'every value of --ks expects int (like 4), got 4.5'),
    ('bench/fidelity.py', '--ks=', '--ks needs at least one value, like 4,8,10,16,32,50'),
    ('bench/fidelity.py', '--cfgs=x,2,8',
     "every value of --cfgs expects float (like 2.0), got 'x'"),
    ('bench/fidelity.py', '--cfg_untils=a,b,c',
     "every value of --cfg_untils expects float (like 0.6), got 'a'"),
    ('bench/fidelity.py', '--cfgs=nan,2,8', 'every value of cfgs must be a finite number, got nan'),
    ('bench/fidelity.py', '--cfgs=-1,2,8', 'every value of cfgs must be at least 0, got -1.0'),
    ('bench/fidelity.py', '--cfg_untils=2,2,2',
     'every value of cfg_untils must be in [0, 1], got 2.0'), ('bench/speed.py', '--phase=foo',
     "phase must be one of '', vae, dit, gpt, ldm_sampling, gpt_sampling, got 'foo'"),
    ('bench/speed.py', '--repeats=-1', 'repeats must be at least 1, got -1'),
    ('bench/speed.py', '--lengths=(0,-5)', 'every value of lengths must be at least 1, got 0'),
    ('bench/speed.py', '--iters=0', 'iters must be at least 1, got 0'),
    ('bench/speed.py', '--heads=tokens,logits',
     "every value of heads must be one of velocity, tokens, got 'logits'"),
    ('bench/curve.py', '--solo_steps=-5', 'solo_steps must be at least 0, got -5'),
])
def test_a_bad_value_of_a_list_or_bench_option_is_one_line(monkeypatch, script, arg, message):
    assert refused(script, [arg], monkeypatch) == 'error: ' + message

def test_every_default_and_config_file_is_in_range_and_every_range_and_choice_has_its_key(
        monkeypatch):
    monkeypatch.setattr(torch.cuda, 'is_available', lambda: True)  # config files for GPUs
    monkeypatch.setattr(torch.cuda, 'device_count', lambda: 8)
    keys = set()
    for script in SCRIPTS + BENCH:
        ns = config_of(script, [], monkeypatch)
        keys |= {k for k in ns if not k.startswith('_')}
    for path in sorted(glob.glob(os.path.join(ROOT, 'config', '*.py'))):
        name = os.path.basename(path)
        scripts = [('vae', 'vae_train.py'), ('dit', 'dit_train.py'), ('gpt', 'ar_train.py'),
                   ('eval', 'eval.py')]
        script = next(s for p, s in scripts if name.startswith(p))
        config_of(script, [f'config/{name}'], monkeypatch)
    for table in ('_RANGES', '_CHOICES'):
        stale = set(ns[table]) - keys  # a typo in the table would check nothing
        assert not stale, (f"configurator.{table} has keys that no script defines (a typo, or an "
                           f"option removed): {stale}")

# -----------------------------------------------------------------------------
# README.md's command lines, as written

def test_every_readme_command_line_is_accepted_as_written(monkeypatch):
    commands = readme_commands()
    assert README_SAMPLE in [line for line, _, _ in commands]
    assert len(commands) >= 20 and {s for _, s, _ in commands} >= set(SCRIPTS)
    # the lines for GPUs, on any machine
    monkeypatch.setattr(torch.cuda, 'is_available', lambda: True)
    monkeypatch.setattr(torch.cuda, 'device_count', lambda: 8)
    for line, script, args in commands:
        assert os.path.isfile(os.path.join(ROOT, script)), line
        # bench/*.py but speed.py parse their own
        if 'configurator.py' in open(os.path.join(ROOT, script)).read():
            config_of(script, args, monkeypatch)
    ns = config_of('sample.py', next(args for line, _, args in commands if line == README_SAMPLE),
                   monkeypatch)
    assert (ns['prompt'], ns['length'], ns['num_samples']) == ('The river', 48, 3)

# -----------------------------------------------------------------------------
# through the real scripts: one line, and nothing on disk (a run that never ends would hang the
# test)

TRAINERS = ['vae_train.py', 'dit_train.py', 'ar_train.py']

@pytest.mark.parametrize('script, args, message', [
    pytest.param('sample.py', ['--device=cuda'],
                 "device is 'cuda' but no GPU is visible: pass --device=cpu (under torchrun too: "
                 "DDP then uses gloo)",
                 marks=pytest.mark.skipif(torch.cuda.is_available(), reason='a GPU is visible')),
    *[(s, ['--device=foo'], "device 'foo' is not one of cpu, cuda, cuda:N")
      for s in ['sample.py', 'dit_train.py']],
    *[(s, ['--batch_size=0'], 'batch_size must be at least 1, got 0') for s in TRAINERS],
    *[(s, ['--max_iters=-5'], 'max_iters must be at least 0, got -5')
      for s in ['dit_train.py', 'ar_train.py']],
    ('sample.py', ['--cfg', 'nan'], 'cfg must be a finite number, got nan'),
    ('sample.py', ['--cfg=inf'], 'cfg must be a finite number, got inf'),
])
def test_a_bad_number_or_device_is_one_line_and_creates_nothing(
        tiny_data, tmp_path, script, args, message):
    data = [] if script == 'sample.py' else [f'--data_dir={tiny_data}']
    one_line_error(run_main(script, *data, f'--out_dir={tmp_path}/out', *args), message)
    assert not os.path.exists(tmp_path / 'out')

@pytest.mark.parametrize('script', ['dit_train.py', 'ar_train.py', 'prepare_data.py'])
def test_a_mistake_is_one_line_in_a_process_of_its_own(tmp_path, script):
    """As a user sees it: the real process's whole stderr (warnings at import would be lines
    too)."""
    one_line_error(run_script(script, f'--out_dir={tmp_path}/out', '--seed=-1'),
                   'seed must be at least 0, got -1')
    assert not os.path.exists(tmp_path / 'out')

@pytest.mark.parametrize('script, args, message', [
    ('sample.py', ['{tmp}/in/ckpt.pt'], "is no config file (UnicodeDecodeError)"),
    ('dit_train.py', ['--seed=18446744073709551616'], 'seed must be less than 9223372036854775808'),
    ('eval.py', ['--model=textldm', '--cfg=1e39'], 'cfg must be finite in float32'),
    ('sample.py', ['--steps=1000000000000'], 'steps must be at most 10000, got 1000000000000'),
    ('bench/fidelity.py', ['--cfgs=nan,2,8'],
     'every value of cfgs must be a finite number, got nan'),
    ('bench/speed.py', ['--phase=foo'], "phase must be one of '', vae, dit, gpt"),
])
def test_each_class_of_bad_value_is_one_line_in_a_process_of_its_own(
        tmp_path, script, args, message):
    """The classes of the third bad-input sweep, as a user meets them: a file that is no config
    file, a seed numpy and torch cannot take, a float past float32, a count past what can be
    allocated, a bad value in a list option."""
    (tmp_path / 'in').mkdir()
    (tmp_path / 'in' / 'ckpt.pt').write_bytes(b'PK\x03\x04\xff\xfe\x00binary')
    out = f'--out_file={tmp_path}/out/x.json' if script in ('eval.py', 'bench/fidelity.py') else \
        f'--out_dir={tmp_path}/out'
    one_line_error(run_script(script, *[a.format(tmp=tmp_path) for a in args], out), message)
    assert not os.path.exists(tmp_path / 'out')

def test_the_readme_reading_order_is_the_method_in_four_files_and_under_900_lines():
    """README.md's "Read the method": at most four files, each range whole sections or definitions
    (it starts a file or a section and ends where the next begins), 900 lines in all."""
    text = open(os.path.join(ROOT,
                             'README.md')).read().split('## Read the method')[1].split('\n## ')[0]
    rows = re.findall(r'^\| \d \| `(\w+\.py)`(?: lines (\d+)-(\d+))? \|', text, re.M)
    assert len(rows) >= 4 and len({f for f, _, _ in rows}) <= 4
    total = 0
    for name, a, b in rows:
        lines = open(os.path.join(ROOT, name)).read().splitlines()
        a, b = (int(a), int(b)) if a else (1, len(lines))
        assert a == 1 or lines[a - 1].startswith('# ---'), (name, a)
        assert b == len(lines) or lines[b].startswith(('# ---', 'class ', 'def ', '@')), (name, b)
        total += b - a + 1
    assert total <= 900, total
