"""The contract between a score backend and the guided sampler.

A *backend* owns the network and the noise processes; the sampler
(:mod:`aseguide.guidance`, :mod:`aseguide.optimize`) owns the guidance math and never
imports MatterGen. A backend hands out a :class:`SamplingSession` for one batch of
structures to generate (number of atoms per structure, number of steps, conditioning).

State at time ``t`` is a :class:`~aseguide.state.CrystalBatch`: ``frac`` (positions
field, fractional coordinates), ``cell`` (lattice field, rows are vectors) and
``numbers`` (species field; while species are still noisy this may hold a backend's
own token values such as a mask token, so only Tweedie estimates are converted to
``ase.Atoms``).

Scores are a :class:`Scores` record: ``positions`` ``(N, 3)`` is the score with respect
to the fractional coordinates, ``lattice`` ``(S, 3, 3)`` the score with respect to the
cell matrix, ``species`` ``(N, K)`` the backend's species logits (or ``None``).

Time runs from ``t = t_max`` (noise) down to ``t_min``; ``t`` is passed as a tensor of
shape ``(S,)`` (one value per structure, all equal in practice).

Field names used throughout aseguide: ``"positions"``, ``"lattice"``, ``"species"``.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass, fields, replace

import torch

from aseguide.state import CrystalBatch

__all__ = ["Scores", "SamplingSession", "ScoreBackend", "FIELDS", "CONTINUOUS_FIELDS"]

FIELDS = ("positions", "lattice", "species")
#: The fields that guidance can act on (continuous diffusion).
CONTINUOUS_FIELDS = ("positions", "lattice")


@dataclass
class Scores:
    """Score of every field of a batch at one time.

    ``positions``: ``(N, 3)``; ``lattice``: ``(S, 3, 3)``; ``species``: ``(N, K)``
    logits or ``None``.
    """

    positions: torch.Tensor
    lattice: torch.Tensor
    species: torch.Tensor | None = None

    def replace(self, **changes) -> "Scores":
        return replace(self, **changes)

    def get(self, field: str) -> torch.Tensor | None:
        return getattr(self, field)

    def detach(self) -> "Scores":
        return Scores(**{f.name: (None if getattr(self, f.name) is None else getattr(self, f.name).detach())
                         for f in fields(self)})


class SamplingSession(ABC):
    """Everything the sampler needs to generate one batch.

    Instances come from :meth:`ScoreBackend.session`. All methods are batched over
    the structures of the batch; none loops over structures.
    """

    #: number of atoms of every structure, ``(S,)``, on the session's device
    num_atoms: torch.Tensor
    #: number of diffusion steps
    steps: int
    device: torch.device

    @abstractmethod
    def timesteps(self) -> torch.Tensor:
        """The ``steps`` times visited, decreasing, shape ``(steps,)``."""

    @property
    def dt(self) -> float:
        """Signed time increment between consecutive timesteps (negative)."""
        ts = self.timesteps()
        return float(ts[1] - ts[0]) if len(ts) > 1 else -float(ts[0])

    @abstractmethod
    def prior(self) -> CrystalBatch:
        """A sample of the prior at ``t_max``."""

    @abstractmethod
    def score(self, x: CrystalBatch, t: torch.Tensor) -> Scores:
        """Score at ``(x, t)`` (classifier-free combined when conditioned).

        Differentiable with respect to ``x.frac`` and ``x.cell`` when autograd is on.
        """

    @abstractmethod
    def corrector(self, x: CrystalBatch, t: torch.Tensor) -> CrystalBatch:
        """The base sampler's corrector step(s) at time ``t`` (calls :meth:`score` itself)."""

    @abstractmethod
    def predictor(self, x: CrystalBatch, t: torch.Tensor, scores: Scores) -> CrystalBatch:
        """The base sampler's predictor step from ``t`` to ``t + dt`` given ``scores``.

        Also records the noise-free mean of the step (see :meth:`last_mean`).
        """

    def last_mean(self) -> CrystalBatch | None:
        """Noise-free mean of the last predictor step (the final output of MatterGen)."""
        return None

    @abstractmethod
    def marginal(self, field: str, t: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Marginal coefficients ``(alpha_t, sigma_t)`` of a continuous field.

        ``x_t = alpha_t x_0 + (1 - alpha_t) mu + sigma_t eps``. Shapes broadcast against
        the field: ``(N, 1)`` for positions, ``(S, 1, 1)`` for the lattice.
        """

    @abstractmethod
    def tweedie(self, x: CrystalBatch, t: torch.Tensor, scores: Scores) -> CrystalBatch:
        """Tweedie estimate ``x̂0`` of the clean crystal (species: most likely class)."""

    @abstractmethod
    def score_shift(self, x: CrystalBatch, t: torch.Tensor, field: str, delta: torch.Tensor) -> torch.Tensor:
        """Change of the score of ``field`` that moves its Tweedie estimate by ``delta``.

        ``(alpha_t / sigma_t**2) * delta`` for the processes above.
        """

    @abstractmethod
    def renoise(self, x: CrystalBatch, s: torch.Tensor, t: torch.Tensor) -> CrystalBatch:
        """Sample the exact forward kernel from time ``s`` to a later time ``t > s``."""

    #: whether the model's data lattices are the symmetric polar factor of the cell
    #: (MatterGen: its training data and its lattice predictor use it), so that a seed
    #: crystal must be rotated into that form before it is noised
    symmetric_lattice: bool = False

    def noise(self, x0: CrystalBatch, t: torch.Tensor) -> CrystalBatch:
        """Sample the forward process from clean data ``x0`` (time 0) to time ``t``: ``q(x_t | x_0)``.

        Used to start the reverse process from seed crystals and to inpaint fixed atoms.
        The default is :meth:`renoise` from ``s = 0``, exact when the processes start
        from the data at ``t = 0`` (no noise at ``t = 0``); a backend whose marginal at
        ``t = 0`` is not the data (MatterGen's positions keep ``sigma_min``, its species
        schedule starts one discrete step in) overrides it with the exact marginal.
        ``x0`` holds real species; noised species may be the backend's mask token.

        Examples
        --------
        >>> from aseguide.models.analytic import GaussianBackend
        >>> session = GaussianBackend().session(torch.tensor([2]), steps=10, seed=0)
        >>> x0 = session.sample_marginal(0.0)
        >>> torch.equal(session.noise(x0, torch.zeros(1, dtype=torch.float64)).frac, x0.frac)
        True
        """
        return self.renoise(x0, torch.zeros_like(torch.as_tensor(t)), t)

    def to_atoms(self, x: CrystalBatch):
        """``x`` (a Tweedie estimate or a final sample) as a list of ``ase.Atoms``."""
        return x.to_atoms()


class ScoreBackend(ABC):
    """A pretrained score model plus its noise processes."""

    #: fields the backend diffuses
    fields: tuple[str, ...] = FIELDS
    #: properties the model can be conditioned on (e.g. ``("chemical_system",)``)
    conditions: tuple[str, ...] = ()
    #: largest number of atoms per structure the model supports (``None``: no limit)
    max_atoms: int | None = None
    #: number of diffusion steps a sampler takes when the user does not choose one
    default_steps: int = 1000
    #: precision policies (:data:`aseguide.precision.PRECISIONS`) ``session`` takes as its
    #: ``precision`` keyword; empty for a backend without a network, which ignores them
    precisions: tuple[str, ...] = ()

    @property
    def supported_elements(self) -> frozenset[int] | None:
        """Atomic numbers the model can place (given species are checked against it); ``None``: any."""
        return None

    @abstractmethod
    def session(
        self,
        num_atoms: torch.Tensor,
        steps: int,
        *,
        conditions: dict | None = None,
        guidance_factor: float = 1.0,
        device: torch.device | str | None = None,
    ) -> SamplingSession:
        """A :class:`SamplingSession` generating ``len(num_atoms)`` structures."""
