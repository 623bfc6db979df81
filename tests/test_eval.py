"""eval.py: the split of a sample, the metrics on texts whose answer is known, the benchmark loaders
on local stand-ins, every kind of model of baselines.py end to end at tiny sizes, the table,
repeatability and bad input."""
import json
import shlex
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
import torch

import baselines
import eval as ev  # not as `eval`: the builtin stays
from conftest import make_docs, ok, one_line_error, run_main, run_script
from data import get_tokenizer, load_meta

def test_split_lies_in_40_to_60_percent_and_never_cuts_a_token(tiny_data):
    # a 300-token BPE: the accents and the emoji span tokens
    enc = get_tokenizer(load_meta(tiny_data), tiny_data)
    rng = np.random.default_rng(0)
    texts = [d['text'] for d in make_docs()] + ['ünïcödé 🙂🙂 ' * 30]
    cuts = []
    for text in texts:
        ids = enc.encode_ordinary(text)
        for start in (0, 1, 3):  # windows that begin inside a character too
            window = ids[start:start + 64]
            if len(window) < 8:
                continue
            prefix, target, k, n = ev.split_window(window, enc.decode, rng)
            assert n == len(window)
            cut = len(window) - k
            assert 0.4 <= cut / len(window) <= 0.6
            assert enc.decode(window[:cut]) == prefix and enc.decode(window[cut:]) == target
            assert prefix + target == enc.decode(window)
            cuts.append(cut / len(window))
    assert len(cuts) > 100 and np.std(cuts) > 0.04  # spread over the range, not always the middle

def test_samples_fill_up_with_later_windows_of_long_documents():
    chars = lambda text: list(text)  # a character tokenizer
    docs = ['x' * 109, 'abcdefghij', 'tiny']
    samples = ev.make_samples(iter(docs), chars, ''.join, 20, 12, 8, np.random.default_rng(0))
    # two first windows ('tiny' is under 8 tokens), then the long document's later windows: four of
    # 20 and its 9-token tail: 7 of the 12 asked for
    assert len(samples) == 7 and sum(p.startswith('abc') for p, *_ in samples) == 1
    halves = sorted(len(p) + len(t) for p, t, _, _ in samples)
    assert sorted(n for *_, n in samples) == halves == [9, 10] + [20] * 5

def test_rouge_of_a_text_with_itself_and_with_another():
    text = 'The castle stands on a hill above the river, and the king rode out at dawn.'
    other = 'Quantum chromodynamics describes quarks bound by gluons into hadrons.'
    same, unrelated = ev.rouge([text], [text]), ev.rouge([other], [text])
    assert same['rouge1'] == same['rouge2'] == same['rougeL'] == 100.0
    assert same['rougeL_ci'] == [100.0, 100.0]
    assert max(unrelated[k] for k in ('rouge1', 'rouge2', 'rougeL')) < 15

def test_prompt_specific_rouge_credits_the_true_continuation_not_a_blind_one_of_the_right_length():
    """Targets of 3 to 80 words from one small vocabulary: a prompt-blind model that writes random
    words of that vocabulary, as many as its target has, shares plenty with every target (ROUGE-L
    ~35) but nothing specific to its own. Against the next sample's target instead of one of the
    same length, it would score ~5 with an interval above 0, from the length alone."""
    words = 'the of river castle king queen music film war city stood near old'.split()
    rng = np.random.default_rng(0)
    lens = rng.integers(3, 80, 60)
    refs = [' '.join(rng.choice(words, k)) for k in lens]
    blind = ev.rouge([' '.join(rng.choice(words, k)) for k in lens], refs)
    true = ev.rouge(refs, refs)
    lo, hi = true['rougeL_specific_ci']
    assert lo > 50 and lo <= true['rougeL_specific'] <= hi
    assert blind['rougeL'] > 25 and abs(blind['rougeL_specific']) < 2
    lo, hi = blind['rougeL_specific_ci']
    assert lo < 1 and hi > -1  # the interval reaches 0 (by-one pairing: [2.2, 7.5])

