"""Universal guidance math, backend-independent.

Small pure, batched functions that turn a :class:`~aseguide.models.base.SamplingSession`
(the network and the noise processes) into a guided sampler (docs/method.md, section 5):

* :func:`normalize_gradient` — divide each structure's gradient of one field by its own
  norm (per structure *and* per field, never over the batch), with a floor;
* :func:`objective_gradients` — per-structure loss and gradients of an objective, with a
  per-structure NaN/inf guard (a bad structure gets a zero gradient and is reported);
* :func:`forward_guidance` — ``s <- s - g_t n(grad_{x_t} l(x̂0(x_t)))`` through the network;
* :func:`descend_x0` + :func:`shift_scores` = :func:`backward_guidance` — ``m`` steps of
  normalised gradient descent on ``x̂0``, then the score shift that moves the Tweedie
  estimate by the accumulated step;
* :func:`diffusion_step` — one timestep: corrector, then ``K`` passes of
  score -> forward -> backward -> predictor, re-noising between passes with the exact
  kernel (self-recurrence); without guidance it is exactly the base predictor-corrector;

Every function takes the settings whole, as one
:class:`~aseguide.sampling.settings.GuidanceSettings` (strengths, steps, fields,
normalisation, floor); the strengths it holds are those of the step (see
:meth:`~aseguide.sampling.settings.GuidanceSettings.at`).

Fields are named as in :mod:`aseguide.models.base`: ``"positions"`` is ``batch.frac``
(per atom, ``(N, 3)``) and ``"lattice"`` is ``batch.cell`` (per structure, ``(S, 3, 3)``).

Examples
--------
>>> import torch
>>> from aseguide.sampling.guidance import normalize_gradient
>>> g = torch.tensor([[3.0, 4.0, 0.0], [0.0, 0.0, 0.0], [0.0, 0.0, 2.0]])
>>> normalize_gradient(g, index=torch.tensor([0, 0, 1]), n_structures=2)
tensor([[0.6000, 0.8000, 0.0000],
        [0.0000, 0.0000, 0.0000],
        [0.0000, 0.0000, 1.0000]])
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import torch

from aseguide.models.base import CONTINUOUS_FIELDS, SamplingSession, Scores
from aseguide.sampling.settings import (
    DEFAULT_FLOOR,
    SCHEDULES,
    UNGUIDED,
    GuidanceSettings,
    is_guided_step,
    schedule_weight,
)
from aseguide.state import CrystalBatch

__all__ = [
    "DEFAULT_FLOOR",
    "SCHEDULES",
    "UNGUIDED",
    "GuidanceSettings",
    "StepResult",
    "backward_guidance",
    "descend_x0",
    "diffusion_step",
    "field_index",
    "forward_guidance",
    "get_field",
    "guided_score",
    "is_guided_step",
    "normalize_gradient",
    "objective_gradients",
    "schedule_weight",
    "shift_scores",
    "structure_finite",
    "structure_norm",
    "with_fields",
]

_ATTR = {"positions": "frac", "lattice": "cell"}


# ---------------------------------------------------------------------- field access
def get_field(batch: CrystalBatch, field: str) -> torch.Tensor:
    """The tensor of a continuous field: ``frac`` for positions, ``cell`` for lattice.

    Examples
    --------
    >>> import torch
    >>> b = CrystalBatch(torch.zeros(1, 3), torch.eye(3)[None], torch.tensor([6]), torch.tensor([1]))
    >>> get_field(b, "lattice").shape
    torch.Size([1, 3, 3])
    """
    try:
        return getattr(batch, _ATTR[field])
    except KeyError:
        raise ValueError(f"cannot guide field {field!r}: guidable fields are {CONTINUOUS_FIELDS}") from None


def with_fields(batch: CrystalBatch, values: Mapping[str, torch.Tensor]) -> CrystalBatch:
    """A batch with some continuous fields replaced (``{"positions": frac, ...}``).

    Examples
    --------
    >>> import torch
    >>> b = CrystalBatch(torch.zeros(1, 3), torch.eye(3)[None], torch.tensor([6]), torch.tensor([1]))
    >>> float(with_fields(b, {"lattice": 2 * torch.eye(3)[None]}).volume()[0])
    8.0
    """
    if not values:
        return batch
    return batch.replace(**{_ATTR[f]: v for f, v in values.items()})


def field_index(batch: CrystalBatch, field: str) -> torch.Tensor | None:
    """Structure index of each row of a field: ``batch.batch`` for positions, else ``None``.

    ``None`` means the leading dimension already enumerates the structures.
    """
    return batch.batch if field == "positions" else None


# ---------------------------------------------------------------------- normalisation
def _per_structure_sum(values: torch.Tensor, index: torch.Tensor | None, n_structures: int | None) -> torch.Tensor:
    """Sum of ``values`` (leading dim rows) per structure; ``values`` is ``(R,)``."""
    if index is None:
        return values
    if n_structures is None:
        raise ValueError("n_structures is needed with a per-atom index")
    out = torch.zeros(n_structures, dtype=values.dtype, device=values.device)
    return out.index_add_(0, index, values)


def structure_norm(
    grad: torch.Tensor, index: torch.Tensor | None = None, n_structures: int | None = None
) -> torch.Tensor:
    """Euclidean norm of each structure's part of ``grad``, shape ``(S,)``.

    Parameters
    ----------
    grad : torch.Tensor
        ``(N, 3)`` per-atom gradient (then give ``index`` and ``n_structures``) or a
        per-structure gradient ``(S, ...)`` (``index=None``).
    index : torch.Tensor or None
        Structure index of every row of ``grad``, or ``None``.
    n_structures : int or None
        Number of structures ``S`` (needed with ``index``).

    Examples
    --------
    >>> import torch
    >>> structure_norm(torch.ones(3, 3, 3))
    tensor([3., 3., 3.])
    """
    sq = grad.reshape(grad.shape[0], -1).square().sum(-1)
    return _per_structure_sum(sq, index, n_structures).sqrt()


def normalize_gradient(
    grad: torch.Tensor,
    index: torch.Tensor | None = None,
    n_structures: int | None = None,
    floor: float = DEFAULT_FLOOR,
) -> torch.Tensor:
    """Divide each structure's gradient by its own norm: ``g / max(|g|_structure, floor)``.

    The norm is taken over one field of one structure only (never over the batch), so
    structures do not couple. A zero gradient stays zero.

    Parameters
    ----------
    grad, index, n_structures : torch.Tensor, torch.Tensor or None, int or None
        As in :func:`structure_norm`.
    floor : float
        Smallest norm divided by.

    Examples
    --------
    >>> import torch
    >>> normalize_gradient(torch.tensor([[[0.0, 2.0, 0.0]] * 3, [[0.0] * 3] * 3]))[:, 0]
    tensor([[0.0000, 0.5774, 0.0000],
            [0.0000, 0.0000, 0.0000]])
    """
    norm = structure_norm(grad, index, n_structures).clamp_min(floor)
    if index is not None:
        norm = norm[index]
    return grad / norm.reshape(norm.shape + (1,) * (grad.ndim - 1))


def structure_finite(
    grad: torch.Tensor, index: torch.Tensor | None = None, n_structures: int | None = None
) -> torch.Tensor:
    """``True`` for every structure whose part of ``grad`` is all finite, shape ``(S,)``.

    Examples
    --------
    >>> import torch
    >>> structure_finite(torch.tensor([[0.0, 1, 2], [float("nan"), 0, 0]]), torch.tensor([0, 1]), 2)
    tensor([ True, False])
    """
    bad = (~torch.isfinite(grad)).reshape(grad.shape[0], -1).any(-1)
    return _per_structure_sum(bad.to(grad.dtype), index, n_structures) == 0


# ---------------------------------------------------------------------- objective
def objective_gradients(
    objective, batch: CrystalBatch, fields: Sequence[str]
) -> tuple[torch.Tensor, dict[str, torch.Tensor], torch.Tensor]:
    """Per-structure loss of ``objective`` at ``batch`` and its gradient for each field.

    A structure whose loss or gradient is not finite gets a zero gradient (all fields)
    and ``ok = False``. When that happens, the gradients of the structures with a
    finite loss are recomputed on the sub-batch of those structures alone, so that a
    NaN cannot reach them through the objective's autograd graph (e.g. ``0 * nan`` in
    the backward of a ``torch.where``).

    Returns
    -------
    loss : torch.Tensor
        ``(S,)``, detached.
    grads : dict of str to torch.Tensor
        ``{field: gradient}``, detached, zero where ``ok`` is ``False`` (and for fields
        the loss does not depend on).
    ok : torch.Tensor
        ``(S,)`` bool.

    Examples
    --------
    >>> import torch
    >>> class Vol:
    ...     def loss(self, b):
    ...         return b.volume()
    >>> b = CrystalBatch(torch.zeros(1, 3), 2 * torch.eye(3)[None], torch.tensor([6]), torch.tensor([1]))
    >>> loss, grads, ok = objective_gradients(Vol(), b, ["lattice"])
    >>> grads["lattice"][0].diagonal()
    tensor([4., 4., 4.])
    """
    loss, grads, ok = _raw_gradients(objective, batch, fields)
    if not fields or bool(ok.all()):
        return loss, grads, ok
    finite = torch.isfinite(loss)
    if bool(finite.any()) and not bool(finite.all()):
        idx = torch.nonzero(finite).flatten()
        _, sub_grads, sub_ok = _raw_gradients(objective, batch.select(idx), fields)
        ok = torch.zeros_like(ok)
        ok[idx] = sub_ok
        for f in fields:
            rows = finite if field_index(batch, f) is None else finite[batch.batch]
            grads[f] = torch.zeros_like(grads[f])
            grads[f][rows] = sub_grads[f]
    return loss, grads, ok


def _raw_gradients(objective, batch: CrystalBatch, fields: Sequence[str]):
    leaves = {f: get_field(batch, f).detach().requires_grad_(True) for f in fields}
    with torch.enable_grad():
        loss = objective.loss(with_fields(batch, leaves))
        if loss.shape != (batch.n_structures,):
            raise ValueError(
                f"objective {type(objective).__name__}.loss returned shape {tuple(loss.shape)}, "
                f"expected ({batch.n_structures},)"
            )
        if leaves and loss.requires_grad:
            raw = torch.autograd.grad(loss.sum(), list(leaves.values()), allow_unused=True)
        else:  # the loss does not depend on any guided field (e.g. a lattice-only loss, positions guided)
            raw = (None,) * len(leaves)
    grads, ok = _guard(batch, torch.isfinite(loss.detach()), leaves, raw)
    return loss.detach(), grads, ok


def _guard(batch: CrystalBatch, ok: torch.Tensor, leaves: Mapping[str, torch.Tensor], raw: Sequence) -> tuple:
    """Zero every field's gradient of the structures not ``ok`` or whose gradient is not finite."""
    grads = {}
    for f, g in zip(leaves, raw):
        grads[f] = torch.zeros_like(leaves[f]) if g is None else g
        ok = ok & structure_finite(grads[f], field_index(batch, f), batch.n_structures)
    for f, g in grads.items():
        idx = field_index(batch, f)
        keep = ok if idx is None else ok[idx]
        grads[f] = torch.where(keep.reshape(keep.shape + (1,) * (g.ndim - 1)), g, torch.zeros_like(g))
    return grads, ok


