"""The AR probe's model: a class-conditional decoder-only Transformer over tokenizer codes (LlamaGen c2i GPT).

The class embedding is the first position (a prefix), positions are learned 1D embeddings, and one extra class
id is the "no class" of classifier-free guidance: training replaces the label by it with probability
``class_dropout``. A product-quantised tokenizer's folded token (``parts`` codes at one position, ImageFolder) is
embedded as the sum of its parts' embeddings and predicted by one head per part, all from the same position, so
the sequence is no longer than the token grid; its loss is the parts' cross-entropies summed (nats per token).
The blocks are the project's pre-norm Transformer blocks, so the probe is sharded, checkpointed and compiled by
the same ``parallelize`` code as the tokenizers.

With ``scales`` (a multi-scale tokenizer's sides, coarsest first: VAR, TokenFlow, ImageFolder) it predicts the next
scale, as VAR does, instead of the next token: every token of a scale at once, from the coarser scales. The input
at scale k's positions is the sum of the coarser scales' token embeddings, each upsampled (bilinear) to the finest
grid, then area-downsampled to scale k's grid (VAR's interpolated cumulative feature map, here from the probe's
own embeddings, not the tokenizer's codes); the first scale's input is the class. Attention is block-causal: a
position sees its own scale and the coarser ones. Position i predicts token i, so the loss is ``token_nll``
unchanged, and sampling takes one forward pass per scale.
"""

from __future__ import annotations

from typing import ClassVar

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.utils.flop_counter import FlopCounterMode

from scaling.core.config.schema import PROBE_SIZES
from scaling.models.quantizers import fold_ids, part_ids, resize_grid, scale_blocks
from scaling.models.transformer import Transformer, TransformerBlock, init_linear


