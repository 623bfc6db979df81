"""The autoregressive baseline: the GPT model, its KV-cache sampler, ar_train.py end to end and the
sampling entry for evaluation (baselines.load_gpt, baselines.gpt_generate)."""
import re

import pytest
import torch

from conftest import TINY_GPT, one_line_error, run_main, same_weights, straight_and_resumed
from model import GPT, GPTConfig, KVCache, next_token

def tiny_gpt(seed=0):
    torch.manual_seed(seed)
    return GPT(GPTConfig(vocab_size=50, block_size=64, n_embd=32, n_head=4, n_layer=2)).eval()

def test_kv_cache_sampling_equals_sampling_without_it():
    model = tiny_gpt()
    prompt = torch.randint(0, 50, (3, 5))
    idx = prompt
    for _ in range(30):  # no cache: the whole sequence again at every step
        idx = torch.cat([idx, model(idx)[0][:, -1].argmax(-1, keepdim=True)], dim=1)
    assert torch.equal(model.generate(prompt, 30, greedy=True), idx)
    # and the cached last-position logits are the full forward's
    cache = [KVCache() for _ in model.body.blocks]
    h = torch.cat([model.body(model.wte(idx[:, :5]), cache=cache)] +
                  [model.body(model.wte(idx[:, t:t + 1]), cache=cache)
                   for t in range(5, idx.size(1))], dim=1)
    assert torch.allclose(model.lm_head(h), model(idx)[0], atol=1e-5)

def test_gpt_is_causal():
    model = tiny_gpt()
    idx = torch.randint(0, 50, (2, 12))
    idx2 = idx.clone()
    idx2[:, 7:] = (idx2[:, 7:] + 1) % 50
    a, b = model(idx)[0], model(idx2)[0]
    assert torch.allclose(a[:, :7], b[:, :7], atol=1e-6)
    assert not torch.allclose(a[:, 7:], b[:, 7:])

def test_gpt_overfits_a_tiny_batch():
    model = tiny_gpt().train()
    idx = torch.randint(0, 50, (4, 16))
    opt = torch.optim.AdamW(model.parameters(), lr=1e-2)
    losses = []
    for _ in range(60):
        _, loss = model(idx[:, :-1], idx[:, 1:])
        loss.backward()
        opt.step()
        opt.zero_grad()
        losses.append(loss.item())
    assert losses[0] > 3.5 and losses[-1] < 0.1

def test_padding_targets_are_ignored():
    model = tiny_gpt()
    idx = torch.randint(0, 50, (2, 10))
    y = idx[:, 1:].clone()
    y[0, 4:] = -1
    logits, loss = model(idx[:, :-1], y)
    ce = torch.nn.functional.cross_entropy(torch.cat([logits[0, :4], logits[1]]),
                                           torch.cat([y[0, :4], y[1]]))
    assert torch.allclose(loss, ce)

def test_top_k_and_top_p():
    logits = torch.tensor([[0.0, 3.0, 1.0, 2.0]]).repeat(500, 1)
    g = torch.Generator().manual_seed(0)
    assert set(next_token(logits, top_k=2, generator=g).flatten().tolist()) == {1, 3}
    p = logits[0].softmax(-1)  # p[1] = 0.64, p[1] + p[3] = 0.88
    nucleus = next_token(logits, top_p=float(p[1]) + 0.01, generator=g)
    assert set(nucleus.flatten().tolist()) == {1, 3}
    assert set(next_token(logits, top_p=0.5, generator=g).flatten().tolist()) == {1}
    assert torch.equal(next_token(logits, top_k=1, generator=g), next_token(logits, greedy=True))

def test_ar_train_learns_resumes_and_samples(tiny_data, tmp_path):
    common = [f'--data_dir={tiny_data}', '--lr_decay_iters=40', '--eval_interval=20',
              '--learning_rate=1e-2', *TINY_GPT]
    straight, a, b = straight_and_resumed('ar_train.py', tmp_path, 40, common)
    assert len(a) == 40 and len(b) == 20
    assert a[20:] == pytest.approx(b, rel=1e-5)
    val = [float(x) for x in re.findall(r'^step \d+: val loss ([\d.]+)', straight, re.M)]
    # next-token loss goes down (ln 300 = 5.7 at first)
    assert sum(a[-10:]) < sum(a[:10]) and val[-1] < 0.6 * val[0]
    assert same_weights(f'{tmp_path}/a', f'{tmp_path}/b')

    from baselines import gpt_generate, load_gpt
    model, enc = load_gpt(f'{tmp_path}/a', 'cpu')
    # prompts of different lengths, and one twice with another length (sampled together, trimmed
    # apart)
    prompts = ['the river', 'the king and the queen of the city', 'war', 'the river']
    lengths = [5, 8, 3, 2]
    greedy = gpt_generate(model, enc, prompts, lengths, greedy=True)
    assert all(greedy) and greedy[3] == enc.decode(enc.encode_ordinary(greedy[0])[:2])
    assert greedy == [gpt_generate(model, enc, [p], n, greedy=True)[0]
                      for p, n in zip(prompts, lengths)]
    assert greedy == gpt_generate(model, enc, prompts, lengths, top_k=1, seed=7)
    sampled = gpt_generate(model, enc, prompts, 6, top_p=0.9, seed=1)
    # reproducible from the seed
    assert sampled == gpt_generate(model, enc, prompts, 6, top_p=0.9, seed=1)

@pytest.mark.parametrize('args, message', [
    (['--n_layers=3'], "unknown config key 'n_layers': did you mean 'n_layer'"),
    (['--batch_size=8.5'], "--batch_size expects int"),
    (['--min_len=1'], "need 2 <= min_len <= block_size"),
    (['--init_from=resume'], "no checkpoint at"),
    (['--data_dir=/nonexistent'], "no prepared data in /nonexistent"),
])
def test_ar_train_bad_input_is_one_clear_line(tiny_data, tmp_path, args, message):
    one_line_error(run_main('ar_train.py', f'--data_dir={tiny_data}', f'--out_dir={tmp_path}',
                            *TINY_GPT, *args), message)

def test_gpt_generate_bad_input(tiny_data):
    from data import get_tokenizer, load_meta
    enc = get_tokenizer(load_meta(tiny_data), tiny_data)
    model = tiny_gpt()
    from baselines import gpt_generate
    with pytest.raises(SystemExit, match='non-empty prompt'):
        gpt_generate(model, enc, ['the', ''], 4)
    with pytest.raises(SystemExit, match='between 1 and 63'):
        gpt_generate(model, enc, ['the'], 64)
