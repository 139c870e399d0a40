"""What every text task shares: strings in, tokenised by the package's own tokenizer.

Tokenisation is preprocessing: the package holds the model's tokenizer.json, loaded once by
bind() with the fast `tokenizers` library (no torch, no transformers), so every backend sees the
same input ids. Batches are padded to their longest text, not to the model's maximum.
"""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from sampan.errors import DataError
from sampan.tasks.base import Task

TOKENIZER = "_tokenizer"  # where bind() puts the loaded tokenizer in the contract


class Truncated(str):
    """A text longer than the model's maximum length: the model sees only its beginning."""


def text_contract(options: dict[str, Any]) -> dict[str, Any]:
    return {
        "tokenizer_file": "tokenizer.json",
        "max_length": int(options.get("max_length") or 256),
        "lowercase": bool(options.get("lowercase", False)),
    }


def read_text_records(path: Path, columns: tuple[str, ...]) -> list[dict[str, Any]]:
    """Rows of a CSV (with a header) or JSON Lines file holding at least `columns`; a clear
    DataError for a missing file, column or unreadable line."""
    if not path.is_file():
        raise DataError(f"{path} does not exist; give a .csv or .jsonl file.")
    suffix = path.suffix.lower()
    if suffix not in (".csv", ".jsonl", ".json"):
        raise DataError(f"{path}: text data must be .csv (with a header) or .jsonl.")
    try:
        text = path.read_text(encoding="utf-8-sig")
    except UnicodeDecodeError:
        raise DataError(f"{path} is not UTF-8 text; save it as UTF-8.") from None
    rows: list[dict[str, Any]] = []
    if suffix == ".csv":
        # newline="" keeps line breaks inside quoted fields as they are (splitlines() would
        # also split on form feeds and U+2028 inside a text)
        reader = csv.DictReader(io.StringIO(text, newline=""))
        found = reader.fieldnames or []
        missing = [c for c in columns if c not in found]
        if missing:
            raise DataError(
                f"{path} lacks column(s) {', '.join(missing)} (its header has: "
                f"{', '.join(found) or 'nothing'}); the header must name {', '.join(columns)}."
            )
        rows = [dict(row) for row in reader]
    else:
        for number, line in enumerate(text.split("\n"), start=1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError:
                raise DataError(f"{path} line {number} is not a JSON object.") from None
            if not isinstance(row, dict) or any(c not in row for c in columns):
                raise DataError(f"{path} line {number} needs the keys {', '.join(columns)}.")
            rows.append(row)
    if not rows:
        raise DataError(f"{path} holds no rows.")
    return rows


class TextTask(Task):
    """A task whose raw input is one string (or UTF-8 bytes)."""

    def as_inputs(self, inputs: Any) -> list[Any]:
        if isinstance(inputs, (str, bytes)):
            return [inputs]
        return list(inputs)

    def bind(self, contract: dict[str, Any], package_dir: Path) -> dict[str, Any]:
        from tokenizers import Tokenizer

        if TOKENIZER in contract:
            return contract
        path = package_dir / contract["tokenizer_file"]
        if not path.is_file():
            raise DataError(f"{path} is missing: the package's tokenizer is needed.")
        tokenizer = Tokenizer.from_file(str(path))
        tokenizer.enable_truncation(max_length=int(contract["max_length"]))
        tokenizer.no_padding()  # collate pads each batch to its own longest text
        return {**contract, TOKENIZER: tokenizer}

    def to_json(self, raw: bytes) -> Any:
        try:
            return raw.decode("utf-8").strip()
        except UnicodeDecodeError:
            raise DataError("The input file is not UTF-8 text.") from None

    def example_json(
        self, input_shape: Sequence[int], details: Mapping[str, Any] | None = None
    ) -> Any:
        return "The conveyor belt in hall 3 stopped twice this morning; please check the motor."

    def cheap_to_decode(self, raw: Any) -> bool:
        return isinstance(raw, str) and len(raw) < 16384

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
        text = raw.lower() if contract.get("lowercase") else raw
        return self._check_length(text, contract)

    @staticmethod
    def _check_length(text: str, contract: dict[str, Any]) -> str:
        """text, marked Truncated when it is over the model's maximum length, or a DataError
        when the contract says to refuse such texts (contract["truncate"] False).

        A token covers at least one character, so an ASCII text (which normalisers leave as
        long as it is) shorter than the maximum less a margin for the special tokens fits, and
        is not tokenised here (collate does that).
        A text of more than 64 characters per token is over without tokenising, and is cut
        there: the tokenizer would spend seconds on megabytes that truncation drops anyway."""
        tokenizer = contract.get(TOKENIZER)
        if tokenizer is None:  # unbound (reading data): collate truncates
            return text
        limit = int(contract["max_length"])
        # ASCII only: a normaliser (NFKC) may turn one non-ASCII character into many
        # (U+FDFA is 3 bytes and 18 characters), so those texts are tokenised to know.
        if text.isascii() and len(text) + 8 <= limit:
            return text
        cap = 64 * limit
        if len(text) <= cap and not tokenizer.encode(text).overflowing:
            return text
        if contract.get("truncate", True) is False:
            raise DataError(
                f"A text is over this model's maximum of {limit} tokens "
                f"({len(text):,} characters); shorten it, or allow truncation."
            )
        return Truncated(text[:cap])

    def notes(self, sample: Any) -> dict[str, Any]:
        """What a response should say about one input beyond its result: a truncated text."""
        return {"truncated": True} if isinstance(sample, Truncated) else {}

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
        """Tokens, as text APIs count them."""
        return int(batch["attention_mask"].sum())

    def lengths(self, samples: Any) -> np.ndarray:
        """A cheap stand-in for each text's token count (its characters), for grouping texts
        of similar length into a training batch."""
        return np.array([len(text) for text in samples], dtype=np.int64)

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
