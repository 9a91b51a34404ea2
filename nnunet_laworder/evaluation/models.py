"""Model identity: which trainer / plans / configuration a model is, how its network is built, what it costs.

A model is named as nnU-Net names its results folder (``TRAINER__PLANS__CONFIG``). Its network is built as
``nnUNetTrainer.initialize`` builds it, through the trainer class's own ``build_network_architecture``; its cost
(parameters, GMACs of one patch) is counted as ``nnunet-laworder complexity`` counts it. ``benchmark`` and
``compare`` both name and build their models here.
"""
from dataclasses import dataclass
from typing import Dict, List, Optional, Sequence

from nnunetv2.training.nnUNetTrainer.nnUNetTrainer import nnUNetTrainer
from nnunetv2.utilities.file_path_utilities import convert_trainer_plans_config_to_identifier
from nnunetv2.utilities.label_handling.label_handling import determine_num_input_channels
from nnunetv2.utilities.plans_handling.plans_handler import PlansManager

from nnunet_laworder.errors import InputError
from nnunet_laworder.evaluation.complexity import count_gmacs, count_parameters
from nnunet_laworder.nnunet_folders import DEFAULT_CONFIGURATIONS, DEFAULT_PLANS, check_configuration, load_plans
from nnunet_laworder.training.discovery import find_trainer_class
from nnunet_laworder.training.order_trainers import nnUNetTrainerMKUNet, nnUNetTrainerORDER

DEFAULT_TRAINER = "nnUNetTrainer"
DEFAULT_CONFIGURATION = dict(zip((2, 3), DEFAULT_CONFIGURATIONS))  # nnU-Net's default configuration per dimension


@dataclass(frozen=True)
class ModelIdentity:
    """One trainer / plans / configuration triple, named as nnU-Net names its results folder."""
    trainer: str
    plans: str
    configuration: str

    @property
    def identifier(self) -> str:
        return convert_trainer_plans_config_to_identifier(self.trainer, self.plans, self.configuration)


def pair_by_position(**lists: Optional[Sequence[str]]) -> List[dict]:
    """Zip option lists by position; a list of one value (or None) applies to every model.

    ``-c 2d 2d_order -tr nnUNetTrainer nnUNetTrainerORDER`` is two models; ``-c 2d_order -tr A B`` trains one
    configuration with two trainers. Lists of other unequal lengths are an error, never silently truncated."""
    lengths = {name: len(values) for name, values in lists.items() if values}
    n = max(lengths.values(), default=1)
    for name, length in lengths.items():
        if length not in (1, n):
            given = ", ".join(f"{k} {v}" for k, v in lengths.items())
            raise InputError(f"options are paired by position, so each list needs one value or {n} values "
                             f"(got {given}); {name} has {length}")
    return [{name: (values[i] if len(values) > 1 else values[0]) if values else None
             for name, values in lists.items()} for i in range(n)]


def default_trainer(configuration_manager) -> str:
    """The trainer for a configuration when ``-tr`` is not given: the plugin's for ORDER / MK-UNet, else nnU-Net's."""
    for cls in (nnUNetTrainerORDER, nnUNetTrainerMKUNet):
        net = cls.network_class
        if configuration_manager.network_arch_class_name == f"{net.__module__}.{net.__name__}":
            return cls.__name__
    return DEFAULT_TRAINER


def configuration_dim(plans: dict, configuration: str) -> int:
    return len(PlansManager(plans).get_configuration(configuration).patch_size)


def build_network(trainer_class, plans_manager, configuration_manager, dataset_json: dict, identifier: str,
                  deep_supervision: bool = True):
    """``(network, input channels)`` as ``nnUNetTrainer.initialize`` builds it (on the CPU)."""
    channels = determine_num_input_channels(plans_manager, configuration_manager, dataset_json)
    outputs = plans_manager.get_label_manager(dataset_json).num_segmentation_heads
    try:
        network = trainer_class.build_network_architecture(plans_manager, configuration_manager, channels, outputs,
                                                           deep_supervision)
    except RuntimeError as e:  # e.g. the ORDER trainer refusing a configuration that builds another network
        raise InputError(f"{identifier}: {e}") from None
    return network, channels


