"""SSL losses and the non-contrastive predictor rules, one small pure function each.

Shapes: ``z1``, ``z2`` are N x d embeddings of the two views of the same N images (row i of
``z1`` and row i of ``z2`` form a positive pair). Every loss returns a scalar tensor. Losses are
computed in the dtype of their inputs; the trainer casts embeddings to float32 first (also under
bf16 autocast).

============  =====================================================================================
Barlow Twins  ``barlow_twins_loss``: sum_i (1 - C_ii)^2 + lambda sum_{i!=j} C_ij^2, C = z1'^T z2' / N
              with z' batch-normalised (official code) or raw (the paper's small-init variant:
              lambda = 1, no batchnorm, optionally symmetrised C -> ||C - I||_F^2 of docs/theory.md §1).
SimCLR        ``nt_xent_loss``: InfoNCE over the 2N views with cosine similarity / temperature.
VICReg        ``vicreg_loss``: 25 * MSE + 25 * variance + 1 * covariance (official code, eps 1e-4).
BYOL          ``byol_loss``: 2 - 2 cos(p, z_target), averaged over the batch (one direction);
              the trainer symmetrises over the two views. EMA: ``ema_momentum`` (cosine schedule).
DirectPred    ``directpred_predictor``: W_p = U diag(p) U^T with p_j = sqrt(s_j) + eps max_j s_j from
              the eigendecomposition F_hat = U diag(s) U^T of the running correlation
              (``update_correlation``: F_hat <- rho F_hat + (1 - rho) E[f f^T]).
DirectCopy    ``directcopy_predictor``: W_p = F_hat / ||F_hat||_F + eps I.
============  =====================================================================================
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

__all__ = [
    "cross_correlation",
    "barlow_twins_loss",
    "nt_xent_loss",
    "vicreg_loss",
    "byol_loss",
    "ema_momentum",
    "update_correlation",
    "directpred_predictor",
    "directcopy_predictor",
    "off_diagonal",
]


def off_diagonal(m: torch.Tensor) -> torch.Tensor:
    """The d*(d-1) off-diagonal entries of a square d x d matrix, as a flat vector."""
    d = m.shape[0]
    if m.shape != (d, d):
        raise ValueError(f"off_diagonal needs a square matrix, got {tuple(m.shape)}")
    return m.flatten()[:-1].view(d - 1, d + 1)[:, 1:].flatten()


def _standardise(z: torch.Tensor, eps: float) -> torch.Tensor:
    """Per-dimension batch normalisation without affine parameters (BatchNorm1d in training mode)."""
    mean = z.mean(dim=0, keepdim=True)
    var = z.var(dim=0, unbiased=False, keepdim=True)
    return (z - mean) / torch.sqrt(var + eps)


def cross_correlation(z1: torch.Tensor, z2: torch.Tensor, batchnorm: bool = False,
                      symmetric: bool = False, eps: float = 1e-5) -> torch.Tensor:
    """Cross-correlation C (d x d) of N x d embeddings: C = z1^T z2 / N.

    ``batchnorm``: standardise each dimension over the batch first (official Barlow Twins).
    ``symmetric``: return (C + C^T) / 2, the C = (1/2n) sum_i [f f'^T + f' f^T] of docs/theory.md §1.
    """
    if z1.shape != z2.shape or z1.ndim != 2:
        raise ValueError(f"z1 and z2 must both be N x d, got {tuple(z1.shape)} and {tuple(z2.shape)}")
    if batchnorm:
        z1, z2 = _standardise(z1, eps), _standardise(z2, eps)
    c = z1.T @ z2 / z1.shape[0]
    return 0.5 * (c + c.T) if symmetric else c


def barlow_twins_loss(z1: torch.Tensor, z2: torch.Tensor, lambd: float = 0.0051, batchnorm: bool = True,
                      scale: float = 1.0, symmetric: bool = False) -> torch.Tensor:
    """Barlow Twins: scale * [sum_i (1 - C_ii)^2 + lambd * sum_{i != j} C_ij^2].

    Args:
        z1, z2: N x d embeddings of the two views.
        lambd: weight of the off-diagonal (redundancy-reduction) term (official 0.0051).
        batchnorm: standardise the embeddings over the batch before C (official: yes; the paper's
            small-init runs: no).
        scale: overall loss factor (the official code's ``scale-loss``; 1 in its final version).
        symmetric: use the symmetrised C (docs/theory.md §1); with lambd = 1 the loss is ||C - I||_F^2.
    """
    c = cross_correlation(z1, z2, batchnorm=batchnorm, symmetric=symmetric)
    on_diag = (torch.diagonal(c) - 1).pow(2).sum()
    off_diag = off_diagonal(c).pow(2).sum()
    return scale * (on_diag + lambd * off_diag)


def nt_xent_loss(z1: torch.Tensor, z2: torch.Tensor, temperature: float = 0.2) -> torch.Tensor:
    """SimCLR's NT-Xent (InfoNCE) loss, averaged over all 2N views.

    For view k with positive partner k': -log( exp(s_kk'/T) / sum_{j != k} exp(s_kj/T) ), where
    s is the cosine similarity and the sum runs over the other 2N - 1 views (2N - 2 negatives).
    """
    if z1.shape != z2.shape or z1.ndim != 2:
        raise ValueError(f"z1 and z2 must both be N x d, got {tuple(z1.shape)} and {tuple(z2.shape)}")
    n = z1.shape[0]
    z = F.normalize(torch.cat([z1, z2]), dim=1)
    logits = z @ z.T / temperature
    logits = logits.masked_fill(torch.eye(2 * n, dtype=torch.bool, device=z.device), float("-inf"))
    targets = torch.cat([torch.arange(n, 2 * n), torch.arange(0, n)]).to(z.device)
    return F.cross_entropy(logits, targets)


def vicreg_loss(z1: torch.Tensor, z2: torch.Tensor, sim_coeff: float = 25.0, std_coeff: float = 25.0,
                cov_coeff: float = 1.0, eps: float = 1e-4) -> torch.Tensor:
    """VICReg (official code): sim * MSE(z1, z2) + std * variance + cov * covariance terms.

    variance = mean_j relu(1 - sqrt(Var z1_j + eps)) / 2 + (same for z2) / 2 (unbiased variance);
    covariance = sum_{i != j} Cov(z1)_ij^2 / d + (same for z2), Cov with the N - 1 normalisation.
    """
    if z1.shape != z2.shape or z1.ndim != 2:
        raise ValueError(f"z1 and z2 must both be N x d, got {tuple(z1.shape)} and {tuple(z2.shape)}")
    n, d = z1.shape
    repr_loss = F.mse_loss(z1, z2)
    x = z1 - z1.mean(dim=0)
    y = z2 - z2.mean(dim=0)
    std_x = torch.sqrt(x.var(dim=0) + eps)
    std_y = torch.sqrt(y.var(dim=0) + eps)
    std_loss = torch.mean(F.relu(1 - std_x)) / 2 + torch.mean(F.relu(1 - std_y)) / 2
    cov_x = x.T @ x / (n - 1)
    cov_y = y.T @ y / (n - 1)
    cov_loss = off_diagonal(cov_x).pow(2).sum() / d + off_diagonal(cov_y).pow(2).sum() / d
    return sim_coeff * repr_loss + std_coeff * std_loss + cov_coeff * cov_loss


def byol_loss(p: torch.Tensor, z_target: torch.Tensor) -> torch.Tensor:
    """BYOL regression loss 2 - 2 cos(p_i, z_i), averaged over the N rows.

    ``p``: N x d predictions of the online branch; ``z_target``: N x d target embeddings (the caller
    passes them detached: the target network receives no gradient).
    """
    return (2 - 2 * F.cosine_similarity(p, z_target, dim=-1)).mean()


def ema_momentum(step: int, total_steps: int, base: float = 0.996) -> float:
    """BYOL's target momentum: tau = 1 - (1 - base) (cos(pi step / total) + 1) / 2 (base -> 1)."""
    frac = min(max(step / max(total_steps, 1), 0.0), 1.0)
    return 1 - (1 - base) * (math.cos(math.pi * frac) + 1) / 2


