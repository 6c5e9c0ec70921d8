"""Rule steps: learning steps of one run from its spectra table (sslkit.analysis.steps via
sslkit.analysis.checkpoints.steps_from_table): embedding steps, sequential or not, Fig. 5's hidden coincidence."""
import numpy as np

from sslkit.analysis import checkpoints as analysis
from sslkit.analysis import spectra as spectrum
from sslkit.io import save_json
from sslkit.rule_script import script_run

wc = snakemake.wildcards
with script_run(snakemake, parent_model=f"{wc.dataset}/{wc.method}-{wc.init}") as (tracker, config):
    table = spectrum.read_table(snakemake.input.spectra)
    res = analysis.steps_from_table(table, wc.method, snakemake.params.steps)
    t = np.unique(table["t"].to_numpy())
    out = {"dataset": wc.dataset, "method": wc.method, "init": wc.init, "n_checkpoints": int(t.size),
           "t_max": float(t.max()), **res}
    save_json(snakemake.output.steps, out)

    def num(x):
        return float("nan") if x is None else float(x)

    tracker.log_summary({
        "n_steps": res["n_steps"], "sequential": num(res["sequential"]),
        "sequential_fraction": num(res["embedding"]["sequential_fraction"]),
        "hidden_coincidence": num(res["hidden_coincidence"]), "hidden_coverage": num(res["hidden_coverage"]),
        "hidden_n_steps": num(res["hidden"]["n_steps"]) if res["hidden"] else float("nan"),
    }, "steps")
    tracker.log_artifacts([snakemake.output.steps])
