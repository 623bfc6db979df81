"""
Config overrides, nanoGPT style. A training script defines its config as plain
module-level variables and then runs

    exec(open('configurator.py').read())

which applies, in order, any `config/*.py` files and `--key=value` arguments:

    python vae_train.py config/vae_tiny.py --batch_size=32 --compile=False

Values are parsed as Python literals and must keep the type of the default (an int is taken for a
float; any text is taken for a string, so --prompt=1984 is the text '1984').
Mistakes end the run with one line that says what is wrong.
"""
import sys
import difflib
from ast import literal_eval

def _fail(msg):
    raise SystemExit(f"error: {msg}")

def _near(key, names):
    near = difflib.get_close_matches(key, [k for k in names if not k.startswith('_')], n=1)
    return f": did you mean '{near[0]}'?" if near else ""

def _known(key):
    if key.startswith('_') or key not in globals():
        _fail(f"unknown config key '{key}'" + _near(key, globals()))

def _typed(key, val, default, where):
    """val, if it has the type of the key's default (an int becomes a float where a float is expected)."""
    if isinstance(default, float) and type(val) is int:
        return float(val)
    if default is not None and type(val) is not type(default):
        _fail(f"{where} expects {type(default).__name__} (like {default!r}), got {val!r}")
    return val

for _arg in sys.argv[1:]:
    if '=' not in _arg:
        # a config file: plain Python that assigns config variables
        if _arg.startswith('--'):
            _fail(f"argument '{_arg}' needs a value: use {_arg}=VALUE")
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
