"""Share: one LoRA subspace for many tasks (arXiv:2602.06043), written from the maths.

Notation, per adapted linear layer (``W`` is ``d_out x d_in``; see
``shared/design/SHARE.md``): task ``i`` has a LoRA ``B_i`` (``d_out x r``), ``A_i``
(``r x d_in``) and scale ``s_i``. Share keeps one orthonormal basis per side, ``beta``
(``d_out x k_beta``) and ``alpha`` (``d_in x k_alpha``), and per task two small
coefficient matrices ``eps_beta`` (``k_beta x p``) and ``eps_alpha`` (``k_alpha x p``):

    B_hat = beta @ eps_beta,   A_hat = (alpha @ eps_alpha).T,   dW = B_hat @ A_hat,
    forward  h = W x + B_hat (A_hat x).

Phase 1 (``phase1``): fold each scale into B (``LoraFactors.ingest``), stack
``[B_1 ... B_N]`` and ``[A_1^T ... A_N^T]``, optionally centre (then the mean column is
appended to the basis and re-orthonormalised), SVD in fp64, fix signs (largest-magnitude
entry of each column positive), keep ``k = min(k_max, k_EV(tau), numerical rank)``
directions, and give every task the optimal rank-p coefficients: the core
``M_i = beta^T B_i A_i alpha`` (``k_beta x k_alpha``) is truncated by SVD to
``U_p S_p V_p^T`` and split ``eps_beta = U_p S_p^1/2``, ``eps_alpha = V_p S_p^1/2``.

Phase 2 (``attach_phase2``): the target ``nn.Linear`` modules are wrapped
(``ShareLinear``); ``W``, the bases and every other task's coefficients are frozen; the
new task trains ``eps_beta``, ``eps_alpha`` and an optional temporary expansion of
``phi`` vectors per side (``beta_tmp``, ``alpha_tmp`` and their ``phi x p``
coefficients). Trainable parameters per module ``p(k_beta + k_alpha) + phi(d_in + d_out
+ 2p)``; stored after the merge ``p(k_beta + k_alpha)``.

Phase 3 (``merge``): every task's dW lies in ``span[beta, beta_tmp] x span[alpha,
alpha_tmp]``; with ``Q = orth[beta, beta_tmp]`` the SVD of the small matrix
``Q^T [B_hat_1 ... B_hat_t]`` gives ``beta' = Q U_k`` (same for alpha), and every task,
the new one with its FULL expanded factors, is re-projected (rank-p core as in Phase 1).
tau applies to Phase 1 only: the merge keeps ``k = min(k_max, rank)`` (see ``merge``).

Inference: ``export_task`` (a rank-p peft LoRA, ``lora_alpha = p`` so its scale is 1),
``average`` (average of the cores, i.e. of the dW, refactored to rank p'),
``routed_delta`` + ``apply_delta`` (``None`` = the base model, nothing touched; restore
puts back copies of the original tensors, so W is bit-identical).

What this fixes against the seed's attempt:

- the LoRA scale ``alpha/r`` (or ``alpha/sqrt(r)`` for rsLoRA) is folded into B on
  ingest and exports carry ``lora_alpha = rank``; the seed dropped it;
- rank p by the truncated SVD of the core, not by keeping the first p LoRA columns;
- ``k`` is capped by ``k_max`` (default 32, like the official scripts): the 60 %-only
  rule gave k_alpha ~ 174 on the flat spectrum of the A factors;
- centring no longer loses the mean direction (mean-augmented basis);
- both Phase-2 coefficient factors start small and random (zero/zero is a stationary
  point with exactly zero gradients);
- averaging averages the cores (gauge invariant), never the coefficients;
- the merge keeps the temporary expansion of the new task (the official code drops it);
- apply/restore of a delta restores saved copies instead of subtracting.

Two choices the spec leaves open, made here: (1) the merge stacks each task's
*canonical balanced* factors (``Q U S^1/2`` from the SVD of its core) rather than the
raw ``beta @ eps_beta``, so the merge depends only on the tasks' dW and is invariant
to any gauge ``(eps_beta G, eps_alpha G^-T)``; Phase 1 stacks the raw ingested B_i as
the spec says, and is therefore invariant to orthogonal gauges of the input LoRAs
(sign flips, rotations) but not to general ones (it is at full k). (2) with centring
and the mean column, the mean takes the place of the weakest centred direction when
``k`` would exceed ``k_max``, so ``k_max`` is always respected.

Defaults (``ShareConfig``): ``k_max = 32``, ``tau = 0.6``, ``p = 4``, ``phi = 2``,
``center = False``, ``seed = 0``; Phase 2 initialises the coefficients
``N(0, 0.01^2 / k)`` (``k`` = basis columns the factor multiplies, ``k + phi`` with the
expansion) and is meant for AdamW at lr 1e-3 to 5e-3, weight decay 0.01 to 0.1. All
Share maths runs in fp32 (SVDs and projections in fp64) whatever the model's dtype.
"""

from __future__ import annotations

import json
import math
import zlib
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
from torch import Tensor, nn

__all__ = [
    "LoraFactors", "ShareConfig", "ShareLayer", "ShareModel", "ExpandedFactors",
    "explained_variance", "choose_k", "phase1", "merge", "expanded_from_lora",
    "Phase2Adapter", "ShareLinear", "ShareHandle", "Phase2Handle", "attach_phase2", "attach_share",
    "trainable_parameter_count", "stored_parameter_count",
    "export_task", "average", "write_peft_adapter", "apply_delta", "routed_delta",
    "save_share", "load_share",
]

FORMAT = "pytest-sleepy/share"
FORMAT_VERSION = 1
_EPS32 = torch.finfo(torch.float32).eps


# -- inputs and configuration ------------------------------------------------------------


