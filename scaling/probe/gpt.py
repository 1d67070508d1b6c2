"""The AR probe's model: a class-conditional decoder-only Transformer over tokenizer codes (LlamaGen c2i GPT).

The class embedding is the first position (a prefix), positions are learned 1D embeddings, and one extra class
id is the "no class" of classifier-free guidance: training replaces the label by it with probability
``class_dropout``. A product-quantised tokenizer's folded token (``parts`` codes at one position, ImageFolder) is
embedded as the sum of its parts' embeddings and predicted by one head per part, all from the same position, so
the sequence is no longer than the token grid; its loss is the parts' cross-entropies summed (nats per token).
The blocks are the project's pre-norm Transformer blocks, so the probe is sharded, checkpointed and compiled by
the same ``parallelize`` code as the tokenizers.
"""

from __future__ import annotations

from typing import ClassVar

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.utils.flop_counter import FlopCounterMode

from scaling.core.config.schema import PROBE_SIZES
from scaling.models.quantizers import fold_ids, part_ids
from scaling.models.transformer import Transformer, TransformerBlock, init_linear


class ClassConditionalGPT(nn.Module):
    unit_types: ClassVar[tuple[type[nn.Module], ...]] = (TransformerBlock,)  # FSDP units

    def __init__(self, size: str, vocab: int, num_classes: int, seq_len: int, dropout: float = 0.0, parts: int = 1):
        super().__init__()
        dim, layers, heads = PROBE_SIZES[size]
        self.vocab, self.num_classes, self.seq_len, self.depth = vocab, num_classes, seq_len, layers
        self.parts = parts  # vocab: each part's codebook size
        self.tok_emb = nn.Embedding(vocab * parts, dim)  # part p's codes at rows p * vocab ...
        self.cls_emb = nn.Embedding(num_classes + 1, dim)  # the last id: no class (CFG)
        self.pos_emb = nn.Parameter(torch.empty(1, seq_len, dim))
        self.drop = nn.Dropout(dropout)
        self.transformer = Transformer(dim, layers, heads, causal=True)
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
        """[class, t_0 .. t_{L-2}] embedded: position i predicts token i."""
        x = torch.cat([self.cls_emb(labels)[:, None], self._embed(tokens[:, :-1])], dim=1)
        return self.drop(x + self.pos_emb[:, : x.shape[1]])

    def forward(self, tokens: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """Next-token logits (B, L, parts, vocab) for tokens (B, L) of classes ``labels`` (B,)."""
        h, _ = self.transformer(self._inputs(tokens, labels))
        return self.head(h).unflatten(-1, (self.parts, self.vocab))

    def features(self, tokens: torch.Tensor, layer: int | None = None) -> torch.Tensor:
        """Mean-pooled hidden states of block ``layer`` (default: the middle one), read without the label."""
        labels = torch.full((tokens.shape[0],), self.null_class, device=tokens.device)
        _, tapped = self.transformer(self._inputs(tokens, labels), tap=layer or max(1, self.depth // 2))
        return tapped.mean(1)

    @torch.no_grad()
    def generate(self, labels: torch.Tensor, cfg_scale: float = 1.0, temperature: float = 1.0, top_k: int = 0,
                 generator: torch.Generator | None = None) -> torch.Tensor:
        """Sample (B, L) tokens for ``labels`` with a key/value cache; ``cfg_scale`` > 1 mixes in the
        unconditional logits: uncond + scale * (cond - uncond)."""
        guided = cfg_scale != 1.0
        cond = torch.cat([labels, torch.full_like(labels, self.null_class)]) if guided else labels
        cache: list[dict[str, torch.Tensor]] = [{} for _ in range(self.depth)]
        x = self.cls_emb(cond)[:, None] + self.pos_emb[:, :1]
        out = []
        for i in range(self.seq_len):
            h, _ = self.transformer(x, cache=cache)
            logits = self.head(h[:, -1]).float().unflatten(-1, (self.parts, self.vocab))
            if guided:
                c, u = logits.chunk(2)
                logits = u + cfg_scale * (c - u)
            digits = [_sample(logits[:, p] / temperature, top_k, generator) for p in range(self.parts)]
            token = fold_ids(digits, self.vocab)
            out.append(token)
            if i + 1 < self.seq_len:
                step = torch.cat([token, token]) if guided else token
                x = self._embed(step[:, None]) + self.pos_emb[:, i + 1 : i + 2]
        return torch.stack(out, dim=1)


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


def sequence_flops(size: str, vocab: int, num_classes: int, seq_len: int, parts: int = 1) -> int:
    """Forward + backward FLOPs of one training sequence through the probe (its loss included), counted on the
    meta device as ``scaling plan`` counts a tokenizer's."""
    with torch.device("meta"):
        model = ClassConditionalGPT(size, vocab, num_classes, seq_len, parts=parts)
        tokens, labels = torch.zeros(1, seq_len, dtype=torch.long), torch.zeros(1, dtype=torch.long)
    with FlopCounterMode(display=False) as counter:
        token_nll(model(tokens, labels), tokens).mean().backward()
    return counter.get_total_flops()
