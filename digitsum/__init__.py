"""digitsum: a model zoo for multi-input, multi-output digit models, extensible by plugins.

Two public faces, both importable from here and loaded on first use (importing digitsum, and
``digitsum --help``, import no torch):

- the library (``digitsum.train``, ``load``, ``load_run``, ``load_recipe``, ``doctor``, ``build``, ``sweep``,
  ``compare``, ``Run`` and the objects they return; see docs/api.md);
- the contracts plugin authors implement (``from digitsum import Fusion``; see docs/plugins.md).
"""

__version__ = "0.1.0"

_PUBLIC = {
    # the library
    "train": "api",
    "resume": "api",
    "load_run": "api",
    "load": "api",
    "load_recipe": "api",
    "doctor": "api",
    "build": "api",
    "sweep": "api",
    "compare": "api",
    "copy_recipe": "api",
    "list_components": "api",
    "SweepSettings": "sweeps",
    "SweepResult": "sweeps",
    "Comparison": "comparison",
    "Run": "run",
    "Recipe": "recipe",
    "Callback": "callbacks",
    "Report": "diagnosis",
    "Finding": "diagnosis",
    "Built": "engine.build",
    "Predictions": "predict",
    "HeadPredictions": "predict",
    "Exported": "export",
    "UserError": "errors",
    "RecipeError": "errors",
    "ComponentError": "engine.component_errors",
    # the contracts
    "CONTRACT_VERSION": "contracts",
    "Batch": "contracts",
    "Categorical": "contracts",
    "Classes": "contracts",
    "Digits": "contracts",
    "Fusion": "contracts",
    "Generator": "contracts",
    "Head": "contracts",
    "Optimizer": "contracts",
    "Schedule": "contracts",
    "Logger": "contracts",
    "Image": "contracts",
    "Images": "contracts",
    "Interface": "contracts",
    "Params": "contracts",
    "PredictionSpace": "contracts",
    "Spec": "contracts",
    "DataContext": "data",
    "DigitSet": "data",
    "MNIST_MEAN": "data",
    "MNIST_STD": "data",
    "mnist_pixels": "data",
    # what a plugin's doctor checks take and return (docs/plugins.md#checks-for-digitsum-doctor)
    "Probe": "diagnosis",
    "Change": "diagnosis",
    "fresh_copy": "diagnosis",
}

__all__ = ["__version__", *_PUBLIC]


def __getattr__(name: str):
    module = _PUBLIC.get(name)
    if module is None:
        raise AttributeError(f"module 'digitsum' has no attribute {name!r}")
    from importlib import import_module

    return getattr(import_module(f"digitsum.{module}"), name)


def __dir__() -> list[str]:
    return sorted(__all__)
