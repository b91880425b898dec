"""digitsum: a model zoo for multi-input, multi-output digit models, extensible by plugins.

The public API for plugin authors is importable from here (``from digitsum import Fusion``);
it is loaded on first use so that importing digitsum (and ``digitsum --help``) does not
import torch.
"""

__version__ = "0.1.0"

_PUBLIC = {
    "CONTRACT_VERSION": "contracts",
    "Batch": "contracts",
    "Categorical": "contracts",
    "Classes": "contracts",
    "Fusion": "contracts",
    "Generator": "contracts",
    "Head": "contracts",
    "Image": "contracts",
    "Interface": "contracts",
    "Params": "contracts",
    "Spec": "contracts",
    "DataContext": "data",
    "DigitSet": "data",
    "MNIST_MEAN": "data",
    "MNIST_STD": "data",
    "load_recipe": "recipe",
    "UserError": "errors",
}

__all__ = ["__version__", *_PUBLIC]


def __getattr__(name: str):
    module = _PUBLIC.get(name)
    if module is None:
        raise AttributeError(f"module 'digitsum' has no attribute {name!r}")
    from importlib import import_module

    return getattr(import_module(f"digitsum.{module}"), name)
