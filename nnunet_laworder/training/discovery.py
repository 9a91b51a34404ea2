"""How nnU-Net finds the plugin's trainers: the installed ``trainers/`` folder of thin re-exports on
``nnUNet_extTrainer`` (never the package itself, which would break pickling and module identity)."""
import contextlib
import io
import os
import warnings

import nnunet_laworder_trainers
from nnunetv2.utilities.find_objects import recursive_find_trainer_class_by_name

from nnunet_laworder.errors import InputError


def trainer_folder() -> str:
    """The installed folder of thin trainer re-exports."""
    return os.path.abspath(list(nnunet_laworder_trainers.__path__)[0])


@contextlib.contextmanager
def environment(name: str, value: str):
    """``os.environ[name] = value`` for the block, then as it was."""
    old = os.environ.get(name)
    os.environ[name] = value
    try:
        yield
    finally:
        if old is None:
            del os.environ[name]
        else:
            os.environ[name] = old


@contextlib.contextmanager
def plugin_trainers():
    """nnU-Net's trainer search in this process also looks in the plugin's folder (``eval "$(nnunet-laworder
    env)"`` does the same for child processes); a folder the user set stays first."""
    paths = [p for p in os.environ.get("nnUNet_extTrainer", "").split(os.pathsep) if p]
    if trainer_folder() not in paths:
        paths.append(trainer_folder())
    with environment("nnUNet_extTrainer", os.pathsep.join(paths)):
        yield


def find_trainer_class(name: str):
    """nnU-Net's own search (its package, then nnUNet_extTrainer), the plugin's trainer folder always included."""
    with plugin_trainers():
        search = os.environ["nnUNet_extTrainer"]
        # nnU-Net narrates its search on stdout, which may hold a table; the search imports every nnU-Net trainer
        # module, whose dependencies warn of their own deprecations (timm, through the Primus trainers)
        try:
            with contextlib.redirect_stdout(io.StringIO()), warnings.catch_warnings():
                warnings.simplefilter("ignore", FutureWarning)
                warnings.simplefilter("ignore", DeprecationWarning)
                return recursive_find_trainer_class_by_name(name)
        except RuntimeError:
            raise InputError(f"trainer {name} not found in nnunetv2 or in the folders {search}") from None
