"""Import the compiled addercore, whichever way it is installed (used by the example scripts).

``python examples/x.py`` puts ``examples/`` first on ``sys.path``, not the checkout. Order:

1. an importable addercore (``pip install .``, or ``PYTHONPATH``) whose compiled kernels
   (``addercore_ext``) are importable too: use it, the path untouched;
2. else the checkout this script lives in, when it has an in-place build
   (``python setup.py build_ext --inplace``): put it first on the path;
3. else whatever addercore is importable, or the checkout: uncompiled, so slow; the training
   script refuses to train on it unless asked (``--allow-numpy-backend``).
"""
import importlib.machinery
import importlib.util
import sys
from pathlib import Path

CHECKOUT = Path(__file__).resolve().parents[1]


def _compiled_in(folder):
    """True when ``folder/addercore_ext`` holds the compiled ``_adder`` extension."""
    ext = Path(folder) / "addercore_ext"
    return any((ext / f"_adder{suffix}").is_file()
               for suffix in importlib.machinery.EXTENSION_SUFFIXES)


def _installed_compiled():
    spec = importlib.util.find_spec("addercore")
    if spec is None or not spec.origin:
        return None
    if not _compiled_in(Path(spec.origin).parents[1]):
        ext = importlib.util.find_spec("addercore_ext")  # installed beside it, or elsewhere
        if ext is None or not ext.submodule_search_locations or not any(
                _compiled_in(Path(p).parent) for p in ext.submodule_search_locations):
            return None
    return spec


def select():
    """Arrange ``sys.path`` as described in the module docstring; returns where addercore will
    be imported from (a string, for messages)."""
    if "addercore" in sys.modules:
        return str(Path(sys.modules["addercore"].__file__).parent)
    spec = _installed_compiled()
    if spec is not None:
        return str(Path(spec.origin).parent)
    if _compiled_in(CHECKOUT) or importlib.util.find_spec("addercore") is None:
        sys.path.insert(0, str(CHECKOUT))
        return str(CHECKOUT / "addercore")
    return str(Path(importlib.util.find_spec("addercore").origin).parent)


ADDERCORE_FROM = select()


def addercore_command():
    """``[python, ...]`` running ``python -m addercore`` on the addercore chosen here (a plain
    ``-m`` would put the current directory, perhaps an uncompiled checkout, first)."""
    root = str(Path(ADDERCORE_FROM).parent)
    return [sys.executable, "-c", f"import sys; sys.path.insert(0, {root!r}); "
            "from addercore.__main__ import main; sys.exit(main())"]
