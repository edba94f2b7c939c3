"""The adder layer's choices, listed once (ops, layers, models, training and golden read them).

- ``NORMS``: the distance of the adder layer, ``"l1"`` (the paper's ``−Σ|X − F|``) or
  ``"l2"`` (``−Σ(X − F)²``) (method §2.1-2.2).
- ``FILTER_GRADS``: the filter gradient, ``"full"`` (``X − F``, supplement Eq. 3; ``2(X − F)``
  for ℓ2) or ``"sign"`` (``sgn(X − F)``, the supplement's ablation) (method §4.1, §4.3).
- ``INPUT_GRADS``: the input gradient, ``"hardtanh"`` (``HT(F − X)``, main paper), ``"sign"``
  or ``"exact"`` (the true gradient) (method §4.2-4.4).

:func:`default_input_grad` is the one place that says which input gradient a norm gets when
none is chosen.
"""

__all__ = ["NORMS", "FILTER_GRADS", "INPUT_GRADS", "DEFAULT_FILTER_GRAD", "default_input_grad"]

NORMS = ("l1", "l2")
FILTER_GRADS = ("full", "sign")
INPUT_GRADS = ("hardtanh", "sign", "exact")

DEFAULT_FILTER_GRAD = "full"


def default_input_grad(norm):
    """The input gradient used when none is given: HardTanh for ℓ1 (the paper), the exact
    gradient for ℓ2 (its true gradient is already bounded by the data)."""
    return "hardtanh" if norm == "l1" else "exact"
