"""LoRA fine-tuning on SFT records, and the generic training loop beneath it.

    config = TrainConfig.from_table(pyproject_table["tool"]["sleepy"]["train"], "pyproject.toml: [tool.sleepy.train]")
    result = train_lora("Qwen/Qwen2.5-Coder-1.5B-Instruct", read_records("sft.jsonl", kinds=("sft",)), config, out_dir)

Three layers, each usable alone:

- `encode_sft(tokenizer, record, max_length)` turns one SFT record into token ids and
  labels, rendered exactly as inference renders a prompt (the tokenizer's chat
  template, control tokens inside messages encoded as plain text), with the loss on
  the assistant's answer only.
- `train_parameters(model, tokenizer, records, parameters, config)` is the training
  loop. It optimises exactly the tensors it is given and nothing else, so it serves
  LoRA (the adapter's A and B matrices) as well as any other parameter-efficient
  method that wraps modules and hands over its own tensors.
- `train_lora(base_model, records, config, out_dir)` loads a base model, wraps it with
  a peft LoRA adapter, trains the adapter with `train_parameters` and saves it (peft's
  safetensors layout, which `PeftModel.from_pretrained`, the hf backend and Ollama's
  `ADAPTER` read), with `train_log.json` and, when matplotlib is installed, `loss.png`.

Choices, and why:

- Sampling. Uniform sampling walks the records in a fresh seeded shuffle each epoch, so
  every record is seen equally often. `weighted=True` draws each batch with
  `WeightedSampler` (with replacement, probability proportional to
  `metadata.weight`): a `critical` record (10x) is trained on ten times as often as a
  `good` one (1x). Both are functions of `seed` alone, and `TrainLog.draws` counts
  how often each record was drawn.
- Schedule. The learning rate rises linearly from 0 over `warmup` steps, then decays
  to 0 at the last step (`cosine`, `linear`) or stays at `lr` (`constant`).
- Optimiser. AdamW without weight decay (decaying LoRA matrices toward zero only
  shrinks the adapter), gradients clipped to norm 1.0. Parameters the loop is not
  given are frozen while it runs (their `requires_grad` is restored afterwards), so
  no gradient memory is spent on them and they cannot change.
- Precision. On CUDA the forward pass runs under bf16 autocast (the trainable
  tensors stay fp32; peft upcasts adapter weights); on the CPU everything is fp32.
- Determinism. The loop seeds torch (dropout) and its sampler with `seed`, so on the
  CPU the same seed gives bit-identical losses.
"""

from __future__ import annotations

import importlib.util
import json
import math
import random
import time
import warnings
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, NamedTuple

from .records import WeightedSampler

if TYPE_CHECKING:  # torch, transformers and peft are imported only when training
    import torch

__all__ = [
    "TrainConfig", "TrainLog", "TrainResult", "TrainingError", "encode_sft", "train_parameters", "train_lora",
    "IGNORE_INDEX", "SCHEDULES", "DTYPES",
]

IGNORE_INDEX = -100  # label of tokens that carry no loss (the prompt, padding)
SCHEDULES = ("cosine", "linear", "constant")
DTYPES = ("auto", "bf16", "fp16", "fp32")
Progress = Callable[[int, int, float, float, float], None]


class TrainingError(ValueError):
    """Training cannot run as asked (no GPU for 4-bit, a record too long, ...); the
    message says what to change."""


# -- configuration ---------------------------------------------------------------------

