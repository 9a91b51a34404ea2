"""Unit tests of the MK-UNet and ORDER networks: shapes, deep supervision, strides, the zero-gamma identity."""
import itertools
import math
import random

import pytest
import torch
import torch.nn.functional as F
from nnunetv2.utilities.get_network_from_plans import get_network_from_plans
from torch import nn

from nnunet_laworder.networks.blocks import ChannelScale, ConvNormAct
from nnunet_laworder.networks.mkunet import MKUNET_VARIANTS, MKUNet
from nnunet_laworder.networks.order import (ORDER, ORDER_FEATURES, SelectiveBidirectionalSkipAttention,
                                            prediction_uncertainty, token_grid)
from nnunet_laworder.planning.architecture import architecture_block, load_template

STRIDES_3D = [[1, 1, 1], [1, 2, 2], [2, 2, 2], [2, 2, 2]]  # anisotropic first pool, as nnU-Net plans thick slices


def ds_shapes(spatial, strides):
    """Output sizes nnU-Net's deep supervision expects: 1 / cumprod(strides)[:-1], highest resolution first."""
    shapes, size = [], list(spatial)
    for s in strides[:-1]:
        size = [x // k for x, k in zip(size, s)]
        shapes.append(tuple(size))
    return shapes


@pytest.mark.parametrize("network_class", [MKUNet, ORDER])
def test_2d_deep_supervision_outputs_follow_strides(network_class):
    strides = [[1, 1], [2, 2], [2, 2], [2, 2], [2, 2]]
    net = network_class(3, 2, strides=strides, deep_supervision=True)
    outputs = net(torch.randn(2, 3, 96, 128))
    assert [tuple(o.shape[2:]) for o in outputs] == ds_shapes((96, 128), strides)
    assert all(o.shape[:2] == (2, 2) for o in outputs)
    net.decoder.deep_supervision = False
    single = net(torch.randn(2, 3, 96, 128))
    assert isinstance(single, torch.Tensor) and single.shape == (2, 2, 96, 128)


@pytest.mark.parametrize("network_class", [MKUNet, ORDER])
def test_3d_anisotropic_strides(network_class):
    net = network_class(1, 3, n_stages=4, features_per_stage=(8, 16, 24, 28), conv_op=nn.Conv3d, strides=STRIDES_3D,
                        deep_supervision=True)
    outputs = net(torch.randn(2, 1, 20, 48, 40))
    assert [tuple(o.shape[2:]) for o in outputs] == ds_shapes((20, 48, 40), STRIDES_3D)
    assert isinstance(net.encoder.pools[0], nn.Identity) is False  # stage 0 pools by strides[1] = (1, 2, 2)
    assert outputs[1].shape[2:] == (20, 24, 20)


def test_order_with_zero_gamma_is_exactly_its_mkunet_backbone():
    torch.manual_seed(0)
    order = ORDER(3, 2).eval()
    mkunet = MKUNet(3, 2, features_per_stage=ORDER_FEATURES).eval()
    incompatible = mkunet.load_state_dict(order.state_dict(), strict=False)
    assert incompatible.missing_keys == []
    assert all(k.startswith("decoder.skip_attention.") for k in incompatible.unexpected_keys)
    x = torch.randn(2, 3, 128, 160)
    with torch.no_grad():
        assert torch.equal(order(x), mkunet(x))
        for attention in order.decoder.skip_attention.values():
            attention.gamma_decoder.fill_(1.0)
            attention.gamma_skip.fill_(1.0)
        assert not torch.equal(order(x), mkunet(x))


def test_attention_sits_on_the_last_two_skip_merges_and_gamma_learns():
    order = ORDER(3, 2, deep_supervision=True)
    assert order.decoder.attention_stage_ids == [2, 3]  # stages 0..3 merge skips; 2 and 3 are the last two
    loss = sum(o.mean() for o in order(torch.randn(2, 3, 64, 64)))
    loss.backward()
    assert all(a.gamma_decoder.grad is not None and a.gamma_decoder.grad.abs() > 0
               for a in order.decoder.skip_attention.values())


def test_selective_attention_updates_only_uncertain_decoder_tokens():
    attention = SelectiveBidirectionalSkipAttention(nn.Conv2d, channels=4, rho=0.25, max_tokens=64)
    with torch.no_grad():
        attention.gamma_decoder.fill_(1.0)
    decoder, skip = torch.randn(1, 4, 8, 8), torch.randn(1, 4, 8, 8)
    uncertainty = torch.zeros(1, 1, 8, 8)
    uncertainty[..., :2, :] = 1.0  # 16 of 64 tokens uncertain = rho * N
    new_decoder, _ = attention(decoder, skip, uncertainty)
    changed = (new_decoder - decoder).abs().sum(dim=1)[0] > 0
    assert changed[:2].all() and not changed[2:].any()


@pytest.mark.parametrize("rho", [0.25, 0.5])
def test_decoder_update_reaches_exactly_the_footprint_of_the_selected_tokens(rho):
    # every position uncertain (the gate is nowhere zero), so only the selection can keep a position unchanged
    torch.manual_seed(0)
    attention = SelectiveBidirectionalSkipAttention(nn.Conv2d, channels=4, rho=rho, max_tokens=64)
    with torch.no_grad():
        attention.gamma_decoder.fill_(1.0)
    decoder, skip = torch.randn(1, 4, 16, 16), torch.randn(1, 4, 16, 16)
    uncertainty = 0.2 + 0.8 * torch.rand(1, 1, 16, 16)
    new_decoder, _ = attention(decoder, skip, uncertainty)
    changed = (new_decoder - decoder).abs().sum(dim=1)[0] > 0
    assert changed.float().mean().item() == pytest.approx(rho)  # rho = 1 (no selection) would change all
    token_u = F.avg_pool2d(uncertainty, 2)[0, 0]  # 8 x 8 tokens of 2 x 2 positions each
    chosen = token_u.flatten() >= token_u.flatten().topk(round(rho * 64)).values[-1]
    assert torch.equal(changed, chosen.view(8, 8).repeat_interleave(2, 0).repeat_interleave(2, 1))


def test_confidence_gate_scales_both_updates_and_no_gate_does_not():
    torch.manual_seed(0)
    decoder, skip = torch.randn(1, 4, 8, 8), torch.randn(1, 4, 8, 8)
    uncertainty = torch.ones(1, 1, 8, 8)
    uncertainty[..., 4:, :] = 0.0  # confident lower half
    for gated in (True, False):
        attention = SelectiveBidirectionalSkipAttention(nn.Conv2d, channels=4, rho=1.0, max_tokens=64,
                                                        confidence_gate=gated)
        with torch.no_grad():
            attention.gamma_decoder.fill_(1.0)
            attention.gamma_skip.fill_(1.0)
        new_decoder, new_skip = attention(decoder, skip, uncertainty)
        for old, new in ((decoder, new_decoder), (skip, new_skip)):
            changed = (new - old).abs().sum(dim=1)[0] > 0
            assert changed[:4].all()
            assert changed[4:].any() != gated  # u = 0 freezes a position only with the gate


def test_the_gate_reads_the_uncertainty_of_the_stages_own_head():
    torch.manual_seed(0)
    order = ORDER(3, 2, deep_supervision=False).eval()
    heads, gates = {}, {}
    for j in order.decoder.attention_stage_ids:
        order.decoder.seg_layers[j - 1].register_forward_hook(lambda m, i, o, j=j: heads.__setitem__(j, o))
        order.decoder.skip_attention[str(j)].register_forward_hook(lambda m, i, o, j=j: gates.__setitem__(j, i[2]))
    with torch.no_grad():
        order(torch.randn(1, 3, 64, 64))
    assert sorted(gates) == order.decoder.attention_stage_ids
    for j, uncertainty in gates.items():
        assert torch.equal(uncertainty, prediction_uncertainty(heads[j], multilabel=False))


def test_no_attention_variant_is_the_backbone_at_orders_widths():
    torch.manual_seed(0)
    backbone = ORDER(3, 2, attention_stages=0).eval()
    assert len(backbone.decoder.skip_attention) == 0
    mkunet = MKUNet(3, 2, features_per_stage=ORDER_FEATURES).eval()
    mkunet.load_state_dict(backbone.state_dict())
    x = torch.randn(1, 3, 64, 96)
    with torch.no_grad():
        assert torch.equal(backbone(x), mkunet(x))


def test_token_grid_caps_tokens_and_uncertainty_range():
    assert token_grid((128, 128), 1024) == (32, 32)
    assert token_grid((20, 28, 20), 1024) == (10, 7, 10)
    logits = torch.tensor([[[[0.0]], [[0.0]]], [[[10.0]], [[-10.0]]]])  # 2 classes: tie, then confident
    u = prediction_uncertainty(logits, multilabel=False)
    assert torch.allclose(u.flatten(), torch.tensor([1.0, 0.0]), atol=1e-6)
    assert torch.allclose(prediction_uncertainty(torch.zeros(1, 2, 1, 1), multilabel=True), torch.ones(1, 1, 1, 1))


def halving_loop_grid(spatial, max_tokens):
    """token_grid as a loop over the sizes (what it computed before its closed form, kept as the definition)."""
    grid = list(spatial)
    while math.prod(grid) > max_tokens and max(grid) > 1:
        axis = grid.index(max(grid))
        grid[axis] = (grid[axis] + 1) // 2
    return tuple(grid)


def test_token_grid_matches_the_halving_loop_at_every_size():
    caps = (1, 3, 7, 64, 100, 1024)
    small = [*itertools.product(range(1, 41), repeat=2), *itertools.product(range(1, 13), repeat=3)]
    rng = random.Random(0)  # large and unequal axes, 2D and 3D
    large = [tuple(rng.randint(1, rng.choice((100, 1000, 100000))) for _ in range(dims))
             for dims in rng.choices((2, 3), k=2000)]
    for spatial in [*small, *large]:
        for max_tokens in caps:
            assert token_grid(spatial, max_tokens) == halving_loop_grid(spatial, max_tokens), (spatial, max_tokens)


@pytest.mark.parametrize("variant,attention_stages,gated", [("default", 2, False), ("no-attention", 0, False),
                                                             ("confidence-gate", 2, True),
                                                             ("wide-attention", 2, False)])
def test_order_ablation_variants_build_from_plans(variant, attention_stages, gated):
    block = architecture_block("order", [[1, 1]] + [[2, 2]] * 4, 2, variant)
    net = get_network_from_plans(block["network_class_name"], block["arch_kwargs"], block["_kw_requires_import"],
                                 input_channels=3, output_channels=2, deep_supervision=True)
    assert len(net.decoder.skip_attention) == attention_stages
    assert all(a.confidence_gate == gated for a in net.decoder.skip_attention.values())
    assert [m.weight.shape[0] for m in net.decoder.seg_layers] == [2] * 4


@pytest.mark.parametrize("arch,dim", [("order", 2), ("mkunet", 2), ("order", 3), ("mkunet", 3)])
def test_network_builds_through_nnunet_get_network_from_plans(arch, dim):
    strides = [[1] * dim] + [[2] * dim] * 6  # a 7-stage nnU-Net plan: networks keep its first 5 strides
    block = architecture_block(arch, strides, dim)
    assert block["arch_kwargs"]["strides"] == strides[:5]
    net = get_network_from_plans(block["network_class_name"], block["arch_kwargs"], block["_kw_requires_import"],
                                 input_channels=3, output_channels=2, deep_supervision=True)
    size = (64,) * dim
    outputs = net(torch.randn(1, 3, *size))
    assert len(outputs) == 4 and outputs[0].shape[2:] == size
    assert net.decoder.seg_layers is not None and hasattr(net.decoder, "deep_supervision")


def test_templates_agree_with_network_defaults():
    assert tuple(load_template("order")["variants"]["default"]["features_per_stage"]) == ORDER_FEATURES
    mkunet_variants = load_template("mkunet")["variants"]
    assert {k: tuple(v["features_per_stage"]) for k, v in mkunet_variants.items()} == MKUNET_VARIANTS


@pytest.mark.parametrize("conv_op", [nn.Conv2d, nn.Conv3d])
def test_channel_scale_is_a_depthwise_1x1_conv(conv_op):
    scale = ChannelScale(conv_op, 6)
    nn.init.normal_(scale.weight)
    conv = conv_op(6, 6, 1, groups=6, bias=False)
    conv.load_state_dict(scale.state_dict())  # same parameter name and shape: checkpoints load either way
    x = torch.randn(2, 6, *[9] * (2 if conv_op is nn.Conv2d else 3))
    assert torch.allclose(scale(x), conv(x), atol=1e-6)


@pytest.mark.parametrize("network_class", [MKUNet, ORDER])
def test_channels_last_inside_leaves_outputs_contiguous_and_unchanged(network_class):
    """The network computes in channels-last for speed; the caller sees the result of the plain computation."""
    net = network_class(3, 2, deep_supervision=True).eval()
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        outputs = net(x)
        net.memory_format = torch.contiguous_format
        reference = net(x)
    for o, r in zip(outputs, reference):
        assert o.is_contiguous()
        assert torch.allclose(o, r, atol=1e-5)


@pytest.mark.parametrize("conv_op", [nn.Conv2d, nn.Conv3d])
def test_eval_folds_batch_norms_into_convs_without_changing_outputs(conv_op):
    net = ORDER(3, 2, n_stages=3, features_per_stage=(8, 16, 24), conv_op=conv_op, strides=[1, 2, 2]).eval()
    torch.manual_seed(0)
    for norm in net.modules():  # running statistics and affines far from the identity
        if isinstance(norm, nn.modules.batchnorm._BatchNorm):
            norm.running_mean.normal_()
            norm.running_var.uniform_(0.5, 2.0)
            nn.init.normal_(norm.weight)
            nn.init.normal_(norm.bias)
    x = torch.randn(1, 3, *[24] * (2 if conv_op is nn.Conv2d else 3))
    with torch.no_grad():
        folded = net(x)
        for block in net.modules():
            if isinstance(block, ConvNormAct):
                block.forward = nn.Sequential.forward.__get__(block)  # conv, then the norm as a layer
        unfolded = net(x)
    assert torch.allclose(folded, unfolded, rtol=1e-4, atol=1e-5 * unfolded.abs().max().item())
