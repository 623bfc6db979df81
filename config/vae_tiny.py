# The embedded default on a 2-core CPU: BPE-4096 tokens, d=256, 2+2 layers, C=64, REPA to MiniLM,
# and decoder noise, so that the decoder reads a DiT's imprecise samples as words.
# python vae_train.py config/vae_tiny.py
out_dir = 'out/vae_tiny'
data_dir = 'data/embedded'
batch_size = 32
block_size = 128
n_embd = 256
n_head = 4
n_enc_layer = 2
n_dec_layer = 2
latent_channels = 64
causal_encoder = True  # the default DiT is block-causal: no latent may read a later token
repa_teacher = 'minilm'
repa_layer = -3
dec_noise = 1.0  # the decoder learns to read imprecise latents: DiT samples decode to real words
max_iters = 350
dtype = 'bfloat16'