def cost_of(network, input_channels: int, patch_size: Sequence[int]) -> dict:
    """Parameters and GMACs of one patch, counted as ``nnunet-laworder complexity`` counts them (the network as
    trained, deep-supervision heads included: 1x1 convolutions, a fraction of a percent)."""
    return {"parameters": count_parameters(network), "gmacs": count_gmacs(network, (input_channels, *patch_size))}


def network_cost(trainer: str, plans: dict, dataset_json: dict, configuration: str) -> dict:
    """Parameters and GMACs of a trained model's network, built from the plans the way its trainer builds it.

    A trainer that cannot be imported here (trained elsewhere) falls back to nnU-Net's ``get_network_from_plans``
    on the plans' architecture, which is what nnUNetTrainer itself does; ``built_by`` says which was used."""
    try:
        trainer_class, built_by = find_trainer_class(trainer), trainer
    except InputError:
        trainer_class, built_by = nnUNetTrainer, "get_network_from_plans (trainer not importable here)"
    plans_manager = PlansManager(plans)
    configuration_manager = plans_manager.get_configuration(configuration)
    identifier = ModelIdentity(trainer, plans_manager.plans_name, configuration).identifier
    network, channels = build_network(trainer_class, plans_manager, configuration_manager, dataset_json, identifier)
    patch = list(configuration_manager.patch_size)
    return {**cost_of(network, channels, patch), "patch_size": patch, "built_by": built_by,
            "network_class": configuration_manager.network_arch_class_name}


def resolve_models(dataset: str, configurations: Sequence[str], trainers: Optional[Sequence[str]],
                   plans_names: Optional[Sequence[str]]):
    """The requested models, plus nnU-Net's default configuration of each dimension as the reference.

    Returns ``(models, plans by identifier, the references added (not requested), reference identifier per
    dimension, notes)``.
    The reference is the first requested model on ``2d`` / ``3d_fullres`` of nnUNetPlans (any trainer); where
    none was requested, ``nnUNetTrainer`` on it is added."""
    loaded: Dict[str, dict] = {}

    def plans_of(name: str) -> dict:
        if name not in loaded:
            loaded[name] = load_plans(dataset, name)
        return loaded[name]

    models, plans_by_model, dims, added, notes = [], {}, {}, [], []
    for entry in pair_by_position(configuration=configurations, trainer=trainers, plans=plans_names):
        plans_name = entry["plans"] or DEFAULT_PLANS
        plans = plans_of(plans_name)
        check_configuration(plans, entry["configuration"], f"{plans_name}.json")
        trainer = entry["trainer"] or default_trainer(PlansManager(plans).get_configuration(entry["configuration"]))
        model = ModelIdentity(trainer, plans_name, entry["configuration"])
        if model.identifier in plans_by_model:
            raise InputError(f"{model.identifier} is listed twice")
        models.append(model)
        plans_by_model[model.identifier] = plans
        dims[model.identifier] = configuration_dim(plans, model.configuration)
    references = {}
    for dim in sorted(set(dims.values())):
        default = DEFAULT_CONFIGURATION[dim]
        candidates = [m for m in models if dims[m.identifier] == dim and m.configuration == default
                      and m.plans == DEFAULT_PLANS]
        if candidates:
            references[dim] = candidates[0].identifier
            continue
        try:
            plans = plans_of(DEFAULT_PLANS)
        except InputError:
            plans = {"configurations": {}}
        if default not in plans["configurations"]:
            notes.append(f"no {DEFAULT_PLANS} configuration '{default}' to compare the {dim}D models against: "
                         f"their ratios are left out")
            continue
        model = ModelIdentity(DEFAULT_TRAINER, DEFAULT_PLANS, default)
        models.append(model)
        added.append(model)
        plans_by_model[model.identifier] = plans
        dims[model.identifier] = dim
        references[dim] = model.identifier
        notes.append(f"{model.identifier} added as the {dim}D reference (nnU-Net's default configuration)")
    return models, plans_by_model, added, references, notes