def update_correlation(corr: torch.Tensor, z: torch.Tensor, rho: float,
                       initialized: bool = True) -> torch.Tensor:
    """F_hat <- rho F_hat + (1 - rho) E[f f^T] over the rows f of ``z`` (N x d); returns d x d.

    With ``initialized=False`` the running estimate starts at the batch correlation itself.
    """
    batch = z.T @ z / z.shape[0]
    if not initialized:
        return batch
    return rho * corr + (1 - rho) * batch


def directpred_predictor(corr: torch.Tensor, eps: float = 0.1) -> torch.Tensor:
    """DirectPred: W_p = U diag(p) U^T, p_j = sqrt(s_j) + eps max_j s_j, F_hat = U diag(s) U^T.

    ``corr``: d x d symmetric F_hat. Negative eigenvalues (round-off) are clipped to 0. The
    result commutes with F_hat (same eigenvectors). Computed in float64 with torch.linalg.eigh.
    """
    c = corr.double()
    s, u = torch.linalg.eigh(0.5 * (c + c.T))
    s = s.clamp_min(0)
    p = s.sqrt() + eps * s.max()
    return ((u * p) @ u.T).to(corr.dtype)


def directcopy_predictor(corr: torch.Tensor, eps: float = 0.3) -> torch.Tensor:
    """DirectCopy: W_p = F_hat / ||F_hat||_F + eps I (no eigendecomposition)."""
    norm = torch.linalg.matrix_norm(corr).clamp_min(torch.finfo(corr.dtype).tiny)
    return corr / norm + eps * torch.eye(corr.shape[0], dtype=corr.dtype, device=corr.device)
