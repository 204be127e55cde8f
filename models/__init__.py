"""Model builders: every builder returns a `keras.Model` mapping inputs to float32 logits."""

from __future__ import annotations

import importlib

# Flag name -> (module, builder). Builders take `num_classes` plus keyword options and return a model whose
# output is logits (no softmax), float32 even under a mixed-precision policy.
_BUILDERS = {
    "mlp": ("models.mlp", "mlp"),
    "linear": ("models.linear", "linear"),
    "deep_linear": ("models.linear", "deep_linear"),
    "resnet8": ("models.resnet_cifar", "resnet8"),
    "resnet20": ("models.resnet_cifar", "resnet20"),
    "resnet32": ("models.resnet_cifar", "resnet32"),
    "resnet56": ("models.resnet_cifar", "resnet56"),
    "resnet110": ("models.resnet_cifar", "resnet110"),
    "resnet50": ("models.resnet_imagenet", "resnet50"),
    "resnet101": ("models.resnet_imagenet", "resnet101"),
    "resnet152": ("models.resnet_imagenet", "resnet152"),
    "awd_lstm": ("models.awd_lstm", "awd_lstm"),
}

NAMES = tuple(_BUILDERS)


def register_all() -> None:
    """Imports every builder module, which registers its custom layers and models with Keras' saving.

    A saved model names its classes (`kd_tf>CosineLogits`); `keras.saving.load_model` finds them only once the
    module defining them has run. `import kd_tf` calls this, so a model saved by any run loads in a new process.
    """
    for module_name in sorted({module_name for module_name, _ in _BUILDERS.values()}):
        importlib.import_module(module_name)


def builder(name: str):
    """Returns the builder function registered under `name`."""
    if name not in _BUILDERS:
        raise ValueError(f"Unknown model {name!r}. Known models: {', '.join(NAMES)}.")
    module_name, function_name = _BUILDERS[name]
    return getattr(importlib.import_module(module_name), function_name)
