"""Test-only reference implementations (third-party metrics ported for parity tests)."""
