"""Do a run's spectral tokens carry information? Token cosines within and across modalities.

For a finished (or running) run folder: rebuild its recipe (``config.yaml``), compute the
spectral tokens of up to ``--images`` training images of every client with the tokenizer at
initialisation and with the run's last shared weights, and print the mean cosine of tokens
within one modality and across two, the bank's entries per client and modality, and how
often an image's nearest token (leave-one-out) comes from its own modality.

    python benchmarks/spectral_tokens.py runs/quickstart/version_0
    python benchmarks/spectral_tokens.py runs/quickstart   # its newest version

Collapsed tokens (the failure this guards against) read about 0.999 everywhere; informative
ones have a clearly lower cosine across modalities than within one, and a same-modality
nearest-neighbour rate well above 1 / modalities.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch
import torch.nn.functional as F

from omnifm.federated.checkpoint import LAST, load_checkpoint
from omnifm.federated.client import Client
from omnifm.federated.health import modality_cosines
from omnifm.recipe import load_recipe
from omnifm.report import _run_folder


def client_tokens(recipe, images: int) -> dict[str, tuple[str, torch.Tensor]]:
    """``{client: (modality, tokens)}`` with the recipe's model as it is now."""
    dm = recipe.datamodule
    dm.prepare_data()
    dm.setup("fit")
    out = {}
    for name in dm.client_names():
        client = Client(name, dm.modality(name), dm.client_datamodule(name))
        out[name] = (client.modality, client.spectral_tokens(recipe.model, images))
    return out


def nearest_same_modality(tokens: torch.Tensor, tags: list[str]) -> float:
    """Share of tokens whose nearest other token has the same modality tag."""
    x = F.normalize(tokens.double(), dim=-1)
    sims = x @ x.T
    sims.fill_diagonal_(-2.0)
    nearest = sims.argmax(dim=1).tolist()
    return sum(tags[i] == tags[j] for i, j in enumerate(nearest)) / len(tags)


def table(rows: list[tuple[str, dict]]) -> str:
    lines = [
        "| tokenizer | cosine within one modality | across modalities | nearest neighbour "
        "same modality |",
        "|---|---|---|---|",
    ]
    for label, found in rows:
        tags = [m for m, t in found.values() for _ in range(len(t))]
        tokens = torch.cat([t for _, t in found.values()])
        within, across = modality_cosines(tokens, tags)
        nn = nearest_same_modality(tokens, tags)
        lines.append(f"| {label} | {within:.4f} | {across:.4f} | {nn:.3f} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("run", help="run folder output/name/version_N (or output/name)")
    parser.add_argument("--images", type=int, default=256, help="training images per client")
    args = parser.parse_args(argv)
    run = _run_folder(Path(args.run))
    recipe = load_recipe((run / "config.yaml").read_text())
    model = recipe.model
    if model.stack is None or model.stack.tokenizer is None:
        sys.exit(f"{run}: the model has no spectral tokenizer (stack: null)")
    initial = client_tokens(recipe, args.images)
    state = load_checkpoint(run / "checkpoints" / LAST)
    shared = state["server"]["shared"]
    model.load_state_dict(shared, strict=False)  # the tokenizer is shared by every strategy
    trained = client_tokens(recipe, args.images)
    print(f"run {run} after round {state['round']}, {args.images} training images per client\n")
    rows = [("at initialisation", initial), (f"after round {state['round']}", trained)]
    print(table(rows))
    bank = state["server"]["bank"]
    if bank is not None:
        owners = [o for entry in bank["owners"] for o in entry]
        per_client = {name: owners.count(name) for name in trained}
        codes = bank["modality"].tolist()
        per_modality = {m: codes.count(i) for i, m in enumerate(bank["modalities"])}
        print(f"\nbank: {len(codes)} entries; per client {per_client}; per modality {per_modality}")


if __name__ == "__main__":
    main()
