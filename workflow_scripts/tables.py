"""Rule tables: Tables 1-2 (CSV, Markdown, LaTeX) from the per-method eNTK alignments (sslkit.analysis.tables)."""
import numpy as np

from sslkit.analysis import tables as tb
from sslkit.io import atomic_path, load_json
from sslkit.rule_script import script_run
from sslkit.theory.alignment import pairwise_alignments


def write(path, text):
    with atomic_path(path) as tmp:
        tmp.write_text(text)


with script_run(snakemake, attach=True) as (tracker, config):
    methods = list(snakemake.params.methods)
    out = snakemake.output
    summaries = {m: load_json(p) for m, p in zip(methods, snakemake.input.summaries)}
    subspaces = {}
    for m, p in zip(methods, snakemake.input.arrays):
        with np.load(p) as z:
            subspaces[m] = z["P_exp"]
    rows1 = tb.table1_rows(summaries)
    rows2 = tb.table2_rows(pairwise_alignments(subspaces))
    first = summaries[methods[0]]
    enc = first["encoder"]
    setting = (f"{snakemake.wildcards.dataset}, {enc['arch']} width {enc['width']} at {first['image_size']} px, "
               f"{first['init']} init, d = {first['d']}, n = {first['n']}")
    base = first["random_analytic"]
    write(out.table1, tb.to_csv(rows1, tb.TABLE1_COLUMNS))
    write(out.table2, tb.to_csv(rows2, tb.TABLE2_COLUMNS))
    write(out.table1_md, tb.table1_markdown(rows1, setting))
    write(out.table2_md, tb.table2_markdown(rows2, base, setting))
    write(out.table1_tex, tb.table1_latex(rows1, setting))
    write(out.table2_tex, tb.table2_latex(rows2, base, setting))
    for r in rows1:
        tracker.log_metrics({f"{r['method']}_a_exp_th": r["a_exp_th"], f"{r['method']}_a_exp_ntk": r["a_exp_ntk"]})
    for r in rows2:
        tracker.log_metrics({f"{r['method_a']}_vs_{r['method_b']}": r["alignment"]})
    tracker.log_artifacts(list(out))
