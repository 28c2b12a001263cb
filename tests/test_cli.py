"""The walking-noise command line."""

import json

from walking_noise.cli import main


def test_layers_prints_the_lenet5_table(capsys):
    assert main(["layers", "--model", "lenet5", "--dataset", "cifar10"]) == 0
    out = capsys.readouterr().out
    assert "12 injection points" in out
    line9 = next(line for line in out.splitlines() if line.split()[:2] == ["9", "FC"])
    assert line9.split()[2:] == ["linear", "84", "10164"]


def test_layers_json_with_batchnorm(capsys):
    assert main(["layers", "--model", "mlp", "--dataset", "mnist", "--batchnorm", "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert [r["name"] for r in rows] == ["Input", "FC", "BN", "ReLU", "FC", "BN", "ReLU", "FC", "BN", "ReLU", "FC"]


def test_bad_arguments_are_clear_errors(capsys):
    assert main(["layers", "--model", "resnet", "--dataset", "mnist"]) == 2
    assert "valid choices: mlp, lenet5, cnn_s" in capsys.readouterr().err
    assert main(["train", "--injection-layer", "42", "--epochs", "1"]) == 2
    assert "injection_layer 42 is not an injection point" in capsys.readouterr().err
    assert main(["train", "--noise-std", "-1", "--epochs", "1"]) == 2
    assert "noise_std must be" in capsys.readouterr().err
    assert main(["train", "--noise-site", "mac", "--noise-distribution", "uniform", "--epochs", "1"]) == 2
    assert "uniform is not available at the mac site" in capsys.readouterr().err


def test_train_json_reports_config_and_result(capsys):
    assert main(["train", "--epochs", "1", "--noise-kind", "additive", "--noise-std", "0.5",
                 "--injection-layer", "3", "--json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["config"]["noise"]["injection_layer"] == 3
    assert doc["result"]["active_points"] == [3]
    assert 0.1 < doc["result"]["final_accuracy"] <= 1.0


def test_train_takes_the_noise_distribution(capsys):
    assert main(["train", "--epochs", "1", "--noise-kind", "multiplicative", "--noise-std", "0.5",
                 "--noise-distribution", "uniform", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["config"]["noise"]["distribution"] == "uniform"


def test_layers_discovers_the_points_of_a_torchvision_model(capsys):
    assert main(["layers", "--model", "torchvision.models:resnet18", "--model-kwargs", '{"num_classes": 10}',
                 "--dataset", "cifar10"]) == 0
    out = capsys.readouterr().out
    assert "61 injection points" in out and "BatchNorm:" not in out.splitlines()[0]
    assert any(line.split()[:3] == ["10", "layer1.0.relu#2", "activation"] for line in out.splitlines())
    assert main(["layers", "--model", "mlp", "--dataset", "mnist", "--model-kwargs", "{nope"]) == 2
    assert "--model-kwargs must be a JSON object" in capsys.readouterr().err
