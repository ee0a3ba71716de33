"""Offline renders: seed-walk videos through ComfyUI, the MP4 writer, and the live-display recorder."""
