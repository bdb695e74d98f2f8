"""XLA's own account of a train step's memory, to hold model/cost.py's plan against.

The real step (harness/cell/train.py's make_train_step, params and Adam state donated) is lowered on
abstract shapes and compiled for the default device, never run, so a 3B step can be measured on a
device too small to execute it. XLA's buffer assignment reports arguments (params, Adam state, the
batch), outputs (aliased to the donated arguments) and temporaries (gradients, activations, workspace);
the peak is arguments + outputs - aliased + temporaries.
"""

from __future__ import annotations

from dataclasses import dataclass

import jax
import jax.numpy as jnp

from model.config import PaliGemmaConfig


@dataclass(frozen=True)
class XlaMemory:
    argument_bytes: int
    output_bytes: int
    alias_bytes: int
    temp_bytes: int

    @property
    def total_bytes(self) -> int:
        return self.argument_bytes + self.output_bytes - self.alias_bytes + self.temp_bytes


def train_step_memory(config: PaliGemmaConfig, *, text_len: int, batch_size: int, remat: bool = False,
                      compute_dtype: str = "float32") -> XlaMemory:
    """Compile one training step of `config` for the default device and read its memory analysis."""
    from harness.cell.train import TrainConfig, build_model, make_optimizer, make_train_step
    from model.paligemma import param_shapes

    cfg = TrainConfig(lr=1e-3, num_steps=10, remat=remat, compute_dtype=compute_dtype)
    params = param_shapes(config)
    tx = make_optimizer(params, cfg)
    opt_state = jax.eval_shape(tx.init, params)
    res = config.vision.image_size
    tokens = jax.ShapeDtypeStruct((batch_size, text_len + 1), jnp.int32)
    batch = {"image": jax.ShapeDtypeStruct((batch_size, res, res, 3), jnp.float32),
             **{k: tokens for k in ("text", "mask_ar", "mask_loss", "mask_input")}}
    step = make_train_step(build_model(config, cfg), tx, label_smoothing=0.0)
    analysis = step.lower(params, opt_state, batch, jax.random.key(0)).compile().memory_analysis()
    return XlaMemory(argument_bytes=analysis.argument_size_in_bytes, output_bytes=analysis.output_size_in_bytes,
                     alias_bytes=analysis.alias_size_in_bytes, temp_bytes=analysis.temp_size_in_bytes)
