"""Software prefetch for the streaming CPU kernels.

A kernel that alternates between compute that touches no memory (random draws, products on cached
scratch) and reads of the next rows of a large array leaves the memory system idle during the
compute: the hardware prefetcher runs only a few lines ahead of the demand reads. Asking for the
next chunk's rows a few lines at a time, spread over the compute on the current one, overlaps the
two. CPU only (an LLVM ``prefetch`` hint: it never faults and changes no result).
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


@intrinsic
def prefetch_l2(typingctx, a, i):
    """``prefetch_l2(a, i)``: fetch the cache line of flat element ``i`` of the C-contiguous array
    ``a`` into L2 (an LLVM ``prefetch`` hint, locality 2). No bounds check: a prefetch of any address
    is harmless. One hint per step of a long computation spreads a read over it."""
    if isinstance(a, types.Array) and a.layout == "C" and isinstance(i, types.Integer):
        def codegen(context, builder, signature, args):
            byte, i32 = ir.IntType(8), ir.IntType(32)
            address = element_pointer(context, builder, signature.args[0], args[0],
                                      signature.args[1], args[1], byte)
            fn = builder.module.declare_intrinsic(
                "llvm.prefetch", [byte.as_pointer()],
                ir.FunctionType(ir.VoidType(), [byte.as_pointer(), i32, i32, i32]))
            builder.call(fn, [address, i32(0), i32(2), i32(1)])   # read, L2 and beyond, data
            return context.get_dummy_value()
        return types.void(a, i), codegen


def elements_per_line(a):
    """Elements of the array ``a`` per cache line (at least 1): a compile-time constant in kernels."""
    return max(1, LINE_BYTES // a.itemsize)


@overload(elements_per_line, inline="always")
def _elements_per_line(a):
    step = max(1, LINE_BYTES // as_dtype(a.dtype).itemsize)
    return lambda a: step


@njit(**INLINE_JIT)
def prefetch_span(a, start, stop):
    """Prefetch into L2 the elements ``[start, stop)`` (clipped) of the flattened C-contiguous array
    ``a``: a hint per cache line-sized step, and one for the last element (the span need not start
    on a line boundary). A kernel that prefetches a large read in small spans, one per step of its
    compute, spreads the hints over the compute (a burst of hints overflows the core's queue of
    outstanding misses, which drops them) and keeps its L1 working set."""
    start, stop = max(start, 0), min(stop, a.size)
    if start >= stop:
        return
    for f in range(start, stop, elements_per_line(a)):
        prefetch_l2(a, f)
    prefetch_l2(a, stop - 1)


@njit(**INLINE_JIT)
def prefetch_rows(a, lo, hi):
    """Prefetch the rows ``[lo, hi)`` (clipped) of the C-contiguous 2-D array ``a`` into L2."""
    prefetch_span(a, lo * a.shape[1], hi * a.shape[1])
