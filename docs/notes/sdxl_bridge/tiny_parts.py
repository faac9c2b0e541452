"""Copied from the pack's tests/fixtures/tiny_diffusers.py: the tiny byte-level CLIP tokenizer."""

from __future__ import annotations


def byte_characters() -> list[str]:
    """The 256 printable characters byte-level BPE stands each byte for (GPT-2's table)."""
    keep = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), ord("ÿ") + 1))
    chars, extra = [], 0
    for b in range(256):
        if b in keep:
            chars.append(chr(b))
        else:
            chars.append(chr(256 + extra))
            extra += 1
    return chars


def tiny_tokenizer(max_length=16):
    """A byte-level CLIP tokenizer with no merges: every character is a token (vocab 512 + 2)."""
    from transformers import CLIPTokenizer

    chars = byte_characters()
    vocab = {c: i for i, c in enumerate(chars)}
    vocab.update({c + "</w>": len(chars) + i for i, c in enumerate(chars)})
    vocab["<|startoftext|>"] = len(vocab)
    vocab["<|endoftext|>"] = len(vocab)
    return CLIPTokenizer(vocab=vocab, merges=[], model_max_length=max_length)
