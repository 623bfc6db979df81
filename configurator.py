"""
Config overrides, nanoGPT style. A training script defines its config as plain
module-level variables and then runs

    exec(open('configurator.py').read())

which applies, in order, any `config/*.py` files and `--key=value` (or `--key value`) arguments:

    python vae_train.py config/vae_tiny.py --batch_size=32 --compile False

Values are parsed as Python literals and must keep the type of the default (an int is taken for a
float; any text is taken for a string, so --prompt=1984 is the text '1984'). A tuple default is a
list option: comma-separated values, each of the type of the default's (--lengths=64,256; one value:
--lengths=64). Then every number (every value of a list) is checked against its range in _RANGES,
every text option against its _CHOICES and the device against this machine, before the script
creates anything. Mistakes end the run with one line that says what is wrong.
"""
import os
import sys
import math
import time
import difflib
from ast import literal_eval

# The range of every number a script may define (of every value, for a list option), applied to
# whichever of these keys the script has: a new option gets its check by a line here. One or more
# bounds ('>= a, <= b'), or an interval ('[' and ']' include their end). Counts that size what a
# script allocates have an upper bound far past any real run, so that a slip of the keyboard
# (--steps=1000000000000) is one line, not a MemoryError.
_RANGES = {
    **dict.fromkeys(['gradient_accumulation_steps', 'min_len', 'eval_interval', 'eval_iters',
                     'log_interval', 'stats_batches', 'min_tokens', 'owt_val_docs', 'owt_test_docs',
                     'num_proc', 'iters', 'repeats', 'mauve_draws', 'warp_interval'], '>= 1'),
    **dict.fromkeys(['batch_size', 'sample_batches', 'num_samples', 'num_windows', 'n_head',
                     'n_layer', 'n_enc_layer', 'n_dec_layer', 'steps', 'ks', 'ref_steps',
                     'paper_steps'], '>= 1, <= 10000'),
    **dict.fromkeys(['block_size', 'n_embd', 'latent_channels', 'length', 'lengths', 'prompt_len',
                     'sample_batch_length'], '>= 1, <= 100000'),
    'window': '>= 2, <= 100000',  # tokens split into a prompt and its continuation
    **dict.fromkeys(['max_iters', 'warmup_iters', 'lr_decay_iters', 'min_lr', 'weight_decay',
                     'grad_clip', 'beta_kl', 'dec_noise', 'repa_weight', 'cfg', 'cfgs',
                     'peak_tflops', 'top_k', 'mauve_buckets', 'bertscore_layers', 'warmup',
                     'examples', 'solo_steps', 'ar_weight'], '>= 0'),
    'block_len': '>= 0, <= 100000',  # 0: the paper's layout
    'block_lens': '>= 1, <= 100000',
    # 2**63: the scripts add offsets to the seed (a rank, a batch), torch takes at most 2**64 - 1
    'seed': '>= 0, < 9223372036854775808',
    **dict.fromkeys(['learning_rate', 't_std', 'budget_s'], '> 0'),
    'temperature': '>= 0.001',  # logits / temperature must stay finite in float32
    **dict.fromkeys(['p_drop_context', 'p_uncond', 'cfg_until', 'cfg_untils'], '[0, 1]'),
    **dict.fromkeys(['dropout', 'beta1', 'beta2', 'ema_decay', 'val_frac', 'test_frac'], '[0, 1)'),
    'top_p': '(0, 1]',
}
# The values a text option may take, checked the same way.
_CHOICES = {
    'init_from': ('scratch', 'resume'),
    # no float16: it would need loss scaling (a GradScaler) not to underflow
    'dtype': ('float32', 'bfloat16'),
    'backend': ('auto', 'nccl', 'gloo'),
    **dict.fromkeys(['head', 'heads'], ('velocity', 'tokens')),
    't_schedule': ('logit_normal', 'uniform', 'learned'),
    'solver': ('dpm2m', 'euler'),
    'phase': ('', 'vae', 'dit', 'gpt', 'ldm_sampling', 'gpt_sampling'),  # internal: bench/speed.py
}
# options whose default None leaves the value to the script (sample.py: the layout's sampler): a
# value given has the type of this example
_TYPED_NONE = {'steps': 10, 'cfg_until': 0.6}
_BOUNDS = {'>=': 'at least', '>': 'greater than', '<=': 'at most', '<': 'less than'}
# torch turns a float option into a float32 where it meets a tensor
_FLOAT32_MAX = 3.4028234663852886e38

def _fail(msg):
    if os.environ.get('LOCAL_RANK', '0') != '0':
        # under torchrun every rank makes the same mistake and local rank 0 says it; the others exit
        # silently, but not first: torchrun stops all ranks once one has exited, and rank 0 could be
        # stopped before it said it
        time.sleep(10)
        raise SystemExit(1)
    raise SystemExit(f"error: {msg}")

def _near(key, names):
    near = difflib.get_close_matches(key, [k for k in names if not k.startswith('_')], n=1)
    return f": did you mean '{near[0]}'?" if near else ""

def _known(key):
    if key.startswith('_') or key not in globals():
        _fail(f"unknown config key '{key}'" + _near(key, globals()))

def _parsed(raw, default):
    """The text of --key=raw as a value: a Python literal, else the text itself (--device=cpu); any
    text is a string where the default is one (--prompt=1984 is the text '1984')."""
    try:
        val = literal_eval(raw)
    except (SyntaxError, ValueError):
        return raw
    return raw if isinstance(default, str) and not isinstance(val, str) else val

