"""``nnunet-laworder benchmark``: the cost of each configuration's network, measured side by side.

Every network is built as nnU-Net builds it: the trainer class (``-tr``, or the one that trains that
architecture) is instantiated on the dataset's plans and its own ``build_network_architecture``,
``configure_optimizers``, ``_build_loss`` and ``train_step`` are used, so a training step is exactly nnU-Net's
(its loss with deep supervision, gradient clipping, AMP and grad scaler on CUDA, torch.compile where nnU-Net
would compile). Forward latency is that of ``nnUNetv2_predict`` for one patch: eval mode, deep supervision off,
``torch.inference_mode``, autocast on CUDA. Parameters and GMACs are counted as ``nnunet-laworder complexity``
counts them. Inputs and targets are random tensors of the planned shapes (a step
costs the same whatever the values), so no preprocessed data is read.

All networks live in one process and are timed with interleaved repetitions (each repetition runs every model
once, the order alternating), so drift in machine load hits them alike. Peak memory is measured beforehand in
one child process per model: on CUDA ``torch.cuda.max_memory_allocated``, on CPU (Linux) the peak RSS
(``VmHWM``, reset after the child's imports) above the RSS at that point, so the interpreter, torch and nnU-Net
do not count; ``ru_maxrss`` would not do, it cannot be reset and Linux carries it over from the forking parent.
"""
import contextlib
import io
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from copy import deepcopy
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, List, Optional, Sequence

from nnunet_laworder.errors import InputError

DEFAULT_PLANS = "nnUNetPlans"
DEFAULT_TRAINER = "nnUNetTrainer"
DEFAULT_CONFIGURATION = {2: "2d", 3: "3d_fullres"}  # nnU-Net's default configuration per dimension
MEMORY_STEPS = 3  # training steps per memory child: the optimiser state exists from the first, the peak by the second
FIGURES = ("parameters", "gmacs", "forward_ms", "train_step_ms", "train_peak_bytes", "forward_peak_bytes")
MIB = 2 ** 20


@dataclass(frozen=True)
class ModelSpec:
    """One trainer / plans / configuration triple, named as nnU-Net names its results folder."""
    trainer: str
    plans: str
    configuration: str

    @property
    def identifier(self) -> str:
        from nnunetv2.utilities.file_path_utilities import convert_trainer_plans_config_to_identifier

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


def find_trainer_class(name: str):
    """nnU-Net's own search (its package, then nnUNet_extTrainer), the plugin's trainer folder always included."""
    from nnunetv2.utilities.find_objects import recursive_find_trainer_class_by_name

    from nnunet_laworder.training.cli import trainer_folder

    paths = [p for p in os.environ.get("nnUNet_extTrainer", "").split(os.pathsep) if p]
    search = os.pathsep.join(paths + [trainer_folder()] if trainer_folder() not in paths else paths)
    try:  # nnU-Net narrates its search on stdout, which holds our table
        with environment("nnUNet_extTrainer", search), contextlib.redirect_stdout(io.StringIO()):
            return recursive_find_trainer_class_by_name(name)
    except RuntimeError:
        raise InputError(f"trainer {name} not found in nnunetv2 or in the folders {search}") from None


def default_trainer(configuration_manager) -> str:
    """The trainer for a configuration when ``-tr`` is not given: the plugin's for ORDER / MK-UNet, else nnU-Net's."""
    from nnunet_laworder.training.order_trainers import nnUNetTrainerMKUNet, nnUNetTrainerORDER

    for cls in (nnUNetTrainerORDER, nnUNetTrainerMKUNet):
        net = cls.network_class
        if configuration_manager.network_arch_class_name == f"{net.__module__}.{net.__name__}":
            return cls.__name__
    return DEFAULT_TRAINER


