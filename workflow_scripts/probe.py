"""Rule probe: linear probe and k-NN accuracy on frozen hidden representations of the un-augmented
train/test images (the run's normalisation), at every analysed checkpoint of one run."""
from pathlib import Path

from sslkit.analysis import checkpoints as analysis
from sslkit.analysis import spectra as spectrum
from sslkit.data import load_split
from sslkit.io import load_json
from sslkit.rule_script import Progress, script_run
from sslkit.training.augment import eval_transform
from sslkit.training.engine import select_device

wc = snakemake.wildcards
model = f"{wc.dataset}/{wc.method}-{wc.init}"
manifest = load_json(snakemake.input.manifest)
with script_run(snakemake, parent_model=model, run_config=manifest["run_config"]) as (tracker, config):
    p = snakemake.params
    run_dir = Path(snakemake.input.manifest).parent
    run_config = manifest["run_config"]
    checkpoints = [dict(c, path=str(run_dir / c["path"]))
                   for c in analysis.select_checkpoints(manifest["checkpoints"], p.checkpoint_every)]
    data_dir = Path(snakemake.input.data).parent
    table = analysis.probe_over_checkpoints(
        Progress(f"probe {model}", len(checkpoints), "checkpoint").wrap(checkpoints),
        load_split(data_dir, "train"), load_split(data_dir, "test"),
        transform=lambda batch: eval_transform(batch, run_config), device=str(select_device(p.device)),
        batch_size=p.batch_size, bn_stats=p.bn_stats, **p.probe)
    spectrum.write_table(table, snakemake.output.probe)
    tracker.log_series({"linear_acc": table["linear_acc"].tolist(), "knn_acc": table["knn_acc"].tolist()},
                       table["step"].tolist())
    tracker.log_summary({"linear_acc_final": float(table["linear_acc"].iloc[-1]),
                         "knn_acc_final": float(table["knn_acc"].iloc[-1])}, "probe")
    tracker.log_artifacts([snakemake.output.probe])