def test_prompt_specific_rouge_of_the_floor_and_the_ceiling(tiny_data, tmp_path):
    """The unigram model (random tokens at corpus frequency) and the true continuation on 150
    samples of the tiny corpus's kind of text: the first ~0, the second far above."""
    words = 'the of river castle king queen music film war city 1984 ünïcödé 🙂'.split()
    rng = np.random.default_rng(1)
    texts = [' '.join(rng.choice(words, size=rng.integers(5, 60))) + '.' for _ in range(150)]
    (tmp_path / 'lm1b.jsonl').write_text(''.join(json.dumps({'text': t}) + '\n' for t in texts))
    gen, encode, decode, _ = baselines.load_model('unigram', '', 'cpu', tiny_data)
    rng = np.random.default_rng(0)
    samples = ev.make_samples(ev.documents('lm1b', rng, tiny_data, str(tmp_path)), encode, decode,
                              32, 150, 8, rng)
    prompts, targets, lengths, _ = map(list, zip(*samples))
    floor, ceiling = ev.rouge(gen(prompts, lengths, 0), targets), ev.rouge(targets, targets)
    lo, hi = floor['rougeL_specific_ci']
    assert len(targets) == 150 and floor['rougeL'] > 5 and lo < 1 and hi > -1 and hi - lo < 10
    assert ceiling['rougeL_specific_ci'][0] > 50

def test_generative_perplexity_is_low_for_what_the_judge_learned_and_high_for_noise():
    """A byte-level GPT that learned one sentence finds its true continuation likely, shuffled bytes
    not."""
    from model import GPT, GPTConfig
    torch.manual_seed(0)
    text = 'the king rode out at dawn and the castle slept. '
    encode = lambda s: list(s.encode())
    gpt = GPT(GPTConfig(vocab_size=256, block_size=64, n_layer=1, n_head=2, n_embd=32))
    opt = torch.optim.AdamW(gpt.parameters(), lr=1e-2)
    x = torch.tensor(encode(text * 2)[:64])[None]
    for _ in range(150):
        loss = gpt(x[:, :-1], x[:, 1:])[1]
        opt.zero_grad()
        loss.backward()
        opt.step()
    gpt.eval()
    prompt, rest = text[:20], text[20:]
    noise = ''.join(np.random.default_rng(0).permutation(list(rest)))
    good = ev.gen_perplexity(gpt, encode, [rest] * 4, [prompt] * 4)
    bad = ev.gen_perplexity(gpt, encode, [noise] * 4, [prompt] * 4)
    assert good['genppl'] < 1.5 < 10 < bad['genppl']
    assert good['genppl_ci'][0] <= good['genppl'] <= good['genppl_ci'][1]

def domain_sentences(kind, n, seed):
    rng = np.random.default_rng(seed)
    if kind == 'play':
        who = ['Thou', 'My lord, thou', 'Good sir, thou', 'Sweet lady, thou']
        verb = ['dost', 'shalt', 'wouldst', 'hast']
        what = ['wrong thy heart with idle vows', 'speak of love beneath the moon',
                'not betray thy gentle king', 'weep for me anon']
        return [f"{rng.choice(who)} {rng.choice(verb)} {rng.choice(what)}, forsooth!"
                for _ in range(n)]
    subj = ['The city', 'The river', 'The company', 'The album']
    verb = ['was founded in', 'is located in', 'was released in', 'expanded in']
    what = ['1984 in northern Germany', 'the county of Kent', 'the United States',
            'the year 2003 by its owners']
    return [f"{rng.choice(subj)} {rng.choice(verb)} {rng.choice(what)}, according to the census."
            for _ in range(n)]

