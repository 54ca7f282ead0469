"""The ERNIE encoder and the task heads: embeddings, Transformer layers, heads. Nothing else lives here.

A BERT-style post-LayerNorm Transformer whose input embedding is the sum of token, segment, position and
*task* embeddings (ERNIE 2.0: the task id tells the shared encoder which task a batch belongs to). Attention
goes through ``F.scaled_dot_product_attention``. Heads belong to tasks; the masked-LM head decodes only the
masked positions, which is where most of a small model's step time would otherwise go.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ernie_cmtl.config import ModelConfig


class Embeddings(nn.Module):
    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        self.word = nn.Embedding(cfg.vocab_size, cfg.hidden_size)
        self.position = nn.Embedding(cfg.max_position, cfg.hidden_size)
        self.segment = nn.Embedding(cfg.type_vocab_size, cfg.hidden_size)
        self.task = nn.Embedding(cfg.num_task_embeddings, cfg.hidden_size)
        self.norm = nn.LayerNorm(cfg.hidden_size, eps=cfg.layer_norm_eps)
        self.dropout = nn.Dropout(cfg.dropout)

    def forward(self, input_ids: Tensor, segment_ids: Tensor | None, task_ids: Tensor | None) -> Tensor:
        length = input_ids.shape[1]
        x = self.word(input_ids) + self.position.weight[:length]
        x = x + (self.segment(segment_ids) if segment_ids is not None else self.segment.weight[0])
        if task_ids is not None:  # one task id per sequence: [B] -> broadcast over positions
            x = x + self.task(task_ids).unsqueeze(1)
        return self.dropout(self.norm(x))


class SelfAttention(nn.Module):
    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        self.num_heads = cfg.num_heads
        self.qkv = nn.Linear(cfg.hidden_size, 3 * cfg.hidden_size)
        self.out = nn.Linear(cfg.hidden_size, cfg.hidden_size)
        self.attention_dropout = cfg.attention_dropout

    def forward(self, x: Tensor, attn_mask: Tensor | None) -> Tensor:
        batch, length, hidden = x.shape
        q, k, v = self.qkv(x).view(batch, length, 3, self.num_heads, -1).permute(2, 0, 3, 1, 4)
        dropout = self.attention_dropout if self.training else 0.0
        y = F.scaled_dot_product_attention(q, k, v, attn_mask=attn_mask, dropout_p=dropout)
        return self.out(y.transpose(1, 2).reshape(batch, length, hidden))


class Layer(nn.Module):
    """Post-LN Transformer layer (as BERT), so weights map one-to-one onto ``BertModel``."""

    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        self.attention = SelfAttention(cfg)
        self.attention_norm = nn.LayerNorm(cfg.hidden_size, eps=cfg.layer_norm_eps)
        self.ffn_in = nn.Linear(cfg.hidden_size, cfg.intermediate_size)
        self.ffn_out = nn.Linear(cfg.intermediate_size, cfg.hidden_size)
        self.ffn_norm = nn.LayerNorm(cfg.hidden_size, eps=cfg.layer_norm_eps)
        self.dropout = nn.Dropout(cfg.dropout)

    def forward(self, x: Tensor, attn_mask: Tensor | None) -> Tensor:
        x = self.attention_norm(x + self.dropout(self.attention(x, attn_mask)))
        return self.ffn_norm(x + self.dropout(self.ffn_out(F.gelu(self.ffn_in(x)))))


class Encoder(nn.Module):
    """Token + segment + position + task embeddings, then ``num_layers`` Transformer layers."""

    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        if cfg.vocab_size <= 0:
            raise ValueError("model.vocab_size must be set (it comes from the tokenizer)")
        self.config = cfg
        self.embeddings = Embeddings(cfg)
        self.layers = nn.ModuleList(Layer(cfg) for _ in range(cfg.num_layers))
        self.apply(self._init_weights)

    def _init_weights(self, module: nn.Module) -> None:
        std = self.config.initializer_range
        if isinstance(module, nn.Linear):
            nn.init.normal_(module.weight, std=std)
            if module.bias is not None:
                nn.init.zeros_(module.bias)
        elif isinstance(module, nn.Embedding):
            nn.init.normal_(module.weight, std=std)
        elif isinstance(module, nn.LayerNorm):
            nn.init.ones_(module.weight)
            nn.init.zeros_(module.bias)

    def forward(self, input_ids: Tensor, attention_mask: Tensor | None = None,
                segment_ids: Tensor | None = None, task_ids: Tensor | None = None) -> Tensor:
        """[B, L] ids (+ [B, L] 0/1 padding mask, [B, L] segments, [B] task ids) -> [B, L, H] states."""
        attn_mask = None
        # Dropping an all-ones mask lets SDPA pick its mask-free kernels, but reading the mask is a host sync
        # on an accelerator: there the mask is always passed (no sync; only the kernel choice), on the CPU it
        # is read for free.
        if attention_mask is not None and (attention_mask.device.type != "cpu" or not bool(attention_mask.all())):
            attn_mask = attention_mask.bool()[:, None, None, :]  # True = may attend
        x = self.embeddings(input_ids, segment_ids, task_ids)
        for layer in self.layers:
            x = layer(x, attn_mask)
        return x


class MaskedLMHead(nn.Module):
    """Transform + decoder tied to the word embeddings, applied only at the masked positions."""

    def __init__(self, cfg: ModelConfig, word_embeddings: nn.Embedding) -> None:
        super().__init__()
        self.dense = nn.Linear(cfg.hidden_size, cfg.hidden_size)
        self.norm = nn.LayerNorm(cfg.hidden_size, eps=cfg.layer_norm_eps)
        self.decoder_weight = word_embeddings.weight  # tied
        self.bias = nn.Parameter(torch.zeros(cfg.vocab_size))
        nn.init.normal_(self.dense.weight, std=cfg.initializer_range)
        nn.init.zeros_(self.dense.bias)

    def forward(self, hidden: Tensor, positions: Tensor) -> Tensor:
        """``positions``: flat indices into the [B * L] token grid -> [n_masked, vocab] logits."""
        h = hidden.reshape(-1, hidden.shape[-1]).index_select(0, positions)
        h = self.norm(F.gelu(self.dense(h)))
        return F.linear(h, self.decoder_weight, self.bias)


class TokenClassificationHead(nn.Module):
    """Per-token labels, computed only at the positions that carry a label (flat indices)."""

    def __init__(self, cfg: ModelConfig, num_labels: int) -> None:
        super().__init__()
        self.dropout = nn.Dropout(cfg.dropout)
        self.classifier = nn.Linear(cfg.hidden_size, num_labels)
        nn.init.normal_(self.classifier.weight, std=cfg.initializer_range)
        nn.init.zeros_(self.classifier.bias)

    def forward(self, hidden: Tensor, positions: Tensor) -> Tensor:
        h = hidden.reshape(-1, hidden.shape[-1]).index_select(0, positions)
        return self.classifier(self.dropout(h))


class SequenceClassificationHead(nn.Module):
    """BERT-style pooler (dense + tanh on the first token) and a classifier. ``extra_features``: width of
    per-sequence features concatenated to the pooled state before the classifier (``PairMatchingHead``)."""

    def __init__(self, cfg: ModelConfig, num_labels: int, extra_features: int = 0) -> None:
        super().__init__()
        self.pooler = nn.Linear(cfg.hidden_size, cfg.hidden_size)
        self.dropout = nn.Dropout(cfg.dropout)
        self.classifier = nn.Linear(cfg.hidden_size + extra_features, num_labels)
        for linear in (self.pooler, self.classifier):
            nn.init.normal_(linear.weight, std=cfg.initializer_range)
            nn.init.zeros_(linear.bias)

    def forward(self, hidden: Tensor, extra: Tensor | None = None) -> Tensor:
        pooled = torch.tanh(self.pooler(hidden[:, 0]))
        if extra is not None:
            pooled = torch.cat([pooled, extra.to(pooled.dtype)], dim=-1)
        return self.classifier(self.dropout(pooled))


KNRM_KERNELS: tuple[tuple[float, float], ...] = (
    (1.0, 1e-3), (0.9, 0.1), (0.7, 0.1), (0.5, 0.1), (0.3, 0.1), (0.1, 0.1), (-0.1, 0.1), (-0.3, 0.1),
    (-0.5, 0.1), (-0.7, 0.1), (-0.9, 0.1))
"""(mean, width) of K-NRM's RBF kernels over cosine similarity: one exact-match kernel and ten soft ones."""


