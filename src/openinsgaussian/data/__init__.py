"""Scene model and readers: every dataset convention is converted to ours here, once."""

from .camera import Camera, Distortion
from .load import detect_format, load_scene
from .scene import Frame, Scene

__all__ = ["Camera", "Distortion", "Frame", "Scene", "detect_format", "load_scene"]