def load_plans(dataset: str, plans: str) -> dict:
    from nnunet_laworder.planning.plans_file import preprocessed_dataset_folder

    plans_file = preprocessed_dataset_folder(dataset) / f"{plans}.json"
    if not plans_file.is_file():
        raise InputError(f"plans file {plans_file} not found; run nnUNetv2_plan_and_preprocess -d {dataset} "
                         f"(with -pl for other plans) or give the plans identifier with -p")
    return json.loads(plans_file.read_text())


def check_configuration(plans: dict, configuration: str, where: str) -> None:
    available = plans["configurations"]
    if configuration not in available:
        raise InputError(f"{where} has no configuration '{configuration}' (available: {', '.join(available)}); "
                         f"ORDER / MK-UNet configurations are added with `nnunet-laworder plans`")


def configuration_dim(plans: dict, configuration: str) -> int:
    from nnunetv2.utilities.plans_handling.plans_handler import PlansManager

    return len(PlansManager(plans).get_configuration(configuration).patch_size)


def build_network(trainer_class, plans_manager, configuration_manager, dataset_json: dict, identifier: str,
                  deep_supervision: bool = True):
    """``(network, input channels)`` as ``nnUNetTrainer.initialize`` builds it (on the CPU)."""
    from nnunetv2.utilities.label_handling.label_handling import determine_num_input_channels

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
    from nnunet_laworder.evaluation.complexity import count_gmacs, count_parameters

    return {"parameters": count_parameters(network), "gmacs": count_gmacs(network, (input_channels, *patch_size))}


def network_cost(trainer: str, plans: dict, dataset_json: dict, configuration: str) -> dict:
    """Parameters and GMACs of a trained model's network, built from the plans the way its trainer builds it.

    A trainer that cannot be imported here (trained elsewhere) falls back to nnU-Net's ``get_network_from_plans``
    on the plans' architecture, which is what nnUNetTrainer itself does; ``built_by`` says which was used."""
    from nnunetv2.training.nnUNetTrainer.nnUNetTrainer import nnUNetTrainer
    from nnunetv2.utilities.plans_handling.plans_handler import PlansManager

    try:
        trainer_class, built_by = find_trainer_class(trainer), trainer
    except InputError:
        trainer_class, built_by = nnUNetTrainer, "get_network_from_plans (trainer not importable here)"
    plans_manager = PlansManager(plans)
    configuration_manager = plans_manager.get_configuration(configuration)
    identifier = ModelSpec(trainer, plans_manager.plans_name, configuration).identifier
    network, channels = build_network(trainer_class, plans_manager, configuration_manager, dataset_json, identifier)
    patch = list(configuration_manager.patch_size)
    return {**cost_of(network, channels, patch), "patch_size": patch, "built_by": built_by,
            "network_class": configuration_manager.network_arch_class_name}


def check_device(name: str):
    import torch

    device = torch.device(name)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise InputError("-device cuda: no CUDA device is available to torch here")
    if device.type == "mps" and not torch.backends.mps.is_available():
        raise InputError("-device mps: the MPS backend is not available here")
    return device


def synchronize(device) -> None:
    import torch

    if device.type == "cuda":
        torch.cuda.synchronize(device)
    elif device.type == "mps":
        torch.mps.synchronize()


@contextlib.contextmanager
def environment(name: str, value: str):
    old = os.environ.get(name)
    os.environ[name] = value
    try:
        yield
    finally:
        if old is None:
            del os.environ[name]
        else:
            os.environ[name] = old