def soft_match_features(states: Tensor, mask_a: Tensor, mask_b: Tensor,
                        kernels: tuple[tuple[float, float], ...] = KNRM_KERNELS) -> Tensor:
    """Kernel pooling (K-NRM, Xiong et al. 2017) of the cosine similarities between the tokens of two
    segments of one sequence: for each token of A, each kernel's soft count of matching tokens in B, then
    log1p and the mean over A's tokens; the same from B to A. ``states`` [B, L, H]; boolean masks [B, L]
    -> [B, 2 * len(kernels)]. A segment with no tokens gives zeros."""
    unit = F.normalize(states.float(), dim=-1)
    similarity = unit @ unit.transpose(1, 2)  # [B, L, L]
    a, b = mask_a.float(), mask_b.float()
    a_sizes, b_sizes = a.sum(-1).clamp_min(1.0), b.sum(-1).clamp_min(1.0)
    from_a, from_b = [], []
    for mean, width in kernels:  # one [B, L, L] kernel matrix at a time, not [B, L, L, K]
        kernel = torch.exp(-((similarity - mean) ** 2) / (2 * width**2))
        from_a.append((torch.log1p((kernel * b[:, None, :]).sum(-1)) * a).sum(-1) / a_sizes)
        from_b.append((torch.log1p((kernel * a[:, :, None]).sum(1)) * b).sum(-1) / b_sizes)
    return torch.stack(from_a + from_b, dim=-1)


