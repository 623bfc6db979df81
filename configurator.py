"""
Config overrides, nanoGPT style. A training script defines its config as plain
module-level variables and then runs

    exec(open('configurator.py').read())

which applies, in order, any `config/*.py` files and `--key=value` arguments:

    python vae_train.py config/vae_tiny.py --batch_size=32 --compile=False

Values are parsed as Python literals and must keep the type of the default.
Mistakes end the run with one line that says what is wrong.
"""
import sys
import difflib
from ast import literal_eval

def _fail(msg):
    raise SystemExit(f"error: {msg}")

def _known(key):
    if key.startswith('_') or key not in globals():
        near = difflib.get_close_matches(key, [k for k in globals() if not k.startswith('_')], n=1)
        _fail(f"unknown config key '{key}'" + (f": did you mean '{near[0]}'?" if near else ""))

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
        _before = set(globals())
        exec(_src)
        for _k in set(globals()) - _before - {'_before', '_src'}:
            if not _k.startswith('_'):
                _fail(f"config file '{_arg}' sets unknown key '{_k}'")
    else:
        if not _arg.startswith('--'):
            _fail(f"cannot parse argument '{_arg}': use --key=value")
        _key, _val = _arg[2:].split('=', 1)
        _known(_key)
        try:
            _val = literal_eval(_val)
        except (SyntaxError, ValueError):
            pass  # a plain string such as --device=cpu
        _default = globals()[_key]
        if isinstance(_default, float) and type(_val) is int:
            _val = float(_val)
        if _default is not None and type(_val) is not type(_default):
            _fail(f"--{_key} expects {type(_default).__name__} (like {_default!r}), got {_val!r}")
        print(f"Overriding: {_key} = {_val!r}")
        globals()[_key] = _val