class Runner:
    """One model: nnU-Net's trainer object with its network, optimiser and loss, plus fixed random inputs."""

    def __init__(self, spec: ModelSpec, plans: dict, dataset_json: dict, device, batch_size: Optional[int],
                 scratch: Path):
        """The trainer object only; :meth:`build` makes the network (two steps, so that a memory child can take
        its baseline after every import and before any of the network's memory)."""
        self.spec = spec
        self.dataset_json = dataset_json
        trainer_class = find_trainer_class(spec.trainer)
        # the trainer writes a log folder under nnUNet_results: a scratch folder, not the user's results
        with environment("nnUNet_results", str(scratch)), contextlib.redirect_stdout(io.StringIO()):
            self.trainer = trainer_class(plans=dict(deepcopy(plans), continue_training=False),
                                         configuration=spec.configuration, fold=0, dataset_json=dataset_json,
                                         device=device)
        self.device = self.trainer.device
        self.patch_size = list(self.trainer.configuration_manager.patch_size)
        self.batch_size = batch_size or self.trainer.configuration_manager.batch_size
        self.cost, self.compiled, self.image, self._batch = {}, False, None, None

    def build(self, count_cost: bool = True) -> "Runner":
        """What nnUNetTrainer.initialize does, less the dataset class (a benchmark reads no preprocessed data)."""
        import torch

        trainer = self.trainer
        network, channels = build_network(type(trainer), trainer.plans_manager, trainer.configuration_manager,
                                          self.dataset_json, self.spec.identifier, trainer.enable_deep_supervision)
        trainer.num_input_channels = channels
        if count_cost:
            self.cost = cost_of(network, channels, self.patch_size)
        trainer.network = network.to(self.device)
        self.compiled = bool(trainer._do_i_compile())
        if self.compiled:
            trainer.network = torch.compile(trainer.network)
        trainer.optimizer, trainer.lr_scheduler = trainer.configure_optimizers()
        trainer.loss = trainer._build_loss()
        trainer.was_initialized = True
        self.image = torch.randn(1, channels, *self.patch_size, device=self.device)
        return self

    def describe(self) -> dict:
        t = self.trainer
        return {"identifier": self.spec.identifier, "trainer": self.spec.trainer, "plans": self.spec.plans,
                "configuration": self.spec.configuration,
                "network_class": t.configuration_manager.network_arch_class_name, "dim": len(self.patch_size),
                "patch_size": self.patch_size, "batch_size": self.batch_size, "input_channels": t.num_input_channels,
                "outputs": t.label_manager.num_segmentation_heads, "regions": bool(t.label_manager.has_regions),
                "deep_supervision_outputs": len(t._get_deep_supervision_scales() or [None]),
                "optimizer": type(t.optimizer).__name__, "loss": type(t.loss).__name__, "compiled": self.compiled,
                "autocast": self.device.type == "cuda"}

    def batch(self) -> dict:
        """Random images and targets at every deep-supervision scale, shaped as nnU-Net's data loader makes them."""
        import torch

        if self._batch is None:
            t = self.trainer
            g = torch.Generator().manual_seed(0)
            data = torch.randn(self.batch_size, t.num_input_channels, *self.patch_size, generator=g)
            label_manager = t.label_manager
            scales = t._get_deep_supervision_scales()
            targets = []
            for scale in scales or [[1.0] * len(self.patch_size)]:
                shape = [round(p * s) for p, s in zip(self.patch_size, scale)]
                if label_manager.has_regions:  # one binary map per region, as nnU-Net's region transform makes
                    target = torch.randint(0, 2, (self.batch_size, label_manager.num_segmentation_heads, *shape),
                                           generator=g)
                else:
                    target = torch.randint(0, label_manager.num_segmentation_heads, (self.batch_size, 1, *shape),
                                           generator=g)
                targets.append(target.float().to(self.device))
            self._batch = {"data": data.to(self.device), "target": targets if scales else targets[0]}
        # made at the first training step, so that the forward-pass memory does not include it
        return self._batch

    def forward(self) -> None:
        """One patch as nnUNetv2_predict runs it."""
        import torch

        network = self.trainer.network
        network.eval()
        self.trainer.set_deep_supervision_enabled(False)
        autocast = torch.autocast(self.device.type) if self.device.type == "cuda" else contextlib.nullcontext()
        with torch.inference_mode(), autocast:
            network(self.image)

    def train_step(self) -> None:
        """nnU-Net's own training step (it ends with ``loss.cpu()``, a synchronisation point, as in training)."""
        self.trainer.network.train()
        self.trainer.set_deep_supervision_enabled(self.trainer.enable_deep_supervision)
        self.trainer.train_step(self.batch())

    def timed(self, step) -> float:
        synchronize(self.device)
        start = time.perf_counter()
        step()
        synchronize(self.device)
        return time.perf_counter() - start


