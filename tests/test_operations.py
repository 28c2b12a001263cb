"""Injection points at operations (``points: operations``): the point lists of a residual block, an
nn.TransformerEncoder and the example ViT against hand-written expectations; noise at one operation changes only
that operation and what depends on it; the weight and MAC formulas at operations; the decomposed attention equals
the fused kernel; data-dependent control flow is a clear error; the paper's models and ``points: modules`` are
unchanged."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from walking_noise.config import NoiseConfig, RunConfig
from walking_noise.models import build_model
from walking_noise.noise import NoiseStream, configure_noise
from walking_noise.points import NoisyNetwork, layer_table

from _probes import activations as _activations
from _probes import check_moments as _check_moments
from _probes import outputs as _outputs

VIT = "walking_noise.examples.vit:tiny_vit"
RESNET = "walking_noise.examples.resnet:small_resnet"


class Residual(nn.Module):
    """torchvision's BasicBlock in miniature: conv, BN, ReLU, conv, BN, ``out += identity``, ReLU."""

    def __init__(self, channels: int = 2, inplace: bool = True):
        super().__init__()
        self.conv1, self.bn1 = nn.Conv2d(channels, channels, 3, padding=1), nn.BatchNorm2d(channels)
        self.conv2, self.bn2 = nn.Conv2d(channels, channels, 3, padding=1), nn.BatchNorm2d(channels)
        self.relu = nn.ReLU()
        self.inplace = inplace

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.bn2(self.conv2(self.relu(self.bn1(self.conv1(x)))))
        if self.inplace:
            out += x
        else:
            out = out + x
        return self.relu(out)


class Encoder(nn.Module):
    """Rows of a 4 x 8 input as 4 tokens through one nn.TransformerEncoderLayer (post-norm, ReLU), then a head."""

    def __init__(self, layers: int = 1):
        super().__init__()
        layer = nn.TransformerEncoderLayer(8, nhead=2, dim_feedforward=16, dropout=0.0, batch_first=True)
        self.encoder = nn.TransformerEncoder(layer, num_layers=layers, enable_nested_tensor=False)
        self.head = nn.Linear(8, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.encoder(x).mean(dim=1))


def _points(net: NoisyNetwork) -> list[tuple[str, str]]:
    return [(p.name, p.kind) for p in net.injection_points]


def test_a_residual_blocks_addition_is_a_point_between_its_bn2_and_its_second_relu():
    net = NoisyNetwork("block", Residual(), (2, 5, 5), 2, points="operations")
    assert _points(net) == [("Input", "input"), ("conv1", "conv"), ("bn1", "norm"), ("relu#1", "activation"),
                            ("conv2", "conv"), ("bn2", "norm"), ("add", "add"), ("relu#2", "activation")]


def test_modules_is_the_point_list_of_before_operations_existed():
    torch.manual_seed(0)
    modules = NoisyNetwork("block", Residual(), (2, 5, 5), 2)
    assert modules.points == "modules" and [name for name, _ in _points(modules)] == [
        "Input", "conv1", "bn1", "relu#1", "conv2", "bn2", "relu#2"]


def test_a_transformer_encoder_layer_has_its_attention_and_residual_points():
    net = NoisyNetwork("encoder", Encoder(), (4, 8), 3, points="operations")
    layer = "encoder.layers.0"
    assert _points(net) == [
        ("Input", "input"), (f"{layer}.self_attn.in_proj", "linear"), (f"{layer}.self_attn.qk_matmul", "matmul"),
        (f"{layer}.self_attn.softmax", "softmax"), (f"{layer}.self_attn.attn_v_matmul", "matmul"),
        (f"{layer}.self_attn.out_proj", "linear"), (f"{layer}.dropout1", "other"), (f"{layer}.add#1", "add"),
        (f"{layer}.norm1", "norm"), (f"{layer}.linear1", "linear"), (f"{layer}.relu", "activation"),
        (f"{layer}.dropout", "other"), (f"{layer}.linear2", "linear"), (f"{layer}.dropout2", "other"),
        (f"{layer}.add#2", "add"), (f"{layer}.norm2", "norm"), ("head", "linear")]
    # the packed Q, K, V projection and the out projection count their parameter operands (weight and bias)
    rows = {r["name"]: r for r in layer_table(net)}
    assert rows[f"{layer}.self_attn.in_proj"]["parameters"] == 3 * 8 * 8 + 3 * 8
    assert rows[f"{layer}.self_attn.out_proj"] == {**rows[f"{layer}.self_attn.out_proj"], "op": "out_proj",
                                                   "parameters": 8 * 8 + 8}


