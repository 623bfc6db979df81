# The paper's DiT-768M: 32 layers, d=1152, 16 heads (~768M parameters with C=64..128 latents),
# on the 350M VAE's latents of OpenWebText2, 1024 tokens, 1M steps (2M for the paper's main table).
# torchrun --nproc_per_node=8 dit_train.py config/dit_768m.py
out_dir = 'out/dit_768m'
vae_ckpt = 'out/vae_350m/ckpt.pt'
data_dir = 'data/openwebtext2'
batch_size = 32  # per GPU: x 8 GPUs = 256 windows of up to 1024 tokens
block_size = 1024
min_len = 32
n_layer = 32
n_embd = 1152
n_head = 16
max_iters = 1000000
eval_interval = 5000
eval_iters = 50
log_interval = 100
learning_rate = 1e-4
min_lr = 1e-5
warmup_iters = 5000
ema_decay = 0.9999
device = 'cuda'
dtype = 'bfloat16'
compile = True