def proc_status_bytes(field: str) -> Optional[int]:
    """A memory field of /proc/self/status (``VmRSS``, ``VmHWM``) in bytes; None where there is no /proc."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith(field + ":"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return None


def reset_peak_rss() -> int:
    """Reset this process's peak RSS to its current RSS and return that (the baseline of a memory child).

    The imports peak above the RSS they leave behind; without the reset a small network would never raise the
    high-water mark. Linux resets it on writing 5 to /proc/self/clear_refs."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
    except OSError:
        raise RuntimeError("peak RSS cannot be reset here (no writable /proc/self/clear_refs); run with "
                           "--no-memory") from None
    return proc_status_bytes("VmRSS")


def load_kernels(device, dim: int) -> None:
    """A tiny convolution forward and backward, so that the libraries' one-off memory (oneDNN, cuDNN handles)
    falls into the baseline rather than onto the first network measured."""
    import torch

    conv = getattr(torch.nn, f"Conv{dim}d")(1, 1, 3).to(device)
    conv(torch.zeros(1, 1, *[8] * dim, device=device)).sum().backward()


def memory_child(config: dict) -> dict:
    """Runs in a fresh interpreter for one model: peak memory of forward passes, then of training steps."""
    import torch

    torch.set_num_threads(config["threads"])
    device = torch.device(config["device"])
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True  # as nnUNetv2_train sets it
    spec = ModelSpec(config["trainer"], config["plans"], config["configuration"])
    plans = json.loads(Path(config["plans_file"]).read_text())
    dataset_json = json.loads(Path(config["dataset_json"]).read_text())
    with tempfile.TemporaryDirectory() as scratch:
        runner = Runner(spec, plans, dataset_json, device, config["batch_size"], Path(scratch))
        load_kernels(runner.device, len(runner.patch_size))
        baseline = reset_peak_rss() if device.type == "cpu" else None
        runner.build(count_cost=False)
        if device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(runner.device)
        for _ in range(2):
            runner.forward()
        synchronize(runner.device)
        forward_peak = torch.cuda.max_memory_allocated(runner.device) if device.type == "cuda" else \
            proc_status_bytes("VmHWM")
        if device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(runner.device)
        for _ in range(MEMORY_STEPS):
            runner.train_step()
        synchronize(runner.device)
        train_peak = torch.cuda.max_memory_allocated(runner.device) if device.type == "cuda" else \
            proc_status_bytes("VmHWM")
    if device.type == "cpu":
        return {"kind": "cpu_peak_rss_above_baseline", "baseline_rss_bytes": baseline, "peak_rss_bytes": train_peak,
                "forward_peak_bytes": forward_peak - baseline, "train_peak_bytes": train_peak - baseline}
    return {"kind": "cuda_max_allocated", "forward_peak_bytes": forward_peak, "train_peak_bytes": train_peak}


def measure_memory(spec: ModelSpec, plans_file: Path, dataset_json_file: Path, device, threads: int,
                   batch_size: Optional[int]) -> dict:
    config = {"trainer": spec.trainer, "plans": spec.plans, "configuration": spec.configuration,
              "plans_file": str(plans_file), "dataset_json": str(dataset_json_file), "device": str(device),
              "threads": threads, "batch_size": batch_size}
    code = ("import json, sys; from nnunet_laworder.evaluation.benchmark import memory_child; "
            "print(json.dumps(memory_child(json.loads(sys.stdin.read()))))")
    result = subprocess.run([sys.executable, "-c", code], input=json.dumps(config), capture_output=True, text=True)
    if result.returncode != 0:
        raise RuntimeError(f"the memory measurement of {spec.identifier} failed:\n{result.stderr[-3000:]}")
    return json.loads(result.stdout.strip().splitlines()[-1])


