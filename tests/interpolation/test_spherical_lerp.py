"""slerp / lerp / ease: endpoints, norms, degenerate inputs, precision and vectorization."""

from __future__ import annotations

import math

import pytest
import torch

from backend.interpolation.spherical_lerp import EASINGS, ease, lerp, slerp


def pair(shape=(2, 4, 8, 8), seed=0, dtype=torch.float32):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(shape, generator=g).to(dtype), torch.randn(shape, generator=g).to(dtype)


def reference_slerp(v0: torch.Tensor, v1: torch.Tensor, t: float) -> torch.Tensor:
    """Textbook slerp in float64, one sample at a time."""
    out = []
    for a, b in zip(v0.double(), v1.double()):
        a_flat, b_flat = a.flatten(), b.flatten()
        cos = torch.dot(a_flat, b_flat) / (a_flat.norm() * b_flat.norm())
        theta = math.acos(float(cos.clamp(-1, 1)))
        w0 = math.sin((1 - t) * theta) / math.sin(theta)
        w1 = math.sin(t * theta) / math.sin(theta)
        out.append((w0 * a_flat + w1 * b_flat).reshape(a.shape))
    return torch.stack(out)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.float16, torch.bfloat16])
def test_slerp_returns_v0_at_t_zero_and_v1_at_t_one(dtype):
    v0, v1 = pair(dtype=dtype)
    torch.testing.assert_close(slerp(v0, v1, 0.0), v0)
    torch.testing.assert_close(slerp(v0, v1, 1.0), v1)


def test_slerp_keeps_the_norm_of_equal_norm_inputs():
    v0, v1 = pair()
    v1 = v1 / v1.flatten(1).norm(dim=1).view(-1, 1, 1, 1) * v0.flatten(1).norm(dim=1).view(-1, 1, 1, 1)
    out = slerp(v0, v1, torch.linspace(0, 1, 9))  # [9, B, C, H, W]
    norms = out.flatten(2).norm(dim=2)  # [9, B]
    torch.testing.assert_close(norms, v0.flatten(1).norm(dim=1).expand_as(norms), rtol=1e-5, atol=1e-4)


@pytest.mark.parametrize("t", [0.1, 0.25, 0.5, 0.8])
def test_slerp_agrees_with_a_float64_reference_formula(t):
    v0, v1 = pair()
    torch.testing.assert_close(slerp(v0, v1, t).double(), reference_slerp(v0, v1, t), rtol=1e-5, atol=1e-5)


def test_vectorized_t_gives_the_same_frames_as_one_call_per_t():
    v0, v1 = pair()
    ts = torch.tensor([0.0, 1 / 7, 2 / 7, 0.5, 6 / 7, 1.0])
    stacked = slerp(v0, v1, ts)
    assert stacked.shape == (6, *v0.shape)
    for i, t in enumerate(ts.tolist()):
        torch.testing.assert_close(stacked[i], slerp(v0, v1, t))


def test_slerp_treats_each_sample_of_the_batch_on_its_own():
    v0, v1 = pair(shape=(3, 4, 8, 8))
    whole = slerp(v0, v1, 0.3)
    for i in range(3):
        torch.testing.assert_close(whole[i : i + 1], slerp(v0[i : i + 1], v1[i : i + 1], 0.3))


def test_slerp_of_parallel_vectors_falls_back_to_lerp():
    v0, _ = pair()
    v1 = 2.5 * v0
    out = slerp(v0, v1, 0.5)
    assert torch.isfinite(out).all()
    torch.testing.assert_close(out, 1.75 * v0)


def test_slerp_of_antiparallel_vectors_is_finite():
    v0, _ = pair()
    out = slerp(v0, -v0, torch.linspace(0, 1, 5))
    assert torch.isfinite(out).all()
    torch.testing.assert_close(out[0], v0)
    torch.testing.assert_close(out[-1], -v0)


