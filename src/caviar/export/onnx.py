"""A fitted caviar network as an ONNX graph, built with ``onnx.helper`` (the ``onnx`` extra).

The graph is the network in inference mode, in float32: the input standardization as Sub/Div, each
hidden layer as MatMul then Add (its bias) or BatchNormalization with the running statistics, its
activation (Relu, LeakyRelu with caviar's slope, Tanh, Sigmoid; dropout is the identity at inference),
and the output layer as MatMul + Add. A classifier's output ``probabilities`` (N, C) is the softmax
in the order of ``classes_``; a regressor's ``predictions`` (N,) maps the standardized target back
(``y * scale + mean``). The input is ``X`` (N, n_features) float32.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from caviar.errors import CaviarError
from caviar.nn.layers import BN_EPS, LEAKY_SLOPE

OPSET = 17
ACTIVATIONS = {"relu": "Relu", "leaky_relu": "LeakyRelu", "tanh": "Tanh", "sigmoid": "Sigmoid"}


def _onnx() -> Any:
    try:
        import onnx
    except ImportError:
        raise CaviarError("ONNX export needs the onnx package: pip install 'caviar[onnx]'") from None
    return onnx


def to_onnx(estimator: Any, name: str = "caviar") -> Any:
    """The ``onnx.ModelProto`` of a fitted caviar Classifier or Regressor (checked by onnx.checker)."""
    onnx = _onnx()
    from onnx import TensorProto, helper, numpy_helper

    params = getattr(estimator, "params_", None)
    if params is None:
        raise CaviarError("to_onnx: the estimator is not fitted")
    arch = estimator.architecture_
    regression = not hasattr(estimator, "classes_")  # a regressor has target_scaler_ (mean, std) instead
    inits: list[Any] = []
    nodes: list[Any] = []

    def const(key: str, value: np.ndarray) -> str:
        inits.append(numpy_helper.from_array(np.ascontiguousarray(value, dtype=np.float32), key))
        return key

    def node(op: str, inputs: list[str], out: str, **attrs: Any) -> str:
        nodes.append(helper.make_node(op, inputs, [out], name=out, **attrs))
        return out

    a = "X"
    scaler = getattr(estimator, "standardizer_", None)
    if scaler is not None:
        a = node("Sub", [a, const("input.mean", scaler.mean)], "input.centered")
        a = node("Div", [a, const("input.std", scaler.std)], "input.standardized")
    state = getattr(estimator, "state_", {})
    for i in range(len(arch.hidden)):
        a = node("MatMul", [a, const(f"dense{i}.W", params[f"dense{i}.W"])], f"dense{i}.z")
        if arch.batchnorm:
            names = [
                const(f"bn{i}.gamma", params[f"bn{i}.gamma"].reshape(-1)),
                const(f"bn{i}.beta", params[f"bn{i}.beta"].reshape(-1)),
                const(f"bn{i}.running_mean", state[f"bn{i}.running_mean"].reshape(-1)),
                const(f"bn{i}.running_var", state[f"bn{i}.running_var"].reshape(-1)),
            ]
            a = node("BatchNormalization", [a, *names], f"bn{i}.out", epsilon=BN_EPS)
        else:
            a = node("Add", [a, const(f"dense{i}.b", params[f"dense{i}.b"].reshape(-1))], f"dense{i}.out")
        extra = {"alpha": LEAKY_SLOPE} if arch.activation == "leaky_relu" else {}
        a = node(ACTIVATIONS[arch.activation], [a], f"act{i}", **extra)
    z = node("MatMul", [a, const("out.W", params["out.W"])], "out.z")
    z = node("Add", [z, const("out.b", params["out.b"].reshape(-1))], "out.logits")
    if regression:
        target = estimator.target_scaler_
        y = node("Mul", [z, const("target.scale", np.reshape(target.std, (1, -1)))], "target.scaled")
        y = node("Add", [y, const("target.mean", np.reshape(target.mean, (1, -1)))], "target.added")
        out = node("Squeeze", [y, _int64_const(inits, numpy_helper, "squeeze.axes", [1])], "predictions")
        output = helper.make_tensor_value_info(out, TensorProto.FLOAT, ["N"])
    else:
        out = node("Softmax", [z], "probabilities", axis=1)
        output = helper.make_tensor_value_info(out, TensorProto.FLOAT, ["N", arch.n_out])
    graph = helper.make_graph(
        nodes,
        name,
        [helper.make_tensor_value_info("X", TensorProto.FLOAT, ["N", arch.n_in])],
        [output],
        initializer=inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)], producer_name="caviar")
    model.ir_version = min(model.ir_version, 8)  # readable by older runtimes; opset 17 needs IR 8
    onnx.checker.check_model(model)
    return model


def _int64_const(inits: list[Any], numpy_helper: Any, key: str, values: list[int]) -> str:
    inits.append(numpy_helper.from_array(np.asarray(values, dtype=np.int64), key))
    return key


def save_onnx(estimator: Any, path: str | Path) -> Path:
    """Write ``to_onnx(estimator)`` to ``path``; returns the path."""
    onnx = _onnx()
    path = Path(path)
    onnx.save_model(to_onnx(estimator, name=path.stem or "caviar"), str(path))
    return path