def spread(seconds: List[float]) -> dict:
    """Median and spread in milliseconds (quartiles need two samples; with one they equal the median)."""
    ms = [1e3 * s for s in seconds]
    q1, q3 = (statistics.quantiles(ms, n=4, method="inclusive")[::2] if len(ms) > 1 else (ms[0], ms[0]))
    return {"median": statistics.median(ms), "q1": q1, "q3": q3, "iqr": q3 - q1, "min": min(ms), "max": max(ms),
            "samples": ms}


def time_interleaved(runners: List[Runner], warmup: int, repeats: int) -> Dict[str, dict]:
    """Every repetition runs each model's forward pass and training step once, the model order alternating."""
    for _ in range(warmup):
        for runner in runners:
            runner.train_step()  # also creates the optimiser state, before anything is timed
            runner.forward()
    times = {r.spec.identifier: {"forward": [], "train_step": []} for r in runners}
    for rep in range(repeats):
        for runner in (runners if rep % 2 == 0 else runners[::-1]):
            times[runner.spec.identifier]["forward"].append(runner.timed(runner.forward))
            times[runner.spec.identifier]["train_step"].append(runner.timed(runner.train_step))
    return times


def cpu_name() -> str:
    """The CPU model from /proc/cpuinfo where there is one (Linux), else what ``platform`` knows."""
    try:
        with open("/proc/cpuinfo") as f:
            return next(line.split(":", 1)[1].strip() for line in f if line.startswith("model name"))
    except (OSError, StopIteration):
        return platform.processor() or platform.machine()


def hardware(device, threads: int) -> str:
    import torch

    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    if device.type == "mps":
        return f"Apple MPS ({platform.machine()})"
    return f"{cpu_name()}, {threads} torch threads"


def resolve_models(dataset: str, configurations: Sequence[str], trainers: Optional[Sequence[str]],
                   plans_names: Optional[Sequence[str]]):
    """The requested models, plus nnU-Net's default configuration of each dimension as the reference.

    Returns ``(specs, plans by identifier, dimension by identifier, reference identifier per dimension, notes)``.
    The reference is the first requested model on ``2d`` / ``3d_fullres`` of nnUNetPlans (any trainer); where
    none was requested, ``nnUNetTrainer`` on it is added."""
    from nnunetv2.utilities.plans_handling.plans_handler import PlansManager

    loaded: Dict[str, dict] = {}

    def plans_of(name: str) -> dict:
        if name not in loaded:
            loaded[name] = load_plans(dataset, name)
        return loaded[name]

    specs, plans_by_model, dims, notes = [], {}, {}, []
    for entry in pair_by_position(configuration=configurations, trainer=trainers, plans=plans_names):
        plans_name = entry["plans"] or DEFAULT_PLANS
        plans = plans_of(plans_name)
        check_configuration(plans, entry["configuration"], f"{plans_name}.json")
        trainer = entry["trainer"] or default_trainer(PlansManager(plans).get_configuration(entry["configuration"]))
        spec = ModelSpec(trainer, plans_name, entry["configuration"])
        if spec.identifier in plans_by_model:
            raise InputError(f"{spec.identifier} is listed twice")
        specs.append(spec)
        plans_by_model[spec.identifier] = plans
        dims[spec.identifier] = configuration_dim(plans, spec.configuration)
    references = {}
    for dim in sorted(set(dims.values())):
        default = DEFAULT_CONFIGURATION[dim]
        candidates = [s for s in specs if dims[s.identifier] == dim and s.configuration == default
                      and s.plans == DEFAULT_PLANS]
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
        spec = ModelSpec(DEFAULT_TRAINER, DEFAULT_PLANS, default)
        specs.append(spec)
        plans_by_model[spec.identifier] = plans
        dims[spec.identifier] = dim
        references[dim] = spec.identifier
        notes.append(f"{spec.identifier} added as the {dim}D reference (nnU-Net's default configuration)")
    return specs, plans_by_model, dims, references, notes


