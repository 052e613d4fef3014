"""Builds a small project of several files inside Blender: the packing tests' scene.

Run by `farmhand.scenes.make_project`, as
`blender -b --factory-startup --python build_project.py -- --root DIR` or
`python build_project.py --root DIR` with the bpy module. Writes

    DIR/textures/checker.png   an image Blender paints and saves
    DIR/lib/library.blend      a library holding the object `LibCube` (orange)
    DIR/shots/scene.blend      the scene: a textured floor, a camera, a sun and `LibCube`
                               linked from the library

and every path inside scene.blend is ABSOLUTE (as in a studio's file saved without
"relative paths"), so a farm that does not rewrite them would look for DIR on the worker.

With --library-assets the library has paths of its own, ABSOLUTE too: LibCube's sides
use DIR/textures/wood.png (green) and its top the material `Brick` (red,
DIR/textures/brick.png), linked from a nested library, DIR/lib/nested.blend.

Runs on Blender's own Python (3.10 for Blender 3.4): standard library and bpy only.
"""

import argparse
import math
import os
import shutil
import sys
import wave

import bpy


def parse_args():
    argv = sys.argv[sys.argv.index("--") + 1 :] if "--" in sys.argv else sys.argv[1:]
    parser = argparse.ArgumentParser()
    parser.add_argument("--root", required=True)
    parser.add_argument("--width", type=int, default=48)
    parser.add_argument("--height", type=int, default=32)
    parser.add_argument("--samples", type=int, default=2)
    parser.add_argument(
        "--extras",
        action="store_true",
        help="Also use an image sequence, UDIM tiles, a sound, a font and a volume (.vdb).",
    )
    parser.add_argument(
        "--library-assets",
        action="store_true",
        help="Give the library a texture and a nested library of its own (absolute paths).",
    )
    return parser.parse_args(argv)


def save(path):
    # relative_remap=False keeps the absolute paths we set (the default would rewrite them).
    bpy.ops.wm.save_as_mainfile(filepath=path, relative_remap=False)