@dataclass(frozen=True)
class TrainConfig:
    """Hyperparameters of a LoRA run (the keys of `[tool.sleepy.train]`).

    rank            8       LoRA rank r of each adapted matrix
    alpha           16      LoRA scaling numerator (the update is scaled by alpha / rank)
    dropout         0.05    dropout on the adapter's input
    target_modules  q_proj, k_proj, v_proj, o_proj  modules that get an adapter (a list;
                            or one string, which peft reads as a regex or "all-linear")
    steps           200     optimiser steps
    lr              2e-4    peak learning rate
    batch_size      4       records per step
    warmup          10      steps of linear warmup from 0
    schedule        cosine  after warmup: cosine or linear decay to 0, or constant
    seed            0       seeds the sampler, dropout and the adapter's initialisation
    max_length      1024    tokens per record; longer prompts lose their beginning
    weighted        false   draw records in proportion to metadata.weight
    load_in_4bit    false   QLoRA: the frozen base in 4-bit NF4 (CUDA and bitsandbytes only)
    dtype           auto    base weights: auto (bf16 on CUDA, fp32 on the CPU), bf16, fp16, fp32
    """

    rank: int = 8
    alpha: float = 16
    dropout: float = 0.05
    target_modules: tuple[str, ...] | str = ("q_proj", "k_proj", "v_proj", "o_proj")
    steps: int = 200
    lr: float = 2e-4
    batch_size: int = 4
    warmup: int = 10
    schedule: str = "cosine"
    seed: int = 0
    max_length: int = 1024
    weighted: bool = False
    load_in_4bit: bool = False
    dtype: str = "auto"

    def __post_init__(self):
        # Direct construction gets the same checks as a pyproject table.
        for item in fields(self):
            try:
                value = _CHECKS[item.name](getattr(self, item.name))
            except ValueError as error:
                raise ValueError(f"TrainConfig {item.name}: {error}") from None
            object.__setattr__(self, item.name, value)

    @classmethod
    def from_table(cls, table: dict, where: str, base: TrainConfig | None = None) -> TrainConfig:
        """A config from a `[tool.sleepy.train]`-style table over `base` (default: the
        defaults). Keys may be spelled with '-' or '_' (`batch-size`, `batch_size`).
        An unknown key or a bad value raises ValueError naming `where` and the key."""
        if not isinstance(table, dict):
            raise ValueError(f"{where}: must be a table, got {type(table).__name__}")
        known = {item.name for item in fields(cls)}
        values: dict[str, Any] = {}
        spelled: dict[str, str] = {}
        for key, raw in table.items():
            name = str(key).replace("-", "_")
            if name not in known:
                keys = ", ".join(sorted(n.replace("_", "-") for n in known))
                raise ValueError(f"{where}: unknown key {key!r}; known keys: {keys}")
            if name in spelled:
                raise ValueError(f"{where}: {key!r} and {spelled[name]!r} are the same key; give it once")
            spelled[name] = key
            try:
                values[name] = _CHECKS[name](raw)
            except ValueError as error:
                raise ValueError(f"{where}: {key} {error}") from None
        merged = replace(base or cls(), **values)
        if merged.warmup > merged.steps:
            raise ValueError(f"{where}: warmup ({merged.warmup}) is longer than steps ({merged.steps})")
        return merged

    def to_dict(self) -> dict:
        """Plain JSON values (tuples as lists), for train_log.json and content addressing."""
        data = asdict(self)
        if isinstance(data["target_modules"], tuple):
            data["target_modules"] = list(data["target_modules"])
        return data


def _whole(minimum: int) -> Callable[[object], int]:
    def check(value) -> int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ValueError(f"must be a whole number, got {value!r}")
        if value < minimum:
            raise ValueError(f"must be at least {minimum}, got {value}")
        return value
    return check


def _number(low: float, high: float = math.inf, *, low_open: bool = False, high_open: bool = False):
    def check(value) -> float:
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
            raise ValueError(f"must be a number, got {value!r}")
        if value < low or (low_open and value == low) or value > high or (high_open and value == high):
            lo, hi = "(" if low_open else "[", ")" if high_open or high == math.inf else "]"
            raise ValueError(f"must lie in {lo}{low:g}, {high:g}{hi}, got {value!r}")
        return float(value)
    return check


def _flag(value) -> bool:
    if not isinstance(value, bool):
        raise ValueError(f"must be true or false, got {value!r}")
    return value


def _choice(choices: tuple[str, ...]):
    def check(value) -> str:
        if value not in choices:
            raise ValueError(f"must be one of {', '.join(choices)}, got {value!r}")
        return value
    return check


def _modules(value) -> tuple[str, ...] | str:
    if isinstance(value, str) and value.strip():
        return value
    if isinstance(value, (list, tuple)) and value and all(isinstance(v, str) and v.strip() for v in value):
        return tuple(value)
    raise ValueError(f"must be a non-empty list of module names (or one string), got {value!r}")


_CHECKS: dict[str, Callable[[object], object]] = {
    "rank": _whole(1), "alpha": _number(0, low_open=True), "dropout": _number(0, 1, high_open=True),
    "target_modules": _modules, "steps": _whole(1), "lr": _number(0, low_open=True), "batch_size": _whole(1),
    "warmup": _whole(0), "schedule": _choice(SCHEDULES), "seed": _whole(0), "max_length": _whole(2),
    "weighted": _flag, "load_in_4bit": _flag, "dtype": _choice(DTYPES),
}


