"""Tables 1 and 2 of the paper (App. E): CSV, Markdown and LaTeX, with the paper's values beside ours.

Table 1 (``table1.csv``): one row per method,
    method, a_exp_th, a_exp_ntk, random_analytic, random_empirical, n, d
(a(P_exp, P_th), a(P_exp, P_NTK), the random-subspace baseline d/(2n) and its Monte-Carlo mean),
then the baselines that know the network's hidden features H (``random_feature_span``: a random
d-dimensional subspace of the span of H; ``a_exp_hidden_pcs``: the top-d principal directions of H),
the alignments with the theory built on the *initial* eNTK (``a_exp_th_init``, ``a_exp_ntk_init``;
footnote 22) and App. D.2's alpha check of the run (``top_eigenvalue_init`` at step 0 vs
``alpha_paper_value``, ``alpha_check_passed``; docs/theory.md §15).
Table 2 (``table2.csv``): one row per pair of methods, method_a, method_b, alignment = a(P_exp^a, P_exp^b).

The paper's values (ResNet-50 on STL-10, d = 50, n = 1000, App. E Tables 1-2) are in
``PAPER_TABLE1`` / ``PAPER_TABLE2`` / ``PAPER_RANDOM``; Markdown and LaTeX print them in columns
beside ours. CSVs keep full precision (``repr`` of floats), so they round-trip exactly. Method
names print as their registry labels (``sslkit.registry.METHOD_LABELS``).
"""

from __future__ import annotations

import csv
import io
import math
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from sslkit.registry import METHOD_LABELS

__all__ = [
    "TABLE1_COLUMNS",
    "TABLE1_OPTIONAL",
    "TABLE2_COLUMNS",
    "PAPER_TABLE1",
    "PAPER_TABLE2",
    "PAPER_RANDOM",
    "PAPER_SETTING",
    "METHOD_LABELS",
    "table1_rows",
    "table2_rows",
    "to_csv",
    "read_csv",
    "table1_markdown",
    "table2_markdown",
    "table1_latex",
    "table2_latex",
]

TABLE1_COLUMNS = ("method", "a_exp_th", "a_exp_ntk", "random_analytic", "random_empirical", "n", "d",
                  "random_feature_span", "a_exp_hidden_pcs", "a_exp_th_init", "a_exp_ntk_init",
                  "top_eigenvalue_init", "alpha_paper_value", "alpha_check_passed")
#: Table 1 columns a summary may lack (older ntk_alignment JSON, ntk.initial_ntk false): empty cells
TABLE1_OPTIONAL = ("random_feature_span", "a_exp_hidden_pcs", "a_exp_th_init", "a_exp_ntk_init",
                   "top_eigenvalue_init", "alpha_paper_value", "alpha_check_passed")
TABLE2_COLUMNS = ("method_a", "method_b", "alignment")

#: App. E, Table 1: a(P_exp, P_th) and a(P_exp, P_NTK) per method
PAPER_TABLE1 = {
    "barlow_twins": {"a_exp_th": 0.615, "a_exp_ntk": 0.510},
    "simclr": {"a_exp_th": 0.517, "a_exp_ntk": 0.450},
    "vicreg": {"a_exp_th": 0.592, "a_exp_ntk": 0.481},
}
#: App. E, Table 2: a(P_exp^a, P_exp^b) between methods (unordered pairs)
PAPER_TABLE2 = {
    frozenset(("barlow_twins", "simclr")): 0.504,
    frozenset(("barlow_twins", "vicreg")): 0.504,
    frozenset(("simclr", "vicreg")): 0.405,
}
#: the paper's random-subspace baseline d/(2n) = 50/2000
PAPER_RANDOM = 0.025
PAPER_SETTING = "ResNet-50, STL-10, d = 50, n = 1000"

_INT_COLUMNS = {"n", "d"}
_BOOL_COLUMNS = {"alpha_check_passed"}
_STR_COLUMNS = {"method", "method_a", "method_b"}


def _label(method: str) -> str:
    return METHOD_LABELS.get(method, method)


def table1_rows(summaries: Mapping[str, Mapping[str, Any]]) -> list[dict[str, Any]]:
    """Table 1 rows from per-method summaries (``sslkit.theory.alignment.theory_alignment`` scalars / the
    JSON of rule ntk_alignment), in the mapping's order."""
    rows = []
    for method, s in summaries.items():
        missing = [c for c in TABLE1_COLUMNS[1:] if c not in s and c not in TABLE1_OPTIONAL]
        if missing:
            raise KeyError(f"summary of {method} lacks {missing} (expected the JSON of rule ntk_alignment)")
        alpha = s.get("alpha_check") or {}
        extra = {"top_eigenvalue_init": alpha.get("top_eigenvalue_init"), "alpha_paper_value": alpha.get("paper_value"),
                 "alpha_check_passed": alpha.get("passed")}
        rows.append({"method": method, **{c: s.get(c, extra.get(c)) for c in TABLE1_COLUMNS[1:]}})
    return rows


