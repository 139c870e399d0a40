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
            self.encoder = AutoModel.from_config(  # type: ignore[no-untyped-call]
                config, add_pooling_layer=False
            )

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


@ARCHITECTURES.register("hf_classifier")
def hf_classifier(
    hf_config: dict[str, Any],
    num_classes: int,
    pooling: str = "mean",
    drop_rate: float = 0.1,
    pretrained: Any = None,
    **_: Any,
) -> Any:
    """An encoder with a linear head: forward(input_ids, attention_mask) gives class logits.

    The encoder sits under `encoder.` as in hf_encoder, so a text-embedding package's weights
    load into it by name; the head is `head` (get_classifier, so a fine-tune from a package
    with other labels starts it fresh)."""
    import torch
    from transformers import AutoConfig, AutoModel

    config = AutoConfig.for_model(**hf_config)

    class Classifier(torch.nn.Module):
        # The prefix under which a bare Hugging Face encoder's weights load.
        state_prefix = "encoder."

        def __init__(self) -> None:
            super().__init__()
            self.encoder = AutoModel.from_config(  # type: ignore[no-untyped-call]
                config, add_pooling_layer=False
            )
            self.dropout = torch.nn.Dropout(drop_rate)
            self.head = torch.nn.Linear(config.hidden_size, num_classes)

        def get_classifier(self) -> Any:
            return self.head

        def forward(self, input_ids: Any, attention_mask: Any) -> Any:
            hidden = self.encoder(input_ids=input_ids, attention_mask=attention_mask)[0]
            if pooling == "cls":
                pooled = hidden[:, 0]
            else:
                mask = attention_mask.unsqueeze(-1).to(hidden.dtype)
                pooled = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1e-9)
            return self.head(self.dropout(pooled))

    return Classifier().eval()
