"""LlamaGen VQ-16 style 2D CNN tokenizer: ResNet encoder, VQ, ResNet decoder (no attention)."""

from __future__ import annotations

from typing import ClassVar

import torch
import torch.nn as nn
import torch.nn.functional as F

from scaling.core.config import Config, ModelConfig, QuantizerConfig
from scaling.models.family import Family, always, quantizer_summary
from scaling.models.quantizers import QuantOut, bottleneck_in_dim, build_quantizer


class ResBlock(nn.Module):
    def __init__(self, cin: int, cout: int, dropout: float, groups: int):
        super().__init__()
        self.norm1, self.conv1 = nn.GroupNorm(groups, cin, eps=1e-6), nn.Conv2d(cin, cout, 3, padding=1)
        self.norm2, self.conv2 = nn.GroupNorm(groups, cout, eps=1e-6), nn.Conv2d(cout, cout, 3, padding=1)
        self.dropout = nn.Dropout(dropout)
        self.skip = nn.Conv2d(cin, cout, 1) if cin != cout else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.conv1(F.silu(self.norm1(x)))
        h = self.conv2(self.dropout(F.silu(self.norm2(h))))
        return self.skip(x) + h


class Downsample(nn.Module):
    def __init__(self, ch: int):
        super().__init__()
        self.conv = nn.Conv2d(ch, ch, 3, stride=2, padding=0)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(F.pad(x, (0, 1, 0, 1)))  # asymmetric pad keeps the grid aligned


class Upsample(nn.Module):
    def __init__(self, ch: int):
        super().__init__()
        self.conv = nn.Conv2d(ch, ch, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(F.interpolate(x, scale_factor=2.0, mode="nearest"))


class Encoder(nn.Module):
    def __init__(self, cfg: ModelConfig):
        super().__init__()
        ch, mults = cfg.base_channels, cfg.channel_mult
        self.conv_in = nn.Conv2d(3, ch, 3, padding=1)
        blocks: list[nn.Module] = []
        cin = ch
        for level, mult in enumerate(mults):
            cout = ch * mult
            for _ in range(cfg.num_res_blocks):
                blocks.append(ResBlock(cin, cout, cfg.dropout, cfg.norm_groups))
                cin = cout
            if level < len(mults) - 1:
                blocks.append(Downsample(cin))
        self.blocks = nn.Sequential(*blocks)
        self.mid = nn.Sequential(ResBlock(cin, cin, cfg.dropout, cfg.norm_groups), ResBlock(cin, cin, cfg.dropout, cfg.norm_groups))
        self.norm_out = nn.GroupNorm(cfg.norm_groups, cin, eps=1e-6)
        self.conv_out = nn.Conv2d(cin, cfg.z_channels, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.mid(self.blocks(self.conv_in(x)))
        return self.conv_out(F.silu(self.norm_out(h)))


class Decoder(nn.Module):
    def __init__(self, cfg: ModelConfig):
        super().__init__()
        ch, mults = cfg.base_channels, cfg.channel_mult
        cin = ch * mults[-1]
        self.conv_in = nn.Conv2d(cfg.z_channels, cin, 3, padding=1)
        self.mid = nn.Sequential(ResBlock(cin, cin, cfg.dropout, cfg.norm_groups), ResBlock(cin, cin, cfg.dropout, cfg.norm_groups))
        blocks: list[nn.Module] = []
        for level, mult in reversed(list(enumerate(mults))):
            cout = ch * mult
            for _ in range(cfg.num_res_blocks + 1):
                blocks.append(ResBlock(cin, cout, cfg.dropout, cfg.norm_groups))
                cin = cout
            if level > 0:
                blocks.append(Upsample(cin))
        self.blocks = nn.Sequential(*blocks)
        self.norm_out = nn.GroupNorm(cfg.norm_groups, cin, eps=1e-6)
        self.conv_out = nn.Conv2d(cin, 3, 3, padding=1)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        h = self.blocks(self.mid(self.conv_in(z)))
        return self.conv_out(F.silu(self.norm_out(h)))


class VQTokenizer(nn.Module):
    """Image -> (B, H/f, W/f) token ids -> image."""

    unit_types: ClassVar[tuple[type[nn.Module], ...]] = (ResBlock,)  # FSDP units: the residual blocks

    def __init__(self, model: ModelConfig, quantizer: QuantizerConfig):
        super().__init__()
        self.encoder = Encoder(model)
        self.quant_conv = nn.Conv2d(model.z_channels, bottleneck_in_dim(quantizer), 1)
        self.quantizer = build_quantizer(quantizer)
        self.post_quant_conv = nn.Conv2d(quantizer.code_dim, model.z_channels, 1)
        self.decoder = Decoder(model)
        self.init_weights()

    def init_weights(self) -> None:
        """PyTorch's default initialisation, callable again after ``to_empty`` from the meta device."""
        for m in self.modules():
            if isinstance(m, (nn.Conv2d, nn.GroupNorm)):
                m.reset_parameters()
        self.quantizer.reset_parameters()

    def components(self) -> dict[str, list[nn.Module]]:
        """Parameter groups for counting (the names every family uses)."""
        return {"encoder_cnn": [self.encoder], "quantizer": [self.quant_conv, self.quantizer, self.post_quant_conv],
                "decoder_cnn": [self.decoder]}

    def encode(self, x: torch.Tensor, entropy_temperature: float | None = None) -> QuantOut:
        return self.quantizer(self.quant_conv(self.encoder(x)), entropy_temperature)

    def decode(self, z_q: torch.Tensor) -> torch.Tensor:
        return self.decoder(self.post_quant_conv(z_q))

    def decode_indices(self, indices: torch.Tensor) -> torch.Tensor:
        return self.decode(self.quantizer.lookup(indices))

    def forward(self, x: torch.Tensor, entropy_temperature: float | None = None) -> tuple[torch.Tensor, QuantOut]:
        q = self.encode(x, entropy_temperature)
        return self.decode(q.z_q), q


def build(cfg: Config) -> VQTokenizer:
    return VQTokenizer(cfg.model, cfg.quantizer)


def describe(cfg: Config) -> str:
    return f"{cfg.model.family}, {cfg.model.downsample}x downsampling, {quantizer_summary(cfg.quantizer)}"


FAMILY = Family(name="vqgan", build=build, describe=describe,
                options={"quantizer.scales": always, "quantizer.parts": always})
