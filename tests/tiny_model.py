"""A tiny, randomly initialised Qwen2 chat model, built in a second, for tests.

`build_tiny_qwen2(directory)` writes a complete transformers checkpoint (config,
safetensors weights, tokenizer, chat template) that loads through the same
`from_pretrained` path as a real hub model, so the hf backend (and later the training
code) is tested end to end without downloading anything.

- The tokenizer is a byte-level BPE trained on the repository's own koan files, so Rust
  source tokenizes into a few hundred real subwords instead of single bytes, and any
  text (non-ASCII included) round-trips through encode/decode.
- It has Qwen's control tokens and a ChatML chat template, so prompts look like the
  ones a real Qwen2.5-Coder model is given.
- The weights are random (seeded): the model's answers are gibberish, but they are a
  deterministic function of the seed, the prompt and the decoding settings, which is
  all the backend tests need.
"""

from __future__ import annotations

from pathlib import Path

__all__ = ["build_tiny_qwen2", "CHAT_TEMPLATE", "KOANS", "SPECIAL_TOKENS"]

KOANS = Path(__file__).resolve().parents[1] / "koans"

ENDOFTEXT, IM_START, IM_END = "<|endoftext|>", "<|im_start|>", "<|im_end|>"
SPECIAL_TOKENS = [ENDOFTEXT, IM_START, IM_END]
VOCAB_SIZE = 768
# Qwen2's pre-tokenizer split (transformers' `models/qwen2/tokenization_qwen2.py`).
QWEN2_PRETOKENIZE_REGEX = (
    r"""(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"""
)

# Qwen2.5's ChatML layout without its default system prompt: every message is
# `<|im_start|>ROLE\nCONTENT<|im_end|>\n`, and the generation prompt opens an assistant turn.
CHAT_TEMPLATE = (
    "{%- for message in messages %}"
    "{{- '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>' + '\\n' }}"
    "{%- endfor %}"
    "{%- if add_generation_prompt %}{{- '<|im_start|>assistant\\n' }}{%- endif %}"
)


def rust_corpus() -> list[str]:
    """The raw text of every koan file: Rust code (buggy, fixed, tests) in TOML strings.
    The TOML around the code is kept; a few extra tokens for `=` and quotes cost nothing."""
    texts = [path.read_text(encoding="utf-8") for path in sorted(KOANS.rglob("*.toml"))]
    if not texts:
        raise FileNotFoundError(f"no koan files under {KOANS} to train the tiny tokenizer on")
    return texts


def build_tokenizer(chat_template: bool = True):
    """A byte-level BPE tokenizer trained on the koans, wrapped for transformers."""
    from tokenizers import Regex, Tokenizer, decoders, models, normalizers, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    # transformers 5 reloads a qwen2 checkpoint's tokenizer as `Qwen2Tokenizer`, which
    # keeps only the vocabulary and merges of tokenizer.json and imposes Qwen's own
    # normalizer and pre-tokenizer. Training with exactly those makes the reloaded
    # tokenizer split text the way the trained one does.
    backend = Tokenizer(models.BPE())
    backend.normalizer = normalizers.NFC()
    backend.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Split(Regex(QWEN2_PRETOKENIZE_REGEX), behavior="isolated", invert=False),
        pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
    ])
    backend.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=VOCAB_SIZE,
        special_tokens=SPECIAL_TOKENS,
        # All 256 byte symbols, so text the koans never contain still encodes.
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    backend.train_from_iterator(rust_corpus(), trainer=trainer)
    # Like Qwen's chat models: a turn ends with <|im_end|>, padding is <|endoftext|>.
    return PreTrainedTokenizerFast(
        tokenizer_object=backend,
        eos_token=IM_END,
        pad_token=ENDOFTEXT,
        chat_template=CHAT_TEMPLATE if chat_template else None,
    )


def build_tiny_qwen2(directory: Path, seed: int = 0, *, chat_template: bool = True, hidden_size: int = 64,
                     num_attention_heads: int = 4, num_key_value_heads: int = 2) -> Path:
    """Write a tiny Qwen2 checkpoint (2 layers, hidden size 64 unless asked) into `directory`.

    `seed` fixes the random weights, so two builds with the same seed answer alike and
    builds with different seeds do not. `chat_template=False` leaves the tokenizer
    without a template, like a base model's. Returns `directory`.
    """
    import torch
    from transformers import Qwen2Config, Qwen2ForCausalLM

    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    tokenizer = build_tokenizer(chat_template=chat_template)
    config = Qwen2Config(
        vocab_size=len(tokenizer),
        hidden_size=hidden_size,
        num_hidden_layers=2,
        num_attention_heads=num_attention_heads,
        num_key_value_heads=num_key_value_heads,
        intermediate_size=2 * hidden_size,
        max_position_embeddings=4096,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        bos_token_id=None,
    )
    torch.manual_seed(seed)
    model = Qwen2ForCausalLM(config)
    model.generation_config.eos_token_id = tokenizer.eos_token_id
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    model.save_pretrained(directory)
    tokenizer.save_pretrained(directory)
    return directory
