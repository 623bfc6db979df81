#!/usr/bin/env bash
# The embedded default end to end on a CPU: install, prepare data, train the VAE, train the DiT, sample.
# Every step is skipped if its output is already there, so a second run only samples again.
set -euo pipefail
cd "$(dirname "$0")"
bash install.sh
python prepare_data.py
[ -f out/vae_tiny/ckpt.pt ] || python vae_train.py config/vae_tiny.py
[ -f out/dit_tiny/ckpt.pt ] || python dit_train.py config/dit_tiny.py
mkdir -p bench/results
{
  python sample.py --prompt="The Amazon River is the largest river in South America. It flows through" --num_samples=2
  python sample.py --prompt="KING HENRY. Now, lords, the French are landed, and our men" --num_samples=2
  python sample.py --prompt="The first computers were built during the Second World War, when" --num_samples=2
  python sample.py --num_samples=1
} 2>&1 | grep -v '^Overriding' | tee bench/results/demo_samples.txt