@dataclass(eq=False)
class LoraFactors:
    """One task's LoRA on one module: ``dW = scale * B @ A``.

    ``B`` is ``d_out x rank``, ``A`` is ``rank x d_in``; ``scale`` is ``alpha / rank``, or
    ``alpha / sqrt(rank)`` for rsLoRA.
    """

    B: Tensor
    A: Tensor
    alpha: float
    rank: int
    rslora: bool = False

    def __post_init__(self) -> None:
        if self.B.ndim != 2 or self.A.ndim != 2:
            raise ValueError(f"LoRA factors must be matrices, got B {tuple(self.B.shape)}, A {tuple(self.A.shape)}")
        if self.B.shape[1] != self.rank or self.A.shape[0] != self.rank:
            raise ValueError(
                f"rank {self.rank} does not match B {tuple(self.B.shape)} (d_out x r) and A {tuple(self.A.shape)} (r x d_in)"
            )
        if self.rank < 1:
            raise ValueError("a LoRA needs rank >= 1")

    @property
    def scale(self) -> float:
        return self.alpha / math.sqrt(self.rank) if self.rslora else self.alpha / self.rank

    @property
    def d_out(self) -> int:
        return int(self.B.shape[0])

    @property
    def d_in(self) -> int:
        return int(self.A.shape[1])

    def ingest(self) -> tuple[Tensor, Tensor]:
        """``(scale * B, A)`` as new fp32 tensors: the scale is folded into B."""
        B = self.B.detach().to(torch.float32) * self.scale
        A = self.A.detach().to(torch.float32).clone()
        return B, A

    def delta_w(self) -> Tensor:
        B, A = self.ingest()
        return B @ A


@dataclass(frozen=True)
class ShareConfig:
    """Share's knobs.

    k_max: most basis vectors per side (official scripts: a fixed 32).
    tau: explained-variance threshold; ``k = min(k_max, k_EV(tau), rank)``.
    p: pseudo-rank of every task's coefficients (the exported LoRA rank).
    phi: temporary expansion vectors per side in Phase 2 (0 = none).
    center: centre the stacked factors before the SVD (the paper's option).
    seed: seeds Phase 2's initialisation (per task and module).
    augment_mean: with ``center``, append the mean column to the basis (the fix). False
        reproduces plain centring, which loses the mean direction; kept only so the
        caveat can be demonstrated.
    init_std: Phase 2 coefficients start ``N(0, init_std^2 / k)``.
    """

    k_max: int = 32
    tau: float = 0.6
    p: int = 4
    phi: int = 2
    center: bool = False
    seed: int = 0
    augment_mean: bool = True
    init_std: float = 0.01

    def __post_init__(self) -> None:
        if self.k_max < 1:
            raise ValueError("k_max must be >= 1")
        if not 0.0 < self.tau <= 1.0:
            raise ValueError("tau must be in (0, 1]")
        if self.p < 1:
            raise ValueError("p must be >= 1")
        if self.phi < 0:
            raise ValueError("phi must be >= 0")
        if self.init_std <= 0:
            raise ValueError("init_std must be > 0 (zero/zero is a stationary point)")


# -- the shared model ---------------------------------------------------------------------


@dataclass(eq=False)
class ShareLayer:
    """One adapted module: orthonormal bases and every task's coefficients (fp32)."""

    beta: Tensor  # d_out x k_beta
    alpha: Tensor  # d_in x k_alpha
    eps_beta: dict[str, Tensor] = field(default_factory=dict)  # task -> k_beta x p
    eps_alpha: dict[str, Tensor] = field(default_factory=dict)  # task -> k_alpha x p

    @property
    def d_out(self) -> int:
        return int(self.beta.shape[0])

    @property
    def d_in(self) -> int:
        return int(self.alpha.shape[0])

    @property
    def k_beta(self) -> int:
        return int(self.beta.shape[1])

    @property
    def k_alpha(self) -> int:
        return int(self.alpha.shape[1])

    def B_hat(self, task: str) -> Tensor:
        """``beta @ eps_beta`` (``d_out x p``)."""
        return self.beta @ self.eps_beta[task]

    def A_hat(self, task: str) -> Tensor:
        """``(alpha @ eps_alpha)^T`` (``p x d_in``)."""
        return (self.alpha @ self.eps_alpha[task]).T

    def delta_w(self, task: str) -> Tensor:
        """``B_hat @ A_hat`` (``d_out x d_in``, fp32)."""
        return self.B_hat(task) @ self.A_hat(task)

    def core(self, task: str) -> Tensor:
        """``eps_beta @ eps_alpha^T`` (``k_beta x k_alpha``): dW in basis coordinates."""
        return self.eps_beta[task] @ self.eps_alpha[task].T

    def project(self, B: Tensor, A: Tensor, p: int) -> tuple[Tensor, Tensor]:
        """Optimal rank-p coefficients of ``dW = B @ A`` on this layer's bases (fp32)."""
        eps_b, eps_a = _factor_core(_core_of(_f64(self.beta), _f64(self.alpha), _f64(B), _f64(A)), p)
        return eps_b.float(), eps_a.float()


@dataclass(eq=False)
class ShareModel:
    """Module name -> ShareLayer, the task names (in the order they were added) and the config."""

    layers: dict[str, ShareLayer]
    tasks: list[str]
    config: ShareConfig

    def __post_init__(self) -> None:
        if len(set(self.tasks)) != len(self.tasks):
            raise ValueError(f"duplicate task names: {self.tasks}")
        for name, layer in self.layers.items():
            if set(layer.eps_beta) != set(self.tasks) or set(layer.eps_alpha) != set(self.tasks):
                raise ValueError(f"module {name}: coefficients for {sorted(layer.eps_beta)}, tasks are {self.tasks}")

    @property
    def modules(self) -> list[str]:
        return list(self.layers)

    def delta_w(self, task: str) -> dict[str, Tensor]:
        self._check_task(task)
        return {name: layer.delta_w(task) for name, layer in self.layers.items()}

    def parameter_count(self) -> dict[str, int]:
        """Stored numbers: ``bases`` (all beta and alpha), ``coefficients`` (all eps)."""
        bases = sum(layer.beta.numel() + layer.alpha.numel() for layer in self.layers.values())
        coefficients = sum(
            layer.eps_beta[t].numel() + layer.eps_alpha[t].numel() for layer in self.layers.values() for t in self.tasks
        )
        return {"bases": bases, "coefficients": coefficients, "total": bases + coefficients}

    def _check_task(self, task: str) -> None:
        if task not in self.tasks:
            raise KeyError(f"unknown Share task {task!r}; known: {self.tasks}")


