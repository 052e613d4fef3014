"""Builds a small test scene inside Blender and saves it: the demo's and the tests' scenes.

Run by `farmhand.scenes.make_scene`, as
`blender -b --factory-startup --python build_scene.py -- OPTIONS` or
`python build_scene.py OPTIONS` with the bpy module. Made at run time so no binary .blend
is committed, and saved by the Blender that will render it (a .blend saved by Blender
5.0 cannot be opened by 3.4).

Runs on Blender's own Python (3.10 for Blender 3.4): standard library and bpy only.
"""

import argparse
import contextlib
import math
import os
import sys

import bpy


def parse_args():
    argv = sys.argv[sys.argv.index("--") + 1 :] if "--" in sys.argv else sys.argv[1:]
    parser = argparse.ArgumentParser()
    parser.add_argument("--out", required=True)
    parser.add_argument(
        "--variant", default="animated", choices=["animated", "no-camera", "autoexec", "slow"]
    )
    parser.add_argument("--width", type=int, default=64)
    parser.add_argument("--height", type=int, default=48)
    parser.add_argument("--frames", default="1-24")
    parser.add_argument("--samples", type=int, default=4)
    parser.add_argument("--engine", default="CYCLES")
    parser.add_argument("--marker", default="")
    parser.add_argument("--output-format", default="PNG", help="PNG, JPEG, OPEN_EXR or FFMPEG")
    parser.add_argument(
        "--file-output",
        default="",
        help="Add a compositor File Output node writing PNGs to this folder (a path the "
        "farm must redirect: it names the artist's machine).",
    )
    parser.add_argument("--view-transform", default="", help="e.g. Standard, Filmic, AgX")
    parser.add_argument(
        "--fps", type=float, default=24.0, help="frame rate; 29.97 is 30 over a base of 1.001"
    )
    return parser.parse_args(argv)


def material(name, colour):
    mat = bpy.data.materials.new(name)
    mat.diffuse_color = colour
    with contextlib.suppress(AttributeError):
        mat.use_nodes = True  # always on (and deprecated) in Blender 5
    if mat.node_tree is not None:
        for node in mat.node_tree.nodes:
            if node.type == "BSDF_PRINCIPLED":
                node.inputs["Base Color"].default_value = colour
    return mat


def add_file_output(scene, folder):
    """A File Output node fed by the render layer, in Blender 3.4's or 5's compositor."""
    scene.render.use_compositing = True
    if hasattr(scene, "compositing_node_group"):  # Blender 5: a node group of its own
        tree = bpy.data.node_groups.new("Compositing", "CompositorNodeTree")
        scene.compositing_node_group = tree
        layers = tree.nodes.new("CompositorNodeRLayers")
        node = tree.nodes.new("CompositorNodeOutputFile")
        node.directory = folder
        node.file_name = "beauty_"
        if len(node.file_output_items) == 0:
            node.file_output_items.new("RGBA", "Image")
        node.format.media_type = "IMAGE"
    else:
        scene.use_nodes = True
        tree = scene.node_tree
        layers = tree.nodes["Render Layers"]
        node = tree.nodes.new("CompositorNodeOutputFile")
        node.base_path = folder
        node.file_slots[0].path = "beauty_"
    node.format.file_format = "PNG"
    tree.links.new(layers.outputs["Image"], node.inputs[0])


def build(args):
    bpy.ops.wm.read_factory_settings(use_empty=True)
    scene = bpy.context.scene
    first, _, last = args.frames.partition("-")
    scene.frame_start, scene.frame_end = int(first), int(last or first)

    bpy.ops.mesh.primitive_plane_add(size=20, location=(0, 0, 0))
    bpy.context.object.data.materials.append(material("Floor", (0.8, 0.8, 0.75, 1)))
    bpy.ops.mesh.primitive_cube_add(size=1.5, location=(-3, 0, 0.75))
    cube = bpy.context.object
    cube.data.materials.append(material("Cube", (0.9, 0.25, 0.1, 1)))
    # Moves and turns across the frame range, so every frame differs.
    cube.location.x = -3
    cube.rotation_euler.z = 0
    cube.keyframe_insert("location", frame=scene.frame_start)
    cube.keyframe_insert("rotation_euler", frame=scene.frame_start)
    cube.location.x = 3
    cube.rotation_euler.z = math.pi
    cube.keyframe_insert("location", frame=scene.frame_end)
    cube.keyframe_insert("rotation_euler", frame=scene.frame_end)

    bpy.ops.object.light_add(type="SUN", location=(4, -4, 8))
    bpy.context.object.data.energy = 4.0
    if args.variant != "no-camera":
        bpy.ops.object.camera_add(location=(0, -14, 6), rotation=(math.radians(70), 0, 0))
        scene.camera = bpy.context.object

    world = bpy.data.worlds.new("World")
    world.color = (0.2, 0.3, 0.45)
    scene.world = world

    render = scene.render
    render.engine = args.engine
    render.resolution_x, render.resolution_y = args.width, args.height
    render.fps = max(1, round(args.fps))
    render.fps_base = render.fps / args.fps
    render.resolution_percentage = 100
    settings = render.image_settings
    if hasattr(settings, "media_type"):  # Blender 5: formats are grouped by media type
        settings.media_type = "VIDEO" if args.output_format == "FFMPEG" else "IMAGE"
    settings.file_format = args.output_format
    if args.engine == "CYCLES":
        scene.cycles.device = "CPU"
        scene.cycles.samples = args.samples * (16 if args.variant == "slow" else 1)
        scene.cycles.use_denoising = False
        scene.cycles.seed = 1

    if args.file_output:
        add_file_output(scene, args.file_output)
    if args.view_transform:
        scene.view_settings.view_transform = args.view_transform

    if args.variant == "autoexec":
        # Registered text blocks run when a file is opened with scripts trusted. A worker
        # must never trust them: the tests check that this marker is never written.
        text = bpy.data.texts.new("autoexec.py")
        text.write(f"open({args.marker!r}, 'w').write('scene python ran')\n")
        text.use_module = True
        # A scripted driver expression runs whenever the scene is evaluated (every frame of
        # a render) if scripts are trusted; it writes MARKER-driver. It returns the cube's
        # height, so the scene looks the same either way.
        curve = cube.driver_add("location", 2)
        curve.driver.type = "SCRIPTED"
        curve.driver.expression = (
            f"0.75 + len(open({args.marker + '-driver'!r}, 'w').write('driver ran') and '')"
            " + frame * 0"
        )

    bpy.ops.wm.save_as_mainfile(filepath=args.out)
    if args.variant == "autoexec":
        # Building trusts scripts (our own), so the driver may have run here: start clean.
        for path in (args.marker, args.marker + "-driver"):
            if os.path.exists(path):
                os.remove(path)


build(parse_args())
