# The autoregressive baseline on the embedded data, the width and depth of config/dit_tiny.py
# (d=256, 6 layers, 4 heads, 128 tokens) and the DiT's data and optimizer settings.
# python ar_train.py config/gpt_tiny.py
out_dir = 'out/gpt_tiny'
data_dir = 'data/embedded'
batch_size = 32
block_size = 128
n_embd = 256
n_head = 4
n_layer = 6
max_iters = 500
dtype = 'bfloat16'
