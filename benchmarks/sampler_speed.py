"""Benchmark: MatterGen's own sampler vs aseguide's, same model, same batch (issue 7).

Settings (``--settings``, comma separated; all by default):

``mattergen``
    MatterGen 1.0.3's ``GuidedPredictorCorrector`` with its default predictors and
    correctors (one Langevin corrector step, SNR 0.4 / 0.2, ``max_step_size`` 1e6),
    guidance scale 1, fp32 as shipped (TF32 off), on the unconditioned model.
``mattergen_cfg``
    The same on the ``chemical_system``-conditioned model with classifier-free guidance
    factor 2.0 (two network calls per score).
``unguided``
    aseguide's :class:`~aseguide.optimize.GuidedDiffusion` without objective.
``backward``
    Backward-only guidance, K = 1, m = 2, with a geometric objective
    (``VolumePerAtom(12) + MinDistance(1.2)``).
``backward_k3``
    The same with K = 3 passes (target: at most 1.05·K × one pass).
``forward``
    Forward-only guidance, K = 1 (target: at most 2.2 × an unguided step).
``paper``
    The paper's setting: ``chemical_system`` conditioning with factor 2.0, K = 3,
    m = 2, forward and backward guidance on (g = k = 0.01), conditioned model.

Each aseguide setting runs under every policy of ``--precisions`` (``fp32`` = equal
precision with MatterGen, ``mixed`` = TF32 + bf16 network on CUDA; on CPU
``mixed`` is plain fp32).

How steps are timed
-------------------
A randomly initialised network predicts scores of order 1e-3 and MatterGen's Langevin
corrector takes steps inversely proportional to the squared score, so cells blow up
within a step and the radius graph of the next network call becomes unrepresentative
(huge cells: up to 11^3 periodic images). Two measures keep the timed work realistic:
the random models are built with ``make_tiny_model(..., calibrate=True)`` (final force
layers rescaled to unit-rms output, like a trained model; speed does not depend on the
weight values), and every timed step starts from the *same* prior state, drawn from
the lattice prior at MP-20's density, i.e. realistic cells and radius graphs:

* MatterGen's sampler runs its own ``_denoise`` loop (all its per-step code) over
  ``--steps-timed`` steps with an inpainting mask of ones on positions and cell, so
  its state stays the prior (the mask costs one ``lerp`` per step);
* aseguide's :class:`GuidedDiffusion` takes ``--steps-timed`` calls of ``step()`` at
  schedule index ``--t`` (default t ≈ 0.05, inside the guided range, where x̂0 is
  close to x_t and the objective sees realistic cells), its state reset to the prior
  before each.

One step = corrector + predictor (+ guidance); one warm-up step precedes the timing.
``structures/hour`` = ``batch_size * 3600 / (seconds per step * n_steps)`` for the
full ``--n-steps`` (1000) schedule. Peak GPU memory is ``torch.cuda.max_memory_allocated``
of each setting (weights included). Speed does not depend on weight values, so random
weights measure the released architecture; ``--checkpoint`` /
``--conditioned-checkpoint`` use real ones.

Run on a GPU::

    python benchmarks/sampler_speed.py --model full --batch-size 256 --n-atoms 20 --steps-timed 5

and on a CPU (smoke, well under a minute)::

    python benchmarks/sampler_speed.py --model tiny --batch-size 8 --steps-timed 2

Prints a table and a final JSON line (``--json FILE`` also writes it).
"""

from __future__ import annotations

import argparse
import functools
import json
import os

os.environ.setdefault("TQDM_DISABLE", "1")  # MatterGen's denoising loop draws a progress bar
import tempfile
import time
from pathlib import Path
from typing import Any

import torch

from aseguide.precision import PRECISIONS, check_precision

