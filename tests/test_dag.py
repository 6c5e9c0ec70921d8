"""sslkit.dag: rule-graph parsing and layering (the README's DAG picture)."""
import pytest

from sslkit import dag

DOT = """digraph snakemake_dag {
    graph[bgcolor=white, margin=0];
	0[label = "all", color = "0.00 0.6 0.85", style="rounded"];
	1[label = "prepare_data", color = "0.48 0.6 0.85", style="rounded"];
	2[label = "train", color = "0.24 0.6 0.85", style="rounded"];
	3[label = "analyze", color = "0.30 0.6 0.85", style="rounded"];
	4[label = "figure", color = "0.12 0.6 0.85", style="rounded"];
	1 -> 2
	2 -> 3
	3 -> 4
	2 -> 4
	4 -> 0
	1 -> 0
}"""


def test_parse_and_longest_path_layers():
    labels, edges = dag.parse_rulegraph(DOT)
    assert labels == {0: "all", 1: "prepare_data", 2: "train", 3: "analyze", 4: "figure"}
    assert len(edges) == 6
    # figure is reached by 1->2->4 (length 2) and 1->2->3->4 (length 3): the longest path counts
    assert dag.layers(labels, edges) == {1: 0, 2: 1, 3: 2, 4: 3, 0: 4}


def test_errors_name_the_problem():
    with pytest.raises(ValueError, match="no nodes"):
        dag.parse_rulegraph("digraph {}")
    with pytest.raises(ValueError, match=r"\[7\]"):
        dag.parse_rulegraph('0[label = "a"];\n0 -> 7')
    with pytest.raises(ValueError, match="cycle"):
        dag.layers([0, 1], [(0, 1), (1, 0)])


def test_draw_leaves_out_the_all_collector(tmp_path):
    labels, edges = dag.parse_rulegraph(DOT)
    fig = dag.draw(labels, edges)
    texts = sorted(t.get_text() for t in fig.axes[0].texts if t.get_text())
    assert texts == ["analyze", "figure", "prepare_data", "train"]
    out = tmp_path / "dag.svg"
    fig.savefig(out)
    assert out.read_text().lstrip().startswith("<?xml")
