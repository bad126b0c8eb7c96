"""Model registry and the built-in methods.

>>> from audet.models import create_model, list_models
>>> model = create_model("ac2d", num_aus=12)
"""
from audet.models.base import AUModel, DataInfo, LossContext, ModelOutput, PretrainedPart
from audet.models.registry import create_model, list_models, model_info, register_model

# Importing a method module registers its models. Each is optional while the toolkit grows.
import importlib as _importlib

for _m in ("ac2d", "baseline", "ensemble", "cisnet", "escda", "aar", "aunet"):
    try:
        _importlib.import_module(f"audet.models.{_m}")
    except ModuleNotFoundError as _exc:
        if _exc.name != f"audet.models.{_m}":
            raise

__all__ = ["AUModel", "DataInfo", "LossContext", "PretrainedPart", "ModelOutput", "create_model", "list_models", "model_info", "register_model"]
