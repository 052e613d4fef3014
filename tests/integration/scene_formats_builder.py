"""Save the default scene once in every output format this Blender offers (run in
Blender by test_scene_format.py): `TARGET/<FORMAT>.blend` each, and `TARGET/formats.json`
mapping each file to the format Blender reports for it after it was set.

Arguments after `--`: the target folder. Blender 5 offers its formats per `media_type`
(image, multilayer image, video); Blender 3.4 has no media type and one list.
"""

import json
import os
import sys

import bpy

target = sys.argv[sys.argv.index("--") + 1]
bpy.ops.wm.read_factory_settings(use_empty=True)
settings = bpy.context.scene.render.image_settings
media_types = (
    [item.identifier for item in settings.bl_rna.properties["media_type"].enum_items]
    if hasattr(settings, "media_type")
    else [None]
)
saved: dict[str, str] = {}
for media in media_types:
    if media is not None:
        settings.media_type = media
    for item in settings.bl_rna.properties["file_format"].enum_items:
        try:
            settings.file_format = item.identifier
        except TypeError:
            continue  # not a format of this media type
        name = settings.file_format
        if name in saved.values():
            continue
        path = os.path.join(target, name + ".blend")
        bpy.ops.wm.save_as_mainfile(filepath=path, copy=True)
        saved[path] = name
with open(os.path.join(target, "formats.json"), "w") as out:
    json.dump(saved, out)
