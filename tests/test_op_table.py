"""The op table (addercore/ops/table.py) is the one source of truth: the public functions,
the compiled kernels, golden's kinds and the per-op test modules all agree with it, and a
compiled kernel the table promises but the extension lacks is an error, never a silent
fallback to the numpy reference."""
import types
from pathlib import Path

import numpy as np
import pytest

import addercore
from addercore import _backend, golden, ops
from addercore.__main__ import main
from addercore.ops import reference, table
from optest import needs_cython

TESTS = Path(__file__).resolve().parent


def test_public_functions_are_the_table():
    public = [n for n in ops.__all__ if callable(getattr(ops, n)) and n in table.OPS]
    assert public == list(table.OPS)
    for name, entry in table.OPS.items():
        assert getattr(ops, name) is entry.public
        assert entry.reference is getattr(reference, name)
        assert name in reference.__all__
        if entry.compiled is None:
            assert entry.agreement is None and entry.no_compiled  # the reason is stated
        else:
            assert entry.agreement in table.AGREEMENTS and not entry.no_compiled


@needs_cython
def test_every_promised_compiled_kernel_exists():
    from addercore.ops import fast

    assert table.missing_compiled() == []
    promised = [e.name for e in table.entries() if e.compiled]
    assert ops.compiled_ops() == promised
    for name in promised:
        assert callable(getattr(fast, name))
    # and nothing compiled is left out of the table: every public kernel of fast is listed
    kernels = [n for n in fast.__all__ if n in reference.__all__ and n not in ("im2col", "col2im")]
    assert sorted(kernels) == sorted(promised)


def test_numpy_backend_runs_no_compiled_op():
    with _backend.use_backend("numpy"):
        assert ops.compiled_ops() == []
        assert table.implementation("adder2d_forward") is reference.adder2d_forward


def test_missing_compiled_kernel_is_an_error(monkeypatch):
    """A fast module without a promised kernel: listed as missing, and calling the op raises
    instead of quietly running the (55x slower) reference."""
    fake = types.SimpleNamespace(**{e.name: e.reference for e in table.entries()
                                    if e.compiled and e.name != "conv2d_forward"})
    monkeypatch.setattr(_backend, "_BACKEND", "cython")
    monkeypatch.setattr(_backend, "_FAST", fake)
    assert table.missing_compiled() == ["conv2d_forward"]
    assert "conv2d_forward" not in ops.compiled_ops()
    x, w = np.zeros((1, 1, 3, 3)), np.zeros((1, 1, 3, 3))
    with pytest.raises(RuntimeError, match="promises a compiled 'conv2d_forward'"):
        ops.conv2d_forward(x, w)
    assert ops.adder2d_forward(x, w).shape == (1, 1, 1, 1)  # the others still run


def test_each_family_has_its_test_module():
    for family in table.families():
        module = TESTS / f"test_op_{family}.py"
        assert module.is_file(), f"op family {family!r} has no {module.name}"
        text = module.read_text()
        for entry in table.entries(family):
            assert f"ops.{entry.name}(" in text or f'"{entry.name}"' in text, \
                f"{module.name} never calls {entry.name}"
        if any(e.compiled for e in table.entries(family)):
            assert "check_compiled_matches_reference" in text, module.name


def test_golden_kinds_match_the_table():
    op_kinds = {e.golden for e in table.entries() if e.golden}
    assert op_kinds <= set(golden.KINDS)
    # the whole-network kind, and the integer kinds of addercore.quant (not float table ops)
    assert set(golden.KINDS) - op_kinds == {"resnet_cifar", "adder2d_int", "resnet_int"}
    for kind in op_kinds:
        # every golden op kind has cases in the committed set
        assert any(c["op"] == kind for c in golden.cases(small=True)), kind


def test_table_printout(capsys):
    assert main(["ops"]) == 0
    out = capsys.readouterr().out
    for name in table.OPS:
        assert name in out
    assert "none (a BLAS GEMM already)" in out
    assert ("  compiled\n" in out) == (addercore.backend() == "cython")


def test_geometry_is_built_once_and_handed_down(monkeypatch):
    """Validation builds one Conv2dGeometry and the kernel receives that very object."""
    seen = []
    entry = table.OPS["adder2d_forward"]

    def spy(x, weight, stride, padding, norm, geometry=None):
        seen.append(geometry)
        return entry.reference(x, weight, stride, padding, norm, geometry=geometry)

    monkeypatch.setattr(table, "implementation", lambda name: spy)
    monkeypatch.setattr(ops, "_impl", lambda name: spy)
    y = ops.adder2d_forward(np.zeros((2, 3, 7, 8)), np.zeros((4, 3, 3, 2)), (2, 1), (1, 0))
    (geo,) = seen
    assert isinstance(geo, ops.Conv2dGeometry)
    assert geo.out_shape == y.shape == (2, 4, 4, 7) and geo.k == 18
    assert (geo.hp, geo.wp, geo.stride, geo.padding) == (9, 8, (2, 1), (1, 0))


def test_geometry_formula_dilation_and_groups():
    from addercore.ops.geometry import Conv2dGeometry, output_size

    for h, k, s, p in [(7, 3, 1, 1), (8, 1, 2, 0), (11, 5, 3, 2), (5, 5, 1, 0), (2, 3, 4, 1)]:
        assert output_size(h, k, s, p) == len(range(0, h + 2 * p - k + 1, s))
    assert output_size(9, 3, 1, 0, dilation=2) == 5  # extent 5
    # dilation and groups are supported (the former guard is gone): K and the weight shape
    # divide by groups, the output size takes the dilated extent
    geo = Conv2dGeometry(1, 6, 9, 8, 4, 3, 2, (1, 1), (1, 0), (2, 3), 2)
    assert (geo.k, geo.weight_shape, geo.out_hw, geo.span) == (18, (4, 3, 3, 2), (7, 5), (5, 4))


def test_options_are_one_list():
    from addercore import nn
    from addercore.models import _common
    from addercore.ops import options

    assert ops.NORMS is options.NORMS is _common.NORMS
    assert options.default_input_grad("l1") == "hardtanh"
    assert options.default_input_grad("l2") == "exact"
    assert nn.Adder2d(1, 1, 1, norm="l2").input_grad == "exact"
    with pytest.raises(ValueError, match=r"input_grad must be one of \['exact', 'hardtanh', 'sign'\]"):
        ops.adder2d_backward(np.zeros((1, 1, 2, 2)), np.zeros((1, 1, 1, 1)),
                             np.zeros((1, 1, 2, 2)), input_grad="tanh")