def _direction(grad: torch.Tensor, batch: CrystalBatch, field: str, settings: GuidanceSettings) -> torch.Tensor:
    if not settings.normalize:
        return grad
    return normalize_gradient(grad, field_index(batch, field), batch.n_structures, settings.floor)


# ---------------------------------------------------------------------- guidance
def forward_guidance(
    session: SamplingSession,
    x: CrystalBatch,
    t: torch.Tensor,
    objective,
    settings: GuidanceSettings,
) -> tuple[Scores, torch.Tensor]:
    """Score with forward universal guidance: ``s - g n(grad_{x_t} l(x̂0(x_t)))``.

    The gradient flows through the network (the score is computed with autograd on
    ``x_t``). ``g`` is ``settings.forward_strength``; ``settings.fields`` are guided.
    Returns the detached guided scores and the per-structure ``ok`` mask of
    :func:`objective_gradients` (``False`` = gradient zeroed because not finite).

    Examples
    --------
    >>> from aseguide.models.analytic import GaussianBackend
    >>> from aseguide.state import CrystalBatch
    >>> import torch
    >>> class Trace:
    ...     def loss(self, b):
    ...         return b.cell.diagonal(dim1=-2, dim2=-1).sum(-1)
    >>> session = GaussianBackend().session(torch.tensor([2, 3]), steps=10)
    >>> x, t = session.prior(), torch.full((2,), 0.5, dtype=torch.float64)
    >>> settings = GuidanceSettings(forward_strength=0.1, fields=["lattice"])
    >>> s, ok = forward_guidance(session, x, t, Trace(), settings)
    >>> bool(ok.all())
    True
    """
    leaves = {f: get_field(x, f).detach().requires_grad_(True) for f in settings.fields}
    with torch.enable_grad():
        xg = with_fields(x, leaves)
        scores = session.score(xg, t)
        x0 = session.tweedie(xg, t, scores)
    # two-stage chain rule: the objective's gradient at x̂0 (with its per-structure NaN
    # guard), then a vector-Jacobian product through Tweedie and the network
    _, at_x0, ok = objective_gradients(objective, x0.detach(), CONTINUOUS_FIELDS)
    outs = [(get_field(x0, f), at_x0[f]) for f in CONTINUOUS_FIELDS if get_field(x0, f).requires_grad]
    raw = torch.autograd.grad([o for o, _ in outs], list(leaves.values()), grad_outputs=[g for _, g in outs],
                              allow_unused=True) if outs else [None] * len(leaves)
    scores = scores.detach()
    grads, ok = _guard(x, ok, leaves, raw)
    changes = {f: scores.get(f) - settings.forward_strength * _direction(g, x, f, settings) for f, g in grads.items()}
    return scores.replace(**changes), ok


