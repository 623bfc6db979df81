"""
Checkpoint files, written and read the same way by every script: atomic saves, weights-only loads
that refuse a checkpoint of the wrong kind, and the frozen VAE a DiT is trained and sampled on.
"""
import glob
import hashlib
import os

import torch

from model import TextVAE, VAEConfig

def save_checkpoint(obj, path):
    """Write to a temp file in the same folder, fsync it, then rename: a crash mid-save keeps the
    last good file, and a power cut after the rename cannot leave an empty one (the rename may reach
    the disk before the data). Only one process saves to a path (rank 0), so temp files of earlier
    saves are leftovers of killed ones."""
    folder = os.path.dirname(path) or '.'
    os.makedirs(folder, exist_ok=True)
    for old in glob.glob(glob.escape(path) + '.tmp.*'):
        os.remove(old)
    tmp = f'{path}.tmp.{os.getpid()}'
    with open(tmp, 'wb') as f:
        torch.save(obj, f)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
    fd = os.open(folder, os.O_RDONLY)  # the folder too, so that the rename itself is on disk
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
def load_checkpoint(path, kind, map_location='cpu'):
    """Load a checkpoint written by save_checkpoint, refusing one of another kind ('vae', 'dit',
    'gpt')."""
    if not os.path.isfile(path):
        raise SystemExit(f"error: no checkpoint at {path}: train one first, or point to it with "
                         "the right out_dir/--ckpt")
    try:
        ckpt = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as e:
        raise SystemExit(f"error: cannot read checkpoint {path} ({type(e).__name__}): the file is "
                         "damaged or not a textldm checkpoint")
    if not isinstance(ckpt, dict) or ckpt.get('kind') != kind:
        found = ckpt.get('kind') if isinstance(ckpt, dict) else None
        raise SystemExit(f"error: {path} is a {found or 'foreign'} checkpoint, but a {kind} "
                         "checkpoint is needed here")
    return ckpt
def unwrap_state_dict(sd):
    # torch.compile prefixes parameter names with '_orig_mod.'
    return {k.removeprefix('_orig_mod.'): v for k, v in sd.items()}
def fingerprint(state_dict):
    """A short hash of a model's weights: a DiT records the VAE it was trained on."""
    h = hashlib.sha256()
    for k in sorted(state_dict):
        h.update(k.encode())
        h.update(state_dict[k].detach().cpu().contiguous().view(torch.uint8).numpy().tobytes())
    return h.hexdigest()[:16]
def load_vae(path, device):
    """The frozen, trained TextVAE of a vae checkpoint, and the checkpoint's record (its latent
    stats, config and tokenizer) without the weights and optimizer state, which a caller holding the
    VAE need not keep in memory."""
    ckpt = load_checkpoint(path, 'vae')
    if 'latent_mean' not in ckpt:
        raise SystemExit(f"error: {path} has no latent statistics (its training did not finish): "
                         "finish it with --init_from=resume")
    vae = TextVAE(VAEConfig(**ckpt['model_args']))
    vae.load_state_dict(unwrap_state_dict(ckpt['model']))
    vae.repa_proj = None  # a training-only head
    vae.to(device).eval().requires_grad_(False)
    return vae, {k: v for k, v in ckpt.items() if k not in ('model', 'optimizer')}