def test_mauve_is_high_on_the_same_set_and_low_across_domains():
    featurize = ev.Featurizer('minilm', 'cpu')
    wiki, wiki2 = domain_sentences('wiki', 50, 0), domain_sentences('wiki', 50, 1)
    play = domain_sentences('play', 50, 2)
    assert ev.mauve_score(featurize, wiki, wiki)['mauve'] > 99
    assert ev.mauve_score(featurize, wiki2, wiki)['mauve'] > 50  # another draw of the same domain
    assert ev.mauve_score(featurize, play, wiki)['mauve'] < 10

def test_hf_benchmark_loaders_read_local_stand_ins(tmp_path, monkeypatch):
    import datasets
    # datasets sleeps 5 s after each parquet stream, so that pyarrow's threads end before the
    # interpreter does: this process lives on long after
    monkeypatch.setattr(datasets.config, 'SLEEP_TIME_ON_THREADS_SHUTDOWN', 0)
    texts = [f'Document number {i} says something.' for i in range(30)]
    for name in ev.HF_BENCHMARKS:  # parquet for one, jsonl for the others
        if name == 'wikipedia_hf':
            ds = datasets.Dataset.from_dict({'text': texts, 'id': list(range(30))})
            ds.to_parquet(str(tmp_path / f'{name}.parquet'))
        else:
            (tmp_path / f'{name}.jsonl').write_text(''.join(json.dumps({'text': t}) + '\n'
                                                            for t in texts))
        got = list(ev.documents(name, None, '', str(tmp_path), seed=0))
        assert sorted(got) == sorted(texts) and got != texts  # all of them, shuffled
        assert list(ev.documents(name, None, '', str(tmp_path), seed=0)) == got
    with pytest.raises(SystemExit, match='no lm1b.parquet or lm1b.jsonl in /nonexistent'):
        next(ev.documents('lm1b', None, '', '/nonexistent'))

def test_table_has_a_row_per_run_and_a_column_per_figure_of_any_run(tmp_path):
    from table import save_run
    (tmp_path / 'notes.json').write_text('{"other": 1}')  # not an eval JSON: no row
    b = dict(label='b', window=32,
             results={'wikipedia': {'n': 4, 'rougeL': 12.345, 'genppl': 123456.0}})
    a = dict(label='a (out/x)', window=128,
             results={'wikipedia': {'rougeL': 50.0}, 'literary': {'mauve': 7.0}})
    save_run(f'{tmp_path}/b.json', b)
    # rows by file name, columns in the order of the benchmarks' first runs
    path = save_run(f'{tmp_path}/a.json', a)
    assert path == f'{tmp_path}/table.md'
    assert json.load(open(f'{tmp_path}/b.json'))['results']['wikipedia']['n'] == 4
    assert open(path).read().splitlines()[:4] == [
        '| model | window | wikipedia ROUGE-L | wikipedia gen. PPL | literary MAUVE |',
        '|---|---|---|---|---|',
        '| a (out/x) | 128 | 50.0 |  | 7.0 |',
        '| b | 32 | 12.3 | 1.23e+05 |  |']

@pytest.fixture(scope='module')
def hf_dir(tmp_path_factory):
    d = tmp_path_factory.mktemp('hf')
    stories = [f'Once upon a time a little {w} found a red ball in the park. It was very happy and '
               'played all day.'
               for w in ('dog', 'cat', 'girl', 'boy', 'bird', 'fox', 'bear', 'frog')]
    (d / 'tinystories.jsonl').write_text(''.join(json.dumps({'text': t}) + '\n' for t in stories))
    return str(d)

