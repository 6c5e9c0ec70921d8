"""Wide single-hidden-layer MLP trained with the simplified Barlow Twins loss (paper Fig. 2A-B, App. D.1).

Setting (``docs/theory.md`` §8): f(x) = W2 relu(W1 x + b1) + b2, hidden width 2048, d = 10
outputs, PyTorch's default init multiplied by ``alpha``; loss L = ||C - I_d||_F^2 with the
symmetrised C = (F^T F' + F'^T F) / 2n (lambda = 1, no batchnorm; the normalisation of
``docs/theory.md`` §1, so that t = lr x step is the time of the kernel theory); full-batch SGD on a
fixed set of n images, both views re-cropped at random every epoch (one step per epoch).

Time scale (measured; see ``mlp.alpha_layers`` in config.yaml). Multiplying *every* layer by
alpha makes the eNTK O(alpha^2): at alpha = 1e-4 the initial eNTK is the constant kernel of the
readout bias, the kernel theory predicts the second step at t ~ 1e8, and on CIFAR-10 nothing is
learned within the paper's t = lr x epochs = 1e-4 x 7000 = 0.7 (the loss stays 10.0000). The
paper's premise that the wide MLP keeps its NTK roughly fixed holds when only the readout layer
(W2, b2) is scaled: the output starts at O(alpha) while the eNTK keeps its standard-init scale.
That is the default (``alpha_layers: readout``). The learning rate is then limited by the top
(near-constant) mode, gamma_1 ~ 80-90: lr < 1/(4 gamma_1) ~ 3e-3 for stability; at lr = 2e-3 the
CIFAR-10 run lost most of its ReLUs near t = 9 (the kernel fell to 1% of its initial trace), so
the default is lr = 1e-3 for 14000 epochs (t = 14), while the paper's lr = 1e-4 x 7000 epochs
(t = 0.7) shows only the first step.

Evaluation points. The 2n points on which C is recorded, the eNTK is computed and embeddings are
compared are one fixed draw of two random crops of the same n images (``eval_seed``), stacked as
``[X; X']`` as in ``sslkit.theory.kernel``.

Population kernel. Training sees fresh crops every epoch, so (in expectation, while C is small)
it follows the gradient of the *population* Gamma, E over crops. The K_Gamma of a single draw of
2n points overestimates its top eigenvalues (sampling noise), which makes the predicted steps
early. The predicted dynamics are therefore also computed from the initial eNTK on
``kernel_draws`` independent crop draws of the n images (2n x kernel_draws points, the first draw
being the evaluation draw), which estimates the population kernel; ``kernel_draws: 1`` turns this
off.
"""

from __future__ import annotations

import logging
import math
import time
from dataclasses import asdict, dataclass

import numpy as np
import torch
from torch import nn

from sslkit.data import make_pairs
from sslkit.theory import kernel as kn
from sslkit.theory.ntk import empirical_ntk

log = logging.getLogger(__name__)

__all__ = ["MLPSettings", "build_mlp", "bt_loss", "CropSampler", "record_epochs", "train_mlp",
           "count_steps", "run_mlp_experiment"]

ALPHA_LAYERS = ("readout", "all")


@dataclass
class MLPSettings:
    """Parameters of the wide-MLP experiment (config section ``mlp``; see config.yaml)."""

    n_images: int = 50
    split: str = "train"
    crop: int = 20
    width: int = 2048
    d: int = 10
    alpha: float = 1e-4
    alpha_layers: str = "readout"
    lr: float = 1e-3
    epochs: int = 14000
    record_points: int = 200
    prediction_points: int = 400
    ntk_chunk_size: int = 50
    kernel_draws: int = 8
    step_threshold: float = 0.5
    step_min_ratio: float = 1.1
    random_trials: int = 1000
    seed: int = 0
    eval_seed: int = 1

    def __post_init__(self):
        if self.alpha_layers not in ALPHA_LAYERS:
            raise ValueError(f"mlp.alpha_layers must be one of {ALPHA_LAYERS}, got {self.alpha_layers!r}")
        for key in ("n_images", "crop", "width", "d", "epochs", "record_points", "ntk_chunk_size",
                    "kernel_draws"):
            if int(getattr(self, key)) < 1:
                raise ValueError(f"mlp.{key} must be >= 1, got {getattr(self, key)}")
        if not self.lr > 0 or not self.alpha > 0:
            raise ValueError(f"mlp.lr and mlp.alpha must be > 0, got {self.lr}, {self.alpha}")
        if self.d > 2 * self.n_images:
            raise ValueError(f"mlp.d = {self.d} exceeds the 2n = {2 * self.n_images} evaluation points")

    @classmethod
    def from_config(cls, section: dict, crop: int | None = None) -> MLPSettings:
        """From the validated ``mlp`` config section; ``crop`` (if given) replaces ``mlp.crop``."""
        unknown = set(section) - set(cls.__dataclass_fields__)
        if unknown:
            raise ValueError(f"unknown mlp config keys {sorted(unknown)}")
        kwargs = dict(section)
        if crop is not None:
            kwargs["crop"] = crop
        if kwargs.get("crop") is None:
            raise ValueError("mlp.crop is null: resolve it to the dataset default first")
        return cls(**kwargs)


