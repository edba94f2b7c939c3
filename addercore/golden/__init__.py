"""Golden test vectors for ports of AdderNet (CUDA, FPGA, MCU, Rust, TVM, ...).

A golden set is a directory holding ``manifest.json`` and one ``.npz`` per case; the format is
documented in ``docs/golden-format.md``. The package is split along its jobs:

- :mod:`.cases`: the case list (:func:`cases`), tolerances, format constants;
- :mod:`.kinds`: one entry per golden kind (``adder2d``, ``conv2d``, ``batch_norm2d``,
  ``resnet_cifar``) naming its input arrays, how they are drawn (:mod:`.inputs`) and how the
  outputs are computed (:mod:`.compute`); op kinds are tied to the op table
  (:mod:`addercore.ops.table`);
- :mod:`.files`: deterministic ``.npz`` writing (atomic, fsync'ed), confined and size-bounded
  reading, the manifest and its digest;
- :mod:`.generate`: writes a set (:func:`generate`);
- :mod:`.verify`: checks one (:func:`verify`): either addercore itself (recompute every case
  on the active backend) or another implementation's outputs (``candidate_dir``: same file
  names, same array names);
- :mod:`.report`: the summary table.

Generation is deterministic: inputs come from ``numpy.random.default_rng(seed)``, outputs are
computed on the numpy reference backend with one BLAS thread, ``.npz`` files are written with
fixed zip metadata (sorted names, stored, fixed timestamps) and the manifest with sorted keys,
so generating twice gives byte-identical files whatever the thread setting.

Comparison rule (per output array): ``max|candidate - golden| <= atol + rtol · max|golden|``
(a norm-wise relative error, robust to cancellation), same shape required, integer arrays
exact. Arrays listed in a case's ``tolerance["exact"]`` are bit-exact when summed in the
canonical order; ``strict=True`` demands that.
"""
from .cases import FORMAT_NAME, FORMAT_VERSION, SUMMATION_ORDER, cases, select_cases
from .compute import compute_case
from .files import (COMMITTED_SMALL_SET_DIGEST, MAX_FILE_BYTES, MAX_MANIFEST_BYTES,
                    load_manifest, manifest_digest, read_npz, write_npz)
from .generate import generate
from .inputs import make_inputs
from .kinds import KINDS, split_arrays
from .report import summary_table
from .verify import CaseResult, compare_arrays, verify

__all__ = ["FORMAT_NAME", "FORMAT_VERSION", "SUMMATION_ORDER", "cases", "select_cases",
           "generate", "verify", "compute_case", "make_inputs", "compare_arrays", "write_npz",
           "read_npz", "load_manifest", "manifest_digest", "summary_table", "CaseResult",
           "KINDS", "split_arrays", "COMMITTED_SMALL_SET_DIGEST", "MAX_FILE_BYTES",
           "MAX_MANIFEST_BYTES"]
