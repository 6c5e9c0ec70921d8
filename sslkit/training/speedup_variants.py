"""The speed-ups proposed in the paper's Appendix G (``docs/theory.md`` §12), as small pure functions.

The paper proposed them and never measured them; ``rules/speedups.smk`` does. Every one is
switched on per method through the method block's ``speedups:`` section of the config (default:
all off, in which case the losses and gradients are exactly the original ones).

G.1 -- preconditioning the gradient w.r.t. the embeddings (any method)
    F = [z1; z2] (2N x d), the embeddings of both views of the batch. The gradient that
    back-propagation passes into F is replaced by  grad_F L (F^T F + a I)^{-1}  (Eq. 52), which
    damps directions of large variance and amplifies flat ones. ``precondition_matrix`` builds the
    d x d matrix, ``attach_preconditioner`` installs it as autograd hooks on z1 and z2 (the loss
    value is untouched; only what flows back from F changes).

    Scale conventions (``relative``): the literal Eq. 52 uses F^T F, whose scale is that of the
    embeddings (1e-6 or smaller from small init), so ``a`` would have to be re-tuned per method and
    per moment of training. With ``relative=True`` (the default in the config) the second-moment
    matrix S = F^T F / 2N is divided by its largest eigenvalue s_max and the result is rescaled so
    that the top direction keeps its gradient:
        P = (1 + a) (S / s_max + a I)^{-1}     (gains: 1 along the top direction, up to (1 + a)/a
                                                along directions of vanishing variance)
    With ``relative=False``: P = (F^T F + a I)^{-1}, Eq. 52 verbatim. The speed-up experiment measures
    both forms as the variants ``precondition_relative`` and ``precondition_eq52`` (config
    ``speedups.variants``; docs/theory.md §12).

G.2 -- sharpening at zero (Barlow Twins)
    L = || g_sqrt(C) - I ||^2 with g_sqrt(lambda) = sign(lambda) |lambda|^{1/2} applied to the
    eigenvalues of the (symmetrised) cross-correlation C. Modewise the loss is (1 - |s_j|)^2
    (the paper's Fig. 9B), whose force away from the origin is Theta(1). We square the Frobenius
    norm (the appendix text writes ||.||_F; Fig. 9B's modewise loss is its square, and the square
    keeps the loss a sum over modes like the original ||C - I||_F^2).

G.3 -- wider minima (Barlow Twins)
    g_smooth(lambda) = min(lambda, 1 + eps (1 - lambda)) (eps = 0: min(lambda, 1)): a flat (eps = 0)
    or nearly flat basin above lambda = 1, so the grown modes tolerate a larger learning rate; and
    the quartic modewise loss sum_j (1 - lambda_j)^4 = || (C - I)^2 ||_F^2 = tr (C - I)^4 (power 4).

Spectral functions g(C) = U g(Lambda) U^T are differentiated with the Daleckii-Krein formula
(``SpectralFunction``): grad_C = U [K o (U^T G U)] U^T with K_ij = (g(l_i) - g(l_j)) / (l_i - l_j)
and K_ii = g'(l_i). When two eigenvalues are closer than ``degenerate_tol`` (relative to the
spectrum's scale), the divided difference is replaced by the derivative at their midpoint, so the
gradient stays finite at (nearly) degenerate eigenvalues -- where autograd through
``torch.linalg.eigh`` divides by l_i - l_j and returns inf/NaN. g_sqrt's derivative 1/(2 sqrt|l|)
is capped at 1/(2 sqrt(floor)) (``sqrt_floor``) so that exactly-zero eigenvalues stay finite.

How the transforms combine with the Barlow Twins weighting (``barlow_twins_spectral_loss``):
D = g(C) - I, M = D (power 2) or D @ D (power 4); loss = scale [sum_i M_ii^2 + lambda sum_{i!=j} M_ij^2].
With lambda = 1 this is ||g(C) - I||_F^2 or tr (g(C) - I)^4 -- the modewise losses above -- and
with g = identity, power 2 it is the original loss on the symmetrised C. For lambda != 1 (the
standard-init runs) it is the natural generalisation; the paper's Appendix G only discusses lambda = 1.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping

import torch

from sslkit.plan import SPEEDUP_DEFAULTS as DEFAULTS
from sslkit.plan import SPEEDUP_TRANSFORMS as TRANSFORMS
from sslkit.training import losses as L

__all__ = [
    "DEFAULTS",
    "TRANSFORMS",
    "g_sqrt",
    "g_sqrt_prime",
    "g_smooth",
    "g_smooth_prime",
    "spectral_function",
    "SpectralFunction",
    "transform_functions",
    "barlow_twins_spectral_loss",
    "modewise_loss",
    "precondition_matrix",
    "precondition_gradient",
    "attach_preconditioner",
]

# config: methods.<method>.speedups (every key, all off by default) lives in the torch-free sslkit.plan


# ---------------------------------------------------------------------------------------------
# eigenvalue functions
# ---------------------------------------------------------------------------------------------

def g_sqrt(lam: torch.Tensor) -> torch.Tensor:
    """G.2: sign(lambda) |lambda|^{1/2}, elementwise."""
    return torch.sign(lam) * lam.abs().sqrt()


def g_sqrt_prime(lam: torch.Tensor, floor: float = DEFAULTS["sqrt_floor"]) -> torch.Tensor:
    """Derivative of g_sqrt, 1 / (2 sqrt|lambda|), capped at 1 / (2 sqrt(floor)) near 0."""
    return 0.5 / lam.abs().clamp_min(floor).sqrt()


def g_smooth(lam: torch.Tensor, eps: float = 0.0) -> torch.Tensor:
    """G.3: min(lambda, 1 + eps (1 - lambda)); eps = 0 gives min(lambda, 1)."""
    return torch.minimum(lam, 1 + eps * (1 - lam))


def g_smooth_prime(lam: torch.Tensor, eps: float = 0.0) -> torch.Tensor:
    """Derivative of g_smooth: 1 below lambda = 1, -eps above (1 at exactly 1, the left derivative)."""
    return torch.where(lam <= 1, torch.ones_like(lam), torch.full_like(lam, -eps))


def transform_functions(name: str, cfg: Mapping | None = None) -> tuple[Callable, Callable] | None:
    """(g, g') of a transform name (``None`` for identity). ``cfg``: smooth_eps, sqrt_floor."""
    c = {**DEFAULTS, **(cfg or {})}
    if name == "identity":
        return None
    if name == "sqrt":
        return g_sqrt, lambda lam: g_sqrt_prime(lam, float(c["sqrt_floor"]))
    if name == "smooth":
        eps = float(c["smooth_eps"])
        return (lambda lam: g_smooth(lam, eps)), (lambda lam: g_smooth_prime(lam, eps))
    raise ValueError(f"unknown spectral transform {name!r}; expected one of {TRANSFORMS}")


# ---------------------------------------------------------------------------------------------
# g(C) with a stable backward
# ---------------------------------------------------------------------------------------------

class SpectralFunction(torch.autograd.Function):
    """g(C) = U g(Lambda) U^T for a symmetric d x d C, differentiated by the Daleckii-Krein formula."""

    @staticmethod
    def forward(ctx, c, g, g_prime, degenerate_tol):
        c64 = 0.5 * (c + c.T).double()
        lam, u = torch.linalg.eigh(c64)
        glam = g(lam)
        ctx.save_for_backward(lam, u, glam)
        ctx.g_prime = g_prime
        ctx.tol = float(degenerate_tol)
        return ((u * glam) @ u.T).to(c.dtype)

    @staticmethod
    def backward(ctx, grad_out):
        lam, u, glam = ctx.saved_tensors
        gp = ctx.g_prime
        dl = lam[:, None] - lam[None, :]
        close = dl.abs() <= ctx.tol * max(1.0, float(lam.abs().max()))
        safe = torch.where(close, torch.ones_like(dl), dl)
        k = torch.where(close, gp(0.5 * (lam[:, None] + lam[None, :])), (glam[:, None] - glam[None, :]) / safe)
        g = grad_out.double()
        gbar = u.T @ (0.5 * (g + g.T)) @ u
        grad_c = u @ (k * gbar) @ u.T
        return grad_c.to(grad_out.dtype), None, None, None


def spectral_function(c: torch.Tensor, g: Callable, g_prime: Callable,
                      degenerate_tol: float = DEFAULTS["degenerate_tol"]) -> torch.Tensor:
    """g applied to the eigenvalues of the symmetric part of ``c`` (d x d); stable gradient."""
    if c.ndim != 2 or c.shape[0] != c.shape[1]:
        raise ValueError(f"spectral_function needs a square matrix, got {tuple(c.shape)}")
    return SpectralFunction.apply(c, g, g_prime, degenerate_tol)


def modewise_loss(c: torch.Tensor, transform: str = "identity", power: int = 2,
                  cfg: Mapping | None = None) -> torch.Tensor:
    """Reference: sum_j (1 - g(lambda_j))^power over the eigenvalues of the symmetric part of C
    (no gradient path through eigh is intended; used in tests and plots)."""
    lam = torch.linalg.eigvalsh(0.5 * (c + c.T).double())
    fns = transform_functions(transform, cfg)
    glam = lam if fns is None else fns[0](lam)
    return ((1 - glam) ** power).sum()


def barlow_twins_spectral_loss(z1: torch.Tensor, z2: torch.Tensor, lambd: float = 1.0, batchnorm: bool = False,
                               scale: float = 1.0, transform: str = "identity", power: int = 2,
                               cfg: Mapping | None = None) -> torch.Tensor:
    """Barlow Twins with G.2/G.3 (module docstring): C symmetrised, g applied to its eigenvalues,
    M = (g(C) - I)^{power/2}, loss = scale [sum_i M_ii^2 + lambd sum_{i!=j} M_ij^2].

    z1, z2: N x d embeddings; ``cfg``: smooth_eps, sqrt_floor, degenerate_tol (DEFAULTS).
    """
    if power not in (2, 4):
        raise ValueError(f"power must be 2 or 4, got {power}")
    c = L.cross_correlation(z1, z2, batchnorm=batchnorm, symmetric=True)
    fns = transform_functions(transform, cfg)
    if fns is not None:
        tol = float({**DEFAULTS, **(cfg or {})}["degenerate_tol"])
        c = spectral_function(c, fns[0], fns[1], tol)
    eye = torch.eye(c.shape[0], dtype=c.dtype, device=c.device)
    m = c - eye
    if power == 4:
        m = m @ m
    return scale * (torch.diagonal(m).pow(2).sum() + lambd * L.off_diagonal(m).pow(2).sum())


# ---------------------------------------------------------------------------------------------
# G.1 preconditioning
# ---------------------------------------------------------------------------------------------

def precondition_matrix(f: torch.Tensor, alpha: float, relative: bool = True) -> torch.Tensor:
    """The d x d matrix P with grad_F <- grad_F P, from the 2N x d embeddings ``f`` (detached).

    relative=False: P = (F^T F + alpha I)^{-1} (Eq. 52). relative=True: S = F^T F / rows,
    P = (1 + alpha) (S / s_max + alpha I)^{-1} (module docstring). Computed in float64.
    """
    if alpha <= 0:
        raise ValueError(f"precondition alpha must be > 0, got {alpha}")
    f = f.detach().double()
    d = f.shape[1]
    eye = torch.eye(d, dtype=f.dtype, device=f.device)
    gram = f.T @ f
    if not relative:
        return torch.linalg.inv(gram + alpha * eye)
    s = gram / f.shape[0]
    top = float(torch.linalg.eigvalsh(0.5 * (s + s.T))[-1])
    if not top > 0:
        return eye
    return (1 + alpha) * torch.linalg.inv(s / top + alpha * eye)


def precondition_gradient(grad: torch.Tensor, p: torch.Tensor) -> torch.Tensor:
    """grad_F P for a gradient (rows x d) and the symmetric d x d ``p``; keeps grad's dtype."""
    return (grad.double() @ p).to(grad.dtype)


def attach_preconditioner(z1: torch.Tensor, z2: torch.Tensor, alpha: float, relative: bool = True) -> None:
    """Install G.1 on the N x d embeddings z1, z2 (F = [z1; z2]): hooks that right-multiply the
    gradient arriving at each of them by P = ``precondition_matrix(F, alpha, relative)``. No-op
    when the embeddings do not require gradients (evaluation), and when they are not finite (a
    diverged run: the loss is then non-finite too and the trainer stops with its own error,
    instead of an eigensolver failure here)."""
    if not (z1.requires_grad and z2.requires_grad):
        return
    f = torch.cat([z1.detach(), z2.detach()])
    if not bool(torch.isfinite(f).all()):
        return
    p = precondition_matrix(f, alpha, relative)
    z1.register_hook(lambda g: precondition_gradient(g, p))
    z2.register_hook(lambda g: precondition_gradient(g, p))
