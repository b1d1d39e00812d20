"""The `hf` backend: a causal language model run in-process with Hugging Face transformers.

    hf:NAME_OR_PATH[?load_in_4bit=0|1&dtype=auto|bf16|fp16|fp32&device=auto|cpu|cuda&revision=REV]

NAME_OR_PATH is a hub name (`Qwen/Qwen2.5-Coder-1.5B-Instruct`) or a local directory
written by `save_pretrained`. Hub and local weights go through the same
`AutoTokenizer`/`AutoModelForCausalLM.from_pretrained` path; nothing is special-cased
for the tiny models the tests build.

Choices, and why:

- Construction only reads the settings. The plugin builds the model even when it only
  replays recorded answers, so weights are loaded lazily, by `_load()`, on the first
  `complete()` (or `render_prompt()`/`encode_prompt()`). Even torch and transformers are imported only
  then: replaying a cache needs neither installed. `preflight()` checks what can be
  checked without the weights (CUDA, bitsandbytes, the config being reachable).
- `identity` is a content hash, not a name. The completion cache trusts an entry only
  when the identity that recorded it matches, and a name (a directory, a hub repo's
  `main`) can point at other weights tomorrow. A local directory is identified by a
  sha256 of its files (names and contents); a hub model by the commit its revision
  resolves to, pinned once per instance and then used to load the files, so the
  identity names exactly the weights that answer. Neither needs the weights in memory,
  so a cache hit never loads the model. The precision (dtype, 4-bit) is part of the
  identity because it changes the answers.
- Temperature 0 (the default) means greedy decoding: the answer is then a function of
  the prompt and the weights alone, so the benchmark's numbers are reproducible and
  recorded answers are the ones a rerun would give. Temperature > 0 samples, seeded by
  the request's seed right before generating, so a (prompt, seed) pair still names one
  answer. Other decoding parameters (top_p, top_k, repetition penalty, stop tokens)
  are the checkpoint's own `generation_config`, as a model's Ollama Modelfile would set
  them; they are covered by the identity (they are files of the directory or commit).
- The prompt is the tokenizer's chat template when it has one, with control tokens
  found in the messages (a koan could contain `<|im_end|>`) encoded as plain text, so
  a program under repair cannot close the user's turn. Without a template (a base
  model) a plain "System:/User:/Assistant:" transcript is used (`fallback_prompt`).
"""

from __future__ import annotations

import hashlib
import importlib.util
import os
import time
from pathlib import Path
from typing import TYPE_CHECKING, Iterable

from .base import Completion, CompletionRequest, Message, ModelError, ModelSpec, ModelUnavailable, register_peft_adapter

if TYPE_CHECKING:  # imported lazily at run time, see the module docstring
    import torch

__all__ = ["HFModel", "directory_digest", "fallback_prompt"]

SETTINGS = {
    "load_in_4bit": "0|1",
    "dtype": "auto|bf16|fp16|fp32",
    "device": "auto|cpu|cuda",
    "revision": "a branch, tag or commit of the hub repository",
}
DTYPES = ("auto", "bf16", "fp16", "fp32")
DEVICES = ("auto", "cpu", "cuda")
FALLBACK_ROLES = {"system": "System", "user": "User", "assistant": "Assistant"}
CHUNK = 1 << 20


def fallback_prompt(messages: Iterable[Message]) -> str:
    """The prompt for a tokenizer without a chat template: each message as
    `Role:\\ncontent\\n\\n`, then `Assistant:\\n` for the model to continue."""
    turns = [f"{FALLBACK_ROLES.get(m.role, m.role.capitalize())}:\n{m.content}\n\n" for m in messages]
    return "".join(turns) + "Assistant:\n"


def directory_digest(root: Path) -> str:
    """sha256 over the relative names and contents of the files under `root`.

    Hidden entries (`.git`, the `.cache/huggingface` metadata of `hf download
    --local-dir`) are skipped: transformers never reads them, and they change (fetch
    times, etags) while the weights do not.
    """
    digest = hashlib.sha256()
    files = []
    for folder, subfolders, names in os.walk(root):
        subfolders[:] = [name for name in subfolders if not name.startswith(".")]
        files += [Path(folder, name) for name in names if not name.startswith(".")]
    for path in sorted(files, key=lambda p: p.relative_to(root).as_posix()):
        # Name and size frame each file, so moving bytes from one file into the next
        # cannot produce the same stream.
        digest.update(f"{path.relative_to(root).as_posix()}\0{path.stat().st_size}\0".encode("utf-8"))
        with open(path, "rb") as handle:
            while chunk := handle.read(CHUNK):
                digest.update(chunk)
    return digest.hexdigest()


