"""Model registry and the built-in methods.

>>> from audet.models import create_model, list_models
>>> model = create_model("ac2d", aus=[1, 2, 4, 6, 7, 10, 12, 14, 15, 17, 23, 24])
"""
from audet.models.base import AUModel, DataInfo, LossContext, ModelOutput, PretrainedPart
from audet.models.registry import create_model, list_models, model_info, model_signature, register_model

# Importing a method module registers its models. Plain import statements: a module named here that
# does not exist (a misspelling) is an ImportError, never a silently missing method.
from audet.models import ac2d, baseline, ensemble, cisnet, escda, aar, aunet  # noqa: E402,F401  isort: skip

__all__ = ["AUModel", "DataInfo", "LossContext", "PretrainedPart", "ModelOutput", "create_model", "list_models",
           "model_info", "model_signature", "register_model"]
