"""Rule ntk_alignment: trained embeddings vs the eNTK theory for one method (sslkit.theory.alignment)."""
import os
from pathlib import Path

import numpy as np
import torch

from sslkit.analysis import spectra as spectrum
from sslkit.analysis.checkpoints import alpha_check
from sslkit.io import load_json, save_json, save_npz
from sslkit.rule_script import Progress, script_run
from sslkit.theory.alignment import (
    ARRAY_KEYS,
    feature_baselines,
    initial_ntk_alignment,
    network_alignment,
    network_embeddings,
    stacked_points,
)
from sslkit.theory.ntk import jacobian_mode, plan_chunks
from sslkit.training.engine import load_checkpoint, select_device

manifest = load_json(snakemake.input.run)
model = f"{snakemake.wildcards.dataset}/{manifest['method']}-{manifest['init']}"
with script_run(snakemake, parent_model=model, run_config=manifest["run_config"]) as (tracker, config):
    s = snakemake.params.ntk
    out = snakemake.output
    run_dir = Path(snakemake.input.run).parent
    # phases: the eNTK and the alignments (network_alignment), the penultimate features, the outputs
    progress = Progress(f"ntk_alignment {model}", 3, "phase")
    # the eNTK, the long part: a console line about every 10 % of its per-point Jacobian passes
    jacobians: list[Progress] = []

    def on_ntk_progress(done: int, total: int, label: str = f"ntk_alignment {model} eNTK") -> None:
        if not jacobians:
            jacobians.append(Progress(label, total, "Jacobian"))
        jacobians[0].update(done)

    ck = manifest["checkpoints"][-1]
    device = select_device(s["device"])
    model, rc = load_checkpoint(run_dir / ck["path"], map_location=device)

    pairs = np.load(snakemake.input.pairs)
    same = (int(pairs["image_size"]) == int(rc["image_size"])
            and np.allclose(pairs["mean"], rc["data"]["mean"]) and np.allclose(pairs["std"], rc["data"]["std"]))
    if not same:
        raise ValueError(
            f"{snakemake.input.pairs} was drawn at image size {int(pairs['image_size'])} with normalisation "
            f"{pairs['mean'].tolist()}/{pairs['std'].tolist()}, but run {run_dir} uses {rc['image_size']} and "
            f"{rc['data']['mean']}/{rc['data']['std']}: all ntk.methods runs must share train.image_size and "
            f"train.splits (delete the pairs file after changing them)")
    points = stacked_points(pairs["x1"], pairs["x2"])

    budget = int(s["memory_budget_mb"]) * 2**20
    example = torch.as_tensor(points[:3], dtype=torch.float32, device=device)
    jacobian = jacobian_mode(model, example, device, s["jacobian"])
    example = example[:1]
    chunk, rows = plan_chunks(model, example, budget, int(s["chunk_size"]), jacobian=jacobian)
    rows = min(rows, len(points))
    arrays, summary = network_alignment(model, points, chunk_size=chunk, row_chunk_size=max(rows, chunk),
                                        device=str(device), batch_size=int(s["batch_size"]),
                                        random_trials=int(s["random_trials"]), seed=int(s["seed"]),
                                        on_progress=on_ntk_progress, jacobian=jacobian)
    progress.advance()
    stats = summary["ntk"]
    # context for the d/2n baseline: the embeddings are computed from h penultimate features
    hidden = network_embeddings(model.encoder, points, batch_size=int(s["batch_size"]), device=str(device))
    summary.update(feature_baselines(arrays["P_exp"], hidden))
    # footnote 22: the eNTK of the initial network (the run's step-0 checkpoint) on the same points
    ck0 = min(manifest["checkpoints"], key=lambda c: c["step"])
    summary.update({"a_exp_th_init": None, "a_exp_ntk_init": None, "initial_checkpoint_step": ck0["step"]})
    if s.get("initial_ntk", True):
        from sslkit.theory.ntk import empirical_ntk

        if ck0["step"] != 0:
            raise ValueError(f"run {run_dir} has no step-0 checkpoint (first: step {ck0['step']}), needed for the "
                             f"initial eNTK; retrain the run or set ntk.initial_ntk: false")
        model0, _ = load_checkpoint(run_dir / ck0["path"], map_location=device)
        K0 = empirical_ntk(model0.to(device), points, chunk_size=chunk, row_chunk_size=max(rows, chunk),
                           device=str(device), on_progress=None, jacobian=jacobian).K
        summary.update(initial_ntk_alignment(K0, arrays["P_exp"]))
        del model0, K0
    progress.advance()
    # App. D.2's rule of thumb for alpha: the top eigenvalue of the run's history row of step 0
    history = spectrum.read_run_history(snakemake.input.run)
    summary["alpha_check"] = alpha_check(history, rc["method"], rc["init"])
    summary.update({
        "method": rc["method"],
        "run": str(run_dir),
        "init": rc["init"],
        "init_scale": rc["init_scale"],
        "checkpoint_step": ck["step"],
        "checkpoint_t": ck["t"],
        "encoder": rc["encoder"],
        "image_size": rc["image_size"],
        "n_params": stats["n_params"],
        "ntk_time_s": stats["time_s"],
        "ntk_peak_bytes": stats["peak_bytes"],
        "ntk_peak_mb": None if stats["peak_bytes"] is None else stats["peak_bytes"] / 2**20,
        "ntk_estimated_peak_mb": stats["estimated_peak_bytes"] / 2**20,
        "ntk_device": stats["device"],
        "load_average": os.getloadavg(),
        "memory_budget_mb": int(s["memory_budget_mb"]),
    })
    save_npz(out.arrays, **{k: arrays[k] for k in ARRAY_KEYS}, gamma=arrays["gamma"], index=pairs["index"])
    save_json(out.summary, summary)
    progress.advance()
    tracker.log_summary({k: summary[k] for k in ("a_exp_th", "a_exp_ntk", "a_th_ntk", "random_analytic",
                                                 "random_empirical", "ntk_time_s")}, "ntk")
    if summary["a_exp_ntk_init"] is not None:
        tracker.log_summary({k: summary[k] for k in ("a_exp_th_init", "a_exp_ntk_init")}, "ntk")
    if summary["ntk_peak_mb"] is not None:
        tracker.log_metrics({"ntk_peak_mb": summary["ntk_peak_mb"]})
    tracker.log_artifacts([out.summary])
