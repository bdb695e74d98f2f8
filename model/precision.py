"""How matmuls are written, per backend: the one place that knows CPU and accelerators differ.

Two modes, chosen at trace time by `matmul_mode()`:

- ``"cast"`` (CPU): every product accumulates in float32 (`preferred_element_type=float32`) and is
  cast back to the compute dtype. XLA's CPU backend runs a bfloat16-output dot slower than a
  float32-output one and rounds the accumulator, so this is both faster and more precise there.
- ``"native"`` (GPU, TPU): a product of bfloat16 operands is written as a plain bfloat16 dot. cuBLAS
  and the TPU MXU accumulate bfloat16 products in float32 anyway, so the forward numerics equal the
  "cast" mode's. What changes is the backward pass: differentiating `convert(dot(a, b, f32))` gives a
  float32 cotangent, and JAX then writes both backward products as float32 x float32 dots (it
  converts the bfloat16 operand up; see docs/efficiency.md for the HLO). On an H200 those run at
  the TF32 rate at best (half the bfloat16 peak) and move twice the bytes; with native dots all
  three products of a layer (forward, d-input, d-weight) are bfloat16 x bfloat16.

For float32 compute both modes are the same program. `PALIGEMMA_MATMUL=cast|native` overrides the
backend's choice (tests use it to check the native mode's numerics on the CPU).
"""

from __future__ import annotations

import functools
import os

import jax
import jax.numpy as jnp
from jax.ad_checkpoint import checkpoint_name

MODES = ("cast", "native")


def matmul_mode() -> str:
    """'cast' on CPU, 'native' elsewhere, unless PALIGEMMA_MATMUL says otherwise."""
    mode = os.environ.get("PALIGEMMA_MATMUL") or ("cast" if jax.default_backend() == "cpu" else "native")
    if mode not in MODES:
        raise ValueError(f"PALIGEMMA_MATMUL={mode!r}: expected one of {MODES}")
    return mode


def einsum(equation: str, *operands: jax.Array) -> jax.Array:
    """jnp.einsum returning the first operand's dtype, accumulated in float32 (see the module doc)."""
    if matmul_mode() == "native":
        return jnp.einsum(equation, *operands)
    return jnp.einsum(equation, *operands, preferred_element_type=jnp.float32).astype(operands[0].dtype)


def dot_general(lhs, rhs, dimension_numbers, precision=None, preferred_element_type=None):
    """lax.dot_general with the same per-backend rule, in the signature flax's Dense* take."""
    if matmul_mode() == "native":
        return jax.lax.dot_general(lhs, rhs, dimension_numbers, precision=precision)
    out = jax.lax.dot_general(lhs, rhs, dimension_numbers, precision=precision,
                              preferred_element_type=jnp.float32)
    return out.astype(lhs.dtype)


def einsum_f32(equation: str, a: jax.Array, b: jax.Array) -> jax.Array:
    """A float32 product of two operands (attention logits, the vocabulary logits): the softmax needs
    float32 inputs. In the "native" mode with low-precision operands the backward pass casts the
    float32 cotangent down to the operands' dtype, so both backward products are native bfloat16
    dots too (the same rounding of d-logits a bfloat16-autocast PyTorch model has)."""
    if matmul_mode() == "cast" or a.dtype == jnp.float32:
        return jnp.einsum(equation, a, b, preferred_element_type=jnp.float32)
    # Named, so that remat's "dots" policy keeps it like the plain dot it replaces (model/remat.py).
    return checkpoint_name(_einsum_f32_low_grad(equation, a, b), EINSUM_F32_NAME)


EINSUM_F32_NAME = "einsum_f32"


@functools.partial(jax.custom_vjp, nondiff_argnums=(0,))
def _einsum_f32_low_grad(equation: str, a: jax.Array, b: jax.Array) -> jax.Array:
    return jnp.einsum(equation, a, b, preferred_element_type=jnp.float32)


def _einsum_f32_fwd(equation, a, b):
    return _einsum_f32_low_grad(equation, a, b), (a, b)


def _einsum_f32_bwd(equation, residuals, g):
    a, b = residuals
    g = g.astype(a.dtype)
    # Transposes of the two linear maps (no forward product is traced).
    (da,) = jax.linear_transpose(lambda x: jnp.einsum(equation, x, b), a)(g)
    (db,) = jax.linear_transpose(lambda y: jnp.einsum(equation, a, y), b)(g)
    return da, db


_einsum_f32_low_grad.defvjp(_einsum_f32_fwd, _einsum_f32_bwd)
