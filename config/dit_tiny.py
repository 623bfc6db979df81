# The embedded default on a 2-core CPU: a 6-layer d=256 block-causal DiT (blocks of 1 latent: each
# token's latent denoised from the clean text before it) with the token head, a next-token loss on
# its clean stream and the learned information-uniform time schedule: the configuration with the
# smallest compute gap on the curve (bench/results/steps/: blocks of 2 at 4000 steps, 3 sampler
# steps a block: 324 / 152; blocks of 1: 27 / 27, with 2 steps 36 / 29), which samples at 0.59x the
# GPT's speed at batch 1 with 2 steps a block (blocks of 2: 0.97-1.02x; bench/results/blocks_b1*/).
# 550 steps (about 11 minutes), so that the demo stays within 15 (600 steps: 15.1), of the curve's
# 4000-step schedule: 1,201 / 411 (2 steps a block), where the GPT at 250 steps is at 1,602 / 894
# (the DiT at 500: 1,273 / 468, at 600: 815 / 297). At 500 steps the learning rate still high, with
# the EMA of the weights, gave better text than a schedule decayed by step 500 (blocks of 2: 3,153 /
# 948 against 4,973 / 1,365); config/dit_tiny_long.py is the same run on to 4000 steps. Sampled at
# CFG 2.
# python dit_train.py config/dit_tiny.py
out_dir = 'out/dit_tiny'
vae_ckpt = 'out/vae_tiny/ckpt.pt'
data_dir = 'data/embedded'
head = 'tokens'
block_len = 1
ar_weight = 1.0
t_schedule = 'learned'
batch_size = 32
block_size = 128
n_embd = 256
n_head = 4
n_layer = 6
max_iters = 550
lr_decay_iters = 4000
dtype = 'bfloat16'
