"""audet: facial action unit (AU) detection under one protocol.

Public entry points:

- :mod:`audet.facs` -- AU table, dataset AU sets, sub-centre rules, landmark conversions.
- :mod:`audet.geometry` -- face alignment (JAA-Net protocol) and predefined attention maps.
- :mod:`audet.data` -- list files, folds, datasets, transforms, DataModule, preparation, synthetic data.
- :mod:`audet.models` -- ``create_model(name, num_aus=..., **cfg)`` / ``list_models()``.
- :mod:`audet.metrics`, :mod:`audet.losses` -- F1-frame and the papers' losses.
"""

__version__ = "0.1.0"
