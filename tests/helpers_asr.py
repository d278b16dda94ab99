"""A tiny random Whisper model saved to a folder, for speech-recognition tests with no network.

The tokenizer is byte-level BPE with no merges (256 byte tokens), Whisper's special tokens and its
1501 timestamp tokens, so generation with timestamps runs exactly as with a real checkpoint; the
text it writes is random.
"""

from __future__ import annotations

from pathlib import Path

SPECIALS = (
    "<|endoftext|>",
    "<|startoftranscript|>",
    "<|en|>",
    "<|translate|>",
    "<|transcribe|>",
    "<|startoflm|>",
    "<|startofprev|>",
    "<|nocaptions|>",
    "<|notimestamps|>",
)


def _byte_symbols() -> list[str]:
    """GPT-2's byte -> printable character table (what byte-level BPE vocabularies use)."""
    keep = [*range(ord("!"), ord("~") + 1), *range(0xA1, 0xAC + 1), *range(0xAE, 0xFF + 1)]
    table = {b: chr(b) for b in keep}
    extra = 0
    for b in range(256):
        if b not in table:
            table[b] = chr(256 + extra)
            extra += 1
    return [table[b] for b in range(256)]


def write_tiny_whisper(folder: Path, *, seed: int = 0) -> Path:
    """Save a random 2-layer Whisper (d_model 16) with processor and generation config."""
    import torch
    from tokenizers import AddedToken
    from transformers import (
        GenerationConfig,
        WhisperConfig,
        WhisperFeatureExtractor,
        WhisperForConditionalGeneration,
        WhisperProcessor,
        WhisperTokenizer,
    )

    tokenizer = WhisperTokenizer(vocab={c: i for i, c in enumerate(_byte_symbols())}, merges=[])
    tokenizer.add_special_tokens({"additional_special_tokens": list(SPECIALS[1:])})
    tokenizer.add_tokens([AddedToken(f"<|{i * 0.02:.2f}|>", normalized=False) for i in range(1501)])
    ids = {t: tokenizer.convert_tokens_to_ids(t) for t in SPECIALS}
    eot, sot = ids["<|endoftext|>"], ids["<|startoftranscript|>"]
    config = WhisperConfig(
        vocab_size=len(tokenizer),
        num_mel_bins=80,
        d_model=16,
        encoder_layers=1,
        decoder_layers=1,
        encoder_attention_heads=2,
        decoder_attention_heads=2,
        encoder_ffn_dim=32,
        decoder_ffn_dim=32,
        max_target_positions=64,
        pad_token_id=eot,
        bos_token_id=eot,
        eos_token_id=eot,
        decoder_start_token_id=sot,
    )
    torch.manual_seed(seed)
    model = WhisperForConditionalGeneration(config)
    model.generation_config = GenerationConfig(
        decoder_start_token_id=sot,
        eos_token_id=eot,
        pad_token_id=eot,
        bos_token_id=eot,
        no_timestamps_token_id=ids["<|notimestamps|>"],
        is_multilingual=False,
        max_initial_timestamp_index=50,
        max_length=48,
        suppress_tokens=[],
        begin_suppress_tokens=[eot],
    )
    processor = WhisperProcessor(
        feature_extractor=WhisperFeatureExtractor(feature_size=80), tokenizer=tokenizer
    )
    model.save_pretrained(folder)
    processor.save_pretrained(folder)
    return folder
