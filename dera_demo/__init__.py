"""dera-demo: decoding-time realignment (DeRa) of language models.

`strength` (λ in the paper) weights the aligned model: 0 is the reference (SFT) model, 1 the
aligned model, above 1 extrapolates past it. See `dera_demo.realign` for the rule.
"""

from dera_demo.engine import (
    Completion,
    LiveStrengths,
    SamplingConfig,
    TokenUpdate,
    generate,
    stream,
)
from dera_demo.models import ModelPair, load_pair
from dera_demo.prompts import encode_prompt
from dera_demo.realign import mix_logits

__all__ = [
    "Completion",
    "LiveStrengths",
    "ModelPair",
    "SamplingConfig",
    "TokenUpdate",
    "encode_prompt",
    "generate",
    "load_pair",
    "mix_logits",
    "stream",
]
