"""Task plugins by name: the built-in ones below plus any registered through a Python entry point.

Adding a built-in plugin is one line in BUILTIN. A third-party package instead declares, in its own
pyproject.toml:

    [project.entry-points."paligemma_transfer.tasks"]
    my_task = "my_package.my_task:MyTask"
"""

from __future__ import annotations

import importlib
from importlib import metadata

from tasks.base import Task

ENTRY_POINT_GROUP = "paligemma_transfer.tasks"

BUILTIN: dict[str, str] = {
    "vqav2": "tasks.vqav2:VQAv2",
    "docvqa": "tasks.docvqa:DocVQA",
    "coco_captions": "tasks.coco_captions:CocoCaptions",
    "pubtabnet": "tasks.pubtabnet:PubTabNet",
    "chemdraw": "tasks.chemdraw:ChemDraw",
    "mimic_cxr": "tasks.mimic_cxr:MimicCxr",
    "icdar15": "tasks.icdar15:Icdar15",
}


def _load(target: str) -> type[Task]:
    module, _, attr = target.partition(":")
    return getattr(importlib.import_module(module), attr)


def available() -> dict[str, str]:
    """Task name -> "module:Class" for the built-ins and every installed entry point."""
    found = dict(BUILTIN)
    for ep in metadata.entry_points(group=ENTRY_POINT_GROUP):
        found.setdefault(ep.name, ep.value)
    return found


def get_task(name: str) -> Task:
    """An instance of the plugin called `name`."""
    known = available()
    if name not in known:
        raise KeyError(f"unknown task {name!r}; known tasks: {', '.join(sorted(known))}")
    cls = _load(known[name])
    if not (isinstance(cls, type) and issubclass(cls, Task)):
        raise TypeError(f"{known[name]} (task {name!r}) is not a tasks.base.Task subclass")
    return cls()
