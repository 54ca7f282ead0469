"""Numerical parity of our encoder and masked-LM head with Hugging Face ``BertModel`` / ``BertForPreTraining``.

Our ``Encoder`` is meant to be BERT with a task embedding added: with the task embedding unused (``task_ids``
None) or zeroed, copying its weights into a ``BertModel`` of the same size must give the same hidden states,
whatever attention implementation HF uses. The masked-LM head must match ``cls.predictions`` at the masked
positions. Models are built from a ``BertConfig`` (no download) and kept tiny so the file runs in seconds.
"""

from __future__ import annotations

import pytest
import torch
from torch import nn

from ernie_cmtl.config import ModelConfig
from ernie_cmtl.model import Encoder, MaskedLMHead

transformers = pytest.importorskip("transformers")

VOCAB, HIDDEN, LAYERS, HEADS, FFN = 500, 64, 2, 4, 128
BATCH, LENGTH = 3, 17
ATOL, RTOL = 1e-5, 1e-4
ATTN_IMPLEMENTATIONS = ["eager", "sdpa"]


def model_config() -> ModelConfig:
    """The tiny encoder size every test here uses."""
    return ModelConfig(flavour="custom", hidden_size=HIDDEN, num_layers=LAYERS, num_heads=HEADS,
                       intermediate_size=FFN, vocab_size=VOCAB)


def bert_config(cfg: ModelConfig, attn_implementation: str) -> transformers.BertConfig:
    """A ``BertConfig`` of the same size as ``cfg`` (exact-erf GELU, same LayerNorm eps and dropout)."""
    return transformers.BertConfig(
        vocab_size=cfg.vocab_size, hidden_size=cfg.hidden_size, num_hidden_layers=cfg.num_layers,
        num_attention_heads=cfg.num_heads, intermediate_size=cfg.intermediate_size, hidden_act="gelu",
        max_position_embeddings=cfg.max_position, type_vocab_size=cfg.type_vocab_size,
        layer_norm_eps=cfg.layer_norm_eps, hidden_dropout_prob=cfg.dropout,
        attention_probs_dropout_prob=cfg.attention_dropout, attn_implementation=attn_implementation)


def randomize(module: nn.Module, seed: int) -> None:
    """Replace every parameter (LayerNorm scales and all biases included) by random values.

    Default init leaves biases at 0 and LayerNorm at (1, 0), which would hide a swapped or forgotten copy.
    """
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for param in {id(p): p for p in module.parameters()}.values():
            noise = torch.randn(param.shape, generator=generator)
            param.copy_(1.0 + 0.1 * noise if param.dim() == 1 and torch.all(param == 1) else 0.05 * noise)


def copy_encoder_to_hf(ours: Encoder, hf_bert: nn.Module) -> None:
    """Copy our encoder's weights into a ``transformers.BertModel`` of the same size (task embedding dropped).

    The fused ``qkv`` projection's output is ``[q; k; v]`` along the out dimension, each part laid out
    head-major exactly like HF's separate ``query``/``key``/``value``, so splitting it in three is the map.
    """
    with torch.no_grad():
        emb = hf_bert.embeddings
        emb.word_embeddings.weight.copy_(ours.embeddings.word.weight)
        emb.position_embeddings.weight.copy_(ours.embeddings.position.weight)
        emb.token_type_embeddings.weight.copy_(ours.embeddings.segment.weight)
        emb.LayerNorm.load_state_dict(ours.embeddings.norm.state_dict())
        for layer, hf_layer in zip(ours.layers, hf_bert.encoder.layer, strict=True):
            attn = hf_layer.attention
            for name, weight, bias in zip(("query", "key", "value"),
                                          layer.attention.qkv.weight.chunk(3, dim=0),
                                          layer.attention.qkv.bias.chunk(3, dim=0), strict=True):
                getattr(attn.self, name).weight.copy_(weight)
                getattr(attn.self, name).bias.copy_(bias)
            attn.output.dense.load_state_dict(layer.attention.out.state_dict())
            attn.output.LayerNorm.load_state_dict(layer.attention_norm.state_dict())
            hf_layer.intermediate.dense.load_state_dict(layer.ffn_in.state_dict())
            hf_layer.output.dense.load_state_dict(layer.ffn_out.state_dict())
            hf_layer.output.LayerNorm.load_state_dict(layer.ffn_norm.state_dict())


