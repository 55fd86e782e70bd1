"""A randomly initialised 2-layer Llama folder with a word-level tokenizer (no pad token): the
causal-LM model the CLI and export tests calibrate."""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

import torch


def write_tiny_llama(
    folder: Path,
    lines: Iterable[str],
    *,
    hidden_size: int,
    intermediate_size: int,
    tie_word_embeddings: bool = False,
) -> Path:
    """Write the model (seed 0) and a tokenizer whose vocabulary is the words of ``lines``."""
    import transformers
    from tokenizers import Tokenizer, models, pre_tokenizers

    words = sorted({w for line in lines for w in line.lower().split()})
    vocab = {w: i for i, w in enumerate(["[UNK]", "</s>", *words])}
    backend = Tokenizer(models.WordLevel(vocab, unk_token="[UNK]"))
    backend.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    tokenizer = transformers.PreTrainedTokenizerFast(
        tokenizer_object=backend, unk_token="[UNK]", eos_token="</s>"
    )
    tokenizer.save_pretrained(folder)
    config = transformers.LlamaConfig(
        vocab_size=len(vocab),
        hidden_size=hidden_size,
        intermediate_size=intermediate_size,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=64,
        eos_token_id=1,
        bos_token_id=1,
        tie_word_embeddings=tie_word_embeddings,
    )
    torch.manual_seed(0)
    transformers.LlamaForCausalLM(config).save_pretrained(folder)
    return folder
