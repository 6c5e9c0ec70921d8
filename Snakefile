# Stepwise SSL: reproduce "On the Stepwise Nature of Self-Supervised Learning" (Simon et al., 2023).
# DAG: data -> linear model vs theory -> SSL training (small/standard init) -> checkpoint spectra,
# step detection, probes -> empirical NTK alignment -> tables, figures, report.
# Run: `make run` (or `snakemake --cores all`); other scales: `--configfile config/<scale>.yaml`.
from snakemake.utils import min_version

import sslkit.config
import sslkit.tracking

min_version("9.20")

# one id for all jobs of this invocation ($SSLKIT_INVOCATION, kept if set): its MLflow run holds the figures
sslkit.tracking.ensure_invocation_id()


configfile: "config/config.yaml"


# config/schema.yaml completed with the method registry (sslkit.registry); fills defaults, names bad keys
sslkit.config.validate(config)


report: "report/workflow.rst"


include: "rules/common.smk"


wildcard_constraints:
    dataset="|".join(DATASETS),


include: "rules/data.smk"  # prepare_data, linear_pairs
include: "rules/linear.smk"  # linear_sim, appendix_c, fig1ab_linear, fig6_appendix_c
include: "rules/mlp.smk"  # mlp_experiment, mlp_figure (kernel theory vs wide MLP, Fig. 2A-B)
include: "rules/train.smk"  # train (method x init), train_curves
include: "rules/analysis.smk"  # analyze, steps, probe per run; analysis_table; fig1cd, fig2cf, fig3, fig4, fig5, fig7
include: "rules/ntk.smk"  # ntk_pairs, ntk_alignment, tables (trained embeddings vs eNTK theory, Tables 1-2)
include: "rules/speedups.smk"  # Appendix G speed-ups: speedups_run, speedups_lr, speedups_table, speedups_figure
include: "rules/noncontrastive.smk"  # BYOL/DirectPred/DirectCopy: noncontrastive_predictor, noncontrastive_summary, noncontrastive_figure
include: "rules/theory_figures.smk"  # App. F-G theory: theory_fig8, theory_fig9, sharpened_speedup(_table), fig8/fig9 figures
include: "rules/benchmarks.smk"  # benchmarks_table: compute cost per rule, from every job's benchmark: file


rule all:
    default_target: True
    input:
        all_targets(),
        rules.benchmarks_table.output.table,
