# The embedded default's DiT trained twice as long (its schedule set for 1000 steps): what more
# compute buys on a 2-core CPU (bench/results/dit_learns.md, the last table).
# python dit_train.py config/dit_tiny.py config/dit_tiny_long.py
out_dir = 'out/dit_tiny_long'
max_iters = 1000
