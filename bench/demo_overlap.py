"""
Does the prompt decide the words in the demo? demo.sh samples each prompt with the same seed, so
sample k of every prompt starts from the same noise: for each pair of prompts, the share of words
their k-th continuations have in common, position by position (curve.py's same-noise share; a model
that writes from its prompt: ~0).

    python bench/demo_overlap.py  # --path=FILE: another demo's samples
"""
import itertools
import os
import re
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, 'bench'))
from curve import same_noise_share  # noqa: E402

path = 'bench/results/demo_samples.txt'  # demo.sh's samples
exec(open(os.path.join(ROOT, 'configurator.py')).read())
if not os.path.exists(path):
    raise SystemExit(f"error: no {path}: run bash demo.sh first")
with open(path) as f:
    text = f.read()
# each prompt's continuations in sample order (the unconditional passage has no ' >>> ')
by_prompt = {}
for prompt, continuation in re.findall(r"^(.+?) >>> (.*)$", text, re.M):
    by_prompt.setdefault(prompt, []).append(continuation)
if len(by_prompt) < 2:
    raise SystemExit(f"error: {path} has fewer than two prompts' continuations")
shares = [same_noise_share([a[k]], [b[k]])
          for a, b in itertools.combinations(by_prompt.values(), 2)
          for k in range(min(len(a), len(b)))]
print(f"{len(by_prompt)} prompts, {len(shares)} same-noise pairs: words in common by position "
      f"{100 * sum(shares) / len(shares):.0f}% on average, {100 * max(shares):.0f}% at most")
