"""The geometry of a 2-D sliding-window layer, computed in one place.

Every op that slides a kernel over an image (adder layer, convolution, pooling, im2col) needs
the padded size, the output size ``Ho``/``Wo`` and the filter length ``K``. They are computed
here and nowhere else: :func:`output_size` is the one formula, :class:`Conv2dGeometry` the
object that validation (:func:`addercore.ops._validate.conv_geometry`) builds once per call
and hands down to the reference and compiled kernels.

``dilation`` (tap ``(i, j)`` reads input ``(h·sh + i·dh − ph, w·sw + j·dw − pw)``) and
``groups`` (output channel ``o`` sees only the input channels of its group, method §2.6) are
handled by every sliding-window kernel, reference and compiled.
"""
import numbers
from dataclasses import dataclass

__all__ = ["output_size", "pair", "Conv2dGeometry"]


def output_size(in_size, kernel, stride, padding, dilation=1):
    """Output length of one spatial axis (method §1.2 notation ``Ho``/``Wo``):
    ``(in + 2·padding − dilation·(kernel − 1) − 1) // stride + 1``; with ``dilation=1`` the
    familiar ``(in + 2·padding − kernel) // stride + 1``. Plain ints in, int out."""
    return (in_size + 2 * padding - dilation * (kernel - 1) - 1) // stride + 1


def pair(value):
    """``(a, b)`` from an int or a pair (no range checks: see ``_validate.as_pair`` for those)."""
    if isinstance(value, (tuple, list)):
        a, b = value
        return int(a), int(b)
    if isinstance(value, numbers.Integral) and not isinstance(value, bool):
        return int(value), int(value)
    raise TypeError(f"expected an int or a pair of ints, got {value!r}")


@dataclass(frozen=True)
class Conv2dGeometry:
    """Shapes of one 2-D sliding-window call: input (N, Cin, H, W), filters
    (Cout, Cin/groups, kh, kw), ``stride``/``padding``/``dilation`` ``(h, w)`` int pairs.

    Derived (properties): ``hp``/``wp`` (padded input), ``ho``/``wo`` (output), ``k`` (filter
    length ``Cin/groups·kh·kw``, the canonical summation runs over it), and the shapes of x,
    weight and the output. Built unchecked by :meth:`from_shapes`; the public ops build it
    through validation, which checks the ranges first.
    """

    n: int
    cin: int
    h: int
    w: int
    cout: int
    kh: int
    kw: int
    stride: tuple = (1, 1)
    padding: tuple = (0, 0)
    dilation: tuple = (1, 1)
    groups: int = 1

    @classmethod
    def from_shapes(cls, x_shape, weight_shape, stride=1, padding=0, dilation=1, groups=1):
        """Geometry of ``x_shape`` (N, Cin, H, W) against ``weight_shape``
        (Cout, Cin/groups, kh, kw); ``stride``/``padding``/``dilation`` an int or a pair.
        No validation beyond the types."""
        n, cin, h, w = (int(d) for d in x_shape)
        cout, _, kh, kw = (int(d) for d in weight_shape)
        return cls(n, cin, h, w, cout, kh, kw, pair(stride), pair(padding), pair(dilation),
                   int(groups))

    @property
    def cin_group(self):
        """Input channels per group (``Cin/groups``)."""
        return self.cin // self.groups

    @property
    def cout_group(self):
        """Output channels per group (``Cout/groups``)."""
        return self.cout // self.groups

    @property
    def span(self):
        """``(dh·(kh − 1) + 1, dw·(kw − 1) + 1)``: the window's extent in input cells."""
        return (self.dilation[0] * (self.kh - 1) + 1, self.dilation[1] * (self.kw - 1) + 1)

    @property
    def kernel(self):
        return self.kh, self.kw

    @property
    def hp(self):
        return self.h + 2 * self.padding[0]

    @property
    def wp(self):
        return self.w + 2 * self.padding[1]

    @property
    def ho(self):
        return output_size(self.h, self.kh, self.stride[0], self.padding[0], self.dilation[0])

    @property
    def wo(self):
        return output_size(self.w, self.kw, self.stride[1], self.padding[1], self.dilation[1])

    @property
    def out_hw(self):
        return self.ho, self.wo

    @property
    def k(self):
        """Filter length: taps summed per output element (``Cin/groups·kh·kw``)."""
        return self.cin // self.groups * self.kh * self.kw

    @property
    def x_shape(self):
        return self.n, self.cin, self.h, self.w

    @property
    def weight_shape(self):
        return self.cout, self.cin // self.groups, self.kh, self.kw

    @property
    def out_shape(self):
        return self.n, self.cout, self.ho, self.wo