def random_inputs(seed: int, padded: bool) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Random ids, a 0/1 padding mask (all ones unless ``padded``) and two-segment ids, all [B, L]."""
    generator = torch.Generator().manual_seed(seed)
    input_ids = torch.randint(0, VOCAB, (BATCH, LENGTH), generator=generator)
    lengths = torch.tensor([LENGTH, LENGTH - 5, 4]) if padded else torch.full((BATCH,), LENGTH)
    attention_mask = (torch.arange(LENGTH)[None, :] < lengths[:, None]).long()
    segment_ids = (torch.arange(LENGTH)[None, :] >= (lengths[:, None] // 2)).long() * attention_mask
    return input_ids, attention_mask, segment_ids


@pytest.mark.parametrize("attn_implementation", ATTN_IMPLEMENTATIONS)
@pytest.mark.parametrize("padded", [False, True], ids=["unpadded", "padded"])
@pytest.mark.parametrize("task", ["no_task_ids", "zero_task_embedding"])
def test_encoder_matches_hf_bert(attn_implementation: str, padded: bool, task: str) -> None:
    torch.manual_seed(0)
    cfg = model_config()
    ours = Encoder(cfg)
    randomize(ours, seed=1)
    hf = transformers.BertModel(bert_config(cfg, attn_implementation), add_pooling_layer=False)
    assert hf.config._attn_implementation == attn_implementation
    copy_encoder_to_hf(ours, hf)
    ours.eval()
    hf.eval()

    input_ids, attention_mask, segment_ids = random_inputs(seed=2, padded=padded)
    task_ids = None
    if task == "zero_task_embedding":
        with torch.no_grad():
            ours.embeddings.task.weight.zero_()
        task_ids = torch.tensor([0, 3, 7])
    with torch.no_grad():
        got = ours(input_ids, attention_mask, segment_ids, task_ids)
        want = hf(input_ids=input_ids, attention_mask=attention_mask, token_type_ids=segment_ids).last_hidden_state

    keep = attention_mask.bool()
    assert got.shape == want.shape == (BATCH, LENGTH, HIDDEN)
    torch.testing.assert_close(got[keep], want[keep], atol=ATOL, rtol=RTOL)


@pytest.mark.parametrize("attn_implementation", ATTN_IMPLEMENTATIONS)
def test_default_segment_is_segment_zero(attn_implementation: str) -> None:
    """``segment_ids=None`` must mean all-zero segments, as HF's ``token_type_ids=None`` does."""
    torch.manual_seed(0)
    cfg = model_config()
    ours = Encoder(cfg)
    randomize(ours, seed=3)
    hf = transformers.BertModel(bert_config(cfg, attn_implementation), add_pooling_layer=False)
    copy_encoder_to_hf(ours, hf)
    ours.eval()
    hf.eval()
    input_ids, _, _ = random_inputs(seed=4, padded=False)
    with torch.no_grad():
        got = ours(input_ids)
        want = hf(input_ids=input_ids).last_hidden_state
        explicit = ours(input_ids, segment_ids=torch.zeros_like(input_ids))
    torch.testing.assert_close(got, want, atol=ATOL, rtol=RTOL)
    torch.testing.assert_close(got, explicit, atol=ATOL, rtol=RTOL)


@pytest.mark.parametrize("attn_implementation", ATTN_IMPLEMENTATIONS)
@pytest.mark.parametrize("padded", [False, True], ids=["unpadded", "padded"])
def test_masked_lm_head_matches_hf_predictions(attn_implementation: str, padded: bool) -> None:
    torch.manual_seed(0)
    cfg = model_config()
    ours = Encoder(cfg)
    head = MaskedLMHead(cfg, ours.embeddings.word)
    randomize(nn.ModuleList([ours, head]), seed=5)
    assert head.decoder_weight is ours.embeddings.word.weight  # still tied after randomizing

    hf = transformers.BertForPreTraining(bert_config(cfg, attn_implementation))
    copy_encoder_to_hf(ours, hf.bert)
    predictions = hf.cls.predictions
    with torch.no_grad():
        predictions.transform.dense.load_state_dict(head.dense.state_dict())
        predictions.transform.LayerNorm.load_state_dict(head.norm.state_dict())
        predictions.decoder.weight.copy_(head.decoder_weight)  # tied to HF's word embeddings: a no-op
        predictions.bias.copy_(head.bias)
    torch.testing.assert_close(predictions.decoder.bias, head.bias, atol=0.0, rtol=0.0)
    torch.testing.assert_close(predictions.decoder.weight, hf.bert.embeddings.word_embeddings.weight,
                               atol=0.0, rtol=0.0)
    ours.eval()
    head.eval()
    hf.eval()

    input_ids, attention_mask, segment_ids = random_inputs(seed=6, padded=padded)
    valid = attention_mask.reshape(-1).nonzero().squeeze(1)
    generator = torch.Generator().manual_seed(7)
    positions = valid[torch.randperm(valid.numel(), generator=generator)[:9]].sort().values
    with torch.no_grad():
        got = head(ours(input_ids, attention_mask, segment_ids), positions)
        hf_logits = hf(input_ids=input_ids, attention_mask=attention_mask,
                       token_type_ids=segment_ids).prediction_logits
    want = hf_logits.reshape(-1, VOCAB)[positions]
    assert got.shape == (positions.numel(), VOCAB)
    torch.testing.assert_close(got, want, atol=ATOL, rtol=RTOL)


def test_task_embedding_is_used() -> None:
    torch.manual_seed(0)
    cfg = model_config()
    ours = Encoder(cfg)
    randomize(ours, seed=8)
    ours.eval()
    input_ids, attention_mask, segment_ids = random_inputs(seed=9, padded=True)
    keep = attention_mask.bool()
    with torch.no_grad():
        without = ours(input_ids, attention_mask, segment_ids)
        task_zero = ours(input_ids, attention_mask, segment_ids, torch.zeros(BATCH, dtype=torch.long))
        task_one = ours(input_ids, attention_mask, segment_ids, torch.ones(BATCH, dtype=torch.long))
        mixed = ours(input_ids, attention_mask, segment_ids, torch.tensor([0, 1, 0]))

    assert ours.embeddings.task.weight.abs().sum() > 0
    assert (task_zero - without)[keep].abs().max() > 1e-3, "a non-zero task embedding must change the states"
    assert (task_one - task_zero)[keep].abs().max() > 1e-3, "different task ids must give different states"
    # The task id is per sequence: each row sees only its own id.
    torch.testing.assert_close(mixed[0], task_zero[0], atol=ATOL, rtol=RTOL)
    torch.testing.assert_close(mixed[1], task_one[1], atol=ATOL, rtol=RTOL)
    torch.testing.assert_close(mixed[2], task_zero[2], atol=ATOL, rtol=RTOL)