def table2_rows(pairs: Iterable[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """Table 2 rows (``sslkit.theory.alignment.pairwise_alignments`` output) with exactly its columns."""
    return [{c: p[c] for c in TABLE2_COLUMNS} for p in pairs]


# ---------------------------------------------------------------------------------------------
# CSV (exact round trip)
# ---------------------------------------------------------------------------------------------

def _cell(v: Any) -> str:
    if v is None:
        return ""
    if isinstance(v, bool):
        return str(v)
    if isinstance(v, float) or hasattr(v, "dtype"):
        return repr(float(v))
    return str(v)


def to_csv(rows: Sequence[Mapping[str, Any]], columns: Sequence[str]) -> str:
    """CSV text with a header; floats written with ``repr`` (shortest exact representation)."""
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(columns)
    for r in rows:
        w.writerow([_cell(r.get(c)) for c in columns])
    return buf.getvalue()


def read_csv(text_or_path) -> list[dict[str, Any]]:
    """Rows of a table CSV (``to_csv``) with method names as str, n/d as int, the rest float."""
    text = str(text_or_path)
    if "\n" not in text:
        with open(text) as fh:
            text = fh.read()
    out = []
    for r in csv.DictReader(io.StringIO(text)):
        out.append({k: (v if k in _STR_COLUMNS else None if v == "" else v == "True" if k in _BOOL_COLUMNS
                        else int(v) if k in _INT_COLUMNS else float(v)) for k, v in r.items()})
    return out


# ---------------------------------------------------------------------------------------------
# Markdown / LaTeX with the paper beside ours
# ---------------------------------------------------------------------------------------------

def _f(v: Any, digits: int = 3) -> str:
    if v is None or (isinstance(v, float) and not math.isfinite(v)):
        return "-"
    return f"{float(v):.{digits}f}"


def _ratio(v: float, base: float) -> str:
    return f"{float(v) / float(base):.1f}x"


def _alpha_cell(r: Mapping[str, Any]) -> str:
    """'2.0e-03 (1e-03: pass)': the run's top eigenvalue at init vs App. D.2's value, or '-'."""
    top = r.get("top_eigenvalue_init")
    if top is None:
        return "-"
    target, ok = r.get("alpha_paper_value"), r.get("alpha_check_passed")
    verdict = "no rule" if target is None else f"{target:.0e}: {'pass' if ok else 'fail'}"
    return f"{top:.1e} ({verdict})"


def _md(header: Sequence[str], body: Sequence[Sequence[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(r) + " |" for r in body]
    return "\n".join(lines) + "\n"


def table1_markdown(rows: Sequence[Mapping[str, Any]], setting: str = "") -> str:
    """Markdown Table 1: ours (with the ratio to the random baseline) beside the paper's values."""
    header = ["method", "a(P_exp, P_th) ours", "paper", "a(P_exp, P_NTK) ours", "paper",
              "random d/(2n) ours", "random empirical ours", "random paper",
              "random in feature span", "top-d hidden PCs", "a(P_exp, P_th) initial eNTK",
              "a(P_exp, P_NTK) initial eNTK", "top eigenvalue at init (paper ~)", "n", "d"]
    body = []
    for r in rows:
        p = PAPER_TABLE1.get(r["method"], {})
        base = r["random_analytic"]
        body.append([_label(r["method"]),
                     f"{_f(r['a_exp_th'])} ({_ratio(r['a_exp_th'], base)} random)", _f(p.get("a_exp_th")),
                     f"{_f(r['a_exp_ntk'])} ({_ratio(r['a_exp_ntk'], base)} random)", _f(p.get("a_exp_ntk")),
                     _f(base, 4), _f(r["random_empirical"], 4), _f(PAPER_RANDOM, 3),
                     _f(r.get("random_feature_span")), _f(r.get("a_exp_hidden_pcs")), _f(r.get("a_exp_th_init")),
                     _f(r.get("a_exp_ntk_init")), _alpha_cell(r), str(r["n"]), str(r["d"])])
    title = "Table 1: alignment of trained embeddings with the eNTK theory"
    note = f"\nOurs: {setting}. Paper: {PAPER_SETTING}.\n" if setting else f"\nPaper: {PAPER_SETTING}.\n"
    return f"{title}\n\n" + _md(header, body) + note


def table2_markdown(rows: Sequence[Mapping[str, Any]], random_analytic: float | None = None,
                    setting: str = "") -> str:
    """Markdown Table 2: a(P_exp^a, P_exp^b) ours beside the paper's values."""
    header = ["method a", "method b", "alignment ours", "paper"]
    body = []
    for r in rows:
        p = PAPER_TABLE2.get(frozenset((r["method_a"], r["method_b"])))
        ours = _f(r["alignment"])
        if random_analytic:
            ours += f" ({_ratio(r['alignment'], random_analytic)} random)"
        body.append([_label(r["method_a"]), _label(r["method_b"]), ours, _f(p)])
    body.append(["(random subspaces)", "", _f(random_analytic, 4) if random_analytic else "-", _f(PAPER_RANDOM)])
    title = "Table 2: alignment between the embedding subspaces of different methods"
    note = f"\nOurs: {setting}. Paper: {PAPER_SETTING}.\n" if setting else f"\nPaper: {PAPER_SETTING}.\n"
    return f"{title}\n\n" + _md(header, body) + note


def _tex(colspec: str, header: Sequence[str], body: Sequence[Sequence[str]], caption: str, label: str) -> str:
    lines = [r"\begin{table}[t]", r"\centering", rf"\caption{{{caption}}}", rf"\label{{{label}}}",
             rf"\begin{{tabular}}{{{colspec}}}", r"\toprule", " & ".join(header) + r" \\", r"\midrule"]
    lines += [" & ".join(r) + r" \\" for r in body]
    lines += [r"\bottomrule", r"\end{tabular}", r"\end{table}"]
    return "\n".join(lines) + "\n"


def _tex_escape(s: str) -> str:
    return s.replace("_", r"\_").replace("%", r"\%").replace("&", r"\&")


def table1_latex(rows: Sequence[Mapping[str, Any]], setting: str = "") -> str:
    """LaTeX (booktabs) Table 1: ours beside the paper's values."""
    header = ["Method", r"$a(P_\mathrm{exp}, P_\mathrm{th})$", "paper", r"$a(P_\mathrm{exp}, P_\mathrm{NTK})$",
              "paper", r"random $d/2n$", "random (emp.)", "random paper", "random in span $H$", "top-$d$ PCs of $H$",
              r"$a(P_\mathrm{exp}, P_\mathrm{th})$ init", r"$a(P_\mathrm{exp}, P_\mathrm{NTK})$ init",
              r"$\lambda_1$ at init"]
    body = []
    for r in rows:
        p = PAPER_TABLE1.get(r["method"], {})
        body.append([_tex_escape(_label(r["method"])), _f(r["a_exp_th"]), _f(p.get("a_exp_th")),
                     _f(r["a_exp_ntk"]), _f(p.get("a_exp_ntk")), _f(r["random_analytic"], 4),
                     _f(r["random_empirical"], 4), _f(PAPER_RANDOM), _f(r.get("random_feature_span")),
                     _f(r.get("a_exp_hidden_pcs")), _f(r.get("a_exp_th_init")), _f(r.get("a_exp_ntk_init")),
                     _alpha_cell(r)])
    nd = f" ($n = {rows[0]['n']}$, $d = {rows[0]['d']}$)" if rows else ""
    caption = (f"Alignment of trained embeddings with the eNTK theory. Ours: {_tex_escape(setting)}{nd}; "
               f"paper: {PAPER_SETTING}.")
    return _tex("l" + "r" * 12, header, body, caption, "tab:ntk-alignment")


def table2_latex(rows: Sequence[Mapping[str, Any]], random_analytic: float | None = None,
                 setting: str = "") -> str:
    """LaTeX (booktabs) Table 2: ours beside the paper's values."""
    header = ["Method a", "Method b", "alignment", "paper"]
    body = [[_tex_escape(_label(r["method_a"])), _tex_escape(_label(r["method_b"])), _f(r["alignment"]),
             _f(PAPER_TABLE2.get(frozenset((r["method_a"], r["method_b"]))))] for r in rows]
    body.append(["(random subspaces)", "", _f(random_analytic, 4) if random_analytic else "-", _f(PAPER_RANDOM)])
    caption = (f"Alignment between the embedding subspaces of different methods. Ours: {_tex_escape(setting)}; "
               f"paper: {PAPER_SETTING}.")
    return _tex("llrr", header, body, caption, "tab:method-alignment")
