"""Shared test setup: the project's cache (prepared data, checkpoint fingerprints) goes to a temp folder,
never to the user's ~/.cache."""

import pytest


@pytest.fixture(autouse=True)
def _private_cache(tmp_path_factory, monkeypatch):
    monkeypatch.setenv("PALIGEMMA_TRANSFER_CACHE", str(tmp_path_factory.getbasetemp() / "project-cache"))
