# The paper's GPT-2-medium baseline trained from scratch under the DiT-328M settings
# (config/dit_328m.py): the same OpenWebText2 windows of up to 1024 tokens, Qwen3 tokenizer, batch,
# optimizer and schedule.
# torchrun --nproc_per_node=8 ar_train.py config/gpt_medium.py
# Parameters (meta-device build): 302.0M in the 24 blocks + 151,669 x 1024 = 155.3M in the
# embedding, tied with the head as in GPT-2: 457.3M in all (612.7M if the head were untied).
out_dir = 'out/gpt_medium'
data_dir = 'data/openwebtext2'
# per GPU, x 2 micro-steps x 8 GPUs = the DiT's 256 windows of up to 1024 tokens: 32 at once would
# not fit in 80 GB (bench/results/paper_sizes.json: its vocabulary's logits)
batch_size = 16
gradient_accumulation_steps = 2
block_size = 1024
min_len = 32
n_layer = 24
n_embd = 1024
n_head = 16
max_iters = 1000000
eval_interval = 5000
eval_iters = 50
log_interval = 100
learning_rate = 1e-4
min_lr = 1e-5
warmup_iters = 5000
device = 'cuda'
dtype = 'bfloat16'
compile = True
