"""The nnU-Net internals the plugin writes into, checked so that a new nnU-Net release that renames or changes one
fails loudly instead of silently skipping the plugin's code.

nnU-Net calls a trainer's hooks by name: an override of a hook that nnU-Net has renamed is never called (a trainer
that turns test-time mirroring off in ``configure_rotation_dummyDA_mirroring_and_inital_patch_size`` would mirror
again), and setting an attribute that nnU-Net has renamed only adds one that nothing reads (a short schedule would
train nnU-Net's 1000 epochs). :func:`overrides_nnunet` checks each override against ``nnUNetTrainer`` at import;
:func:`set_nnunet_attributes` sets only attributes that nnU-Net's object already has.
"""
import inspect
from importlib.metadata import version

from nnunetv2.training.nnUNetTrainer.nnUNetTrainer import nnUNetTrainer

SUPPORTED_NNUNET = "2.8"
OVERRIDE_MARK = "__overrides_nnunet__"  # set on every checked override, so that a test can find unchecked ones


def incompatible(problem: str) -> RuntimeError:
    return RuntimeError(f"{problem}: nnunet_laworder is written for nnunetv2 {SUPPORTED_NNUNET}, this is nnunetv2 "
                        f"{version('nnunetv2')}")


def parameters(function) -> list:
    """``(name, kind)`` of each parameter but a leading ``self`` / ``cls``."""
    found = list(inspect.signature(function).parameters.values())
    if found and found[0].name in ("self", "cls"):
        found = found[1:]
    return [(p.name, p.kind) for p in found]


def overrides_nnunet(method):
    """Decorator of a trainer method that overrides nnUNetTrainer's method of the same name (innermost, below
    ``@classmethod``): nnUNetTrainer must have it, with the same parameters, when the trainer's module is imported."""
    name = method.__name__
    original = inspect.getattr_static(nnUNetTrainer, name, None)
    if original is None:
        raise incompatible(f"{method.__qualname__} overrides nnUNetTrainer.{name}, which nnU-Net no longer has "
                           f"(renamed?), so nnU-Net would never call it")
    original = getattr(original, "__func__", original)  # a staticmethod's or classmethod's function
    if parameters(original) != parameters(method):
        raise incompatible(f"{method.__qualname__}{inspect.signature(method)} overrides nnUNetTrainer.{name}"
                           f"{inspect.signature(original)}, whose parameters differ")
    setattr(method, OVERRIDE_MARK, True)
    return method


def set_nnunet_attributes(obj, **values) -> None:
    """``obj.name = value`` for each attribute that nnU-Net's ``obj`` already has; a name it lacks is an error."""
    missing = [name for name in values if not hasattr(obj, name)]
    if missing:
        raise incompatible(f"{type(obj).__name__} has no attribute {', '.join(missing)} (renamed?), so setting it "
                           f"would change nothing")
    for name, value in values.items():
        setattr(obj, name, value)