def _looks_local(name: str) -> bool:
    # A hub name is `repo` or `owner/repo`; anything else that names a path is local.
    return (name.startswith(("/", "./", "../", "~")) or name in (".", "..") or name.count("/") > 1
            or "\\" in name or Path(name).expanduser().exists())


def _first_line(error: BaseException) -> str:
    text = str(error).strip().splitlines()
    return f"{type(error).__name__}: {text[0]}" if text else type(error).__name__


class HFModel:
    def __init__(self, spec: ModelSpec):
        spec.check_options(SETTINGS)
        self.spec = spec
        self.name = spec.name
        self.load_in_4bit = self._choice(spec, "load_in_4bit", ("0", "1"), "0") == "1"
        self.dtype = self._choice(spec, "dtype", DTYPES, "auto")
        self.device = self._choice(spec, "device", DEVICES, "auto")
        self.revision = spec.option("revision") or None
        self.local = _looks_local(self.name)
        self.path = Path(self.name).expanduser().resolve() if self.local else None
        # The completion cache keys the model by its last name component, not where a
        # local directory sits, so a recorded run replays on another machine; answers
        # are stored per identity (a digest of the files, a hub commit), so two
        # directories of one name never share or overwrite them.
        self.cache_name = Path(self.name).name
        if self.local and self.revision:
            raise ValueError(f"--model={spec.text!r}: revision={self.revision!r} applies to hub names only, "
                             f"and {self.name!r} is a local directory")
        if self.load_in_4bit and self.device == "cpu":
            raise ValueError(f"--model={spec.text!r}: load_in_4bit=1 runs on a CUDA GPU only; "
                             "drop device=cpu or drop load_in_4bit=1")
        self._tokenizer = None
        self._model = None
        self._commit: str | None = None
        self._identity: str | None = None
        self._adapters: dict[str, Path] = {}  # adapter identity -> peft adapter directory
        self._loaded_adapters: dict[str, str] = {}  # adapter identity -> peft adapter name

    @staticmethod
    def _choice(spec: ModelSpec, key: str, accepted: tuple[str, ...], default: str) -> str:
        value = spec.option(key, default)
        if value not in accepted:
            raise ValueError(f"--model={spec.text!r}: {key}={value!r}; use one of {', '.join(accepted)}")
        return value

    # -- what runs where -------------------------------------------------------------

    def _cuda(self) -> bool:
        import torch

        return torch.cuda.is_available()

    def _target_device(self) -> str:
        if self.device == "auto":
            return "cuda" if self._cuda() else "cpu"
        return self.device

    def _dtype_name(self) -> str:
        """The dtype weights are loaded in; `auto` is bf16 on a GPU that has it (fp16 on
        older ones) and fp32 on the CPU, where half precision is slow and inexact."""
        if self.dtype != "auto":
            return self.dtype
        if self._target_device() == "cpu":
            return "fp32"
        import torch

        return "bf16" if torch.cuda.is_bf16_supported() else "fp16"

    def _torch_dtype(self) -> "torch.dtype":
        import torch

        return {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": torch.float32}[self._dtype_name()]

    # -- protocol --------------------------------------------------------------------

    def preflight(self) -> None:
        if importlib.util.find_spec("torch") is None or importlib.util.find_spec("transformers") is None:
            raise ModelUnavailable(f"{self.spec.text} needs torch and transformers; pip install torch transformers")
        cuda = self._cuda()
        if self.load_in_4bit and not cuda:
            raise ModelUnavailable(
                f"{self.spec.text}: load_in_4bit=1 needs a CUDA GPU and the bitsandbytes package, and torch sees "
                "no CUDA GPU here; drop load_in_4bit=1 to run unquantized (on the CPU that is slow for large models)")
        if self.load_in_4bit and importlib.util.find_spec("bitsandbytes") is None:
            raise ModelUnavailable(f"{self.spec.text}: load_in_4bit=1 needs bitsandbytes; pip install bitsandbytes")
        if self.device == "cuda" and not cuda:
            raise ModelUnavailable(f"{self.spec.text}: device=cuda but torch sees no CUDA GPU; "
                                   "use device=cpu (or device=auto), or install a CUDA build of torch")
        from transformers import AutoConfig

        if self.local:
            if not self.path.is_dir():
                problem = "is not a directory" if self.path.exists() else "does not exist"
                raise ModelUnavailable(f"{self.spec.text}: model directory {str(self.path)!r} {problem}; "
                                       "check the path (it should hold config.json and the weights, as written "
                                       "by save_pretrained)")
            try:
                AutoConfig.from_pretrained(str(self.path))
            except Exception as error:  # transformers raises OSError, ValueError, KeyError...
                raise ModelUnavailable(f"{self.spec.text}: cannot read the model config in {str(self.path)!r} "
                                       f"({_first_line(error)}); check that the directory holds a "
                                       "transformers model") from None
            return
        try:
            AutoConfig.from_pretrained(self.name, revision=self._hub_commit())
        except ModelUnavailable:
            raise
        except Exception as error:
            raise ModelUnavailable(self._not_downloaded(error)) from None

    def _not_downloaded(self, error: BaseException) -> str:
        at = f" at revision {self.revision!r}" if self.revision else ""
        return (f"{self.spec.text}: cannot load the config of hub model {self.name!r}{at} ({_first_line(error)}). "
                f"Download it where there is network access with `hf download {self.name}` (older "
                f"huggingface_hub: `huggingface-cli download {self.name}`), or set HF_HOME to a cache that "
                "holds it; if it is meant to be a local directory, that directory does not exist")

    def _hub_commit(self) -> str:
        """The commit the requested revision points to, resolved once per instance (from the
        local cache when offline) and then used for every file, so identity and weights agree."""
        if self._commit is None:
            from huggingface_hub import resolve_revision

            try:
                self._commit = resolve_revision(self.name, revision=self.revision).resolved
            except Exception as error:
                raise ModelUnavailable(self._not_downloaded(error)) from None
        return self._commit

    @property
    def identity(self) -> str:
        if self._identity is None:
            weights = f"sha256:{directory_digest(self.path)}" if self.local else f"hf:{self.name}@{self._hub_commit()}"
            precision = f"dtype={self._dtype_name()}"
            if self.load_in_4bit:
                precision += "&load_in_4bit=nf4-bf16"
            self._identity = f"{weights}?{precision}"
        return self._identity

    def _load(self) -> None:
        """Load the tokenizer and the weights, once; a failure here means the model cannot
        serve at all, so it is ModelUnavailable rather than a per-request error."""
        if self._model is not None:
            return
        self.preflight()
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer

        source = str(self.path) if self.local else self.name
        pinned = {} if self.local else {"revision": self._hub_commit()}
        device = self._target_device()
        # transformers 5 names it `dtype` (`torch_dtype` is the deprecated spelling).
        options: dict = {"dtype": self._torch_dtype(), **pinned}
        if self.load_in_4bit:
            from transformers import BitsAndBytesConfig

            options["quantization_config"] = BitsAndBytesConfig(
                load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_compute_dtype=torch.bfloat16)
            # Quantized weights are placed by accelerate as they load; they cannot be `.to()`-moved.
            options["device_map"] = {"": torch.cuda.current_device()}
        try:
            tokenizer = AutoTokenizer.from_pretrained(source, **pinned)
            model = AutoModelForCausalLM.from_pretrained(source, **options)
            if not self.load_in_4bit:
                model = model.to(device)
        except Exception as error:
            raise ModelUnavailable(f"{self.spec.text}: cannot load the model ({_first_line(error)})") from error
        self._tokenizer, self._model = tokenizer, model.eval()

    def render_prompt(self, messages: Iterable[Message]) -> str:
        """The text the model is given for `messages` (before control tokens in the
        messages are made plain text, which changes the tokens, not the text)."""
        self._load()
        messages = list(messages)
        if self._tokenizer.chat_template:
            return self._tokenizer.apply_chat_template(
                [{"role": m.role, "content": m.content} for m in messages], add_generation_prompt=True, tokenize=False)
        return fallback_prompt(messages)

    def encode_prompt(self, messages: Iterable[Message]):
        """The model's input for `messages`: a BatchEncoding of `input_ids` and
        `attention_mask` tensors (batch of one), the rendered prompt tokenized."""
        self._load()
        messages = list(messages)
        if self._tokenizer.chat_template:
            return self._tokenizer.apply_chat_template(
                [{"role": m.role, "content": m.content} for m in messages], add_generation_prompt=True,
                tokenize=True, return_dict=True, return_tensors="pt", sanitize_control_tokens=True)
        return self._tokenizer(fallback_prompt(messages), return_tensors="pt", split_special_tokens=True)

    # -- adapters ---------------------------------------------------------------------

    def register_adapter(self, identity: str, directory: Path | str) -> None:
        """Make a peft LoRA adapter directory available under `identity` (the name a
        strategy puts in requests and the completion cache keys on). Nothing loads
        until a request asks for it."""
        register_peft_adapter(self._adapters, identity, Path(directory))


    def _use_adapter(self, identity: str | None):
        """Switch the loaded model to `identity` (None: the base model) without
        reloading the base. peft keeps every adapter beside the frozen base weights
        and never writes into them, so switching back to the base is exact."""
        import contextlib

        if identity is None:
            if self._loaded_adapters:
                return self._model.disable_adapter()
            return contextlib.nullcontext()
        if identity not in self._adapters:
            raise ModelError(f"adapter {identity!r} is not registered with {self.spec.text}; "
                             "the strategy that names it must register it first")
        from peft import PeftModel

        name = self._loaded_adapters.get(identity)
        if name is None:
            name = f"a{len(self._loaded_adapters)}_{hashlib.sha256(identity.encode()).hexdigest()[:8]}"
            path = str(self._adapters[identity])
            try:
                if isinstance(self._model, PeftModel):
                    self._model.load_adapter(path, adapter_name=name)
                else:
                    self._model = PeftModel.from_pretrained(self._model, path, adapter_name=name)
            except Exception as error:
                raise ModelError(f"cannot load adapter {identity!r} from {path} ({_first_line(error)})") from error
            self._model.eval()
            self._loaded_adapters[identity] = name
        self._model.set_adapter(name)
        return contextlib.nullcontext()

    def complete(self, request: CompletionRequest) -> Completion:
        self._load()
        with self._use_adapter(request.adapter):
            return self._generate(request)

    def _generate(self, request: CompletionRequest) -> Completion:
        import torch

        settings = request.settings
        model, tokenizer = self._model, self._tokenizer
        started = time.perf_counter()
        prompt_tokens = 0
        try:
            inputs = self.encode_prompt(request.messages).to(model.device)
            prompt_tokens = inputs["input_ids"].shape[1]
            decoding: dict = {"max_new_tokens": settings.max_tokens, "do_sample": settings.temperature > 0}
            if settings.temperature > 0:
                decoding["temperature"] = settings.temperature
            if model.generation_config.pad_token_id is None:
                # Without it generate() warns on every call and pads with EOS anyway.
                decoding["pad_token_id"] = tokenizer.pad_token_id if tokenizer.pad_token_id is not None \
                    else tokenizer.eos_token_id
            with torch.inference_mode():
                # Seeded right before generating, so the same seed samples the same answer
                # (greedy ignores it). generate() takes no generator of its own, so this
                # reseeds torch's global one; torch.manual_seed covers every CUDA device.
                torch.manual_seed(settings.seed)
                output = model.generate(**inputs, **decoding)
        except torch.cuda.OutOfMemoryError:
            torch.cuda.empty_cache()
            raise ModelError(f"out of GPU memory generating up to {settings.max_tokens} tokens after a "
                             f"{prompt_tokens}-token prompt; lower max_tokens or use load_in_4bit=1") from None
        except Exception as error:  # a failed generation is this request's failure, not the session's
            raise ModelError(f"generation failed: {_first_line(error)}") from error
        new = output[0, prompt_tokens:]
        text = tokenizer.decode(new, skip_special_tokens=True)
        stops = model.generation_config.eos_token_id
        stops = set(stops if isinstance(stops, (list, tuple)) else [stops])
        done = "stop" if len(new) and int(new[-1]) in stops else "length"
        return Completion(text=text, tokens_in=prompt_tokens, tokens_out=len(new),
                          seconds=time.perf_counter() - started, extra={"done_reason": done})
