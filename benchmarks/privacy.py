"""Leakage audit: what an attacker recovers from a site's uploads and model, at each epsilon.

Federates OmniFM classification on the MedMNIST hospitals of ``datamodules/
medmnist_cross_modal.yaml`` (``../shared/data/medmnist``: breast ultrasound, colour fundus and
chest X-ray, each split into three sites) with the spectral prototypes uploaded exactly
(k-means) and under differential privacy (``federation.bank.privacy``) at noise multipliers
that spend about the given epsilons over the run (the warm-up and every round's upload, Opacus'
RDP accountant through ``PrivacyLedger``). Each run keeps what an attacker at the server sees
of every site in its last round (the shared weights and the prototypes it uploaded) and, for
the site-level attack, the site's final model (global shared weights plus its personal head
and PSP suffix). Then:

- **inversion**: the attacker computes spectral tokens of public images of one modality (that
  source's validation and test splits, never trained on) with a site's uploaded weights, trains
  an MLP decoder token -> image and token -> low-pass spectrum on them, and decodes the site's
  uploaded prototypes (target: the mean image and mean spectrum of the site's training images
  in that prototype's cluster, the images whose tokens the upload averaged) and, the worst
  case, single-image tokens of its training images (target: the image). SSIM and PSNR
  against a baseline that outputs the public mean image (spectrum); also the best SSIM of a
  prototype's reconstruction with any one training image, against the mean image's;
- **membership on the prototypes**: a candidate image scores the highest cosine of its token
  to the site's uploaded prototypes (and, calibrated, minus the highest cosine to the other
  sites' prototypes of its modality); AUC of the site's training images whose tokens entered
  the upload against the site's held-out test images;
- **membership on the personal parts**: loss attack on the site's final model (members: its
  training images, non-members: its test images); AUC, and the train-test accuracy gap;
- **DP-SGD of local training** (``federation.dp_sgd``, where the library has it): the same
  site-level attack and the accuracy at the given noise multipliers, with the epsilon the run
  logged.

Results per run are cached as JSON in ``--out`` (and each run's capture as ``capture.pt``), so
a rerun skips what is finished; the tables go to ``privacy.md`` and the plot to
``privacy.png`` beside this script (``--result`` to put them elsewhere).

    python benchmarks/privacy.py --out /tmp/privacy
    python benchmarks/privacy.py --smoke --out /tmp/privacy-smoke --result /tmp/p.md
"""

from __future__ import annotations

import argparse
import csv
import json
import math
import statistics
import sys
import time
from dataclasses import dataclass, field
from itertools import islice
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
import yaml
from _machine import available_cores  # benchmarks/_machine.py
from _report import RunRecord, git_state  # benchmarks/_report.py
from torch import Tensor, nn
from torch.utils.data import DataLoader

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
DATA = REPO.parent / "shared" / "data"
SOURCES = {"breastmnist": "ultrasound", "retinamnist": "fundus", "pneumoniamnist": "x-ray"}


@dataclass
class Setting:
    """One privacy setting of the federation."""

    name: str  # run folder and cache key prefix
    label: str  # as the tables show it
    target: float | None = None  # the epsilon asked for (prototypes) or None
    privacy: dict[str, float] | None = None  # federation.bank.privacy
    dp_sgd: dict[str, float] | None = None  # federation.dp_sgd
    kind: str = "prototypes"  # or "dp_sgd"


@dataclass
class Results:
    setting: Setting
    runs: list[dict[str, Any]] = field(default_factory=list)


# the privacy settings ---------------------------------------------------------------------
def epsilon_after(noise_multiplier: float, releases: int, delta: float) -> float:
    """Epsilon ``releases`` private uploads spend (the library's own accounting)."""
    from omnifm.federated.config import PrototypePrivacy
    from omnifm.federated.privacy import PrivacyLedger

    ledger = PrivacyLedger(PrototypePrivacy(noise_multiplier, 1.0, 1e12, delta))
    return ledger.epsilon("site", releases)


def noise_for(epsilon: float, releases: int, delta: float) -> float:
    """The smallest noise multiplier (to 3 significant digits, rounded up) whose
    ``releases`` uploads spend at most ``epsilon``."""
    lo, hi = 0.05, 1000.0
    for _ in range(60):
        mid = math.sqrt(lo * hi)
        lo, hi = (mid, hi) if epsilon_after(mid, releases, delta) > epsilon else (lo, mid)
    digits = 2 - math.floor(math.log10(hi))
    return math.ceil(hi * 10**digits) / 10**digits


def settings(args: argparse.Namespace) -> list[Setting]:
    releases = args.rounds + 1  # the warm-up and every round (participation 1)
    out = [Setting("exact", "none (exact k-means)")]
    for eps in sorted(args.epsilons, reverse=True):
        sigma = noise_for(eps, releases, args.delta)
        privacy = {"noise_multiplier": sigma, "clip": 1.0, "epsilon": eps, "delta": args.delta}
        out.append(Setting(f"eps{eps:g}", f"epsilon {eps:g}", eps, privacy))
    for sigma in args.dp_sgd:
        dp = {"noise_multiplier": sigma, "max_grad_norm": args.max_grad_norm}
        dp |= {"epsilon": args.dp_sgd_epsilon, "delta": args.delta}
        out.append(Setting(f"dpsgd{sigma:g}", f"DP-SGD sigma {sigma:g}", dp_sgd=dp, kind="dp_sgd"))
    return out


def dp_sgd_available() -> bool:
    """Whether the library's recipes take ``federation.dp_sgd`` (DP-SGD of local training)."""
    from omnifm.federated.config import FederationConfig

    return "dp_sgd" in FederationConfig.__dataclass_fields__


