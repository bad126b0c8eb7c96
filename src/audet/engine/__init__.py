"""Training engine: one LightningModule for every model, configs, checkpoints, reports.

- :class:`AUTask` (``audet.engine.task``): the LightningModule;
- :func:`fit` (``audet.engine.fit``), :func:`cross_validate` (``audet.engine.cv``),
  :func:`evaluate` (``audet.engine.evaluate``);
- :class:`AUEvaluator` (``audet.engine.scoring``): the one scoring path (every labelled frame once);
- :func:`load_config` (``audet.engine.config``): YAML + recipe + dotted overrides + stages, validated;
- :class:`Config` (``audet.engine.schema``): the one table of config keys, the typed view the engine reads;
- checkpoints (safetensors + JSON, AU-identity initialisation) are :mod:`audet.models.checkpoint`'s.

Names are imported lazily so that ``import audet.engine`` stays cheap.
"""
from __future__ import annotations

from audet.utils.lazy import lazy_exports

_EXPORTS = {
    "AUTask": "task",
    "build_model": "task",
    "fit": "fit",
    "build_trainer": "fit",
    "cross_validate": "cv",
    "evaluate": "evaluate",
    "AUEvaluator": "scoring",
    "FitData": "data",
    "load_config": "config",
    "ConfigError": "schema",
    "Config": "schema",
}

__all__ = sorted(_EXPORTS)


__getattr__ = lazy_exports(__name__, _EXPORTS)
