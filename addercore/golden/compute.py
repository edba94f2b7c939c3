"""Output arrays of golden cases, computed by addercore's public ops on the active backend
(the numpy reference when generating), one function per kind."""
import numpy as np

from .network import build_network

__all__ = ["compute_case", "adder2d_outputs", "conv2d_outputs", "batch_norm2d_outputs",
           "network_outputs"]


def _window(p):
    """The ``dilation``/``groups`` keyword arguments of a sliding-window case (defaults when
    its params omit them)."""
    return {"dilation": tuple(p.get("dilation", (1, 1))), "groups": p.get("groups", 1)}


def adder2d_outputs(case, inputs):
    """output, grad_input, grad_weight (raw) and grad_weight_adaptive."""
    from .. import ops

    p = case["params"]
    x, w, g = inputs["x"], inputs["weight"], inputs["grad_output"]
    args = (tuple(p["stride"]), tuple(p["padding"]), p["norm"])
    window = _window(p)
    out = {"output": ops.adder2d_forward(x, w, *args, **window)}
    gi, gw = ops.adder2d_backward(x, w, g, *args, filter_grad=p["filter_grad"],
                                  input_grad=p["input_grad"], **window)
    out.update(grad_input=gi, grad_weight=gw,
               grad_weight_adaptive=ops.adaptive_scale(gw, p["eta"]))
    return out


def conv2d_outputs(case, inputs):
    """output (+ bias), grad_input, grad_weight, and grad_bias when the case has a bias."""
    from .. import ops

    p = case["params"]
    x, w, g = inputs["x"], inputs["weight"], inputs["grad_output"]
    st, pad = tuple(p["stride"]), tuple(p["padding"])
    window = _window(p)
    out = {"output": ops.conv2d_forward(x, w, st, pad, inputs.get("bias"), **window)}
    out["grad_input"], out["grad_weight"] = ops.conv2d_backward(x, w, g, st, pad, **window)
    if p["bias"]:
        out["grad_bias"] = g.sum(axis=(0, 2, 3))
    return out


def batch_norm2d_outputs(case, inputs):
    """output, grad_input, grad_weight, grad_bias, and in training mode the updated running
    statistics."""
    from .. import ops

    p = case["params"]
    rm, rv = inputs["running_mean"].copy(), inputs["running_var"].copy()
    y, mean, invstd = ops.batch_norm2d_forward(inputs["x"], inputs["weight"], inputs["bias"],
                                               rm, rv, p["training"], p["momentum"], p["eps"])
    gi, gw, gb = ops.batch_norm2d_backward(inputs["x"], inputs["weight"], inputs["grad_output"],
                                           mean, invstd, p["training"])
    out = {"output": y, "grad_input": gi, "grad_weight": gw, "grad_bias": gb}
    if p["training"]:
        out["running_mean_updated"], out["running_var_updated"] = rm, rv
    return out


def network_outputs(case, inputs):
    """One training step of the network: logits, loss, and (with ``sgd_step``) the raw
    gradients, the state after one SGD step and the momentum buffers."""
    from .. import functional as F
    from ..optim import SGD

    p, dtype = case["params"], np.dtype(case["dtype"])
    model = build_network(p, np.random.default_rng(0), dtype)
    state = {k[len("state."):]: v for k, v in inputs.items() if k.startswith("state.")}
    model.load_state_dict(state, strict=True)
    model.train()
    names = [name for name, _ in model.named_parameters()]
    params = model.parameters()
    opt = SGD(params, lr=p["lr"], momentum=p["momentum"], weight_decay=p["weight_decay"],
              nesterov=p["nesterov"], adaptive_scaling=True, eta=p["eta"],
              placement=p["placement"])
    logits = model(inputs["x"])
    loss = F.cross_entropy(logits, inputs["target"])
    loss.backward()
    out = {"logits": np.array(logits.data), "loss": np.array(loss.data, dtype=dtype)}
    if not p.get("sgd_step", True):
        return out
    for name, param in zip(names, params):
        out["grad." + name] = np.array(param.grad)
    opt.step()
    for key, value in model.state_dict().items():
        out["state_after." + key] = value
    for name, buf in zip(names, opt.momentum_buffers):
        out["momentum_buffer." + name] = np.array(buf)
    return out


def compute_case(case, inputs):
    """Output arrays of ``case`` computed by addercore (active backend) from ``inputs``."""
    from .kinds import kind_of

    return kind_of(case).compute(case, inputs)
