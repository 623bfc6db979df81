"""
eval.py's record: one JSON per run (every figure, a few samples, the config and the command) and,
beside them, table.md: one row per JSON in that folder, columns benchmark x metric (percent), like
the paper's Table 1.
"""
import glob
import json
import os

COLUMNS = {'rouge1': 'ROUGE-1', 'rouge2': 'ROUGE-2', 'rougeL': 'ROUGE-L',
           'rougeL_specific': 'ROUGE-L prompt-specific', 'bertscore': 'BERTScore', 'mauve': 'MAUVE',
           'genppl': 'gen. PPL', 'ctx_unchanged': 'ctx-shuffle unchanged'}

def save_run(out_file, run):
    """Write the run's JSON to out_file, then the table of its folder -> the table's path."""
    folder = os.path.dirname(out_file) or '.'
    os.makedirs(folder, exist_ok=True)
    with open(out_file, 'w') as f:
        json.dump(run, f, indent=1)
    write_table(folder)
    return os.path.join(folder, 'table.md')

def write_table(folder):
    """table.md: one row per eval JSON in folder, columns benchmark x metric (percent)."""
    runs = []
    for path in sorted(glob.glob(os.path.join(folder, '*.json'))):
        with open(path) as f:
            run = json.load(f)
        if isinstance(run, dict) and {'label', 'window'} <= run.keys() \
                and isinstance(run.get('results'), dict):  # an eval run, not another record
            runs.append(run)
    benches = list(dict.fromkeys(b for r in runs for b in r['results']))
    cols = [(b, k) for b in benches for k in COLUMNS
            if any(k in r['results'].get(b, {}) for r in runs)]
    lines = ['| model | window | ' + ' | '.join(f'{b} {COLUMNS[k]}' for b, k in cols) + ' |',
             '|---' * (len(cols) + 2) + '|']
    for r in runs:
        cells = ['' if v is None else f'{v:.1f}' if v < 1e4 else f'{v:.3g}'
                 for v in (r['results'].get(b, {}).get(k) for b, k in cols)]
        lines.append(f"| {r['label']} | {r['window']} | " + ' | '.join(cells) + ' |')
    with open(os.path.join(folder, 'table.md'), 'w') as f:
        f.write('\n'.join(lines)
                + '\n\nN per benchmark and the exact commands: the JSON files beside this table.\n')
