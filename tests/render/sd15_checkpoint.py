"""Test helper: write a random-weight SD1.5-architecture checkpoint that CheckpointLoaderSimple loads.

The script below runs inside the real ComfyUI's own venv (tests/real_comfyui/build.py): it builds
ComfyUI's UNet, CLIP-L text encoder and KL VAE modules only to learn the original single-file
key names and shapes (``model.diffusion_model.*``, ``cond_stage_model.transformer.*``,
``first_stage_model.*``), then fills every tensor from one seeded generator and saves the file, with the model-spec
architecture in its metadata as trainers write it.
The UNet keeps what ComfyUI's detection matches SD1.5 on (model_channels 320, context_dim 768,
conv proj_in, no ADM) with one level and one res block, so sampling 64x64 on a CPU takes
a second; CLIP and VAE are full size, because ComfyUI builds them from fixed configs.
"""

from __future__ import annotations

import subprocess
from pathlib import Path

from tests.real_comfyui import build

_SCRIPT = r'''
import math, sys
args = sys.argv[1:]
sys.argv = [sys.argv[0], "--cpu"]     # comfy.cli_args parses sys.argv at import, once enabled
sys.path.insert(0, args[0])
import comfy.options
comfy.options.enable_args_parsing()
import torch
from safetensors.torch import save_file
import comfy.ops
from comfy.ldm.modules.diffusionmodules.openaimodel import UNetModel
from comfy.ldm.models.autoencoder import AutoencoderKL
import comfy.sd1_clip

ops = comfy.ops.disable_weight_init
unet = UNetModel(image_size=32, in_channels=4, model_channels=320, out_channels=4, num_res_blocks=[1],
                 channel_mult=[1], num_heads=8, use_spatial_transformer=True, transformer_depth=[1],
                 transformer_depth_output=[1, 1], transformer_depth_middle=1, context_dim=768,
                 use_linear_in_transformer=False, legacy=False, device="meta", operations=ops)
ddconfig = {"double_z": True, "z_channels": 4, "resolution": 256, "in_channels": 3, "out_ch": 3, "ch": 128,
            "ch_mult": [1, 2, 4, 4], "num_res_blocks": 2, "attn_resolutions": [], "dropout": 0.0}
with torch.device("meta"):
    vae = AutoencoderKL(ddconfig=ddconfig, embed_dim=4)
    clip = comfy.sd1_clip.SDClipModel(device="meta")
shapes = {}
for prefix, module in (("model.diffusion_model.", unet), ("first_stage_model.", vae), ("cond_stage_model.", clip)):
    for key, tensor in module.state_dict().items():
        shapes[prefix + key] = tuple(tensor.shape)
generator = torch.Generator().manual_seed(int(args[2]))
state = {}
for key in sorted(shapes):
    shape = shapes[key]
    if key.endswith("position_ids"):
        state[key] = torch.arange(shape[-1]).reshape(shape)
    elif len(shape) == 1 and key.endswith("weight"):      # norm gains
        state[key] = torch.ones(shape, dtype=torch.float16)
    elif len(shape) == 1:                                  # biases
        state[key] = torch.zeros(shape, dtype=torch.float16)
    else:                                                  # fan-in scaled, so activations stay O(1)
        fan_in = math.prod(shape[1:])
        state[key] = (torch.randn(shape, generator=generator) / math.sqrt(fan_in)).to(torch.float16)
save_file(state, args[1], metadata={"modelspec.architecture": "stable-diffusion-v1"})
'''


def write_checkpoint(path: Path, seed: int = 0) -> Path:
    """Write the checkpoint to `path` with ComfyUI's venv (raises CalledProcessError with its stderr)."""
    subprocess.run([str(build.venv_python()), "-c", _SCRIPT, str(build.comfyui_dir()), str(path), str(seed)],
                   check=True, capture_output=True, text=True, stdin=subprocess.DEVNULL)
    return path
