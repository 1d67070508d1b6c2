"""TiTok-style 1D tokenizer (Yu et al. 2024): a ViT over image patches and K learnable latent tokens, a
quantiser on the latents, a ViT from the quantised latents and one query per patch back to pixels.

The encoder's patch embedding is its input projection of the flattened patches (a strided conv written as a
linear map). The decoder's per-patch queries play TiTok's mask token plus position embedding. TiTok's
published models decode to proxy codes of a separate VQGAN decoder; here the decoder predicts the patches'
pixels directly (a linear map, then depth-to-space), so there is no CNN and the counts are the two ViTs'.
Sizes: ``TITOK_SIZES`` (S is 512 wide with 8 layers). Builds on the meta device; ``init_weights`` sets values.

``model.flow_decoder`` makes the decoder a rectified-flow decoder conditioned on the tokens, as FlexTok's: its
per-patch queries also take the patches of a noisy image x_t = (1 - t) x + t e and the time. By default
(``model.flow_prediction`` "x") its network predicts the clean image x, from which the velocity e - x is
(x_t - x) / t; with "v" it predicts the velocity and x = x_t - t v. A tiny network cannot carry the noise of its
input to a velocity output precisely: predicting the velocity, its samples' PSNR hardly rises with the tokens kept,
though their texture scores a lower rFID. Training returns the image estimate as the reconstruction, so the
trainer's reconstruction loss is the x-prediction objective (the velocity loss weighted by t^2). Decoding
integrates from noise (t = 1, seeded: the same tokens decode to the same image) to t = 0 in
``model.flow_decode_steps`` Euler steps, so a short prefix decodes to a plausible image rather than the average of
the images it could be.
"""

from __future__ import annotations

from typing import ClassVar

import torch
import torch.nn as nn
import torch.nn.functional as F

from scaling.core.config import Config, ModelConfig, QuantizerConfig
from scaling.models.family import (Family, Sizes, always, encoder_decoder_summary, nested_summary,
                                   quantizer_summary)
from scaling.models.gigatok import TRANSFORMER_SIZES, TokenTransformer
from scaling.models.nested import NestedDropout
from scaling.models.quantizers import QuantOut, bottleneck_in_dim, build_quantizer
from scaling.models.transformer import TimeEmbedding, TransformerBlock

# TiTok's ViTs: GigaTok's table except S, which has 8 layers in TiTok (6 in GigaTok).
TITOK_SIZES: Sizes = TRANSFORMER_SIZES | {"S": (512, 8, 8)}