# -- encoding --------------------------------------------------------------------------

def _render_ids(tokenizer, messages: list[dict], *, generation_prompt: bool) -> list[int]:
    """Token ids of `messages` as inference renders them (hf backend `encode_prompt`)."""
    if tokenizer.chat_template:
        encoded = tokenizer.apply_chat_template(messages, add_generation_prompt=generation_prompt, tokenize=True,
                                                return_dict=True, sanitize_control_tokens=True)
        return list(encoded["input_ids"])
    from ..models.base import Message
    from ..models.hf import fallback_prompt

    prompt = messages if generation_prompt else messages[:-1]
    text = fallback_prompt(Message(m["role"], m["content"]) for m in prompt)
    if generation_prompt:
        return list(tokenizer(text, add_special_tokens=False, split_special_tokens=True)["input_ids"])
    # The whole conversation: the transcript, the answer, then the end-of-sequence token
    # (a real one; the text itself has its control tokens spelled out, as at inference).
    ids = list(tokenizer(text + messages[-1]["content"], add_special_tokens=False,
                         split_special_tokens=True)["input_ids"])
    return ids + ([tokenizer.eos_token_id] if tokenizer.eos_token_id is not None else [])


class _Encoded(NamedTuple):
    ids: list[int]
    labels: list[int]
    truncated: bool  # the prompt lost its beginning to max_length
    aligned: bool  # the prompt's rendering was a prefix of the conversation's


def _encode(tokenizer, record: dict, max_length: int) -> _Encoded:
    messages = record.get("messages") if isinstance(record, dict) else None
    if (not isinstance(messages, list) or len(messages) < 2 or not all(isinstance(m, dict) for m in messages)
            or messages[-1].get("role") != "assistant"):
        raise TrainingError(f"{_label(record)}: an SFT record needs 'messages' ending with the assistant's answer")
    messages = [{"role": m["role"], "content": m["content"]} for m in messages]
    full = _render_ids(tokenizer, messages, generation_prompt=False)
    prompt = _render_ids(tokenizer, messages[:-1], generation_prompt=True)
    aligned = full[:len(prompt)] == prompt
    if aligned:
        boundary = len(prompt)
    else:
        # A template that renders earlier turns differently once an answer follows, or a
        # token merged across the boundary: the loss starts where the renderings differ.
        boundary = 0
        while boundary < min(len(full), len(prompt)) and full[boundary] == prompt[boundary]:
            boundary += 1
    answer = len(full) - boundary
    if answer < 1:
        raise TrainingError(f"{_label(record)}: the assistant's answer renders to no tokens")
    truncated = False
    if len(full) > max_length:
        if answer >= max_length:
            raise TrainingError(f"{_label(record)}: the answer alone is {answer} tokens, max_length is {max_length}; "
                                "raise max_length or drop the record")
        full = full[len(full) - max_length:]
        truncated = True
    labels = [IGNORE_INDEX] * (len(full) - answer) + full[len(full) - answer:]
    return _Encoded(full, labels, truncated, aligned)


def encode_sft(tokenizer, record: dict, max_length: int) -> tuple[list[int], list[int]]:
    """`(input_ids, labels)` of one SFT record; labels are -100 on the prompt.

    The conversation is rendered with the tokenizer's chat template exactly as
    inference renders a prompt (`apply_chat_template`, control tokens inside messages
    encoded as plain text); without a template, the hf backend's plain transcript
    (`fallback_prompt`) followed by the answer and the end-of-text token.

    The answer starts where the prompt rendered with `add_generation_prompt=True` (the
    system and user turns plus the opening of the assistant's turn) ends: that
    rendering is checked to be a prefix of the whole conversation's ids, and the
    labels are the ids from there on, the template's end-of-turn tokens included (the
    model must learn to stop). If it is no prefix (a template that renders history
    differently once an answer follows, or a token merged across the boundary), the
    loss starts where the two renderings first differ: everything before is surely
    prompt, and the answer is learned whole, with possibly a tail of the prompt
    (`TrainLog.unaligned` counts such records).

    A conversation longer than `max_length` loses tokens from the start of the prompt
    (the system prompt first), so the answer and its end of turn are always learned
    whole, next to the end of the prompt (the code and diagnostics); a record whose
    answer alone does not fit raises TrainingError."""
    encoded = _encode(tokenizer, record, max_length)
    return encoded.ids, encoded.labels


