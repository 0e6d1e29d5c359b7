"""Scene model and readers: every dataset convention is converted to ours here, once."""

from .camera import Camera, Distortion
from .scene import Frame, Scene

__all__ = ["Camera", "Distortion", "Frame", "Scene"]