def test_same_seed_gives_the_same_numbers(tiny_data, hf_dir, tmp_path):
    args = ['--model=unigram', f'--data_dir={tiny_data}', f'--hf_local_dir={hf_dir}',
            '--benchmarks=wikipedia,literary,tinystories', '--num_samples=12', '--block_size=32']
    # the first run in a process of its own, the repeat in this one meanwhile
    with ThreadPoolExecutor(1) as pool:
        first = pool.submit(run_script, 'eval.py', *args, f'--out_file={tmp_path}/a/unigram.json')
        ok(run_main('eval.py', *args, f'--out_file={tmp_path}/b/unigram.json'))
        ok(first.result())
    ref = f'{tmp_path}/a/reference.json'
    ok(run_main('eval.py', *args, '--model=reference', '--benchmarks=wikipedia',
                f'--out_file={ref}', '--metrics=rouge,bertscore'))
    a, b = (json.load(open(f'{tmp_path}/{run}/unigram.json'))['results'] for run in 'ab')
    assert a == b
    assert set(a['literary']) >= {'n', 'rouge1', 'rouge2', 'rougeL', 'mauve', 'bertscore'}
    # 3 plays and 8 stories: later windows fill up
    assert a['literary']['n'] == a['tinystories']['n'] == 12
    r = json.load(open(ref))
    wiki = r['results']['wikipedia']
    assert wiki['rougeL'] == pytest.approx(100)
    assert wiki['bertscore'] == pytest.approx(100, abs=1e-3)
    assert r['results']['wikipedia']['rouge1'] > a['wikipedia']['rouge1']
    # prompt-specific ROUGE-L: the true continuation clearly above 0, random tokens at corpus
    # frequency ~0
    assert r['results']['wikipedia']['rougeL_specific_ci'][0] > 20, r['results']['wikipedia']
    assert all(a[b]['rougeL_specific_ci'][1] < r['results']['wikipedia']['rougeL_specific_ci'][0]
               for b in a)
    # the later --model wins, and the command is recorded as typed:
    assert r['config']['model'] == 'reference'
    typed = 'python eval.py ' + shlex.join([*args, f'--out_file={tmp_path}/a/unigram.json'])
    assert json.load(open(f'{tmp_path}/a/unigram.json'))['command'] == typed
    table = open(f'{tmp_path}/a/table.md').read().splitlines()
    assert len(table) == 2 + 2 + 2 and table[0].startswith(
        '| model | window | wikipedia ROUGE-1 | wikipedia ROUGE-2 | wikipedia ROUGE-L | wikipedia '
        'ROUGE-L prompt-specific |')
    spec = f"{r['results']['wikipedia']['rougeL_specific']:.1f}"
    assert table[2].startswith(f'| reference | 32 | 100.0 | 100.0 | 100.0 | {spec} | 100.0 |  |')
    assert table[3].startswith('| unigram | 32 | ')

def test_pretrained_gpt2_path_with_a_tiny_local_gpt2(tiny_data, hf_dir, tmp_path):
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import GPT2Config, GPT2LMHeadModel, PreTrainedTokenizerFast
    bpe = Tokenizer(models.BPE())
    bpe.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    bpe.decoder = decoders.ByteLevel()
    bpe.train_from_iterator([d['text'] for d in make_docs()], trainers.BpeTrainer(
        vocab_size=300, special_tokens=['<|endoftext|>'],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet()))
    tok = PreTrainedTokenizerFast(tokenizer_object=bpe, eos_token='<|endoftext|>',
                                  bos_token='<|endoftext|>')
    tok.save_pretrained(tmp_path / 'gpt2')
    GPT2LMHeadModel(GPT2Config(vocab_size=len(tok), n_positions=48, n_embd=32, n_layer=2, n_head=2,
                               bos_token_id=0, eos_token_id=0)).save_pretrained(tmp_path / 'gpt2')
    gen, encode, decode, context = baselines.load_model('gpt2', str(tmp_path / 'gpt2'), 'cpu',
                                                        tiny_data)
    assert context == 48
    # prompt + 30 > 48: keeps its end
    prompts, lengths = ['the river and the', 'ACT 1. Scene I. A room. ' * 5], [5, 30]
    a = gen(prompts, lengths, seed=0)
    assert a == gen(prompts, lengths, seed=0) and a != gen(prompts, lengths, seed=1)
    ok(run_main('eval.py', '--model=gpt2', f'--out_dir={tmp_path}/gpt2', f'--data_dir={tiny_data}',
                f'--hf_local_dir={hf_dir}', '--benchmarks=wikipedia,tinystories', '--num_samples=6',
                '--metrics=rouge', f'--out_file={tmp_path}/gpt2.json'))
    res = json.load(open(f'{tmp_path}/gpt2.json'))
    assert res['window'] == 48 and res['results']['tinystories']['n'] == 6
    assert 'rougeL' in res['results']['wikipedia']

