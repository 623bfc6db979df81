"""
Read what prepare_data.py wrote: meta.json, the tokenizer, and batches of token windows that never
cross a document boundary.
"""
import hashlib
import json
import os

import numpy as np
import tiktoken
import torch
from tiktoken.load import load_tiktoken_bpe

def load_meta(data_dir):
    path = os.path.join(data_dir, 'meta.json')
    if not os.path.exists(path):
        raise SystemExit(f"error: no prepared data in {data_dir} (no meta.json): run `python "
                         "prepare_data.py` first")
    with open(path) as f:
        return json.load(f)

def tokenizer_sha256(meta):
    """sha256 of the tokenizer's ranks file: checkpoints record it, so that a model is never run
    with another tokenizer."""
    return meta['tokenizer']['sha256']

def get_tokenizer(meta, data_dir):
    """The tiktoken Encoding described in meta['tokenizer'], from the ranks file in data_dir."""
    spec = meta['tokenizer']
    path = os.path.join(data_dir, spec['file'])
    if not os.path.exists(path):
        raise SystemExit(f"error: tokenizer file {path} is missing: prepare {data_dir} again")
    with open(path, 'rb') as f:
        if hashlib.sha256(f.read()).hexdigest() != spec['sha256']:
            raise SystemExit(f"error: {path} is not the tokenizer that {data_dir} was tokenized "
                             f"with (its sha256 differs from meta.json): prepare {data_dir} again")
    # expected_hash also guards against tiktoken's file cache, which is keyed by path, not by
    # content
    ranks = load_tiktoken_bpe(path, expected_hash=spec['sha256'])
    return tiktoken.Encoding(spec['name'], pat_str=spec['pat_str'], mergeable_ranks=ranks,
                             special_tokens=spec['special_tokens'])

class TokenData:
    """One split's tokens (a memmap of <split>.bin) and its document offsets (<split>_docs.npy)."""

    def __init__(self, data_dir, split):
        meta = load_meta(data_dir)
        if split not in ('train', 'val'):
            raise SystemExit(f"error: split '{split}' has no tokens: use train or val (test is raw "
                             "text in test.jsonl)")
        want, dtype = meta['splits'][split], np.dtype(meta['dtype'])
        path = os.path.join(data_dir, f'{split}.bin')
        if not os.path.exists(path):
            raise SystemExit(f"error: {path} is missing: prepare {data_dir} again")
        nbytes = os.path.getsize(path)
        if nbytes % dtype.itemsize or nbytes // dtype.itemsize != want['tokens']:
            raise SystemExit(f"error: {path} has {nbytes} bytes but meta.json says "
                             f"{want['tokens']} tokens of {dtype} "
                             f"({want['tokens'] * dtype.itemsize} bytes): it is truncated or "
                             f"stale, prepare {data_dir} again")
        self.tokens = np.memmap(path, dtype=dtype, mode='r')
        # (ndocs+1,) start offsets, then the end
        self.docs = np.load(os.path.join(data_dir, f'{split}_docs.npy'))
        d = self.docs
        if (len(d) != want['docs'] + 1 or d[0] != 0 or d[-1] != len(self.tokens)
                or np.any(np.diff(d) < 0)):
            raise SystemExit(f"error: {split}_docs.npy in {data_dir} does not match {split}.bin "
                             "and meta.json: prepare it again")
        # an out-of-range id would index past the embedding table mid-run: every token is checked,
        # wherever it sits, before a script creates anything. One sequential read, ~10 GB/s from the
        # page cache (a few ms for the embedded data, seconds for OpenWebText2), in chunks so that
        # memory stays flat
        for lo in range(0, len(self.tokens), 1 << 24):
            chunk = self.tokens[lo:lo + (1 << 24)]
            if chunk.max() >= meta['vocab_size']:
                at = lo + int(np.argmax(chunk >= meta['vocab_size']))
                raise SystemExit(f"error: {path} has token id {self.tokens[at]} at position {at}, "
                                 f"but vocab_size is {meta['vocab_size']}: it is damaged or stale, "
                                 f"prepare {data_dir} again")
        self.vocab_size, self.ndocs = meta['vocab_size'], want['docs']

    def __len__(self):
        return len(self.tokens)

    def sample(self, batch_size, lengths, rng):
        """batch_size windows, row i of length lengths[i] (an int: all the same), each inside one
        document: the document is drawn with probability proportional to its length and the start
        uniformly where the window fits; a document shorter than the window is taken whole. rng: a
        numpy Generator. Returns idx (B, max(lens)) int64 right-padded with 0, and lens (B,)
        int64."""
        want = np.broadcast_to(np.asarray(lengths, dtype=np.int64), (batch_size,))
        # a uniformly random token picks its document with probability proportional to the
        # document's length
        doc = np.searchsorted(self.docs, rng.integers(0, len(self.tokens), batch_size),
                              side='right') - 1
        start, size = self.docs[doc], self.docs[doc + 1] - self.docs[doc]
        lens = np.minimum(want, size)
        start = start + rng.integers(0, size - lens + 1)
        pos = np.arange(lens.max())
        mask = pos < lens[:, None]
        gather = np.where(mask, start[:, None] + pos, 0)  # padding reads token 0 and is then zeroed
        idx = np.where(mask, self.tokens[gather], 0).astype(np.int64)
        return torch.from_numpy(idx), torch.from_numpy(lens)
