"""The health probe and the hygiene notes against the fake AND the real ComfyUI 0.3.75: the real
server is the proof that /system_stats and /object_info's python_module look as we read them."""

from __future__ import annotations

from PIL import Image

from backend.comfyui.client import ComfyClient
from backend.comfyui.workflow import load_workflow
from backend.desktop.comfy_hygiene import custom_nodes, input_listing_size
from backend.desktop.health import ComfyHealth
from tests.real_comfyui.conftest import comfy_server, real_server, running_real_server  # noqa: F401 - fixtures


def test_the_health_probe_reads_comfyuis_memory_from_system_stats(comfy_server):  # noqa: F811
    client = ComfyClient(comfy_server.url, request_timeout=10.0)
    try:
        health = ComfyHealth(client.system_stats)
        assert health.poll() == [] and health.ready
        assert health.memory is not None and health.memory.ram_used_mib > 0
    finally:
        client.close()


def test_the_builtin_workflows_use_no_custom_nodes_and_the_input_listing_counts_top_level_files(comfy_server):  # noqa: F811
    input_dir, _ = comfy_server.require_dirs()
    client = ComfyClient(comfy_server.url, request_timeout=30.0)
    try:
        for i in range(3):
            client.upload_image(Image.new("RGB", (8, 8), (i, 0, 0)), f"hygiene_{i}.png", subfolder="")
        client.upload_image(Image.new("RGB", (8, 8)), "hygiene_sub.png", subfolder="reverie")
        info = client.object_info()
    finally:
        client.close()
    classes = load_workflow("builtin:img2img").class_types() | load_workflow("builtin:txt2img").class_types()
    assert custom_nodes(classes | {"ImageInvert", "ImageBlur"} & set(info), info) == []
    top_level = [p for p in input_dir.iterdir() if p.is_file() and p.suffix == ".png"]
    assert input_listing_size(info) == len(top_level) >= 3   # uploads under input/reverie/ are not listed
