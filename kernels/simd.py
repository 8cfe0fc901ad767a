"""Explicit SIMD for the CPU kernels: vectors of ``WIDTH`` float64 that stay in registers.

LLVM vectorises only innermost loops, through memory: a register-tiled product (several
independent multiply-add chains over a tile of rows, the tile's partial sums in registers) cannot be
written as plain loops. These intrinsics hand a kernel LLVM vector values directly: ``load`` and
``store`` of ``WIDTH`` consecutive elements, ``splat`` of a scalar, ``fma`` (one rounding), ``add``,
``mul``, ``sqrt``, ``reciprocal_norm`` and ``transpose`` of a ``WIDTH × WIDTH`` block in registers.
Every operation is IEEE lane by lane (``fma`` and ``sqrt`` correctly rounded), so a lane's result is
bitwise its scalar twin's and never depends on the lane its data falls in. Vectors are CPU only;
where they are narrower (SSE, NEON) LLVM splits each operation. ``fma``, ``add``, ``mul``,
``reciprocal_norm``, ``lanes`` and ``store`` also take floats, on any target (the GPU included): one
body, given a float or a vector ``zero`` to start from, then computes one entity or a vector of
them.
"""
import math

import llvmlite.binding as llvm
from llvmlite import ir
from numba import njit, types
from numba.core import cgutils, config
from numba.extending import intrinsic, models, register_model

from .config import INLINE_JIT


def _lanes():
    """8 (512 bits) where the compile target has AVX-512, else 4: the target's full vector width
    (512-bit vectors give twice the multiply-adds per cycle of 256-bit ones on AVX-512 cores), or
    256 bits, which LLVM splits in two on SSE and NEON. A lane's result does not depend on it."""
    if config.CPU_FEATURES is not None:   # NUMBA_CPU_FEATURES: compiling for another machine
        return 8 if "+avx512f" in config.CPU_FEATURES.split(",") else 4
    if config.CPU_NAME is not None:       # NUMBA_CPU_NAME alone (e.g. "generic"): its baseline
        return 4
    return 8 if llvm.get_host_cpu_features().get("avx512f", False) else 4


WIDTH = _lanes()
"""Lanes of a vector (see ``_lanes``)."""

_VECTOR = ir.VectorType(ir.DoubleType(), WIDTH)


class Float64Vector(types.Type):
    """Numba type of a vector of ``WIDTH`` float64 (an LLVM ``<WIDTH x double>`` value)."""

    def __init__(self):
        super().__init__(name=f"float64x{WIDTH}")


float64xW = Float64Vector()


@register_model(Float64Vector)
class _VectorModel(models.PrimitiveModel):
    def __init__(self, dmm, fe_type):
        super().__init__(dmm, fe_type, _VECTOR)


def _contiguous_float64(a):
    return isinstance(a, types.Array) and a.layout == "C" and a.dtype == types.float64


def element_pointer(context, builder, array_type, array, index_type, index, pointee=_VECTOR):
    """Pointer to flat element ``index`` of a C-contiguous array, as a pointer to ``pointee`` (an
    LLVM type: a vector, a double, a byte)."""
    data = context.make_array(array_type)(context, builder, array).data
    offset = context.cast(builder, index, index_type, types.intp)
    return builder.bitcast(builder.gep(data, [offset]), pointee.as_pointer())


def _real(t):
    return isinstance(t, (types.Float, types.Integer))


@intrinsic(target="generic")
def lanes(typingctx, a, i, like):
    """Flat elements ``i .. i + WIDTH − 1`` of the C-contiguous float64 array ``a`` as a vector when
    ``like`` is a vector, the element ``a.flat[i]`` when it is a float: one body then serves a
    vector of entities and a single one (on any target). No bounds check: the caller keeps
    ``0 <= i <= a.size − WIDTH`` (or ``a.size − 1``)."""
    if _contiguous_float64(a) and isinstance(i, types.Integer) and (like == float64xW or _real(like)):
        pointee = _VECTOR if like == float64xW else ir.DoubleType()

        def codegen(context, builder, signature, args):
            return builder.load(element_pointer(context, builder, signature.args[0], args[0],
                                                signature.args[1], args[1], pointee), align=8)
        return (float64xW if like == float64xW else types.float64)(a, i, like), codegen


