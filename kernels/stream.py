"""Non-temporal ("streaming") stores for the CPU kernels that write large outputs.

An ordinary store to a line that is not in the cache first reads the line from memory (a read for
ownership), then writes it back when it is evicted: writing an output of ``B`` bytes moves ``2B``.
A non-temporal store writes whole lines straight to memory, neither reading them nor evicting the
kernel's working set: on this project's 2-core machine a copy of 512 MiB took 27-38 ms with them,
against 48-60 ms with ordinary stores (NumPy's ``copyto`` among them). Worth it only for outputs
too large to be read again from the cache (``STREAM_BYTES``): a streamed line is no longer cached.
CPU only; the values written are the same. ``stream_block_to`` streams a block of scratch
columns straight to the rows of an output, so that a kernel writes each vector of entities as soon
as it has computed it and the writes overlap its compute (a burst of streamed stores stalls it).
"""
import llvmlite.binding as llvm
from llvmlite import ir
from numba import njit, types
from numba.extending import intrinsic

from .config import INLINE_JIT
from .simd import (WIDTH, _contiguous_float64, element_pointer, float64xW, lanes, load, store,
                   transposed_block)

STREAM_BYTES = 64 << 20
"""Outputs of at least this many bytes are worth streaming: larger than the caches keep of them."""

_VECTOR_BYTES = 8 * WIDTH
_X86 = llvm.get_process_triple().startswith(("x86_64", "i386", "i686"))


@intrinsic
def stream(typingctx, a, i, v):
    """Write the vector ``v`` to the flat elements ``i .. i + WIDTH − 1`` of the C-contiguous float64
    array ``a`` with a non-temporal store. The element's address must be a multiple of the vector's
    size in bytes (``copy_out`` sees to it; a misaligned one faults); no bounds check."""
    if _contiguous_float64(a) and a.mutable and isinstance(i, types.Integer) and v == float64xW:
        def codegen(context, builder, signature, args):
            _store_nontemporal(builder, args[2], element_pointer(
                context, builder, signature.args[0], args[0], signature.args[1], args[1]))
            return context.get_dummy_value()
        return types.void(a, i, v), codegen


def _store_nontemporal(builder, vector, pointer):
    """A non-temporal store of ``vector`` to ``pointer`` (aligned to the vector's size)."""
    store = builder.store(vector, pointer, align=_VECTOR_BYTES)
    store.set_metadata("nontemporal", builder.module.add_metadata([ir.IntType(32)(1)]))


@intrinsic
def fence(typingctx):
    """Order the calling thread's earlier non-temporal stores before its later stores (x86
    ``sfence``; the other targets order them at the thread join as any store)."""
    def codegen(context, builder, signature, args):
        if _X86:
            fn = builder.module.declare_intrinsic("llvm.x86.sse.sfence", (),
                                                  ir.FunctionType(ir.VoidType(), []))
            builder.call(fn, [])
        return context.get_dummy_value()
    return types.void(), codegen


@njit(**INLINE_JIT)
def copy_out(src, s, dst, d, n):
    """``dst.flat[d : d + n] = src.flat[s : s + n]`` (C-contiguous float64 arrays): the aligned
    vectors of ``dst`` by ``stream``, the elements before and after them (and all of an array whose
    data is not 8-byte aligned) by ordinary stores. Call ``fence`` once the streaming is done."""
    address = dst.ctypes.data + 8 * d
    head = n if address % 8 else min(n, (-address % _VECTOR_BYTES) // 8)
    for k in range(head):
        store(dst, d + k, lanes(src, s + k, 0.0))
    k = head
    while k + WIDTH <= n:
        stream(dst, d + k, load(src, s + k))
        k += WIDTH
    for t in range(k, n):
        store(dst, d + t, lanes(src, s + t, 0.0))


def _at_address(builder, address, pointee):
    """The integer ``address`` (bytes) as a pointer to ``pointee``."""
    return builder.inttoptr(address, pointee.as_pointer())


@intrinsic
def stream_block_to(typingctx, src, i, si, address, row_bytes):
    """Transpose the ``WIDTH × WIDTH`` block of ``src`` at flat ``i`` (rows ``si`` apart) in
    registers and stream column ``c`` to the byte address ``address + c·row_bytes`` by a
    non-temporal store: ``WIDTH`` entities' components, from ``(component, entity)`` scratch to
    the rows of an output. Every address must be a multiple of the vector's size; no checks."""
    if _contiguous_float64(src) and all(isinstance(t, types.Integer)
                                        for t in (i, si, address, row_bytes)):
        def codegen(context, builder, signature, args):
            rows = transposed_block(context, builder, signature.args[:3], args[:3])
            base, step = (context.cast(builder, v, t, types.intp)
                          for v, t in zip(args[3:], signature.args[3:]))
            for c in range(WIDTH):
                at = builder.add(base, builder.mul(step, ir.Constant(base.type, c)))
                _store_nontemporal(builder, rows[c], _at_address(builder, at, rows[c].type))
            return context.get_dummy_value()
        return types.void(src, i, si, address, row_bytes), codegen


@intrinsic
def store_to(typingctx, address, value):
    """``*(double *) address = value``: an ordinary store to a byte address (the rows around
    streamed ones). No checks."""
    if isinstance(address, types.Integer) and isinstance(value, types.Float):
        def codegen(context, builder, signature, args):
            at = context.cast(builder, args[0], signature.args[0], types.intp)
            builder.store(context.cast(builder, args[1], signature.args[1], types.float64),
                          _at_address(builder, at, ir.DoubleType()), align=8)
            return context.get_dummy_value()
        return types.void(address, value), codegen
