"""Injection points at operations: residual additions, attention's matmuls and softmax, functional activations.

Module points (:mod:`walking_noise.points`) are the outputs of leaf modules. The operations that matter most on
analog hardware in modern networks are often not modules: ``out += identity`` in a residual block, ``F.gelu``
inside a ``forward``, ``q @ k^T``, its softmax and ``attn @ v``, ``F.scaled_dot_product_attention``, the matmuls
inside ``nn.MultiheadAttention``. With ``points: operations`` each of them is an injection point too.

How operations are found: a :class:`torch.overrides.TorchFunctionMode` active during the forward pass
(:class:`OperationMode`). Every torch function a ``forward`` calls passes through the mode's ``__torch_function__``
with its Python-level identity (``Tensor.add_``, ``F.relu``, ``torch.matmul``), above autograd, while the model runs
eagerly as it is. Why not the alternatives:

- ``torch.fx`` symbolic tracing runs ``forward`` on proxies: Python control flow on values fails (the checks of
  ``nn.TransformerEncoderLayer.forward``, any ``if x.dim() == 3``), and ``F.multi_head_attention_forward`` would be
  one opaque call unless its internals were traced too (they branch on shapes and flags);
- ``torch.export`` needs the whole model export-compatible (data-dependent control flow is an error), and its graph
  is of aten ops below the Python names (``F.linear`` becomes ``addmm``), so it loses where an operation happens;
  injecting noise would mean running the exported graph instead of the user's model;
- the mode needs no change to the model, runs data-dependent control flow as the model itself would, and the noise
  it injects is ordinary autograd operations (trained through like any other).

What is a point. An operation of :data:`OPERATIONS` whose result is a tensor, called while a module that is not a
leaf is the innermost one running (an operation inside a leaf module is that module's computation: its module
point covers it). Elementwise ``add``/``mul`` are points only between two tensors of at least one dimension
(``x + 1e-6`` is not). ``F.multi_head_attention_forward`` is one Python function that the mode would see as one
call; it runs with its code unchanged and its entry check for overrides answered (the mode is already handling the
call), so its projections, attention and out projection are seen (:data:`COMPOSITES`). ``torch.einsum`` and
operations inside leaf modules have no point.

Names. An operation point is named by the innermost module running it (its path, as module points are), the
operation and its occurrence: ``layer1.0.add``, ``encoder.layers.0.add#2``. A product with a parameter operand whose
name ends in ``weight`` is named by that parameter: ``self_attn.in_proj`` (``nn.MultiheadAttention``'s packed Q, K, V
projection, ``F.linear`` with ``in_proj_weight``), ``self_attn.out_proj``. A point's kind is one of
:data:`walking_noise.sites.POINT_KINDS`: a product with a parameter operand is ``linear`` (or ``conv``), a product of
two activations ``matmul``.

``F.scaled_dot_product_attention`` is fused. When one of its three points is set to inject (or watched by a forward
hook), the call is replaced by its math, the reference of the torch documentation: ``qk_matmul`` = ``(q * scale) @
k^T`` (the scale folded into q, so the MAC formula sees the products it scales), the mask (bool: ``-inf`` where
false; float: added; ``is_causal``: lower triangle), ``softmax`` over the keys, dropout (``torch.dropout``, when
``dropout_p > 0``), ``attn_v_matmul`` = ``softmax @ v``; the same values within float rounding
(``tests/test_operations.py``). Otherwise the fused kernel runs and its three points are only counted.

Cost: the mode is entered only for a forward pass in which some operation point injects or is watched
(:class:`walking_noise.points.NoisyNetwork`); a pass with none runs the bare model and the module hooks of today.
"""

from __future__ import annotations

import math
import types
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, Protocol

import torch
import torch.nn.functional as F
from torch import nn
from torch.overrides import TorchFunctionMode

from walking_noise.noise import OperandMap

#: (first operand, second operand, apply(first, second) without bias, products summed per output element).
Operands = tuple[torch.Tensor, torch.Tensor, Callable[[torch.Tensor, torch.Tensor], torch.Tensor], int]


@dataclass(frozen=True)
class OpSpec:
    """What the mode knows of one torch function: the operation's ``name`` and point ``kind``; for a product or
    convolution, how to read its two operands (``operands``); ``binary``: an elementwise operation that is a point
    only between two tensors."""

    name: str
    kind: str
    operands: Callable[[tuple, dict], Operands] | None = None
    binary: bool = False


def _arg(args: tuple, kwargs: dict, index: int, name: str, default: Any = None) -> Any:
    return args[index] if len(args) > index else kwargs.get(name, default)


def _linear(args: tuple, kwargs: dict) -> Operands:
    x, w = _arg(args, kwargs, 0, "input"), _arg(args, kwargs, 1, "weight")
    return x, w, (lambda a, b: F.linear(a, b)), int(w.shape[-1])