def test_the_example_vit_has_fourteen_points_per_block():
    net = build_model(VIT, (1, 28, 28), 10, points="operations")
    block = ["norm1", "attn.q", "attn.k", "attn.v", "attn.qk_matmul", "attn.softmax", "attn.attn_v_matmul",
             "attn.proj", "add#1", "norm2", "mlp.fc1", "mlp.act", "mlp.fc2", "add#2"]
    names = ["Input", "patch_embed", "add", *(f"blocks.{b}.{n}" for b in (0, 1) for n in block), "norm", "head"]
    assert [p.name for p in net.injection_points] == names
    kinds = {p.name: p.kind for p in net.injection_points}
    assert [kinds[f"blocks.0.{n}"] for n in ("attn.q", "attn.qk_matmul", "attn.softmax", "add#1", "mlp.act")] == [
        "linear", "matmul", "softmax", "add", "activation"]


@pytest.mark.parametrize("name, shape, classes", [("mlp", (1, 28, 28), 10), ("lenet5", (3, 32, 32), 10),
                                                  ("cnn_s", (1, 49, 10), 12)])
@pytest.mark.parametrize("bn", [False, True])
def test_the_papers_models_have_no_other_points_with_operations_and_still_pack(name, shape, classes, bn):
    from walking_noise.batched import packable

    modules = layer_table(build_model(name, shape, classes, batchnorm=bn))
    operations = build_model(name, shape, classes, batchnorm=bn, points="operations")
    assert layer_table(operations) == modules
    assert packable(operations)


def test_a_model_with_operation_points_is_not_packed():
    from walking_noise.batched import packable

    class Sequence(nn.Sequential):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return super().forward(x) + 0 * torch.relu(x)  # a functional operation in a Sequential's forward

    model = Sequence(nn.Linear(4, 4), nn.ReLU())
    assert packable(NoisyNetwork("s", model, (4,), 4))
    assert not packable(NoisyNetwork("s", model, (4,), 4, points="operations"))


def test_a_kind_filter_keeps_the_input_and_the_points_of_those_kinds_in_call_order():
    net = NoisyNetwork("encoder", Encoder(2), (4, 8), 3, points="softmax,matmul")
    assert net.points == "matmul,softmax"  # one spelling per selection
    assert [p.name for p in net.injection_points] == ["Input"] + [
        f"encoder.layers.{i}.self_attn.{n}" for i in (0, 1) for n in ("qk_matmul", "softmax", "attn_v_matmul")]


@pytest.mark.parametrize("spec, shape, point", [
    (RESNET, (1, 12, 12), "layer2.0.add"),
    (VIT, (1, 28, 28), "blocks.0.attn.qk_matmul"),
    (VIT, (1, 28, 28), "blocks.1.attn.softmax"),
])
def test_noise_at_one_operation_changes_only_that_operation_and_what_follows(spec, shape, point):
    torch.manual_seed(0)
    model = build_model(spec, shape, 10, points="operations")
    index = next(p.index for p in model.injection_points if p.name == point)
    x = torch.randn(3, *shape)
    clean = _activations(model, x)
    configure_noise(model, NoiseConfig(kind="additive", noise_std=0.5, placement="walking", injection_layer=index))
    noisy = _activations(model, x)
    assert all(torch.equal(noisy[k], clean[k]) for k in range(index))
    assert not torch.equal(noisy[index], clean[index])
    assert not torch.equal(noisy[len(noisy) - 1], clean[len(clean) - 1])


