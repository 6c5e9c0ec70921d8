"""Report captions: every report() output of the rules has a caption file that renders (Jinja with
the default config, then reStructuredText without warnings), so `snakemake --report` shows it."""
from __future__ import annotations

import re
from pathlib import Path
from types import SimpleNamespace

import jinja2
import pytest
from docutils.core import publish_parts

from sslkit.config import load_config

REPO = Path(__file__).resolve().parents[2]
WILDCARDS = SimpleNamespace(dataset="digits", method="barlow_twins", init="small", variant="baseline")


def captions() -> list[Path]:
    found = set()
    for smk in (REPO / "rules").glob("*.smk"):
        for rel in re.findall(r'caption="([^"]+)"', smk.read_text()):
            found.add((smk.parent / rel).resolve())
    return sorted(found)


def render(path: Path) -> str:
    config = load_config()
    snakemake = SimpleNamespace(config=config, wildcards=WILDCARDS, params=SimpleNamespace())
    text = jinja2.Environment(undefined=jinja2.StrictUndefined).from_string(path.read_text())
    rst = text.render(snakemake=snakemake)
    # halt_level 2: any docutils warning (e.g. |x| read as an undefined substitution) is an error
    return publish_parts(rst, writer="html", settings_overrides={"halt_level": 2, "report_level": 5})["body"]


def test_figures_of_the_paper_stages_have_captions():
    names = {p.name for p in captions()}
    assert {"fig1ab_linear.rst", "fig6_appendix_c.rst", "fig2ab_mlp.rst", "train_curves.rst"} <= names
    assert (REPO / "report/workflow.rst").is_file()


@pytest.mark.parametrize("path", captions() + [REPO / "report/workflow.rst"], ids=lambda p: p.name)
def test_caption_renders(path):
    assert path.is_file(), f"caption {path} named in rules/*.smk does not exist"
    html = render(path)
    assert "Paper" in html or path.name == "workflow.rst", f"{path.name}: say what the paper shows"
    assert len(html) > 200
