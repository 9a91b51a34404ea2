"""ORDER: Optimal Region Detection with Efficient Resolution (reconstruction, see SPEC section 3).

An MK-UNet whose last decoder stages that receive a skip also run *selective bidirectional skip attention*:
decoder and skip features, average-pooled to an efficient token grid, share one similarity matrix that is
used both ways (decoder <- skip over its rows, skip <- decoder over its columns); only the most uncertain
decoder tokens (top ``rho``) take part, and both residual updates are scaled by a *confidence gate*
``u * gamma``, with ``u`` the uncertainty of the stage's own deep-supervision head and ``gamma`` learned from 0,
so an untrained ORDER computes exactly what its MK-UNet backbone computes.
"""
from typing import Sequence, Tuple, Type

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.modules.conv import _ConvNd

from dynamic_network_architectures.building_blocks.helper import convert_conv_op_to_dim

from nnunet_laworder.networks.layers import interpolation_mode
from nnunet_laworder.networks.mkunet import MKUNet, MKUNetDecoder

# default 2D ORDER widths: the whole network (3 -> 2 channels) stays under 42K parameters
ORDER_FEATURES = (8, 16, 24, 28, 32)
AXIS_BITS = 31  # token_grid's axes are below 2**AXIS_BITS


def token_grid(spatial: Sequence[int], max_tokens: int) -> Tuple[int, ...]:
    """The grid reached by halving the largest axis (rounding up; the first of equal ones) until it holds at most
    ``max_tokens`` tokens, for axes below ``2**AXIS_BITS``.

    Closed-form on small integer tensors, which a traced graph computes at every input size: the ONNX exporter
    unrolls a loop over the sizes at the traced one, and stalls in sympy on the same arithmetic over its symbolic
    sizes. Halved k times, an axis of size s is ceil(s / 2^k), within (2^(b-1), 2^b] for
    b = ceil(log2 s) - k, so the halving brings every axis to at most 2^b before it takes any below 2^b. The grid is
    thus the one capped at 2^b for the largest b whose capped grid fits, except that an axis above 2^b keeps its
    size capped at 2^(b+1) if the grid already fits before its turn (largest first, then the first axis).
    """
    assert max_tokens >= 1, f"max_tokens must be at least 1, got {max_tokens}"
    sizes = torch.tensor(spatial, dtype=torch.int64)[:, None]
    powers = 2 ** torch.arange(AXIS_BITS + 1)
    ceil_powers = 1 + torch.where(sizes > powers[:-1], powers[:-1], 0).sum(1, keepdim=True)  # 2^ceil(log2 s)
    capped = -(-sizes // (ceil_powers // powers).clamp(min=1))  # [axis, b]: the axis halved until <= 2^b
    b = (capped.prod(0) <= max_tokens).sum() - 1  # capping at 2^0 always fits, and fitting only stops as b grows
    halved, unhalved = capped[:, b], capped[:, (b + 1).clamp(max=AXIS_BITS)]  # at b = AXIS_BITS both uncapped
    axes = torch.arange(len(spatial))
    # [j, i]: axis j's turn comes before axis i's
    earlier = (unhalved[:, None] > unhalved) | ((unhalved[:, None] == unhalved) & (axes[:, None] < axes))
    tokens_before_turn = torch.where(earlier, halved[:, None], unhalved[:, None]).prod(0)
    grid = torch.where(tokens_before_turn > max_tokens, halved, unhalved).tolist()
    for size, tokens in zip(spatial, grid):  # what a traced graph may assume of the sizes computed here
        torch._check(tokens >= 1)
        torch._check(tokens <= size)
    return tuple(grid)


def prediction_uncertainty(logits: torch.Tensor, multilabel: bool) -> torch.Tensor:
    """Per-voxel uncertainty in [0, 1]: ``1 - (p_max - p_second)`` for softmax classes (``1 - |2p - 1|`` for two),
    ``1 - |2p - 1|`` per sigmoid channel (regions or a single channel) with the most uncertain channel kept."""
    if multilabel or logits.shape[1] == 1:
        return (1 - (2 * torch.sigmoid(logits) - 1).abs()).amax(dim=1, keepdim=True)
    top2 = torch.softmax(logits, dim=1).topk(2, dim=1).values
    return 1 - (top2[:, :1] - top2[:, 1:2])


class SelectiveBidirectionalSkipAttention(nn.Module):
    """Decoder and skip tokens share one similarity matrix; only the top-``rho`` uncertain decoder tokens are
    queries, and their update reaches only their own footprint (nearest upsampling of the token grid: each token
    owns the block of positions it was pooled from). Every skip token is updated from the selected decoder tokens
    through the transposed similarity. ``confidence_gate``: both residual updates are scaled by the uncertainty
    ``u`` of the stage's head (else by ``gamma`` alone: the plans default, see plans/order.json)."""

    def __init__(self, conv_op: Type[_ConvNd], channels: int, attention_dim: int = 8, rho: float = 0.25,
                 max_tokens: int = 1024, confidence_gate: bool = True):
        super().__init__()
        assert 0 < rho <= 1, f"rho is the fraction of decoder tokens updated, in (0, 1], got {rho}"
        self.rho, self.max_tokens, self.scale = rho, max_tokens, attention_dim ** -0.5
        self.confidence_gate = confidence_gate
        self.dim = convert_conv_op_to_dim(conv_op)
        self.interpolation = interpolation_mode(conv_op)
        self.query = conv_op(channels, attention_dim, 1, bias=False)  # from decoder tokens
        self.key = conv_op(channels, attention_dim, 1, bias=False)  # from skip tokens
        self.value_skip = conv_op(channels, channels, 1, bias=False)
        self.value_decoder = conv_op(channels, channels, 1, bias=False)
        # confidence-gate strengths; zero start = MK-UNet behaviour at initialisation
        self.gamma_decoder = nn.Parameter(torch.zeros(1))
        self.gamma_skip = nn.Parameter(torch.zeros(1))

    def forward(self, decoder: torch.Tensor, skip: torch.Tensor, uncertainty: torch.Tensor):
        b, c, *spatial = decoder.shape
        grid = token_grid(spatial, self.max_tokens)
        # ATen's op itself: F's wrapper branches on a grid of ones, which a graph traced on a computed grid cannot
        pool = torch.ops.aten._adaptive_avg_pool2d if self.dim == 2 else torch.ops.aten._adaptive_avg_pool3d
        tokens = lambda t: t.flatten(2).transpose(1, 2)  # (B, C, *grid) -> (B, N, C)
        dec_t, skip_t = tokens(pool(decoder, grid)), tokens(pool(skip, grid))
        # the 1x1 convs applied to the tokens as matmuls: the same products, without layout copies
        project = lambda conv, t: F.linear(t, conv.weight.flatten(1))
        q, k = project(self.query, dec_t), project(self.key, skip_t)
        v_skip, v_dec = project(self.value_skip, skip_t), project(self.value_decoder, dec_t)

        n_tokens = q.shape[1]
        n_selected = torch.sym_max(1, round(self.rho * n_tokens))  # traced as a max, not a branch
        selected = pool(uncertainty, grid).flatten(1).topk(n_selected, dim=1).indices  # (B, n_sel)
        pick = lambda t: t.gather(1, selected[..., None].expand(-1, -1, t.shape[-1]))
        v_dec_sel = pick(v_dec)

        similarity = pick(q) @ k.transpose(1, 2) * self.scale  # (B, n_sel, N), shared by both directions
        decoder_update_sel = similarity.softmax(dim=-1) @ v_skip  # selected decoder tokens <- skip
        # skip tokens <- selected decoder; normalised over dim 1 in place of a softmax over a transposed copy
        skip_update = similarity.softmax(dim=1).transpose(1, 2) @ v_dec_sel
        decoder_update = torch.zeros_like(v_dec).scatter(
            1, selected[..., None].expand(-1, -1, c), decoder_update_sel)

        grid_map = lambda t: t.transpose(1, 2).reshape(b, c, *grid)
        # nearest: an unselected token's zero update stays zero on its own footprint
        decoder_update = F.interpolate(grid_map(decoder_update), size=spatial, mode="nearest")
        skip_update = F.interpolate(grid_map(skip_update), size=spatial, mode=self.interpolation, align_corners=False)
        gate = uncertainty if self.confidence_gate else 1.0
        decoder = decoder + self.gamma_decoder * gate * decoder_update
        skip = skip + self.gamma_skip * gate * skip_update
        return decoder, skip


class ORDERDecoder(MKUNetDecoder):
    """MK-UNet decoder with selective bidirectional skip attention on its last ``attention_stages`` skip merges."""

    def __init__(self, encoder, num_classes, conv_op, norm_op, norm_op_kwargs, expansion_factor, dw_kernel_sizes,
                 gag_kernel_size, deep_supervision, attention_stages: int = 2, attention_dim: int = 8,
                 rho: float = 0.25, max_tokens: int = 1024, multilabel: bool = False, confidence_gate: bool = True):
        super().__init__(encoder, num_classes, conv_op, norm_op, norm_op_kwargs, expansion_factor, dw_kernel_sizes,
                         gag_kernel_size, deep_supervision)
        n = len(self.blocks)
        # the stages that merge a skip are 0 .. n-2; attention on the last ones that also carry a head (j >= 1)
        self.attention_stage_ids = [j for j in range(max(1, n - 1 - attention_stages), n - 1)]
        self.skip_attention = nn.ModuleDict({
            str(j): SelectiveBidirectionalSkipAttention(conv_op, self.out_widths[j], attention_dim, rho, max_tokens,
                                                        confidence_gate)
            for j in self.attention_stage_ids})
        self.multilabel = multilabel

    def head_needed(self, stage: int) -> bool:
        # the confidence gate reads the stage's own head, with or without deep supervision
        return super().head_needed(stage) or stage in self.attention_stage_ids

    def fuse(self, stage, x, skip, logits):
        skip = self.gates[stage](x, skip)
        if stage in self.attention_stage_ids:
            # the gate follows the head without teaching it to be uncertain
            u = prediction_uncertainty(logits.detach(), self.multilabel)
            x, skip = self.skip_attention[str(stage)](x, skip, u)
        return x + skip


class ORDER(MKUNet):
    """ORDER with nnU-Net's architecture interface; the MK-UNet backbone widths default to ``ORDER_FEATURES``."""

    decoder_class = ORDERDecoder

    def __init__(self, input_channels: int, num_classes: int, n_stages: int = 5,
                 features_per_stage: Sequence[int] = ORDER_FEATURES, conv_op: Type[_ConvNd] = nn.Conv2d,
                 strides: Sequence = (1, 2, 2, 2, 2), attention_stages: int = 2, attention_dim: int = 8,
                 rho: float = 0.25, max_tokens: int = 1024, multilabel: bool = False,
                 confidence_gate: bool = True, **kwargs):
        super().__init__(input_channels, num_classes, n_stages, features_per_stage, conv_op, strides,
                         attention_stages=attention_stages, attention_dim=attention_dim, rho=rho,
                         max_tokens=max_tokens, multilabel=multilabel, confidence_gate=confidence_gate, **kwargs)
