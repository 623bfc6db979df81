# The paper's VAE (690M): the 350M VAE (config/vae_350m.py) made deeper at the same width, as
# the paper keeps its embedding + head (~223M) in every size. Qwen3 tokenizer, C=128, REPA to
# Qwen3-1.7B, 1024 tokens, 200K steps.
# torchrun --nproc_per_node=8 vae_train.py config/vae_690m.py
# Parameters: 2 x 151,669 x 768 = 233M in the embedding and the head, 453M in the 32 + 32 blocks,
# 686.3M in all.
# Short of memory? Halve batch_size and set gradient_accumulation_steps = 2: the same global batch.
out_dir = 'out/vae_690m'
data_dir = 'data/openwebtext2'
batch_size = 8   # per GPU: x 8 GPUs = 64 sequences of up to 1024 tokens
block_size = 1024
min_len = 16
n_embd = 768
n_head = 12
n_enc_layer = 32
n_dec_layer = 32
latent_channels = 128
repa_teacher = 'Qwen/Qwen3-1.7B'
repa_layer = -3
repa_weight = 1.0
max_iters = 200000
eval_interval = 2000
eval_iters = 50
log_interval = 100
learning_rate = 3e-4
min_lr = 3e-5
warmup_iters = 2000
device = 'cuda'
dtype = 'bfloat16'
compile = True
stats_batches = 100
