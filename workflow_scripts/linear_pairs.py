"""Rule linear_pairs: X, X' (n x m) from two random crops of n images (sslkit.data.make_pairs)."""
from pathlib import Path

from sslkit.data import load_split, make_pairs, save_pairs
from sslkit.rule_script import script_run

with script_run(snakemake) as (tracker, config):
    p = snakemake.params
    split = load_split(Path(snakemake.input.manifest).parent, p.split)
    pairs = make_pairs(split.images, n=p.n, crop=p.crop, seed=p.seed)
    save_pairs(snakemake.output.pairs, pairs)
    n, m = pairs["X"].shape
    tracker.log_metrics({"n": n, "m": m})
    tracker.log_artifact(snakemake.output.pairs)
