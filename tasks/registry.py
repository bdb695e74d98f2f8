"""Task plugins by name: the built-in ones below plus any registered through a Python entry point.

Adding a built-in plugin is one line in BUILTIN. A third-party package instead declares, in its own
pyproject.toml:

    [project.entry-points."paligemma_transfer.tasks"]
    my_task = "my_package.my_task:MyTask"

An entry point may not reuse a built-in name: that is an error naming both, not a silent choice.
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
    "totaltext": "tasks.totaltext:TotalText",
    "hiertext": "tasks.hiertext:HierText",
    "textocr": "tasks.textocr:TextOcr",
}


def _load(target: str) -> type[Task]:
    module, _, attr = target.partition(":")
    return getattr(importlib.import_module(module), attr)


def available() -> dict[str, str]:
    """Task name -> "module:Class" for the built-ins and every installed entry point."""
    found = dict(BUILTIN)
    for ep in metadata.entry_points(group=ENTRY_POINT_GROUP):
        # Keeping either of two plugins with one name would silently run a task the user did not ask for.
        where = f"entry point {ep.name} = {ep.value!r}{_from(ep)} (group {ENTRY_POINT_GROUP!r})"
        if ep.name in BUILTIN:
            raise ValueError(f"{where} reuses the name of the built-in task {ep.name!r} ({BUILTIN[ep.name]}); "
                             "give the plugin another name")
        if ep.name in found and found[ep.name] != ep.value:
            raise ValueError(f"{where} reuses the name of another installed plugin ({found[ep.name]}); "
                             "give one of them another name")
        found[ep.name] = ep.value
    return found


def _from(ep: metadata.EntryPoint) -> str:
    dist = getattr(ep, "dist", None)
    return f" from {dist.name} {dist.version}" if dist is not None else ""


def get_task(name: str) -> Task:
    """An instance of the plugin called `name`."""
    known = available()
    if name not in known:
        raise KeyError(f"unknown task {name!r}; known tasks: {', '.join(sorted(known))}")
    cls = _load(known[name])
    if not (isinstance(cls, type) and issubclass(cls, Task)):
        raise TypeError(f"{known[name]} (task {name!r}) is not a tasks.base.Task subclass")
    return cls()
