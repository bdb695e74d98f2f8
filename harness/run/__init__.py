"""Running a grid: YAML -> cells, the sweep and final phases, claims, records, the dry-run plan, the
memory check and multi-host agreement. Calls one cell through a runner (harness/cell by default)."""