# the federation ---------------------------------------------------------------------------
def recipe(args: argparse.Namespace, setting: Setting, seed: int, output: Path) -> dict:
    """The recipe of one run: the quickstart's OmniFM model (``test_resnet``, SGD) on the
    MedMNIST hospitals, one local epoch (or ``--steps``) a round, every site every round."""
    data = yaml.safe_load((REPO / "datamodules" / "medmnist_cross_modal.yaml").read_text())
    data["init_args"]["root"] = str(args.data)
    data["init_args"]["clients"] = [
        c for c in data["init_args"]["clients"] if c["name"] in args.sources
    ]
    stack = {"spectral_dim": 64, "low_pass_size": 16, "top_k": 8, "num_layers": 1}
    stack |= {"num_heads": 4, "num_prefix": 4}
    trainer: dict[str, Any] = {"max_epochs": 1, "accelerator": "cpu"}
    if args.steps:
        trainer = {"max_steps": args.steps, "accelerator": "cpu"}
    federation: dict[str, Any] = {
        "rounds": args.rounds,
        "eval_every": max(1, args.rounds // 5),  # five points of the validation curve
        "participation": 1.0,
        "strategy": "OmniFM",
        "min_clients": 1,
        "seed": seed,
        "output": str(output),
        "name": f"{setting.name}_s{seed}",
        "bank": {"capacity": 256, "prototypes_per_client": 8, "privacy": setting.privacy},
    }
    if setting.dp_sgd is not None:
        federation["dp_sgd"] = setting.dp_sgd
    return {
        "seed_everything": seed,
        "model": {
            "class_path": "omnifm.tasks.ClassificationTask",
            "init_args": {
                "backbone": "test_resnet",
                "embed_dim": 128,
                "stack": {"class_path": "omnifm.blocks.OmniFMStack", "init_args": stack},
                "spalign_weight": 0.1,
                "recalibrate_batches": 8,
                "optimizer": {
                    "class_path": "torch.optim.SGD",
                    "init_args": {"lr": 0.05, "momentum": 0.9},
                },
            },
        },
        "data": data,
        "trainer": trainer,
        "federation": federation,
    }


def train(args: argparse.Namespace, setting: Setting, seed: int, folder: Path) -> dict:
    """Run the federation and keep what the attacks need (``capture.pt`` in ``folder``)."""
    from omnifm.federated import Federation
    from omnifm.federated.messages import FitRes
    from omnifm.recipe import load_recipe

    text = yaml.safe_dump(recipe(args, setting, seed, folder / "runs"), sort_keys=False)
    built = load_recipe(text)
    run = Federation(built.model, built.datamodule, built.config, built.trainer, text)
    last: dict[str, dict[str, Any]] = {}  # per site: its last round's upload
    inputs: dict[str, dict[str, Any]] = {}  # per site: what its last upload summarised
    uploads: dict[str, list[int]] = {n: [] for n in run.clients}  # rounds it uploaded in

    fit_clients = run.fit_clients

    def capturing(round_: int, chosen: list[str]) -> Any:
        for name, result in fit_clients(round_, chosen):
            if isinstance(result, FitRes):
                protos = result.prototypes
                if protos is not None and protos.numel():
                    uploads[name].append(round_)
                last[name] = {
                    "round": round_,
                    "weights": {k: v.detach().clone() for k, v in result.weights.items()},
                    "prototypes": None if protos is None else protos.detach().clone(),
                }
            yield name, result

    run.fit_clients = capturing  # type: ignore[method-assign]
    for name, client in run.clients.items():
        summarize = client.summarize

        def keeping(tokens: Tensor, k: int, seed: int, bank: Any = None, *, _n=name, _f=summarize):
            out = _f(tokens, k, seed, bank)
            inputs[_n] = {"tokens": tokens.detach().clone(), "seed": seed, "bank": bank}
            return out

        client.summarize = keeping  # type: ignore[method-assign]
    start = time.perf_counter()
    rows = run.fit()
    seconds = time.perf_counter() - start
    ledger = run.server.privacy
    capture = {
        "recipe": text,
        "setting": setting.name,
        "seed": seed,
        "rows": rows,
        "seconds": seconds,
        "run_dir": str(run.run_dir),
        "shared": {k: v.clone() for k, v in run.server.shared.items()},
        # the store's copy: a Client holds its personal state only inside a round
        "personal": {n: run.personal_state(n) for n in run.clients},
        "bank": run.server.bank_snapshot(),
        "last": last,
        "inputs": inputs,
        "uploads": uploads,
        "releases": dict(ledger.releases) if ledger is not None else {},
        "epsilon": {n: ledger.epsilon(n) for n in run.clients} if ledger is not None else {},
        "dp_sgd_epsilon": {n: ledger.training_epsilon(n) for n in run.clients}
        if ledger is not None and hasattr(ledger, "training_epsilon")
        else {},
        "library": git_state(),
        "history": read_history(Path(run.run_dir) / "history.csv"),
    }
    torch.save(capture, folder / "capture.pt")
    return capture


def read_history(path: Path) -> list[dict[str, str]]:
    if not path.is_file():
        return []
    with path.open() as f:
        return list(csv.DictReader(f))


def logged_dp_epsilon(history: list[dict[str, str]]) -> float | None:
    """The largest DP-SGD epsilon a run's ``history.csv`` logged (column
    ``privacy/dp_epsilon``, stage ``privacy``), if any."""
    found = []
    for row in history:
        try:
            found.append(float(row.get("privacy/dp_epsilon") or "nan"))
        except ValueError:
            continue
    found = [x for x in found if math.isfinite(x)]
    return max(found) if found else None


# the attacks ------------------------------------------------------------------------------
def images_of(dataset: Any, limit: int | None = None) -> tuple[Tensor, Tensor]:
    """All images ``(n, C, H, W)`` and labels of ``dataset`` in order (at most ``limit``)."""
    xs, ys = [], []
    for batch in DataLoader(dataset, batch_size=256):
        xs.append(batch["image"])
        ys.append(batch["label"].view(-1))
    x, y = torch.cat(xs), torch.cat(ys)
    return (x[:limit], y[:limit]) if limit else (x, y)


@torch.no_grad()
def tokens_of(model: Any, weights: dict[str, Tensor], images: Tensor) -> Tensor:
    """Spectral tokens of ``images`` with the tokenizer of ``weights`` (eval mode)."""
    model.load_state_dict(weights, strict=False)  # the tokenizer is shared: all of it is there
    model.eval()
    return torch.cat([model.stack.tokenizer(x) for x in images.split(256)])


@torch.no_grad()
def spectra_of(model: Any, images: Tensor) -> Tensor:
    """The low-pass log-amplitude windows the tokenizer starts from, flattened."""
    return torch.cat([model.stack.tokenizer.spectrum(x) for x in images.split(256)]).flatten(1)


def train_decoder(x: Tensor, y: Tensor, epochs: int, seed: int) -> Any:
    """An MLP from tokens ``x`` to targets ``y`` (MSE on standardised targets)."""
    gen = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    mu, sd = y.mean(0), y.std(0) + 1e-6
    target = (y - mu) / sd
    net = nn.Sequential(
        nn.Linear(x.shape[1], 256),
        nn.GELU(),
        nn.Linear(256, 256),
        nn.GELU(),
        nn.Linear(256, y.shape[1]),
    )
    opt = torch.optim.Adam(net.parameters(), lr=1e-3, weight_decay=1e-5)
    for _ in range(epochs):
        for idx in torch.randperm(len(x), generator=gen).split(128):
            opt.zero_grad()
            F.mse_loss(net(x[idx]), target[idx]).backward()
            opt.step()
    net.eval()

    def decode(z: Tensor) -> Tensor:
        with torch.no_grad():
            return net(F.normalize(z.float(), dim=1)) * sd + mu

    return decode


def quality(pred: Tensor, target: Tensor, side: int, data_range: float) -> tuple[float, float]:
    """Mean SSIM and PSNR (dB) of flattened ``pred`` against ``target`` (``side`` x ``side``)."""
    from torchmetrics.functional.image import (
        peak_signal_noise_ratio,
        structural_similarity_index_measure,
    )

    p = pred.reshape(-1, 1, side, side).float()
    t = target.reshape(-1, 1, side, side).float()
    ssim = structural_similarity_index_measure(p, t, data_range=data_range, reduction="none")
    psnr = peak_signal_noise_ratio(p, t, data_range=data_range, reduction="none", dim=(1, 2, 3))
    return float(ssim.mean()), float(psnr.mean())


def best_ssim(pred: Tensor, images: Tensor, side: int, candidates: int = 32) -> float:
    """Per row of ``pred``: the highest SSIM with any one of ``images`` (searched among its
    ``candidates`` nearest in squared error); their mean."""
    from torchmetrics.functional.image import structural_similarity_index_measure

    near = torch.cdist(pred.float(), images.float()).topk(candidates, largest=False).indices
    best = []
    for row, idx in zip(pred.float(), near, strict=True):
        t = images[idx].reshape(-1, 1, side, side).float()
        p = row.reshape(1, 1, side, side).expand_as(t)
        ssim = structural_similarity_index_measure(p, t, data_range=1.0, reduction="none")
        best.append(float(ssim.max()))
    return statistics.fmean(best)


def auc(members: Tensor, others: Tensor) -> float:
    """AUROC of a higher score meaning member."""
    from torchmetrics.functional.classification import binary_auroc

    scores = torch.cat([members, others]).double()
    labels = torch.cat([torch.ones(len(members)), torch.zeros(len(others))]).long()
    return float(binary_auroc(scores, labels))


def balanced_auc(members: Tensor, m_labels: Tensor, others: Tensor, o_labels: Tensor) -> float:
    """AUC within each class (present on both sides), averaged with the members' class
    counts as weights: a split whose label mix differs (PneumoniaMNIST's training images are
    74% pneumonia, its test images 63%) then scores 0.5 for a model that only knows the prior."""
    total, weight = 0.0, 0
    for c in m_labels.unique().tolist():
        m, o = members[m_labels == c], others[o_labels == c]
        if len(m) and len(o):
            total += len(m) * auc(m, o)
            weight += len(m)
    return total / weight if weight else math.nan


def upload_assignment(capture: dict, site: str, tokens: Tensor, k: int) -> Tensor:
    """The cluster of each token in the site's last upload: its nearest centroid (k-means) or,
    private, its nearest start (``Client.summarize``: the bank's entries of its modality
    released before, then random directions from the round's seed; reproduced here)."""
    from omnifm.bank import BankSnapshot

    x = F.normalize(tokens.double(), dim=1)
    inp = capture["inputs"][site]
    protos = capture["last"][site]["prototypes"]
    if not capture_is_private(capture):
        return (x @ F.normalize(protos.double(), dim=1).T).argmax(dim=1)
    starts = torch.randn(k, tokens.shape[1], generator=torch.Generator().manual_seed(inp["seed"]))
    if inp["bank"] is not None:
        snapshot = BankSnapshot.from_state_dict(inp["bank"])
        modality = site_modality(site)
        own = [i for i, m in enumerate(snapshot.modalities) if m == modality][:k]
        starts[: len(own)] = snapshot.vectors[own].to(starts)
    return (x @ F.normalize(starts.double(), dim=1).T).argmax(dim=1)


def capture_is_private(capture: dict) -> bool:
    return yaml.safe_load(capture["recipe"])["federation"]["bank"].get("privacy") is not None


def site_modality(site: str) -> str:
    return SOURCES[site.rsplit("-", 1)[0]]


def match(used: Tensor, tokens: Tensor) -> tuple[Tensor, float]:
    """Index into ``tokens`` of each row of ``used`` (its nearest), and the largest distance."""
    dist = torch.cdist(used.double(), tokens.double())
    best = dist.min(dim=1)
    return best.indices, float(best.values.max())


def inversion(args: argparse.Namespace, capture: dict, model: Any, dm: Any) -> dict[str, Any]:
    """Decoders trained on public images of ``--modality``, applied to each of its sites'
    uploads; means over those sites."""
    sites = [n for n in dm.client_names() if site_modality(n) == args.modality]
    public = torch.cat([images_of(dm.dataset(n, s))[0] for n in sites for s in ("val", "test")])
    pub_img = public.mean(dim=1).flatten(1)  # grey level in [0, 1]
    pub_spec = spectra_of(model, public)
    side, spec_side = public.shape[-1], math.isqrt(pub_spec.shape[1])
    spec_range = float(pub_spec.max() - pub_spec.min())
    mean_img, mean_spec = pub_img.mean(0, keepdim=True), pub_spec.mean(0, keepdim=True)
    rows = []
    for i, site in enumerate(sites):
        last = capture["last"][site]
        protos = last["prototypes"]
        if protos is None or not protos.numel():
            continue
        weights = last["weights"]
        pub_tok = tokens_of(model, weights, public)
        dec_img = train_decoder(pub_tok, pub_img, args.decoder_epochs, 100 + i)
        dec_spec = train_decoder(pub_tok, pub_spec, args.decoder_epochs, 200 + i)
        priv, _ = images_of(dm.dataset(site, "train"))
        priv_tok = tokens_of(model, weights, priv)
        used, gap = match(capture["inputs"][site]["tokens"], priv_tok)
        x_img, x_spec = priv.mean(dim=1).flatten(1)[used], spectra_of(model, priv)[used]
        assign = upload_assignment(capture, site, priv_tok[used], protos.shape[0])
        full = [j for j in range(protos.shape[0]) if (assign == j).any()]
        t_img = torch.stack([x_img[assign == j].mean(0) for j in full])
        t_spec = torch.stack([x_spec[assign == j].mean(0) for j in full])
        r_img = dec_img(protos[full]).clamp(0, 1)
        r_spec = dec_spec(protos[full])
        # the worst case: one image's token (a cluster of one), up to 512 of them
        few = slice(0, 512)
        s_img = dec_img(priv_tok[used][few]).clamp(0, 1)
        s_spec = dec_spec(priv_tok[used][few])
        n_few = len(s_img)
        row = {
            "site": site,
            "token_match_distance": gap,
            "images_in_upload": len(used),
            "clusters_filled": len(full),
            "proto_img": quality(r_img, t_img, side, 1.0),
            "proto_img_base": quality(mean_img.expand_as(t_img), t_img, side, 1.0),
            "proto_spec": quality(r_spec, t_spec, spec_side, spec_range),
            "proto_spec_base": quality(mean_spec.expand_as(t_spec), t_spec, spec_side, spec_range),
            "proto_best_ssim": best_ssim(r_img, x_img, side),
            "proto_best_ssim_base": best_ssim(mean_img, x_img, side),
            "token_img": quality(s_img, x_img[few], side, 1.0),
            "token_img_base": quality(mean_img.expand(n_few, -1), x_img[few], side, 1.0),
            "token_spec": quality(s_spec, x_spec[few], spec_side, spec_range),
            "token_spec_base": quality(
                mean_spec.expand(n_few, -1), x_spec[few], spec_side, spec_range
            ),
        }
        rows.append(row)
    out: dict[str, Any] = {"sites": rows, "public_images": len(public)}
    for key in rows[0] if rows else []:
        if isinstance(rows[0][key], tuple):
            out[key] = [statistics.fmean(r[key][m] for r in rows) for m in (0, 1)]
    return out


@torch.no_grad()
def membership(args: argparse.Namespace, capture: dict, model: Any, dm: Any) -> dict[str, Any]:
    """Membership AUCs per site: on its last upload of prototypes, and on its final model."""
    from omnifm.bank import BankSnapshot

    bank = BankSnapshot.from_state_dict(capture["bank"]) if capture["bank"] is not None else None
    names = list(dm.client_names())
    protos = {n: capture["last"][n]["prototypes"] for n in names if n in capture["last"]}
    rows = []
    for site in names:
        train_x, train_y = images_of(dm.dataset(site, "train"))
        test_x, test_y = images_of(dm.dataset(site, "test"))
        row: dict[str, Any] = {"site": site, "members": len(train_x), "non_members": len(test_x)}
        p = protos.get(site)
        if p is not None and p.numel():
            weights = capture["last"][site]["weights"]
            tok_train = tokens_of(model, weights, train_x)
            tok_test = tokens_of(model, weights, test_x)
            used, _ = match(capture["inputs"][site]["tokens"], tok_train)
            tok_train, y_used = tok_train[used.unique()], train_y[used.unique()]
            own = F.normalize(p.double(), dim=1)
            others = [
                F.normalize(protos[n].double(), dim=1)
                for n in names
                if n != site
                and site_modality(n) == site_modality(site)
                and protos.get(n) is not None
            ]

            def score(t: Tensor, calibrated: bool, own=own, others=others) -> Tensor:
                s = (t.double() @ own.T).max(dim=1).values
                if calibrated and others:
                    s = s - (t.double() @ torch.cat(others).T).max(dim=1).values
                return s

            row["proto_auc"] = auc(score(tok_train, False), score(tok_test, False))
            row["proto_auc_calibrated"] = auc(score(tok_train, True), score(tok_test, True))
            for cal, key in (
                (False, "proto_auc_balanced"),
                (True, "proto_auc_calibrated_balanced"),
            ):
                m, o = score(tok_train, cal), score(tok_test, cal)
                row[key] = balanced_auc(m, y_used, o, test_y)
        # the site's final model: global shared weights plus its personal parts
        model.load_state_dict({**capture["shared"], **capture["personal"][site]}, strict=True)
        ordered = DataLoader(dm.dataset(site, "train"), batch_size=dm.batch_size)
        model.recalibrate_batch_norm(islice(ordered, 8))  # as the federation's evaluation does
        model.eval()
        losses, correct = {}, {}
        for split, (x, y) in (("train", (train_x, train_y)), ("test", (test_x, test_y))):
            ls, cs = [], []
            for xb, yb in zip(x.split(256), y.split(256), strict=True):
                logits, _ = model({"image": xb, "label": yb}, bank)
                ls.append(F.cross_entropy(logits, yb, reduction="none"))
                cs.append(logits.argmax(dim=1) == yb)
            losses[split], correct[split] = torch.cat(ls), torch.cat(cs).double()
        row["personal_auc"] = auc(-losses["train"], -losses["test"])
        row["personal_auc_balanced"] = balanced_auc(
            -losses["train"], train_y, -losses["test"], test_y
        )
        row["train_acc"] = float(correct["train"].mean())
        row["test_acc"] = float(correct["test"].mean())
        rows.append(row)
    out: dict[str, Any] = {"sites": rows}
    keys = ["proto_auc", "proto_auc_calibrated", "personal_auc", "train_acc", "test_acc"]
    keys += ["proto_auc_balanced", "proto_auc_calibrated_balanced", "personal_auc_balanced"]
    for key in keys:
        values = [r[key] for r in rows if key in r and math.isfinite(r[key])]
        out[key] = statistics.fmean(values) if values else None
    return out


def attack(args: argparse.Namespace, capture: dict) -> dict[str, Any]:
    from omnifm.federated import Federation
    from omnifm.recipe import load_recipe

    built = load_recipe(capture["recipe"])
    dm = built.datamodule
    # the federation builds the model the sites trained (with DP-SGD: its private variant)
    fed = Federation(built.model, dm, built.config, built.trainer, capture["recipe"])
    model = fed.model_of(dm.client_names()[0])
    torch.manual_seed(0)
    result: dict[str, Any] = {"setting": capture["setting"], "seed": capture["seed"]}
    mean = next(r for r in capture["rows"] if r.get("client") == "mean")
    result["accuracy"] = mean.get("test/acc")
    result["train_seconds"] = capture["seconds"]
    result["releases"] = capture["releases"]
    result["uploads"] = {n: len(r) for n, r in capture["uploads"].items()}
    result["epsilon_spent"] = max(capture["epsilon"].values(), default=None)
    result["dp_sgd_epsilon"] = logged_dp_epsilon(capture["history"])
    result["dp_sgd_epsilon_ledger"] = max(capture.get("dp_sgd_epsilon", {}).values(), default=None)
    result["library"] = capture.get("library")
    start = time.perf_counter()
    if model.stack is not None and any(
        site_modality(n) == args.modality for n in dm.client_names()
    ):
        result["inversion"] = inversion(args, capture, model, dm)
    result["membership"] = membership(args, capture, model, dm)
    result["attack_seconds"] = time.perf_counter() - start
    return result


def run_one(args: argparse.Namespace, setting: Setting, seed: int) -> dict[str, Any]:
    """One setting at one seed: from the JSON cache, the capture, or trained now."""
    folder = Path(args.out) / f"{setting.name}_s{seed}"
    cached = folder / "result.json"
    if cached.is_file():
        print(f"{folder.name}: cached", flush=True)
        return {**json.loads(cached.read_text()), "val_curve": val_curve(folder)}
    folder.mkdir(parents=True, exist_ok=True)
    if (folder / "capture.pt").is_file():
        capture = torch.load(folder / "capture.pt", weights_only=False)
    else:
        print(f"{folder.name}: training {args.rounds} rounds", flush=True)
        capture = train(args, setting, seed, folder)
    print(f"{folder.name}: attacking ({capture['seconds']:.0f} s of training)", flush=True)
    result = attack(args, capture)
    cached.write_text(json.dumps(result, indent=1))
    return {**result, "val_curve": val_curve(folder)}


def val_curve(folder: Path) -> list[tuple[int, float]]:
    """(round, mean client validation accuracy) from the run's ``history.csv``."""
    found = sorted(folder.glob("runs/*/version_*/history.csv"), key=lambda p: p.stat().st_mtime)
    rows = read_history(found[-1]) if found else []
    return [
        (int(r["round"]), float(r["val/acc"]))
        for r in rows
        if r.get("stage") == "validate" and r.get("client") == "mean" and r.get("val/acc")
    ]


def late_change(runs: list[dict]) -> str:
    """Seed-mean validation accuracy: its change over the last two points of the curve
    (the last 40% of the rounds)."""
    changes = []
    for r in runs:
        curve = r.get("val_curve") or []
        if len(curve) >= 3:
            changes.append(curve[-1][1] - curve[-3][1])
    return f"{statistics.fmean(changes):+.3f}" if changes else "-"


# the report ---------------------------------------------------------------------------------
def fmt(values: list[float], digits: int = 3) -> str:
    values = [v for v in values if v is not None and math.isfinite(v)]
    if not values:
        return "-"
    mean = statistics.fmean(values)
    if len(values) == 1:
        return f"{mean:.{digits}f}"
    return f"{mean:.{digits}f} ± {statistics.stdev(values):.{digits}f}"


def pick(run: dict, *path: Any) -> Any:
    value: Any = run
    for key in path:
        if value is None:
            return None
        value = value.get(key) if isinstance(value, dict) else value[key]
    return value


def eps_cell(setting: Setting, runs: list[dict]) -> str:
    if setting.kind == "dp_sgd":
        logged = [r["dp_sgd_epsilon"] for r in runs if r.get("dp_sgd_epsilon") is not None]
        return f"{max(logged):.2f} (DP-SGD, logged)" if logged else "not logged"
    if setting.target is None:
        return "∞"
    spent = [r["epsilon_spent"] for r in runs if r.get("epsilon_spent") is not None]
    return f"{max(spent):.2f}" if spent else "-"


def both(runs: list[dict], key: str) -> str:
    """The per-class AUC (± std over seeds) and, in brackets, the AUC over all images."""
    balanced = fmt([pick(r, "membership", f"{key}_balanced") for r in runs])
    return f"{balanced} ({fmt([pick(r, 'membership', key) for r in runs])})"


def tables(results: list[Results], args: argparse.Namespace) -> list[str]:
    lines = [
        "### Utility and membership",
        "",
        "Mean over the sites (and ± std over seeds); AUC 0.5: the attacker learns nothing. "
        "Each AUC is taken within each class and averaged (members' class counts as weights); "
        "in brackets the AUC over all images, which also counts the different label mix of a "
        "source's training and test splits (PneumoniaMNIST: 74% against 63% pneumonia), so "
        "that even a model that only knows the prior scores above 0.5 there.",
        "",
        "| setting | noise multiplier | epsilon spent | uploads per site | test accuracy | "
        "membership AUC, prototypes (all images) | calibrated (all images) | membership AUC, "
        "personal parts, loss (all images) | train - test accuracy | val accuracy change, last "
        "40% of rounds |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for res in results:
        s, runs = res.setting, res.runs
        if not runs:
            continue
        noise = pick(s.__dict__, "privacy", "noise_multiplier") or pick(
            s.__dict__, "dp_sgd", "noise_multiplier"
        )
        uploads = sorted({u for r in runs for u in r["uploads"].values()})
        gap = [r["membership"]["train_acc"] - r["membership"]["test_acc"] for r in runs]
        lines.append(
            f"| {s.label} | {noise if noise is not None else '-'} | {eps_cell(s, runs)} | "
            f"{'-'.join(map(str, (uploads[0], uploads[-1]))) if len(uploads) > 1 else uploads[0]} "
            f"(+ warm-up) | {fmt([r['accuracy'] for r in runs])} | "
            f"{both(runs, 'proto_auc')} | {both(runs, 'proto_auc_calibrated')} | "
            f"{both(runs, 'personal_auc')} | {fmt(gap)} | "
            f"{late_change(runs)} |"
        )
    lines += [
        "",
        f"### Inversion ({args.modality} sites)",
        "",
        "SSIM / PSNR (dB) of the decoder's reconstruction against the target, and of the "
        "public mean image (spectrum) against the same target: the attacker gains only where "
        "the first beats the second. Prototype targets: the mean of the site's training images "
        "(spectra) in that prototype's cluster; best match: the highest SSIM of a reconstructed "
        "prototype with any single training image of the site (among its 32 nearest in "
        "squared error). Single token: one image's token "
        "decoded (the worst case; tokens are never uploaded alone).",
        "",
        "| setting | epsilon spent | prototype -> image SSIM (mean image) | PSNR (mean image) | "
        "best match SSIM (mean image) | prototype -> spectrum SSIM (mean) | PSNR (mean) | "
        "single token -> image SSIM (mean image) | PSNR (mean image) | "
        "single token -> spectrum PSNR (mean) |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for res in results:
        s, runs = res.setting, [r for r in res.runs if r.get("inversion", {}).get("sites")]
        if not runs:
            continue

        def pair(key: str, m: int, d: int = 3, runs=runs) -> str:
            a = fmt([r["inversion"][key][m] for r in runs], d)
            b = fmt([r["inversion"][f"{key}_base"][m] for r in runs], d)
            return f"{a} ({b})"

        best = fmt(
            [statistics.fmean(x["proto_best_ssim"] for x in r["inversion"]["sites"]) for r in runs]
        )
        base = fmt(
            [
                statistics.fmean(x["proto_best_ssim_base"] for x in r["inversion"]["sites"])
                for r in runs
            ]
        )
        lines.append(
            f"| {s.label} | {eps_cell(s, runs)} | {pair('proto_img', 0)} | "
            f"{pair('proto_img', 1, 2)} | "
            f"{best} ({base}) | {pair('proto_spec', 0)} | {pair('proto_spec', 1, 2)} | "
            f"{pair('token_img', 0)} | {pair('token_img', 1, 2)} | {pair('token_spec', 1, 2)} |"
        )
    return lines


def plot(results: list[Results], path: Path) -> None:
    """Gains of the inversion over the public mean, membership AUCs and accuracy against the
    epsilon each site spent (log scale; no DP drawn as a star at the right)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    protos = [r for r in results if r.setting.kind == "prototypes" and r.runs]
    finite = [r for r in protos if r.setting.target is not None]
    exact = [r for r in protos if r.setting.target is None]
    xs = [max(x["epsilon_spent"] for x in r.runs) for r in finite]
    dp = [r for r in results if r.setting.kind == "dp_sgd" and r.runs]
    dp_x = [max((x.get("dp_sgd_epsilon") or math.nan) for x in r.runs) for r in dp]
    right = max([*xs, *(x for x in dp_x if math.isfinite(x))], default=1.0) * 2.5

    def inv(key: str, m: int) -> Any:
        return lambda x: x["inversion"][key][m] - x["inversion"][f"{key}_base"][m]

    def best(x: dict) -> float:
        sites = x["inversion"]["sites"]
        return statistics.fmean(s["proto_best_ssim"] - s["proto_best_ssim_base"] for s in sites)

    panels = [
        (
            "inversion: SSIM gain over the public mean image",
            [
                ("prototype -> image", inv("proto_img", 0)),
                ("prototype -> image, best match", best),
                ("single token -> image", inv("token_img", 0)),
            ],
            0.0,
        ),
        (
            "inversion: PSNR gain over the public mean (dB)",
            [
                ("prototype -> image", inv("proto_img", 1)),
                ("prototype -> low-pass spectrum", inv("proto_spec", 1)),
                ("single token -> image", inv("token_img", 1)),
            ],
            0.0,
        ),
        (
            "membership AUC (within each class)",
            [
                ("prototypes", lambda x: x["membership"]["proto_auc_balanced"]),
                (
                    "prototypes, calibrated",
                    lambda x: x["membership"]["proto_auc_calibrated_balanced"],
                ),
                ("personal parts (loss)", lambda x: x["membership"]["personal_auc_balanced"]),
            ],
            0.5,
        ),
        ("test accuracy", [("OmniFM", lambda x: x["accuracy"])], None),
    ]
    fig, axes = plt.subplots(1, 4, figsize=(19, 4.4))
    for ax, (title, lines, ref) in zip(axes, panels, strict=True):
        for label, get in lines:
            try:
                ms = [statistics.fmean(get(x) for x in r.runs) for r in finite]
                ss = [
                    statistics.stdev([get(x) for x in r.runs]) if len(r.runs) > 1 else 0.0
                    for r in finite
                ]
                ex = [statistics.fmean(get(x) for x in r.runs) for r in exact]
            except (KeyError, TypeError):
                continue
            line = ax.errorbar(xs, ms, yerr=ss, marker="o", capsize=3, label=label)
            if ex:
                ax.plot([right], ex, marker="*", markersize=13, color=line[0].get_color())
        if ref is not None:
            ax.axhline(ref, color="grey", linestyle=":", linewidth=1)
        ax.set_title(title, fontsize=10)
        ax.grid(alpha=0.3)
    shown = [(r, x) for r, x in zip(dp, dp_x, strict=True) if math.isfinite(x)]
    if shown:
        dx = [x for _, x in shown]
        auc_dp = [
            statistics.fmean(x["membership"]["personal_auc_balanced"] for x in r.runs)
            for r, _ in shown
        ]
        acc_dp = [statistics.fmean(x["accuracy"] for x in r.runs) for r, _ in shown]
        axes[2].plot(
            dx, auc_dp, "s--", color="tab:red", label="personal parts, DP-SGD (its epsilon)"
        )
        axes[3].plot(dx, acc_dp, "s--", color="tab:red", label="OmniFM with DP-SGD (its epsilon)")
    ticks: list[float] = []
    for x in sorted(x for x in [*xs, *dp_x] if math.isfinite(x)):
        if not ticks or x > 1.35 * ticks[-1]:  # labels that do not overlap
            ticks.append(round(x, 1))
    for ax in axes:
        ax.set_xscale("log")
        ax.set_xticks([*ticks, right], [*(f"{t:g}" for t in ticks), "no DP"])
        ax.minorticks_off()
        ax.set_xlabel("epsilon spent by each site (delta 1e-5)")
        ax.legend(fontsize=8)
    sites = max((len(x["membership"]["sites"]) for r in results for x in r.runs), default=0)
    fig.suptitle(
        f"Leakage audit, OmniFM on {sites} MedMNIST hospitals: private spectral prototypes "
        "(circles) and DP-SGD (squares); mean ± std over seeds"
    )
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", default="/tmp/privacy", help="run folders and cached results")
    parser.add_argument("--result", type=Path, default=HERE / "privacy.md")
    parser.add_argument("--data", type=Path, default=DATA, help="the folder holding medmnist/")
    parser.add_argument("--rounds", type=int, default=10)
    parser.add_argument("--steps", type=int, default=None, help="local steps (default: 1 epoch)")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    parser.add_argument("--epsilons", type=float, nargs="*", default=[16.0, 8.0, 4.0, 1.0])
    parser.add_argument("--delta", type=float, default=1e-5)
    parser.add_argument("--sources", nargs="+", default=list(SOURCES), choices=list(SOURCES))
    parser.add_argument("--modality", default="x-ray", help="the modality the inversion targets")
    parser.add_argument("--decoder-epochs", type=int, default=100)
    parser.add_argument(
        "--dp-sgd",
        type=float,
        nargs="*",
        default=[0.3, 1.0, 2.0],
        help="DP-SGD noise multipliers (run where the library has federation.dp_sgd)",
    )
    parser.add_argument("--dp-sgd-seeds", type=int, nargs="+", default=[0])
    parser.add_argument("--max-grad-norm", type=float, default=1.0)
    parser.add_argument(
        "--dp-sgd-epsilon",
        type=float,
        default=1e6,
        help="DP-SGD budget: large, so the noise multiplier sets the epsilon",
    )
    parser.add_argument("--threads", type=int, default=available_cores())
    parser.add_argument(
        "--smoke",
        action="store_true",
        help="smallest setting: breast ultrasound only, 1 round of 2 steps, "
        "exact and epsilon 4, seed 0, no DP-SGD",
    )
    args = parser.parse_args(argv)
    if args.smoke:
        args.sources, args.modality, args.rounds, args.steps = ["breastmnist"], "ultrasound", 1, 2
        args.seeds, args.epsilons, args.decoder_epochs, args.dp_sgd = [0], [4.0], 5, []
    record = RunRecord.begin(__file__, argv)
    missing = [s for s in args.sources if not (args.data / "medmnist" / f"{s}.npz").is_file()]
    if missing:
        sys.exit(f"{args.data}/medmnist lacks {missing}: the audit needs the real MedMNIST files")
    torch.set_num_threads(args.threads)
    from omnifm.federated.trainer import quiet_lightning

    chosen = settings(args)
    dp_ok = dp_sgd_available()
    skipped = [s for s in chosen if s.kind == "dp_sgd" and not dp_ok]
    results = [Results(s) for s in chosen]
    # the first seed of every setting before the second: a cut-short call has one of each
    order = sorted(
        (i, seed)
        for i, s in enumerate(chosen)
        if s not in skipped
        for seed in (args.dp_sgd_seeds if s.kind == "dp_sgd" else args.seeds)
    )
    order.sort(key=lambda job: (job[1], chosen[job[0]].kind == "dp_sgd"))
    started = time.perf_counter()
    with quiet_lightning():
        for i, seed in order:
            results[i].runs.append(run_one(args, chosen[i], seed))
    wall = time.perf_counter() - started
    body = [
        "## Protocol",
        "",
        *protocol(args, results),
        "",
        "## Results",
        "",
        *tables(results, args),
        "",
        *notes(results, skipped, args),
        "",
        f"![leakage against epsilon]({args.result.with_suffix('.png').name})",
    ]
    args.result.parent.mkdir(parents=True, exist_ok=True)
    plot(results, args.result.with_suffix(".png"))
    intro = (
        "What an attacker at the server recovers from a site's spectral prototypes and what "
        "an attacker holding a site's final model learns about its patients, with the "
        "prototypes uploaded exactly and under differential privacy at several epsilons, "
        "next to OmniFM's accuracy at each. Written by `benchmarks/privacy.py`."
    )
    lines = ["# Leakage audit (issue 16)", "", intro, "", *body, ""]
    train_s = sum(r.get("train_seconds", 0.0) for res in results for r in res.runs)
    attack_s = sum(r.get("attack_seconds", 0.0) for res in results for r in res.runs)
    lines += record.footer(
        threads=str(args.threads),
        versions=("opacus", "torchmetrics"),
        notes=[
            f"runs: {train_s:.0f} s of federated training and {attack_s:.0f} s of attacks "
            f"(as measured when each ran; cached runs keep their first times); this call "
            f"{wall:.0f} s"
        ],
    )
    args.result.write_text("\n".join(lines))
    print(f"wrote {args.result} and {args.result.with_suffix('.png')} in {record.wall():.1f} s")


def protocol(args: argparse.Namespace, results: list[Results]) -> list[str]:
    sites = ", ".join(f"{s} ({SOURCES[s]})" for s in args.sources)
    budget = f"{args.steps} local steps" if args.steps else "one local epoch"
    return [
        f"- federation: OmniFM classification on {sites}, three IID sites each; the "
        f"quickstart's model (`test_resnet`, embed 128, OmniFM stack with 64-d spectral "
        f"tokens from the 16x16 low-pass window), SGD lr 0.05 momentum 0.9 (weight decay 0.01: "
        "the recipe parser keeps AdamW's default when the class changes), batch 32, "
        f"{budget} a round, {args.rounds} rounds, every site every round, seeds "
        f"{', '.join(map(str, args.seeds))}; 8 prototypes per site and upload.",
        f"- private uploads (`federation.bank.privacy`, clip 1, delta {args.delta:g}): the "
        f"noise multiplier is the smallest whose {args.rounds + 1} uploads (warm-up and every "
        "round) spend at most the target epsilon by the library's accountant; the budget is "
        "the target, so no site stops uploading (the uploads column checks it).",
        f"- inversion on the {args.modality} sites: attacker-public images are that source's "
        "validation and test splits (never trained on); per site, tokens computed with the "
        "shared weights the site uploaded in the last round; two MLP decoders (64 -> 256 -> "
        f"256 -> out, Adam 1e-3, {args.decoder_epochs} epochs) to the grey image (28x28, "
        "[0, 1]) and to the low-pass log-amplitude window (16x16); a prototype is decoded "
        "after scaling to unit norm (tokens are unit vectors). The site's private images are "
        "its training images whose tokens entered its last upload (found by matching the "
        "tokens the upload summarised, distance 0), assigned to clusters as the upload did "
        "(nearest centroid for k-means, nearest start for the private one-step Lloyd).",
        "- membership on prototypes: per site, members = the training images of its last "
        "upload, non-members = its test images (same source, never trained on); score = highest "
        "cosine of the candidate's token (the site's uploaded weights) to the site's 8 "
        "uploaded prototypes; calibrated: minus the highest cosine to the other sites' "
        "prototypes of the same modality.",
        "- membership on personal parts: per site, the final model (global shared weights and "
        "the site's head and PSP suffix, batch norm re-estimated on 8 training batches as the "
        "federation's evaluation does); score = minus the cross-entropy; members = all the "
        "site's training images, non-members = its test images. Utility: mean client test "
        "accuracy after the last round.",
        f"- DP-SGD (`federation.dp_sgd`, max_grad_norm {args.max_grad_norm:g}, delta "
        f"{args.delta:g}, budget {args.dp_sgd_epsilon:g} so that the noise multiplier sets the "
        "epsilon; seeds " + ", ".join(map(str, args.dp_sgd_seeds)) + "): prototypes uploaded "
        "exactly; the federation trains the private variant of the model (Opacus turns batch "
        "norm into group norm); its epsilon is the largest a site logged (`privacy/dp_epsilon` "
        "in the run's `history.csv`).",
    ]


def notes(results: list[Results], skipped: list[Setting], args: argparse.Namespace) -> list[str]:
    out = []
    for res in results:
        for r in res.runs:
            stopped = [n for n, u in r["uploads"].items() if u < args.rounds]
            if stopped:
                out.append(
                    f"- {res.setting.label}, seed {r['seed']}: {', '.join(stopped)} stopped "
                    "uploading"
                )
    trained: dict[str, list[str]] = {}
    for res in results:
        for r in res.runs:
            trained.setdefault(r.get("library") or "unknown", []).append(f"{res.setting.name}")
    if len(trained) > 1:  # runs cached from an earlier state of the library
        out += [
            f"- trained with git {lib}: {', '.join(sorted(set(names)))}"
            for lib, names in trained.items()
        ]
    if skipped:
        out.append(
            "- DP-SGD rows not run: this library's recipes have no `federation.dp_sgd` yet "
            "(rerun with the same command once it has; the script runs noise multipliers "
            + ", ".join(f"{s.dp_sgd['noise_multiplier']:g}" for s in skipped if s.dp_sgd)
            + ")."
        )
    return out


if __name__ == "__main__":
    main()
