"""Model registry and the built-in methods.

>>> from audet.models import create_model, list_models
>>> model = create_model("ac2d", num_aus=12)
"""
from audet.models.base import AUModel, DataInfo, LossContext, ModelOutput, PretrainedPart
from audet.models.registry import create_model, list_models, model_info, register_model

# Importing a method module registers its models (``import audet.models.registry`` runs this file
# first, so every lookup sees them). Plain imports: a misspelt or missing module fails here.
from audet.models import aar, ac2d, aunet, baseline, cisnet, ensemble, escda  # noqa: E402, F401

__all__ = ["AUModel", "DataInfo", "LossContext", "PretrainedPart", "ModelOutput", "create_model", "list_models", "model_info", "register_model"]