def checker(path):
    image = bpy.data.images.new("checker", width=16, height=16)
    pixels = []
    for y in range(16):
        for x in range(16):
            on = (x // 4 + y // 4) % 2
            pixels += [0.1, 0.6, 0.9, 1.0] if on else [0.95, 0.95, 0.2, 1.0]
    image.pixels[:] = pixels
    image.filepath_raw = path
    image.file_format = "PNG"
    image.save()


def build_library(path, assets_root=None):
    """The library with `LibCube`: orange, or with `assets_root` textured by files of its
    own (see library_materials)."""
    bpy.ops.wm.read_factory_settings(use_empty=True)
    bpy.ops.mesh.primitive_cube_add(size=2.0, location=(2, 0, 1))
    cube = bpy.context.object
    cube.name = "LibCube"
    if assets_root:
        library_materials(cube, assets_root)
        save(path)
        return
    mat = bpy.data.materials.new("LibOrange")
    mat.diffuse_color = (0.9, 0.3, 0.05, 1)
    mat.use_nodes = True
    for node in mat.node_tree.nodes:
        if node.type == "BSDF_PRINCIPLED":
            node.inputs["Base Color"].default_value = (0.9, 0.3, 0.05, 1)
    cube.data.materials.append(mat)
    save(path)


def textured(name, image_path):
    mat = bpy.data.materials.new(name)
    mat.use_nodes = True
    nodes = mat.node_tree.nodes
    bsdf = next(n for n in nodes if n.type == "BSDF_PRINCIPLED")
    tex = nodes.new("ShaderNodeTexImage")
    tex.image = bpy.data.images.load(image_path)
    tex.interpolation = "Closest"
    mat.node_tree.links.new(tex.outputs["Color"], bsdf.inputs["Base Color"])
    return mat


def build_nested_library(root):
    """DIR/lib/nested.blend: the material `Brick`, textured by an absolute path."""
    brick = os.path.join(root, "textures", "brick.png")
    painted(brick, (0.9, 0.03, 0.02, 1))
    bpy.ops.wm.read_factory_settings(use_empty=True)
    textured("Brick", brick).use_fake_user = True
    save(os.path.join(root, "lib", "nested.blend"))


def library_materials(cube, root):
    """The library's own paths, a studio library's usual kind: the cube's sides textured
    by DIR/textures/wood.png, its top by `Brick` linked from DIR/lib/nested.blend."""
    wood = os.path.join(root, "textures", "wood.png")
    painted(wood, (0.05, 0.9, 0.02, 1))
    cube.data.materials.append(textured("Wood", wood))
    nested = os.path.join(root, "lib", "nested.blend")
    with bpy.data.libraries.load(nested, link=True, relative=False) as (_src, dst):
        dst.materials = ["Brick"]
    cube.data.materials.append(dst.materials[0])
    for polygon in cube.data.polygons:
        polygon.material_index = 1 if polygon.normal.z > 0.5 else 0


def painted(path, colour):
    image = bpy.data.images.new(os.path.basename(path), width=4, height=4)
    image.pixels[:] = list(colour) * 16
    image.filepath_raw = path
    image.file_format = "PNG"
    image.save()
    bpy.data.images.remove(image)


def add_extras(root):
    """Every other kind of file a scene can use, by absolute path; kept with fake users.

    Not rendered (a stand-in .vdb is not a real volume): the tests check they are packed.
    """
    seq = os.path.join(root, "textures", "seq")
    udim = os.path.join(root, "textures", "udim")
    for folder in (
        seq,
        udim,
        os.path.join(root, "sounds"),
        os.path.join(root, "fonts"),
        os.path.join(root, "cache"),
    ):
        os.makedirs(folder, exist_ok=True)
    for frame in (1, 2, 3):
        painted(os.path.join(seq, f"flame_{frame:04d}.png"), (frame / 3, 0.2, 0.1, 1))
    sequence = bpy.data.images.load(os.path.join(seq, "flame_0001.png"))
    sequence.source = "SEQUENCE"
    sequence.use_fake_user = True

    for tile in (1001, 1002):
        painted(os.path.join(udim, f"skin.{tile}.png"), (0.8, 0.6, 0.5, 1))
    tiled = bpy.data.images.load(os.path.join(udim, "skin.1001.png"))
    tiled.source = "TILED"
    tiled.filepath = os.path.join(udim, "skin.<UDIM>.png")
    if len(tiled.tiles) < 2:
        tiled.tiles.new(tile_number=1002)
    tiled.use_fake_user = True

    wav = os.path.join(root, "sounds", "beep.wav")
    with wave.open(wav, "wb") as handle:
        handle.setnchannels(1)
        handle.setsampwidth(2)
        handle.setframerate(8000)
        handle.writeframes(bytes(1600))
    bpy.data.sounds.load(wav).use_fake_user = True

    fonts = bpy.utils.system_resource("DATAFILES", path="fonts")
    shipped = sorted(f for f in os.listdir(fonts) if f.endswith((".woff2", ".ttf")))
    font = os.path.join(root, "fonts", shipped[0])
    shutil.copyfile(os.path.join(fonts, shipped[0]), font)
    bpy.data.fonts.load(font).use_fake_user = True

    vdb = os.path.join(root, "cache", "smoke_0001.vdb")
    with open(vdb, "wb") as handle:
        handle.write(b"stand-in for an OpenVDB grid")
    volume = bpy.data.volumes.new("Smoke")
    volume.filepath = vdb
    volume.use_fake_user = True


def build_scene(args, path, image_path, library_path):
    bpy.ops.wm.read_factory_settings(use_empty=True)
    scene = bpy.context.scene
    scene.frame_start = scene.frame_end = 1

    bpy.ops.mesh.primitive_plane_add(size=8, location=(-1, 0, 0))
    bpy.context.object.data.materials.append(textured("Checker", image_path))

    with bpy.data.libraries.load(library_path, link=True, relative=False) as (_src, dst):
        dst.objects = ["LibCube"]
    for obj in dst.objects:
        scene.collection.objects.link(obj)

    if args.extras:
        add_extras(os.path.dirname(os.path.dirname(path)))

    bpy.ops.object.light_add(type="SUN", location=(4, -4, 8))
    bpy.context.object.data.energy = 4.0
    bpy.ops.object.camera_add(location=(0, -9, 7), rotation=(math.radians(50), 0, 0))
    scene.camera = bpy.context.object
    world = bpy.data.worlds.new("World")
    world.color = (0.2, 0.3, 0.45)
    scene.world = world

    render = scene.render
    render.engine = "CYCLES"
    render.resolution_x, render.resolution_y = args.width, args.height
    render.resolution_percentage = 100
    render.image_settings.file_format = "PNG"
    scene.cycles.device = "CPU"
    scene.cycles.samples = args.samples
    scene.cycles.use_denoising = False
    scene.cycles.seed = 1
    save(path)


def main():
    args = parse_args()
    root = os.path.abspath(args.root)
    image_path = os.path.join(root, "textures", "checker.png")
    library_path = os.path.join(root, "lib", "library.blend")
    scene_path = os.path.join(root, "shots", "scene.blend")
    for path in (image_path, library_path, scene_path):
        os.makedirs(os.path.dirname(path), exist_ok=True)
    bpy.ops.wm.read_factory_settings(use_empty=True)
    checker(image_path)
    if args.library_assets:
        build_nested_library(root)
    build_library(library_path, root if args.library_assets else None)
    build_scene(args, scene_path, image_path, library_path)


main()
