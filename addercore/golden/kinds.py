"""The golden kinds: one entry per ``op`` value a case can have, naming its input arrays and
the functions that draw them (:mod:`.inputs`) and compute its outputs (:mod:`.compute`).

Generation, verification and the split of a golden file into inputs and outputs all read
this table; a new kind is one entry here (plus its cases in :mod:`.cases`). The op kinds are
the ``golden=`` names of the op table (:mod:`addercore.ops.table`); ``tests/test_op_table.py``
checks that the two agree.
"""
from dataclasses import dataclass

from . import compute, inputs

__all__ = ["Kind", "KINDS", "kind_of", "split_arrays"]


@dataclass(frozen=True)
class Kind:
    name: str
    input_names: tuple  # exact names; () when inputs are recognised by ``input_prefixes``
    inputs: object      # (case, rng, dtype) -> {name: array}
    compute: object     # (case, inputs) -> {name: array}
    input_prefixes: tuple = ()

    def is_input(self, name):
        return name in self.input_names or name.startswith(self.input_prefixes or ("\0",))


def _int_inputs(case, rng, dtype):
    # integer inference (addercore.quant): the cases draw from default_rng(seed) themselves
    from ..quant import golden_cases

    return golden_cases.make_inputs(case)


def _int_outputs(case, inputs):
    from ..quant import golden_cases

    return golden_cases.compute_case(case, inputs)


KINDS = {k.name: k for k in (
    Kind("adder2d", ("x", "weight", "grad_output"), inputs.sliding_window_inputs,
         compute.adder2d_outputs),
    Kind("conv2d", ("x", "weight", "bias", "grad_output"), inputs.sliding_window_inputs,
         compute.conv2d_outputs),
    Kind("batch_norm2d", ("x", "weight", "bias", "running_mean", "running_var", "grad_output"),
         inputs.batch_norm_inputs, compute.batch_norm2d_outputs),
    Kind("resnet_cifar", ("x", "target"), inputs.network_inputs, compute.network_outputs,
         input_prefixes=("state.",)),
    # integer inference (docs/integer-format.md appendix): exact int32 sums of uint8/uint16 codes,
    # and a whole quantised ResNet whose graph is stored in the case's params by its inputs
    Kind("adder2d_int", ("x", "weight"), _int_inputs, _int_outputs),
    Kind("resnet_int", ("x",), _int_inputs, _int_outputs, input_prefixes=("q.", "stem_codes.")),
)}


def kind_of(case):
    """The :class:`Kind` of a case (or manifest entry); ValueError for an unknown op."""
    try:
        return KINDS[case["op"]]
    except KeyError:
        raise ValueError(f"unknown op {case['op']!r} (known: {sorted(KINDS)})") from None


def split_arrays(case, arrays):
    """(inputs, outputs) of a golden file's arrays."""
    kind = kind_of(case)
    ins = {k: v for k, v in arrays.items() if kind.is_input(k)}
    outs = {k: v for k, v in arrays.items() if k not in ins}
    return ins, outs
