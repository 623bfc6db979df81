"""
Config overrides, nanoGPT style. A training script defines its config as plain
module-level variables and then runs

    exec(open('configurator.py').read())

which applies, in order, any `config/*.py` files and `--key=value` (or `--key value`) arguments:

    python vae_train.py config/vae_tiny.py --batch_size=32 --compile False

Values are parsed as Python literals and must keep the type of the default (an int is taken for a
float; any text is taken for a string, so --prompt=1984 is the text '1984'). Then every number is
checked against its range in _RANGES, every text option against its _CHOICES and the device against
this machine, before the script creates anything. Mistakes end the run with one line that says what is wrong.
"""
import os
import sys
import math
import time
import difflib
from ast import literal_eval

# The range of every number a script may define, applied to whichever of these keys the script has: a new
# option gets its check by a line here. '>= a', '> a', or an interval ('[' and ']' include their end).
_RANGES = {
    **dict.fromkeys(['batch_size', 'gradient_accumulation_steps', 'block_size', 'min_len', 'n_embd', 'n_head',
                     'n_layer', 'n_enc_layer', 'n_dec_layer', 'latent_channels', 'eval_interval', 'eval_iters',
                     'log_interval', 'stats_batches', 'length', 'steps', 'num_samples', 'min_tokens',
                     'owt_val_docs', 'owt_test_docs', 'num_proc'], '>= 1'),
    **dict.fromkeys(['max_iters', 'warmup_iters', 'lr_decay_iters', 'seed', 'min_lr', 'weight_decay', 'grad_clip',
                     'beta_kl', 'dec_noise', 'repa_weight', 'cfg', 'peak_tflops', 'top_k',
                     'mauve_buckets', 'bertscore_layers'], '>= 0'),
    **dict.fromkeys(['learning_rate', 't_std', 'temperature'], '> 0'),
    **dict.fromkeys(['p_drop_context', 'p_uncond', 'cfg_until'], '[0, 1]'),
    **dict.fromkeys(['dropout', 'beta1', 'beta2', 'ema_decay', 'val_frac', 'test_frac'], '[0, 1)'),
    'top_p': '(0, 1]',
}
# The values a text option may take, checked the same way.
_CHOICES = {
    'init_from': ('scratch', 'resume'),
    'dtype': ('float32', 'bfloat16'),  # no float16: it would need loss scaling (a GradScaler) not to underflow
    'backend': ('auto', 'nccl', 'gloo'),
    'head': ('velocity', 'tokens'),
    't_schedule': ('logit_normal', 'uniform'),
    'solver': ('dpm2m', 'euler'),
}

def _fail(msg):
    if os.environ.get('LOCAL_RANK', '0') != '0':
        # under torchrun every rank makes the same mistake and local rank 0 says it; the others exit silently, but
        # not first: torchrun stops all ranks once one has exited, and rank 0 could be stopped before it said it
        time.sleep(10)
        raise SystemExit(1)
    raise SystemExit(f"error: {msg}")

def _near(key, names):
    near = difflib.get_close_matches(key, [k for k in names if not k.startswith('_')], n=1)
    return f": did you mean '{near[0]}'?" if near else ""

def _known(key):
    if key.startswith('_') or key not in globals():
        _fail(f"unknown config key '{key}'" + _near(key, globals()))

def _typed(key, val, default, where):
    """val, if it has the type of the key's default (an int becomes a float where a float is expected, and so
    does the text nan or inf, which is no Python literal: the finiteness check then names it)."""
    if isinstance(default, float) and (type(val) is int or str(val).lower().lstrip('+-') in ('nan', 'inf', 'infinity')):
        return float(val)
    if default is not None and type(val) is not type(default):
        _fail(f"{where} expects {type(default).__name__} (like {default!r}), got {val!r}")
    return val