@intrinsic(target="generic")
def store(typingctx, a, i, v):
    """Write the vector ``v`` to flat elements ``i .. i + WIDTH − 1`` of ``a`` (as ``lanes``), or the
    float ``v`` to element ``i``."""
    if _contiguous_float64(a) and a.mutable and isinstance(i, types.Integer) and (v == float64xW or _real(v)):
        pointee = _VECTOR if v == float64xW else ir.DoubleType()

        def codegen(context, builder, signature, args):
            value = args[2] if v == float64xW else context.cast(builder, args[2], signature.args[2],
                                                                 types.float64)
            builder.store(value, element_pointer(context, builder, signature.args[0], args[0],
                                                 signature.args[1], args[1], pointee), align=8)
            return context.get_dummy_value()
        return types.void(a, i, v), codegen


@intrinsic
def splat(typingctx, x):
    """The vector with every lane ``x`` (a real scalar, converted to float64)."""
    if _real(x):
        def codegen(context, builder, signature, args):
            return _splat(builder, context.cast(builder, args[0], signature.args[0], types.float64))
        return float64xW(x), codegen


@njit(**INLINE_JIT)
def load(a, i):
    """``lanes(a, i, vector)``: flat elements ``i .. i + WIDTH − 1`` of ``a`` as a vector."""
    return lanes(a, i, splat(0.0))


def _vector_call(builder, name, args):
    """Call the LLVM vector intrinsic ``llvm.<name>`` on the vectors ``args``."""
    fn = cgutils.get_or_insert_function(
        builder.module, ir.FunctionType(_VECTOR, [_VECTOR] * len(args)), f"llvm.{name}.v{WIDTH}f64")
    return builder.call(fn, args)


def _as_vector(context, builder, value, t):
    """The vector ``value`` of Numba type ``t``, or the real scalar ``value`` splat."""
    return value if t == float64xW else _splat(builder, context.cast(builder, value, t, types.float64))


def _splat(builder, value):
    lane0 = builder.insert_element(ir.Constant(_VECTOR, ir.Undefined), value, ir.IntType(32)(0))
    zeros = ir.Constant(ir.VectorType(ir.IntType(32), WIDTH), [0] * WIDTH)
    return builder.shuffle_vector(lane0, ir.Constant(_VECTOR, ir.Undefined), zeros)


@intrinsic(target="generic")
def fma(typingctx, a, b, c):
    """``a·b + c`` rounded once (IEEE fused multiply-add). Real scalars: a float64, the same bits on
    the CPU and on a GPU (a CUDA compiler fuses ``x * x + y * y`` on its own, a CPU compiler without
    fast-math does not: where results must agree to the bit across targets, the fusion is written
    out). With a vector among them: lane by lane, scalars splat to every lane."""
    operands = (a, b, c)
    if all(_real(t) for t in operands):
        def codegen(context, builder, signature, args):
            d = ir.DoubleType()
            fn = builder.module.declare_intrinsic("llvm.fma", [d], ir.FunctionType(d, [d, d, d]))
            return builder.call(fn, [context.cast(builder, v, t, types.float64)
                                     for v, t in zip(args, signature.args)])
        return types.float64(a, b, c), codegen
    if float64xW in operands and all(t == float64xW or _real(t) for t in operands):
        def codegen(context, builder, signature, args):
            return _vector_call(builder, "fma", [_as_vector(context, builder, v, t)
                                                 for v, t in zip(args, signature.args)])
        return float64xW(a, b, c), codegen


def _lanewise(name, instruction, doc):
    """An intrinsic ``name(a, b)`` documented by ``doc``: the IR ``instruction`` (``fadd``, ``fmul``)
    on two float64, or lane by lane when either is a vector (a real scalar splats to every lane)."""
    def typer(typingctx, a, b):
        if a == b == types.float64:
            return types.float64(a, b), lambda context, builder, signature, args: getattr(
                builder, instruction)(*args)
        if float64xW in (a, b) and all(t == float64xW or _real(t) for t in (a, b)):
            def codegen(context, builder, signature, args):
                return getattr(builder, instruction)(*(_as_vector(context, builder, v, t)
                                                       for v, t in zip(args, signature.args)))
            return float64xW(a, b), codegen
    typer.__name__ = typer.__qualname__ = name
    typer.__doc__ = doc
    return intrinsic(target="generic")(typer)


add = _lanewise("add", "fadd", "``a + b``, lane by lane for vectors.")
mul = _lanewise("mul", "fmul", "``a · b``, lane by lane for vectors.")


@intrinsic
def sqrt(typingctx, a):
    """The correctly rounded square root of each lane."""
    if a == float64xW:
        return float64xW(a), lambda context, builder, signature, args: _vector_call(
            builder, "sqrt", args)


