"""text-embedding: strings in, one L2-normalised vector per string out.

Tokenisation is preprocessing: the package holds the model's own tokenizer.json, loaded once by
bind() with the fast `tokenizers` library (no torch, no transformers), so every backend sees the
same input ids. Batches are padded to their longest text, not to the model's maximum.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from sampan.errors import ConfigError, DataError
from sampan.tasks.base import TASKS, Listing, Samples, Task

TOKENIZER = "_tokenizer"  # where bind() puts the loaded tokenizer in the contract


@TASKS.register("text-embedding")
class TextEmbedding(Task):
    name = "text-embedding"
    description = "Texts to vectors for similarity search and retrieval"

    def scan(self, source: str | Path) -> Listing:
        raise ConfigError(
            "text-embedding packages come from a pretrained model: "
            "`sampan import hf DIR --task text-embedding --name NAME`."
        )

    def preprocessing(self, listing: Listing | None, options: dict[str, Any]) -> dict[str, Any]:
        return {
            "tokenizer_file": "tokenizer.json",
            "max_length": int(options.get("max_length", 256)),
            "lowercase": bool(options.get("lowercase", False)),
        }

    def load(self, listing: Listing, contract: dict[str, Any], min_per_class: int = 1) -> Samples:
        raise ConfigError("text-embedding packages are imported, not trained (yet).")

    def as_inputs(self, inputs: Any) -> list[Any]:
        if isinstance(inputs, (str, bytes)):
            return [inputs]
        return list(inputs)

    def bind(self, contract: dict[str, Any], package_dir: Path) -> dict[str, Any]:
        from tokenizers import Tokenizer

        if TOKENIZER in contract:
            return contract
        tokenizer = Tokenizer.from_file(str(package_dir / contract["tokenizer_file"]))
        tokenizer.enable_truncation(max_length=int(contract["max_length"]))
        tokenizer.no_padding()  # collate pads each batch to its own longest text
        return {**contract, TOKENIZER: tokenizer}

    def decode(self, raw: Any, contract: dict[str, Any]) -> str:
        if isinstance(raw, (bytes, bytearray)):
            try:
                raw = bytes(raw).decode("utf-8")
            except UnicodeDecodeError:
                raise DataError("A text input is not valid UTF-8.") from None
        if not isinstance(raw, str):
            raise DataError(f"A text input must be a string, not {type(raw).__name__}.")
        if not raw.strip():
            raise DataError("A text input is empty: send at least one non-blank character.")
        return raw.lower() if contract.get("lowercase") else raw

    def input_spec(self, contract: dict[str, Any]) -> Any:
        return {"input_ids": ((-1,), "int64"), "attention_mask": ((-1,), "int64")}

    def collate(self, samples: Any, contract: dict[str, Any]) -> Any:
        tokenizer = contract.get(TOKENIZER)
        if tokenizer is None:
            raise RuntimeError("collate() needs the contract from bind()")
        encodings = tokenizer.encode_batch(list(samples))
        length = max(len(e.ids) for e in encodings)
        ids = np.zeros((len(encodings), length), dtype=np.int64)
        mask = np.zeros((len(encodings), length), dtype=np.int64)
        for row, encoding in enumerate(encodings):
            ids[row, : len(encoding.ids)] = encoding.ids
            mask[row, : len(encoding.ids)] = encoding.attention_mask
        return {"input_ids": ids, "attention_mask": mask}

    def units(self, batch: Any) -> int:
        """Tokens, as embedding APIs count them."""
        return int(batch["attention_mask"].sum())

    @staticmethod
    def parity_inputs() -> list[str]:
        """Texts of varied length (so padding is exercised) that an export is checked on."""
        return [
            "Pump 3 vibrates.",
            "The bearing temperature has been rising for two hours and is near its alarm limit.",
            "Invoice overdue",
            "Quality control rejected twelve parts from the morning shift because of burrs.",
            "Shipment delayed by the storm; new arrival Friday at gate 4.",
            "ok",
            "An unusual noise at start-up, then normal operation.",
            "Please sign the purchase order before the end of the quarter.",
        ]

    def postprocess(
        self, outputs: np.ndarray, labels: Sequence[str], top_k: int
    ) -> list[dict[str, Any]]:
        return [{"embedding": row.astype(float).tolist()} for row in outputs]

    def metrics(
        self, outputs: np.ndarray, targets: np.ndarray, labels: Sequence[str]
    ) -> dict[str, Any]:
        raise ConfigError("Evaluating text-embedding packages on pairs is not built yet.")

    def loss(self, label_smoothing: float = 0.0) -> Any:
        raise ConfigError("text-embedding packages are imported, not trained (yet).")