@dataclass(eq=False)
class ExpandedFactors:
    """A new task's learned factors on one module, for the merge: ``B`` (``d_out x p``),
    ``A`` (``p x d_in``), both including the temporary expansion, and the expansion
    vectors ``beta_tmp`` (``d_out x phi``) and ``alpha_tmp`` (``d_in x phi``; ``phi``
    may be 0)."""

    B: Tensor
    A: Tensor
    beta_tmp: Tensor
    alpha_tmp: Tensor

    def delta_w(self) -> Tensor:
        return self.B.float() @ self.A.float()


# -- numerics -----------------------------------------------------------------------------


def _f64(t: Tensor) -> Tensor:
    return t.detach().to(device="cpu", dtype=torch.float64)


def _fix_signs(U: Tensor, V: Tensor | None = None) -> tuple[Tensor, Tensor | None]:
    """Flip columns so that each column's largest-magnitude entry (first on ties) is
    positive; ``V``'s columns get the same flips (a singular pair stays a pair).
    Works on batches (``... x d x k``)."""
    if U.shape[-1] == 0:
        return U, V
    index = U.abs().argmax(dim=-2, keepdim=True)
    signs = torch.sign(U.gather(-2, index))
    signs = torch.where(signs == 0, torch.ones_like(signs), signs)
    return U * signs, (V * signs if V is not None else None)


def _numerical_rank(sigma: Tensor, shape: Sequence[int]) -> int:
    """Singular values above ``max(shape) * eps(fp32) * sigma_max``: the data is fp32."""
    if sigma.numel() == 0 or float(sigma[0]) <= 0.0:
        return 0
    tolerance = max(shape) * _EPS32 * float(sigma[0])
    return int((sigma > tolerance).sum())


def explained_variance(sigma: Tensor) -> Tensor:
    """Cumulative ``sum_{j<=k} sigma_j^2 / sum sigma_j^2`` for k = 1..len (fp64,
    non-decreasing, last entry exactly 1; all zeros when every sigma is 0)."""
    s2 = sigma.detach().to(torch.float64) ** 2
    total = s2.sum()
    if s2.numel() == 0 or float(total) == 0.0:
        return torch.zeros_like(s2)
    ev = (torch.cumsum(s2, 0) / total).clamp(max=1.0)
    ev[-1] = 1.0
    return ev


def choose_k(sigma: Tensor, tau: float, k_max: int, rank: int | None = None) -> int:
    """``min(k_max, k_EV(tau), rank)``: ``k_EV`` is the smallest k whose explained
    variance reaches ``tau``; ``rank`` defaults to the number of non-zero sigmas."""
    if not 0.0 < tau <= 1.0:
        raise ValueError("tau must be in (0, 1]")
    s = sigma.detach().to(torch.float64)
    if rank is None:
        rank = int((s > 0).sum())
    if rank <= 0 or k_max <= 0:
        return 0
    ev = explained_variance(s)
    hits = torch.nonzero(ev >= tau - 1e-12)
    k_ev = int(hits[0]) + 1 if hits.numel() else int(s.numel())
    return min(k_max, k_ev, rank)


def _subspace(X: Tensor, config: ShareConfig) -> Tensor:
    """Orthonormal columns (fp64, signs not yet fixed) spanning the chosen directions of
    the column space of ``X`` (``d x n``), per the config's centring, tau and k_max."""
    d, n = X.shape
    if n == 0:
        return X.new_zeros((d, 0))
    mean = X.mean(dim=1, keepdim=True) if config.center else None
    centred = X - mean if mean is not None else X
    U, S, _ = torch.linalg.svd(centred, full_matrices=False)
    k = choose_k(S, config.tau, config.k_max, rank=_numerical_rank(S, X.shape))
    U = U[:, :k]
    if mean is None or not config.augment_mean:
        return U
    mean_norm = float(mean.norm())
    if mean_norm <= max(d, n) * _EPS32 * float(X.norm()):
        return U  # no mean to lose

    def residual(basis: Tensor) -> Tensor:
        r = mean - basis @ (basis.T @ mean)
        return r - basis @ (basis.T @ r)  # twice is enough (Kahan)

    if float(residual(U).norm()) <= max(d, n) * _EPS32 * mean_norm:
        return U  # the mean is already in the span
    if U.shape[1] >= config.k_max:
        U = U[:, : config.k_max - 1]  # the mean replaces the weakest centred direction
    r = residual(U)
    return torch.cat([U, r / r.norm()], dim=1)


def _leading_directions(X: Tensor, k_max: int) -> Tensor:
    """The top ``min(k_max, numerical rank)`` left singular vectors of ``X`` (fp64):
    the merge's basis, with no explained-variance cut (see ``merge``)."""
    if X.shape[1] == 0:
        return X.new_zeros((X.shape[0], 0))
    U, S, _ = torch.linalg.svd(X, full_matrices=False)
    return U[:, : min(k_max, _numerical_rank(S, X.shape))]


def _core_of(beta: Tensor, alpha: Tensor, B: Tensor, A: Tensor) -> Tensor:
    """``(beta^T B)(alpha^T A^T)^T`` = ``beta^T B A alpha`` (fp64)."""
    return (beta.T @ B) @ (alpha.T @ A.T).T