@intrinsic(target="generic")
def reciprocal_norm(typingctx, q):
    """``1 / √q`` for a squared norm ``q`` that is finite and > 0, else 1 (a vector: lane by lane):
    the factor that normalises a state and leaves one of zero or non-finite norm as it is. Each
    lane correctly rounded (a square root, then a division), a float64 or a vector, on any target."""
    if q == float64xW or _real(q):
        vector = q == float64xW

        def codegen(context, builder, signature, args):
            value = args[0] if vector else context.cast(builder, args[0], signature.args[0],
                                                        types.float64)
            kind = value.type
            one, zero, inf = (ir.Constant(kind, [v] * WIDTH if vector else v) for v in (1.0, 0.0, math.inf))
            root = cgutils.get_or_insert_function(builder.module, ir.FunctionType(kind, [kind]),
                                                  f"llvm.sqrt.{f'v{WIDTH}' if vector else ''}f64")
            good = builder.and_(builder.fcmp_ordered(">", value, zero),
                                builder.fcmp_ordered("<", value, inf))
            return builder.select(good, builder.fdiv(one, builder.call(root, [value])), one)
        return (float64xW if vector else types.float64)(q), codegen


def _interleave(builder, a, b, s):
    """Swap bit ``s`` of the row and column indices of the two rows ``a`` (row bit 0) and ``b``
    (row bit 1) of a block: the two new rows. One step of a transpose."""
    lo = [j if j & s == 0 else WIDTH + j - s for j in range(WIDTH)]
    hi = [j + s if j & s == 0 else WIDTH + j for j in range(WIDTH)]
    i32 = ir.IntType(32)
    return tuple(builder.shuffle_vector(a, b, ir.Constant(ir.VectorType(i32, WIDTH), [i32(m) for m in mask]))
                 for mask in (lo, hi))


@intrinsic
def transpose(typingctx, src, i, si, dst, j, sj):
    """``dst.flat[j + c·sj + r] = src.flat[i + r·si + c]`` for ``r, c < WIDTH``: a ``WIDTH × WIDTH``
    block of rows ``si`` apart, transposed in registers (``WIDTH log2 WIDTH`` shuffles) into rows
    ``sj`` apart (C-contiguous float64 arrays, flat indices; no bounds check). A plain loop
    transposing rows to columns compiles to scatter instructions, several times slower."""
    if (_contiguous_float64(src) and _contiguous_float64(dst) and dst.mutable
            and all(isinstance(t, types.Integer) for t in (i, si, j, sj))):
        def codegen(context, builder, signature, args):
            dst_t, j_t, sj_t = signature.args[3:]
            to, to_step = (context.cast(builder, v, t, types.intp)
                           for v, t in zip((args[4], args[5]), (j_t, sj_t)))
            rows = transposed_block(context, builder, signature.args[:3], args[:3])
            for c in range(WIDTH):
                at = builder.add(to, builder.mul(to_step, ir.Constant(to.type, c)))
                builder.store(rows[c], element_pointer(context, builder, dst_t, args[3], types.intp,
                                                       at), align=8)
            return context.get_dummy_value()
        return types.void(src, i, si, dst, j, sj), codegen


def transposed_block(context, builder, types_, values):
    """Codegen of a ``WIDTH × WIDTH`` transpose in registers: the ``WIDTH`` vectors ``src.flat[i +
    r·si : … + WIDTH]`` (``types_``, ``values``: those of ``src, i, si``), transposed (``WIDTH
    log2 WIDTH`` shuffles): vector ``c`` holds column ``c`` of the block."""
    src_t, i_t, si_t = types_
    start, step = (context.cast(builder, v, t, types.intp) for v, t in zip(values[1:], (i_t, si_t)))
    rows = [builder.load(element_pointer(context, builder, src_t, values[0], types.intp, builder.add(
        start, builder.mul(step, ir.Constant(start.type, r)))), align=8) for r in range(WIDTH)]
    s = 1
    while s < WIDTH:
        for r in range(WIDTH):
            if r & s == 0:
                rows[r], rows[r + s] = _interleave(builder, rows[r], rows[r + s], s)
        s *= 2
    return rows


@njit(**INLINE_JIT)
def transpose_matrix(src, i, si, dst, j, sj, rows, cols):
    """``dst.flat[j + c·sj + r] = src.flat[i + r·si + c]`` for ``r < rows``, ``c < cols``: the whole
    ``WIDTH × WIDTH`` blocks by ``transpose``, the rest element by element."""
    whole_r, whole_c = rows - rows % WIDTH, cols - cols % WIDTH
    for r in range(0, whole_r, WIDTH):
        for c in range(0, whole_c, WIDTH):
            transpose(src, i + r * si + c, si, dst, j + c * sj + r, sj)
    for r in range(rows):
        for c in range(whole_c if r < whole_r else 0, cols):
            store(dst, j + c * sj + r, lanes(src, i + r * si + c, 0.0))
