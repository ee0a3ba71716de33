"""Node schemas the fake server knows, shaped like ComfyUI 0.3.75's /object_info.

Only the classes the built-in templates and the model-free test graphs use are listed; the
KSampler sampler/scheduler lists and the option dicts are copied from the recorded traffic so
that exact-name validation behaves like the real server.
"""

from __future__ import annotations

CHECKPOINTS = ["v1-5-pruned-emaonly.safetensors"]

SAMPLERS = [
    "euler", "euler_cfg_pp", "euler_ancestral", "euler_ancestral_cfg_pp", "heun", "heunpp2", "dpm_2",
    "dpm_2_ancestral", "lms", "dpm_fast", "dpm_adaptive", "dpmpp_2s_ancestral", "dpmpp_2s_ancestral_cfg_pp",
    "dpmpp_sde", "dpmpp_sde_gpu", "dpmpp_2m", "dpmpp_2m_cfg_pp", "dpmpp_2m_sde", "dpmpp_2m_sde_gpu",
    "dpmpp_2m_sde_heun", "dpmpp_2m_sde_heun_gpu", "dpmpp_3m_sde", "dpmpp_3m_sde_gpu", "ddpm", "lcm", "ipndm",
    "ipndm_v", "deis", "res_multistep", "res_multistep_cfg_pp", "res_multistep_ancestral",
    "res_multistep_ancestral_cfg_pp", "gradient_estimation", "gradient_estimation_cfg_pp", "er_sde", "seeds_2",
    "seeds_3", "sa_solver", "sa_solver_pece", "ddim", "uni_pc", "uni_pc_bh2",
]
SCHEDULERS = ["simple", "sgm_uniform", "karras", "exponential", "ddim_uniform", "beta", "normal",
              "linear_quadratic", "kl_optimal"]
UPSCALE_METHODS = ["nearest-exact", "bilinear", "area", "bicubic", "lanczos"]

_INT_MAX = 18446744073709551615


def _node(name: str, display: str, required: dict, output: list[str], *, output_node: bool = False,
          category: str = "image", hidden: dict | None = None) -> dict:
    inputs: dict = {"required": required}
    if hidden:
        inputs["hidden"] = hidden
    return {
        "input": inputs,
        "input_order": {"required": list(required)},
        "output": output,
        "output_is_list": [False] * len(output),
        "output_name": list(output),
        "name": name,
        "display_name": display,
        "description": "",
        "python_module": "nodes",
        "category": category,
        "output_node": output_node,
    }


