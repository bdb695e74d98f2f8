"""tasks/demo."""
