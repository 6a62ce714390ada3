"""Cost of candidate CPU architectures for the carbon model (``aseguide train``).

For each candidate GemNet-T size, on real carbon_24 structures (MatterGen's own data
pipeline and loss), in one process:

* parameters and float32 checkpoint size;
* one network call in evaluation mode on 16 structures x 12 atoms (the sampling cost);
* one training step (loss, backward, Adam) at the training batch size, and the
  structure-samples per second it gives.

Usage
-----
    python benchmarks/train_candidates.py --threads 2
    python benchmarks/train_candidates.py --threads 2 --json candidates.json
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import torch

CANDIDATES = {
    # name: GemNet-T sizes (the rest of TrainConfig's defaults)
    "h128-b2-c7-n50": dict(hidden_dim=128, num_blocks=2, cutoff=7.0, max_neighbors=50),
    "h128-b2-c5-n20": dict(hidden_dim=128, num_blocks=2, cutoff=5.0, max_neighbors=20),
    "h96-b2-c5-n16": dict(hidden_dim=96, num_blocks=2, cutoff=5.0, max_neighbors=16),
    "h64-b2-c5-n16": dict(hidden_dim=64, num_blocks=2, cutoff=5.0, max_neighbors=16),
    "h64-b3-c4-n12": dict(hidden_dim=64, num_blocks=3, cutoff=4.0, max_neighbors=12),
}


def _median_seconds(fn, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return sorted(times)[len(times) // 2]


def measure(name: str, sizes: dict, graphs: list, batch_size: int, repeats: int) -> dict:
    from hydra.utils import instantiate
    from mattergen.common.data.collate import collate
    from omegaconf import OmegaConf

    from aseguide import load_model
    from aseguide.models.mattergen_config import lightning_module_config
    from aseguide.train import CARBON_AVERAGE_DENSITY, TrainConfig

    config = TrainConfig(**sizes)
    model_config = lightning_module_config(**config.model_sizes(), average_density=CARBON_AVERAGE_DENSITY)
    torch.manual_seed(0)
    module = instantiate(OmegaConf.create(model_config)["lightning_module"])
    diffusion = module.diffusion_module.train()
    optimizer = torch.optim.Adam(diffusion.parameters(), lr=3e-4)
    parameters = sum(p.numel() for p in diffusion.parameters())
    batch = collate(graphs[:batch_size])

    def train_step() -> None:
        loss, _ = diffusion.calc_loss(batch)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()

    train_step()
    train_seconds = _median_seconds(train_step, repeats)

    with tempfile.TemporaryDirectory() as tmp:
        (Path(tmp) / "checkpoints").mkdir()
        OmegaConf.save(OmegaConf.create(model_config), Path(tmp) / "config.yaml")
        ckpt = Path(tmp) / "checkpoints" / "last.ckpt"
        torch.save({"state_dict": {f"diffusion_module.{k}": v for k, v in diffusion.state_dict().items()}}, ckpt)
        megabytes = ckpt.stat().st_size / 1e6
        from aseguide.testing import sampler_step_seconds

        model = load_model(tmp, device="cpu", max_atoms=24)
        sampler_step_seconds(model, 16, 12)
        step = min(sampler_step_seconds(model, 16, 12) for _ in range(repeats))
    return {"name": name, **sizes, "parameters": parameters, "checkpoint_MB": round(megabytes, 2),
            "network_call_s_16x12": round(step / 2, 3), "train_step_s": round(train_seconds, 3),
            "batch_size": batch_size, "structures_per_s": round(batch_size / train_seconds, 1)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--only", nargs="*", help="candidate names (default: all)")
    parser.add_argument("--json")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    from aseguide.models._mattergen_compat import prepare_mattergen
    from aseguide.train import DEFAULT_DATA, read_dataset, to_chemgraphs

    prepare_mattergen()
    table = read_dataset(DEFAULT_DATA).sample(n=args.batch_size, random_state=0)
    with tempfile.TemporaryDirectory() as tmp:
        graphs = to_chemgraphs(table, tmp)
    rows = []
    for name in args.only or list(CANDIDATES):
        row = measure(name, CANDIDATES[name], graphs, args.batch_size, args.repeats)
        rows.append(row)
        print(json.dumps(row), flush=True)
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=1))


if __name__ == "__main__":
    main()