def test_the_point_after_a_noisy_residual_addition_sees_the_noisy_sum():
    torch.manual_seed(0)
    model = build_model(RESNET, (1, 12, 12), 10, points="operations")
    add = next(p.index for p in model.injection_points if p.name == "layer1.0.add")
    configure_noise(model, NoiseConfig(kind="additive", noise_std=0.5, placement="walking", injection_layer=add))
    seen = _activations(model, torch.randn(3, 1, 12, 12))
    assert model.injection_points[add + 1].name == "layer1.0.relu#2"
    assert torch.equal(seen[add + 1], torch.relu(seen[add]))


def test_additive_noise_at_a_residual_addition_has_its_variance():
    torch.manual_seed(0)
    block = NoisyNetwork("block", Residual(), (2, 3, 3), 2, points="add")
    block.eval()
    x = torch.randn(1, 2, 3, 3)
    with torch.no_grad():
        inner = block.model
        clean = (inner.bn2(inner.conv2(inner.relu(inner.bn1(inner.conv1(x))))) + x).double()
    sums: list[torch.Tensor] = []  # the noisy sum itself, as the point's injection passes it on
    block.injection_points[1].injection.register_forward_hook(lambda _m, _i, out: sums.append(out.detach().clone()))
    configure_noise(block, NoiseConfig(kind="additive", noise_std=0.3, placement="walking", injection_layer=1))
    _outputs(block, x, 2000)
    _check_moments(torch.stack(sums).double(), clean, torch.full_like(clean, 0.09))


def test_in_place_and_out_of_place_additions_get_the_same_noise_and_gradients():
    grads, outs = [], []
    for inplace in (True, False):
        torch.manual_seed(0)
        net = NoisyNetwork("block", Residual(inplace=inplace), (2, 4, 4), 2, points="operations")
        configure_noise(net, NoiseConfig(kind="multiplicative", noise_std=0.5, placement="walking", injection_layer=6))
        net.use_stream(NoiseStream([7]))
        net.train()
        net.stream.at(0, 0, 0)
        out = net(torch.randn(3, 2, 4, 4, generator=torch.Generator().manual_seed(1)))
        out.pow(2).sum().backward()
        outs.append(out.detach())
        grads.append(net.model.conv1.weight.grad.clone())
    assert torch.equal(outs[0], outs[1])
    assert torch.allclose(grads[0], grads[1], atol=1e-6)


class Attend(nn.Module):
    """``F.scaled_dot_product_attention`` of three projections of the input, with the given options."""

    def __init__(self, **options: object):
        super().__init__()
        self.q, self.k, self.v = nn.Linear(8, 8), nn.Linear(8, 8), nn.Linear(8, 8)
        self.options = options

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shape = (x.shape[0], x.shape[1], 2, 4)
        q, k, v = (f(x).view(shape).transpose(1, 2) for f in (self.q, self.k, self.v))
        if self.options.get("enable_gqa"):
            k, v = k[:, :1], v[:, :1]
        return F.scaled_dot_product_attention(q, k, v, **self.options)


@pytest.mark.parametrize("options", [
    {}, {"is_causal": True}, {"scale": 0.7}, {"enable_gqa": True},
    {"attn_mask": torch.tensor([[True, False, True], [True, True, False], [False, True, True]])},
    {"attn_mask": torch.linspace(-1, 1, 9).view(3, 3)},
], ids=["plain", "causal", "scale", "gqa", "bool_mask", "float_mask"])
def test_the_decomposed_attention_equals_the_fused_kernel(options):
    torch.manual_seed(0)
    net = NoisyNetwork("attend", Attend(**options), (3, 8), 1, points="operations")
    x = torch.randn(5, 3, 8)
    net.eval()
    with torch.no_grad():
        fused = net(x)
    watched = _activations(net, x)  # watching its points decomposes the attention
    assert [p.name for p in net.injection_points[4:]] == ["qk_matmul", "softmax", "attn_v_matmul"]
    assert torch.allclose(watched[6], fused, atol=1e-6, rtol=1e-5)