def _in_range(v, spec):
    if spec[0] in '[(':
        lo, hi = (float(x) for x in spec[1:-1].split(','))
        return (lo <= v if spec[0] == '[' else lo < v) and (v <= hi if spec[-1] == ']' else v < hi)
    op, bound = spec.split()
    return v >= float(bound) if op == '>=' else v > float(bound)

def _check_device(device):
    """A device this machine has: torch's own errors are tracebacks, and a CUDA one comes only at the first tensor."""
    import torch  # only scripts with a device get here, and they import torch anyway
    try:
        dev = torch.device(device)
    except RuntimeError:
        dev = None
    if dev is None or dev.type not in ('cpu', 'cuda'):
        _fail(f"device '{device}' is not one of cpu, cuda, cuda:N")
    if dev.type == 'cuda' and not torch.cuda.is_available():
        _fail("device is 'cuda' but no GPU is visible: pass --device=cpu (under torchrun too: DDP then uses gloo)")
    if dev.type == 'cuda' and (dev.index or 0) >= torch.cuda.device_count():
        _fail(f"device '{device}' does not exist: this machine has {torch.cuda.device_count()} GPU(s), cuda:0 and up")

_args = sys.argv[1:]
while _args:
    _arg = _args.pop(0)
    if _arg.startswith('--') and '=' not in _arg:
        # --key value: the value is the next argument, unless there is none or it is another --key
        if not _args or _args[0].startswith('--'):
            _fail(f"argument '{_arg}' needs a value: use {_arg} VALUE or {_arg}=VALUE")
        _arg = f'{_arg}={_args.pop(0)}'
    if '=' not in _arg:
        # a config file: plain Python that assigns config variables
        try:
            _src = open(_arg).read()
        except OSError:
            _fail(f"config file '{_arg}' not found (see config/ for the available ones)")
        print(f"Overriding config with {_arg}")
        _before = dict(globals())
        try:
            exec(_src)
        except Exception as _e:
            _fail(f"config file '{_arg}' does not run: {type(_e).__name__}: {' '.join(str(_e).split())}")
        for _k in set(globals()) - set(_before) - {'_before', '_src'}:
            if not _k.startswith('_'):
                _fail(f"config file '{_arg}' sets unknown key '{_k}'" + _near(_k, _before))
        for _k in [k for k in _before if not k.startswith('_') and globals()[k] is not _before[k]]:
            globals()[_k] = _typed(_k, globals()[_k], _before[_k], f"'{_k}' in config file '{_arg}'")
    else:
        if not _arg.startswith('--'):
            _fail(f"cannot parse argument '{_arg}': use --key=value")
        _key, _raw = _arg[2:].split('=', 1)
        _known(_key)
        try:
            _val = literal_eval(_raw)
        except (SyntaxError, ValueError):
            _val = _raw  # a plain string such as --device=cpu
        if isinstance(globals()[_key], str) and not isinstance(_val, str):
            _val = _raw  # any text is a string: --prompt=1984 is the text '1984'
        _val = _typed(_key, _val, globals()[_key], f"--{_key}")
        print(f"Overriding: {_key} = {_val!r}")
        globals()[_key] = _val

# every number in its range and every choice valid, before the script creates anything (an out_dir, a
# checkpoint, a run that never ends)
for _k, _v in list(globals().items()):
    if _k in _CHOICES and _v not in _CHOICES[_k]:
        _fail(f"{_k} must be one of {', '.join(_CHOICES[_k])}, got {_v!r}")
    if _k.startswith('_') or type(_v) not in (int, float):
        continue
    if not math.isfinite(_v):
        _fail(f"{_k} must be a finite number, got {_v!r}")
    if _k in _RANGES and not _in_range(_v, _RANGES[_k]):
        _spec = _RANGES[_k]
        _words = {'>=': 'at least', '>': 'greater than'}.get(_spec.split()[0])
        _fail(f"{_k} must be {f'{_words} {_spec.split()[1]}' if _words else f'in {_spec}'}, got {_v!r}")
if isinstance(globals().get('device'), str):
    _check_device(device)
