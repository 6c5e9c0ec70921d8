"""Rule steps: learning steps of one run (sslkit.analysis.steps via sslkit.analysis.checkpoints.steps_from_table)
from the dense embedding spectra of its history.csv and the hidden spectra of its checkpoints: embedding
steps, sequential or not, Fig. 5's hidden coincidence, the dip test of Figs. 3-4 and the alpha check."""
import numpy as np

from sslkit.analysis import checkpoints as analysis
from sslkit.analysis import spectra as spectrum
from sslkit.io import save_json
from sslkit.rule_script import script_run

wc = snakemake.wildcards
with script_run(snakemake, parent_model=f"{wc.dataset}/{wc.method}-{wc.init}") as (tracker, config):
    history = spectrum.read_run_history(snakemake.input.manifest)
    checkpoints = spectrum.read_table(snakemake.input.spectra)
    table = spectrum.dense_table(history, checkpoints)
    res = analysis.steps_from_table(table, wc.method, snakemake.params.steps)
    t = np.unique(table.loc[table["space"] == res["space"], "t"].to_numpy())
    out = {"dataset": wc.dataset, "method": wc.method, "init": wc.init, "spectra_source": "history",
           "n_spectra": int(t.size), "n_checkpoints": int(checkpoints["step"].nunique()), "t_max": float(t.max()),
           "alpha_check": analysis.alpha_check(history, wc.method, wc.init), **res}
    save_json(snakemake.output.steps, out)

    def num(x):
        return float("nan") if x is None else float(x)

    bim = res["bimodality"]
    tracker.log_summary({
        "n_steps": res["n_steps"], "sequential": num(res["sequential"]),
        "sequential_fraction": num(res["embedding"]["sequential_fraction"]),
        "hidden_coincidence": num(res["hidden_coincidence"]), "hidden_coverage": num(res["hidden_coverage"]),
        "hidden_n_steps": num(res["hidden"]["n_steps"]) if res["hidden"] else float("nan"),
        "dip": num(bim["dip"]), "dip_p_value": num(bim["p_value"]),
        "top_eigenvalue_init": out["alpha_check"]["top_eigenvalue_init"],
    }, "steps")
    tracker.log_artifacts([snakemake.output.steps])
