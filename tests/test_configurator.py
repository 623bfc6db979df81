"""The command line, in-process: `--key value` as well as `--key=value`, the ranges of every number, the device,
config files, and every command line of README.md parsed as written by the real configurator of its script;
through the real scripts, a mistake is one line and creates nothing."""
import glob
import os
import re
import sys

import pytest
import torch

from conftest import README_SAMPLE, ROOT, one_line_error, readme_commands, run_main, run_script

SCRIPTS = ['vae_train.py', 'dit_train.py', 'ar_train.py', 'sample.py', 'eval.py', 'prepare_data.py']

class Parsed(Exception):
    pass

def config_of(script, args, monkeypatch):
    """The globals a script has right after its configurator ran on args: its own code up to and including the
    exec of configurator.py, in this process, and nothing after it. A user mistake raises SystemExit."""
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
    spaced = config_of('sample.py', ['--prompt', 'The river', '--length', '48', '--cfg', '2', '--device', 'cpu'], monkeypatch)
    joined = config_of('sample.py', ['--prompt=The river', '--length=48', '--cfg=2', '--device=cpu'], monkeypatch)
    for k in ('prompt', 'length', 'cfg', 'device'):
        assert spaced[k] == joined[k]
    assert (spaced['prompt'], spaced['length'], spaced['cfg']) == ('The river', 48, 2.0)
    # text is text in either form, a negative number is a value, and a config file still works beside them
    assert config_of('sample.py', ['--prompt', '1984'], monkeypatch)['prompt'] == '1984'
    ns = config_of('dit_train.py', ['config/dit_tiny.py', '--t_mean', '-0.5', '--batch_size', '8'], monkeypatch)
    assert (ns['t_mean'], ns['batch_size']) == (-0.5, 8)

@pytest.mark.parametrize('args', [['--prompt'], ['--prompt', '--length', '3'], ['--length', '3', '--prompt']])
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
    *[(s, '--dtype=float16', "dtype must be one of float32, bfloat16, got 'float16'") for s in ['vae_train.py', 'dit_train.py', 'ar_train.py']],
    ('dit_train.py', '--head=logits', "head must be one of velocity, tokens, got 'logits'"),
    ('dit_train.py', '--t_schedule=cosine', "t_schedule must be one of logit_normal, uniform, got 'cosine'"),
    ('vae_train.py', '--init_from=resum', "init_from must be one of scratch, resume, got 'resum'"),
    ('ar_train.py', '--backend=mpi', "backend must be one of auto, nccl, gloo, got 'mpi'"),
    ('ar_train.py', '--device=cuda:x', "device 'cuda:x' is not one of cpu, cuda, cuda:N"),
    ('eval.py', '--device=meta', "device 'meta' is not one of cpu, cuda, cuda:N"),
])
def test_a_number_out_of_its_range_a_bad_choice_or_a_bad_device_is_one_line(monkeypatch, script, arg, message):
    assert refused(script, [arg], monkeypatch) == 'error: ' + message

def test_the_device_must_be_on_this_machine(monkeypatch):
    monkeypatch.setattr(torch.cuda, 'is_available', lambda: False)
    assert refused('sample.py', ['--device=cuda'], monkeypatch) == \
        "error: device is 'cuda' but no GPU is visible: pass --device=cpu (under torchrun too: DDP then uses gloo)"
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

def test_every_default_and_config_file_is_in_range_and_every_range_and_choice_has_its_key(monkeypatch):
    monkeypatch.setattr(torch.cuda, 'is_available', lambda: True)  # config files for GPUs
    monkeypatch.setattr(torch.cuda, 'device_count', lambda: 8)
    keys = set()
    for script in SCRIPTS:
        ns = config_of(script, [], monkeypatch)
        keys |= {k for k in ns if not k.startswith('_')}
    for path in sorted(glob.glob(os.path.join(ROOT, 'config', '*.py'))):
        name = os.path.basename(path)
        script = next(s for p, s in [('vae', 'vae_train.py'), ('dit', 'dit_train.py'), ('gpt', 'ar_train.py'),
                                     ('eval', 'eval.py')] if name.startswith(p))
        config_of(script, [f'config/{name}'], monkeypatch)
    for table in ('_RANGES', '_CHOICES'):
        stale = set(ns[table]) - keys  # a typo in the table would check nothing
        assert not stale, f"configurator.{table} has keys that no script defines (a typo, or an option removed): {stale}"

