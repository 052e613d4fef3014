"""Save a .blend with two scenes, the second one active (run in Blender by
test_cli_scene_format.py): `Scene` writes PNG and comes first in the file, `Zed` writes
TARGA and is the one the window shows, so the one `blender -b file.blend` renders.

Arguments after `--`: the target .blend.
"""

import sys

import bpy

target = sys.argv[sys.argv.index("--") + 1]
bpy.ops.wm.read_factory_settings(use_empty=True)
bpy.context.scene.render.image_settings.file_format = "PNG"
other = bpy.data.scenes.new("Zed")
other.render.image_settings.file_format = "TARGA"
bpy.context.window_manager.windows[0].scene = other
bpy.ops.wm.save_as_mainfile(filepath=target)
