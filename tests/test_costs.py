"""sslkit.costs: the analytic FLOP/parameter counts against torch's own counts on the project's real
networks and steps, the cost arithmetic, and the SLURM profile against the paper-scale estimates."""
from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from sslkit import costs

REPO = Path(__file__).resolve().parent.parent
LOSS = {"barlow_twins": {"lambda": 0.0051, "batchnorm": True, "scale": 1.0, "symmetric": False},
        "simclr": {"temperature": 0.2},
        "vicreg": {"sim_coeff": 25.0, "std_coeff": 25.0, "cov_coeff": 1.0, "eps": 1e-4}}


@pytest.mark.parametrize("arch,size,width,stem", [("resnet50", 96, 1.0, False), ("resnet18", 32, 0.25, True),
                                                  ("resnet34", 40, 0.5, False), ("resnet50", 33, 0.125, True)])
def test_resnet_counts_match_torch(arch, size, width, stem, one_torch_thread):
    """Forward FLOPs (torch.utils.flop_counter), parameters and BN buffers of the real encoder."""
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    from sslkit.training.networks import build_encoder

    enc = build_encoder(arch, width, stem, 3).eval()
    with torch.no_grad(), FlopCounterMode(display=False) as fc:
        enc(torch.zeros(1, 3, size, size))
    s = costs.resnet_stats(arch, size, width, stem, 3)
    assert s.forward_flops == fc.get_total_flops()
    assert s.params == sum(p.numel() for p in enc.parameters())
    assert s.buffers == sum(b.numel() for n, b in enc.named_buffers() if "running" in n)
    assert s.out_dim == enc.out_dim
    if (arch, size) == ("resnet50", 96):  # the paper's encoder: 1.50 GFLOP per 96 px image, 23.5M parameters
        assert s.forward_flops == 1_501_396_992 and s.params == 23_508_032


@pytest.mark.parametrize("method", sorted(LOSS))
@pytest.mark.parametrize("arch,stem", [("resnet18", True), ("resnet50", False)])
def test_train_and_eval_step_flops_match_torch(method, arch, stem, one_torch_thread):
    """A full training step (both views, loss, backward) and an evaluation forward of the project's
    method: the analytic 3 F - F_conv1 per view + 3 x loss equals torch's count exactly."""
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    from sslkit.training.methods import make_method
    from sslkit.training.networks import build_model

    size, batch, d, hidden = 20, 6, 16, [32, 24]
    rc = {"method": method, "init_scale": 1.0, "steps": 10, "data": {"channels": 3}, "loss": LOSS[method],
          "encoder": {"arch": arch, "width": 0.125, "small_stem": stem},
          "method_config": {"projector": {"hidden": hidden, "dim": d, "batchnorm": True, "last_bias": False}}}
    torch.manual_seed(0)
    m = make_method(build_model(rc), rc)
    x1, x2 = torch.randn(batch, 3, size, size), torch.randn(batch, 3, size, size)
    with FlopCounterMode(display=False) as fc:
        loss, _, _ = m.loss(x1, x2, 0)
        loss.backward()
    with torch.no_grad(), FlopCounterMode(display=False) as fe:
        m.loss(x1, x2, 0, update=False)
    enc = costs.resnet_stats(arch, size, 0.125, stem)
    pf, pp, _ = costs.mlp_stats(enc.out_dim, hidden, d, True, False)
    assert costs.train_step_flops(enc, pf, method, batch, d) == fc.get_total_flops()
    assert costs.eval_flops(enc, pf, method, batch, d) == fe.get_total_flops()
    assert enc.params + pp == sum(p.numel() for p in m.model.online_parameters())


