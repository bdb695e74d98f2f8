"""Test-only helpers (a fast stand-in runner for the scheduler tests)."""
