"""Keeping the dream alive: quality metrics, palette and detail grounding, anchor walk, collapse guard.

Torch-free (numpy + Pillow). The daemon and the ComfyUI source call one `Dream` (dream.py)
through the hooks of contract I4; everything else here is a small helper it owns.
"""
