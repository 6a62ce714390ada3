"""Potentials by name: the one name table, :func:`get_calculator` and :func:`get_potential`."""

from __future__ import annotations

import sys
from collections.abc import Callable
from typing import Any

from ase.calculators.calculator import Calculator

from aseguide.potentials.ase_adapter import ASECalculatorPotential
from aseguide.potentials.base import BatchedPotential
from aseguide.potentials.chgnet import CHGNetPotential, chgnet_calculator
from aseguide.potentials.grace import grace_calculator
from aseguide.potentials.mattersim import MatterSimPotential, mattersim_calculator
from aseguide.potentials.sevenn import SevenNetPotential, sevenn_calculator

__all__ = ["POTENTIALS", "canonical_name", "get_calculator", "get_potential"]


#: Potential names understood by :func:`get_calculator` / :func:`get_potential`
#: (aliases map to the canonical name).
POTENTIALS: dict[str, str] = {
    "mattersim": "mattersim",
    "chgnet": "chgnet",
    "sevenn": "sevenn",
    "sevennet": "sevenn",
    "7net": "sevenn",
    "grace": "grace",
}


def canonical_name(name: str) -> str:
    """The canonical name of a potential (``"7net"`` -> ``"sevenn"``).

    Parameters
    ----------
    name : str
        A name or alias of :data:`POTENTIALS` (any case, surrounding spaces ignored).

    Returns
    -------
    str
        ``"mattersim"``, ``"chgnet"``, ``"sevenn"`` or ``"grace"``.

    Raises
    ------
    ValueError
        For an unknown name (the known ones are listed).

    Examples
    --------
    >>> canonical_name(" SevenNet ")
    'sevenn'
    """
    key = str(name).strip().lower()
    if key not in POTENTIALS:
        raise ValueError(
            f"unknown potential {name!r}: choose one of {sorted(set(POTENTIALS.values()))} "
            "or pass an ASE calculator"
        )
    return POTENTIALS[key]

#: The ASE calculator of each canonical name: ``factory(model, device, **kwargs)``.
_CALCULATORS: dict[str, Callable[..., Calculator]] = {
    "mattersim": mattersim_calculator,
    "chgnet": chgnet_calculator,
    "sevenn": sevenn_calculator,
    "grace": grace_calculator,
}


def _model_option(kwargs: dict[str, Any]) -> Any:
    """Pop ``model=`` or its alias ``checkpoint=`` (not both) from ``kwargs``."""
    model = kwargs.pop("model", None)
    checkpoint = kwargs.pop("checkpoint", None)
    if model is not None and checkpoint is not None:
        raise ValueError("pass model= or checkpoint=, not both")
    return model if model is not None else checkpoint



def get_calculator(name: str | Calculator | BatchedPotential, **kwargs: Any) -> Calculator:
    """An ASE calculator for a potential by name, or the calculator passed in.

    Parameters
    ----------
    name:
        ``"mattersim"``, ``"chgnet"``, ``"sevenn"`` (aliases ``"sevennet"``, ``"7net"``),
        ``"grace"``; an ASE calculator (returned unchanged); a :class:`BatchedPotential`
        (its calculator, sharing the model).
    **kwargs:
        ``model=`` (alias ``checkpoint=``): pretrained name or checkpoint path —
        MatterSim ``"mattersim-v1.0.0-1M"`` (default) / ``"...-5M"`` / a ``.pth`` in
        mattersim's format; CHGNet ``"0.3.0"`` (default) / ``"0.2.0"`` / ``"r2scan"`` /
        a file; SevenNet ``"7net-0"`` (default) / a checkpoint; GRACE
        ``"GRACE-2L-OMAT-large-ft-AM"`` (default) or any name tensorpotential knows
        (downloaded into ``$GRACE_CACHE``, default ``~/.cache/grace``, on first use) /
        a local model folder (``saved_model.pb`` + ``variables/``, see
        :func:`grace_model_path`).
        ``device=`` (``"cpu"``, ``"cuda"``; default: CUDA when available; for GRACE,
        TensorFlow's device: a visible GPU when there is one).
        ``modal=`` for multi-fidelity SevenNet models. Other keywords go to the
        calculator's constructor (for GRACE, tensorpotential's ``TPCalculator``, with
        :data:`GRACE_CALCULATOR_DEFAULTS` unless given).

    Raises
    ------
    ValueError
        For an unknown potential name (named in the message), or an unknown GRACE
        model name.
    FileNotFoundError
        For a checkpoint or model folder that does not exist.
    RuntimeError
        For a GRACE model that is neither cached nor downloadable (offline), or
        ``device="cuda"`` when TensorFlow sees no GPU.
    ImportError
        When the potential's package is missing (with the ``pip install`` line).

    Examples
    --------
    >>> from ase.build import bulk
    >>> atoms = bulk("Si")
    >>> atoms.calc = get_calculator("chgnet")  # doctest: +SKIP
    >>> atoms.get_potential_energy()           # doctest: +SKIP
    >>> atoms.calc = get_calculator("grace", model="path/to/GRACE-model-folder")  # doctest: +SKIP
    """
    if isinstance(name, BatchedPotential):
        return name.as_calculator()
    if isinstance(name, Calculator) or (not isinstance(name, str) and hasattr(name, "get_potential_energy")):
        return name
    if not isinstance(name, str):
        raise TypeError(f"expected a potential name or an ASE calculator, got {type(name).__name__}")
    canonical = canonical_name(name)
    model = _model_option(kwargs)
    device = kwargs.pop("device", None)
    return _CALCULATORS[canonical](model, device, **kwargs)