def _product(fn: Callable[..., torch.Tensor], swap: bool = False) -> Callable[[tuple, dict], Operands]:
    """``a @ b`` read from ``(a, b)`` (``Tensor.__rmatmul__(self, other)`` is ``other @ self``: ``swap``)."""
    def operands(args: tuple, kwargs: dict) -> Operands:
        a, b = (_arg(args, kwargs, 1, "other"), args[0]) if swap else (args[0], _arg(args, kwargs, 1, "other"))
        return a, b, fn, int(a.shape[-1])
    return operands


def _scaled_product(fn: Callable[..., torch.Tensor]) -> Callable[[tuple, dict], Operands]:
    """``beta * input + alpha * (a @ b)`` (baddbmm, addmm): ``alpha`` folded into ``a``, so that the products the
    MAC formula squares are the ones summed."""
    def operands(args: tuple, kwargs: dict) -> Operands:
        a, b, alpha = args[1], args[2], kwargs.get("alpha", 1)
        return (a if alpha == 1 else a * alpha), b, fn, int(a.shape[-1])
    return operands


def _conv(fn: Callable[..., torch.Tensor], transposed: bool) -> Callable[[tuple, dict], Operands]:
    """A convolution's input and weight; its map without bias keeps stride, padding, dilation, groups (and the
    output padding of a transposed one). Fan-in as :func:`walking_noise.noise.layer_map` counts it."""
    names = ("stride", "padding", "output_padding", "groups", "dilation") if transposed else \
        ("stride", "padding", "dilation", "groups")
    defaults = {"stride": 1, "padding": 0, "output_padding": 0, "groups": 1, "dilation": 1}

    def operands(args: tuple, kwargs: dict) -> Operands:
        x, w = _arg(args, kwargs, 0, "input"), _arg(args, kwargs, 1, "weight")
        rest = [_arg(args, kwargs, 3 + i, n, defaults[n]) for i, n in enumerate(names)]
        groups = rest[names.index("groups")]
        fan_in = (w.shape[0] // groups if transposed else w.shape[1]) * math.prod(w.shape[2:])
        return x, w, (lambda a, b: fn(a, b, None, *rest)), int(fan_in)
    return operands


ATTENTION = "scaled_dot_product_attention"
#: The three points of a decomposed ``F.scaled_dot_product_attention``, in call order: (name, kind).
ATTENTION_POINTS = (("qk_matmul", "matmul"), ("softmax", "softmax"), ("attn_v_matmul", "matmul"))


def _table() -> dict[Any, OpSpec]:
    T = torch.Tensor
    table: dict[Any, OpSpec] = {}

    def add(spec: OpSpec, *funcs: Any) -> None:
        for func in funcs:
            if func is not None:
                table[func] = spec

    def named(owners: tuple[Any, ...], *names: str) -> list[Any]:
        return [getattr(owner, name, None) for owner in owners for name in names]

    add(OpSpec("linear", "linear", _linear), F.linear)
    add(OpSpec("matmul", "matmul", _product(torch.matmul)), torch.matmul, T.matmul, T.__matmul__)
    add(OpSpec("matmul", "matmul", _product(torch.matmul, swap=True)), T.__rmatmul__)
    add(OpSpec("matmul", "matmul", _product(torch.mm)), torch.mm, T.mm)
    add(OpSpec("matmul", "matmul", _product(torch.bmm)), torch.bmm, T.bmm)
    add(OpSpec("matmul", "matmul", _scaled_product(torch.bmm)), torch.baddbmm, T.baddbmm)
    add(OpSpec("matmul", "matmul", _scaled_product(torch.mm)), torch.addmm, T.addmm)
    for d in (1, 2, 3):
        add(OpSpec("conv", "conv", _conv(getattr(F, f"conv{d}d"), False)), getattr(F, f"conv{d}d"))
        add(OpSpec("conv_transpose", "conv", _conv(getattr(F, f"conv_transpose{d}d"), True)),
            getattr(F, f"conv_transpose{d}d"))
    add(OpSpec("add", "add", binary=True), torch.add, *named((T,), "add", "add_", "__add__", "__iadd__", "__radd__"))
    add(OpSpec("mul", "mul", binary=True), torch.mul, *named((T,), "mul", "mul_", "__mul__", "__imul__", "__rmul__"))
    for name in ("relu", "relu6", "gelu", "silu", "sigmoid", "tanh", "hardswish", "hardsigmoid", "leaky_relu", "elu",
                 "selu", "celu", "mish", "hardtanh", "softplus"):
        add(OpSpec(name, "activation"), *named((F, torch, T), name, name + "_"))
    for name in ("softmax", "log_softmax"):
        add(OpSpec(name, "softmax"), *named((F, torch, T), name))
    for name in ("layer_norm", "batch_norm", "group_norm", "instance_norm", "rms_norm"):
        add(OpSpec(name, "norm"), *named((F,), name))
    for d in (1, 2, 3):
        for name in (f"max_pool{d}d", f"avg_pool{d}d", f"adaptive_avg_pool{d}d", f"adaptive_max_pool{d}d"):
            add(OpSpec(name.replace(f"{d}d", ""), "pool"), getattr(F, name, None))
    add(OpSpec(ATTENTION, "matmul"), F.scaled_dot_product_attention)
    return table


#: The torch functions that are operations, by function object: what each is called and its point kind.
OPERATIONS: dict[Any, OpSpec] = _table()


def _unrolled(func: types.FunctionType) -> types.FunctionType:
    """``func`` with its code unchanged and its module's ``has_torch_function`` answering no: run while the mode is
    active, its inner torch calls reach the mode (its own entry check would route the whole call to the mode)."""
    namespace = dict(func.__globals__, has_torch_function=lambda *_: False)
    copy = types.FunctionType(func.__code__, namespace, func.__name__, func.__defaults__, func.__closure__)
    copy.__kwdefaults__ = func.__kwdefaults__
    return copy


#: Python functions the mode runs inside instead of seeing them as one call.
COMPOSITES: dict[Any, Callable[..., Any]] = {F.multi_head_attention_forward: _unrolled(F.multi_head_attention_forward)}


@dataclass(frozen=True)
class OpCall:
    """One operation as the mode hands it to its visitor.

    ``path``: the innermost module running it; ``name``: its name there (``add``, ``qk_matmul``, ``in_proj``);
    ``operation``: the operation itself (``add``, ``matmul``, ``linear``); ``kind``: its point kind; ``occurrence``:
    1 for the first call of (path, name) in this forward pass; ``output``: its result; ``operands``: for a product or
    convolution, what the weight and MAC sites need; ``params``: its parameter operands.
    """

    path: str
    name: str
    operation: str
    kind: str
    occurrence: int
    output: torch.Tensor
    operands: OperandMap | None = None
    params: tuple[torch.Tensor, ...] = ()


class Visitor(Protocol):
    """Who the mode hands operations to (:class:`walking_noise.points.NoisyNetwork`, or discovery's recorder)."""

    def needs(self, path: str, name: str, occurrence: int) -> bool:
        """Whether that operation's output is wanted (to inject, or to be watched): decides decomposition."""

    def visit(self, call: OpCall) -> torch.Tensor:
        """The operation's output as the model should continue with it (noisy, or as it is)."""


def _is_parameter(t: Any) -> bool:
    return isinstance(t, nn.Parameter) or isinstance(getattr(t, "_base", None), nn.Parameter)


def _is_tensor(t: Any) -> bool:
    return isinstance(t, torch.Tensor) and t.dim() > 0


class OperationMode(TorchFunctionMode):
    """Sees every torch function call of ``model``'s forward pass and hands the operations of :data:`OPERATIONS`
    to ``visitor``, naming each by the innermost module of ``model`` running it (a module stack kept by global
    module hooks while :meth:`running`). ``counts`` holds the calls of each (path, name) so far."""

    def __init__(self, model: nn.Module, visitor: Visitor):
        super().__init__()
        self.visitor = visitor
        self.paths = {id(m): path for path, m in model.named_modules()}
        self.leaves = {id(m) for m in model.modules() if next(m.children(), None) is None}
        self.params = {id(p): name for name, p in model.named_parameters()}
        self.stack: list[str | None] = []  # innermost last; None: a leaf, whose operations its module point covers
        self.counts: Counter = Counter()
        self.paused = False

    @contextmanager
    def running(self) -> Iterator[OperationMode]:
        """The mode and its module stack, for one forward pass."""
        hooks = [nn.modules.module.register_module_forward_pre_hook(self._enter_module),
                 nn.modules.module.register_module_forward_hook(self._leave_module, always_call=True)]
        try:
            with self:
                yield self
        finally:
            for hook in hooks:
                hook.remove()

    @contextmanager
    def pause(self) -> Iterator[None]:
        """No operation is seen meanwhile (a module point's own noise, computed while the mode is active)."""
        self.paused, was = True, self.paused
        try:
            yield
        finally:
            self.paused = was

    def _enter_module(self, module: nn.Module, _inputs: Any) -> None:
        path = self.paths.get(id(module))
        if path is not None:
            self.stack.append(None if id(module) in self.leaves else path)

    def _leave_module(self, module: nn.Module, _inputs: Any, _output: Any) -> None:
        if id(module) in self.paths:
            self.stack.pop()

    def __torch_function__(self, func: Any, types: Any, args: tuple = (), kwargs: dict | None = None) -> Any:
        kwargs = kwargs or {}
        path = self.stack[-1] if self.stack and not self.paused else None
        spec = OPERATIONS.get(func) if path is not None else None
        if spec is None:
            inner = COMPOSITES.get(func) if path is not None else None
            if inner is None:
                return func(*args, **kwargs)
            with self:  # run inside it: its torch calls reach this mode
                return inner(*args, **kwargs)
        if spec.name == ATTENTION:
            return self._attention(path, *args, **kwargs)
        if spec.binary and not (_is_tensor(args[0]) and _is_tensor(_arg(args, kwargs, 1, "other"))):
            return func(*args, **kwargs)
        out = func(*args, **kwargs)
        params = tuple(t for t in (*args, *kwargs.values()) if _is_parameter(t))
        noisy = self._visit(path, spec, out, spec.operands(args, kwargs) if spec.operands else None, params)
        if noisy is not out and args and out is args[0]:  # in place (out += identity, F.relu(x, inplace=True))
            return out.copy_(noisy)
        return noisy

    def _weight_name(self, path: str, weight: torch.Tensor) -> str | None:
        """``in_proj`` for ``in_proj_weight``, ``out_proj`` for ``out_proj.weight`` (relative to ``path``)."""
        full = self.params.get(id(weight)) or self.params.get(id(getattr(weight, "_base", None)))
        if full is None or (path and not full.startswith(path + ".")):
            return None
        relative = full[len(path) + 1:] if path else full
        for suffix in (".weight", "_weight"):
            if relative.endswith(suffix):
                return relative[:-len(suffix)]
        return None

    def _visit(self, path: str, spec: OpSpec, out: Any, operands: Operands | None = None,
               params: tuple[torch.Tensor, ...] = ()) -> Any:
        if not isinstance(out, torch.Tensor):
            return out
        name, kind, opmap = spec.name, spec.kind, None
        if operands is not None:
            first, second, apply, fan_in = operands
            if _is_parameter(first) and not _is_parameter(second):  # W @ x: the weight comes first
                first, second, apply = second, first, (lambda x, w, f=apply: f(w, x))
            opmap = OperandMap(first, second, apply, fan_in)
            if _is_parameter(second):
                name = self._weight_name(path, second) or name
                kind = "conv" if kind == "conv" else "linear"
            elif kind != "conv":
                kind = "matmul"
        self.counts[(path, name)] += 1
        return self.visitor.visit(OpCall(path, name, spec.name, kind, self.counts[(path, name)], out, opmap, params))

    def _attention(self, path: str, query: torch.Tensor, key: torch.Tensor, value: torch.Tensor,
                   attn_mask: torch.Tensor | None = None, dropout_p: float = 0.0, is_causal: bool = False,
                   scale: float | None = None, enable_gqa: bool = False) -> torch.Tensor:
        """``F.scaled_dot_product_attention``: fused when none of its points is wanted, else its math (module
        docstring), each of ``qk_matmul``, ``softmax`` and ``attn_v_matmul`` visited as an operation."""
        if not any(self.visitor.needs(path, name, self.counts[(path, name)] + 1) for name, _ in ATTENTION_POINTS):
            for name, _ in ATTENTION_POINTS:
                self.counts[(path, name)] += 1
            return F.scaled_dot_product_attention(query, key, value, attn_mask, dropout_p, is_causal, scale=scale,
                                                  enable_gqa=enable_gqa)
        (qk, qk_kind), (soft, soft_kind), (av, av_kind) = ATTENTION_POINTS
        if enable_gqa:
            key = key.repeat_interleave(query.size(-3) // key.size(-3), -3)
            value = value.repeat_interleave(query.size(-3) // value.size(-3), -3)
        scaled = query * (1 / math.sqrt(query.size(-1)) if scale is None else scale)
        keys = key.transpose(-2, -1)
        scores = self._visit(path, OpSpec(qk, qk_kind), scaled @ keys,
                             (scaled, keys, torch.matmul, int(query.size(-1))))
        if is_causal:
            keep = torch.ones(query.size(-2), key.size(-2), dtype=torch.bool, device=query.device).tril()
            scores = scores.masked_fill(~keep, float("-inf"))
        if attn_mask is not None:
            scores = scores.masked_fill(~attn_mask, float("-inf")) if attn_mask.dtype == torch.bool else \
                scores + attn_mask
        weights = self._visit(path, OpSpec(soft, soft_kind), torch.softmax(scores, dim=-1))
        if dropout_p > 0:
            weights = torch.dropout(weights, dropout_p, train=True)
        return self._visit(path, OpSpec(av, av_kind), weights @ value, (weights, value, torch.matmul,
                                                                        int(value.size(-2))))