def build_mlp(m: int, width: int, d: int, alpha: float, alpha_layers: str = "readout",
              seed: int = 0) -> nn.Sequential:
    """``Linear(m, width) -> ReLU -> Linear(width, d)`` with PyTorch's default init, then every
    parameter (weights and biases) of the scaled layers multiplied by ``alpha``.

    ``alpha_layers``: ``"readout"`` scales the last layer only, ``"all"`` scales both layers.
    """
    if alpha_layers not in ALPHA_LAYERS:
        raise ValueError(f"alpha_layers must be one of {ALPHA_LAYERS}, got {alpha_layers!r}")
    gen_state = torch.random.get_rng_state()
    torch.manual_seed(seed)
    try:
        model = nn.Sequential(nn.Linear(m, width), nn.ReLU(), nn.Linear(width, d))
    finally:
        torch.random.set_rng_state(gen_state)
    layers = [model[2]] if alpha_layers == "readout" else [model[0], model[2]]
    with torch.no_grad():
        for layer in layers:
            for p in layer.parameters():
                p.mul_(alpha)
    return model


def bt_loss(F: torch.Tensor, Fp: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Simplified Barlow Twins: C = (F^T F' + F'^T F) / 2n, L = ||C - I||_F^2.

    ``F``, ``Fp``: embeddings of the two views, ``n x d``. Returns ``(L, C)``.
    """
    n, d = F.shape
    C = (F.T @ Fp + Fp.T @ F) / (2 * n)
    return ((C - torch.eye(d, dtype=C.dtype, device=C.device)) ** 2).sum(), C


class CropSampler:
    """Fresh random ``crop x crop`` crops of a fixed image set, as flattened float vectors in [0, 1].

    Flattening is (row, column, channel), as in ``sslkit.data.make_pairs``.
    """

    def __init__(self, images: np.ndarray, crop: int, seed: int, device="cpu",
                 dtype: torch.dtype = torch.float32):
        images = np.asarray(images)
        if images.ndim != 4:
            raise ValueError(f"images must be N x H x W x C, got shape {images.shape}")
        N, H, W, _ = images.shape
        if not 1 <= crop <= min(H, W):
            raise ValueError(f"mlp.crop = {crop} must be between 1 and the image side {min(H, W)}")
        self.images = torch.as_tensor(images.astype(np.float32) / 255.0, device=device).to(dtype)
        self.crop, self.H, self.W = crop, H, W
        self.gen = torch.Generator(device="cpu").manual_seed(int(seed))
        self.ar = torch.arange(crop, device=device)

    def sample(self) -> torch.Tensor:
        """One random crop per image: ``N x (crop * crop * C)``."""
        N = len(self.images)
        r = torch.randint(0, self.H - self.crop + 1, (N,), generator=self.gen).to(self.ar.device)
        c = torch.randint(0, self.W - self.crop + 1, (N,), generator=self.gen).to(self.ar.device)
        rows = (r[:, None] + self.ar)[:, :, None]
        cols = (c[:, None] + self.ar)[:, None, :]
        idx = torch.arange(N, device=self.ar.device)[:, None, None]
        return self.images[idx, rows, cols].reshape(N, -1)

    def pair(self) -> tuple[torch.Tensor, torch.Tensor]:
        """Two independent views ``(X, X')`` of every image."""
        return self.sample(), self.sample()


def record_epochs(epochs: int, points: int) -> np.ndarray:
    """About ``points`` log-spaced epochs in [0, epochs] (0 and ``epochs`` included), unique, sorted."""
    grid = np.unique(np.rint(np.logspace(0, np.log10(max(epochs, 1)), max(points - 1, 1))).astype(int))
    return np.unique(np.concatenate([[0], grid[grid <= epochs], [epochs]]))


@torch.no_grad()
def _eval_point(model: nn.Module, Z: torch.Tensor) -> tuple[float, np.ndarray, np.ndarray]:
    """Loss, eigenvalues of C (descending) and embeddings ``d x 2n`` on the stacked points Z."""
    out = model(Z)
    n = len(Z) // 2
    L, C = bt_loss(out[:n].double(), out[n:].double())
    eig = np.linalg.eigvalsh(C.cpu().numpy())[::-1].copy()
    return float(L), eig, out.double().cpu().numpy().T


def train_mlp(model: nn.Module, sampler, Z_eval: torch.Tensor, lr: float, epochs: int,
              record: np.ndarray) -> dict[str, np.ndarray]:
    """Full-batch SGD, one step per epoch on fresh crops; record at the epochs in ``record``.

    ``sampler``: any object whose ``pair()`` returns the two views ``(X, X')`` (n x m) of an epoch
    (``CropSampler`` for fresh crops). Recorded at epoch e (before that epoch's update, i.e.
    after e updates): the training loss of
    the epoch's own crops and, on the fixed evaluation points ``Z_eval`` (2n x m), the loss and the
    eigenvalues of C. Returns arrays ``epoch``, ``t`` (= lr x epoch), ``train_loss``,
    ``eval_loss`` (T), ``eig`` (T x d).
    """
    opt = torch.optim.SGD(model.parameters(), lr=lr)
    rec = set(int(e) for e in record)
    out = {"epoch": [], "train_loss": [], "eval_loss": [], "eig": []}
    t0 = time.perf_counter()
    for epoch in range(epochs + 1):
        X, Xp = sampler.pair()
        n = len(X)
        F = model(torch.cat([X, Xp]))
        loss, _ = bt_loss(F[:n], F[n:])
        if not torch.isfinite(loss):
            raise FloatingPointError(f"the loss became {loss.item()} at epoch {epoch}: the learning "
                                     f"rate mlp.lr = {lr} is too large for this kernel (stability "
                                     "needs lr < 1 / (4 gamma_1)); lower it")
        if epoch in rec:
            L_eval, eig, _ = _eval_point(model, Z_eval)
            out["epoch"].append(epoch)
            out["train_loss"].append(loss.item())
            out["eval_loss"].append(L_eval)
            out["eig"].append(eig)
            if epoch and (epoch & (epoch - 1)) == 0:
                log.info("epoch %d t=%.4g loss %.4f top eigenvalues %s (%.0f s)", epoch, lr * epoch,
                         L_eval, np.array2string(eig[:4], precision=3), time.perf_counter() - t0)
        if epoch == epochs:
            break
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    res = {k: np.asarray(v, dtype=np.float64) for k, v in out.items()}
    res["epoch"] = res["epoch"].astype(np.int64)
    res["t"] = lr * res["epoch"]
    return res


def count_steps(t: np.ndarray, lam: np.ndarray, threshold: float = 0.5, min_ratio: float = 1.1) -> dict:
    """Learning steps in eigenvalue trajectories.

    Mode j is learned at the first time its eigenvalue (``lam``: T x d, descending per row) reaches
    ``threshold`` (theory: lambda_j(tau_j) ~ 1/2), log-interpolated between recorded times. Steps
    are *distinct* when consecutive crossing times differ by more than the factor ``min_ratio``.

    Returns ``crossing_times`` (d, NaN if never), ``n_learned`` and ``n_distinct``.
    """
    t, lam = np.asarray(t, dtype=np.float64), np.asarray(lam, dtype=np.float64)
    cross = np.full(lam.shape[1], np.nan)
    for j in range(lam.shape[1]):
        above = np.nonzero(lam[:, j] >= threshold)[0]
        if len(above) == 0:
            continue
        k = above[0]
        if k == 0 or t[k - 1] <= 0:
            cross[j] = t[k]
            continue
        # log-log interpolation between (t[k-1], lam[k-1]) and (t[k], lam[k])
        l0, l1 = max(lam[k - 1, j], 1e-300), lam[k, j]
        frac = (math.log(threshold) - math.log(l0)) / (math.log(l1) - math.log(l0))
        cross[j] = math.exp(math.log(t[k - 1]) + frac * (math.log(t[k]) - math.log(t[k - 1])))
    learned = np.sort(cross[np.isfinite(cross)])
    distinct = 0 if len(learned) == 0 else 1 + int(np.sum(learned[1:] > min_ratio * learned[:-1]))
    return {"crossing_times": cross, "n_learned": int(len(learned)), "n_distinct": distinct}


def _kernel_report(K: np.ndarray, F0: np.ndarray, d: int, t_pred: np.ndarray,
                   P_exp: np.ndarray) -> tuple[dict, dict]:
    """Alignments and predicted dynamics for one kernel matrix."""
    spec = kn.kernel_gamma(K)
    P_th = kn.right_singular_subspace(kn.predicted_embeddings(spec, d))
    P_ntk = kn.top_eigvec_subspace(K, d)
    dyn = kn.kernel_dynamics(spec, F0, t_pred)
    summary = {
        "alignment_exp_th": kn.alignment(P_exp, P_th),
        "alignment_exp_ntk": kn.alignment(P_exp, P_ntk),
        "gamma": spec.gamma[: 2 * d],
        "s0": dyn.s0,
        "tau_pred": dyn.tau,
        "rank": spec.rank,
    }
    arrays = {"lam_pred": dyn.lam, "loss_pred": dyn.loss, "gamma": spec.gamma[:d], "tau_pred": dyn.tau,
              "F_th": kn.predicted_embeddings(spec, d)}
    return summary, arrays


def run_mlp_experiment(images: np.ndarray, s: MLPSettings, device="cpu") -> tuple[dict, dict, dict]:
    """The whole experiment on an image array (uint8 N x H x W x C).

    Returns ``(summary, trajectory, kernels)``: a JSON-able summary (steps, alignments, kernel
    statistics), the trajectory arrays (recorded and kernel-predicted curves; small) and the
    kernels/embeddings (``K_init``, ``K_final``: 2n x 2n; ``F_init``, ``F_final``: d x 2n;
    ``K_init_population``: 2n R x 2n R for R = ``kernel_draws``).
    """
    images = np.asarray(images)
    if s.n_images > len(images):
        raise ValueError(f"mlp.n_images = {s.n_images} exceeds the {len(images)} images of the split")
    rng = np.random.default_rng(s.seed)
    index = np.sort(rng.choice(len(images), size=s.n_images, replace=False))
    subset = np.asarray(images[index])
    ev = make_pairs(subset, n=s.n_images, crop=s.crop, seed=s.eval_seed)  # all n images, in order
    Z = torch.tensor(np.concatenate([ev["X"], ev["Xp"]]), dtype=torch.float32, device=device)
    m = Z.shape[1]
    n = s.n_images
    model = build_mlp(m, s.width, s.d, s.alpha, s.alpha_layers, seed=s.seed).to(device)

    ntk_init = empirical_ntk(model, Z, chunk_size=s.ntk_chunk_size)
    _, _, F_init = _eval_point(model, Z)
    log.info("initial eNTK: %d x %d in %.1f s", *ntk_init.K.shape, ntk_init.stats["time_s"])
    # population estimate: kernel_draws crop draws, stacked [X_1..X_R; X'_1..X'_R]
    draws = [ev] + [make_pairs(subset, n=s.n_images, crop=s.crop, seed=s.eval_seed + r)
                    for r in range(1, s.kernel_draws)]
    Zpop = torch.tensor(np.concatenate([p["X"] for p in draws] + [p["Xp"] for p in draws]),
                        dtype=torch.float32, device=device)
    ntk_pop = ntk_init if s.kernel_draws == 1 else empirical_ntk(model, Zpop, chunk_size=s.ntk_chunk_size)
    _, _, F_init_pop = _eval_point(model, Zpop)
    log.info("initial eNTK on %d draws: %d x %d in %.1f s", s.kernel_draws, *ntk_pop.K.shape,
             ntk_pop.stats["time_s"])

    sampler = CropSampler(subset, s.crop, seed=s.seed + 1, device=device)
    t_start = time.perf_counter()
    traj = train_mlp(model, sampler, Z, s.lr, s.epochs, record_epochs(s.epochs, s.record_points))
    train_time = time.perf_counter() - t_start

    ntk_final = empirical_ntk(model, Z, chunk_size=s.ntk_chunk_size)
    L_final, eig_final, F_final = _eval_point(model, Z)

    t_pred = np.logspace(math.log10(s.lr), math.log10(s.lr * max(s.epochs, 1)), s.prediction_points)
    P_exp = kn.right_singular_subspace(F_final)
    rep_init, arr_init = _kernel_report(ntk_init.K, F_init, s.d, t_pred, P_exp)
    rep_final, arr_final = _kernel_report(ntk_final.K, F_init, s.d, t_pred, P_exp)
    # population kernel: dynamics, and Eq. 49 restricted to the evaluation draw (its first 2n points)
    spec_pop = kn.kernel_gamma(ntk_pop.K)
    dyn_pop = kn.kernel_dynamics(spec_pop, F_init_pop, t_pred)
    nR = n * s.kernel_draws
    eval_cols = np.r_[0:n, nR:nR + n]
    F_th_pop = kn.predicted_embeddings(spec_pop, s.d)[:, eval_cols]
    rep_pop = {"draws": s.kernel_draws, "n_points": 2 * nR,
               "alignment_exp_th": kn.alignment(P_exp, kn.right_singular_subspace(F_th_pop)),
               "gamma": spec_pop.gamma[: 2 * s.d], "s0": dyn_pop.s0, "tau_pred": dyn_pop.tau,
               "rank": spec_pop.rank}
    rand_mean, rand_std = kn.random_alignment_empirical(s.d, 2 * n, trials=s.random_trials, seed=s.seed,
                                                        P=P_exp)
    steps = count_steps(traj["t"], traj["eig"], s.step_threshold, s.step_min_ratio)
    pred_steps = count_steps(t_pred, arr_init["lam_pred"], s.step_threshold, s.step_min_ratio)
    pop_steps = count_steps(t_pred, dyn_pop.lam, s.step_threshold, s.step_min_ratio)
    K0, K1 = ntk_init.K, ntk_final.K
    summary = {
        "settings": asdict(s),
        "n": n,
        "m": m,
        "n_params": ntk_init.stats["n_params"],
        "image_index": index,
        "time_max": s.lr * s.epochs,
        "train_time_s": train_time,
        "final_eval_loss": L_final,
        "final_eigenvalues": eig_final,
        "steps": {"n_learned": steps["n_learned"], "n_distinct": steps["n_distinct"],
                  "crossing_times": steps["crossing_times"],
                  "predicted_init_kernel_n_learned": pred_steps["n_learned"],
                  "predicted_population_kernel_n_learned": pop_steps["n_learned"],
                  "predicted_population_kernel_crossing_times": pop_steps["crossing_times"]},
        "kernel_init": rep_init,
        "kernel_init_population": rep_pop,
        "kernel_final": rep_final,
        "kernel_change": float(np.linalg.norm(K1 - K0) / np.linalg.norm(K0)),
        "kernel_scale_ratio": float(np.trace(K1) / np.trace(K0)),
        "alignment_init_final_ntk_subspaces": kn.alignment(kn.top_eigvec_subspace(K0, s.d),
                                                           kn.top_eigvec_subspace(K1, s.d)),
        "random_alignment": {"analytic": kn.random_alignment(s.d, 2 * n),
                             "empirical_mean": rand_mean, "empirical_std": rand_std,
                             "trials": s.random_trials},
        "ntk_stats": {"init": ntk_init.stats, "final": ntk_final.stats, "init_population": ntk_pop.stats},
        "evaluation_points": ("one fixed draw (eval_seed) of two random crops of the n training "
                              "images, stacked [X; X'] (2n points)"),
    }
    trajectory = {
        **{k: v for k, v in traj.items()},
        "t_pred": t_pred,
        "lam_pred_init": arr_init["lam_pred"], "loss_pred_init": arr_init["loss_pred"],
        "tau_pred_init": arr_init["tau_pred"], "gamma_init": arr_init["gamma"],
        "lam_pred_final": arr_final["lam_pred"], "loss_pred_final": arr_final["loss_pred"],
        "tau_pred_final": arr_final["tau_pred"], "gamma_final": arr_final["gamma"],
        "lam_pred_pop": dyn_pop.lam, "loss_pred_pop": dyn_pop.loss, "tau_pred_pop": dyn_pop.tau,
        "gamma_pop": dyn_pop.gamma,
        "crossing_times": steps["crossing_times"],
    }
    kernels = {"K_init": K0, "K_final": K1, "F_init": F_init, "F_final": F_final,
               "F_th_init": arr_init["F_th"], "F_th_final": arr_final["F_th"], "Z": Z.cpu().numpy(),
               "image_index": index, "K_init_population": ntk_pop.K}
    return summary, trajectory, kernels