def _is_instance_of(obj: Any, module: str, cls_name: str) -> bool:
    """isinstance without importing a heavy package that the user has not imported."""
    mod = sys.modules.get(module)
    cls = getattr(mod, cls_name, None) if mod is not None else None
    return cls is not None and isinstance(obj, cls)


def get_potential(calculator: str | Calculator | BatchedPotential, **kwargs: Any) -> BatchedPotential:
    """A :class:`BatchedPotential` for a potential name, an ASE calculator or a potential.

    Names load the torch model once (MatterSim, CHGNet, SevenNet: batched autograd path;
    GRACE: chain rule through its ASE calculator). A MatterSim, CHGNet or SevenNet ASE
    calculator is wrapped around its own model (no reload). Any other ASE calculator
    uses the chain rule (:class:`ASECalculatorPotential`).

    Parameters
    ----------
    calculator:
        Name, ASE calculator or :class:`BatchedPotential` (returned unchanged).
    **kwargs:
        As for :func:`get_calculator` (``model=``/``checkpoint=``, ``device=``, ``modal=``).

    Examples
    --------
    >>> pot = get_potential("chgnet", device="cpu")  # doctest: +SKIP
    >>> from ase.calculators.emt import EMT
    >>> get_potential(EMT())
    ASECalculatorPotential(EMT)
    """
    if isinstance(calculator, BatchedPotential):
        return calculator
    if isinstance(calculator, str):
        canonical = canonical_name(calculator)
        model = _model_option(kwargs)
        device = kwargs.pop("device", None)
        modal = kwargs.pop("modal", None)
        if kwargs:
            raise TypeError(f"unexpected keyword(s) for get_potential({calculator!r}): {sorted(kwargs)}")
        if canonical == "mattersim":
            return MatterSimPotential.from_checkpoint(model, device=device)
        if canonical == "chgnet":
            return CHGNetPotential.from_pretrained("0.3.0" if model is None else model, device=device)
        if canonical == "sevenn":
            return SevenNetPotential.from_checkpoint(model or "7net-0", modal=modal, device=device)
        return ASECalculatorPotential(grace_calculator(model, device), name="grace")
    if kwargs:
        raise TypeError(f"keywords {sorted(kwargs)} only apply to a potential given by name")
    if _is_instance_of(calculator, "mattersim.forcefield.potential", "MatterSimCalculator"):
        return MatterSimPotential(calculator.potential, device=getattr(calculator, "device", None))
    if _is_instance_of(calculator, "chgnet.model.dynamics", "CHGNetCalculator"):
        return CHGNetPotential(calculator.model, device=getattr(calculator, "device", None))
    if _is_instance_of(calculator, "sevenn.calculator", "SevenNetCalculator"):
        return SevenNetPotential(calculator.model, modal=getattr(calculator, "modal", None),
                                 device=getattr(calculator, "device", None))
    if isinstance(calculator, Calculator) or hasattr(calculator, "get_potential_energy"):
        return ASECalculatorPotential(calculator)
    raise TypeError(f"expected a potential name, an ASE calculator or a BatchedPotential, got {type(calculator).__name__}")
