"""Issue 5 B.3: the authors' released ResNet-20 AdderNet checkpoint, read without PyTorch,
classifies the first 1,000 real CIFAR-10 test images with > 90% top-1 (reported: 91.8%)."""
import importlib.util
from pathlib import Path

import numpy as np

from conftest import shared_data_path

EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "eval_pretrained.py"


def _example():
    spec = importlib.util.spec_from_file_location("eval_pretrained", EXAMPLE)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_pretrained_resnet20_first_1000_test_images(capsys):
    checkpoint = shared_data_path("pretrained", "ResNet20-AdderNet.pth")
    data_dir = shared_data_path("cifar-10-batches-py")
    r = _example().main([str(checkpoint), "--data-dir", str(data_dir), "--limit", "1000"])
    out = capsys.readouterr()
    assert r["images"] == 1000
    assert r["top1"] > 90.0, r
    assert r["top5"] >= r["top1"] and r["top5"] > 99.0, r
    assert "top-1" in out.out and "images/s" in out.out
    assert "img/s" in out.err  # the progress bar


def test_pretrained_checkpoint_loads_strictly():
    from addercore import io as aio
    from addercore.models import resnet20

    raw = aio.load_torch_checkpoint(shared_data_path("pretrained", "ResNet20-AdderNet.pth"))
    assert all(k.startswith("module.") for k in raw)
    state = aio.strip_prefix(raw)
    model = resnet20(10, kind="adder")
    missing, unexpected = model.load_state_dict(state, strict=True)
    assert missing == [] and unexpected == []
    assert state["layer1.0.conv1.adder"].shape == (16, 16, 3, 3)
    assert state["bn2.running_var"].shape == (10,)
    assert np.all(np.isfinite(state["fc.weight"]))