def descend_x0(
    objective,
    x0: CrystalBatch,
    settings: GuidanceSettings,
) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
    """``settings.backward_steps`` of (normalised) gradient descent on the clean estimate ``x0``.

    ``delta <- delta - k n(grad l(x0 + delta))``, starting from ``delta = 0``, with
    ``k = settings.backward_strength``.
    Returns ``({field: delta}, ok)`` where ``ok`` is ``False`` for a structure whose loss
    or gradient was not finite at any step (its gradient was zeroed at that step).

    Examples
    --------
    >>> import torch
    >>> class Trace:
    ...     def loss(self, b):
    ...         return b.cell.diagonal(dim1=-2, dim2=-1).sum(-1)
    >>> b = CrystalBatch(torch.zeros(1, 3), torch.eye(3)[None], torch.tensor([6]), torch.tensor([1]))
    >>> settings = GuidanceSettings(backward_strength=0.3, backward_steps=2, fields=["lattice"])
    >>> delta, ok = descend_x0(Trace(), b, settings)
    >>> round(float(delta["lattice"][0, 0, 0]) * 3 ** 0.5, 6)
    -0.6
    """
    delta = {f: torch.zeros_like(get_field(x0, f)) for f in settings.fields}
    ok = torch.ones(x0.n_structures, dtype=torch.bool, device=x0.device)
    for _ in range(settings.backward_steps):
        moved = with_fields(x0, {f: get_field(x0, f) + d for f, d in delta.items()})
        _, grads, ok_step = objective_gradients(objective, moved, settings.fields)
        ok = ok & ok_step
        for f in settings.fields:
            delta[f] = delta[f] - settings.backward_strength * _direction(grads[f], x0, f, settings)
    return delta, ok


