"""Software prefetch for the streaming CPU kernels.

A kernel that alternates between compute that touches no memory (random draws, products on cached
scratch) and reads of the next rows of a large array leaves the memory system idle during the
compute: the hardware prefetcher runs only a few lines ahead of the demand reads. Asking for the
next chunk's rows before computing on the current one overlaps the two. CPU only (an LLVM
``prefetch`` hint: it never faults and changes no result).
"""
from llvmlite import ir
from numba import njit, types
from numba.extending import intrinsic, overload
from numba.np.numpy_support import as_dtype

from .config import INLINE_JIT
from .simd import element_pointer

LINE_BYTES = 64
"""Cache line size of x86-64 and most ARM64 cores (Apple's are 128 bytes: there a hint per 64
bytes only repeats itself)."""


def _hint(locality, name):
    """An intrinsic ``hint(a, i)``: element ``i`` of the flattened C-contiguous array ``a`` is read
    soon; fetch its line into the caches that LLVM's ``locality`` names (3: every level, 2: L2 and
    beyond), named ``name`` in typing errors. No bounds check: a prefetch of any address is
    harmless."""
    def hint(typingctx, a, i):
        if isinstance(a, types.Array) and a.layout == "C" and isinstance(i, types.Integer):
            def codegen(context, builder, signature, args):
                byte, i32 = ir.IntType(8), ir.IntType(32)
                address = element_pointer(context, builder, signature.args[0], args[0],
                                          signature.args[1], args[1], byte)
                fn = builder.module.declare_intrinsic(
                    "llvm.prefetch", [byte.as_pointer()],
                    ir.FunctionType(ir.VoidType(), [byte.as_pointer(), i32, i32, i32]))
                # read (0), the locality, data cache (1)
                builder.call(fn, [address, i32(0), i32(locality), i32(1)])
                return context.get_dummy_value()
            return types.void(a, i), codegen
    hint.__name__ = hint.__qualname__ = name
    return intrinsic(hint)


_prefetch = _hint(3, "_prefetch")
prefetch_l2 = _hint(2, "prefetch_l2")
"""``prefetch_l2(a, i)``: fetch the cache line of flat element ``i`` of ``a`` into L2 (a hint: harmless
for any ``i``). One hint per step of a long computation spreads a read over it."""


def elements_per_line(a):
    """Elements of the array ``a`` per cache line (at least 1): a compile-time constant in kernels."""
    return max(1, LINE_BYTES // a.itemsize)


@overload(elements_per_line, inline="always")
def _elements_per_line(a):
    step = max(1, LINE_BYTES // as_dtype(a.dtype).itemsize)
    return lambda a: step


@njit(**INLINE_JIT)
def _hint_span(a, start, stop, everywhere):
    """One hint per cache line-sized step of the flat elements ``[start, stop)`` (clipped) of the
    C-contiguous array ``a``, and one for the last (the span need not start on a line boundary):
    into every cache level when ``everywhere``, else into L2 and beyond."""
    start, stop = max(start, 0), min(stop, a.size)
    if start >= stop:
        return
    for f in range(start, stop, elements_per_line(a)):
        if everywhere:
            _prefetch(a, f)
        else:
            prefetch_l2(a, f)
    if everywhere:
        _prefetch(a, stop - 1)
    else:
        prefetch_l2(a, stop - 1)


@njit(**INLINE_JIT)
def prefetch_rows(a, lo, hi):
    """Prefetch the rows ``[lo, hi)`` (clipped to the array) of the C-contiguous 2-D array ``a``
    into every cache level."""
    _hint_span(a, lo * a.shape[1], hi * a.shape[1], True)


@njit(**INLINE_JIT)
def prefetch_span(a, start, stop):
    """Prefetch into L2 the elements ``[start, stop)`` (clipped) of the flattened C-contiguous array
    ``a``. A kernel that prefetches a large read in small spans, one per step of its compute,
    spreads the hints over the compute (a burst of hints overflows the core's queue of outstanding
    misses, which drops them) and keeps its L1 working set."""
    _hint_span(a, start, stop, False)
