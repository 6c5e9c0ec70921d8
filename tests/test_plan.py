"""sslkit.plan: what a config plans, decided without torch (integrity generation of a training run)."""
from __future__ import annotations

import json
import os

from sslkit import plan


def _run(tmp_path, n=3, generation=2):
    """A finished training run's manifest listing ``n`` checkpoints with their size and mtime."""
    ckpt = tmp_path / "ckpt"
    ckpt.mkdir()
    entries = []
    for i in range(n):
        f = ckpt / f"step_{i:08d}.pt"
        f.write_bytes(b"x" * (10 + i))
        st = f.stat()
        entries.append({"path": f"ckpt/{f.name}", "bytes": st.st_size, "mtime_ns": st.st_mtime_ns})
    manifest = tmp_path / "manifest.json"
    manifest.write_text(json.dumps({"checkpoints": entries, "integrity_generation": generation}))
    return manifest, ckpt


def test_intact_run_keeps_its_generation(tmp_path):
    manifest, _ = _run(tmp_path)
    assert plan.run_integrity(manifest, report=lambda m: None) == 2


def test_truncated_or_missing_checkpoint_bumps_the_generation(tmp_path):
    manifest, ckpt = _run(tmp_path)
    messages = []
    f = ckpt / "step_00000001.pt"
    f.write_bytes(b"x")  # truncated
    assert plan.run_integrity(manifest, report=messages.append) == 3
    assert str(f) in messages[0]
    (tmp_path / "b").mkdir()
    manifest2, ckpt2 = _run(tmp_path / "b", generation=0)
    os.remove(ckpt2 / "step_00000002.pt")  # one of several gone
    assert plan.run_integrity(manifest2, report=messages.append) == 1


def test_archived_run_without_checkpoints_is_not_retrained(tmp_path):
    manifest, ckpt = _run(tmp_path)
    ckpt.rename(tmp_path / "ckpt.archived")
    messages = []
    assert plan.run_integrity(manifest, report=messages.append) == 2
    assert "--forcerun train" in messages[0]


def test_no_manifest_yet(tmp_path):
    assert plan.run_integrity(tmp_path / "manifest.json") == 0