class PairMatchingHead(SequenceClassificationHead):
    """Output layer for inputs that are a pair of segments (``[CLS] a [SEP] b [SEP]``): the BERT pooler's
    [CLS] state beside soft-match features of the two segments (CEDR, MacAvaney et al. 2019: K-NRM kernel
    pooling of the A x B token similarities, here of the word embeddings, i.e. lexical overlap, and of the
    last layer). The match features are standardized by BatchNorm: their raw spread is ~0.01, too small for a
    classifier to pick up within a fine-tuning run. Segment A excludes [CLS].

    The match features are read without gradient: they are inputs computed from the encoder's current
    weights, like DrQA's exact-match features, and the encoder learns only through the [CLS] path. With the
    gradient let through (amplified by BatchNorm's 1/std), multi-task fine-tuning of 2 x 128 encoders stopped
    learning in some seeds: SST-2 stayed at its majority class (bench/compare_strategies.py, docs/FINETUNING.md).
    """

    def __init__(self, cfg: ModelConfig, num_labels: int) -> None:
        num_features = 2 * 2 * len(KNRM_KERNELS)  # (word embeddings, last layer) x (A -> B, B -> A)
        super().__init__(cfg, num_labels, extra_features=num_features)
        self.norm = nn.BatchNorm1d(num_features)

    def forward(self, hidden: Tensor, word_embeddings: Tensor, attention_mask: Tensor,  # type: ignore[override]
                segment_ids: Tensor) -> Tensor:
        real = attention_mask.bool()
        mask_a = real & (segment_ids == 0)
        mask_a[:, 0] = False
        mask_b = real & (segment_ids == 1)
        with torch.no_grad():
            match = torch.cat([soft_match_features(word_embeddings, mask_a, mask_b),
                               soft_match_features(hidden, mask_a, mask_b)], dim=-1)
        if self.training and match.shape[0] == 1:  # batch statistics need two rows: use the running ones
            match = F.batch_norm(match, self.norm.running_mean, self.norm.running_var, self.norm.weight,
                                 self.norm.bias, training=False, eps=self.norm.eps)
        else:
            match = self.norm(match)
        return super().forward(hidden, match)


class PretrainingModel(nn.Module):
    """The shared encoder plus one head per task. ``forward`` runs one task's batch and returns its logits."""

    def __init__(self, encoder: Encoder, heads: dict[str, nn.Module]) -> None:
        super().__init__()
        self.encoder = encoder
        self.heads = nn.ModuleDict(heads)

    def forward(self, task: str, batch: dict[str, Tensor]) -> Tensor:
        hidden = self.encoder(batch["input_ids"], batch.get("attention_mask"), batch.get("segment_ids"),
                              batch.get("task_ids"))
        head = self.heads[task]
        if "positions" in batch:
            return head(hidden, batch["positions"])
        return head(hidden)


def encoder_flops_per_token(cfg: ModelConfig, seq_len: int) -> float:
    """Forward FLOPs per token of the shared encoder, counting matmuls only (as in PaLM's MFU)."""
    h = cfg.hidden_size
    per_layer = 2 * (4 * h * h + 2 * h * cfg.intermediate_size) + 2 * 2 * seq_len * h  # linears + attention
    return float(cfg.num_layers * per_layer)


def mlm_decoder_flops(cfg: ModelConfig) -> float:
    """Forward FLOPs of the masked-LM head (transform + vocabulary decoder) for one decoded token."""
    h = cfg.hidden_size
    return 2.0 * (h * h + h * cfg.vocab_size)


def flops_per_token(cfg: ModelConfig, seq_len: int, decoded_fraction: float = 1.0) -> float:
    """Training FLOPs per token (forward + backward = 3x forward) of the encoder plus a masked-LM head.

    ``decoded_fraction``: share of tokens that pass through the vocabulary decoder (0.15 for masked-LM with
    masked-only decoding). Other heads declare their own cost (``PretrainTask.head_flops_per_token``)."""
    return 3.0 * (encoder_flops_per_token(cfg, seq_len) + decoded_fraction * mlm_decoder_flops(cfg))


def count_parameters(module: nn.Module) -> int:
    """Distinct parameters (tied weights counted once)."""
    return sum(p.numel() for p in {id(p): p for p in module.parameters()}.values())


__all__ = ["Encoder", "MaskedLMHead", "TokenClassificationHead", "SequenceClassificationHead",
           "KNRM_KERNELS", "soft_match_features", "PairMatchingHead",
           "PretrainingModel", "encoder_flops_per_token", "mlm_decoder_flops", "flops_per_token",
           "count_parameters"]
