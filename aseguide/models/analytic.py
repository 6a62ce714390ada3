"""An analytic score backend: Gaussian-mixture data, exact scores, for testing the sampler.

The data distribution is known in closed form, so the exact score, the Tweedie estimate
``x̂0``, the re-noising kernels and (for simple objectives) the guided posterior are
known too. It implements the :class:`~aseguide.models.base.ScoreBackend` /
:class:`~aseguide.models.base.SamplingSession` contract with the same *shape* of noise
processes as MatterGen (docs/method.md, section 1), in an exactly solvable form:

* positions (``frac``, per atom): every atom independently from an isotropic 3-D
  Gaussian mixture; variance-exploding process ``x_t = x_0 + sigma_t eps`` with
  ``sigma_t^2 = sigma_min^2 ((sigma_max/sigma_min)^(2t) - 1) N^(-2/3)`` (so
  ``sigma_0 = 0``) and **no wrap** (a Gaussian on the real line, not the torus: the
  exact score stays closed-form);
* lattice (``cell``, per structure): the 9 entries from an isotropic 9-D Gaussian
  mixture; variance-preserving process around ``mu = (N/density)^(1/3) I``:
  ``L_t = alpha_t L_0 + (1 - alpha_t) mu + sigma_t eps``,
  ``alpha_t = exp(-t^2 (beta_1 - beta_0)/4 - t beta_0/2)``,
  ``sigma_t^2 = (1 - alpha_t^2) v``, ``v = var_scale N^(2/3)``; the noise is *not*
  symmetrised (all 9 entries independent);
* species are not diffused: fixed atomic numbers (``species``, or the elements of a
  ``chemical_system`` condition, cycled over the atoms of each structure).

Sampling: ``steps`` times ``t_i = 1 - i/steps`` (so ``dt = -1/steps``, the last step
lands on ``t = 0``); the prior is the *exact* marginal at ``t = 1``; the predictor is
ancestral: ``x_{t+dt} ~ q(x_{t+dt} | x_t, x_0 = x̂0)`` (the Gaussian bridge of the
forward process), whose last step returns ``x̂0`` itself; the corrector is one Langevin
step ``x + e s + sqrt(2e) xi`` with ``e = 2 (snr sigma_t)^2`` (``snr = 0``: no corrector,
no score call).

Random numbers: every draw is a counter-based hash of (session key, draw counter,
structure index, element index) — vectorised, no Python loop, and a structure's noise
does not depend on which other structures share the batch. The session key is drawn
from torch's global generator when the session is made (so ``torch.manual_seed``
before :meth:`GaussianBackend.session` fixes it), or given as ``seed=``.

Examples
--------
>>> import torch
>>> from aseguide.models.analytic import GaussianBackend
>>> session = GaussianBackend().session(torch.tensor([2, 3]), steps=20, seed=0)
>>> x = session.prior()
>>> x.frac.shape, x.cell.shape
(torch.Size([5, 3]), torch.Size([2, 3, 3]))
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch

from aseguide.models.base import SamplingSession, ScoreBackend, Scores
from aseguide.state import CrystalBatch, symbols_to_numbers

__all__ = ["GaussianMixture", "GaussianBackend", "GaussianSession", "counter_normal", "counter_uniform"]

_M32 = 0xFFFFFFFF


# ---------------------------------------------------------------------- counter-based RNG
def _mul32(x: torch.Tensor, c: int) -> torch.Tensor:
    """``(x * c) mod 2^32`` for ``x`` in [0, 2^32) held in int64, without int64 overflow."""
    hi = ((x * (c >> 16)) & 0xFFFF) << 16
    return (hi + x * (c & 0xFFFF)) & _M32


def _hash32(x: torch.Tensor) -> torch.Tensor:
    """A 32-bit integer mixing function (xor-shift-multiply) on int64 tensors in [0, 2^32)."""
    x = x ^ (x >> 16)
    x = _mul32(x, 0x7FEB352D)
    x = x ^ (x >> 15)
    x = _mul32(x, 0x846CA68B)
    return x ^ (x >> 16)


def _hash32_int(x: int) -> int:
    """:func:`_hash32` on a Python int (same values)."""
    x &= _M32
    x ^= x >> 16
    x = (x * 0x7FEB352D) & _M32
    x ^= x >> 15
    x = (x * 0x846CA68B) & _M32
    return x ^ (x >> 16)


def _stream_bits(key: int, draw: int, stream: torch.Tensor) -> torch.Tensor:
    prefix = _hash32_int(_hash32_int(key ^ 0x9E3779B9) ^ (draw & _M32))
    return _hash32(stream.to(torch.int64) & _M32 ^ prefix)


def _uniform01(bits: torch.Tensor) -> torch.Tensor:
    return (bits.to(torch.float64) + 0.5) / 2.0**32


def counter_uniform(
    key: int, draw: int, stream: torch.Tensor, element: torch.Tensor, dtype: torch.dtype = torch.float64
) -> torch.Tensor:
    """Uniform numbers in (0, 1), one per entry of ``stream``/``element`` (broadcast).

    The value depends only on ``(key, draw, stream, element)``: a stateless,
    counter-based generator (32 random bits per number).

    Examples
    --------
    >>> import torch
    >>> u = counter_uniform(1, 0, torch.zeros(4, dtype=torch.long), torch.arange(4))
    >>> bool(((u > 0) & (u < 1)).all()), torch.equal(u[:2], counter_uniform(1, 0, torch.zeros(2), torch.arange(2)))
    (True, True)
    """
    h = _stream_bits(key, draw, stream)
    return _uniform01(_hash32(h ^ (2 * element.to(torch.int64) & _M32))).to(dtype)


def counter_normal(
    key: int, draw: int, stream: torch.Tensor, element: torch.Tensor, dtype: torch.dtype = torch.float64
) -> torch.Tensor:
    """Standard normal numbers (Box-Muller on two counter-based uniforms); see :func:`counter_uniform`.

    Examples
    --------
    >>> import torch
    >>> z = counter_normal(7, 3, torch.zeros(100000, dtype=torch.long), torch.arange(100000))
    >>> abs(float(z.mean())) < 0.02, abs(float(z.std()) - 1) < 0.02
    (True, True)
    """
    h = _stream_bits(key, draw, stream)
    e = 2 * element.to(torch.int64) & _M32
    u1 = _uniform01(_hash32(h ^ e))
    u2 = _uniform01(_hash32(h ^ (e + 1)))
    return (torch.sqrt(-2.0 * torch.log(u1)) * torch.cos(2.0 * math.pi * u2)).to(dtype)


# ---------------------------------------------------------------------- data distribution
@dataclass(frozen=True)
class GaussianMixture:
    """An isotropic Gaussian mixture ``sum_k w_k N(means[k], stds[k]^2 I)``.

    ``means`` has shape ``(K, 3)`` (positions, per atom) or ``(K, 3, 3)`` (lattice).

    Examples
    --------
    >>> GaussianMixture([[0.5, 0.5, 0.5]], [0.1]).n_components
    1
    """

    means: Sequence
    stds: Sequence[float]
    weights: Sequence[float] | None = None

    @property
    def n_components(self) -> int:
        return len(self.stds)

    def tensors(self, dtype: torch.dtype, device) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """``(means (K, d), stds (K,), weights (K,))`` with the field flattened to ``d``."""
        means = self.means if isinstance(self.means, torch.Tensor) else np.asarray(self.means, dtype=float)
        means = torch.as_tensor(means, dtype=dtype, device=device)
        means = means.reshape(means.shape[0], -1)
        stds = torch.as_tensor(self.stds, dtype=dtype, device=device).reshape(-1)
        w = torch.ones_like(stds) if self.weights is None else torch.as_tensor(self.weights, dtype=dtype, device=device)
        if means.shape[0] != stds.shape[0] or w.shape != stds.shape:
            raise ValueError("means, stds and weights must have the same number of components")
        if (stds <= 0).any() or (w < 0).any() or float(w.sum()) <= 0:
            raise ValueError("stds must be > 0 and weights >= 0 with a positive sum")
        return means, stds, w / w.sum()


def _mixture_score(z: torch.Tensor, alpha: torch.Tensor, sigma: torch.Tensor, means, stds, weights) -> torch.Tensor:
    """Exact score of ``z_t = alpha z_0 + sigma eps`` for mixture data ``z_0`` (rows of ``z``: ``(R, d)``)."""
    mean_t = alpha[:, :, None] * means[None]                   # (R, K, d)
    var_t = alpha**2 * stds[None] ** 2 + sigma**2              # (R, K)
    diff = z[:, None, :] - mean_t                              # (R, K, d)
    d = z.shape[-1]
    logp = -0.5 * diff.square().sum(-1) / var_t - 0.5 * d * torch.log(var_t) + torch.log(weights)[None]
    resp = torch.softmax(logp, dim=-1)                         # (R, K)
    return -(resp[:, :, None] * diff / var_t[:, :, None]).sum(1)


# ---------------------------------------------------------------------- backend
class GaussianBackend(ScoreBackend):
    """Analytic backend with Gaussian-mixture positions and lattice (see the module doc).

    Parameters
    ----------
    positions:
        Mixture of every atom's fractional coordinates (means ``(K, 3)``).
    lattice:
        Mixture of the cell matrix (means ``(K, 3, 3)``).
    species:
        Atomic numbers or symbols cycled over each structure's atoms (when no
        ``chemical_system`` condition is given).
    sigma_min, sigma_max:
        Positions VE schedule (as MatterGen's, scaled by ``N^(-1/3)``).
    beta_min, beta_max, density, var_scale:
        Lattice VP schedule and prior (``mu = (N/density)^(1/3) I``, ``v = var_scale N^(2/3)``).
    corrector_snr:
        Langevin corrector signal-to-noise ratio; 0 disables the corrector.
    max_atoms:
        Largest structure accepted by the sampler (``None``: no limit).
    dtype:
        Floating dtype of the sessions.

    Examples
    --------
    >>> import numpy as np
    >>> backend = GaussianBackend(lattice=GaussianMixture([4.0 * np.eye(3)], [0.2]))
    >>> backend.fields
    ('positions', 'lattice')
    """

    fields = ("positions", "lattice")
    conditions = ("chemical_system",)

    def __init__(
        self,
        positions: GaussianMixture | None = None,
        lattice: GaussianMixture | None = None,
        *,
        species: Sequence[int | str] | str | int = (6,),
        sigma_min: float = 0.01,
        sigma_max: float = 5.0,
        beta_min: float = 0.1,
        beta_max: float = 20.0,
        density: float = 0.05,
        var_scale: float = 0.25,
        corrector_snr: float = 0.0,
        max_atoms: int | None = None,
        dtype: torch.dtype = torch.float64,
    ) -> None:
        self.positions = positions or GaussianMixture([[0.5, 0.5, 0.5]], [0.1])
        eye = [[4.0, 0.0, 0.0], [0.0, 4.0, 0.0], [0.0, 0.0, 4.0]]
        self.lattice = lattice or GaussianMixture([eye], [0.3])
        self.species = symbols_to_numbers(species)
        self.sigma_min, self.sigma_max = float(sigma_min), float(sigma_max)
        self.beta_min, self.beta_max = float(beta_min), float(beta_max)
        self.density, self.var_scale = float(density), float(var_scale)
        if corrector_snr < 0:
            raise ValueError(f"corrector_snr must be >= 0, got {corrector_snr}")
        self.corrector_snr = float(corrector_snr)
        self.max_atoms = max_atoms
        self.dtype = dtype
        self.positions.tensors(dtype, "cpu")  # validate early
        self.lattice.tensors(dtype, "cpu")

    def session(
        self,
        num_atoms: torch.Tensor,
        steps: int,
        *,
        conditions: dict | None = None,
        guidance_factor: float = 1.0,
        device: torch.device | str | None = None,
        seed: int | None = None,
    ) -> "GaussianSession":
        """A session for ``len(num_atoms)`` structures (``guidance_factor`` is ignored).

        ``seed`` keys the counter-based noise; ``None`` draws the key from torch's
        global generator.
        """
        conditions = dict(conditions or {})
        unknown = set(conditions) - set(self.conditions)
        if unknown:
            raise ValueError(f"GaussianBackend cannot be conditioned on {sorted(unknown)}")
        species = self.species
        if conditions.get("chemical_system"):
            species = symbols_to_numbers(str(conditions["chemical_system"]).split("-"))
        if seed is None:
            seed = int(torch.randint(0, 2**31 - 1, (1,)))
        return GaussianSession(self, torch.as_tensor(num_atoms, dtype=torch.long), steps, species, seed, device)

    def todict(self) -> dict:
        return {"name": type(self).__name__, "positions": _mixture_dict(self.positions),
                "lattice": _mixture_dict(self.lattice), "species": list(self.species),
                "corrector_snr": self.corrector_snr}


def _mixture_dict(m: GaussianMixture) -> dict:
    means, stds, w = m.tensors(torch.float64, "cpu")
    return {"means": means.tolist(), "stds": stds.tolist(), "weights": w.tolist()}


class GaussianSession(SamplingSession):
    """One batch of :class:`GaussianBackend` (see the module doc for the processes)."""

    def __init__(self, backend: GaussianBackend, num_atoms: torch.Tensor, steps: int, species, seed: int, device):
        if steps < 1:
            raise ValueError(f"steps must be >= 1, got {steps}")
        self.backend = backend
        self.device = torch.device(device) if device is not None else torch.device("cpu")
        self.dtype = backend.dtype
        self.num_atoms = num_atoms.to(self.device)
        self.steps = int(steps)
        self.seed = int(seed)
        self._draw = 0
        self._last_mean: CrystalBatch | None = None
        n = self.num_atoms.to(self.dtype)
        self._n = n
        self._batch = torch.repeat_interleave(torch.arange(len(n), device=self.device), self.num_atoms)
        starts = torch.cumsum(self.num_atoms, 0) - self.num_atoms
        self._local = torch.arange(len(self._batch), device=self.device) - starts[self._batch]
        z = torch.as_tensor(species, dtype=torch.long, device=self.device)
        self._numbers = z[self._local % len(z)]
        self._pos = backend.positions.tensors(self.dtype, self.device)
        self._lat = backend.lattice.tensors(self.dtype, self.device)
        self._mu = ((n / backend.density) ** (1.0 / 3.0))[:, None, None] * torch.eye(3, dtype=self.dtype, device=self.device)

    # ------------------------------------------------------------------ schedules
    def _coeffs(self, field: str, t: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Per-structure ``(alpha, sigma)``, shape ``(S,)``."""
        b = self.backend
        t = torch.as_tensor(t, dtype=self.dtype, device=self.device).expand(len(self._n))
        if field == "positions":
            ratio = b.sigma_max / b.sigma_min
            var = b.sigma_min**2 * torch.expm1(2.0 * t * math.log(ratio)) * self._n ** (-2.0 / 3.0)
            return torch.ones_like(t), var.clamp_min(0).sqrt()
        if field == "lattice":
            alpha = torch.exp(-0.25 * t**2 * (b.beta_max - b.beta_min) - 0.5 * t * b.beta_min)
            var = -torch.expm1(2.0 * torch.log(alpha)) * b.var_scale * self._n ** (2.0 / 3.0)
            return alpha, var.clamp_min(0).sqrt()
        raise ValueError(f"GaussianSession has no continuous field {field!r}")

    def _shape(self, field: str, v: torch.Tensor) -> torch.Tensor:
        return v[self._batch][:, None] if field == "positions" else v[:, None, None]

    def marginal(self, field: str, t: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        alpha, sigma = self._coeffs(field, t)
        return self._shape(field, alpha), self._shape(field, sigma)

    def _mean(self, field: str) -> torch.Tensor | float:
        return 0.0 if field == "positions" else self._mu

    def timesteps(self) -> torch.Tensor:
        return torch.linspace(1.0, 0.0, self.steps + 1, dtype=self.dtype, device=self.device)[:-1]

    # ------------------------------------------------------------------ noise
    def _noise(self, field: str) -> torch.Tensor:
        self._draw += 1
        if field == "positions":
            stream = self._batch[:, None]
            element = self._local[:, None] * 3 + torch.arange(3, device=self.device)
        else:
            stream = torch.arange(len(self._n), device=self.device)[:, None, None]
            element = (1 << 24) + torch.arange(9, device=self.device).reshape(1, 3, 3)
        return counter_normal(self.seed, self._draw, stream, element, self.dtype)

    def _sample_data(self, field: str) -> torch.Tensor:
        means, stds, w = self._pos if field == "positions" else self._lat
        self._draw += 1
        rows = self._batch if field == "positions" else torch.arange(len(self._n), device=self.device)
        elem = self._local if field == "positions" else torch.full_like(rows, 1 << 24)
        u = counter_uniform(self.seed, self._draw, rows, elem, self.dtype)
        k = torch.searchsorted(torch.cumsum(w, 0)[:-1].contiguous(), u.contiguous(), right=True)
        eps = self._noise(field)
        return (means[k] + stds[k][:, None] * eps.reshape(len(rows), -1)).reshape(eps.shape)

    def sample_marginal(self, t: float | torch.Tensor) -> CrystalBatch:
        """An exact sample of the marginal ``p_t`` (``t = 0``: the data distribution)."""
        x = {}
        for field in ("positions", "lattice"):
            alpha, sigma = self.marginal(field, torch.as_tensor(t, dtype=self.dtype))
            x[field] = alpha * self._sample_data(field) + (1 - alpha) * self._mean(field) + sigma * self._noise(field)
        return CrystalBatch(x["positions"], x["lattice"], self._numbers.clone(), self.num_atoms)

    def prior(self) -> CrystalBatch:
        return self.sample_marginal(1.0)

    # ------------------------------------------------------------------ score, x̂0
    def score(self, x: CrystalBatch, t: torch.Tensor) -> Scores:
        a, s = self._coeffs("positions", t)
        means, stds, w = self._pos
        sp = _mixture_score(x.frac, a[self._batch][:, None], s[self._batch][:, None], means, stds, w)
        a, s = self._coeffs("lattice", t)
        means, stds, w = self._lat
        # y = L_t - (1 - alpha) mu = alpha L_0 + sigma eps: same score as L_t (a translation)
        y = (x.cell - (1 - a)[:, None, None] * self._mu).reshape(-1, 9)
        sl = _mixture_score(y, a[:, None], s[:, None], means, stds, w)
        return Scores(positions=sp, lattice=sl.reshape(-1, 3, 3))

    def tweedie(self, x: CrystalBatch, t: torch.Tensor, scores: Scores) -> CrystalBatch:
        out = {}
        for field, value in (("positions", x.frac), ("lattice", x.cell)):
            alpha, sigma = self.marginal(field, t)
            out[field] = (value - (1 - alpha) * self._mean(field) + sigma**2 * scores.get(field)) / alpha
        return x.replace(frac=out["positions"], cell=out["lattice"])

    def score_shift(self, x: CrystalBatch, t: torch.Tensor, field: str, delta: torch.Tensor) -> torch.Tensor:
        alpha, sigma = self.marginal(field, t)
        return alpha / sigma**2 * delta

    # ------------------------------------------------------------------ moves
    def _bridge(self, field, value, x0, t, s):
        """Mean and std of ``q(x_s | x_t = value, x_0 = x0)`` for ``s < t``."""
        a_t, s_t = self.marginal(field, t)
        a_s, s_s = self.marginal(field, s)
        a = a_t / a_s
        tau2 = (s_t**2 - a**2 * s_s**2).clamp_min(0)
        mu = self._mean(field)
        mean = (tau2 * a_s * (x0 - mu) + a * s_s**2 * (value - mu)) / s_t**2 + mu
        std = (s_s**2 * tau2 / s_t**2).clamp_min(0).sqrt()
        return mean, std

    def predictor(self, x: CrystalBatch, t: torch.Tensor, scores: Scores) -> CrystalBatch:
        x0 = self.tweedie(x, t, scores)
        s = (t + self.dt).clamp_min(0)
        mp, sp = self._bridge("positions", x.frac, x0.frac, t, s)
        ml, sl = self._bridge("lattice", x.cell, x0.cell, t, s)
        self._last_mean = x.replace(frac=mp, cell=ml)
        return x.replace(frac=mp + sp * self._noise("positions"), cell=ml + sl * self._noise("lattice"))

    def last_mean(self) -> CrystalBatch | None:
        return self._last_mean

    def corrector(self, x: CrystalBatch, t: torch.Tensor) -> CrystalBatch:
        snr = self.backend.corrector_snr
        if snr == 0:
            return x
        scores = self.score(x, t)
        out = {}
        for field, value in (("positions", x.frac), ("lattice", x.cell)):
            _, sigma = self.marginal(field, t)
            eps = 2.0 * (snr * sigma) ** 2
            out[field] = value + eps * scores.get(field) + (2.0 * eps).sqrt() * self._noise(field)
        return x.replace(frac=out["positions"], cell=out["lattice"])

    def renoise(self, x: CrystalBatch, s: torch.Tensor, t: torch.Tensor) -> CrystalBatch:
        out = {}
        for field, value in (("positions", x.frac), ("lattice", x.cell)):
            a_s, s_s = self.marginal(field, s)
            a_t, s_t = self.marginal(field, t)
            a = a_t / a_s
            std = (s_t**2 - a**2 * s_s**2).clamp_min(0).sqrt()
            mu = self._mean(field)
            out[field] = a * value + (1 - a) * mu + std * self._noise(field)
        return x.replace(frac=out["positions"], cell=out["lattice"])