def object_info(input_files: list[str], checkpoints: list[str], *, websocket_node: bool = True) -> dict:
    """Build /object_info; `input_files` feeds LoadImage's combo like the real server's listing."""
    size = {"default": 512, "min": 0, "max": 16384, "step": 1}
    info = {
        "LoadImage": _node("LoadImage", "Load Image", {"image": [sorted(input_files), {"image_upload": True}]},
                           ["IMAGE", "MASK"]),
        "ImageInvert": _node("ImageInvert", "Invert Image", {"image": ["IMAGE", {}]}, ["IMAGE"]),
        "ImageScale": _node("ImageScale", "Upscale Image", {
            "image": ["IMAGE", {}], "upscale_method": [list(UPSCALE_METHODS), {}],
            "width": ["INT", dict(size)], "height": ["INT", dict(size)],
            "crop": [["disabled", "center"], {}]}, ["IMAGE"]),
        "SaveImage": _node("SaveImage", "Save Image", {
            "images": ["IMAGE", {"tooltip": "The images to save."}],
            "filename_prefix": ["STRING", {"default": "ComfyUI"}]}, [], output_node=True),
        "PreviewImage": _node("PreviewImage", "Preview Image", {"images": ["IMAGE", {}]}, [], output_node=True),
        "CheckpointLoaderSimple": _node("CheckpointLoaderSimple", "Load Checkpoint", {
            "ckpt_name": [list(checkpoints), {"tooltip": "The name of the checkpoint (model) to load."}]},
            ["MODEL", "CLIP", "VAE"], category="loaders"),
        "CLIPTextEncode": _node("CLIPTextEncode", "CLIP Text Encode (Prompt)", {
            "text": ["STRING", {"multiline": True, "dynamicPrompts": True}], "clip": ["CLIP", {}]},
            ["CONDITIONING"], category="conditioning"),
        "KSampler": _node("KSampler", "KSampler", {
            "model": ["MODEL", {}],
            "seed": ["INT", {"default": 0, "min": 0, "max": _INT_MAX, "control_after_generate": True}],
            "steps": ["INT", {"default": 20, "min": 1, "max": 10000}],
            "cfg": ["FLOAT", {"default": 8.0, "min": 0.0, "max": 100.0, "step": 0.1, "round": 0.01}],
            "sampler_name": [list(SAMPLERS), {}],
            "scheduler": [list(SCHEDULERS), {}],
            "positive": ["CONDITIONING", {}], "negative": ["CONDITIONING", {}],
            "latent_image": ["LATENT", {}],
            "denoise": ["FLOAT", {"default": 1.0, "min": 0.0, "max": 1.0, "step": 0.01}]},
            ["LATENT"], category="sampling"),
        "VAEEncode": _node("VAEEncode", "VAE Encode", {"pixels": ["IMAGE", {}], "vae": ["VAE", {}]},
                           ["LATENT"], category="latent"),
        "VAEDecode": _node("VAEDecode", "VAE Decode", {"samples": ["LATENT", {}], "vae": ["VAE", {}]},
                           ["IMAGE"], category="latent"),
        "EmptyLatentImage": _node("EmptyLatentImage", "Empty Latent Image", {
            "width": ["INT", {"default": 512, "min": 16, "max": 16384, "step": 8}],
            "height": ["INT", {"default": 512, "min": 16, "max": 16384, "step": 8}],
            "batch_size": ["INT", {"default": 1, "min": 1, "max": 4096}]}, ["LATENT"], category="latent"),
    }
    if websocket_node:
        info["SaveImageWebsocket"] = _node("SaveImageWebsocket", "SaveImageWebsocket",
                                           {"images": ["IMAGE", {}]}, [], output_node=True, category="api node/image")
    return info


def ipadapter_nodes(model_files: dict[str, list[str]]) -> dict:
    """The ComfyUI_IPAdapter_plus nodes Reverie's IP-Adapter workflow uses, plus the two loaders
    whose choices list models/ipadapter and models/clip_vision (the fallback listing)."""
    presets = ["LIGHT - SD1.5 only (low strength)", "STANDARD (medium strength)", "VIT-G (medium strength)",
               "PLUS (high strength)", "PLUS FACE (portraits)", "FULL FACE - SD1.5 only (portraits stronger)"]
    unit = {"min": 0.0, "max": 1.0, "step": 0.001}
    return {
        "IPAdapterUnifiedLoader": _node("IPAdapterUnifiedLoader", "IPAdapter Unified Loader", {
            "model": ["MODEL", {}], "preset": [presets, {}]}, ["MODEL", "IPADAPTER"], category="ipadapter"),
        "IPAdapterAdvanced": _node("IPAdapterAdvanced", "IPAdapter Advanced", {
            "model": ["MODEL", {}], "ipadapter": ["IPADAPTER", {}], "image": ["IMAGE", {}],
            "weight": ["FLOAT", {"default": 1.0, "min": -1, "max": 5, "step": 0.05}],
            "weight_type": [["linear", "ease in", "ease out", "style transfer", "composition"], {}],
            "combine_embeds": [["concat", "add", "subtract", "average", "norm average"], {}],
            "start_at": ["FLOAT", {"default": 0.0, **unit}], "end_at": ["FLOAT", {"default": 1.0, **unit}],
            "embeds_scaling": [["V only", "K+V", "K+V w/ C penalty", "K+mean(V) w/ C penalty"], {}]},
            ["MODEL"], category="ipadapter"),
        "IPAdapterModelLoader": _node("IPAdapterModelLoader", "IPAdapter Model Loader", {
            "ipadapter_file": [list(model_files.get("ipadapter", [])), {}]}, ["IPADAPTER"], category="ipadapter"),
        "CLIPVisionLoader": _node("CLIPVisionLoader", "Load CLIP Vision", {
            "clip_name": [list(model_files.get("clip_vision", [])), {}]}, ["CLIP_VISION"], category="loaders"),
    }
