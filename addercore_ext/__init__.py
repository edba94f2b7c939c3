"""Compiled Cython/OpenMP kernels of addercore (built by setup.py).

Import through :mod:`addercore.ops`, which validates inputs and falls back to the numpy
reference when this package is not compiled.
"""