def _factor_core(M: Tensor, p: int) -> tuple[Tensor, Tensor]:
    """Best rank-p split of ``M``: ``(U_p S_p^1/2, V_p S_p^1/2)``, signs fixed, zero
    columns when ``M`` has fewer than p singular values (fp64). ``M`` may be a batch
    (``... x k_beta x k_alpha``): one SVD call for all tasks of a module."""
    *batch, kb, ka = M.shape
    U, S, Vh = torch.linalg.svd(M, full_matrices=False)
    q = min(p, int(S.shape[-1]))
    Uq, Vq = _fix_signs(U[..., :q], Vh[..., :q, :].mT)
    root = S[..., :q].clamp(min=0).sqrt().unsqueeze(-2)
    eps_b, eps_a = M.new_zeros((*batch, kb, p)), M.new_zeros((*batch, ka, p))
    eps_b[..., :q] = Uq * root
    eps_a[..., :q] = Vq * root
    return eps_b, eps_a


def _balanced(M: Tensor) -> list[tuple[Tensor, Tensor]]:
    """For each matrix of the batch ``M`` (``n x a x b``), all its numerically non-zero
    components as ``(U S^1/2, V S^1/2)`` (fp64)."""
    U, S, Vh = torch.linalg.svd(M, full_matrices=False)
    U, V = _fix_signs(U, Vh.mT)
    out = []
    for i in range(M.shape[0]):
        q = _numerical_rank(S[i], M.shape[-2:])
        root = S[i, :q].sqrt()
        out.append((U[i, :, :q] * root, V[i, :, :q] * root))
    return out


def _extend_basis(basis: Tensor, extra: Tensor | None) -> Tensor:
    """``orth[basis, extra]`` with ``basis`` kept as its first columns (a rank-revealing
    QR of ``[basis, extra]`` when ``basis`` is orthonormal), fp64."""
    if extra is None or extra.shape[1] == 0:
        return basis
    extra = _f64(extra)
    r = extra - basis @ (basis.T @ extra)
    r = r - basis @ (basis.T @ r)
    U, S, _ = torch.linalg.svd(r, full_matrices=False)
    scale = float(torch.linalg.matrix_norm(extra, ord=2)) if extra.numel() else 0.0
    keep = int((S > max(r.shape) * _EPS32 * scale).sum()) if scale > 0 else 0
    return torch.cat([basis, U[:, :keep]], dim=1)


def _orth_complement_columns(basis: Tensor, X: Tensor) -> Tensor:
    """Orthonormal columns spanning the part of ``X``'s columns outside ``basis`` (fp32)."""
    extended = _extend_basis(_f64(basis), X)
    return extended[:, basis.shape[1]:].float()


# -- Phase 1 ------------------------------------------------------------------------------


def phase1(adapters: Mapping[str, Mapping[str, LoraFactors]], config: ShareConfig | None = None) -> ShareModel:
    """Share bases and coefficients from N existing adapters (task -> module -> LoRA).

    Every task must adapt the same modules with matching shapes. Inputs are not modified.
    """
    config = config or ShareConfig()
    tasks = list(adapters)
    if not tasks:
        raise ValueError("phase1 needs at least one adapter")
    modules = list(adapters[tasks[0]])
    for task in tasks:
        if set(adapters[task]) != set(modules):
            raise ValueError(f"task {task!r} adapts {sorted(adapters[task])}, task {tasks[0]!r} adapts {sorted(modules)}")
    layers: dict[str, ShareLayer] = {}
    for name in modules:
        ingested = [adapters[task][name].ingest() for task in tasks]
        d_out, d_in = ingested[0][0].shape[0], ingested[0][1].shape[1]
        for task, (B, A) in zip(tasks, ingested):
            if B.shape[0] != d_out or A.shape[1] != d_in:
                raise ValueError(f"module {name}: task {task!r} is {B.shape[0]}x{A.shape[1]}, expected {d_out}x{d_in}")
        stack_b = torch.cat([_f64(B) for B, _ in ingested], dim=1)  # d_out x N r
        stack_a = torch.cat([_f64(A).T for _, A in ingested], dim=1)  # d_in x N r
        beta = _fix_signs(_subspace(stack_b, config))[0].float().contiguous()
        alpha = _fix_signs(_subspace(stack_a, config))[0].float().contiguous()
        layer = ShareLayer(beta, alpha)
        beta64, alpha64 = _f64(beta), _f64(alpha)
        cores = torch.stack([_core_of(beta64, alpha64, _f64(B), _f64(A)) for B, A in ingested])
        eps_b, eps_a = _factor_core(cores, config.p)  # one batched SVD for all tasks
        for i, task in enumerate(tasks):
            layer.eps_beta[task], layer.eps_alpha[task] = eps_b[i].float(), eps_a[i].float()
        layers[name] = layer
    return ShareModel(layers, tasks, config)


# -- Phase 3 ------------------------------------------------------------------------------


