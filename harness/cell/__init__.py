"""One grid cell: its effective recipe, input pipeline, training, decoding and scoring. Imports nothing
from harness/run (the scheduler calls a cell; a cell never calls back)."""
