"""Shared building blocks (ResTv2-style transformer parts, causal intervention).

- :mod:`.embed`: ``PixelAttention`` (PA), ``ConvStem``, ``PatchEmbed``, ``tokens_to_map``
- :mod:`.attention`: ``EMSAv2`` (efficient MSA v2 with the upsample branch, AC2D Eq. 1-2)
- :mod:`.block`: pre-norm transformer ``Block`` (EMSAv2 + timm ``Mlp``), ``init_restv2_weights``
- :mod:`.causal`: ``CausalIntervention`` (backdoor adjustment, AC2D Eq. 10-13)
"""
from audet.models.layers.attention import ATTENTION_OUTPUTS, EMSAv2
from audet.models.layers.block import Block, init_restv2_weights
from audet.models.layers.causal import CausalIntervention
from audet.models.layers.embed import LN_EPS, ConvStem, PatchEmbed, PixelAttention, tokens_to_map

__all__ = [
    "ATTENTION_OUTPUTS",
    "Block",
    "CausalIntervention",
    "ConvStem",
    "EMSAv2",
    "LN_EPS",
    "PatchEmbed",
    "PixelAttention",
    "init_restv2_weights",
    "tokens_to_map",
]