def shift_scores(
    session: SamplingSession, x: CrystalBatch, t: torch.Tensor, scores: Scores, delta: Mapping[str, torch.Tensor]
) -> Scores:
    """Scores whose Tweedie estimate is moved by ``delta``: ``s + session.score_shift(...)``.

    For the processes of :mod:`aseguide.models.base` the shift is ``(alpha_t / sigma_t^2) delta``.
    """
    return scores.replace(**{f: scores.get(f) + session.score_shift(x, t, f, d) for f, d in delta.items()})


def backward_guidance(
    session: SamplingSession,
    x: CrystalBatch,
    t: torch.Tensor,
    scores: Scores,
    objective,
    settings: GuidanceSettings,
) -> tuple[Scores, torch.Tensor]:
    """Backward universal guidance: :func:`descend_x0` from ``x̂0(x, scores)``, then :func:`shift_scores`.

    Returns the guided scores (whose Tweedie estimate is ``x̂0 + delta``) and the ``ok`` mask.

    Examples
    --------
    >>> from aseguide.models.analytic import GaussianBackend
    >>> import torch
    >>> class Trace:
    ...     def loss(self, b):
    ...         return b.cell.diagonal(dim1=-2, dim2=-1).sum(-1)
    >>> session = GaussianBackend().session(torch.tensor([2]), steps=10)
    >>> x, t = session.prior(), torch.full((1,), 0.5, dtype=torch.float64)
    >>> s = session.score(x, t)
    >>> settings = GuidanceSettings(backward_strength=0.1, backward_steps=1, fields=["lattice"])
    >>> s2, ok = backward_guidance(session, x, t, s, Trace(), settings)
    >>> d = session.tweedie(x, t, s2).cell - session.tweedie(x, t, s).cell
    >>> round(float(d[0, 0, 0]) * 3 ** 0.5, 6)
    -0.1
    """
    with torch.no_grad():
        x0 = session.tweedie(x, t, scores)
    delta, ok = descend_x0(objective, x0.detach(), settings)
    with torch.no_grad():
        return shift_scores(session, x, t, scores, delta), ok


