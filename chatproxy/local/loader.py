"""Loading a causal LM and its tokenizer, with one clear error for each way that fails."""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Sequence
from dataclasses import dataclass, field
from importlib.util import find_spec
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)
WEIGHT_FILES = (
    "model.safetensors",
    "model.safetensors.index.json",
    "pytorch_model.bin",
    "pytorch_model.bin.index.json",
)
INSTALL_HINT = "run `make install-local` (or `pip install 'chatproxy[local]'`)"


class LocalModelError(Exception):
    """The local model cannot be served; the message says why and what to do."""


def missing_packages() -> list[str]:
    return [name for name in ("torch", "transformers") if find_spec(name) is None]


@dataclass
class LoadedModel:
    name: str
    model: Any
    tokenizer: Any
    device: str
    dtype: str
    eos_ids: list[int]
    pad_id: int
    context_length: int
    parameters: int
    # Fast tokenizers change their own settings inside __call__, so two threads (prompt
    # encoding beside the worker's decoding) must take turns.
    tokenizer_lock: threading.Lock = field(default_factory=threading.Lock)

    def decode(self, ids: Sequence[int]) -> str:
        with self.tokenizer_lock:
            return str(self.tokenizer.decode(ids, skip_special_tokens=True))


def resolve_device(requested: str) -> str:
    import torch

    if requested == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if requested.startswith("cuda") and not torch.cuda.is_available():
        raise LocalModelError(f"LOCAL_DEVICE={requested} but CUDA is not available here")
    return requested


def resolve_dtype(requested: str, device: str) -> Any:
    import torch

    if requested != "auto":
        return getattr(torch, requested)
    if device.startswith("cuda"):
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    return torch.float32


def _check_folder(name: str) -> None:
    path = Path(name).expanduser()
    if not path.exists():
        return  # a hub id
    if not path.is_dir():
        raise LocalModelError(f"LOCAL_MODEL={name} is a file; give the model's folder")
    if not any((path / f).exists() for f in WEIGHT_FILES):
        raise LocalModelError(
            f"LOCAL_MODEL folder {name} has no weights ({', '.join(WEIGHT_FILES)})"
        )


def load(name: str, *, device: str = "auto", dtype: str = "auto") -> LoadedModel:
    """Load `name` (a folder or a hub id); runs on the worker thread, which then owns it."""
    missing = missing_packages()
    if missing:
        raise LocalModelError(
            f"LOCAL_MODEL is set but {' and '.join(missing)} "
            f"{'is' if len(missing) == 1 else 'are'} not installed: "
            f"{INSTALL_HINT}"
        )
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    _check_folder(name)
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()  # type: ignore[no-untyped-call]  # one log line says it loaded; bars only clutter logs

    where = resolve_device(device)
    torch_dtype = resolve_dtype(dtype, where)
    try:
        tokenizer = AutoTokenizer.from_pretrained(name)
        model: Any = AutoModelForCausalLM.from_pretrained(name, dtype=torch_dtype)
    except OSError as exc:
        first_line = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise LocalModelError(
            f"cannot load LOCAL_MODEL={name}: not a model folder, and the hub did not provide "
            f"it (offline, private, or misspelled?): {first_line}"
        ) from None
    if not getattr(tokenizer, "chat_template", None):
        raise LocalModelError(
            f"the tokenizer of {name} has no chat template; chatproxy needs an instruct/chat model"
        )
    model.to(where).eval()
    eos = model.generation_config.eos_token_id or tokenizer.eos_token_id
    eos_ids = sorted(
        {
            *([eos] if isinstance(eos, int) else (eos or [])),
            *([tokenizer.eos_token_id] if tokenizer.eos_token_id is not None else []),
        }
    )
    if not eos_ids:
        raise LocalModelError(f"{name} declares no end-of-sequence token")
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else eos_ids[0]
    tokenizer.padding_side = "left"
    context = int(getattr(model.config, "max_position_embeddings", 0) or 4096)
    log.info("local model %s loaded on %s as %s", name, where, str(torch_dtype).split(".")[-1])
    return LoadedModel(
        name=name,
        model=model,
        tokenizer=tokenizer,
        device=where,
        dtype=str(torch_dtype).removeprefix("torch."),
        eos_ids=eos_ids,
        pad_id=pad,
        context_length=context,
        parameters=sum(p.numel() for p in model.parameters()),
    )
