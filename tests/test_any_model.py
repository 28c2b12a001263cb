"""Walking noise for any nn.Module: points discovered by tracing (module paths, kinds, repeated calls), the paper's
three models keep their numbering, and a torchvision ResNet-18 and a TransformerEncoder classifier train one step
with noise at one middle point only."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from walking_noise.config import RunConfig
from walking_noise.data import DatasetSplits
from walking_noise.models import build_model
from walking_noise.noise import NoiseConfig, configure_noise
from walking_noise.points import layer_table
from walking_noise.training import train_run

from _probes import activations as _activations

# Today's (before discovery) point tables of the paper's models: (index, name, output shape, parameters).
PAPER_TABLES = {
    ("mlp", (1, 28, 28), False): [(0, "Input", [1, 28, 28], 0), (1, "FC", [64], 50240), (2, "ReLU", [64], 0),
                                  (3, "FC", [64], 4160), (4, "ReLU", [64], 0), (5, "FC", [64], 4160),
                                  (6, "ReLU", [64], 0), (7, "FC", [10], 650)],
    ("lenet5", (3, 32, 32), True): [(0, "Input", [3, 32, 32], 0), (1, "Conv", [6, 28, 28], 456),
                                    (2, "BN", [6, 28, 28], 12), (3, "ReLU", [6, 28, 28], 0),
                                    (4, "MaxPool", [6, 14, 14], 0), (5, "Conv", [16, 10, 10], 2416),
                                    (6, "BN", [16, 10, 10], 32), (7, "ReLU", [16, 10, 10], 0),
                                    (8, "MaxPool", [16, 5, 5], 0), (9, "FC", [120], 48120), (10, "BN", [120], 240),
                                    (11, "ReLU", [120], 0), (12, "FC", [84], 10164), (13, "BN", [84], 168),
                                    (14, "ReLU", [84], 0), (15, "FC", [10], 850)],
    ("cnn_s", (1, 49, 10), False): [(0, "Input", [1, 49, 10], 0), (1, "Conv", [28, 40, 7], 1148),
                                    (2, "ReLU", [28, 40, 7], 0), (3, "Conv", [30, 16, 4], 33630),
                                    (4, "ReLU", [30, 16, 4], 0), (5, "FC", [128], 245888), (6, "ReLU", [128], 0),
                                    (7, "FC", [12], 1548)],
}


@pytest.mark.parametrize("key", list(PAPER_TABLES), ids=lambda k: f"{k[0]}-bn{k[2]}")
def test_the_papers_models_keep_their_numbering(key):
    name, shape, bn = key
    rows = layer_table(build_model(name, shape, 12 if name == "cnn_s" else 10, batchnorm=bn))
    assert [(r["index"], r["name"], r["output_shape"], r["parameters"]) for r in rows] == PAPER_TABLES[key]


class TransformerClassifier(nn.Module):
    """Rows of an image as a sequence of tokens: embed, two encoder layers, mean over tokens, classify."""

    def __init__(self, rows: int = 28, width: int = 28, dim: int = 32, num_classes: int = 10):
        super().__init__()
        self.embed = nn.Linear(width, dim)
        layer = nn.TransformerEncoderLayer(dim, nhead=4, dim_feedforward=64, dropout=0.0, batch_first=True)
        self.encoder = nn.TransformerEncoder(layer, num_layers=2, enable_nested_tensor=False)
        self.head = nn.Linear(dim, num_classes)
        self.rows = rows

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        tokens = self.embed(x.reshape(x.shape[0], self.rows, -1))
        return self.head(self.encoder(tokens).mean(dim=1))


def _data(shape: tuple[int, ...], n: int = 64) -> DatasetSplits:
    g = torch.Generator().manual_seed(0)
    x, y = torch.randn(n, *shape, generator=g), torch.randint(0, 10, (n,), generator=g)
    return DatasetSplits(name="cifar10" if shape[0] == 3 else "mnist_5k", train_x=x, train_y=y, test_x=x[:32],
                         test_y=y[:32], num_classes=10, input_shape=shape, class_weights=None, preprocessing={},
                         augment=None)


def test_resnet18_points_are_module_paths_with_one_point_per_call():
    model = build_model("torchvision.models:resnet18", (3, 32, 32), 10, model_kwargs={"num_classes": 10})
    rows = layer_table(model)
    names = [r["name"] for r in rows]
    assert names[:5] == ["Input", "conv1", "bn1", "relu", "maxpool"]
    # BasicBlock applies its one ReLU twice: once after bn1, once after the residual addition
    assert "layer1.0.relu#1" in names and "layer1.0.relu#2" in names
    assert names.index("layer1.0.relu#2") == names.index("layer1.0.bn2") + 1
    assert {r["kind"] for r in rows} == {"input", "conv", "norm", "activation", "pool", "linear"}
    assert rows[-1] == {**rows[-1], "name": "fc", "kind": "linear", "output_shape": [10]}


@pytest.mark.parametrize("spec, kwargs, shape", [
    ("torchvision.models:resnet18", {"num_classes": 10}, (3, 32, 32)),
    ("test_any_model:TransformerClassifier", {}, (1, 28, 28)),
])
def test_walking_noise_at_a_middle_point_changes_only_that_point_and_after(spec, kwargs, shape):
    torch.manual_seed(0)
    model = build_model(spec, shape, 10, model_kwargs=kwargs)
    x = torch.randn(4, *shape)
    clean = _activations(model, x)
    middle = len(model.injection_points) // 2
    configure_noise(model, NoiseConfig(kind="additive", noise_std=1.0, placement="walking", injection_layer=middle))
    noisy = _activations(model, x)
    assert all(torch.equal(noisy[k], clean[k]) for k in range(middle))
    assert not torch.equal(noisy[middle], clean[middle])
    last = len(model.injection_points) - 1
    assert not torch.equal(noisy[last], clean[last])


@pytest.mark.parametrize("spec, kwargs, shape", [
    ("torchvision.models:resnet18", {"num_classes": 10}, (3, 32, 32)),
    ("test_any_model:TransformerClassifier", {}, (1, 28, 28)),
])
def test_a_foreign_model_trains_with_walking_noise_and_its_draws_are_its_own(spec, kwargs, shape):
    data = _data(shape)
    probe = build_model(spec, shape, 10, model_kwargs=kwargs)
    middle = len(probe.injection_points) // 2
    cfg = RunConfig.from_dict({"dataset": data.name, "model": spec, "model_kwargs": kwargs, "seed": 0,
                               "training": {"epochs": 1, "batch_size": 32},
                               "noise": {"kind": "multiplicative", "noise_std": 0.5, "placement": "walking",
                                         "injection_layer": middle}})
    first, again = train_run(cfg, data), train_run(cfg, data)
    assert first.active_points == [middle]
    assert first.val_accuracy == again.val_accuracy  # same config, same draws
    assert first.layer_table[middle]["name"] == probe.injection_points[middle].name


def test_a_foreign_models_config_is_checked_before_training():
    from walking_noise.study import study_run

    with pytest.raises(ValueError, match="is not an injection point of torchvision.models:resnet18"):
        study_run({"dataset": "cifar10", "model": "torchvision.models:resnet18",
                   "model_kwargs": {"num_classes": 10},
                   "noise": {"kind": "additive", "noise_std": 1.0, "placement": "walking", "injection_layer": 999}})
    with pytest.raises(ValueError, match="valid choices: mlp, lenet5, cnn_s, or any nn.Module"):
        RunConfig.from_dict({"model": "resnet18"})
    with pytest.raises(ValueError, match="cannot import 'torchvision.models:nosuchnet'"):
        build_model("torchvision.models:nosuchnet", (3, 32, 32), 10)


@pytest.mark.parametrize("model, kwargs, says", [
    ("math:pi", None, "model math:pi is a float, not a callable that builds an nn.Module"),
    ("math:sqrt", None, "model math:sqrt cannot be built with model_kwargs {}"),
    ("torchvision.models:resnet18", '{"no_such_kwarg": 1}',
     "model torchvision.models:resnet18 cannot be built with model_kwargs {'no_such_kwarg': 1}"),
])
def test_a_model_that_cannot_be_built_is_one_line_naming_it_and_the_cause(model, kwargs, says, capsys, tmp_path):
    from walking_noise.cli import main

    args = ["--model", model] + (["--model-kwargs", kwargs] if kwargs else [])
    assert main(["layers", *args, "--dataset", "cifar10"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and says in err and "Traceback" not in err
    study = tmp_path / "bad.yaml"
    (tmp_path / "exp.py").write_text("")
    study.write_text(f"seml:\n  executable: exp.py\n  name: bad\n  output_dir: logs\nfixed:\n  dataset: cifar10\n"
                     f"  model: {model}\n" + (f"  model_kwargs: {kwargs}\n" if kwargs else "") +
                     "grid:\n  seed: {type: choice, options: [0]}\n")
    assert main(["run", str(study), "--store", str(tmp_path / "store"), "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert says in err and "Traceback" not in err and not (tmp_path / "store").exists()


def test_a_model_that_is_one_leaf_has_its_own_point_after_the_input():
    import torch
    from torch import nn

    from walking_noise.config import NoiseConfig
    from walking_noise.noise import configure_noise
    from walking_noise.points import NoisyNetwork

    layer = nn.Linear(6, 3)
    net = NoisyNetwork("one_leaf", layer, (6,), 3)
    assert [(p.label, p.kind) for p in net.injection_points] == [("0 Input", "input"), ("1 Linear", "linear")]
    x = torch.randn(64, 6)
    clean = layer(x).detach()
    configure_noise(net, NoiseConfig(kind="additive", noise_std=1.0, placement="walking", injection_layer=1))
    noisy = net(x).detach()
    assert torch.allclose(noisy.mean(), clean.mean(), atol=0.3) and (noisy - clean).std() > 0.8  # N(0, 1) added