# -----------------------------------------------------------------------------
# README.md's command lines, as written

def test_every_readme_command_line_is_accepted_as_written(monkeypatch):
    commands = readme_commands()
    assert README_SAMPLE in [line for line, _, _ in commands]
    assert len(commands) >= 20 and {s for _, s, _ in commands} >= set(SCRIPTS)
    monkeypatch.setattr(torch.cuda, 'is_available', lambda: True)  # the lines for GPUs, on any machine
    monkeypatch.setattr(torch.cuda, 'device_count', lambda: 8)
    for line, script, args in commands:
        assert os.path.isfile(os.path.join(ROOT, script)), line
        if 'configurator.py' in open(os.path.join(ROOT, script)).read():  # bench/*.py but speed.py parse their own
            config_of(script, args, monkeypatch)
    ns = config_of('sample.py', next(args for line, _, args in commands if line == README_SAMPLE), monkeypatch)
    assert (ns['prompt'], ns['length'], ns['num_samples']) == ('The river', 48, 3)

# -----------------------------------------------------------------------------
# through the real scripts: one line, and nothing on disk (a run that never ends would hang the test)

TRAINERS = ['vae_train.py', 'dit_train.py', 'ar_train.py']

@pytest.mark.parametrize('script, args, message', [
    pytest.param('sample.py', ['--device=cuda'],
                 "device is 'cuda' but no GPU is visible: pass --device=cpu (under torchrun too: DDP then uses gloo)",
                 marks=pytest.mark.skipif(torch.cuda.is_available(), reason='a GPU is visible')),
    *[(s, ['--device=foo'], "device 'foo' is not one of cpu, cuda, cuda:N") for s in ['sample.py', 'dit_train.py']],
    *[(s, ['--batch_size=0'], 'batch_size must be at least 1, got 0') for s in TRAINERS],
    *[(s, ['--max_iters=-5'], 'max_iters must be at least 0, got -5') for s in ['dit_train.py', 'ar_train.py']],
    ('sample.py', ['--cfg', 'nan'], 'cfg must be a finite number, got nan'),
    ('sample.py', ['--cfg=inf'], 'cfg must be a finite number, got inf'),
])
def test_a_bad_number_or_device_is_one_line_and_creates_nothing(tiny_data, tmp_path, script, args, message):
    data = [] if script == 'sample.py' else [f'--data_dir={tiny_data}']
    one_line_error(run_main(script, *data, f'--out_dir={tmp_path}/out', *args), message)
    assert not os.path.exists(tmp_path / 'out')

@pytest.mark.parametrize('script', ['dit_train.py', 'ar_train.py', 'prepare_data.py'])
def test_a_mistake_is_one_line_in_a_process_of_its_own(tmp_path, script):
    """As a user sees it: the real process's whole stderr (warnings at import would be lines too)."""
    one_line_error(run_script(script, f'--out_dir={tmp_path}/out', '--seed=-1'), 'seed must be at least 0, got -1')
    assert not os.path.exists(tmp_path / 'out')

def test_the_readme_reading_order_is_the_method_in_four_files_and_under_900_lines():
    """README.md's "Read the method": at most four files, each range whole sections or definitions (it starts
    a file or a section and ends where the next begins), 900 lines in all."""
    text = open(os.path.join(ROOT, 'README.md')).read().split('## Read the method')[1].split('\n## ')[0]
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
