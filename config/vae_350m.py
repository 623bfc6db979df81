# The paper's VAE (350M): Qwen3 tokenizer, C=128, REPA to Qwen3-1.7B's 3rd-to-last layer,
# 1024 tokens, 200K steps.
# Prepare the data first: python prepare_data.py --dataset=openwebtext2 --tokenizer=qwen3
# torchrun --nproc_per_node=8 vae_train.py config/vae_350m.py
# Parameters: 2 x 151,669 x 768 = 233M in the embedding and the head (the paper: ~223M), 113M in the
# 8 + 8 blocks, ~346M in all.
out_dir = 'out/vae_350m'
data_dir = 'data/openwebtext2'
batch_size = 8   # per GPU: x 8 GPUs = 64 sequences of up to 1024 tokens
block_size = 1024
min_len = 16
n_embd = 768
n_head = 12
n_enc_layer = 8
n_dec_layer = 8
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
