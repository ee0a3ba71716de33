"""Reverie: a living-desktop daemon that dreams keyframes in ComfyUI and morphs between them."""

__version__ = "0.1.0"
