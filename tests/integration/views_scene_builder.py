"""Stereo and multi-view variants of a test scene, and the views the worker renders of
each (run in Blender by test_stereo_tiles_refused.py; this file runs in Blender).

Arguments after `--`: the source .blend, the target folder, the worker's driver.py, and a
JSON object {variant name: [use_multiview, views_format, [views added], [views off]]}.
Writes `<folder>/<name>.blend` for each, `linked_stereo.blend` (its active scene is
`stereo.blend`'s, linked), then `<folder>/views.json`: {name: the views
the driver's own `rendered_views` says Blender renders}, the answer the .blend reader
must give.
"""

import importlib.util
import json
import sys
from pathlib import Path

import bpy

source, folder, driver_path, variants = sys.argv[sys.argv.index("--") + 1 :][:4]
spec = importlib.util.spec_from_file_location("farmhand_driver", driver_path)
assert spec is not None and spec.loader is not None, driver_path
driver = importlib.util.module_from_spec(spec)
spec.loader.exec_module(driver)  # its main() runs only as __main__

answers = {}
for name, (multiview, views_format, added, off) in json.loads(variants).items():
    bpy.ops.wm.open_mainfile(filepath=source, load_ui=False, use_scripts=False)
    render = bpy.context.scene.render
    render.use_multiview = multiview
    render.views_format = views_format
    for view in added:
        render.views.new(view)
    for view in off:
        render.views[view].use = False
    answers[name] = [view.name for view in driver.rendered_views(render)]
    bpy.ops.wm.save_as_mainfile(filepath=str(Path(folder) / f"{name}.blend"))
# A file whose active scene is the stereo one, linked from its library: Blender renders
# that scene; the file itself holds only a link to it and its own (mono) Scene.
bpy.ops.wm.read_factory_settings(use_empty=False)
with bpy.data.libraries.load(str(Path(folder) / "stereo.blend"), link=True) as (_, target):
    target.scenes = ["Scene"]
bpy.context.window_manager.windows[0].scene = target.scenes[0]
bpy.ops.wm.save_as_mainfile(filepath=str(Path(folder) / "linked_stereo.blend"))
(Path(folder) / "views.json").write_text(json.dumps(answers))