def guided_score(
    session: SamplingSession,
    x: CrystalBatch,
    t: torch.Tensor,
    objective=None,
    settings: GuidanceSettings = UNGUIDED,
) -> tuple[Scores, torch.Tensor | None]:
    """Score at ``(x, t)`` with forward then backward guidance (each only if active).

    Returns ``(scores, ok)``; ``ok`` is ``None`` when no guidance was applied. Without
    guidance this is exactly one ``session.score`` call under ``torch.no_grad``.

    Examples
    --------
    >>> from aseguide.models.analytic import GaussianBackend
    >>> import torch
    >>> session = GaussianBackend().session(torch.tensor([2]), steps=10)
    >>> scores, ok = guided_score(session, session.prior(), torch.full((1,), 0.5, dtype=torch.float64))
    >>> ok is None
    True
    """
    ok = None
    if objective is not None and settings.forward:
        scores, ok = forward_guidance(session, x, t, objective, settings)
    else:
        with torch.no_grad():
            scores = session.score(x, t)
    if objective is not None and settings.backward:
        scores, ok_b = backward_guidance(session, x, t, scores, objective, settings)
        ok = ok_b if ok is None else ok & ok_b
    return scores, ok


@dataclass
class StepResult:
    """Outcome of :func:`diffusion_step`.

    Attributes
    ----------
    x : CrystalBatch
        The new state at ``t + dt`` (the proposal of the last pass).
    x_in : CrystalBatch
        The state at ``t`` that the last pass scored (after the corrector / re-noising).
    scores : Scores
        The (guided) scores of the last pass; ``session.tweedie(x_in, t, scores)`` is the
        clean estimate the predictor used.
    ok : torch.Tensor
        ``(S,)`` bool, ``False`` where a guidance gradient was not finite in any pass;
        ``None`` for an unguided step.
    """

    x: CrystalBatch
    x_in: CrystalBatch
    scores: Scores
    ok: torch.Tensor | None = None


def diffusion_step(
    session: SamplingSession,
    x: CrystalBatch,
    t: torch.Tensor,
    objective=None,
    settings: GuidanceSettings = UNGUIDED,
) -> StepResult:
    """Take one timestep ``t -> t + dt`` of the whole batch.

    The corrector, then ``settings.recurrence`` passes of score -> forward guidance ->
    backward guidance -> predictor.

    Between passes the proposal is re-noised from ``t + dt`` back to ``t`` with the
    session's exact kernel; the last proposal is kept. With ``objective=None`` (or zero
    strengths) and ``recurrence=1`` (:data:`~aseguide.sampling.settings.UNGUIDED`, the
    default) this is exactly the base predictor-corrector step: ``corrector``,
    ``score`` (no autograd), ``predictor``.

    Examples
    --------
    >>> from aseguide.models.analytic import GaussianBackend
    >>> import torch
    >>> session = GaussianBackend().session(torch.tensor([2, 3]), steps=10)
    >>> x = session.prior()
    >>> t = session.timesteps()[0].expand(2)
    >>> diffusion_step(session, x, t).x.frac.shape
    torch.Size([5, 3])
    """
    with torch.no_grad():
        x = session.corrector(x, t)
    t_next = t + session.dt
    ok = proposal = None
    for _ in range(settings.recurrence):
        if proposal is not None:
            with torch.no_grad():
                x = session.renoise(proposal, t_next, t)
        scores, ok_k = guided_score(session, x, t, objective, settings)
        if ok_k is not None:
            ok = ok_k if ok is None else ok & ok_k
        with torch.no_grad():
            proposal = session.predictor(x, t, scores)
    return StepResult(x=proposal, x_in=x, scores=scores, ok=ok)
