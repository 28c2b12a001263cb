"""Train the example residual CNN (walking_noise/examples/residual_cnn.py) on the full MNIST and save its weights as
a plain state_dict, as a user would (torch.save(model.state_dict(), PATH)).

    python results/sensitivity/train_residual_cnn.py --data-dir ../shared/data     # a few CPU minutes

It trains clean (no noise): Adam, lr 3e-3 with a cosine schedule, batch 128, 3 epochs, seed 0.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import torch

from walking_noise.config import RunConfig
from walking_noise.training import load_checkpoint, train_run

HERE = Path(__file__).resolve().parent
MODEL = "walking_noise.examples.residual_cnn:residual_cnn"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", default=None, help="folder with MNIST/raw (default: $WALKING_NOISE_DATA)")
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--lr", type=float, default=3e-3)
    parser.add_argument("--out", default=str(HERE / "residual_cnn.pt"))
    args = parser.parse_args()
    torch.set_num_threads(1)
    checkpoint = Path(args.out).with_suffix(".checkpoint.pt")
    cfg = RunConfig.from_dict({"dataset": "mnist", "model": MODEL, "data_dir": args.data_dir, "seed": 0,
                               "training": {"epochs": args.epochs, "lr": args.lr}, "checkpoint": str(checkpoint)})
    started = time.perf_counter()
    result = train_run(cfg, log_epochs=True)
    net, _ = load_checkpoint(checkpoint)
    torch.save(net.model.state_dict(), args.out)  # the user's model's own keys: a plain state_dict
    checkpoint.unlink()
    print(f"test accuracy per epoch {[round(a, 4) for a in result.val_accuracy]}; {time.perf_counter() - started:.0f} s "
          f"on 1 thread; weights -> {args.out}")


if __name__ == "__main__":
    main()
