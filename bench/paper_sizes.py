"""
The paper's sizes run for real on this CPU: vae_350m, dit_328m and gpt_medium, each through its real
trainer and config file (vae_train.py, dit_train.py, ar_train.py) at batch 1 and at batch 2, windows
of the paper's 1024 tokens, the Qwen3 tokenizer, REPA to a local stand-in teacher (a Qwen3 model
with Qwen3-1.7B's width 2048 and vocabulary, 4 small blocks, random weights: the hub is not needed).
The DiT trains on the VAE that the batch-1 VAE run wrote.

Each run is a process of its own: its own peak memory (ru_maxrss, from os.wait4 on that child) and
its step time (summary.json's median_step_ms) are recorded, and the memory is projected LINEARLY to
the config's per-GPU batch: per sample = m2 - m1, fixed = m1 - per sample. Each run takes 2
optimizer steps, not 1: from the second step on, forward and backward run with the AdamW state
allocated, so only then is the peak what every later step needs.

    python bench/paper_sizes.py               # 10-20 min, ~16 GiB peak (a batch-2 run), 2 CPU cores
    python bench/paper_sizes.py --quick=True  # tiny sizes, the same path (the test): *_quick.json

data_dir is prepared when it has no meta.json: the embedded Wikipedia leads joined into 64 documents
of 20,000 characters (so that every window is a full 1024 tokens), Qwen3 tokenizer, through
prepare_data.py's local-file path. Checkpoints (GBs each, of a 2-step model) are deleted once read.
Paths are relative to the repository root.
"""
import json, os, platform, re, subprocess, sys, time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
os.chdir(ROOT)  # the trainers read configurator.py from the working directory
sys.path.insert(0, ROOT)
os.environ.setdefault('HF_HUB_OFFLINE', '1')  # everything here is local; the trainers inherit it

data_dir = 'data/paper_sizes_qwen3'
out_dir = 'bench/results'
# runs, their logs and the stand-in teacher; '' = out/paper_sizes (out/paper_sizes/quick with quick)
work_dir = ''
dtype = 'bfloat16'
quick = False  # tiny models, a tiny teacher and 32-token windows, for the test
exec(open('configurator.py').read())
work_dir = work_dir or ('out/paper_sizes/quick' if quick else 'out/paper_sizes')

import torch
from transformers import PreTrainedTokenizerFast, Qwen3Config, Qwen3Model
from transformers.convert_slow_tokenizer import TikTokenConverter
from transformers.utils import logging as hf_logging
from data import load_meta, get_tokenizer
from training import bf16_is_fast

hf_logging.disable_progress_bar()  # save_pretrained's bar is noise in this log

def run(args, log, what):
    """Run a script of the project, its output to log; returns its own peak resident set in MiB."""
    with open(log, 'w') as f:
        p = subprocess.Popen([sys.executable, *args], stdout=f, stderr=subprocess.STDOUT)
        # this child's own peak (RUSAGE_CHILDREN would be the max of all so far)
        _, status, usage = os.wait4(p.pid, 0)
    p.returncode = os.waitstatus_to_exitcode(status)
    if p.returncode:
        last = open(log).read().strip().splitlines()[-1:] or ['no output']
        oom = ', killed: out of memory?' if p.returncode < 0 else ''
        raise SystemExit(f"error: {what} failed (exit {p.returncode}{oom}): "
                         f"{last[0].removeprefix('error: ')[:300]} (see {log})")
    return usage.ru_maxrss / (2 ** 20 if sys.platform == 'darwin' else 2 ** 10)

os.makedirs(work_dir, exist_ok=True)
os.makedirs(out_dir, exist_ok=True)
t_start = time.time()
if not os.path.exists(os.path.join(data_dir, 'meta.json')):
    import prepare_data as pd
    wikipedia = pd.wikipedia_docs(pd.fetch(pd.PACKAGES['wikipedia'], 'data/cache'))
    leads, docs = [d['text'] for d in wikipedia], ['']
    for text in leads:
        if len(docs[-1]) >= 20000:
            if len(docs) == 64:
                break
            docs.append('')
        docs[-1] += text + '\n\n'
    with open(data_dir + '.jsonl', 'w', encoding='utf-8') as f:
        f.writelines(json.dumps(dict(text=d), ensure_ascii=False) + '\n' for d in docs)
    print(f"preparing {data_dir} (Qwen3 tokenizer)", flush=True)
    run(['prepare_data.py', '--dataset=openwebtext2', f'--hf_data_files={data_dir}.jsonl',
         '--tokenizer=qwen3', '--owt_val_docs=4', '--owt_test_docs=1', '--num_proc=1',
         f'--out_dir={data_dir}'], f'{work_dir}/prepare_data.log', 'preparing the data')
