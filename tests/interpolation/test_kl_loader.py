"""kl_loader: single-file VAEs that carry training bookkeeping, and files that miss tensors."""

from __future__ import annotations

import pytest
import torch
from safetensors.torch import save_file

from backend.interpolation.latent_encoder import LatentEncoder, VaeNotFoundError
from tests.interpolation.ldm_layout import to_ldm


@pytest.fixture(autouse=True)
def offline(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")


def bookkeeping(model) -> dict[str, torch.Tensor]:
    """What LDM training checkpoints keep beside the VAE: EMA state and the loss's own modules."""
    return {"model_ema.decay": torch.tensor(0.9999), "model_ema.num_updates": torch.tensor(840000, dtype=torch.int32),
            "model_ema.encoderconv_inweight": model.encoder.conv_in.weight.detach().clone(),
            "loss.logvar": torch.zeros(()), "loss.discriminator.main.0.weight": torch.randn(8, 3, 4, 4),
            "loss.perceptual_loss.lin0.model.1.weight": torch.randn(1, 64, 1, 1)}


def direct_encode(model, x):
    with torch.no_grad():
        return model.encode(x * 2 - 1).latent_dist.mode()


def check_loads_as_the_model(path, model):
    encoder = LatentEncoder.load("kl", source=str(path))
    x = torch.rand(1, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    torch.testing.assert_close(encoder.encode_pixels(x), direct_encode(model, x) * 0.18215, rtol=1e-5, atol=1e-6)


def test_a_safetensors_vae_with_ema_and_loss_keys_loads(tiny_kl, tmp_path):
    model, _ = tiny_kl
    path = tmp_path / "vae-ft-mse-840000-ema.safetensors"
    save_file({**to_ldm(model.state_dict(), num_blocks=2), **bookkeeping(model)}, str(path))
    check_loads_as_the_model(path, model)


def test_a_pt_training_checkpoint_with_a_state_dict_wrapper_loads(tiny_kl, tmp_path):
    model, _ = tiny_kl
    path = tmp_path / "vae-ft-mse-840000-ema.pt"
    torch.save({"state_dict": {**to_ldm(model.state_dict(), num_blocks=2), **bookkeeping(model)},
                "global_step": 840000, "epoch": 3}, path)
    check_loads_as_the_model(path, model)


def test_a_file_missing_a_vae_tensor_is_refused_even_when_extra_keys_even_out_the_count(tiny_kl, tmp_path):
    model, _ = tiny_kl
    tensors = to_ldm(model.state_dict(), num_blocks=2)
    del tensors["decoder.mid.block_1.conv1.bias"]
    path = tmp_path / "vae-ft-mse-broken.safetensors"
    save_file({**tensors, "decoder.mid.block_1.conv1.extra": torch.randn(3)}, str(path))
    with pytest.raises(VaeNotFoundError, match="incomplete VAE") as info:
        LatentEncoder.load("kl", source=str(path))
    assert "decoder.mid_block.resnets.0.conv1.bias" in str(info.value)