def merge(
    share: ShareModel, task: str, expanded: Mapping[str, ExpandedFactors], config: ShareConfig | None = None
) -> ShareModel:
    """A new ShareModel with ``task`` merged in (``share`` is not modified).

    Per module: ``Q_beta = orth[beta, beta_tmp]``, every task's dW written in Q
    coordinates (the new task's from its full expanded factors), each task's canonical
    balanced B-factor stacked, ``beta' = Q_beta U_k`` from the SVD of that small stack,
    same for alpha, then every task re-projected to rank p. ``config`` defaults to the
    share's.

    ``k = min(k_max, rank of the stack)``: no tau and no centring here. The factors are
    already truncated (tau chose Phase 1's directions); cutting 1 - tau of their energy
    again at every merge would erase the earlier tasks a little more each time. So
    while the stack's rank fits under ``k_max`` the merge is lossless for every earlier
    task. When it does not, the top ``k_max`` directions are kept and each task ``i``
    loses at most ``||dW_i - dW_i'||_F <= sqrt(||dW_i||_2) (t_beta + t_alpha)``, where
    ``t`` is the root of the energy beyond ``k_max`` of the stacked balanced factors
    ``[F_1 ... F_t]`` (``[G_1 ... G_t]``), ``F_i G_i^T = dW_i``, ``||F_i||_2 = ||G_i||_2 =
    sqrt(||dW_i||_2)``: projecting both sides costs ``||(I - P)F_i||_F ||G_i||_2 +
    ||F_i||_2 ||(I - P)G_i||_F``, and the projected dW still has rank p, so the rank-p
    re-projection adds nothing.
    """
    config = config or share.config
    if task in share.tasks:
        raise ValueError(f"task {task!r} is already in the Share model")
    if set(expanded) != set(share.layers):
        raise ValueError(f"expanded factors for {sorted(expanded)}, the Share model has {sorted(share.layers)}")
    tasks = [*share.tasks, task]
    layers: dict[str, ShareLayer] = {}
    for name, layer in share.layers.items():
        new = expanded[name]
        if new.B.shape[0] != layer.d_out or new.A.shape[1] != layer.d_in:
            raise ValueError(f"module {name}: new task is {new.B.shape[0]}x{new.A.shape[1]}, layer is {layer.d_out}x{layer.d_in}")
        beta, alpha = _f64(layer.beta), _f64(layer.alpha)
        q_beta, q_alpha = _extend_basis(beta, new.beta_tmp), _extend_basis(alpha, new.alpha_tmp)
        to_qb, to_qa = q_beta.T @ beta, q_alpha.T @ alpha
        cores: dict[str, Tensor] = {
            t: to_qb @ _f64(layer.eps_beta[t]) @ (to_qa @ _f64(layer.eps_alpha[t])).T for t in share.tasks
        }
        cores[task] = _core_of(q_beta, q_alpha, _f64(new.B), _f64(new.A))
        factors = _balanced(torch.stack(list(cores.values())))
        u_beta = _leading_directions(torch.cat([f[0] for f in factors], dim=1), config.k_max)
        u_alpha = _leading_directions(torch.cat([f[1] for f in factors], dim=1), config.k_max)
        new_beta = _fix_signs(q_beta @ u_beta)[0].float().contiguous()
        new_alpha = _fix_signs(q_alpha @ u_alpha)[0].float().contiguous()
        back_b, back_a = _f64(new_beta).T @ q_beta, _f64(new_alpha).T @ q_alpha
        merged = ShareLayer(new_beta, new_alpha)
        eps_b, eps_a = _factor_core(back_b @ torch.stack(list(cores.values())) @ back_a.T, config.p)
        for i, t in enumerate(cores):
            merged.eps_beta[t], merged.eps_alpha[t] = eps_b[i].float(), eps_a[i].float()
        layers[name] = merged
    return ShareModel(layers, tasks, config)


def expanded_from_lora(share: ShareModel, factors: Mapping[str, LoraFactors]) -> dict[str, ExpandedFactors]:
    """An existing LoRA as a new task's expanded factors: the expansion vectors span the
    part of its (scaled) B and A outside the current bases, so the merge loses nothing
    of it at full k."""
    out: dict[str, ExpandedFactors] = {}
    for name, layer in share.layers.items():
        B, A = factors[name].ingest()
        out[name] = ExpandedFactors(B, A, _orth_complement_columns(layer.beta, B), _orth_complement_columns(layer.alpha, A.T))
    return out


# -- Phase 2 ------------------------------------------------------------------------------


def trainable_parameter_count(d_in: int, d_out: int, k_beta: int, k_alpha: int, p: int, phi: int) -> int:
    """Phase 2's trainable numbers per module: ``p(k_beta + k_alpha) + phi(d_in + d_out + 2p)``
    (the two coefficient factors; the expansion vectors and their coefficients)."""
    return p * (k_beta + k_alpha) + phi * (d_in + d_out + 2 * p)


def stored_parameter_count(k_beta: int, k_alpha: int, p: int) -> int:
    """A task's stored numbers per module after the merge: ``p(k_beta + k_alpha)``."""
    return p * (k_beta + k_alpha)


def _module_seed(seed: int, task: str, module: str) -> int:
    return (seed * 1_000_003 + zlib.crc32(f"{task}\0{module}".encode())) % (2**63 - 1)


