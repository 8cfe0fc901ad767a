"""Explicit SIMD for the CPU kernels: vectors of ``WIDTH`` float64 that stay in registers.

LLVM vectorises only innermost loops, through memory: a register-tiled product (several
independent multiply-add chains over a tile of rows, the tile's partial sums in registers) cannot be
written as plain loops. These intrinsics hand a kernel LLVM vector values directly: ``load`` and
``store`` of ``WIDTH`` consecutive elements, ``splat`` of a scalar, ``fma`` (one rounding) and
``sqrt``. Every operation is IEEE lane by lane (``fma`` and ``sqrt`` correctly rounded), so a lane's
result is bitwise its scalar twin's and never depends on the lane its data falls in. CPU only;
where vectors are narrower (SSE, NEON) LLVM splits each operation.
"""
import llvmlite.binding as llvm
from llvmlite import ir
from numba import types
from numba.core import cgutils, config
from numba.extending import intrinsic, models, register_model


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


def _flat_float64(a):
    return isinstance(a, types.Array) and a.ndim == 1 and a.layout == "C" and a.dtype == types.float64


def _address(context, builder, array_type, array, index_type, index):
    """Pointer to element ``index`` of a 1-D float64 array, as a pointer to a vector."""
    data = context.make_array(array_type)(context, builder, array).data
    offset = context.cast(builder, index, index_type, types.intp)
    return builder.bitcast(builder.gep(data, [offset]), _VECTOR.as_pointer())


@intrinsic
def load(typingctx, a, i):
    """Elements ``i .. i + WIDTH − 1`` of the 1-D C-contiguous float64 array ``a`` (no bounds check:
    the caller keeps ``0 <= i <= a.size − WIDTH``)."""
    if _flat_float64(a) and isinstance(i, types.Integer):
        def codegen(context, builder, signature, args):
            return builder.load(_address(context, builder, signature.args[0], args[0],
                                         signature.args[1], args[1]), align=8)
        return float64xW(a, i), codegen


@intrinsic
def store(typingctx, a, i, v):
    """Write the vector ``v`` to elements ``i .. i + WIDTH − 1`` of ``a`` (as ``load``)."""
    if _flat_float64(a) and a.mutable and isinstance(i, types.Integer) and v == float64xW:
        def codegen(context, builder, signature, args):
            builder.store(args[2], _address(context, builder, signature.args[0], args[0],
                                            signature.args[1], args[1]), align=8)
            return context.get_dummy_value()
        return types.void(a, i, v), codegen


@intrinsic
def splat(typingctx, x):
    """The vector with every lane ``x`` (a real scalar, converted to float64)."""
    if isinstance(x, (types.Float, types.Integer)):
        def codegen(context, builder, signature, args):
            value = context.cast(builder, args[0], signature.args[0], types.float64)
            lane0 = builder.insert_element(ir.Constant(_VECTOR, ir.Undefined), value, ir.IntType(32)(0))
            zeros = ir.Constant(ir.VectorType(ir.IntType(32), WIDTH), [0] * WIDTH)
            return builder.shuffle_vector(lane0, ir.Constant(_VECTOR, ir.Undefined), zeros)
        return float64xW(x), codegen


def _vector_call(builder, name, args):
    """Call the LLVM vector intrinsic ``llvm.<name>`` on the vectors ``args``."""
    fn = cgutils.get_or_insert_function(
        builder.module, ir.FunctionType(_VECTOR, [_VECTOR] * len(args)), f"llvm.{name}.v{WIDTH}f64")
    return builder.call(fn, args)


@intrinsic
def fma(typingctx, a, b, c):
    """``a·b + c`` lane by lane, with a single rounding."""
    if a == b == c == float64xW:
        return float64xW(a, b, c), lambda context, builder, signature, args: _vector_call(
            builder, "fma", args)


@intrinsic
def sqrt(typingctx, a):
    """The correctly rounded square root of each lane."""
    if a == float64xW:
        return float64xW(a), lambda context, builder, signature, args: _vector_call(
            builder, "sqrt", args)

