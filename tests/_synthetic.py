"""Run documents with known curves, for the report's tests: no training, so a figure's property can be checked
against the truth it was drawn from."""

from __future__ import annotations

from typing import Any

from walking_noise.identity import config_hash
from walking_noise.models import layer_table_for
from walking_noise.study import study_run
from walking_noise.training import final_epochs

BASE = {"dataset": "mnist_5k", "model": "mlp", "batchnorm": True, "training": {"epochs": 10}}


def synthetic_doc(accuracy: float, *, nonfinite: float = 0.0, diverged: bool = False,
                  curve: list[float] | None = None, weight_magnitudes: dict[str, float] | None = None,
                  base: dict[str, Any] = BASE, **config: Any) -> dict[str, Any]:
    """A COMPLETED run document of the config ``base`` updated with ``config`` whose final accuracy is
    ``accuracy`` (its validation curve ``curve``, default flat at ``accuracy``)."""
    cfg = study_run({**base, **config}).values
    epochs = cfg["training"]["epochs"]
    curve = list(curve) if curve is not None else [accuracy] * epochs
    result = {"final_accuracy": accuracy, "final_epochs_averaged": final_epochs(epochs), "val_accuracy": curve,
              "val_nonfinite": [nonfinite] * epochs, "diverged": diverged, "diverged_epoch": 2 if diverged else None,
              "epochs_run": 3 if diverged else epochs, "weight_magnitudes": weight_magnitudes or {},
              "active_points": [], "layer_table": layer_table_for(cfg["model"], cfg["dataset"], cfg["batchnorm"]),
              "extra": {}}
    return {"config": cfg, "config_hash": config_hash(cfg), "status": "COMPLETED", "result": result}
