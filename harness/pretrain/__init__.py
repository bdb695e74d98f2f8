"""Pretraining the nano family the demo fine-tunes: the encoder stage and the multitask stages (uses
harness/cell's trainer and input pipeline)."""
