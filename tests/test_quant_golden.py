"""Integer golden cases (addercore.quant.golden_cases): deterministic inputs, exact int32
outputs, compiled == numpy reference backend, and the adder2d_int outputs equal the reference."""
import copy

import numpy as np

from addercore._backend import use_backend
from addercore.quant import golden_cases as G
from addercore.quant import reference as R


def test_case_list():
    small, full = G.cases(small=True), G.cases()
    assert set(c["name"] for c in small) < set(c["name"] for c in full)
    bits = {c["params"]["bits"] for c in full if c["op"] == "adder2d_int"}
    assert bits == {4, 6, 8, 12, 16}
    assert {"random", "zeros", "extremes", "ties"} <= {c["params"]["values"] for c in full
                                                      if c["op"] == "adder2d_int"}
    assert len({c["name"] for c in full}) == len(full)


def test_cases_exact_and_deterministic():
    for c in G.cases(small=True):
        c = copy.deepcopy(c)
        ins = G.make_inputs(c)
        again = G.make_inputs(copy.deepcopy(c))
        assert all(np.array_equal(ins[k], again[k]) for k in ins)
        with use_backend("numpy"):
            ref = G.compute_case(c, ins)
        out = G.compute_case(c, ins)
        for k in ref:
            if k in c["tolerance"]["exact"]:
                assert ref[k].dtype.kind in "iu" and np.array_equal(ref[k], out[k]), (c["name"], k)
            else:
                np.testing.assert_allclose(out[k], ref[k], rtol=1e-12, atol=1e-12)
        if c["op"] == "adder2d_int":
            p = c["params"]
            lo, hi = (0, 2**p["bits"] - 1) if not p["signed"] else (-(2**(p["bits"] - 1)),
                                                                   2**(p["bits"] - 1) - 1)
            assert ins["x"].min() >= lo and ins["x"].max() <= hi
            want = R.adder2d_int(ins["x"], ins["weight"], tuple(p["stride"]),
                                 tuple(p["padding"]), p["pad_value"])
            assert np.array_equal(want, out["output"])
        else:  # the body from the stem codes reproduces the full forward
            logits_full = None
            from addercore.quant.model import QuantizedModel

            q = QuantizedModel({k[2:]: v for k, v in ins.items() if k.startswith("q.")},
                               c["params"]["graph"])
            logits_full = q.forward(ins["x"])
            np.testing.assert_allclose(out["logits"], logits_full, rtol=1e-12, atol=1e-12)
        assert set(G.input_names(c, {**ins, **out})) == set(ins)


def test_registered_in_the_full_golden_set(tmp_path):
    # the integer kinds go through addercore.golden like every op: generate, split, verify
    from addercore import golden

    assert {"adder2d_int", "resnet_int"} <= set(golden.KINDS)
    assert not any(c["op"] in G.OPS for c in golden.cases(small=True))  # committed set unchanged
    manifest = golden.generate(tmp_path, select=["adder2d_int_b8*", "adder2d_int_b16*"])
    entries = manifest["cases"]
    assert entries and {e["op"] for e in entries} == {"adder2d_int"}
    for e in entries:
        assert e["inputs"] == ["weight", "x"] and e["outputs"] == ["output"]
        arrays = golden.read_npz(tmp_path / e["file"])
        p = e["params"]
        expected = R.adder2d_int(arrays["x"], arrays["weight"], tuple(p["stride"]),
                                 tuple(p["padding"]), p["pad_value"])
        assert arrays["output"].dtype == np.int32 and np.array_equal(arrays["output"], expected)
    results = golden.verify(tmp_path)
    assert len(results) == len(entries) and all(r.ok for r in results)
