"""
Train the embedded default and record its figures: bench/results/vae_tiny.json (final val
reconstruction accuracy, minutes, tokens/s, mean sigma, REPA cosine) or bench/results/dit_tiny.json
(final flow losses, minutes, tokens/s), each with the exact command that produced it and the
machine.

    python bench/train_tiny.py vae     # python vae_train.py config/vae_tiny.py
    python bench/train_tiny.py dit     # python dit_train.py config/dit_tiny.py (needs out/vae_tiny)
"""
import json
import os
import platform
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
stage = sys.argv[1] if len(sys.argv) > 1 else 'vae'
if stage not in ('vae', 'dit', 'gpt'):
    raise SystemExit("error: usage: python bench/train_tiny.py vae|dit|gpt [extra --key=value ...]")
cmd = [sys.executable, 'ar_train.py' if stage == 'gpt' else f'{stage}_train.py',
       f'config/{stage}_tiny.py', *sys.argv[2:]]
subprocess.run(cmd, cwd=ROOT, check=True)
out_dir = f'out/{stage}_tiny'
for arg in sys.argv[2:]:
    if arg.startswith('--out_dir='):
        out_dir = arg.split('=', 1)[1]
with open(os.path.join(ROOT, out_dir, 'summary.json')) as f:
    s = json.load(f)
ev = s['final_eval']
if stage == 'vae':
    result = dict(val_recon_acc_mu=ev['acc_mu'], val_recon_acc_z=ev['acc_z'], val_ce=ev['ce'],
                  kl_nats_per_token=ev['kl'], mean_sigma=ev['sigma'], repa_cos=ev.get('repa_cos'),
                  latent_std=ev['mu_std'])
elif stage == 'gpt':
    result = dict(val_loss=ev['val_loss'])
else:
    result = dict(val_flow_loss=ev['model'], val_flow_loss_ema=ev.get('ema'),
                  val_flow_loss_by_t=ev.get('ema_by_t', ev['model_by_t']),
                  t_bins=[0.0, 0.2, 0.4, 0.6, 0.8, 1.0])
result.update(minutes=s['minutes'], iters=s['iters'], train_tokens_per_s=s['tokens_per_s'],
              median_step_ms=s['median_step_ms'],
              command=f"python bench/train_tiny.py {' '.join(sys.argv[1:])}  "
                      f"(runs: {s['command']})",
              machine=f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores, "
                      f"torch {s['torch']}")
os.makedirs(os.path.join(ROOT, 'bench', 'results'), exist_ok=True)
with open(os.path.join(ROOT, 'bench', 'results', f'{stage}_tiny.json'), 'w') as f:
    json.dump(result, f, indent=1)
print(json.dumps(result, indent=1))