#: aseguide settings: whether the conditioned model is used, and GuidedDiffusion keywords.
ASEGUIDE_SETTINGS: dict[str, dict[str, Any]] = {
    "unguided": {"conditioned": False, "guided": False, "options": {}},
    "backward": {"conditioned": False, "guided": True,
                 "options": {"forward_strength": 0.0, "backward_strength": 0.01, "backward_steps": 2,
                             "recurrence": 1}},
    "backward_k3": {"conditioned": False, "guided": True,
                    "options": {"forward_strength": 0.0, "backward_strength": 0.01, "backward_steps": 2,
                                "recurrence": 3}},
    "forward": {"conditioned": False, "guided": True,
                "options": {"forward_strength": 0.01, "backward_strength": 0.0, "backward_steps": 0,
                            "recurrence": 1}},
    "paper": {"conditioned": True, "guided": True,
              "options": {"forward_strength": 0.01, "backward_strength": 0.01, "backward_steps": 2,
                          "recurrence": 3, "guidance_factor": 2.0}},
}
#: MatterGen's own sampler: whether the conditioned model is used, and the guidance scale.
MATTERGEN_SETTINGS: dict[str, dict[str, Any]] = {
    "mattergen": {"conditioned": False, "guidance_scale": 1.0},
    "mattergen_cfg": {"conditioned": True, "guidance_scale": 2.0},
}
SETTINGS = tuple(MATTERGEN_SETTINGS) + tuple(ASEGUIDE_SETTINGS)
#: Chemical system of the conditioned settings.
CHEMICAL_SYSTEM = "Li-Co-O"


def build_model(size: str, conditioned: bool, directory: str | os.PathLike, device: str | None = None,
                checkpoint: str | os.PathLike | None = None):
    """A MatterGen model: ``checkpoint`` if given, else random weights of size ``"full"`` or ``"tiny"``.

    Parameters
    ----------
    size:
        ``"full"``: the released architecture (GemNet-T 512, 4 blocks, cutoff 7 Å, 50
        neighbours); ``"tiny"``: :data:`aseguide.testing.TINY_SIZE`.
    conditioned:
        Build a ``chemical_system``-conditioned model.
    directory:
        Where the random model is written.
    device:
        Torch device (default: CUDA when available).
    checkpoint:
        A MatterGen checkpoint directory (or released name) to load instead.

    Returns
    -------
    aseguide.models.mattergen.MatterGenModel
        The loaded model.
    """
    from aseguide.models import load_model
    from aseguide.models.mattergen_config import FULL_SIZE
    from aseguide.testing import make_tiny_model

    if checkpoint is not None:
        return load_model(checkpoint, device=device)
    if size not in ("full", "tiny"):
        raise ValueError(f"model size must be 'full' or 'tiny', got {size!r}")
    sizes = {**FULL_SIZE, "cutoff": 7.0, "max_neighbors": 50} if size == "full" else {}
    # Calibrated output scale (see make_tiny_model): one corrector step from the prior then
    # gives a realistic cell, as with trained weights; uncalibrated, the corrector blows the
    # cell up and the predictor's radius graph (11^3 images) dominates the step.
    path = make_tiny_model(directory, conditioned=conditioned, calibrate=True, **sizes)
    return load_model(path, device=device)