def _label(record) -> str:
    metadata = record.get("metadata", {}) if isinstance(record, dict) else {}
    if not isinstance(metadata, dict):
        metadata = {}
    return f"record {metadata.get('variant') or metadata.get('source_koan') or '?'}"


# -- the training loop -----------------------------------------------------------------

@dataclass
class TrainLog:
    """What a run did: the loss and learning rate of every step, the tokens it read
    (non-padding), its wall time, how often each record was drawn, and its config."""

    losses: list[float] = field(default_factory=list)
    learning_rates: list[float] = field(default_factory=list)
    tokens: int = 0
    seconds: float = 0.0
    config: dict = field(default_factory=dict)
    draws: list[int] = field(default_factory=list)
    truncated: int = 0  # records whose prompt lost its beginning to max_length
    unaligned: int = 0  # records whose prompt rendering was no prefix of the conversation's
    device: str = "cpu"

    @property
    def steps_per_second(self) -> float:
        return len(self.losses) / self.seconds if self.seconds else 0.0

    def to_dict(self) -> dict:
        return {**asdict(self), "steps": len(self.losses)}


def _batches(records: Sequence[dict], config: TrainConfig) -> Iterator[list[int]]:
    """Indices of the records of each step: a seeded shuffle per epoch, or weighted draws."""
    if config.weighted:
        proxies = [{"metadata": {"weight": _weight(r)}, "index": i} for i, r in enumerate(records)]
        sampler = WeightedSampler(proxies, seed=config.seed)
        while True:
            yield [p["index"] for p in sampler.draw(config.batch_size)]
    shuffler = random.Random(config.seed)
    order: list[int] = []
    while True:
        batch = []
        while len(batch) < config.batch_size:
            if not order:
                order = list(range(len(records)))
                shuffler.shuffle(order)
            batch.append(order.pop())
        yield batch


def _weight(record: dict) -> float:
    try:
        return float(record["metadata"]["weight"])
    except (KeyError, TypeError, ValueError):
        raise TrainingError(f"{_label(record)}: weighted sampling needs a numeric metadata.weight") from None


def _learning_rate(step: int, config: TrainConfig) -> float:
    """The learning rate of 0-based `step`: linear warmup, then the schedule to 0."""
    if step < config.warmup:
        return config.lr * (step + 1) / (config.warmup + 1)
    if config.schedule == "constant":
        return config.lr
    span = max(1, config.steps - config.warmup)
    progress = min(1.0, (step - config.warmup) / span)
    if config.schedule == "linear":
        return config.lr * (1.0 - progress)
    return config.lr * 0.5 * (1.0 + math.cos(math.pi * progress))


def _pad(examples: list[tuple[list[int], list[int]]], pad_id: int, device) -> dict:
    import torch

    width = max(len(ids) for ids, _ in examples)
    input_ids = torch.full((len(examples), width), pad_id, dtype=torch.long)
    labels = torch.full((len(examples), width), IGNORE_INDEX, dtype=torch.long)
    attention = torch.zeros((len(examples), width), dtype=torch.long)
    for row, (ids, targets) in enumerate(examples):  # right padding: positions start at 0
        input_ids[row, :len(ids)] = torch.tensor(ids)
        labels[row, :len(targets)] = torch.tensor(targets)
        attention[row, :len(ids)] = 1
    return {"input_ids": input_ids.to(device), "labels": labels.to(device), "attention_mask": attention.to(device)}


