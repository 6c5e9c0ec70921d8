"""Rule ntk_pairs: the n augmented positive pairs all methods' eNTK comparisons share (sslkit.theory.alignment)."""
from pathlib import Path

import numpy as np

from sslkit.data import load_split
from sslkit.io import load_json, save_npz
from sslkit.rule_script import script_run
from sslkit.theory.alignment import augmented_pairs
from sslkit.training.augment import build_augment

with script_run(snakemake) as (tracker, config):
    p = snakemake.params.pairs
    rc = load_json(snakemake.input.run)["run_config"]
    split = load_split(Path(snakemake.input.data).parent, p["split"])
    pairs = augmented_pairs(split.images, build_augment(rc, "cpu"), int(p["n"]), int(p["seed"]))
    save_npz(snakemake.output.pairs, x1=pairs["x1"], x2=pairs["x2"], index=pairs["index"],
             image_size=np.int64(rc["image_size"]), mean=np.asarray(rc["data"]["mean"]),
             std=np.asarray(rc["data"]["std"]), augment_from=np.str_(p["augment_from"]),
             run=np.str_(snakemake.input.run))
    tracker.log_metrics({"n_pairs": len(pairs["index"]), "image_size": rc["image_size"]})