@pytest.mark.parametrize("zero", ["v0", "v1", "both"])
def test_slerp_with_a_zero_vector_is_finite_and_linear(zero):
    v0, v1 = pair()
    if zero in ("v0", "both"):
        v0 = torch.zeros_like(v0)
    if zero in ("v1", "both"):
        v1 = torch.zeros_like(v1)
    out = slerp(v0, v1, 0.25)
    assert torch.isfinite(out).all()
    torch.testing.assert_close(out, 0.75 * v0 + 0.25 * v1)


def test_slerp_in_float16_stays_finite_where_a_float16_norm_would_overflow():
    v0, v1 = pair(shape=(1, 4, 64, 64))
    v0, v1 = (v0 * 200).half(), (v1 * 200).half()  # squared norm ~ 6e8, far beyond float16's 65504
    out = slerp(v0, v1, torch.linspace(0, 1, 6))
    assert out.dtype == torch.float16 and torch.isfinite(out).all()
    ref = reference_slerp(v0.float(), v1.float(), 0.4).half()
    torch.testing.assert_close(slerp(v0, v1, 0.4), ref, rtol=2e-3, atol=0.5)


def test_slerp_returns_the_input_dtype_and_device():
    v0, v1 = pair(dtype=torch.bfloat16)
    out = slerp(v0, v1, torch.tensor([0.2, 0.7]))
    assert out.dtype == torch.bfloat16 and out.device == v0.device


def test_slerp_commutes_with_a_pure_scale():
    v0, v1 = pair()
    torch.testing.assert_close(slerp(0.18215 * v0, 0.18215 * v1, 0.3), 0.18215 * slerp(v0, v1, 0.3))


def test_lerp_matches_the_linear_formula_for_float_and_vector_t():
    v0, v1 = pair()
    torch.testing.assert_close(lerp(v0, v1, 0.3), 0.7 * v0 + 0.3 * v1)
    out = lerp(v0, v1, torch.tensor([0.0, 0.5]))
    torch.testing.assert_close(out[1], (v0 + v1) / 2)


@pytest.mark.parametrize("bad_t", [torch.zeros(2, 2), torch.zeros(1, 1, 3)])
def test_slerp_rejects_t_with_more_than_one_dimension(bad_t):
    v0, v1 = pair()
    with pytest.raises(ValueError, match="t must be"):
        slerp(v0, v1, bad_t)


def test_slerp_rejects_inputs_of_different_shapes():
    v0, v1 = pair()
    with pytest.raises(ValueError, match="same shape"):
        slerp(v0, v1[:, :2], 0.5)


@pytest.mark.parametrize("curve", EASINGS)
def test_easing_curves_map_zero_to_zero_one_to_one_and_rise_monotonically(curve):
    t = torch.linspace(0, 1, 101)
    y = ease(t, curve)
    assert y[0].item() == pytest.approx(0.0, abs=1e-7) and y[-1].item() == pytest.approx(1.0, abs=1e-6)
    assert (y.diff() >= -1e-7).all() and (y >= 0).all() and (y <= 1).all()
    assert ease(0.5, curve) == pytest.approx(0.5)  # all three are symmetric about the midpoint
    assert ease(0.3, curve) == pytest.approx(y[30].item(), abs=1e-6)  # float and tensor paths agree


def test_easing_clamps_t_outside_the_unit_interval():
    assert ease(-0.5, "smoothstep") == 0.0 and ease(1.5, "cosine") == 1.0


def test_easing_rejects_an_unknown_curve():
    with pytest.raises(ValueError, match="smoothstep"):
        ease(0.5, "bounce")


