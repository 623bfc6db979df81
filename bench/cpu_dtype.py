"""
On a CPU, where does bf16 start to pay in sampling? Seconds to continue a prompt with sample.py's
default sampler, in float32 and under bf16 autocast, for trained DiTs of each layout and a range of
batch sizes (the median of `repeats`, both dtypes timed side by side). What sets
sample.CPU_BF16_MIN_LATENTS. -> bench/results/cpu_dtype.{json,md}

    python bench/cpu_dtype.py  # the default DiT (blocks of 4) and the paper's layout, ~2 min
"""
import json
import os
import shlex
import statistics
import sys
import time

import torch

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
import sample  # noqa: E402

dits = ('out/dit_tiny', 'out/curve/dit_paper')
batches = (1, 2, 4, 8, 16, 32)
length, repeats = 32, 3
out_dir = 'bench/results'
exec(open(os.path.join(ROOT, 'configurator.py')).read())

rows = []
sample.CPU_BF16_MIN_LATENTS = 0  # here ldm.bf16 alone decides
for folder in dits:
    ldm = sample.LDM(folder)
    for B in batches:
        prompts, sec = ['The river flows through'] * B, {}
        for bf16 in (False, True):
            ldm.bf16 = bf16
            sample.generate(ldm, prompts, 4, steps=2)  # warmup
            runs = []
            for _ in range(repeats):
                t0 = time.perf_counter()
                sample.generate(ldm, prompts, length)
                runs.append(time.perf_counter() - t0)
            sec['bf16' if bf16 else 'float32'] = statistics.median(runs)
        # the latents a forward writes per sample, as sample.generate counts them
        n = ldm.dit.config.block_len or len(ldm.enc.encode_ordinary(prompts[0])) + length
        rows.append(dict(dit=folder, block_len=ldm.dit.config.block_len, batch=B,
                         latents_per_forward=B * n, **sec,
                         bf16_speedup=sec['float32'] / sec['bf16']))
        print(rows[-1], flush=True)

os.makedirs(out_dir, exist_ok=True)
command = 'python ' + ' '.join(map(shlex.quote, sys.argv))
with open(os.path.join(out_dir, 'cpu_dtype.json'), 'w') as f:
    json.dump(dict(command=command, threads=torch.get_num_threads(), length=length,
                   repeats=repeats, rows=rows), f, indent=1)
lines = [f"Seconds to continue a prompt by {length} tokens with sample.py's default sampler, "
         f"median of {repeats}, {torch.get_num_threads()} threads (`{command}`)", '',
         '| DiT | batch | latents a forward writes | float32 s | bf16 s | bf16 speed-up |',
         '|---|---|---|---|---|---|']
lines += [f"| {r['dit']} | {r['batch']} | {r['latents_per_forward']} | {r['float32']:.3f} | "
          f"{r['bf16']:.3f} | {r['bf16_speedup']:.2f}x |" for r in rows]
with open(os.path.join(out_dir, 'cpu_dtype.md'), 'w') as f:
    f.write('\n'.join(lines) + '\n')
print('\n'.join(lines))
