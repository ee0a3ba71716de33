"""On the REAL ComfyUI (which has no custom nodes) the preflight of builtin:img2img_ipadapter
names the missing IP-Adapter nodes and the package that provides them."""

from __future__ import annotations

import pytest

from backend.comfyui.client import ComfyClient
from backend.comfyui.errors import WorkflowRejected
from backend.comfyui.keyframe import KeyframeGenerator
from backend.comfyui.workflow import load_workflow

pytestmark = pytest.mark.real_comfyui


def test_preflight_on_the_real_server_names_the_missing_ipadapter_nodes(running_real_server):
    client = ComfyClient(running_real_server.url, request_timeout=10.0, job_timeout=30.0, poll_interval=0.5)
    generator = KeyframeGenerator(client, img2img=load_workflow("builtin:img2img_ipadapter"),
                                  txt2img=load_workflow("builtin:txt2img"), checkpoint=running_real_server.checkpoint,
                                  steps=4, cfg=7.0, sampler="euler", scheduler="normal", width=64, height=64)
    try:
        with pytest.raises(WorkflowRejected) as caught:
            generator.preflight()
    finally:
        client.close()
    assert ("builtin:img2img_ipadapter: ComfyUI has no IP-Adapter node IPAdapterAdvanced, IPAdapterUnifiedLoader: "
            "install the ComfyUI_IPAdapter_plus custom nodes") in caught.value.lines[0]
    assert not any("node class" in line for line in caught.value.lines)