class Product(nn.Module):
    """``a @ b`` of two activations cut from the input: a (2 x 3) by (3 x 2) product per sample."""

    def __init__(self):
        super().__init__()
        self.pre = nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.pre(x)
        return x[:, :6].reshape(-1, 2, 3) @ x[:, 6:].reshape(-1, 3, 2)


@pytest.mark.parametrize("kind", ["multiplicative", "additive"])
def test_mac_noise_at_a_matmul_of_two_activations_has_the_per_product_variance(kind):
    net = NoisyNetwork("product", Product(), (12,), 1, points="operations")
    assert _points(net) == [("Input", "input"), ("matmul", "matmul")]
    x = torch.randn(1, 12, generator=torch.Generator().manual_seed(3))
    a, b = x[:, :6].reshape(1, 2, 3).double(), x[:, 6:].reshape(1, 3, 2).double()
    s = 0.2
    configure_noise(net, NoiseConfig(kind=kind, noise_std=s, site="mac", placement="walking", injection_layer=1))
    var = s**2 * (a**2 @ b**2) if kind == "multiplicative" else torch.full((1, 2, 2), s**2 * 3, dtype=torch.float64)
    _check_moments(_outputs(net, x, 4000), a @ b, var)


class Functional(nn.Module):
    """A weight used by a functional call, ``F.linear(x, self.weight)`` (first) or ``self.weight @ x^T``."""

    def __init__(self, weight: torch.Tensor, first: bool):
        super().__init__()
        self.pre, self.weight, self.first = nn.Identity(), nn.Parameter(weight.clone()), first

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.pre(x)
        return (self.weight @ x.t()).t() if self.first else F.linear(x, self.weight)


@pytest.mark.parametrize("first", [False, True], ids=["F.linear", "weight_first_matmul"])
def test_weight_noise_at_a_functional_product_perturbs_its_parameter_operand(first):
    g = torch.Generator().manual_seed(0)
    weight, x = torch.randn(3, 5, generator=g), torch.randn(1, 5, generator=g)
    net = NoisyNetwork("functional", Functional(weight, first), (5,), 3, points="operations")
    assert _points(net)[1] == ("matmul" if first else "linear", "linear")  # a parameter operand: a linear point
    s = 0.3
    configure_noise(net, NoiseConfig(kind="multiplicative", noise_std=s, site="weight", placement="walking",
                                     injection_layer=1))
    outs = _outputs(net, x, 4000)
    _check_moments(outs, (x @ weight.t()).double(), (s**2 * ((weight * x) ** 2).sum(1)).double().view(1, 3))


def test_weight_and_mac_noise_exist_at_products_only():
    net = NoisyNetwork("encoder", Encoder(), (4, 8), 3, points="operations")
    products = [p.index for p in net.injection_points if p.kind in ("linear", "matmul", "conv")]
    assert configure_noise(net, NoiseConfig(kind="multiplicative", noise_std=0.1, site="mac")) == products
    weighted = [p.index for p in net.injection_points if p.kind == "linear"]
    assert configure_noise(net, NoiseConfig(kind="multiplicative", noise_std=0.1, site="weight")) == weighted
    softmax = next(p.index for p in net.injection_points if p.kind == "softmax")
    with pytest.raises(ValueError, match=r"at the weight site \(Linear/Conv points only\); valid: 1 encoder"):
        configure_noise(net, NoiseConfig(kind="additive", noise_std=0.1, site="weight", placement="walking",
                                         injection_layer=softmax))


