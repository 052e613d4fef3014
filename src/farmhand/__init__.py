"""farmhand: a distributed render farm for Blender."""

__version__ = "0.1.0"