meta = load_meta(data_dir)
get_tokenizer(meta, data_dir)  # a missing or changed tokenizer file ends here, in one line

# The teacher: Qwen3-1.7B's width and vocabulary (what its embedding and REPA's width cost), a few
# small blocks. Its tokenizer is the data's own ranks file as an HF fast tokenizer: with Qwen3 data
# it is Qwen3's, so the token ids go straight to the teacher (vae_train.py: qwen3 data and 'qwen3'
# in the teacher's name); with other data (the test's BPE) the ids differ from Qwen3's and the
# teacher takes the span-alignment path, with a tokenizer that splits as ours.
QWEN3_1_7B = dict(hidden_size=2048, intermediate_size=6144, num_hidden_layers=28,
                  num_attention_heads=16, num_key_value_heads=8, head_dim=128, vocab_size=151936,
                  tie_word_embeddings=True)
standin = dict(QWEN3_1_7B, intermediate_size=256, num_hidden_layers=4)
if quick:
    standin.update(hidden_size=32, intermediate_size=64, num_attention_heads=2,
                   num_key_value_heads=1, head_dim=16, vocab_size=meta['vocab_size'])
teacher_dir = f'{work_dir}/qwen3-standin'
spec = meta['tokenizer']
tok = TikTokenConverter(os.path.join(data_dir, spec['file']), pattern=spec['pat_str'],
                        extra_special_tokens=spec['special_tokens']).converted()
hf_tok = PreTrainedTokenizerFast(tokenizer_object=tok, eos_token='<|endoftext|>')
hf_tok.save_pretrained(teacher_dir)
torch.manual_seed(0)
# bf16, as Qwen3-1.7B is stored and loads
Qwen3Model(Qwen3Config(**standin)).to(torch.bfloat16).save_pretrained(teacher_dir)

def teacher_mib(cfg):
    """The teacher's weights in memory: embedding and the blocks before repa_layer=-3 (teacher.py
    drops the rest), bf16."""
    with torch.device('meta'):
        m = Qwen3Model(Qwen3Config(**cfg))
    kept = [*m.embed_tokens.parameters(), *m.layers[:cfg['num_hidden_layers'] - 2].parameters()]
    return 2 * sum(p.numel() for p in kept) / 2 ** 20

block = 32 if quick else 1024
TINY = dict(vae=['--n_embd=32', '--n_head=2', '--n_enc_layer=1', '--n_dec_layer=1',
                 '--latent_channels=4'], dit=['--n_embd=32', '--n_head=2', '--n_layer=2'],
            ar=['--n_embd=32', '--n_head=2', '--n_layer=2'])
STEPS = [('vae_350m', 'vae_train.py', [f'--repa_teacher={teacher_dir}', '--stats_batches=1']),
         ('dit_328m', 'dit_train.py', [f'--vae_ckpt={work_dir}/vae_350m_b1/ckpt.pt']),
         ('gpt_medium', 'ar_train.py', [])]