def train_parameters(model, tokenizer, records: Sequence[dict], parameters: Iterable["torch.nn.Parameter"],
                     config: TrainConfig, progress: Progress | None = None) -> TrainLog:
    """Train `parameters` (and only them) of `model` on SFT `records` for `config.steps`.

    AdamW over `parameters`, LR warmup and schedule, right-padded batches with attention
    masks, seeded uniform or weighted sampling, gradients clipped to norm 1.0. The loss
    of a step is the mean over the answer tokens of its batch. Runs where the model is
    (its input embeddings): on CUDA under bf16 autocast (when the GPU has bf16), on the
    CPU in fp32. Every other parameter is frozen for the run and its `requires_grad`
    restored afterwards, as is the train/eval mode.
    `progress(step, steps, loss, tokens_per_second, eta_seconds)` is called after each
    step (step counts from 1)."""
    import torch

    records = list(records)
    if not records:
        raise TrainingError("nothing to train on: the record list is empty")
    trainable = list(parameters)
    if not trainable:
        raise TrainingError("no parameters to train were given")
    chosen = {id(p) for p in trainable}
    if len(chosen) != len(trainable):
        raise TrainingError("a parameter was given twice")
    if not all(p.is_floating_point() for p in trainable):
        raise TrainingError("only floating-point tensors can be trained")
    encoded = [_encode(tokenizer, record, config.max_length) for record in records]
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    if pad_id is None:
        raise TrainingError("the tokenizer has neither a pad nor an end-of-sequence token to pad batches with")

    embeddings = model.get_input_embeddings() if hasattr(model, "get_input_embeddings") else None
    device = embeddings.weight.device if embeddings is not None else next(model.parameters()).device
    cuda = device.type == "cuda"
    # bf16 autocast where the GPU has bf16 (fp16 would need loss scaling); fp32 elsewhere.
    autocast = torch.autocast("cuda", dtype=torch.bfloat16) if cuda and torch.cuda.is_bf16_supported() else None
    log = TrainLog(config=config.to_dict(), draws=[0] * len(records),
                   truncated=sum(e.truncated for e in encoded), unaligned=sum(not e.aligned for e in encoded),
                   device=str(device))

    flags = [(p, p.requires_grad) for p in model.parameters()]
    was_training = model.training
    for p in model.parameters():
        p.requires_grad_(id(p) in chosen)
    for p in trainable:  # given tensors that are not registered parameters of the model
        p.requires_grad_(True)
    use_cache = getattr(getattr(model, "config", None), "use_cache", None)
    if use_cache is not None:
        model.config.use_cache = False  # no KV cache is wanted while training
    torch.manual_seed(config.seed)
    optimizer = torch.optim.AdamW(trainable, lr=config.lr, weight_decay=0.0)
    batches = _batches(records, config)
    model.train()
    started = time.perf_counter()
    try:
        for step in range(config.steps):
            rate = _learning_rate(step, config)
            for group in optimizer.param_groups:
                group["lr"] = rate
            indices = next(batches)
            for index in indices:
                log.draws[index] += 1
            batch = _pad([encoded[i][:2] for i in indices], pad_id, device)
            if autocast is not None:
                with autocast:
                    loss = model(**batch).loss
            else:
                loss = model(**batch).loss
            if not torch.isfinite(loss):
                raise TrainingError(f"the loss became {loss.item()} at step {step + 1}; lower lr "
                                    f"(it is {config.lr:g}) or check the records")
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(trainable, 1.0)
            optimizer.step()
            log.losses.append(float(loss.detach()))
            log.learning_rates.append(rate)
            log.tokens += int(batch["attention_mask"].sum())
            log.seconds = time.perf_counter() - started
            if progress is not None:
                done = step + 1
                per_step = log.seconds / done
                progress(done, config.steps, log.losses[-1], log.tokens / log.seconds if log.seconds else 0.0,
                         per_step * (config.steps - done))
    finally:
        optimizer.zero_grad(set_to_none=True)
        for p, flag in flags:
            p.requires_grad_(flag)
        if use_cache is not None:
            model.config.use_cache = use_cache
        model.train(was_training)
    log.seconds = time.perf_counter() - started
    return log


# -- LoRA ------------------------------------------------------------------------------

@dataclass
class TrainResult:
    """Where `train_lora` wrote the adapter, its log and its loss curve (None without
    matplotlib), and the log itself."""

    adapter_dir: Path
    log_path: Path
    plot_path: Path | None
    log: TrainLog

    def metrics(self) -> dict:
        """A summary for an artifact's metadata."""
        losses = self.log.losses
        head, tail = losses[:5], losses[-5:]
        return {"steps": len(losses), "first_loss": sum(head) / len(head), "final_loss": sum(tail) / len(tail),
                "tokens": self.log.tokens, "seconds": round(self.log.seconds, 3),
                "truncated_records": self.log.truncated, "unaligned_records": self.log.unaligned,
                "device": self.log.device}