def test_run_cost_schedules_and_checkpoint_bytes(one_torch_thread):
    """Steps from epochs, checkpoint/eval row counts from the engine's schedules, and a checkpoint's size
    against torch.save of the real model + optimiser state."""
    import io

    import torch

    from sslkit.config import load_config
    from sslkit.training.engine import checkpoint_steps, eval_steps, resolve_run_config
    from sslkit.training.networks import build_model
    from sslkit.training.optim import build_optimizer

    cfg = load_config(REPO / "config/paper.yaml")
    stats = {"n_train": 105000, "height": 96, "width": 96, "channels": 3, "mean": [0.5] * 3, "std": [0.25] * 3}
    rc = resolve_run_config(cfg, "barlow_twins", "small", stats)
    c = costs.run_cost(rc)
    assert c.steps == 320 * (105000 // 64) == 524800
    assert c.checkpoints == len(checkpoint_steps(524800, 30, 25000))
    assert c.eval_rows == len(eval_steps(524800, 500, 320, checkpoint_steps(524800, 30, 25000)))
    assert c.eval_rows > 524800 // 500
    # 11 tracked columns (8 + the monitor's rankme, steps_so_far, next_step_t) + the top min(64, d = 512)
    # eigenvalues of C and of cov
    assert c.mlflow_values == c.eval_rows * (11 + 2 * 64)
    # checkpoint bytes: weights + BN statistics + momentum, within 2% of the real state dicts
    small = dict(rc, encoder={"arch": "resnet18", "width": 0.25, "small_stem": True}, image_size=16)
    model = build_model(small)
    opt = build_optimizer(model.online_parameters(), rc["optimizer"])
    model(torch.zeros(4, 3, 16, 16)).pow(2).sum().backward()
    opt.step()
    buf = io.BytesIO()
    torch.save({"model": model.state_dict(), "optimizer": opt.state_dict()}, buf)
    est = costs.run_cost(small).checkpoint_bytes
    assert abs(est - buf.tell()) / buf.tell() < 0.02, (est, buf.tell())


def test_ntk_flops_and_time_arithmetic():
    k = costs.ntk_flops(2000, 10, 1000)
    assert k["bound"] == 3 * 2000 * 10 + 2000**2 * 1000
    assert k["jacobian"] == 3 * 10 * 2000
    assert k["planned"] == k["jacobian"] + 2000**2 * 1000 * (1 + 128 / 2000)
    assert costs.ntk_flops(2000, 10, 1000, jacobian_passes=5000)["jacobian"] == 3 * 10 * 5000
    gpu = costs.GPU("x", bf16_tflops=100.0, tf32_tflops=50.0, memory_gb=80, mfu=0.5, op_us=10.0)
    assert gpu.seconds(50e12) == pytest.approx(1.0)
    assert gpu.seconds(25e12, "tf32") == pytest.approx(1.0)
    # host-bound: 1000 ops x 10 us = 10 ms beats 1 ms of compute
    assert gpu.step_seconds(50e9, ops=1000) == pytest.approx(0.01)
    assert gpu.step_seconds(50e12, ops=1000) == pytest.approx(1.0)
    row = costs.RuleCost("r", 1, "gpu", 0.0, 1.0, 1.0, 0.0, 5.0, 0.0, 0, 0.0)
    # 2 x 60 min + 15 min -> 150; 2 x 5 GB -> 12000 MB (multiples of 4 GB)
    assert costs.profile_resources(row) == {"runtime": 150, "mem_mb": 12000}


@pytest.fixture(scope="module")
def paper_rows():
    from sslkit.config import load_config

    cfg = load_config(REPO / "config/paper.yaml")
    gpu = costs.GPUS[yaml.safe_load((REPO / "profiles/slurm/profile.yaml").read_text())
                     ["set-resources"]["train"]["gpu_model"]]
    rows, inputs = costs.paper_costs(cfg, gpu)
    return {r.rule: r for r in rows}, inputs


@pytest.mark.slow
def test_slurm_profile_covers_the_paper_estimates(paper_rows):
    """profiles/slurm/profile.yaml's runtime and mem_mb of every costed GPU rule are at least
    sslkit.costs.profile_resources of the estimate (x SAFETY), so the two cannot drift apart."""
    rows, inputs = paper_rows
    profile = yaml.safe_load((REPO / "profiles/slurm/profile.yaml").read_text())
    assert set(rows) == {"train", "analyze", "probe", "ntk_alignment"}
    for rule, row in rows.items():
        need = costs.profile_resources(row)
        have = profile["set-resources"][rule]
        assert have["runtime"] >= need["runtime"], (rule, have, need)
        assert have["mem_mb"] >= need["mem_mb"], (rule, have, need)
        # peak GPU memory fits the requested GPU model
        assert row.gpu_mem_gb < costs.GPUS[have["gpu_model"]].memory_gb, (rule, row.gpu_mem_gb)
    # CPU rules (default resources) get at least SAFETY x the per-rule bound
    assert profile["default-resources"]["runtime"] >= costs.SAFETY * costs.CPU_RULE_HOURS * 60
    # the paper's 9 training runs, ~0.2-0.3 GB per checkpoint (paper.yaml's comment)
    assert rows["train"].jobs == 9
    assert all(0.15e9 < c.checkpoint_bytes < 0.3e9 for c in rows["train"].detail.values())
    assert inputs["ntk"]["ntk_passes"] >= 2 * 1000


@pytest.mark.slow
def test_readme_cost_table_is_current(paper_rows):
    """The README's table rows of the costed rules are bench/paper_cost.py's (make paper-cost)."""
    rows, _ = paper_rows
    readme = (REPO / "README.md").read_text()
    block = readme.split("<!-- paper-cost table: bench/paper_cost.py --markdown -->")[1].split(
        "<!-- end paper-cost table -->")[0]
    for line in costs.format_table(list(rows.values())).splitlines()[:-1]:  # all but the total line
        assert line in block, f"README cost table is stale (run make paper-cost): {line}"