steps = {}
for name, script, extra in STEPS:
    paper = {}
    exec(open(f'config/{name}.py').read(), paper)
    r = dict(paper_batch=paper['batch_size'], block_size=block)
    for b in (1, 2):
        run_dir, log = f'{work_dir}/{name}_b{b}', f'{work_dir}/{name}_b{b}.log'
        print(f"--- {name} at batch {b}: {log}", flush=True)
        peak = run([script, f'config/{name}.py', f'--out_dir={run_dir}', f'--data_dir={data_dir}',
                    '--device=cpu', '--compile=False', f'--dtype={dtype}', f'--batch_size={b}',
                    f'--block_size={block}', f'--min_len={block}', '--max_iters=2',
                    '--eval_iters=1', '--log_interval=1', *extra,
                    *(TINY[script.split('_')[0]] if quick else [])], log, f'{name} at batch {b}')
        with open(f'{run_dir}/summary.json') as f:
            s = json.load(f)
        r[f'batch{b}'] = dict(peak_rss_mib=round(peak), median_step_ms=s['median_step_ms'],
                              tokens_per_s=s['tokens_per_s'], command=s['command'], log=log)
        if (name, b) != ('vae_350m', 1):  # the DiT's runs need that one
            os.remove(f'{run_dir}/ckpt.pt')
        print(f"peak {peak / 1024:.2f} GiB, {s['median_step_ms'] / 1000:.2f} s/step", flush=True)
    m1, m2 = r['batch1']['peak_rss_mib'], r['batch2']['peak_rss_mib']
    params_m = float(re.search(r'([\d.]+)M parameters', open(r['batch1']['log']).read()).group(1))
    r.update(params_m=params_m, weights_grads_adamw_mib=round(params_m * 1e6 * 16 / 2 ** 20),
             fixed_mib=2 * m1 - m2, per_sample_mib=m2 - m1)
    if name == 'vae_350m':
        r['real_teacher_extra_mib'] = round(teacher_mib(QWEN3_1_7B) - teacher_mib(standin))
    r['projected_mib'] = (r['fixed_mib'] + r['paper_batch'] * r['per_sample_mib']
                          + r.get('real_teacher_extra_mib', 0))
    r['fits_80gib'] = r['projected_mib'] <= 80 * 1024
    steps[name] = r
os.remove(f'{work_dir}/vae_350m_b1/ckpt.pt')

precision = ('float32 weights, gradients and AdamW state, activations under bfloat16 autocast'
             if dtype == 'bfloat16' and bf16_is_fast('cpu') else
             'float32 throughout (no native bfloat16 on this CPU, or dtype=float32)')
note = ("A LINEAR PROJECTION from CPU measurements, not a GPU measurement. m1, m2: the peak "
        f"resident memory (ru_maxrss) of the trainer process at batch 1 and 2, windows of {block} "
        f"tokens, 2 steps ({precision}). per_sample_mib = m2 - m1: activations; fixed_mib = m1 - "
        "per_sample_mib: weights, gradients and AdamW state (weights_grads_adamw_mib = 16 bytes "
        "per parameter), plus all a run holds whatever its batch: torch's CPU runtime, the data; "
        "the VAE's stand-in teacher; the DiT's EMA copy and its frozen VAE. projected_mib = "
        "fixed_mib + paper_batch x per_sample_mib, + real_teacher_extra_mib for the VAE "
        "(Qwen3-1.7B's 26 kept blocks in bf16 less the stand-in's). torch's CPU runtime stands in "
        "for the CUDA context; not modelled: the caching allocator's slack, compiled kernels "
        "(compile=True in the configs, off here), fused AdamW, GPU attention kernels.")
result = dict(command='python ' + ' '.join(sys.argv), torch=torch.__version__,
              torch_threads=torch.get_num_threads(),
              machine=f'{platform.processor() or platform.machine()}, {os.cpu_count()} CPUs',
              precision=precision,
              data=dict(dir=data_dir, tokenizer=spec['name'], vocab_size=meta['vocab_size']),
              teacher=dict(folder=teacher_dir, config=standin, weights='random, bfloat16',
                           stands_in_for='Qwen/Qwen3-1.7B (28 x 2048, REPA at its 3rd-to-last '
                                         'layer)'),
              memory_note=note, minutes=round((time.time() - t_start) / 60, 1), steps=steps)
path = os.path.join(out_dir, 'paper_sizes_quick.json' if quick else 'paper_sizes.json')
with open(path, 'w') as f:
    json.dump(result, f, indent=1)
print(note)
for name, r in steps.items():
    print(f"{name} ({r['params_m']}M): batch 1 {r['batch1']['peak_rss_mib'] / 1024:.1f} GiB "
          f"{r['batch1']['median_step_ms'] / 1000:.1f} s/step, batch 2 "
          f"{r['batch2']['peak_rss_mib'] / 1024:.1f} GiB "
          f"{r['batch2']['median_step_ms'] / 1000:.1f} s/step; projected at batch "
          f"{r['paper_batch']}: {r['projected_mib'] / 1024:.1f} GiB "
          f"({'fits' if r['fits_80gib'] else 'does NOT fit'} in 80 GiB)")
print(f"wrote {path} in {result['minutes']} min")
