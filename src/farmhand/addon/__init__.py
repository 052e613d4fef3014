"""The farmhand Blender add-on: submit the open .blend to a farmhand render farm.

Installed as the top-level module `farmhand_addon` (`farmhand addon zip` / `install`),
never as `farmhand`: inside a Python that also has the farmhand package (the bpy
module in farmhand's own venv) the two names would collide.

It runs in Blender's own Python, which has none of farmhand's dependencies (and is 3.10
in Blender 3.4): standard library and bpy only, no syntax newer than 3.10. All farm
work goes through the `farmhand` CLI (see runner.py), so the add-on holds no HTTP,
packing or upload code of its own. bpy is imported only in register(), so the bpy-free
parts can be imported (and tested) without Blender.
"""

bl_info = {
    "name": "farmhand",
    "author": "farmhand contributors",
    "version": (0, 1, 0),
    "blender": (3, 4, 0),
    "location": "Properties > Render > farmhand",
    "description": "Submit this .blend to a farmhand render farm",
    "category": "Render",
}


def register() -> None:
    from .ui import register_classes

    register_classes()


def unregister() -> None:
    from .ui import unregister_classes

    unregister_classes()