class Phase2Adapter(nn.Module):
    """One module's Share delta: frozen bases (buffers) and the task's coefficients,
    plus an optional temporary expansion. ``delta(x) = B_hat (A_hat x)`` in fp32.

    Trainable (``trainable=True``): ``eps_beta`` (k_beta x p), ``eps_alpha`` (k_alpha x p)
    and, when phi > 0, ``beta_tmp`` (d_out x phi), ``alpha_tmp`` (d_in x phi),
    ``eps_beta_tmp`` and ``eps_alpha_tmp`` (phi x p).
    """

    def __init__(
        self,
        beta: Tensor,
        alpha: Tensor,
        eps_beta: Tensor,
        eps_alpha: Tensor,
        beta_tmp: Tensor | None = None,
        alpha_tmp: Tensor | None = None,
        eps_beta_tmp: Tensor | None = None,
        eps_alpha_tmp: Tensor | None = None,
        *,
        trainable: bool = True,
    ) -> None:
        super().__init__()
        self.register_buffer("beta", beta.detach().float().clone(), persistent=False)
        self.register_buffer("alpha", alpha.detach().float().clone(), persistent=False)

        def parameter(t: Tensor | None) -> nn.Parameter | None:
            return None if t is None else nn.Parameter(t.detach().float().clone(), requires_grad=trainable)

        self.eps_beta = parameter(eps_beta)
        self.eps_alpha = parameter(eps_alpha)
        expansion = (beta_tmp, alpha_tmp, eps_beta_tmp, eps_alpha_tmp)
        if any(t is not None for t in expansion) and any(t is None for t in expansion):
            raise ValueError("the temporary expansion needs all four tensors or none")
        self.beta_tmp = parameter(beta_tmp)
        self.alpha_tmp = parameter(alpha_tmp)
        self.eps_beta_tmp = parameter(eps_beta_tmp)
        self.eps_alpha_tmp = parameter(eps_alpha_tmp)

    @classmethod
    def new_task(
        cls,
        layer: ShareLayer,
        config: ShareConfig,
        generator: torch.Generator,
        *,
        warm_start: Tensor | tuple[Tensor, Tensor] | None = None,
        zero_init: bool = False,
    ) -> Phase2Adapter:
        """Fresh trainable coefficients on ``layer``'s bases: both factors
        ``N(0, init_std^2 / k)`` (k = the basis columns they multiply, expansion
        included); ``warm_start=(eps_beta, eps_alpha)`` copies a previous task's instead.
        The expansion vectors start as random unit directions orthogonal to the basis.
        ``zero_init`` (both factors zero) exists only to show the stationary point."""
        p, phi = config.p, config.phi
        kb, ka = layer.k_beta + phi, layer.k_alpha + phi

        def normal(rows: int, k: int) -> Tensor:
            if zero_init:
                return torch.zeros(rows, p)
            return torch.randn(rows, p, generator=generator) * (config.init_std / math.sqrt(max(k, 1)))

        eps_beta, eps_alpha = normal(layer.k_beta, kb), normal(layer.k_alpha, ka)
        if warm_start is not None:
            eps_beta, eps_alpha = (t.detach().float().clone() for t in warm_start)
        expansion: tuple[Tensor | None, ...] = (None, None, None, None)
        if phi > 0:
            expansion = (
                _random_directions(layer.beta, phi, generator),
                _random_directions(layer.alpha, phi, generator),
                normal(phi, kb),
                normal(phi, ka),
            )
        return cls(layer.beta, layer.alpha, eps_beta, eps_alpha, *expansion, trainable=True)

    @classmethod
    def from_task(cls, layer: ShareLayer, task: str) -> Phase2Adapter:
        """A frozen adapter applying a stored task (the Share forward, for inference)."""
        return cls(layer.beta, layer.alpha, layer.eps_beta[task], layer.eps_alpha[task], trainable=False)

    def _a_columns(self) -> Tensor:
        """``A_hat^T`` = ``[alpha, alpha_tmp] [eps_alpha; eps_alpha_tmp]`` (d_in x p)."""
        a = self.alpha @ self.eps_alpha
        if self.alpha_tmp is not None:
            a = a + self.alpha_tmp @ self.eps_alpha_tmp
        return a

    def B_hat(self) -> Tensor:
        """``[beta, beta_tmp] [eps_beta; eps_beta_tmp]`` (d_out x p)."""
        b = self.beta @ self.eps_beta
        if self.beta_tmp is not None:
            b = b + self.beta_tmp @ self.eps_beta_tmp
        return b

    def A_hat(self) -> Tensor:
        return self._a_columns().T

    def delta(self, x: Tensor) -> Tensor:
        """``B_hat (A_hat x)`` for inputs ``(..., d_in)``, computed in fp32."""
        return (x.to(torch.float32) @ self._a_columns()) @ self.B_hat().T

    def trainable_tensors(self) -> list[nn.Parameter]:
        names = ("eps_beta", "eps_alpha", "beta_tmp", "alpha_tmp", "eps_beta_tmp", "eps_alpha_tmp")
        return [t for t in (getattr(self, n) for n in names) if t is not None and t.requires_grad]

    def expanded(self) -> ExpandedFactors:
        """The learned factors (expansion included), detached fp32 copies, for ``merge``."""
        with torch.no_grad():
            d_out, d_in = self.beta.shape[0], self.alpha.shape[0]
            beta_tmp = self.beta_tmp.detach().clone() if self.beta_tmp is not None else self.beta.new_zeros((d_out, 0))
            alpha_tmp = self.alpha_tmp.detach().clone() if self.alpha_tmp is not None else self.alpha.new_zeros((d_in, 0))
            return ExpandedFactors(self.B_hat().detach().cpu(), self.A_hat().detach().cpu(), beta_tmp.cpu(), alpha_tmp.cpu())


def _random_directions(basis: Tensor, count: int, generator: torch.Generator) -> Tensor:
    """``count`` random orthonormal columns orthogonal to ``basis`` (plain random unit
    columns when the complement is too small)."""
    d = basis.shape[0]
    g = torch.randn(d, count, generator=generator, dtype=torch.float64)
    if d - basis.shape[1] >= count:
        b = _f64(basis)
        g = g - b @ (b.T @ g)
        g = g - b @ (b.T @ g)
        q, _ = torch.linalg.qr(g)
        return _fix_signs(q)[0].float()
    return (g / g.norm(dim=0, keepdim=True)).float()


class ShareLinear(nn.Module):
    """An ``nn.Linear`` (kept as ``.base``, untouched) plus a Share delta:
    ``forward(x) = base(x) + B_hat (A_hat x)``; the delta is computed in fp32 and cast to
    the base output's dtype."""

    def __init__(self, base: nn.Linear, adapter: Phase2Adapter) -> None:
        super().__init__()
        self.base = base
        self.adapter = adapter

    @property
    def weight(self) -> Tensor:
        return self.base.weight

    @property
    def bias(self) -> Tensor | None:
        return self.base.bias

    @property
    def in_features(self) -> int:
        return self.base.in_features

    @property
    def out_features(self) -> int:
        return self.base.out_features

    def forward(self, x: Tensor) -> Tensor:
        out = self.base(x)
        return out + self.adapter.delta(x).to(out.dtype)


class ShareHandle:
    """Share modules attached to a model; ``detach()`` (or leaving the ``with`` block)
    puts the original module objects back and restores ``requires_grad`` flags."""

    def __init__(self, model: nn.Module, task: str, adapters: dict[str, Phase2Adapter], freeze: bool) -> None:
        self.model = model
        self.task = task
        self.adapters = adapters
        self._originals: list[tuple[nn.Module, str, nn.Linear]] = []
        self._flags: list[tuple[nn.Parameter, bool]] = []
        if freeze:
            for param in model.parameters():
                self._flags.append((param, param.requires_grad))
                param.requires_grad_(False)
        for name, adapter in adapters.items():
            parent_name, _, child = name.rpartition(".")
            parent = model.get_submodule(parent_name) if parent_name else model
            base = getattr(parent, child)
            adapter.to(base.weight.device)
            setattr(parent, child, ShareLinear(base, adapter))
            self._originals.append((parent, child, base))
        self.attached = True

    def detach(self) -> None:
        if not self.attached:
            return
        for parent, child, base in reversed(self._originals):
            setattr(parent, child, base)
        for param, flag in self._flags:
            param.requires_grad_(flag)
        self._originals.clear()
        self._flags.clear()
        self.attached = False

    def __enter__(self) -> ShareHandle:
        return self

    def __exit__(self, *exc: object) -> None:
        self.detach()


