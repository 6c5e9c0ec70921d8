"""Put the workflow's rule graph (Snakemake's Mermaid output) into README.md, or check it is current.

    snakemake --rulegraph mermaid-js | python .ci/rulegraph.py README.md          # make dag
    snakemake --rulegraph mermaid-js | python .ci/rulegraph.py README.md --check  # CI

The graph goes between the lines ``<!-- rulegraph:start -->`` and ``<!-- rulegraph:end -->`` as a
fenced ``mermaid`` block (GitHub draws it). The ``all`` target is left out.
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

START, END = "<!-- rulegraph:start -->", "<!-- rulegraph:end -->"


def mermaid_without_all(text: str) -> str:
    """Snakemake's Mermaid flowchart without its front matter and without the node named ``all``."""
    lines = [ln.rstrip() for ln in text.splitlines()]
    if lines and lines[0] == "---":  # front matter (title)
        lines = lines[lines.index("---", 1) + 1:]
    all_ids = {m.group(1) for ln in lines if (m := re.fullmatch(r"\s*(id\d+)\[all\]", ln))}
    keep = [ln for ln in lines if not any(re.search(rf"\b{i}\b", ln) for i in all_ids)]
    # Snakemake writes the edges in no fixed order: sort them (by target, then source) so the
    # README changes only when the graph does
    edges = sorted((ln for ln in keep if "-->" in ln),
                   key=lambda ln: [int(n) for n in reversed(re.findall(r"id(\d+)", ln))])
    nodes = [ln for ln in keep if "-->" not in ln]
    return "\n".join(nodes + edges).strip() + "\n"


def main(argv: list[str]) -> int:
    readme = Path(argv[1])
    check = "--check" in argv[2:]
    graph = mermaid_without_all(sys.stdin.read())
    if "flowchart" not in graph:
        print("rulegraph.py: no Mermaid flowchart on stdin (snakemake --rulegraph mermaid-js failed?)",
              file=sys.stderr)
        return 2
    text = readme.read_text()
    if START not in text or END not in text:
        print(f"rulegraph.py: {readme} has no {START} ... {END} lines to put the graph between", file=sys.stderr)
        return 2
    head, rest = text.split(START, 1)
    _, tail = rest.split(END, 1)
    new = f"{head}{START}\n```mermaid\n{graph}```\n{END}{tail}"
    if check:
        if new != text:
            print(f"rulegraph.py: the rule graph in {readme} is out of date: run `make dag`", file=sys.stderr)
            return 1
        print(f"rulegraph.py: the rule graph in {readme} is current")
        return 0
    readme.write_text(new)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