@pytest.mark.parametrize('model', ['textldm', 'gpt'])
def test_trained_models_with_the_context_shuffle_test_and_a_judge(
        dit_dir, gpt_dir, tiny_data, model, tmp_path):
    ok(run_main('eval.py', f'--model={model}',
                f'--out_dir={dit_dir if model == "textldm" else gpt_dir}',
                f'--data_dir={tiny_data}', '--num_samples=6', '--steps=4', '--metrics=rouge,genppl',
                f'--judge={gpt_dir}', '--shuffle_test=True', '--batch_size=4',
                f'--out_file={tmp_path}/{model}.json'))
    res = json.load(open(f'{tmp_path}/{model}.json'))
    # the model's context: the DiT's and its VAE's, the GPT's
    assert res['window'] == {'textldm': 64, 'gpt': 32}[model]
    for bench in ('wikipedia', 'literary'):
        r = res['results'][bench]
        assert r['n'] == 6 and 0 <= r['ctx_unchanged'] <= 100 and 1 < r['genppl'] < 1e6

@pytest.mark.parametrize('args, message', [
    (['--benchmarks=wikipedia,nope'],
     "unknown benchmark 'nope': choose from wikipedia, literary, tinystories, lm1b, wikipedia_hf, "
     "wikisource"),
    (['--metrics=rouge,bleu'], "unknown metric 'bleu': choose from rouge, bertscore, mauve"),
    (['--model=gpt5'], "unknown model 'gpt5': choose from textldm, gpt, gpt2"),
    (['--model=reference', '--shuffle_test=True'],
     "shuffle_test needs a model that reads its prompt"),
    (['--model=unigram', '--metrics=genppl'], "the genppl metric needs a judge: --judge="),
    (['--model=unigram', '--benchmarks=lm1b', '--hf_local_dir=/nonexistent', '--metrics=rouge'],
     "no lm1b.parquet or lm1b.jsonl in /nonexistent"),
])
def test_bad_input_is_one_clear_line(tiny_data, tmp_path, args, message):
    one_line_error(run_main('eval.py', f'--data_dir={tiny_data}', f'--out_file={tmp_path}/out.json',
                            *args), message)
    assert not list(tmp_path.iterdir())  # nothing written

def test_bad_input_is_one_line_in_a_process_of_its_own(tiny_data):
    """As a user sees it: the real process's whole stderr, after the metric and the model loaded."""
    one_line_error(run_script('eval.py', f'--data_dir={tiny_data}', '--model=unigram',
                              '--benchmarks=lm1b', '--hf_local_dir=/nonexistent',
                              '--metrics=rouge'), 'no lm1b.parquet or lm1b.jsonl in /nonexistent')

def test_the_table_reads_only_eval_runs_from_a_shared_folder(tmp_path):
    """eval.py --out_file may write into a folder of other records (bench/results): their JSON is
    not a row, and no other record's shape breaks the table."""
    from table import save_run
    (tmp_path / 'curve.json').write_text(json.dumps({'results': [{'a': 1}], 'command': 'x'}))
    (tmp_path / 'list.json').write_text('[1, 2]')
    run = dict(label='gpt (out/g)', window=128, results={'wikipedia': {'genppl': 12.5}})
    table = open(save_run(str(tmp_path / 'run.json'), run)).read()
    assert '| gpt (out/g) | 128 | 12.5 |' in table and table.count('\n| ') == 1  # one row