class Phase2Handle(ShareHandle):
    """Phase 2 on a model: only the new task's coefficients (and expansion) train."""

    def parameters(self) -> list[nn.Parameter]:
        """Exactly the trainable tensors, module by module, in a fixed order."""
        return [t for adapter in self.adapters.values() for t in adapter.trainable_tensors()]

    def named_parameters(self) -> Iterator[tuple[str, nn.Parameter]]:
        for name, adapter in self.adapters.items():
            for pname, param in adapter.named_parameters():
                if param.requires_grad:
                    yield f"{name}.{pname}", param

    def trainable_parameter_count(self) -> int:
        return sum(t.numel() for t in self.parameters())

    def expanded(self) -> dict[str, ExpandedFactors]:
        """Per module, the learned factors (expansion included) for ``merge``."""
        return {name: adapter.expanded() for name, adapter in self.adapters.items()}


def _check_targets(model: nn.Module, share: ShareModel) -> None:
    for name, layer in share.layers.items():
        try:
            module = model.get_submodule(name)
        except AttributeError as error:
            raise ValueError(f"the model has no module {name!r}") from error
        if isinstance(module, ShareLinear):
            raise ValueError(f"module {name!r} already carries a Share adapter; detach it first")
        if not isinstance(module, nn.Linear):
            raise ValueError(f"module {name!r} is a {type(module).__name__}, not an nn.Linear")
        if tuple(module.weight.shape) != (layer.d_out, layer.d_in):
            raise ValueError(f"module {name!r} is {tuple(module.weight.shape)}, the Share layer is {(layer.d_out, layer.d_in)}")


def attach_phase2(
    model: nn.Module,
    share: ShareModel,
    task: str,
    config: ShareConfig | None = None,
    *,
    warm_start: str | None = None,
    zero_init: bool = False,
) -> Phase2Handle:
    """Wrap every Share module of ``model`` for training the new task ``task``.

    Freezes all of the model's parameters (restored on ``detach``); the bases are copied
    into the wrappers, so nothing in ``share`` can change. ``warm_start`` names an
    existing task whose coefficients start the new ones. Initialisation is seeded by
    ``config.seed``, the task and the module name.
    """
    config = config or share.config
    if config.p != share.config.p:
        raise ValueError(f"p={config.p} differs from the Share model's p={share.config.p}")
    if task in share.tasks:
        raise ValueError(f"task {task!r} is already in the Share model")
    if warm_start is not None:
        share._check_task(warm_start)
    _check_targets(model, share)
    adapters = {}
    for name, layer in share.layers.items():
        generator = torch.Generator().manual_seed(_module_seed(config.seed, task, name))
        start = (layer.eps_beta[warm_start], layer.eps_alpha[warm_start]) if warm_start is not None else None
        adapters[name] = Phase2Adapter.new_task(layer, config, generator, warm_start=start, zero_init=zero_init)
    return Phase2Handle(model, task, adapters, freeze=True)


def attach_share(model: nn.Module, share: ShareModel, task: str) -> ShareHandle:
    """Wrap every Share module of ``model`` with task ``task``'s frozen delta (the Share
    forward ``W x + B_hat (A_hat x)``); the model's own flags are left alone."""
    share._check_task(task)
    _check_targets(model, share)
    adapters = {name: Phase2Adapter.from_task(layer, task) for name, layer in share.layers.items()}
    return ShareHandle(model, task, adapters, freeze=False)


# -- inference ----------------------------------------------------------------------------


def _refactor(beta: Tensor, alpha: Tensor, core: Tensor, rank: int) -> tuple[Tensor, Tensor]:
    eps_b, eps_a = _factor_core(core, rank)
    B = (_f64(beta) @ eps_b).float().contiguous()
    A = (_f64(alpha) @ eps_a).T.float().contiguous()
    return B, A


def export_task(share: ShareModel, task: str) -> dict[str, tuple[Tensor, Tensor]]:
    """Task ``task`` as a rank-p LoRA per module, ``(B, A)`` with ``B @ A = dW`` (write it
    with ``lora_alpha = p``: scale 1). The factors are canonical (balanced SVD split of
    the core), so they do not depend on the coefficients' gauge."""
    share._check_task(task)
    p = share.config.p
    return {
        name: _refactor(layer.beta, layer.alpha, _f64(layer.eps_beta[task]) @ _f64(layer.eps_alpha[task]).T, p)
        for name, layer in share.layers.items()
    }


def average(share: ShareModel, p_prime: int, tasks: Sequence[str] | None = None) -> dict[str, tuple[Tensor, Tensor]]:
    """The mean dW of ``tasks`` (default all) as a rank-``p_prime`` LoRA per module:
    the cores ``eps_beta eps_alpha^T`` are averaged (gauge invariant) and refactored.
    Averaging the coefficients themselves would be wrong."""
    tasks = list(tasks) if tasks is not None else list(share.tasks)
    if not tasks:
        raise ValueError("nothing to average")
    if p_prime < 1:
        raise ValueError("p_prime must be >= 1")
    for task in tasks:
        share._check_task(task)
    out = {}
    for name, layer in share.layers.items():
        mean = sum(_f64(layer.eps_beta[t]) @ _f64(layer.eps_alpha[t]).T for t in tasks) / len(tasks)
        out[name] = _refactor(layer.beta, layer.alpha, mean, p_prime)
    return out


