"""Benchmark summary: Snakemake's benchmark .tsv files -> one row per rule."""
from __future__ import annotations

import pytest

from sslkit.benchmarks import read_benchmarks, summarise

HEAD = "s\th:m:s\tmax_rss\tmax_vms\tmax_uss\tmax_pss\tio_in\tio_out\tmean_load\tcpu_time\n"


def write(path, s, rss, cpu):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(HEAD + f"{s}\t0:00:01\t{rss}\t0\t0\t0\t0\t0\t50\t{cpu}\n")


def test_summary_per_rule(tmp_path):
    root = tmp_path / "benchmarks"
    write(root / "train/digits/a-small.tsv", 10.0, 300, 18.0)
    write(root / "train/digits/b-small.tsv", 30.0, 500, 50.0)
    write(root / "steps/digits/a-small.tsv", 1.0, 90, 0.5)
    jobs = read_benchmarks(root)
    assert sorted(jobs["job"]) == ["digits/a-small", "digits/a-small", "digits/b-small"]
    t = summarise(jobs)
    assert t["rule"].tolist() == ["train", "steps"]
    row = t.iloc[0]
    assert (row["jobs"], row["wall_s_total"], row["wall_s_max"], row["cpu_s_total"], row["max_rss_mb"]) == (
        2, 40.0, 30.0, 68.0, 500)
    assert row["slowest_job"] == "digits/b-small"
    (root / "bad.tsv").write_text("garbage")
    with pytest.raises(ValueError, match="bad.tsv"):
        read_benchmarks(root)