def add_ratios(rows: List[dict], references: Dict[int, str]) -> None:
    by_id = {row["identifier"]: row for row in rows}
    for row in rows:
        reference = by_id.get(references.get(row["dim"]))
        row["reference"] = reference["identifier"] if reference else None
        row["is_reference"] = reference is row
        row["ratios"] = {}
        for figure in FIGURES:
            value, ref = row.get(figure), reference.get(figure) if reference else None
            row["ratios"][figure] = value / ref if value is not None and ref else None


def run_benchmark(dataset: str, configurations: Sequence[str], trainers: Optional[Sequence[str]] = None,
                  plans_names: Optional[Sequence[str]] = None, device: Optional[str] = None,
                  threads: Optional[int] = None, repeats: int = 10, warmup: int = 2,
                  batch_size: Optional[int] = None, memory: bool = True) -> dict:
    """Measures the models (see the module docstring); returns the report that --json writes."""
    import torch

    from nnunet_laworder.planning.plans_file import preprocessed_dataset_folder

    if repeats < 1 or warmup < 0 or (threads is not None and threads < 1) or (batch_size is not None
                                                                             and batch_size < 1):
        raise InputError("--repeats, --threads and --batch-size must be at least 1, --warmup at least 0")
    torch_device = check_device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    threads = threads or torch.get_num_threads()
    torch.set_num_threads(threads)
    if torch_device.type == "cuda":
        torch.backends.cudnn.benchmark = True  # as nnUNetv2_train sets it
    folder = preprocessed_dataset_folder(dataset)
    specs, plans_by_model, _, references, notes = resolve_models(dataset, configurations, trainers, plans_names)
    dataset_json_file = folder / "dataset.json"
    dataset_json = json.loads(dataset_json_file.read_text())
    started = time.time()
    with tempfile.TemporaryDirectory() as scratch:
        # built first, so that a wrong trainer or configuration fails before anything is measured
        runners = [Runner(s, plans_by_model[s.identifier], dataset_json, torch_device, batch_size,
                          Path(scratch)).build() for s in specs]
        if memory and torch_device.type == "mps":
            memory = False
            notes.append("peak memory is not measured on mps (torch reports no peak there)")
        if memory and torch_device.type == "cpu" and not Path("/proc/self/clear_refs").exists():
            memory = False
            notes.append("peak memory is not measured: the CPU peak RSS needs Linux's /proc/self/clear_refs")
        memory_results = {s.identifier: measure_memory(s, folder / f"{s.plans}.json", dataset_json_file,
                                                       torch_device, threads, batch_size)
                          for s in specs} if memory else {}
        times = time_interleaved(runners, warmup, repeats)
        rows = []
        for runner in runners:
            identifier = runner.spec.identifier
            forward, step = spread(times[identifier]["forward"]), spread(times[identifier]["train_step"])
            mem = memory_results.get(identifier, {})
            rows.append({**runner.describe(), **runner.cost, "forward_ms": forward["median"],
                         "train_step_ms": step["median"], "forward_timing": forward, "train_step_timing": step,
                         "forward_peak_bytes": mem.get("forward_peak_bytes"),
                         "train_peak_bytes": mem.get("train_peak_bytes"), "memory": mem or None})
    add_ratios(rows, references)
    settings = {"dataset": dataset, "device": str(torch_device), "hardware": hardware(torch_device, threads),
                "threads": threads, "torch": torch.__version__, "nnunetv2": package_version("nnunetv2"),
                "warmup": warmup, "repeats": repeats, "batch_size_override": batch_size,
                "timing": "one process, interleaved repetitions (model order alternating), device synchronised "
                          "around each timed call; forward: batch 1, eval, deep supervision off, inference_mode, "
                          "autocast on CUDA; training step: the trainer's own train_step on random data at the "
                          "batch size",
                "memory": None if not memory_results else (
                    "CUDA max_memory_allocated in one child process per model" if torch_device.type == "cuda" else
                    "peak RSS (VmHWM) of one child process per model above its RSS after the imports"),
                "memory_steps": MEMORY_STEPS, "wall_seconds": time.time() - started}
    return {"settings": settings, "references": {f"{d}d": r for d, r in references.items()}, "notes": notes,
            "rows": rows}


