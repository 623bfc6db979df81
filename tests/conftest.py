import os
import subprocess
import sys

import numpy as np
import pytest

# tests import the project's top-level modules and run its scripts from the repository root
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
os.environ.setdefault('HF_HUB_OFFLINE', '1')
os.environ.setdefault('TRANSFORMERS_OFFLINE', '1')

CFG = dict(dataset='embedded', tokenizer='bpe300', seed=3, val_frac=0.1, test_frac=0.1)

def make_docs():
    """80 small documents of two sources, with the unicode and special-token text a tokenizer must survive."""
    words = 'the of river castle king queen music film war city 1984 ünïcödé 🙂'.split()
    rng = np.random.default_rng(0)
    docs = [dict(source='wikipedia', title=f'Article {i}',
                 text=' '.join(rng.choice(words, size=rng.integers(5, 60))) + '.') for i in range(50)]
    docs += [dict(source='literary', title=f'Play {i}',
                  text=f'ACT {i}.\n\nScene I. A room.\n\nHAMLET.\n' + '\n'.join(rng.choice(words, size=rng.integers(20, 200))))
             for i in range(30)]
    docs[7]['text'] += ' <|endoftext|> is only text in a document'
    return docs

@pytest.fixture(scope='session')
def tiny_data(tmp_path_factory):
    """A prepared data folder of the tiny documents (BPE of 300 tokens)."""
    import prepare_data
    out = str(tmp_path_factory.mktemp('data') / 'tiny')
    prepare_data.prepare(out, CFG, os.path.join(ROOT, 'data', 'cache'), num_proc=1, docs=make_docs())
    return out

def run_script(*args, timeout=300):
    """Run one of the project's scripts as a user would; returns the CompletedProcess (never raises)."""
    return subprocess.run([sys.executable, *args], cwd=ROOT, capture_output=True, text=True, timeout=timeout,
                          env=dict(os.environ, PYTHONUNBUFFERED='1'))

def one_line_error(proc, message):
    """A user mistake: a non-zero exit, no traceback, and one line on stderr, `error: ...` holding message."""
    lines = proc.stderr.strip().splitlines()
    assert proc.returncode != 0 and 'Traceback' not in proc.stderr, proc.stderr[-3000:]
    assert len(lines) == 1 and lines[0].startswith('error: ') and message in lines[0], proc.stderr[-3000:]
