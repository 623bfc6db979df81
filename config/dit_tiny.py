# The embedded default on a 2-core CPU: a 6-layer d=256 DiT on the tiny VAE's latents, with the
# token head (score interpolation), the head whose text improves with training
# (bench/results/curve.md); sampled at CFG 2.
# python dit_train.py config/dit_tiny.py
out_dir = 'out/dit_tiny'
vae_ckpt = 'out/vae_tiny/ckpt.pt'
data_dir = 'data/embedded'
head = 'tokens'
batch_size = 32
block_size = 128
n_embd = 256
n_head = 4
n_layer = 6
max_iters = 1000
dtype = 'bfloat16'
