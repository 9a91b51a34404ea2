"""The fused eval forward under ``torch.inference_mode`` computes what the plain modules compute."""
import pytest
import torch
from torch import nn

from nnunet_laworder.networks.blocks import set_fast_inference
from nnunet_laworder.networks.mkunet import MKUNet
from nnunet_laworder.networks.order import ORDER, ORDER_FEATURES


def trained_looking(net: nn.Module) -> nn.Module:
    """Running statistics, affines and attention strengths far from their initial values, so every fold matters."""
    torch.manual_seed(0)
    for module in net.modules():
        if isinstance(module, nn.modules.batchnorm._BatchNorm):
            module.running_mean.normal_()
            module.running_var.uniform_(0.5, 2.0)
            nn.init.normal_(module.weight)
            nn.init.normal_(module.bias)
    for name, parameter in net.named_parameters():
        if "gamma" in name:
            nn.init.normal_(parameter)
    return net


def build(network_class, conv_op, deep_supervision=True):
    torch.manual_seed(0)  # the convolutions' weights too: the same network whatever ran before in the process
    return trained_looking(network_class(3, 2, features_per_stage=ORDER_FEATURES, conv_op=conv_op,
                                         deep_supervision=deep_supervision))


def assert_close(outputs, references):
    # Folded batch norms and fused convolutions round differently in float32: over 12 unseeded ORDER draws the
    # largest difference was 2e-7 to 1.6e-5 of the largest logit (the suite once failed on such a draw), so build()
    # seeds the network (seed 0: 2.4e-7 here). A wrong fold differs by the logits' own size.
    for o, r in zip(outputs, references):
        assert o.shape == r.shape and o.is_contiguous()
        assert torch.allclose(o, r, rtol=1e-5, atol=1e-5 * r.abs().max().item())


@pytest.mark.parametrize("network_class", [ORDER, MKUNet])
@pytest.mark.parametrize("conv_op, size", [(nn.Conv2d, (64, 48)), (nn.Conv3d, (32, 32, 32))])
def test_fast_inference_matches_the_plain_modules(network_class, conv_op, size):
    net = build(network_class, conv_op).eval()
    x = torch.randn(1, 3, *size)
    with torch.inference_mode():
        fast = net(x)
        set_fast_inference(net, False)
        plain = net(x)
    assert_close(fast, plain)


def test_no_grad_eval_runs_the_plain_modules():
    """Validation and the flop counter (``torch.no_grad``) see the network as defined."""
    net = build(ORDER, nn.Conv2d).eval()
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        default = net(x)
        set_fast_inference(net, False)
        plain = net(x)
    for d, p in zip(default, plain):
        assert torch.equal(d, p)


def test_folded_weights_follow_a_new_checkpoint():
    net = build(ORDER, nn.Conv2d, deep_supervision=False).eval()
    other = trained_looking(ORDER(3, 2))
    x = torch.randn(1, 3, 64, 64)
    with torch.inference_mode():
        net(x)  # builds the cached folds
    net.load_state_dict(other.state_dict())
    with torch.inference_mode():
        fast = net(x)
    with torch.no_grad():
        plain = other.eval()(x)
    assert_close([fast], [plain])


def test_training_forward_is_unchanged():
    net = build(ORDER, nn.Conv2d).train()
    x = torch.randn(2, 3, 64, 64)
    torch.manual_seed(1)
    with_flag = net(x)
    set_fast_inference(net, False)
    torch.manual_seed(1)
    without = net(x)
    for a, b in zip(with_flag, without):
        assert torch.equal(a, b)
    sum(o.mean() for o in with_flag).backward()
