"""Run the authors' published training code (UniHD-CEG/walking-noise) for one MNIST MLP config, outside this project.

    git clone https://github.com/UniHD-CEG/walking-noise /tmp/authors && git -C /tmp/authors checkout ec1a086
    .venv/bin/python scripts/authors_code/run_authors_mlp.py --repo /tmp/authors --data-root ../shared/data \
        --noise-std 0.9 --repeat 2 --out results/mnist/gap/authors_code/s0.9_r2.json

Why: issue 24 asks whether any training-side difference between this project and the paper remains, with the
authors' own MLP, noise operator and training loop as the reference. Their code is read from ``--repo`` (a checkout
of theirs) and never copied here; this file only starts it as their ``main.py`` starts, with the settings of their
``experiment_configs/MNIST/mlp_global_noise_experiment.yaml`` (Adam lr 1e-3, cosine schedule, batch 128,
``ToTensor()`` MNIST, multiplicative Gaussian noise in training and evaluation, ``RL_TFC-noBN`` by default).

Three of their imports need their cluster and are replaced by stand-ins: ``util.cluster`` (an artifact root, here a
temporary folder whose ``datasets/MNIST`` links to ``--data-root``'s), ``data.GSC2`` (the Speech Commands loaders,
unused for MNIST) and SEML's logger setup and run statistics (no MongoDB). The final accuracy is what the paper
uses: the mean validation accuracy of the last five epochs. One thread, as the project's runs were compared.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
import types
from pathlib import Path


def stand_ins(artifact_root: Path) -> None:
    """The modules their ``main.py`` imports that only work on their cluster."""
    cluster = types.ModuleType("util.cluster")
    cluster.get_artifact_root = lambda *args, **kwargs: artifact_root
    cluster.get_cluster_name = lambda: None
    cluster.convert_artifact_path_to_local_path = lambda path, **kwargs: Path(path)
    sys.modules["util.cluster"] = cluster
    import util  # their package, from --repo

    util.cluster = cluster
    gsc2 = types.ModuleType("data.GSC2")
    gsc2.GSC2_PyTorch = gsc2.GSC2_TF = None
    sys.modules["data.GSC2"] = gsc2
    import seml

    seml.setup_logger = lambda experiment: None
    seml.collect_exp_stats = lambda run: None


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repo", required=True, help="a checkout of UniHD-CEG/walking-noise")
    parser.add_argument("--data-root", required=True, help="folder holding MNIST/raw (torchvision's layout)")
    parser.add_argument("--noise-std", type=float, required=True)
    parser.add_argument("--repeat", type=int, required=True, help="their general.repeat_number")
    parser.add_argument("--conf", default="RL_TFC-noBN", help="their MLP conf_name (RL_TFC-noBN: w/o BN)")
    parser.add_argument("--epochs", type=int, default=100)
    parser.add_argument("--out", required=True, help="JSON file for the result")
    args = parser.parse_args()
    repo, data_root, out_path = Path(args.repo).resolve(), Path(args.data_root).resolve(), Path(args.out).resolve()
    if not (repo / "main.py").is_file():
        sys.exit(f"error: {repo} holds no main.py; clone UniHD-CEG/walking-noise there")
    if not (data_root / "MNIST" / "raw").is_dir():
        sys.exit(f"error: no MNIST/raw under {data_root}")

    import torch

    torch.set_num_threads(1)
    artifacts = Path(tempfile.mkdtemp(prefix="authors_artifacts_"))
    (artifacts / "datasets").mkdir()
    (artifacts / "datasets" / "MNIST").symlink_to(data_root / "MNIST")
    os.chdir(artifacts)  # their checkpoint is written to the working directory, then moved to the artifact root
    sys.path.insert(0, str(repo))
    stand_ins(artifacts)
    import main as authors  # their main.py

    config = {
        "general": {"num_epochs": args.epochs, "repeat_number": args.repeat},
        "optimizer": {"optimizer_type": "Adam", "lr_scheduler": "CosineAnnealingLR", "lr": 1e-3},
        "data": {"dataset": "MNIST"},
        "model": {"model_class": "MLP", "criterion": "CrossEntropyLoss", "MLP": {"conf_name": args.conf}},
        "noise_settings": {"default": {"noise_type": "GaussMul", "GaussMean": 1.0, "GaussStd": args.noise_std,
                                       "enable_in_training": 1},
                           "layer_wise": None},
    }
    started = time.time()
    run = authors.sacred_exp.run(config_updates=config)
    accuracy = run.result["validation.accuracy"]
    out = {"commit": os.popen(f"git -C {repo} rev-parse HEAD").read().strip(), "config": config,
           "sacred_seed": run.config.get("seed"), "validation_accuracy": accuracy,
           "final_accuracy_last5": sum(accuracy[-5:]) / len(accuracy[-5:]), "wall_time_s": time.time() - started,
           "torch": torch.__version__, "threads": torch.get_num_threads()}
    out_path.parent.mkdir(parents=True, exist_ok=True)
    out_path.write_text(json.dumps(out, indent=1))
    print(f"s = {args.noise_std}, repeat {args.repeat}: final accuracy (mean of the last 5 epochs) "
          f"{out['final_accuracy_last5']:.2f} % in {out['wall_time_s'] / 60:.1f} min")


if __name__ == "__main__":
    main()