class TiTok(nn.Module):
    """Image -> (B, num_tokens) ids -> image. ``model.nested_dropout`` trains on random token prefixes;
    ``decode(z_q, keep=k)`` and ``decode_indices`` of a (B, k) prefix decode the first k tokens."""

    unit_types: ClassVar[tuple[type[nn.Module], ...]] = (TransformerBlock,)  # FSDP units

    def __init__(self, model: ModelConfig, quantizer: QuantizerConfig, image_size: int):
        super().__init__()
        self.patch, self.grid, self.num_tokens = model.patch_size, image_size // model.patch_size, model.num_tokens
        pixels, patches = 3 * self.patch ** 2, self.grid ** 2
        self.encoder = TokenTransformer(model.encoder_size, pixels, patches, num_queries=self.num_tokens, joint=True,
                                        out_dim=bottleneck_in_dim(quantizer), sizes=TITOK_SIZES)
        self.quantizer = build_quantizer(quantizer)
        self.nested = NestedDropout(quantizer.code_dim) if model.nested_dropout else None
        self.flow_steps = model.flow_decode_steps if model.flow_decoder else 0
        self.flow_prediction = model.flow_prediction
        self.decoder = TokenTransformer(model.decoder_size, quantizer.code_dim, self.num_tokens, num_queries=patches,
                                        joint=True, out_dim=pixels, sizes=TITOK_SIZES,
                                        query_dim=pixels if self.flow_steps else 0)
        self.time_emb = TimeEmbedding(self.decoder.width) if self.flow_steps else None
        self.init_weights()

    def init_weights(self) -> None:
        self.encoder.init_weights()
        self.decoder.init_weights()
        if self.time_emb is not None:
            self.time_emb.init_weights()
        self.quantizer.reset_parameters()
        if self.nested is not None:
            self.nested.reset_parameters()

    def components(self) -> dict[str, list[nn.Module]]:
        """Parameter groups for counting: the ViTs are the encoder and decoder Transformers (no CNN)."""
        quantizer = [self.quantizer] + ([self.nested] if self.nested is not None else [])
        decoder = [self.decoder] + ([self.time_emb] if self.time_emb is not None else [])
        return {"encoder_transformer": [self.encoder], "quantizer": quantizer, "decoder_transformer": decoder}

    def encode(self, x: torch.Tensor, entropy_temperature: float | None = None) -> QuantOut:
        patches = F.pixel_unshuffle(x, self.patch).flatten(2).transpose(1, 2)  # (B, g*g, 3*p*p)
        latents, _ = self.encoder(patches)
        return self.quantizer(latents.transpose(1, 2), entropy_temperature)  # (B, code_dim, K)

    def decode(self, z_q: torch.Tensor, keep: int | torch.Tensor | None = None) -> torch.Tensor:
        """Image from (B, code_dim, K) quantised tokens; ``keep``: the first ``keep`` only (nested dropout)."""
        if self.nested is not None:
            z_q = self.nested(z_q, keep)
        if self.flow_steps:
            return self._flow_decode(z_q)
        return self._image(self.decoder(z_q.transpose(1, 2))[0])

    def _image(self, patches: torch.Tensor) -> torch.Tensor:
        """(B, g*g, 3*p*p) patches -> (B, 3, H, W)."""
        return F.pixel_shuffle(patches.transpose(1, 2).unflatten(2, (self.grid, self.grid)), self.patch)

    def _denoise(self, z_q: torch.Tensor, x_t: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """The flow decoder's estimate of the clean image from the noisy image ``x_t`` at times ``t`` (B,), given
        the tokens."""
        noisy = F.pixel_unshuffle(x_t, self.patch).flatten(2).transpose(1, 2)
        patches, _ = self.decoder(z_q.transpose(1, 2), query_inputs=noisy, query_cond=self.time_emb(t))
        out = self._image(patches)
        return out if self.flow_prediction == "x" else x_t - t.to(out.dtype)[:, None, None, None] * out

    def _flow_decode(self, z_q: torch.Tensor) -> torch.Tensor:
        """Euler from seeded noise at t = 1 to the image at t = 0, the velocity (x_t - x) / t from the prediction x
        (the last step lands on the prediction itself)."""
        side = self.grid * self.patch
        noise = torch.Generator(z_q.device).manual_seed(0)
        x = torch.randn((len(z_q), 3, side, side), generator=noise, device=z_q.device, dtype=z_q.dtype)
        times = torch.linspace(1.0, 0.0, self.flow_steps + 1, device=z_q.device)
        for t, t_next in zip(times[:-1], times[1:]):
            x = x + (t_next - t) / t * (x - self._denoise(z_q, x, t.expand(len(x))))
        return x

    def decode_indices(self, indices: torch.Tensor) -> torch.Tensor:
        """Image from ids; with nested dropout, (B, k) ids of a prefix decode too."""
        z_q = self.quantizer.lookup(indices)
        return self.decode(z_q if self.nested is None else self.nested.complete(z_q, self.num_tokens))

    def forward(self, x: torch.Tensor, entropy_temperature: float | None = None) -> tuple[torch.Tensor, QuantOut]:
        """(recon, QuantOut); with nested dropout in training, ``QuantOut.kept`` is each image's prefix. With a flow
        decoder in training, recon is its prediction of the image from x_t at a random time (from the global RNG,
        checkpointed like nested dropout's)."""
        q = self.encode(x, entropy_temperature)
        if self.nested is not None and self.training:
            q.kept = self.nested.sample(len(x), self.num_tokens, x.device)
        if not (self.flow_steps and self.training):
            return self.decode(q.z_q, keep=q.kept), q
        z_q = self.nested(q.z_q, q.kept) if self.nested is not None else q.z_q
        t = torch.rand(len(x), device=x.device)
        tb = t.to(x.dtype)[:, None, None, None]
        x_t = (1 - tb) * x + tb * torch.randn_like(x)
        return self._denoise(z_q, x_t, t), q


def build(cfg: Config) -> TiTok:
    return TiTok(cfg.model, cfg.quantizer, cfg.data.image_size)


def describe(cfg: Config) -> str:
    m = cfg.model
    return (f"titok, {m.patch_size}x{m.patch_size} patches, {encoder_decoder_summary(TITOK_SIZES, cfg)}, "
            f"{m.num_tokens} 1D tokens{nested_summary(m)}, {quantizer_summary(cfg.quantizer)}")


FAMILY = Family(name="titok", build=build, describe=describe, sizes=TITOK_SIZES,
                options={"model.nested_dropout": always, "model.flow_decoder": always,
                         "quantizer.parts": always})
