# The embedded default's DiT along the compute-gap curve: the demo's run (its 4000-step schedule) on
# to 4000 steps, the checkpoints of steps 500 to 4000 kept for bench/curve.py.
# python dit_train.py config/dit_tiny.py config/dit_tiny_long.py
out_dir = 'out/curve/dit_b1_c64'
max_iters = 4000
keep_steps = '500,1000,2000,4000'
eval_interval = 500