class ClassConditionalGPT(nn.Module):
    unit_types: ClassVar[tuple[type[nn.Module], ...]] = (TransformerBlock,)  # FSDP units

    def __init__(self, size: str, vocab: int, num_classes: int, seq_len: int, dropout: float = 0.0, parts: int = 1,
                 scales: tuple[int, ...] = ()):
        super().__init__()
        if scales and sum(s * s for s in scales) != seq_len:
            raise ValueError(f"scales {list(scales)} hold {sum(s * s for s in scales)} tokens, not seq_len {seq_len}")
        dim, layers, heads = PROBE_SIZES[size]
        self.scales = tuple(scales)  # next-scale prediction over these sides; empty: next-token
        self.vocab, self.num_classes, self.seq_len, self.depth = vocab, num_classes, seq_len, layers
        self.parts = parts  # vocab: each part's codebook size
        self.tok_emb = nn.Embedding(vocab * parts, dim)  # part p's codes at rows p * vocab ...
        self.cls_emb = nn.Embedding(num_classes + 1, dim)  # the last id: no class (CFG)
        self.pos_emb = nn.Parameter(torch.empty(1, seq_len, dim))
        self.drop = nn.Dropout(dropout)
        self.transformer = Transformer(dim, layers, heads, causal=not scales)
        self.head = nn.Linear(dim, vocab * parts, bias=False)

    @property
    def null_class(self) -> int:
        return self.num_classes

    def init_weights(self) -> None:
        for emb in (self.tok_emb, self.cls_emb):
            nn.init.normal_(emb.weight, std=0.02)
        nn.init.normal_(self.pos_emb, std=0.02)
        self.transformer.init_weights()
        init_linear(self.head)

    def _embed(self, tokens: torch.Tensor) -> torch.Tensor:
        """(B, L) token ids -> (B, L, dim): the sum of their parts' embeddings."""
        digits = torch.stack(part_ids(tokens, self.vocab, self.parts), dim=-1)
        return self.tok_emb(digits + self.vocab * torch.arange(self.parts, device=tokens.device)).sum(-2)

    def _inputs(self, tokens: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """(B, L, dim): position i's input, from which it predicts token i. Next-token: [class, t_0 .. t_{L-2}]
        embedded; next-scale: the class, then each scale's input from the coarser scales (module docstring)."""
        if self.scales:
            x = self._scale_inputs(tokens, labels)
        else:
            x = torch.cat([self.cls_emb(labels)[:, None], self._embed(tokens[:, :-1])], dim=1)
        return self.drop(x + self.pos_emb[:, : x.shape[1]])

    def _scale_inputs(self, tokens: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        blocks, final = scale_blocks(self.scales), self.scales[-1]
        emb = self._embed(tokens)
        pieces = [self.cls_emb(labels)[:, None].expand(-1, blocks[0][1], -1)]
        total = None
        for (start, end, side), nxt in zip(blocks, self.scales[1:]):
            up = resize_grid(emb[:, start:end].transpose(1, 2).unflatten(-1, (side, side)), final)
            total = up if total is None else total + up
            pieces.append(resize_grid(total, nxt).flatten(2).transpose(1, 2))
        return torch.cat(pieces, dim=1)

    def attention_mask(self, length: int, device: torch.device) -> torch.Tensor | None:
        """Next-scale: the (length, length) block-causal attention mask (a position sees its own scale and the
        coarser ones); next-token: None (causal)."""
        if not self.scales:
            return None
        block = torch.tensor([b for b, s in enumerate(self.scales) for _ in range(s * s)][:length], device=device)
        return block[None, :] <= block[:, None]

    def forward(self, tokens: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """Logits (B, L, parts, vocab) of each token (B, L) from what precedes it, for classes ``labels`` (B,)."""
        mask = self.attention_mask(tokens.shape[1], tokens.device)
        h, _ = self.transformer(self._inputs(tokens, labels), mask=mask)
        return self.head(h).unflatten(-1, (self.parts, self.vocab))

    def features(self, tokens: torch.Tensor, layer: int | None = None) -> torch.Tensor:
        """Mean-pooled hidden states of block ``layer`` (default: the middle one), read without the label."""
        labels = torch.full((tokens.shape[0],), self.null_class, device=tokens.device)
        _, tapped = self.transformer(self._inputs(tokens, labels), tap=layer or max(1, self.depth // 2),
                                     mask=self.attention_mask(tokens.shape[1], tokens.device))
        return tapped.mean(1)

    @torch.no_grad()
    def generate(self, labels: torch.Tensor, cfg_scale: float = 1.0, temperature: float = 1.0, top_k: int = 0,
                 generator: torch.Generator | None = None) -> torch.Tensor:
        """Sample (B, L) tokens for ``labels``, token by token with a key/value cache (next-token) or scale by
        scale (next-scale); ``cfg_scale`` > 1 mixes in the unconditional logits: uncond + scale * (cond - uncond)."""
        guided = cfg_scale != 1.0
        cond = torch.cat([labels, torch.full_like(labels, self.null_class)]) if guided else labels
        if self.scales:
            return self._generate_by_scale(cond, len(labels), cfg_scale, temperature, top_k, generator)
        cache: list[dict[str, torch.Tensor]] = [{} for _ in range(self.depth)]
        x = self.cls_emb(cond)[:, None] + self.pos_emb[:, :1]
        out = []
        for i in range(self.seq_len):
            h, _ = self.transformer(x, cache=cache)
            logits = _guided(self.head(h[:, -1]).float().unflatten(-1, (self.parts, self.vocab)), cfg_scale)
            digits = [_sample(logits[:, p] / temperature, top_k, generator) for p in range(self.parts)]
            token = fold_ids(digits, self.vocab)
            out.append(token)
            if i + 1 < self.seq_len:
                step = torch.cat([token, token]) if guided else token
                x = self._embed(step[:, None]) + self.pos_emb[:, i + 1 : i + 2]
        return torch.stack(out, dim=1)

    def _generate_by_scale(self, cond: torch.Tensor, n: int, cfg_scale: float, temperature: float, top_k: int,
                           generator: torch.Generator | None) -> torch.Tensor:
        """Each scale's tokens at once from one pass over the scales so far; ``cond``: the labels, followed by as
        many null labels when guided. The tokens of later scales are zeros meanwhile: no input before them reads
        them."""
        seq = torch.zeros(len(cond), self.seq_len, dtype=torch.long, device=cond.device)
        for start, end, _ in scale_blocks(self.scales):
            h, _ = self.transformer(self._inputs(seq, cond)[:, :end], mask=self.attention_mask(end, cond.device))
            logits = _guided(self.head(h[:, start:end]).float().unflatten(-1, (self.parts, self.vocab)), cfg_scale)
            digits = [_sample(logits[:, :, p].flatten(0, 1) / temperature, top_k, generator).view(n, end - start)
                      for p in range(self.parts)]
            token = fold_ids(digits, self.vocab)
            seq[:, start:end] = token.repeat(len(cond) // n, 1)
        return seq[:n]


def _guided(logits: torch.Tensor, cfg_scale: float) -> torch.Tensor:
    """Logits of a batch of conditional rows followed by as many unconditional ones, mixed by classifier-free
    guidance (uncond + scale * (cond - uncond)); unguided (scale 1), the batch as it is."""
    if cfg_scale == 1.0:
        return logits
    c, u = logits.chunk(2)
    return u + cfg_scale * (c - u)


def _sample(logits: torch.Tensor, top_k: int, generator: torch.Generator | None) -> torch.Tensor:
    if top_k:
        kth = logits.topk(top_k, dim=-1).values[:, -1:]
        logits = logits.masked_fill(logits < kth, float("-inf"))
    probs = F.softmax(logits, dim=-1)
    return torch.multinomial(probs, 1, generator=generator).squeeze(1)


def token_nll(logits: torch.Tensor, tokens: torch.Tensor) -> torch.Tensor:
    """Nats per token, (B, L), of (B, L) token ids under (B, L, parts, vocab) logits: its parts' summed."""
    parts, vocab = logits.shape[-2:]
    digits = torch.stack(part_ids(tokens, vocab, parts), dim=-1)
    return F.cross_entropy(logits.float().movedim(-1, 1), digits, reduction="none").sum(-1)


def sequence_flops(size: str, vocab: int, num_classes: int, seq_len: int, parts: int = 1,
                   scales: tuple[int, ...] = ()) -> int:
    """Forward + backward FLOPs of one training sequence through the probe (its loss included), counted on the
    meta device as ``scaling plan`` counts a tokenizer's."""
    with torch.device("meta"):
        model = ClassConditionalGPT(size, vocab, num_classes, seq_len, parts=parts, scales=scales)
        tokens, labels = torch.zeros(1, seq_len, dtype=torch.long), torch.zeros(1, dtype=torch.long)
    with FlopCounterMode(display=False) as counter:
        token_nll(model(tokens, labels), tokens).mean().backward()
    return counter.get_total_flops()
