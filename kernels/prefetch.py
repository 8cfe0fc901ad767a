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
                array = context.make_array(signature.args[0])(context, builder, args[0])
                offset = context.cast(builder, args[1], signature.args[1], types.intp)
                address = builder.gep(array.data, [offset])
                byte = ir.IntType(8).as_pointer()
                i32 = ir.IntType(32)
                fn = builder.module.declare_intrinsic(
                    "llvm.prefetch", [byte], ir.FunctionType(ir.VoidType(), [byte, i32, i32, i32]))
                # read (0), the locality, data cache (1)
                builder.call(fn, [builder.bitcast(address, byte), i32(0), i32(locality), i32(1)])
                return context.get_dummy_value()
            return types.void(a, i), codegen
    hint.__name__ = hint.__qualname__ = name
    return intrinsic(hint)


_prefetch = _hint(3, "_prefetch")
_prefetch_l2 = _hint(2, "_prefetch_l2")


def elements_per_line(a):
    """Elements of the array ``a`` per cache line (at least 1): a compile-time constant in kernels."""
    return max(1, LINE_BYTES // a.itemsize)


@overload(elements_per_line, inline="always")
def _elements_per_line(a):
    step = max(1, LINE_BYTES // as_dtype(a.dtype).itemsize)
    return lambda a: step


@njit(**INLINE_JIT)
def prefetch_rows(a, lo, hi):
    """Prefetch the rows ``[lo, hi)`` (clipped to the array) of the C-contiguous 2-D array ``a``:
    one hint per cache line-sized step, and one for the last element (the rows need not start on
    a line boundary)."""
    lo, hi = max(lo, 0), min(hi, a.shape[0])
    if lo >= hi:
        return
    for f in range(lo * a.shape[1], hi * a.shape[1], elements_per_line(a)):
        _prefetch(a, f)
    _prefetch(a, hi * a.shape[1] - 1)


@njit(**INLINE_JIT)
def prefetch_span(a, start, stop):
    """Prefetch into L2 the elements ``[start, stop)`` (clipped) of the flattened C-contiguous array
    ``a``, and the line of its last element. A kernel that prefetches a large read in small spans,
    one per step of its compute, spreads the hints over the compute (a burst of hints overflows
    the core's queue of outstanding misses, which drops them) and keeps its L1 working set."""
    start, stop = max(start, 0), min(stop, a.size)
    if start >= stop:
        return
    for f in range(start, stop, elements_per_line(a)):
        _prefetch_l2(a, f)
    _prefetch_l2(a, stop - 1)
