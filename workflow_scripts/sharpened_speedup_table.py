"""Rule sharpened_speedup_table: predicted and measured speed-up of the sharpened loss, linear model and ResNet."""
import pandas as pd

from sslkit.io import atomic_path
from sslkit.rule_script import script_run
from sslkit.theory.landscape_experiments import resnet_comparison

with script_run(snakemake) as (tracker, config):
    linear = pd.read_csv(snakemake.input.linear)
    factors = pd.read_csv(snakemake.input.factors)
    try:
        table = resnet_comparison(linear.to_dict("records"), factors, variant=snakemake.params.variant)
    except ValueError as exc:
        raise ValueError(f"{snakemake.input.factors}: {exc}") from exc
    with atomic_path(snakemake.output.csv) as tmp:
        table.to_csv(tmp, index=False, float_format="%.4g")
    with atomic_path(snakemake.output.md) as tmp:
        with open(tmp, "w") as fh:
            fh.write(table.to_markdown(index=False, floatfmt=".3g") + "\n")
    tracker.log_artifacts([snakemake.output.csv, snakemake.output.md])
