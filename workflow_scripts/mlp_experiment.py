"""Rule mlp_experiment: wide MLP trained with Barlow Twins vs the kernelised theory (sslkit.experiments.mlp)."""
from pathlib import Path

from sslkit.data import load_split
from sslkit.experiments.mlp import MLPSettings, run_mlp_experiment
from sslkit.io import save_json, save_npz
from sslkit.rule_script import script_run

with script_run(snakemake) as (tracker, config):
    out = snakemake.output
    s = MLPSettings.from_config(snakemake.params.mlp)
    split = load_split(Path(snakemake.input.manifest).parent, s.split)
    summary, traj, kernels = run_mlp_experiment(split.images, s)
    save_npz(out.kernels, **kernels)
    save_npz(out.trajectory, **traj)
    save_json(out.summary, summary)

    series = {"eval_loss": traj["eval_loss"], "train_loss": traj["train_loss"]}
    series.update({f"eigenvalue_{j + 1}": traj["eig"][:, j] for j in range(s.d)})
    tracker.log_series(series, steps=traj["epoch"])
    ki, kf = summary["kernel_init"], summary["kernel_final"]
    tracker.log_metrics({
        "steps_distinct": summary["steps"]["n_distinct"],
        "modes_learned": summary["steps"]["n_learned"],
        "final_eval_loss": summary["final_eval_loss"],
        "alignment_exp_th_init": ki["alignment_exp_th"],
        "alignment_exp_th_final": kf["alignment_exp_th"],
        "alignment_exp_ntk_init": ki["alignment_exp_ntk"],
        "alignment_exp_ntk_final": kf["alignment_exp_ntk"],
        "alignment_random": summary["random_alignment"]["analytic"],
        "kernel_change": summary["kernel_change"],
        "train_time_s": summary["train_time_s"],
        "ntk_time_s": summary["ntk_stats"]["final"]["time_s"],
    })
    tracker.log_artifacts([out.summary, out.trajectory])