def write_peft_adapter(
    factors: Mapping[str, tuple[Tensor, Tensor]],
    out_dir: str | Path,
    *,
    base_model: str,
    rank: int,
    alpha: float,
    task_type: str = "CAUSAL_LM",
) -> Path:
    """Write a peft LoRA directory: ``adapter_config.json`` and
    ``adapter_model.safetensors`` (keys ``base_model.model.<module>.lora_A.weight``
    (``rank x d_in``) and ``...lora_B.weight`` (``d_out x rank``), fp32). Target modules
    are the full module names, so exactly these modules get the adapter."""
    from safetensors.torch import save_file

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    tensors: dict[str, Tensor] = {}
    for name, (B, A) in factors.items():
        if B.ndim != 2 or A.ndim != 2 or B.shape[1] != rank or A.shape[0] != rank:
            raise ValueError(f"module {name}: B {tuple(B.shape)} and A {tuple(A.shape)} are not rank {rank}")
        tensors[f"base_model.model.{name}.lora_A.weight"] = A.detach().to("cpu", torch.float32).contiguous().clone()
        tensors[f"base_model.model.{name}.lora_B.weight"] = B.detach().to("cpu", torch.float32).contiguous().clone()
    config = {
        "peft_type": "LORA",
        "task_type": task_type,
        "base_model_name_or_path": base_model,
        "r": int(rank),
        "lora_alpha": alpha,
        "target_modules": sorted(factors),
        "lora_dropout": 0.0,
        "bias": "none",
        "fan_in_fan_out": False,
        "use_rslora": False,
        "use_dora": False,
        "init_lora_weights": True,
        "inference_mode": True,
        "modules_to_save": None,
        "rank_pattern": {},
        "alpha_pattern": {},
    }
    (out / "adapter_config.json").write_text(json.dumps(config, indent=2, sort_keys=True) + "\n", encoding="utf-8")
    save_file(tensors, str(out / "adapter_model.safetensors"))
    return out


def apply_delta(model: nn.Module, deltas: Mapping[str, Tensor]) -> Callable[[], None]:
    """Add ``deltas[name]`` to ``model.<name>.weight`` in place (in fp32, then cast to
    the weight's dtype) and return ``restore``, which copies the saved original tensors
    back: the weights are bit-identical afterwards (nothing is subtracted)."""
    saved: list[tuple[Tensor, Tensor]] = []

    def restore() -> None:
        with torch.no_grad():
            while saved:
                weight, original = saved.pop()
                weight.copy_(original)

    try:
        with torch.no_grad():
            for name, delta in deltas.items():
                weight = model.get_submodule(name).weight
                if tuple(weight.shape) != tuple(delta.shape):
                    raise ValueError(f"module {name}: weight {tuple(weight.shape)}, delta {tuple(delta.shape)}")
                original = weight.detach().clone()
                saved.append((weight, original))
                updated = original.to(torch.float32) + delta.detach().to(device=weight.device, dtype=torch.float32)
                weight.copy_(updated.to(weight.dtype))
    except BaseException:
        restore()
        raise
    return restore


def routed_delta(share: ShareModel, task: str | None) -> dict[str, Tensor] | None:
    """The router's decision as weight deltas: ``None`` (no route) -> ``None``, meaning
    the base model with nothing applied; a task -> that task's dW per module (fp32)."""
    if task is None:
        return None
    return share.delta_w(task)


# -- persistence --------------------------------------------------------------------------


def save_share(share: ShareModel, directory: str | Path) -> Path:
    """``share.json`` (config, tasks, modules), ``bases.safetensors`` (``<module>/beta``,
    ``<module>/alpha``) and ``coefficients.safetensors`` (``<module>/<task index>/eps_beta``
    ...), all fp32; the same model always gives the same bytes."""
    from safetensors.torch import save_file

    out = Path(directory)
    out.mkdir(parents=True, exist_ok=True)
    bases: dict[str, Tensor] = {}
    coefficients: dict[str, Tensor] = {}
    for name, layer in share.layers.items():
        bases[f"{name}/beta"] = layer.beta.detach().to("cpu", torch.float32).contiguous().clone()
        bases[f"{name}/alpha"] = layer.alpha.detach().to("cpu", torch.float32).contiguous().clone()
        for index, task in enumerate(share.tasks):
            coefficients[f"{name}/{index}/eps_beta"] = layer.eps_beta[task].detach().to("cpu", torch.float32).contiguous().clone()
            coefficients[f"{name}/{index}/eps_alpha"] = layer.eps_alpha[task].detach().to("cpu", torch.float32).contiguous().clone()
    meta = {
        "format": FORMAT,
        "version": FORMAT_VERSION,
        "config": asdict(share.config),
        "tasks": list(share.tasks),
        "modules": list(share.layers),
    }
    (out / "share.json").write_text(json.dumps(meta, indent=2, sort_keys=True) + "\n", encoding="utf-8")
    save_file(bases, str(out / "bases.safetensors"))
    save_file(coefficients, str(out / "coefficients.safetensors"))
    return out


def load_share(directory: str | Path) -> ShareModel:
    """Read what ``save_share`` wrote."""
    from safetensors.torch import load_file

    root = Path(directory)
    meta = json.loads((root / "share.json").read_text(encoding="utf-8"))
    if meta.get("format") != FORMAT or meta.get("version") != FORMAT_VERSION:
        raise ValueError(f"{root}: not a Share model of format {FORMAT} v{FORMAT_VERSION}")
    bases = load_file(str(root / "bases.safetensors"))
    coefficients = load_file(str(root / "coefficients.safetensors"))
    tasks = list(meta["tasks"])
    layers = {}
    for name in meta["modules"]:
        layer = ShareLayer(bases[f"{name}/beta"], bases[f"{name}/alpha"])
        for index, task in enumerate(tasks):
            layer.eps_beta[task] = coefficients[f"{name}/{index}/eps_beta"]
            layer.eps_alpha[task] = coefficients[f"{name}/{index}/eps_alpha"]
        layers[name] = layer
    return ShareModel(layers, tasks, ShareConfig(**meta["config"]))
