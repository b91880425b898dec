"""digitsum: a model zoo for multi-input, multi-output digit models, extensible by plugins.

Two public faces, both importable from here and loaded on first use (importing digitsum, and
``digitsum --help``, import no torch):

- the library (``digitsum.train``, ``load``, ``load_run``, ``load_recipe``, ``doctor``, ``build``, ``sweep``,
  ``compare``, ``Run`` and the objects they return; see docs/api.md);
- the contracts plugin authors implement (``from digitsum import Fusion``; see docs/plugins.md).
"""

import sys

if sys.argv[:1] == ["-m"] and not sys.flags.safe_path and sys.path:
    # `python -m digitsum` (or torchrun's -m) put the working folder first on sys.path, where a
    # json.py would be imported, and run, in place of the standard module: no code runs from there.
    del sys.path[0]

__version__ = "0.2.0"

#: The public names, by the module that defines them (imported on first use).
_MODULES = {
    # the library
    "api": ("train", "resume", "load_run", "load", "load_recipe", "doctor", "build", "sweep", "compare", "copy_recipe",
            "list_components"),
    "sweeps": ("SweepSettings", "SweepResult"),
    "comparison": ("Comparison",),
    "run": ("Run",),
    "recipe": ("Recipe",),
    "callbacks": ("Callback",),
    # with what a plugin's doctor checks take and return (docs/plugins.md#checks-for-digitsum-doctor)
    "diagnosis": ("Report", "Finding", "Probe", "Change", "fresh_copy"),
    "engine.build": ("Built",),
    "predict": ("Predictions", "HeadPredictions"),
    "export": ("Exported",),
    "errors": ("UserError", "RecipeError"),
    "engine.component_errors": ("ComponentError",),
    # the contracts
    "contracts": ("CONTRACT_VERSION", "Batch", "Categorical", "Classes", "Digits", "Fusion", "Generator", "Head",
                  "Optimizer", "Schedule", "Logger", "Image", "Images", "Interface", "Params", "PredictionSpace", "Spec"),
    "data": ("DataContext", "DigitSet", "MNIST_MEAN", "MNIST_STD", "mnist_pixels"),
}
_PUBLIC = {name: module for module, names in _MODULES.items() for name in names}

__all__ = ["__version__", *_PUBLIC]


def __getattr__(name: str):
    module = _PUBLIC.get(name)
    if module is None:
        raise AttributeError(f"module 'digitsum' has no attribute {name!r}")
    from importlib import import_module

    return getattr(import_module(f"digitsum.{module}"), name)


def __dir__() -> list[str]:
    return sorted(__all__)
