# The TextLDM paper's evaluation, text continuation (a window's first 40-60% continued by as many
# tokens as the true rest, and scored against it): 1000 samples of up to 1024 tokens from each of
# its four benchmarks; MAUVE on gpt2-large features (MAUVE's own default) and BERTScore with
# roberta-large, layer 17 (bert-score's default for it). The models and datasets come from the
# Hugging Face hub or its local cache.
# python eval.py config/eval_paper.py --model=textldm --out_dir=out/dit_768m --device=cuda
benchmarks = 'lm1b,tinystories,wikipedia_hf,wikisource'
num_samples = 1000
block_size = 1024
mauve_featurizer = 'gpt2-large'
bertscore_model = 'roberta-large'
bertscore_layers = 17
batch_size = 64
