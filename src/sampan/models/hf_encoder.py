"""Transformer encoders in Hugging Face's format (BERT, MiniLM, RoBERTa, ...), through the
transformers library, with the pooling a sentence-embedding model was trained with.

The package keeps the model's config in its architecture entry, so the network is rebuilt
offline from the package alone (no Hub, no original directory)."""

from __future__ import annotations

from typing import Any

from sampan.models.base import ARCHITECTURES


@ARCHITECTURES.register("hf_encoder")
def hf_encoder(
    hf_config: dict[str, Any],
    pooling: str = "mean",
    normalize: bool = True,
    pretrained: Any = None,
    **_: Any,
) -> Any:
    """An encoder whose forward(input_ids, attention_mask) gives one vector per text."""
    import torch
    from transformers import AutoConfig, AutoModel

    config = AutoConfig.for_model(**hf_config)

    class Encoder(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.encoder = AutoModel.from_config(config, add_pooling_layer=False)

        def forward(self, input_ids: Any, attention_mask: Any) -> Any:
            hidden = self.encoder(input_ids=input_ids, attention_mask=attention_mask)[0]
            if pooling == "cls":
                vectors = hidden[:, 0]
            else:  # mean over the real tokens, as sentence-transformers' Pooling does
                mask = attention_mask.unsqueeze(-1).to(hidden.dtype)
                vectors = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1e-9)
            if normalize:
                vectors = torch.nn.functional.normalize(vectors, p=2, dim=1)
            return vectors

    return Encoder().eval()