class Branchy(nn.Module):
    """A second ReLU only for inputs with a large value: the traced (all-zero) sample takes one."""

    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(4, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = torch.relu(self.fc(x))
        if bool((x > 2).any()):
            h = torch.relu(h)
        return h


def test_a_point_whose_operation_count_depends_on_the_input_is_a_clear_error():
    net = NoisyNetwork("branchy", Branchy(), (4,), 4, points="operations")
    assert _points(net) == [("Input", "input"), ("fc", "linear"), ("relu", "activation")]
    configure_noise(net, NoiseConfig(kind="additive", noise_std=0.1, placement="walking", injection_layer=2))
    net.eval()
    net(torch.zeros(2, 4))  # the traced path
    with pytest.raises(RuntimeError, match=r"Branchy ran relu 2 time\(s\) in this forward pass and 1 when the points "
                                           r"were traced.*data-dependent control flow in Branchy.forward"):
        net(torch.full((2, 4), 3.0))


def test_no_operation_mode_while_no_operation_point_injects():
    from walking_noise.operations import OperationMode

    net = build_model(VIT, (1, 28, 28), 10, points="operations")
    entered = []
    original = OperationMode.running
    OperationMode.running = lambda self: (entered.append(1), original(self))[1]  # type: ignore[method-assign]
    try:
        net(torch.zeros(2, 1, 28, 28))
        assert not entered
        q = next(p.index for p in net.injection_points if p.name == "blocks.0.attn.q")  # a module point: hooks only
        configure_noise(net, NoiseConfig(kind="additive", noise_std=0.1, placement="walking", injection_layer=q))
        net(torch.zeros(2, 1, 28, 28))
        assert not entered
        configure_noise(net, NoiseConfig(kind="additive", noise_std=0.1, placement="walking", injection_layer=q + 3))
        net(torch.zeros(2, 1, 28, 28))
        assert entered == [1]
    finally:
        OperationMode.running = original  # type: ignore[method-assign]


def test_points_is_part_of_run_identity_only_when_not_modules():
    base = RunConfig.from_dict({"noise": {"kind": "additive", "noise_std": 0.3}, "seed": 1})
    assert RunConfig.from_dict({**base.to_dict(), "points": "modules"}).to_dict() == base.to_dict()
    from walking_noise.config import Run

    hashes = {Run.from_dict({**base.to_dict(), "points": p}).hash for p in ("modules", "operations", "add,matmul",
                                                                          ["matmul", "add"])}
    assert len(hashes) == 3  # a list of kinds and its comma-separated spelling are one selection
    with pytest.raises(ValueError, match="unknown points 'layers'.*modules or operations.*matmul, add"):
        RunConfig.from_dict({"points": "layers"})


@pytest.mark.slow
def test_a_transformer_trains_with_noise_at_an_operation_and_its_draws_are_its_own():
    from walking_noise.data import DatasetSplits
    from walking_noise.training import train_run

    g = torch.Generator().manual_seed(0)
    x, y = torch.randn(64, 1, 28, 28, generator=g), torch.randint(0, 10, (64,), generator=g)
    data = DatasetSplits(name="mnist_5k", train_x=x, train_y=y, test_x=x[:32], test_y=y[:32], num_classes=10,
                         input_shape=(1, 28, 28), class_weights=None, preprocessing={}, augment=None)
    cfg = RunConfig.from_dict({"dataset": "mnist_5k", "model": VIT, "points": "operations", "seed": 0,
                               "training": {"epochs": 1, "batch_size": 32},
                               "noise": {"kind": "multiplicative", "noise_std": 0.5, "placement": "walking",
                                         "injection_layer": 7, "site": "mac"}})
    first, again = train_run(cfg, data), train_run(cfg, data)
    assert first.active_points == [7] and first.layer_table[7]["name"] == "blocks.0.attn.qk_matmul"
    assert first.val_accuracy == again.val_accuracy and first.train_loss == again.train_loss


def test_the_layers_command_lists_operation_points(capsys):
    import json

    from walking_noise.cli import main

    assert main(["layers", "--model", VIT, "--dataset", "mnist_5k", "--points", "operations", "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert len(rows) == 33 and rows[7] == {**rows[7], "name": "blocks.0.attn.qk_matmul", "op": "qk_matmul"}