def _typed(key, val, default, where):
    """val, if it has the type of the key's default (an int becomes a float where a float is
    expected, and so does the text nan or inf, which is no Python literal: the finiteness check then
    names it). A list option's values have the type of the default's; one value is a list of one."""
    if isinstance(default, tuple):
        vals = tuple(val) if isinstance(val, (tuple, list)) else (val,)
        if not vals:
            _fail(f"{where} needs at least one value, like {','.join(map(str, default))}")
        return tuple(_typed(key, v, default[0], f"every value of {where}") for v in vals)
    if default is None:  # an option left to the script (None) still has a type
        default = _TYPED_NONE.get(key)
    nan_or_inf = str(val).lower().lstrip('+-') in ('nan', 'inf', 'infinity')
    if isinstance(default, float) and (type(val) is int or nan_or_inf):
        return float(val)
    if default is not None and type(val) is not type(default):
        _fail(f"{where} expects {type(default).__name__} (like {default!r}), got {val!r}")
    return val

def _out_of_range(v, spec):
    """'' if number v is in the range spec, else what it must be ('in [0, 1)', 'at least 1')."""
    if spec[0] in '[(':
        lo, hi = (float(x) for x in spec[1:-1].split(','))
        above = lo <= v if spec[0] == '[' else lo < v
        below = v <= hi if spec[-1] == ']' else v < hi
        return '' if above and below else f'in {spec}'
    for bound in spec.split(','):
        op, b = bound.split()
        if not {'>=': v >= float(b), '>': v > float(b), '<=': v <= float(b), '<': v < float(b)}[op]:
            return f'{_BOUNDS[op]} {b}'
    return ''

def _check(name, v, key):
    """Option key's value v (or one value of a list option) is valid, or the run ends with one line
    about it. A script checks the numbers inside a text option with it too (bench/curve.py)."""
    if key in _CHOICES and v not in _CHOICES[key]:
        _fail(f"{name} must be one of {', '.join(c or repr(c) for c in _CHOICES[key])}, got {v!r}")
    if type(v) not in (int, float):
        return
    if type(v) is float and not math.isfinite(v):
        _fail(f"{name} must be a finite number, got {v!r}")
    if type(v) is float and abs(v) > _FLOAT32_MAX:
        _fail(f"{name} must be finite in float32 (at most 3.4e38 in size), got {v!r}")
    wrong = _out_of_range(v, _RANGES[key]) if key in _RANGES else ''
    if wrong:
        _fail(f"{name} must be {wrong}, got {v!r}")

def _check_device(device):
    """A device this machine has: torch's own errors are tracebacks, and a CUDA one comes only
    at the first tensor."""
    import torch  # only scripts with a device get here, and they import torch anyway
    try:
        dev = torch.device(device)
    except RuntimeError:
        dev = None
    if dev is None or dev.type not in ('cpu', 'cuda'):
        _fail(f"device '{device}' is not one of cpu, cuda, cuda:N")
    if dev.type == 'cuda' and not torch.cuda.is_available():
        _fail("device is 'cuda' but no GPU is visible: pass --device=cpu "
              "(under torchrun too: DDP then uses gloo)")
    if dev.type == 'cuda' and (dev.index or 0) >= torch.cuda.device_count():
        _fail(f"device '{device}' does not exist: this machine has "
              f"{torch.cuda.device_count()} GPU(s), cuda:0 and up")

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
            with open(_arg, encoding='utf-8') as _f:
                _src = _f.read()
        except FileNotFoundError:
            _fail(f"config file '{_arg}' not found (see config/ for the available ones)")
        except (OSError, UnicodeDecodeError) as _e:  # a folder, a checkpoint, ...
            _fail(f"'{_arg}' is no config file ({type(_e).__name__}): a config file is Python text "
                  f"that assigns config variables (see config/); pass other values as --key=value")
        print(f"Overriding config with {_arg}")
        _before = dict(globals())
        try:
            exec(_src)
        except Exception as _e:
            _why = ' '.join(str(_e).split())
            _fail(f"config file '{_arg}' does not run: {type(_e).__name__}: {_why}")
        for _k in set(globals()) - set(_before) - {'_before', '_src'}:
            if not _k.startswith('_'):
                _fail(f"config file '{_arg}' sets unknown key '{_k}'" + _near(_k, _before))
        for _k in [k for k in _before if not k.startswith('_') and globals()[k] is not _before[k]]:
            _where = f"'{_k}' in config file '{_arg}'"
            globals()[_k] = _typed(_k, globals()[_k], _before[_k], _where)
    else:
        if not _arg.startswith('--'):
            _fail(f"cannot parse argument '{_arg}': use --key=value")
        _key, _raw = _arg[2:].split('=', 1)
        _known(_key)
        _default = globals()[_key]
        if isinstance(_default, tuple):  # a list: comma-separated, parentheses optional
            _val = tuple(_parsed(s.strip(), _default[0]) for s in _raw.strip('()[] ').split(',')
                         if s.strip())
        else:
            _val = _parsed(_raw, _default)
        _val = _typed(_key, _val, _default, f"--{_key}")
        print(f"Overriding: {_key} = {_val!r}")
        globals()[_key] = _val

# every number in its range and every choice valid, before the script creates anything (an out_dir,
# a checkpoint, a run that never ends)
for _k, _v in list(globals().items()):
    if not _k.startswith('_'):
        for _x in _v if type(_v) is tuple else (_v,):
            _check(f'every value of {_k}' if type(_v) is tuple else _k, _x, _k)
if isinstance(globals().get('device'), str):
    _check_device(device)
