"""Test scenes with unusual settings: the animated test scene, then scene properties set
in Blender and saved as another file (run by `tweaked_scene`; this file runs in Blender).

Arguments after `--`: the source .blend, the target .blend and a JSON list of
[dotted path from the scene, value] pairs, set in order (Blender 5 needs `media_type`
before `file_format`; a `media_type` Blender 3.4 does not have is skipped).
"""

import json
import sys

import bpy

source, target, settings = sys.argv[sys.argv.index("--") + 1 :][:3]
bpy.ops.wm.open_mainfile(filepath=source, load_ui=False, use_scripts=False)
scene = bpy.context.scene
for path, value in json.loads(settings):
    *owners, name = path.split(".")
    owner = scene
    for part in owners:
        owner = getattr(owner, part)
    if name == "media_type" and not hasattr(owner, name):
        continue
    setattr(owner, name, value)
bpy.ops.wm.save_as_mainfile(filepath=target)
