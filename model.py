"""
The models of TextLDM, all built from one pre-norm Transformer `Block`:
  TextVAE  - bidirectional encoder: tokens -> one Gaussian latent (C channels) per token,
             bidirectional decoder: latents -> logits, all positions at once (non-autoregressive)
  TextDiT  - a DiT (adaLN-Zero) that predicts the flow-matching velocity of noisy target latents
             given clean context latents
  GPT      - the causal autoregressive baseline
Positions are rotary (RoPE): attention only sees relative offsets, so a segment encodes the same
wherever it sits in a window, and any length up to the longest trained works.
"""
import math
from dataclasses import dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F

# -----------------------------------------------------------------------------
# the shared Transformer block

def rope_cache(pos, head_dim, base=10000.0):
    # the angles of the positions pos (T,): a KV cache's new tokens, or the block-causal DiT's two
    # streams, which share positions
    arange = torch.arange(0, head_dim, 2, device=pos.device, dtype=torch.float32)
    inv_freq = 1.0 / (base ** (arange / head_dim))
    freqs = torch.outer(pos.float(), inv_freq)  # (T, hd/2)
    return freqs.cos(), freqs.sin()

def apply_rope(x, cos, sin):
    # x: (B, nh, T, hd); rotate the two halves of each head (the GPT-NeoX layout)
    x1, x2 = x.chunk(2, dim=-1)
    cos, sin = cos.to(x.dtype), sin.to(x.dtype)
    return torch.cat([x1 * cos - x2 * sin, x2 * cos + x1 * sin], dim=-1)

def modulate(x, shift, scale):
    return x * (1 + scale) + shift

