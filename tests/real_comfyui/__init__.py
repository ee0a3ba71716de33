"""Integration tests against a real ComfyUI 0.3.75 (built by ``python tests/real_comfyui/server.py setup``)."""