def _synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _reset_peak(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(device)


def _peak_gib(device: torch.device) -> float | None:
    return torch.cuda.max_memory_allocated(device) / 2**30 if device.type == "cuda" else None


def mattergen_sampler(model, guidance_scale: float, n_steps: int):
    """MatterGen's own ``GuidedPredictorCorrector`` on ``model``'s network, MatterGen's defaults."""
    from mattergen.common.diffusion.predictors_correctors import (
        LatticeAncestralSamplingPredictor,
        LatticeLangevinDiffCorrector,
    )
    from mattergen.diffusion.d3pm.d3pm_predictors_correctors import D3PMAncestralSamplingPredictor
    from mattergen.diffusion.sampling.classifier_free_guidance import GuidedPredictorCorrector
    from mattergen.diffusion.wrapped.wrapped_predictors_correctors import (
        WrappedAncestralSamplingPredictor,
        WrappedLangevinCorrector,
    )
    from mattergen.property_embeddings import SetConditionalEmbeddingType, SetUnconditionalEmbeddingType

    from aseguide.models.mattergen_config import sampler_settings

    partial = functools.partial
    return GuidedPredictorCorrector(
        diffusion_module=model.diffusion_module, device=model.device,
        n_steps_corrector=sampler_settings["n_steps_corrector"], N=n_steps, eps_t=1.0 / n_steps,
        predictor_partials={"pos": partial(WrappedAncestralSamplingPredictor),
                            "cell": partial(LatticeAncestralSamplingPredictor),
                            "atomic_numbers": partial(D3PMAncestralSamplingPredictor, predict_x0=True)},
        corrector_partials={
            "pos": partial(WrappedLangevinCorrector, max_step_size=sampler_settings["max_step_size"],
                           snr=sampler_settings["positions_corrector_snr"]),
            "cell": partial(LatticeLangevinDiffCorrector, max_step_size=sampler_settings["max_step_size"],
                            snr=sampler_settings["lattice_corrector_snr"])},
        guidance_scale=guidance_scale, remove_conditioning_fn=SetUnconditionalEmbeddingType(),
        keep_conditioning_fn=SetConditionalEmbeddingType(),
    )


def time_mattergen(model, *, guidance_scale: float, batch_size: int, n_atoms: int, steps_timed: int,
                   n_steps: int = 1000, t_value: float = 0.05, seed: int = 0) -> dict[str, Any]:
    """Seconds per step of MatterGen's own sampler, every step from the same prior state.

    The sampler's ``_denoise`` loop runs ``steps_timed`` steps at ``t ≈ t_value`` with an
    inpainting mask of ones on positions and cell (the state stays the prior).
    """
    if steps_timed < 2:
        raise ValueError("steps_timed must be >= 2 (MatterGen's loop divides by N - 1)")
    conditions = {"chemical_system": CHEMICAL_SYSTEM} if guidance_scale != 1.0 else None
    sampler = mattergen_sampler(model, guidance_scale, n_steps)
    session = model.session(torch.full((batch_size,), n_atoms), n_steps, conditions=conditions,
                            guidance_factor=guidance_scale, precision="fp32")
    torch.manual_seed(seed)
    prior = session._graph(session.prior())
    mask = {"pos": torch.ones_like(prior["pos"]), "cell": torch.ones_like(prior["cell"])}
    sampler._max_t, sampler._eps_t = t_value, t_value - 1e-4  # times of the timed steps

    def steps(n: int) -> None:
        sampler.N = n
        sampler._denoise(batch=prior, mask=dict(mask), record=False)

    device = model.device
    with torch.no_grad():
        steps(2)  # warm-up
        _synchronize(device)
        _reset_peak(device)
        start = time.perf_counter()
        steps(steps_timed)
        _synchronize(device)
        seconds = (time.perf_counter() - start) / steps_timed
    return {"seconds_per_step": seconds, "peak_gib": _peak_gib(device)}


def default_objective():
    """The geometric objective of the guided settings: volume per atom and short contacts."""
    from aseguide.constraints import Combined, MinDistance, VolumePerAtom

    return Combined([VolumePerAtom(12.0), MinDistance(1.2)])


def time_aseguide(model, setting: str, *, precision: str, batch_size: int, n_atoms: int, steps_timed: int,
                  n_steps: int = 1000, t_value: float = 0.05, seed: int = 0, objective=None) -> dict[str, Any]:
    """Seconds per :meth:`GuidedDiffusion.step` of one aseguide setting, every step from the prior state."""
    from aseguide.optimize import GuidedDiffusion

    spec = ASEGUIDE_SETTINGS[setting]
    check_precision(precision)
    options = dict(spec["options"])
    if spec["conditioned"]:
        options["chemical_system"] = CHEMICAL_SYSTEM
    guide = (objective or default_objective()) if spec["guided"] else None
    device = model.device
    with GuidedDiffusion(model, guide, batch_size=batch_size, num_atoms=n_atoms, steps=n_steps, seed=seed,
                         precision=precision, **options) as opt:
        times = opt.session.timesteps().detach().cpu()
        index = int(torch.argmin((times - t_value).abs()))
        prior = opt._x
        if guide is not None and opt.strengths(index) == (0.0, 0.0):
            raise ValueError(f"t={t_value} is outside the guided range of setting {setting!r}")

        def step() -> None:
            opt.nsteps, opt._x = index, prior  # same state and time for every timed step
            opt.step()

        step()  # warm-up
        _synchronize(device)
        _reset_peak(device)
        start = time.perf_counter()
        for _ in range(steps_timed):
            step()
        _synchronize(device)
        seconds = (time.perf_counter() - start) / steps_timed
    return {"seconds_per_step": seconds, "peak_gib": _peak_gib(device)}


def structures_per_hour(seconds_per_step: float, batch_size: int, n_steps: int = 1000) -> float:
    """Structures per hour of a ``n_steps`` schedule at ``seconds_per_step`` for ``batch_size`` structures."""
    return batch_size * 3600.0 / (seconds_per_step * n_steps)


def ratios(results: dict[str, dict[str, Any]]) -> dict[str, float]:
    """The ratios of issue 7's targets from the per-setting results (missing settings are skipped).

    Keys ``speedup_unguided_<precision>`` (MatterGen step / aseguide unguided step, target
    ≥ 1 at fp32, ≥ 2 at mixed), ``speedup_paper_<precision>`` (MatterGen CFG 2.0
    step / paper-setting step), ``backward_over_unguided_<precision>`` (≤ 1.15),
    ``backward_k3_over_backward_<precision>`` (≤ 3.15), ``forward_over_unguided_<precision>``
    (≤ 2.2), ``hours_paper_1000_<precision>`` and ``minutes_unguided_1000_<precision>``
    (≤ 1 h, ≤ 15 min).
    """
    out: dict[str, float] = {}

    def sec(name: str) -> float | None:
        return results[name]["seconds_per_step"] if name in results else None

    precisions = sorted({name.split("@")[1] for name in results if "@" in name})
    for p in precisions:
        pairs = {
            f"speedup_unguided_{p}": (sec("mattergen"), sec(f"unguided@{p}")),
            f"speedup_paper_{p}": (sec("mattergen_cfg"), sec(f"paper@{p}")),
            f"backward_over_unguided_{p}": (sec(f"backward@{p}"), sec(f"unguided@{p}")),
            f"backward_k3_over_backward_{p}": (sec(f"backward_k3@{p}"), sec(f"backward@{p}")),
            f"forward_over_unguided_{p}": (sec(f"forward@{p}"), sec(f"unguided@{p}")),
        }
        for key, (a, b) in pairs.items():
            if a is not None and b is not None:
                out[key] = a / b
        for name, key, scale in ((f"paper@{p}", f"hours_paper_1000_{p}", 3600.0),
                                 (f"unguided@{p}", f"minutes_unguided_1000_{p}", 60.0)):
            if name in results:
                out[key] = 1000.0 / results[name]["structures_per_hour"] * 3600.0 / scale
    return out


def run(*, model: str = "tiny", batch_size: int = 8, n_atoms: int = 20, steps_timed: int = 3,
        n_steps: int = 1000, t_value: float = 0.05, settings: tuple[str, ...] = SETTINGS,
        precisions: tuple[str, ...] = ("fp32", "mixed"), device: str | None = None,
        checkpoint: str | None = None, conditioned_checkpoint: str | None = None) -> dict[str, Any]:
    """Time every requested setting; return ``{"config": ..., "results": ..., "ratios": ...}``."""
    unknown = sorted(set(settings) - set(SETTINGS))
    if unknown:
        raise ValueError(f"unknown setting(s) {unknown}; known: {list(SETTINGS)}")
    for p in precisions:
        check_precision(p)
    results: dict[str, dict[str, Any]] = {}
    with tempfile.TemporaryDirectory() as folder:
        models: dict[bool, Any] = {}

        def get(conditioned: bool):
            if conditioned not in models:
                path = conditioned_checkpoint if conditioned else checkpoint
                models[conditioned] = build_model(model, conditioned, Path(folder) / f"c{int(conditioned)}",
                                                  device, path)
                if conditioned and "chemical_system" not in models[conditioned].conditions:
                    raise ValueError("the conditioned settings need a chemical_system-conditioned checkpoint")
            return models[conditioned]

        common = dict(batch_size=batch_size, n_atoms=n_atoms, steps_timed=steps_timed, n_steps=n_steps,
                      t_value=t_value)
        for name in settings:
            if name in MATTERGEN_SETTINGS:
                spec = MATTERGEN_SETTINGS[name]
                result = time_mattergen(get(spec["conditioned"]), guidance_scale=spec["guidance_scale"], **common)
                results[name] = {**result, "precision": "fp32 (MatterGen)"}
            else:
                for p in precisions:
                    result = time_aseguide(get(ASEGUIDE_SETTINGS[name]["conditioned"]), name, precision=p,
                                           **common)
                    results[f"{name}@{p}"] = {**result, "precision": p}
        device_used = str(next(iter(models.values())).device) if models else str(device)
    for result in results.values():
        result["ms_per_step"] = 1000.0 * result["seconds_per_step"]
        result["structures_per_hour"] = structures_per_hour(result["seconds_per_step"], batch_size, n_steps)
    config = {"model": checkpoint or model, "conditioned_model": conditioned_checkpoint or model,
              "batch_size": batch_size, "n_atoms": n_atoms, "steps_timed": steps_timed, "n_steps": n_steps,
              "t": t_value, "device": device_used, "torch": torch.__version__,
              "gpu": torch.cuda.get_device_name() if device_used.startswith("cuda") else None}
    return {"config": config, "results": results, "ratios": ratios(results)}


def format_table(report: dict[str, Any]) -> str:
    """The results as a plain-text table followed by the ratios."""
    lines = [f"{'setting':<22} {'ms/step':>10} {'structures/h':>13} {'peak GiB':>9}"]
    for name, r in report["results"].items():
        peak = f"{r['peak_gib']:.2f}" if r["peak_gib"] is not None else "-"
        lines.append(f"{name:<22} {r['ms_per_step']:>10.1f} {r['structures_per_hour']:>13.1f} {peak:>9}")
    lines += [f"{key:<34} {value:.3f}" for key, value in report["ratios"].items()]
    return "\n".join(lines)


def _precision_list(text: str) -> tuple[str, ...]:
    """``--precisions``: comma-separated policies, each checked before any model is built."""
    precisions = tuple(p.strip() for p in text.split(",") if p.strip())
    try:
        for p in precisions:
            check_precision(p)
    except ValueError as error:
        raise argparse.ArgumentTypeError(str(error)) from None
    if not precisions:
        raise argparse.ArgumentTypeError(f"no precision in {text!r}; give some of {list(PRECISIONS)}")
    return precisions


def main(argv: list[str] | None = None) -> dict[str, Any]:
    """Command-line entry point; returns the report."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", choices=["full", "tiny"], default="tiny",
                        help="random-weight architecture when no checkpoint is given")
    parser.add_argument("--checkpoint", default=None, help="unconditioned MatterGen checkpoint (directory or name)")
    parser.add_argument("--conditioned-checkpoint", default=None, help="chemical_system-conditioned checkpoint")
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--n-atoms", type=int, default=20)
    parser.add_argument("--steps-timed", type=int, default=3)
    parser.add_argument("--n-steps", type=int, default=1000, help="schedule length (structures/hour use it)")
    parser.add_argument("--t", type=float, default=0.05, help="diffusion time of the timed steps")
    parser.add_argument("--settings", default=",".join(SETTINGS))
    parser.add_argument("--precisions", default="fp32,mixed", type=_precision_list,
                        help=f"comma separated, of {list(PRECISIONS)} (default: %(default)s)")
    parser.add_argument("--device", default=None)
    parser.add_argument("--json", default=None, help="also write the report to this file")
    args = parser.parse_args(argv)
    report = run(model=args.model, batch_size=args.batch_size, n_atoms=args.n_atoms, steps_timed=args.steps_timed,
                 n_steps=args.n_steps, t_value=args.t, settings=tuple(s for s in args.settings.split(",") if s),
                 precisions=args.precisions, device=args.device,
                 checkpoint=args.checkpoint, conditioned_checkpoint=args.conditioned_checkpoint)
    print(format_table(report))
    print(json.dumps(report))
    if args.json:
        Path(args.json).write_text(json.dumps(report, indent=2))
    return report


if __name__ == "__main__":
    main()