def test_slerp_in_float64_keeps_float64_precision_of_t():
    v0, v1 = pair(dtype=torch.float64)
    t = 1 / 3  # not exact in float32: a t rounded to float32 is off by ~1e-8
    torch.testing.assert_close(slerp(v0, v1, t), reference_slerp(v0, v1, t), rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(slerp(v0, v1, torch.tensor([t], dtype=torch.float64))[0], reference_slerp(v0, v1, t),
                               rtol=1e-12, atol=1e-12)


def test_slerp_of_float16_inputs_whose_norm_overflows_float16_follows_the_true_angle():
    g = torch.Generator().manual_seed(3)
    base, noise = torch.randn(2, 1, 4, 64, 64, generator=g)
    v0 = 2000 * base  # norm ~ 2.6e5: past float16's 65504, while every element fits
    v1 = 2000 * (0.8 * base + 0.6 * noise)  # cos θ ~ 0.8, so a wrong angle shows
    v0, v1 = v0.half(), v1.half()
    assert not torch.isfinite(v0.flatten(1).norm(dim=1)).all()  # the overflow this test is about
    ref = reference_slerp(v0.double(), v1.double(), 0.4)
    torch.testing.assert_close(slerp(v0, v1, 0.4).double(), ref, rtol=2e-3, atol=16.0)


def test_slerp_computes_on_the_device_of_v0_and_brings_v1_and_t_there():
    # torch's "meta" device stands in for a GPU: mixing it with CPU tensors raises, like CUDA would.
    v0 = torch.empty(2, 4, 8, 8, device="meta")
    _, v1 = pair()
    assert slerp(v0, v1, 0.3).device.type == "meta"
    assert slerp(v0, v1, torch.tensor([0.2, 0.7])).shape == (2, *v0.shape)
    assert lerp(v0, v1, 0.3).device.type == "meta"


def test_slerp_takes_a_batch_of_single_numbers_and_rejects_a_tensor_without_batch_dimension():
    v0, v1 = torch.tensor([1.0, -2.0]), torch.tensor([3.0, 4.0])  # [B] = two one-element samples
    torch.testing.assert_close(slerp(v0, v1, 0.5), torch.tensor([2.0, 1.0]))
    with pytest.raises(ValueError, match="^v0 and v1 need a leading batch dimension$"):
        slerp(torch.tensor(1.0), torch.tensor(2.0), 0.5)


def test_slerp_takes_the_arc_when_the_cosine_equals_the_threshold_and_lerps_just_above_it():
    v0, v1 = torch.tensor([[3.0, 4.0]]), torch.tensor([[4.0, 3.0]])  # cos θ = 24/25 = 0.96 exactly in float32
    arc = reference_slerp(v0, v1, 0.5).float()
    torch.testing.assert_close(slerp(v0, v1, 0.5, dot_threshold=0.96), arc)
    torch.testing.assert_close(slerp(v0, v1, 0.5, dot_threshold=0.95), (v0 + v1) / 2)


def test_slerp_treats_a_norm_product_at_the_zero_threshold_as_degenerate():
    v0, v1 = torch.tensor([[1e-6, 0.0]]), torch.tensor([[0.0, 1e-6]])  # orthogonal; |v0|·|v1| = 1e-12 exactly
    # atol=0: the outputs are ~1e-6, below assert_close's default absolute tolerance
    torch.testing.assert_close(slerp(v0, v1, 0.5), (v0 + v1) / 2, rtol=1e-5, atol=0)


@pytest.mark.parametrize(("curve", "quarter"), [("linear", 0.25), ("smoothstep", 0.15625),
                                                ("cosine", (1 - math.cos(math.pi / 4)) / 2)])
def test_each_easing_curve_has_its_own_value_at_a_quarter(curve, quarter):
    assert ease(0.25, curve) == pytest.approx(quarter, abs=1e-12)
    assert ease(torch.tensor([0.25]), curve).item() == pytest.approx(quarter, abs=1e-7)
    assert ease(0.75, curve) == pytest.approx(1 - quarter, abs=1e-12)


def test_easing_is_linear_when_no_curve_is_named():
    assert ease(0.3) == pytest.approx(0.3) and ease(torch.tensor([0.3])).item() == pytest.approx(0.3)


@pytest.mark.parametrize("curve", EASINGS)
def test_easing_clamps_tensor_t_outside_the_unit_interval(curve):
    out = ease(torch.tensor([-0.5, 0.0, 1.0, 1.5]), curve)
    torch.testing.assert_close(out, torch.tensor([0.0, 0.0, 1.0, 1.0]))


def test_an_unknown_easing_is_rejected_with_the_list_of_known_ones():
    with pytest.raises(ValueError, match="unknown easing 'bounce'; choose one of linear, smoothstep, cosine$"):
        ease(0.5, "bounce")
