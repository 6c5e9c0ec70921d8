"""Draw Snakemake's rule graph as an SVG/PNG without Graphviz.

``snakemake --rulegraph`` prints the DAG of rules in Graphviz's dot language; ``dot -Tsvg`` is the
usual renderer, but Graphviz is a system package that pip cannot install. This module reads that
dot text and draws it with matplotlib: every rule a box, placed in layers by the longest path from
the sources (data preparation left, ``all`` right), edges as arrows.

    snakemake --rulegraph | python -m sslkit.dag docs/dag.svg

``parse_rulegraph(text) -> (labels {id: rule}, edges [(src, dst)])``, ``layers(ids, edges) ->
{id: depth}``, ``draw(labels, edges) -> Figure``.
"""
from __future__ import annotations

import re
import sys
from collections import defaultdict

__all__ = ["parse_rulegraph", "layers", "draw", "main"]

_NODE = re.compile(r'^\s*(\d+)\s*\[\s*label\s*=\s*"([^"]*)"')
_EDGE = re.compile(r"^\s*(\d+)\s*->\s*(\d+)")


def parse_rulegraph(text: str) -> tuple[dict[int, str], list[tuple[int, int]]]:
    """Node labels and edges of a ``snakemake --rulegraph`` / ``--dag`` dot text.

    Raises ValueError naming the problem when the text holds no nodes or an edge names an unknown node.
    """
    labels: dict[int, str] = {}
    edges: list[tuple[int, int]] = []
    for line in text.splitlines():
        if m := _NODE.match(line):
            labels[int(m.group(1))] = m.group(2).replace("\\n", "\n")
        elif m := _EDGE.match(line):
            edges.append((int(m.group(1)), int(m.group(2))))
    if not labels:
        raise ValueError("no nodes found: pipe the output of `snakemake --rulegraph` (dot text) into this")
    unknown = sorted({n for e in edges for n in e} - set(labels))
    if unknown:
        raise ValueError(f"edges name nodes without a label line: {unknown}")
    return labels, sorted(set(edges))


def layers(ids, edges) -> dict[int, int]:
    """Depth of each node = length of the longest path reaching it from a source (Kahn's order).

    Raises ValueError if the graph has a cycle (a rule graph never does).
    """
    ids = list(ids)
    preds: dict[int, list[int]] = defaultdict(list)
    succs: dict[int, list[int]] = defaultdict(list)
    for a, b in edges:
        preds[b].append(a)
        succs[a].append(b)
    indeg = {i: len(preds[i]) for i in ids}
    ready = sorted(i for i in ids if indeg[i] == 0)
    depth = {i: 0 for i in ready}
    seen = 0
    while ready:
        i = ready.pop(0)
        seen += 1
        for j in succs[i]:
            depth[j] = max(depth.get(j, 0), depth[i] + 1)
            indeg[j] -= 1
            if indeg[j] == 0:
                ready.append(j)
    if seen != len(ids):
        raise ValueError("the graph has a cycle")
    return depth


def draw(labels: dict[int, str], edges: list[tuple[int, int]], drop: tuple[str, ...] = ("all",)):
    """A matplotlib Figure of the graph: layers left to right, nodes of a layer top to bottom.

    Nodes labelled as in ``drop`` (default: the ``all`` target collector) are left out with their edges.
    """
    keep = {i for i, lab in labels.items() if lab not in drop}
    labels = {i: labels[i] for i in keep}
    edges = [(a, b) for a, b in edges if a in keep and b in keep]
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    depth = layers(labels, edges)
    columns: dict[int, list[int]] = defaultdict(list)
    for i in sorted(labels, key=lambda i: (depth[i], labels[i])):
        columns[depth[i]].append(i)
    tallest = max(len(c) for c in columns.values())
    pos = {}
    for d, col in columns.items():
        for k, i in enumerate(col):
            pos[i] = (d * 2.6, (len(col) - 1) / 2 - k)
    fig, ax = plt.subplots(figsize=(2.6 * len(columns) + 0.5, 0.75 * tallest + 0.8))
    cmap = plt.get_cmap("tab10")
    boxes = {}
    for i, (x, y) in pos.items():
        boxes[i] = ax.text(x, y, labels[i], ha="center", va="center", fontsize=9, family="sans-serif",
                           bbox=dict(boxstyle="round,pad=0.35", fc="white", ec=cmap(depth[i] % 10), lw=1.6))
    fig.canvas.draw()  # lay out the boxes so that arrows can be clipped at their edges
    for a, b in edges:
        ax.annotate("", xy=pos[b], xytext=pos[a],
                    arrowprops=dict(arrowstyle="->", color="0.55", lw=1.0, shrinkA=2, shrinkB=2,
                                    patchA=boxes[a].get_bbox_patch(), patchB=boxes[b].get_bbox_patch(),
                                    connectionstyle="arc3,rad=0.0"))
    ax.set_xlim(-1.4, 2.6 * (len(columns) - 1) + 1.4)
    ax.set_ylim(-(tallest - 1) / 2 - 0.7, (tallest - 1) / 2 + 0.7)
    ax.axis("off")
    fig.tight_layout()
    return fig


def main(argv: list[str] | None = None) -> int:
    """``python -m sslkit.dag OUT.svg|OUT.png`` with the dot text on standard input."""
    argv = sys.argv[1:] if argv is None else argv
    if len(argv) != 1:
        print("usage: snakemake --rulegraph | python -m sslkit.dag OUT.svg", file=sys.stderr)
        return 2
    labels, edges = parse_rulegraph(sys.stdin.read())
    from .plots import save_figure

    save_figure(draw(labels, edges), [argv[0]])
    print(f"{argv[0]}: {len(labels)} rules, {len(edges)} dependencies")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
