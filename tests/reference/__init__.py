"""Test-only references written here from each metric's documented definition (no third-party code); the
official scripts' own outputs are kept as golden data in tests/fixtures/."""