class Attention(nn.Module):

    def __init__(self, n_embd, n_head, causal, bias):
        super().__init__()
        assert n_embd % n_head == 0
        self.n_head, self.causal = n_head, causal
        self.qkv = nn.Linear(n_embd, 3 * n_embd, bias=bias)
        self.proj = nn.Linear(n_embd, n_embd, bias=bias)

    def forward(self, x, rope, mask=None, cache=None):
        B, T, D = x.size()
        qkv = self.qkv(x).view(B, T, 3, self.n_head, D // self.n_head)
        q, k, v = qkv.permute(2, 0, 3, 1, 4)  # 3 x (B, nh, T, hd)
        q, k = apply_rope(q, *rope), apply_rope(k, *rope)
        if cache is not None:
            k, v = cache.update(k, v)
        # mask: (B, T) True for the real keys (padding hidden from every query), or (B, T, keys)
        # which query sees which key (the block-causal DiT and its cache build it)
        attn_mask = None
        if mask is not None:
            attn_mask = mask[:, None, None, :] if mask.dim() == 2 else mask[:, None]
        # causal: each query sees the keys up to its own position (the last T of the keys)
        is_causal = self.causal and T > 1
        if is_causal and (attn_mask is not None or k.size(2) > T):  # SDPA's is_causal takes neither
            causal = causal_mask(T, k.size(2), x.device)
            attn_mask, is_causal = causal if attn_mask is None else causal & attn_mask, False
        y = F.scaled_dot_product_attention(q, k, v, attn_mask=attn_mask, is_causal=is_causal)
        return self.proj(y.transpose(1, 2).reshape(B, T, D))

def causal_mask(T, n_keys, device):
    """(T, n_keys): query i, the i-th new one after n_keys - T cached keys, sees the keys up to
    its own."""
    return torch.ones(T, n_keys, dtype=torch.bool, device=device).tril(n_keys - T)

class MLP(nn.Module):

    def __init__(self, n_embd, bias):
        super().__init__()
        self.fc = nn.Linear(n_embd, 4 * n_embd, bias=bias)
        self.proj = nn.Linear(4 * n_embd, n_embd, bias=bias)

    def forward(self, x):
        return self.proj(F.gelu(self.fc(x), approximate='tanh'))

class Block(nn.Module):
    """Pre-norm Transformer block. With `adaln=True` the norms lose their own affine parameters and
    a conditioning vector c gives shift/scale/gate for both branches (DiT's adaLN-Zero): the gates
    start at zero, so a new block is the identity."""

    def __init__(self, n_embd, n_head, causal=False, adaln=False, bias=False, dropout=0.0):
        super().__init__()
        self.ln1 = nn.LayerNorm(n_embd, elementwise_affine=not adaln, bias=bias)
        self.attn = Attention(n_embd, n_head, causal, bias)
        self.ln2 = nn.LayerNorm(n_embd, elementwise_affine=not adaln, bias=bias)
        self.mlp = MLP(n_embd, bias)
        self.drop = nn.Dropout(dropout)
        self.adaln = nn.Sequential(nn.SiLU(), nn.Linear(n_embd, 6 * n_embd)) if adaln else None

    def modulation(self, c, group=None):
        """adaLN-Zero's shift, scale and gate of both branches from the conditioning c: (B, 1, D)
        one vector per sample, (B, T, D) one per position, or (B, G, D) one per group of positions,
        group (T,) naming each position's (computed once a group). A function of c alone: the
        sampler computes it once for each time of its grid and reuses it block after block."""
        mods = self.adaln(c) if group is None else self.adaln(c).index_select(1, group)
        return mods.chunk(6, dim=-1)

    def forward(self, x, rope, mask=None, mods=None, cache=None):
        if self.adaln is None:
            x = x + self.drop(self.attn(self.ln1(x), rope, mask, cache))
            return x + self.drop(self.mlp(self.ln2(x)))
        shift1, scale1, gate1, shift2, scale2, gate2 = mods  # self.modulation's
        h = self.attn(modulate(self.ln1(x), shift1, scale1), rope, mask, cache)
        x = x + gate1 * self.drop(h)
        return x + gate2 * self.drop(self.mlp(modulate(self.ln2(x), shift2, scale2)))

class Transformer(nn.Module):
    """A stack of Blocks with a final norm: the body of every model below."""

    def __init__(self, n_layer, n_embd, n_head, causal=False, adaln=False, bias=False, dropout=0.0):
        super().__init__()
        self.head_dim = n_embd // n_head
        blocks = [Block(n_embd, n_head, causal, adaln, bias, dropout) for _ in range(n_layer)]
        self.blocks = nn.ModuleList(blocks)
        self.ln_f = nn.LayerNorm(n_embd, elementwise_affine=not adaln, bias=bias)

    def forward(self, x, mask=None, mods=None, cache=None, pos=None):
        """mods: each block's adaLN modulation (Block.modulation's; the DiT's). cache: a list of one
        KVCache per block (sampling); x then holds the tokens after the cached ones. pos (T,): the
        positions of x, by default those after the cached ones."""
        if pos is None:
            start = len(cache[0]) if cache else 0
            pos = torch.arange(start, start + x.size(1), device=x.device)
        rope = rope_cache(pos, self.head_dim)
        for i, block in enumerate(self.blocks):
            x = block(x, rope, mask, mods[i] if mods else None, cache[i] if cache else None)
        return self.ln_f(x)

def init_weights(module, std=0.02):
    if isinstance(module, nn.Linear):
        nn.init.normal_(module.weight, mean=0.0, std=std)
        if module.bias is not None:
            nn.init.zeros_(module.bias)
    elif isinstance(module, nn.Embedding):
        nn.init.normal_(module.weight, mean=0.0, std=std)

def scale_residual_init(model, n_layer):
    # GPT-2: residual projections scaled by 1/sqrt(2 * n_layer) so the stream's variance stays put
    for name, p in model.named_parameters():
        if name.endswith('attn.proj.weight') or name.endswith('mlp.proj.weight'):
            nn.init.normal_(p, mean=0.0, std=0.02 / math.sqrt(2 * n_layer))

def masked_mean(x, mask):
    # mean of x (B, T, ...) over the positions where mask (B, T) is True
    mask = mask.to(x.dtype).view(*mask.shape, *([1] * (x.dim() - 2)))
    return (x * mask).sum() / (mask.sum() * (x[0, 0].numel()))

def lengths_to_mask(lens, T):
    return torch.arange(T, device=lens.device)[None, :] < lens[:, None]  # (B, T)

# -----------------------------------------------------------------------------
# TextVAE

@dataclass
class VAEConfig:
    vocab_size: int = 4096
    block_size: int = 128       # longest sequence trained on
    n_embd: int = 256
    n_head: int = 4
    n_enc_layer: int = 2
    n_dec_layer: int = 2
    latent_channels: int = 16   # C: one latent vector of C channels per token
    repa_dim: int = 0           # width of the REPA teacher (0: no REPA projection)
    causal_encoder: bool = False  # a token's latent reads only the tokens up to it (block DiT)
    bias: bool = False
    dropout: float = 0.0

class TextVAE(nn.Module):

    def __init__(self, config: VAEConfig):
        super().__init__()
        self.config = config
        self.wte = nn.Embedding(config.vocab_size, config.n_embd)
        self.encoder = Transformer(config.n_enc_layer, config.n_embd, config.n_head,
                                   config.causal_encoder, bias=config.bias, dropout=config.dropout)
        self.to_moments = nn.Linear(config.n_embd, 2 * config.latent_channels)  # -> mu, logvar
        self.from_latent = nn.Linear(config.latent_channels, config.n_embd)
        self.decoder = Transformer(config.n_dec_layer, config.n_embd, config.n_head,
                                   bias=config.bias, dropout=config.dropout)
        self.lm_head = nn.Linear(config.n_embd, config.vocab_size, bias=False)
        # REPA: a linear map into the teacher's width (the paper's choice); used in training only
        self.repa_proj = nn.Linear(config.n_embd, config.repa_dim) if config.repa_dim > 0 else None
        self.apply(init_weights)
        scale_residual_init(self, config.n_enc_layer + config.n_dec_layer)

    def encode(self, idx, mask=None, cache=None):
        """idx (B, T) -> mu, logvar (B, T, C) and the encoder's output h (B, T, D) for REPA.
        A causal encoder may read the tokens after those in its KV cache (block sampling), mask
        then (B, T, keys) as the DiT's."""
        h = self.encoder(self.wte(idx), mask, cache=cache)
        mu, logvar = self.to_moments(h).float().chunk(2, dim=-1)
        if mask is not None and mask.dim() == 2:  # zeros at padding (else NaN where none is real)
            pad = ~mask[..., None]
            mu, logvar = mu.masked_fill(pad, 0.0), logvar.masked_fill(pad, 0.0)
        return mu, logvar.clamp(-30.0, 20.0), h

    def decode(self, z, mask=None, last=0):
        """z (B, T, C) -> logits (B, T, vocab), or those of the last `last` positions only"""
        h = self.decoder(self.from_latent(z.to(self.from_latent.weight.dtype)), mask)
        return self.lm_head(h[:, -last:] if last else h)

    def forward(self, idx, mask=None, sample=True, noise_std=0.0):
        """-> logits (B, T, vocab), mu, logvar (B, T, C), REPA's prediction (B, T, width) or None"""
        mu, logvar, h = self.encode(idx, mask)
        z = mu + torch.exp(0.5 * logvar) * torch.randn_like(mu) if sample else mu
        if noise_std > 0:  # the decoder learns to read imprecise latents, as a DiT's samples are
            z = add_decoder_noise(z, mu, mask, noise_std)
        repa = self.repa_proj(h) if self.repa_proj is not None else None
        return self.decode(z, mask), mu, logvar, repa

def add_decoder_noise(z, mu, mask, noise_std):
    """z plus Gaussian noise of a level drawn per sequence in [0, noise_std] times each channel's
    spread of mu in the batch. Relative to the spread (with its gradient), so the encoder cannot
    beat the noise by growing its latents; a random level, so the decoder reads exact latents as
    well as imprecise ones. The decoder learns to fall back on the neighbouring latents and on
    what is frequent, as a denoiser does."""
    m = torch.ones_like(mu[..., :1]) if mask is None else mask[..., None].to(mu.dtype)
    mean = (mu * m).sum((0, 1)) / m.sum()
    spread = (((mu - mean) ** 2 * m).sum((0, 1)) / m.sum()).sqrt()  # (C,)
    level = noise_std * torch.rand(mu.size(0), 1, 1, device=mu.device)
    return z + level * spread * torch.randn_like(z)

def gaussian_kl(mu, logvar):
    """KL(N(mu, exp(logvar)) || N(0, I)), summed over channels: nats per token, (B, T)."""
    return 0.5 * (mu.pow(2) + logvar.exp() - 1.0 - logvar).sum(-1)

# -----------------------------------------------------------------------------
# TextDiT and its flow
#
# The flow runs from noise at t = 0 to data at t = 1: x_t = t * x1 + (1 - t) * x0 with x0 ~ N(0, I),
# and the DiT predicts its velocity dx_t/dt = x1 - x0 (rectified flow). Training and sampling share
# one time distribution: training draws t from it, the sampler steps through its quantiles.

def flow_time(q, schedule='logit_normal', mean=0.0, std=1.5, cdf=None):
    """The time distribution by its quantile function: q in [0, 1] -> t in [0, 1]. logit_normal
    (SD3, the paper's std 1.5): t = sigmoid(mean + std * z), z ~ N(0, 1), most steps at mid t;
    uniform: t = q; learned: the inverse of cdf (K + 1,), the CDF at K + 1 evenly spaced times
    (fit_time_cdf), linear between them."""
    if schedule == 'uniform':
        return q
    if schedule == 'learned':
        cdf = cdf.to(q.device, q.dtype)
        k = torch.searchsorted(cdf, q.contiguous()).clamp(1, len(cdf) - 1)
        lo, hi = cdf[k - 1], cdf[k]
        return (k - 1 + (q - lo) / (hi - lo).clamp(min=1e-12)) / (len(cdf) - 1)
    return torch.sigmoid(mean + std * torch.special.ndtri(q))

def fit_time_cdf(loss_by_t, floor=0.1):
    """The information-uniform time distribution (CDCD's time warping; LangFlow's schedule) from the
    loss in K bins of t: each bin's density in proportion to the loss the model resolves across it
    (the loss falls from noise to data: its running minimum, central differences); a floor share
    spread evenly so that no time goes untrained -> the CDF at the K + 1 bin edges. A bin not yet
    seen (nan) has the loss of the last one seen before it."""
    loss = loss_by_t.float()
    top = loss.nan_to_num(nan=-math.inf).max()
    falls = torch.cummin(loss.nan_to_num(nan=math.inf), 0).values.clamp(max=top).nan_to_num(0.0)
    edges = torch.cat([falls[:1], falls, falls[-1:]])
    resolved = (edges[:-2] - edges[2:]).clamp(min=0)
    even = torch.full_like(resolved, 1 / len(falls))
    share = resolved / resolved.sum() if resolved.sum() > 0 else even
    cdf = torch.cat([even.new_zeros(1), ((1 - floor) * share + floor * even).cumsum(0)])
    cdf[-1] = 1.0  # not 1 - 1e-7: every q <= 1 has its time
    return cdf

@dataclass
class DiTConfig:
    latent_channels: int = 16
    block_size: int = 128  # context + target latents
    n_embd: int = 256
    n_head: int = 4
    n_layer: int = 6
    vocab_size: int = 0  # 0: a velocity head (the paper); > 0: a token head (see TextDiT)
    block_len: int = 0   # 0: the paper's [context ; target]; > 0: block-causal (see block_layout)
    self_cond: bool = False  # the targets also read the last clean estimate (see TextDiT)
    bias: bool = False
    dropout: float = 0.0

def timestep_embedding(t, dim, max_period=10000.0):
    """Sinusoidal embedding of t in [0, 1], scaled by 1000 as DiT's steps: (B,) -> (B, dim)"""
    half = dim // 2
    k = torch.arange(half, device=t.device, dtype=torch.float32)
    freqs = torch.exp(-math.log(max_period) * k / half)
    args = 1000.0 * t.float()[:, None] * freqs[None]
    return torch.cat([torch.cos(args), torch.sin(args)], dim=-1)

class TextDiT(nn.Module):
    """The image DiT on a sequence of latents: [clean context ; noisy target] in, velocity out.
    Time enters through adaLN-Zero; a learned marker tells context positions from target positions.
    Two output heads, one velocity either way (the sampler does not know which):
      velocity (vocab_size=0, the paper): a linear map regresses v = x1 - x0 with MSE.
      tokens (vocab_size>0, CDCD's score interpolation): logits over the vocabulary at every
        position; the clean-target estimate is their softmax's expectation over per-token latents,
        x1 = p @ E, and v = (x1 - x_t) / (1 - t). Trained with cross-entropy on the target tokens: a
        strong, discrete signal where a latent MSE barely tells a likely next token from an
        unlikely one.
    Self-conditioning (self_cond, Analog Bits; LangFlow): a target also reads x1_prev, the clean
    estimate of the solver's previous step (0 at the first), so each step refines the last one's
    guess instead of starting again from x_t."""

    def __init__(self, config: DiTConfig):
        super().__init__()
        self.config = config
        d = config.n_embd
        self.in_proj = nn.Linear(config.latent_channels, d)
        self.segment = nn.Embedding(2, d)  # 0: context, 1: target
        # no bias: an absent estimate (zeros) adds nothing
        C = config.latent_channels
        self.self_cond = nn.Linear(C, d, bias=False) if config.self_cond else None
        self.t_embed = nn.Sequential(nn.Linear(256, d), nn.SiLU(), nn.Linear(d, d))
        self.body = Transformer(config.n_layer, d, config.n_head, adaln=True, bias=config.bias,
                                dropout=config.dropout)
        self.final_adaln = nn.Sequential(nn.SiLU(), nn.Linear(d, 2 * d))
        self.out_proj = nn.Linear(d, config.vocab_size or config.latent_channels)
        # E: the mean normalised latent of each token (set by dit_train.py, saved with the weights)
        E = torch.zeros(config.vocab_size, config.latent_channels) if config.vocab_size else None
        self.register_buffer('token_latents', E)
        self.apply(init_weights)
        scale_residual_init(self, config.n_layer)
        # adaLN-Zero: every gate and the output start at zero, so a new DiT predicts zero velocity
        for block in self.body.blocks:
            nn.init.zeros_(block.adaln[-1].weight)
            nn.init.zeros_(block.adaln[-1].bias)
        for layer in (self.final_adaln[-1], self.out_proj):
            nn.init.zeros_(layer.weight)
            nn.init.zeros_(layer.bias)
        if self.self_cond is not None:  # it starts as the plain DiT, and learns to read its guess
            nn.init.zeros_(self.self_cond.weight)

    def condition(self, t, group=None):
        """The time t (B, G) -> every block's adaLN modulation and the output's (B, G or T, 2D):
        computed once a group of positions, by group (T,) where given."""
        c = self.t_embed(timestep_embedding(t.flatten(), 256)).view(*t.shape, -1)  # (B, G, D)
        final = self.final_adaln(c)
        final = final if group is None else final.index_select(1, group)
        return [block.modulation(c, group) for block in self.body.blocks], final

    def forward(self, x, t, is_target, mask=None, return_logits=False, pos=None, group=None,
                cache=None, head_at=None, x1_prev=None, cond=None):
        """x (B, T, C) latents, t (B,) time in [0, 1] (1 = data), is_target (B, T) bool, mask
        (B, T) bool for real positions -> velocity (B, T, C), meaningful at the targets only.
        The block-causal layout (block_layout) passes t (B, G), one time per group of positions,
        group (T,) naming each position's, its positions pos (T,) and its attention mask (B, T, T);
        with a KV cache, x holds only the positions after the cached ones.
        return_logits (token head): instead, the logits of the target positions, (number of targets,
        vocab) in the order of x[is_target] (what training and guidance read; no softmax), or
        of the positions head_at (B, T) where given. x1_prev (B, T, C): the last clean estimate
        (self_cond; read at the targets, ignored by a DiT without it). cond: self.condition(t,
        group), where the caller has it (a function of t alone: the sampler reuses it)."""
        t = t[:, None] if t.dim() == 1 else t  # (B, G)
        h = self.in_proj(x.to(self.in_proj.weight.dtype))  # (B, T, D)
        h = h + self.segment(is_target.long())
        if self.self_cond is not None and x1_prev is not None:
            h = h + self.self_cond((x1_prev * is_target[..., None]).to(h.dtype))
        block_mods, final = cond or self.condition(t, group)
        h = self.body(h, mask, block_mods, cache, pos)
        shift, scale = final.expand(*h.shape[:2], -1).chunk(2, dim=-1)
        if not self.config.vocab_size:
            return self.out_proj(modulate(h, shift, scale))
        # the vocabulary-wide head only where it is read, at the target positions (it is costly)
        logits = self.out_proj(modulate(h, shift, scale)[is_target if head_at is None else head_at])
        if return_logits:
            return logits
        return self.velocity_from_logits(logits, x, t if group is None else t[:, group], is_target)

    def velocity_from_logits(self, logits, x, t, is_target):
        """Token head: x1 = softmax(logits) @ E at the target positions (the others' x1 is left at
        0), the expected clean latent, and v = (x1 - x_t) / (1 - t), t (B, 1) or (B, T). The softmax
        and its expectation run in the logits' dtype: in bf16, 5x faster on a CPU than in float32,
        and x1 moves by ~1e-3 of its scale."""
        x1 = x.new_zeros(x.shape, dtype=torch.float32)
        x1[is_target] = (logits.softmax(-1) @ self.token_latents.to(logits.dtype)).float()
        return (x1 - x.float()) / (1 - t.float()[..., None]).clamp(min=1e-3)

    def forward_with_cfg(self, x, t, is_target, mask, cfg_scale, **layout):
        """Classifier-free guidance in one forward (as DiT does): the batch is [conditional ; null
        context] -> the guided velocity null + cfg_scale * (conditional - null) of the conditional
        half. The velocity head guides the velocity; the token head guides its logits (as an AR LM
        would), so the clean estimate stays a mixture of token latents. layout: pos, group,
        cache, cond."""
        half = x.size(0) // 2
        if not self.config.vocab_size:
            v_ctx, v_null = self(x, t, is_target, mask, **layout).chunk(2)
            return torch.lerp(v_null, v_ctx, cfg_scale)  # null + cfg_scale * (ctx - null)
        # both halves have the same targets
        l_ctx, l_null = self(x, t, is_target, mask, return_logits=True, **layout).chunk(2)
        t = t[:half, None] if t.dim() == 1 else t[:half]
        t = t if layout.get('group') is None else t[:, layout['group']]
        logits = torch.lerp(l_null, l_ctx, cfg_scale)
        return self.velocity_from_logits(logits, x[:half], t, is_target[:half])

def block_layout(T, block_len, offset=0, device='cpu'):
    """The block-causal DiT's layout of a window of T latents cut into diffusion blocks of
    block_len (the first one block_len - offset long): the sequence is [T clean latents ; the same T
    noised], and every noisy block is denoised from the clean latents before it, all blocks in one
    forward. A clean latent sees the clean ones up to it (causal: at sampling they are the text
    written so far); a noisy block sees itself (both ways) and the clean latents before it.
    -> pos (2T,) (the two streams share positions), is_noisy (2T,), group (2T,) (0: clean,
    1 + b: noisy block b) and the attention mask (2T, 2T)."""
    i = torch.arange(T, device=device)
    blk = (i + offset) // block_len  # 0, 1, ...
    no = torch.zeros(T, T, dtype=torch.bool, device=device)
    mask = torch.cat([torch.cat([i[None, :] <= i[:, None], no], 1),  # clean rows
                      torch.cat([blk[None, :] < blk[:, None], blk[None, :] == blk[:, None]], 1)])
    is_noisy = torch.arange(2 * T, device=device) >= T
    return torch.cat([i, i]), is_noisy, torch.cat([torch.zeros_like(blk), 1 + blk]), mask

@torch.no_grad()
def token_latent_means(encode, batches, vocab_size):
    """E (vocab, C): each token's mean latent, 0 for a token never seen, and the tokens' counts
    (vocab,), over batches of (token ids (B, T), lengths (B,)) encoded by encode(idx, lens) ->
    latents (B, T, C). The token head's probabilities are averaged over E."""
    sums = counts = None
    for idx, lens in batches:
        mask = lengths_to_mask(lens, idx.size(1))
        z, ids = encode(idx, lens)[mask].float(), idx[mask]
        if sums is None:
            sums, counts = z.new_zeros(vocab_size, z.size(-1)), z.new_zeros(vocab_size)
        sums.index_add_(0, ids, z)
        counts.index_add_(0, ids, torch.ones_like(z[:, 0]))
    return sums / counts.clamp(min=1)[:, None], counts

def pack_segments(ctx, ctx_lens, tgt, tgt_lens):
    """Lay out each row as [its context ; its target ; padding].
    ctx (B, Tc, C) with ctx_lens (B,), tgt (B, Tt, C) with tgt_lens (B,)
    -> x (B, T, C), is_target, mask (B, T)."""
    B, T = tgt.size(0), int((ctx_lens + tgt_lens).max())
    if ctx.size(1) == 0:  # no row has a context
        ctx = tgt.new_zeros(B, 1, tgt.size(2))
    pos = torch.arange(T, device=tgt.device)[None, :].expand(B, T)  # (B, T)
    mask = pos < (ctx_lens + tgt_lens)[:, None]
    is_target = mask & (pos >= ctx_lens[:, None])
    from_ctx = take_segment(ctx, torch.zeros_like(ctx_lens), T)
    from_tgt = take_segment(tgt, -ctx_lens, T)
    is_ctx = (pos < ctx_lens[:, None])[..., None]
    x = torch.where(is_target[..., None], from_tgt, torch.where(is_ctx, from_ctx, 0.0))
    return x, is_target, mask

@torch.no_grad()
def encode_segments(vae, idx, lens, ctx_lens):
    """Split each window idx[b, :lens[b]] at ctx_lens[b] and encode the two parts SEPARATELY, so
    that no target token can reach a context latent -> context mu (B, Tc, C), target mu (B, Tt, C),
    target lengths."""
    tgt_lens = lens - ctx_lens
    tgt_idx = take_segment(idx, ctx_lens, int(tgt_lens.max()))
    ctx_idx = idx[:, :max(1, int(ctx_lens.max()))]
    zc = vae.encode(ctx_idx, lengths_to_mask(ctx_lens, ctx_idx.size(1)))[0]
    zt = vae.encode(tgt_idx, lengths_to_mask(tgt_lens, tgt_idx.size(1)))[0]
    return zc, zt, tgt_lens

def take_segment(x, start, length):
    """Row b of the result is x[b, start[b] : start[b] + length] (indices clamped into range; the
    masks what lies outside a row's segment). x (B, T, ...) -> (B, length, ...)"""
    idx = (start[:, None] + torch.arange(length, device=x.device)[None, :]).clamp(0, x.size(1) - 1)
    if x.dim() == 2:
        return x.gather(1, idx)
    return x.gather(1, idx[..., None].expand(-1, -1, x.size(2)))

# -----------------------------------------------------------------------------
# GPT: the autoregressive baseline, trained on the same windows as the DiT

@dataclass
class GPTConfig:
    vocab_size: int = 4096
    block_size: int = 128  # longest sequence: prompt + new tokens when sampling
    n_embd: int = 256
    n_head: int = 4
    n_layer: int = 6
    bias: bool = False
    dropout: float = 0.0

class KVCache:
    """One attention layer's keys and values of the tokens seen so far, for sampling a token (the
    GPT) or a block (the block-causal DiT) at a time. They live in buffers with room for more,
    doubled when full: appending writes in place instead of copying all the keys every step."""

    def __init__(self, k=None, v=None, length=0, keep=True):
        self.k, self.v, self.length, self.keep = k, v, length, keep  # buffers (B, nh, room, hd)

    def __len__(self):
        return self.length

    def update(self, k, v):
        """Append the new keys/values (B, nh, T, hd) (unless a frozen view: they are written after
        the kept ones, to be overwritten); returns all of them."""
        end = self.length + k.size(2)
        if self.k is None or end > self.k.size(2):  # buffers twice as long, the kept keys copied
            size = (*k.shape[:2], 2 * end, k.size(3))
            k_room, v_room = k.new_empty(size), v.new_empty(size)
            if self.k is not None:
                k_room[:, :, :self.length] = self.k[:, :, :self.length]
                v_room[:, :, :self.length] = self.v[:, :, :self.length]
            self.k, self.v = k_room, v_room
        self.k[:, :, self.length:end], self.v[:, :, self.length:end] = k, v
        if self.keep:
            self.length = end
        return self.k[:, :, :end], self.v[:, :, :end]

    def trim(self, n):
        """Keep the first n positions' keys and values."""
        self.length = min(self.length, n)

    def frozen(self, rows=None):
        """A view of the first `rows` rows that reads these keys but keeps nothing new: a DiT's
        noisy block, denoised step by step."""
        if self.k is None:
            return KVCache(keep=False)
        return KVCache(self.k[:rows], self.v[:rows], self.length, keep=False)

class GPT(nn.Module):
    """GPT-2 with RoPE: the token embedding and the head are one matrix (tied, as in GPT-2)."""

    def __init__(self, config: GPTConfig):
        super().__init__()
        self.config = config
        self.wte = nn.Embedding(config.vocab_size, config.n_embd)
        self.body = Transformer(config.n_layer, config.n_embd, config.n_head, causal=True,
                                bias=config.bias, dropout=config.dropout)
        self.lm_head = nn.Linear(config.n_embd, config.vocab_size, bias=False)
        self.lm_head.weight = self.wte.weight
        self.apply(init_weights)
        scale_residual_init(self, config.n_layer)

    def forward(self, idx, targets=None):
        """idx (B, T) -> logits (B, T, vocab), and with targets (B, T) the mean next-token loss
        over the positions whose target is not -1 (padding), else None."""
        logits = self.lm_head(self.body(self.wte(idx)))
        if targets is None:
            return logits, None
        loss = F.cross_entropy(logits.float().flatten(0, 1), targets.flatten(), ignore_index=-1)
        return logits, loss

    @torch.no_grad()
    def generate(self, idx, max_new_tokens, temperature=1.0, top_k=None, top_p=None, greedy=False,
                 generator=None):
        """Continue the prompts idx (B, T), all of one length T >= 1, by max_new_tokens
        -> (B, T + max_new_tokens). Keys and values are cached: the prompt is read once, then each
        step feeds only the newest token."""
        if idx.size(1) + max_new_tokens > self.config.block_size:
            raise ValueError(f"prompt {idx.size(1)} + {max_new_tokens} new tokens exceed "
                             f"block_size {self.config.block_size}")
        cache = [KVCache() for _ in self.body.blocks]
        x = idx
        for _ in range(max_new_tokens):
            # the head on the last position only
            logits = self.lm_head(self.body(self.wte(x), cache=cache)[:, -1])
            x = next_token(logits.float(), temperature, top_k, top_p, greedy, generator)  # (B, 1)
            idx = torch.cat([idx, x], dim=1)
        return idx

def next_token(logits, temperature=1.0, top_k=None, top_p=None, greedy=False, generator=None):
    """Draw one token per row from logits (B, vocab): argmax if greedy, else softmax(logits /
    temperature) restricted to the top_k most likely tokens and to the nucleus (the fewest whose
    mass reaches top_p)."""
    if greedy:
        return logits.argmax(-1, keepdim=True)
    logits = logits / temperature
    if top_k is not None:
        kth = torch.topk(logits, min(top_k, logits.size(-1))).values[:, [-1]]
        logits = logits.masked_fill(logits < kth, float('-inf'))
    if top_p is not None:
        probs, order = logits.softmax(-1).sort(-1, descending=True)
        # the mass before this token already reaches top_p (never the first)
        drop = probs.cumsum(-1) - probs >= top_p
        logits = logits.masked_fill(drop.scatter(-1, order, drop), float('-inf'))
    return torch.multinomial(logits.softmax(-1), 1, generator=generator)

# -----------------------------------------------------------------------------
# accounting

def num_params(model, non_embedding=True):
    """Parameters, without the token embedding and vocabulary head when non_embedding (as the paper
    counts: 223M of each VAE are embedding + head)."""
    n = sum(p.numel() for p in model.parameters())
    if non_embedding:  # a set: the GPT's tied embedding and head are one matrix, counted once
        names = [name for name in ('wte', 'lm_head') if hasattr(model, name)]
        tables = {getattr(model, name).weight for name in names}
        n -= sum(w.numel() for w in tables)
    return n

def flops_per_token(model, T, n_layer, n_embd):
    """Training FLOPs per token: 6 per weight (forward + backward) plus attention's scores (PaLM,
    appendix B)."""
    return 6 * num_params(model, non_embedding=False) + 12 * n_layer * n_embd * T

PEAK_TFLOPS = {'H200': 989.0, 'H100': 989.0, 'A100': 312.0, 'L40S': 362.0, 'A10G': 125.0,
               'L4': 121.0}

def peak_flops(device_type, override_tflops=0.0):
    """The device's dense bf16 peak in FLOP/s, or None where unknown (CPU: pass it in by config)."""
    if override_tflops > 0:
        return override_tflops * 1e12
    if device_type == 'cuda':
        name = torch.cuda.get_device_name()
        for key, tflops in PEAK_TFLOPS.items():
            if key in name:
                return tflops * 1e12
    return None
