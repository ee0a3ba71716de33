"""--check's ComfyUI hygiene notes from /object_info: custom nodes in the workflow, a crowded input/."""

from __future__ import annotations

from backend.desktop.comfy_hygiene import custom_nodes, hygiene_notes, input_listing_size
from tests.fake_comfyui.schemas import object_info

CLASSES = {"LoadImage", "CheckpointLoaderSimple", "KSampler", "SaveImage", "FaceDetailer", "WAS_Image_Blur"}


def info(files: int = 3) -> dict:
    schemas = object_info([f"img_{i}.png" for i in range(files)], ["model.safetensors"])
    schemas["FaceDetailer"] = {**schemas["KSampler"], "python_module": "custom_nodes.ComfyUI-Impact-Pack"}
    schemas["WAS_Image_Blur"] = {**schemas["ImageInvert"], "python_module": "custom_nodes.was-node-suite-comfyui"}
    schemas["ImageInvert"] = {**schemas["ImageInvert"], "python_module": "comfy_extras.nodes_images"}
    return schemas


def test_only_nodes_from_custom_packs_are_listed_with_their_pack():
    assert custom_nodes(CLASSES | {"ImageInvert"}, info()) == [
        ("FaceDetailer", "ComfyUI-Impact-Pack"), ("WAS_Image_Blur", "was-node-suite-comfyui")]


def test_the_websocket_save_node_comfyui_ships_in_its_custom_nodes_folder_is_not_custom():
    schemas = info()
    schemas["SaveImageWebsocket"] = {**schemas["SaveImage"], "python_module": "custom_nodes.websocket_image_save"}
    assert custom_nodes({"SaveImageWebsocket", "LoadImage"}, schemas) == []


def test_a_core_only_workflow_on_a_tidy_server_gives_no_notes():
    assert hygiene_notes({"LoadImage", "KSampler", "ImageInvert"}, info()) == []


def test_the_input_listing_is_counted_in_both_combo_formats():
    schemas = info(files=1500)
    assert input_listing_size(schemas) == 1500
    spec = schemas["LoadImage"]["input"]["required"]["image"]
    schemas["LoadImage"]["input"]["required"]["image"] = ["COMBO", {"options": spec[0]}]
    assert input_listing_size(schemas) == 1500
    assert input_listing_size({}) is None


def test_the_notes_name_the_custom_nodes_and_a_crowded_input_folder():
    notes = hygiene_notes(CLASSES, info(files=1001))
    assert len(notes) == 2
    assert "FaceDetailer (ComfyUI-Impact-Pack), WAS_Image_Blur (was-node-suite-comfyui)" in notes[0]
    assert notes[1].startswith("ComfyUI's input folder holds 1001 files")
    assert hygiene_notes({"LoadImage"}, info(files=1000)) == []