def _load_base(base_model: str, config: TrainConfig):
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    cuda = torch.cuda.is_available()
    if config.load_in_4bit:
        if not cuda:
            raise TrainingError("load_in_4bit (QLoRA) needs a CUDA GPU, and torch sees none here; "
                                "set load_in_4bit = false to train the unquantized model")
        if importlib.util.find_spec("bitsandbytes") is None:
            raise TrainingError("load_in_4bit (QLoRA) needs bitsandbytes; pip install 'pytest-sleepy[gpu]'")
    dtype_name = config.dtype
    if dtype_name == "auto":
        dtype_name = ("bf16" if torch.cuda.is_bf16_supported() else "fp32") if cuda else "fp32"
    dtype = {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": torch.float32}[dtype_name]
    options: dict = {"dtype": dtype}
    if config.load_in_4bit:
        from transformers import BitsAndBytesConfig

        options["quantization_config"] = BitsAndBytesConfig(
            load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_compute_dtype=torch.bfloat16)
        options["device_map"] = {"": torch.cuda.current_device()}
    try:
        tokenizer = AutoTokenizer.from_pretrained(base_model)
        model = AutoModelForCausalLM.from_pretrained(base_model, **options)
    except Exception as error:
        first = (str(error).strip().splitlines() or [""])[0]
        raise TrainingError(f"cannot load base model {base_model!r} ({type(error).__name__}: {first})") from error
    if not config.load_in_4bit:
        model = model.to("cuda" if cuda else "cpu")
    if config.load_in_4bit:
        from peft import prepare_model_for_kbit_training

        model = prepare_model_for_kbit_training(model)
    return model, tokenizer


def train_lora(base_model: str, records: Sequence[dict], config: TrainConfig, out_dir: Path | str,
               progress: Progress | None = None) -> TrainResult:
    """Train a LoRA adapter of `base_model` (a hub name or a `save_pretrained`
    directory) on SFT `records` and save it in `out_dir`: the peft adapter
    (`adapter_config.json`, `adapter_model.safetensors`), `train_log.json` and, with
    matplotlib installed, `loss.png`.

    The base loads on CUDA in bf16 when a GPU is there, else on the CPU in fp32
    (`config.dtype` overrides). `load_in_4bit` loads it in 4-bit NF4 (QLoRA) and needs
    CUDA and bitsandbytes; elsewhere it raises TrainingError before loading anything."""
    import torch
    from peft import LoraConfig, get_peft_model

    out_dir = Path(out_dir)
    records = list(records)
    if not records:
        raise TrainingError("nothing to train on: the record list is empty")
    model, tokenizer = _load_base(base_model, config)
    torch.manual_seed(config.seed)  # the adapter's A matrices are drawn at random
    lora = LoraConfig(r=config.rank, lora_alpha=config.alpha, lora_dropout=config.dropout,
                      target_modules=list(config.target_modules) if isinstance(config.target_modules, tuple)
                      else config.target_modules, bias="none", task_type="CAUSAL_LM")
    try:
        with warnings.catch_warnings():
            # peft 0.21 reads transformers' deprecated `is_gradient_checkpointing` property.
            warnings.filterwarnings("ignore", message=".*is_gradient_checkpointing.*", category=FutureWarning)
            model = get_peft_model(model, lora)
    except ValueError as error:  # peft: target modules not found in the base model
        raise TrainingError(f"cannot put LoRA on {base_model!r}: {error}") from None
    adapter = [p for n, p in model.named_parameters() if "lora_" in n]
    log = train_parameters(model, tokenizer, records, adapter, config, progress)
    out_dir.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(str(out_dir), safe_serialization=True)
    log_path = out_dir / "train_log.json"
    log_path.write_text(json.dumps({"base_model": base_model, "records": len(records), **log.to_dict()}, indent=1)
                        + "\n", encoding="utf-8")
    plot_path = _plot(log, out_dir / "loss.png", title=f"LoRA r={config.rank} on {Path(base_model).name}")
    return TrainResult(adapter_dir=out_dir, log_path=log_path, plot_path=plot_path, log=log)


def _plot(log: TrainLog, path: Path, title: str) -> Path | None:
    """The loss curve (matplotlib, the `plots` extra); None when it is not installed."""
    if importlib.util.find_spec("matplotlib") is None:
        return None
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    figure, axis = plt.subplots(figsize=(6, 3.5))
    try:
        steps = range(1, len(log.losses) + 1)
        axis.plot(steps, log.losses, linewidth=1, label="loss")
        window = max(1, len(log.losses) // 20)
        if window > 1:
            smooth = [sum(log.losses[max(0, i - window + 1):i + 1]) / len(log.losses[max(0, i - window + 1):i + 1])
                      for i in range(len(log.losses))]
            axis.plot(steps, smooth, linewidth=2, label=f"mean of {window}")
            axis.legend()
        axis.set_xlabel("step")
        axis.set_ylabel("loss (answer tokens)")
        axis.set_title(title, fontsize=9)
        figure.tight_layout()
        figure.savefig(path, dpi=100)
    finally:
        plt.close(figure)
    return path
