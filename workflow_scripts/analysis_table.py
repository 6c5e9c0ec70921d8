"""Rule analysis_table: one row per configured run: detected steps, sequential, hidden coincidence,
the dip test of the embedding spectra (bimodal), the alpha check (top eigenvalue at init vs App. D.2)
and the final probe accuracies (from the steps json and probe tables)."""
import pandas as pd

from sslkit.analysis import spectra as spectrum
from sslkit.io import load_json
from sslkit.rule_script import script_run

with script_run(snakemake, attach=True) as (tracker, config):
    rows = []
    for run, steps_path, probe_path in zip(snakemake.params.runs, snakemake.input.steps, snakemake.input.probe):
        s = load_json(steps_path)
        probe = pd.read_csv(probe_path).sort_values("step")
        emb, hid = s["embedding"], s["hidden"] or {}
        bim, alpha = s.get("bimodality") or {}, s.get("alpha_check") or {}
        rows.append({
            "run": run, "method": s["method"], "init": s["init"], "space": s["space"],
            "n_spectra": s.get("n_spectra"), "n_checkpoints": s["n_checkpoints"], "t_max": s["t_max"],
            "n_modes": emb["n_modes"], "n_events": emb["n_events"], "n_steps": s["n_steps"],
            "sequential": s["sequential"], "sequential_fraction": emb["sequential_fraction"],
            "band_gap_decades": (emb["bands"] or {}).get("gap_decades"),
            "dip": bim.get("dip"), "dip_p_value": bim.get("p_value"), "bimodal": bim.get("bimodal"),
            "top_eigenvalue_init": alpha.get("top_eigenvalue_init"), "alpha_paper_value": alpha.get("paper_value"),
            "alpha_check_passed": alpha.get("passed"),
            "hidden_n_steps": hid.get("n_steps"), "hidden_coincidence": s["hidden_coincidence"],
            "hidden_coverage": s["hidden_coverage"], "reason": emb["reason"],
            "final_epoch": float(probe["epoch"].iloc[-1]),
            "final_linear_acc": float(probe["linear_acc"].iloc[-1]),
            "final_knn_acc": float(probe["knn_acc"].iloc[-1]),
            "best_linear_acc": float(probe["linear_acc"].max()),
        })
    spectrum.write_table(pd.DataFrame(rows), snakemake.output.table)
    tracker.log_artifacts([snakemake.output.table])