def package_version(name: str) -> Optional[str]:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(name)
    except PackageNotFoundError:
        return None


def ratio_text(ratio: Optional[float]) -> str:
    return "" if ratio is None else f" ({ratio:.3g}x)"


def mib(value: Optional[int]) -> str:
    return "-" if value is None else f"{value / MIB:,.1f}"


def markdown_table(report: dict) -> str:
    s = report["settings"]
    refs = ", ".join(report["references"].values()) or "none"
    lines = [f"nnU-Net network cost on {s['hardware']} ({s['device']}, torch {s['torch']}), dataset {s['dataset']}; "
             f"{s['warmup']} warm-up + {s['repeats']} interleaved repetitions.",
             f"(x) = ratio to nnU-Net's default configuration of the same dimension (the reference row, 1x): {refs}.",
             "Forward: one patch, batch 1, as nnUNetv2_predict runs it. Train step: nnU-Net's train_step at the "
             "batch size shown. Memory: " + (s["memory"] or "not measured") + ".", "",
             "| model | patch x batch | parameters | GMACs | forward ms, median [IQR] | train step ms, median [IQR] "
             "| peak memory, train MiB | peak memory, forward MiB |",
             "|---|---|---:|---:|---:|---:|---:|---:|"]
    for row in report["rows"]:
        r = row["ratios"]
        name = row["identifier"] + (" **(reference)**" if row["is_reference"] else "")
        f, t = row["forward_timing"], row["train_step_timing"]
        lines.append(
            f"| {name} | {'x'.join(map(str, row['patch_size']))} x {row['batch_size']} | "
            f"{row['parameters']:,}{ratio_text(r['parameters'])} | {row['gmacs']:.3f}{ratio_text(r['gmacs'])} | "
            f"{f['median']:.1f} [{f['iqr']:.1f}]{ratio_text(r['forward_ms'])} | "
            f"{t['median']:.1f} [{t['iqr']:.1f}]{ratio_text(r['train_step_ms'])} | "
            f"{mib(row['train_peak_bytes'])}{ratio_text(r['train_peak_bytes'])} | "
            f"{mib(row['forward_peak_bytes'])}{ratio_text(r['forward_peak_bytes'])} |")
    lines += [""] + [f"note: {note}" for note in report["notes"]]
    return "\n".join(lines).rstrip()


def plot_benchmark(report: dict, path: Path) -> None:
    """GMACs and forward latency against parameters, one point per model, nnU-Net's default marked."""
    from nnunet_laworder.evaluation import plots

    rows = report["rows"]
    labels = plots.short_labels([row["identifier"] for row in rows])
    reference = next((i for i, row in enumerate(rows) if row["is_reference"]), None)
    params = [row["parameters"] for row in rows]
    fig, axes = plots.panels(3, f"dataset {report['settings']['dataset']}, {report['settings']['hardware']}")
    plots.scatter_models(axes[0], labels, params, [row["gmacs"] for row in rows], reference, "parameters",
                         "GMACs per patch", logy=True)
    plots.scatter_models(axes[1], labels, params, [row["forward_ms"] for row in rows], reference, "parameters",
                         "forward ms per patch (median, bars: quartiles)", logy=True,
                         yerr=[quartile_bars(row["forward_timing"]) for row in rows])
    plots.scatter_models(axes[2], labels, params, [row["train_step_ms"] for row in rows], reference, "parameters",
                         "training step ms (median, bars: quartiles)", logy=True,
                         yerr=[quartile_bars(row["train_step_timing"]) for row in rows])
    plots.save_figure(fig, path)
    plots.close(fig)


def quartile_bars(timing: dict) -> tuple:
    return timing["median"] - timing["q1"], timing["q3"] - timing["median"]
