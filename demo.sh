#!/usr/bin/env bash
# The embedded default end to end on a CPU: install, prepare data, train the VAE, train the DiT, sample.
# Prepare is skipped when its data is already there; training always starts afresh.
set -euo pipefail
cd "$(dirname "$0")"
bash install.sh
python prepare_data.py
python vae_train.py config/vae_tiny.py
python dit_train.py config/dit_tiny.py
mkdir -p bench/results
{
  python sample.py --prompt="The Amazon River is the largest river in South America. It flows through" --num_samples=2
  python sample.py --prompt="KING HENRY. Now, lords, the French are landed, and our men" --num_samples=2
  python sample.py --prompt="The first computers were built during the Second World War, when" --num_samples=2
  python sample.py --num_samples=1
} 2>&1 | grep -v '^Overriding' | tee bench/results/demo_samples.txt
