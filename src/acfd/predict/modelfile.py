"""What a detector weights file is, in one place: :class:`ModelFile`.

A model file is a ``.safetensors`` weights file (or a training checkpoint ``.pt``, or an ONNX
export of either) and everything that travels with it:

* the variant and its full :class:`~acfd.config.ModelConfig` (metadata keys ``model``, ``config``);
* the size-aware score calibration (``acfd calibrate``, key ``score_calibration``);
* the recommended inference presets (:mod:`acfd.predict.presets`: metadata key ``acfd_presets`` or
  ``NAME-presets.json`` beside the file);
* the second-stage verifier, ``NAME-verifier.safetensors`` beside the file, tied to it by the
  file's fingerprint (the first 16 hex digits of its SHA-256), which the verifier stores;
* the cache key of its ONNX export (the file's SHA-256, :func:`acfd.deploy.export.cached_onnx`);
* for an ONNX export (``acfd export``, :meth:`ModelFile.export_onnx`): all of the above in the
  ONNX metadata, the weights' fingerprint included, and the verifier copied beside it.

:class:`~acfd.predict.detector.Detector` opens its weights with :meth:`ModelFile.open` and ``acfd
export`` writes exports with :meth:`ModelFile.export_onnx`; the functions below read and write the
tensors (one-line errors naming the file).

Example::

    from acfd.predict.modelfile import ModelFile

    mf = ModelFile.open()                  # the shipped weights
    mf.name, mf.presets["interactive"], mf.calibration is not None
"""

from __future__ import annotations

import json
import logging
import os
import shutil
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import load_file, save_file

from acfd.config import SHIPPED_DETECTOR, WEIGHTS_DIR, ModelConfig, config_to_dict, model_config_from_dict
from acfd.deploy.export import cached_onnx, export_onnx
from acfd.deploy.onnx_runner import OnnxRunner
from acfd.deploy.precision import float_graph_stem, int8_graph_path, resolve_precision
from acfd.detection.calibration import METADATA_KEY as CALIBRATION_KEY
from acfd.detection.calibration import ScoreCalibration
from acfd.detection.verifier import BoxVerifier, load_verifier
from acfd.models.detector import ACFD
from acfd.models.registry import get_model_config, list_models
from acfd.predict.presets import METADATA_KEY as PRESETS_KEY
from acfd.predict.presets import PRESET_NAMES, Preset, presets_path, presets_to_json, read_presets
from acfd.utils import atomic_path, file_sha256

logger = logging.getLogger(__name__)

#: ONNX metadata: the fingerprint of the weights file an export came from, so that the verifier
#: fitted for those weights is recognised beside the ``.onnx`` too.
META_SOURCE_WEIGHTS = "acfd_source_weights"
#: Suffixes taken for weights files (not variant names) when the file does not exist yet.
WEIGHTS_SUFFIXES = (".safetensors", ".pt", ".pth", ".ckpt", ".onnx")


def shipped_weights(name: str) -> Path | None:
    """The weights shipped inside the package for the variant ``name``, or ``None``."""
    path = WEIGHTS_DIR / f"{name}.safetensors"
    return path if path.is_file() else None


def default_weights_path() -> Path | None:
    """The shipped detector's weights inside the package, or ``None`` if this install has none."""
    return shipped_weights(SHIPPED_DETECTOR)


def verifier_path(weights: str | os.PathLike[str]) -> Path:
    """Where the verifier of a weights (or ONNX) file lives: ``NAME-verifier.safetensors`` beside it
    (an int8 graph ``NAME-int8.onnx`` shares its float32 graph's)."""
    p = Path(weights)
    stem = float_graph_stem(p) if _is_onnx(p) else p.stem
    return p.with_name(f"{stem}-verifier.safetensors")


def _is_onnx(value: object) -> bool:
    return isinstance(value, (str, os.PathLike)) and str(value).lower().endswith(".onnx")


def _no_torch_weights(path: Path) -> ValueError:
    return ValueError(f"{path}: an ONNX export holds no PyTorch weights; run it with Detector(model=PATH) "
                      "or acfd detect --model PATH, or give the .safetensors / .pt file it came from")


def _first_line(exc: BaseException) -> str:
    """The first line of an exception's message (its type when it has none), for one-line errors."""
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


# -- tensors and metadata ------------------------------------------------------------------------


def save_weights(model: ACFD, path: str | os.PathLike[str], half: bool = False,
                 extra: dict[str, str] | None = None) -> Path:
    """Save ``model``'s state dict as safetensors with its config in the metadata (atomic).

    Args:
        model: the network.
        path: the ``.safetensors`` file to write.
        half: store floating-point tensors as float16.
        extra: more metadata entries (e.g. ``{"dev_ap50": "0.66"}``).
    """
    state = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    if half:
        state = {k: v.half() if v.is_floating_point() else v for k, v in state.items()}
    metadata = {"model": model.cfg.name, "config": json.dumps(config_to_dict(model.cfg))}
    metadata.update(extra or {})
    with atomic_path(path) as tmp:
        save_file(state, str(tmp), metadata=metadata)
    return Path(path)


def read_metadata(path: str | os.PathLike[str]) -> dict[str, str]:
    """The string metadata of a ``.safetensors`` weights file (``{}`` for a ``.pt`` checkpoint).

    Raises:
        FileNotFoundError / ValueError: one line naming the file.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: weights file not found")
    if path.suffix != ".safetensors":
        return {}
    try:
        with safe_open(str(path), framework="pt") as f:
            return dict(f.metadata() or {})
    except (SafetensorError, OSError, RuntimeError) as exc:
        raise ValueError(f"{path}: not a readable .safetensors file ({_first_line(exc)})") from None


def write_metadata(source: str | os.PathLike[str], out: str | os.PathLike[str], updates: dict[str, str]) -> Path:
    """Copy the ``.safetensors`` file ``source`` to ``out`` (atomically; ``source`` is never changed
    unless it *is* ``out``) with ``updates`` in its metadata, tensors untouched. A new file has a
    new fingerprint: a verifier fitted for ``source`` does not apply to it.

    Raises:
        ValueError: ``source`` is not a ``.safetensors`` file.
    """
    source = Path(source)
    if source.suffix != ".safetensors":
        raise ValueError(f"{source}: metadata is stored in a .safetensors weights file (export one with acfd train or save_weights)")
    metadata = read_metadata(source) | updates
    state = load_file(str(source))
    with atomic_path(out) as tmp:
        save_file(state, str(tmp), metadata=metadata)
    return Path(out)


def write_presets(source: str | os.PathLike[str], presets: dict[str, Preset], out: str | os.PathLike[str]) -> Path:
    """Copy ``source`` to ``out`` with ``presets`` (``interactive`` / ``evaluation``) in its
    metadata: the settings measured as best for these weights (see :func:`write_metadata`)."""
    return write_metadata(source, out, {PRESETS_KEY: presets_to_json(presets)})


def _read_state_dict(path: Path) -> tuple[dict[str, torch.Tensor], dict[str, Any] | None, dict[str, str]]:
    """``(state dict, model config dict or None, metadata)`` of a weights file or checkpoint."""
    if not path.is_file():
        raise FileNotFoundError(f"{path}: weights file not found")
    if _is_onnx(path):
        raise _no_torch_weights(path)
    if path.stat().st_size == 0:
        raise ValueError(f"{path}: the file is empty")
    if path.suffix == ".safetensors":
        state = {}
        try:
            with safe_open(str(path), framework="pt") as f:
                meta = dict(f.metadata() or {})
                for k in f.keys():
                    state[k] = f.get_tensor(k).float()
        except (SafetensorError, OSError, RuntimeError) as exc:
            raise ValueError(f"{path}: not a readable .safetensors file ({_first_line(exc)})") from None
        if meta.get("warning"):  # e.g. a placeholder model: say so every time it is loaded
            logger.warning("%s: %s", path.name, meta["warning"])
        try:
            cfg = json.loads(meta["config"]) if "config" in meta else None
        except json.JSONDecodeError:
            raise ValueError(f"{path}: the model config in the file's metadata is not valid JSON") from None
        if isinstance(cfg, dict) and meta.get("model") and "name" not in cfg:
            cfg["name"] = meta["model"]
        return state, cfg, meta
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=False)
    except Exception as exc:  # noqa: BLE001 - corrupt, truncated or not a checkpoint
        raise ValueError(f"{path}: not a readable checkpoint ({_first_line(exc)})") from None
    if isinstance(ckpt, dict) and "model" in ckpt:
        return ckpt.get("ema") or ckpt["model"], ckpt.get("model_config"), {}
    raise ValueError(f"{path}: not an acfd checkpoint (no 'model' entry)")


def _load_state(model: ACFD, state: dict[str, torch.Tensor], path: Path, cfg_dict: dict[str, Any] | None) -> None:
    """``model.load_state_dict(state)`` with one-line errors naming the file and its variant.

    PyTorch lists every missing/unexpected/mis-shaped tensor (hundreds of lines for another
    variant); the file's own metadata usually says which variant it holds.
    """
    file_model = (cfg_dict or {}).get("name")
    want = model.cfg.name
    if file_model and file_model != want and file_model in list_models():
        raise ValueError(f"{path}: these weights are {file_model}, not {want} (use --model {file_model} or leave --model out)")
    try:
        model.load_state_dict(state)
    except RuntimeError as exc:
        text = str(exc)
        counts = [f"{text.count(k)} {v}" for k, v in (("size mismatch", "mis-shaped"),) if k in text]
        missing, unexpected = (set(model.state_dict()) - set(state)), (set(state) - set(model.state_dict()))
        detail = ", ".join(counts + [f"{len(missing)} missing", f"{len(unexpected)} unexpected"])
        what = f"weights of {file_model}" if file_model else "weights of another model"
        raise ValueError(f"{path}: {what} do not fit {want} ({detail} tensors)") from None


def read_model_config(path: str | os.PathLike[str]) -> dict[str, Any] | None:
    """The model config dict stored in a weights file or checkpoint (``None`` when it has none)."""
    return _read_state_dict(Path(path))[1]


def load_weights_into(model: ACFD, path: str | os.PathLike[str]) -> None:
    """Load a weights file (safetensors or checkpoint) into an existing ``model``, one-line errors."""
    state, cfg_dict, _ = _read_state_dict(Path(path))
    _load_state(model, state, Path(path), cfg_dict)


def load_model(path_or_name: str | os.PathLike[str] | None = None, weights: str | os.PathLike[str] | None = None,
               device: str | torch.device = "cpu") -> ACFD:
    """The PyTorch network of :meth:`ModelFile.open` ``(path_or_name, weights)``, in eval mode on
    ``device`` (an ``.onnx`` export has none: ``ValueError``)."""
    if _is_onnx(path_or_name):
        raise _no_torch_weights(Path(path_or_name))  # type: ignore[arg-type]
    return ModelFile.open(path_or_name, weights).load_network(device)


# -- the model file ------------------------------------------------------------------------------




def _looks_like_path(value: str | os.PathLike[str]) -> bool:
    if isinstance(value, os.PathLike):
        return True
    p = Path(value)
    return p.suffix.lower() in WEIGHTS_SUFFIXES or p.is_file() or os.sep in value


@dataclass(eq=False)
class ModelFile:
    """A detector weights file (or ONNX export) and what travels with it (see the module docstring).

    Build it with :meth:`open`. ``path`` is ``None`` for a bare variant name (random weights).

    Args:
        path: the file.
        config: the network's config.
        metadata: the file's string metadata (safetensors or ONNX; ``{}`` for a checkpoint).
        runner: for an ONNX file, the ONNX Runtime session that runs it.
    """

    path: Path | None
    config: ModelConfig
    metadata: dict[str, str] = field(default_factory=dict)
    runner: OnnxRunner | None = None
    _state: dict[str, torch.Tensor] | None = field(default=None, repr=False)
    _stored_config: dict[str, Any] | None = field(default=None, repr=False)

    @classmethod
    def open(
        cls,
        model: str | os.PathLike[str] | None = None,
        weights: str | os.PathLike[str] | None = None,
        *,
        providers: list[str] | None = None,
        num_threads: int | None = None,
    ) -> ModelFile:
        """Open a model file.

        Args:
            model: ``None`` (the shipped weights, or ``weights``), a variant name (with ``weights``;
                alone: its shipped weights, else no weights file: :meth:`load_network` gives it
                random weights with a warning), a ``.safetensors`` / checkpoint file, or an
                ``.onnx`` export (opened in ONNX Runtime with ``providers`` and ``num_threads``).
            weights: the weights of a variant given by name (or alone). Their own stored config
                (a GroupNorm head, other widths...) is used when it is of that variant.
            providers: ONNX Runtime providers for an ``.onnx`` file (``None``: CUDA when available).
            num_threads: ONNX Runtime threads for an ``.onnx`` file.

        Raises:
            FileNotFoundError: a missing file, or no shipped weights.
            ValueError: an unknown name, an unreadable file, weights of another variant, or an
                ``.onnx`` file with ``weights``.
        """
        if _is_onnx(model):
            if weights is not None:
                raise ValueError(f"{model}: an .onnx file runs in ONNX Runtime; give no weights= or backend=")
            return cls.from_runner(OnnxRunner(model, providers=providers, num_threads=num_threads))
        if model is not None and str(model) not in list_models() and _looks_like_path(model):
            if weights is not None:
                raise ValueError(f"model={model!s} is a checkpoint file; weights= is only for a model name")
            return cls._from_file(Path(model), None)
        if model is None:
            if weights is not None:
                return cls._from_file(Path(weights), None)
            default = default_weights_path()
            if default is None:
                raise FileNotFoundError(
                    f"no default weights are shipped with this acfd install ({WEIGHTS_DIR} "
                    "has none); pass Detector(model=NAME, weights=PATH) or a checkpoint path"
                )
            return cls._from_file(default, None)
        config = get_model_config(str(model))  # "unknown model 'x'; available: ..."
        if weights is None:
            shipped = shipped_weights(config.name)
            return cls(None, config) if shipped is None else cls._from_file(shipped, None)
        return cls._from_file(Path(weights), config)

    @classmethod
    def variant(cls, name: str) -> ModelFile:
        """The config of the variant ``name`` and no weights file (for a backend that brings its
        own network, which only needs the anchors and the box coder)."""
        return cls(None, get_model_config(name))

    @classmethod
    def _from_file(cls, path: Path, config: ModelConfig | None) -> ModelFile:
        state, cfg_dict, metadata = _read_state_dict(path)
        task = metadata.get("task")
        if task and task != "detection":
            raise ValueError(f"{path}: these are {task} weights, not a face detector's")
        if config is not None and isinstance(cfg_dict, dict) and cfg_dict.get("name", config.name) == config.name:
            try:  # the file's own config of that variant (its head's normalisation, widths...)
                config = model_config_from_dict({**cfg_dict, "name": config.name})
            except (TypeError, ValueError):
                pass  # the registered config; loading the tensors says what does not fit
        if config is None:
            if cfg_dict is None:
                raise ValueError(f"{path}: no model config stored in the file")
            try:
                config = model_config_from_dict(cfg_dict)
            except (TypeError, ValueError, KeyError) as exc:
                raise ValueError(f"{path}: the stored model config is not valid ({exc})") from None
        # safetensors tensors are read again by load_network (cheap, memory-mapped); a
        # checkpoint's are kept, reading it twice would cost a second torch.load
        kept = None if path.suffix == ".safetensors" else state
        return cls(path, config, metadata, _state=kept, _stored_config=cfg_dict)

    @classmethod
    def from_runner(cls, runner: OnnxRunner) -> ModelFile:
        """The model file of an ONNX export opened in ONNX Runtime (the config from its metadata).

        Raises:
            ValueError: the file holds no acfd model config (nor a known model name).
        """
        config = runner.model_config()
        if config is None and runner.model_name in list_models():
            config = get_model_config(str(runner.model_name))
        if config is None:
            raise ValueError(f"{runner.path}: no acfd model config in the ONNX metadata (export it with acfd export)")
        return cls(Path(runner.path), config, dict(runner.metadata), runner=runner)

    # -- what the file is ------------------------------------------------------------------------

    @property
    def name(self) -> str:
        """The variant name (``acfd-n``...)."""
        return self.config.name

    @property
    def format(self) -> str | None:
        """``"safetensors"``, ``"checkpoint"``, ``"onnx"``, or ``None`` (no file)."""
        if self.path is None:
            return None
        if self.runner is not None:
            return "onnx"
        return "safetensors" if self.path.suffix == ".safetensors" else "checkpoint"

    @cached_property
    def digest(self) -> str | None:
        """SHA-256 of the file: the cache key of its ONNX export (``None`` without a file)."""
        return None if self.path is None else file_sha256(self.path)

    @cached_property
    def fingerprint(self) -> str | None:
        """The fingerprint of the weights (first 16 hex digits of the weights file's SHA-256) that
        a verifier is tied to; for an ONNX export, that of the weights it was exported from (``None``
        when it does not say)."""
        if self.format == "onnx":
            return self.metadata.get(META_SOURCE_WEIGHTS) or None
        return None if self.digest is None else self.digest[:16]

    @cached_property
    def calibration(self) -> ScoreCalibration | None:
        """The score calibration stored in the file (``acfd calibrate``), or ``None``."""
        return ScoreCalibration.from_metadata(self.metadata, str(self.path))

    @cached_property
    def presets(self) -> dict[str, Preset]:
        """The file's inference presets by name (``interactive``, ``evaluation``, ``paper``);
        generic ones where the file has none."""
        beside = self.path if self.format in ("safetensors", "checkpoint") else None
        return read_presets(self.metadata, beside)

    def preset(self, name: str) -> Preset:
        """The preset called ``name`` (:data:`~acfd.predict.presets.PRESET_NAMES`)."""
        if name not in PRESET_NAMES:
            raise ValueError(f"unknown preset {name!r}; choose from {', '.join(PRESET_NAMES)}")
        return self.presets[name]

    @property
    def own_presets(self) -> bool:
        """Whether the file carries presets of its own (in its metadata or beside it)."""
        return PRESETS_KEY in self.metadata or (
            self.format in ("safetensors", "checkpoint") and presets_path(self.path).is_file())  # type: ignore[arg-type]

    # -- the verifier beside it --------------------------------------------------------------

    @property
    def verifier_path(self) -> Path | None:
        """Where this file's verifier would be (``None`` without a file)."""
        return None if self.path is None else verifier_path(self.path)

    def find_verifier(self, calibrated: bool) -> BoxVerifier | None:
        """The verifier beside the file, if it was fitted for these very weights and for their
        scores (``calibrated`` or raw); else ``None`` (a warning when it was fitted for other weights).

        Only ``.safetensors`` files and their ONNX exports have one.
        """
        if self.format not in ("safetensors", "onnx") or self.fingerprint is None:
            return None
        path = self.verifier_path
        if path is None or not path.is_file():
            return None
        found = load_verifier(path)
        if found.detector != self.fingerprint:
            logger.warning("%s was fitted for other weights than %s; not using it (pass verifier=PATH to force)",
                           path, self.path)
            return None
        if found.stacking.calibrated != calibrated:
            logger.debug("not using %s: it combines %s scores", path, "calibrated" if found.stacking.calibrated else "raw")
            return None
        return found

    def check_verifier(self, verifier: BoxVerifier | str | os.PathLike[str], calibrated: bool) -> BoxVerifier:
        """A verifier given explicitly (object or file), checked against these weights: it must
        combine scores like this detector's (``calibrated`` or raw); fitted for other weights, it
        is used with a warning."""
        found = check_verifier_scores(verifier, calibrated)
        if self.fingerprint is not None and found.detector and found.detector != self.fingerprint:
            logger.warning("%s was fitted for other weights than %s", found.source or "the verifier", self.path)
        return found

    # -- the network -----------------------------------------------------------------------------

    def load_network(self, device: str | torch.device = "cpu", warn_random: bool = True) -> ACFD:
        """The PyTorch network, in eval mode on ``device``.

        For an ONNX export this is the (randomly initialised) module of its config, which gives
        the anchors and the box coder; the runner computes the outputs. A bare variant name gives
        random weights (with a warning unless ``warn_random`` is off).
        """
        model = ACFD(self.config)
        if self.path is None:
            if warn_random:
                logger.warning("no weights given for model %r: using RANDOM initial weights (detections are "
                               "meaningless)", self.name)
        elif self.format != "onnx":
            state = self._state if self._state is not None else _read_state_dict(self.path)[0]
            _load_state(model, state, self.path, self._stored_config)
        return model.to(device).eval()

    def cached_onnx(self, network: ACFD, precision: str = "float32") -> Path:
        """This file's network exported to ONNX: the export beside the weights file when it was
        made from these very weights (``NAME.onnx``, as the shipped model has: no export at
        first use), else one made once and cached under the file's digest (a file without
        weights file is cached under its state dict's digest).

        ``precision`` (:mod:`acfd.deploy.precision`): ``"int8"`` is the int8 graph beside the
        weights (``NAME-int8.onnx``, made from these weights; a ``ValueError`` when there is none),
        ``"auto"`` that graph on CPUs with int8 dot products when there is one, else float32.
        """
        wanted = resolve_precision(precision)
        if wanted == "int8":
            int8 = self.int8_onnx()
            if int8 is not None:
                return int8
            if precision == "int8":
                raise ValueError(f"{self.path or self.name}: no int8 graph made from these weights beside them "
                                 "(make one with: acfd export --int8 IMAGES)")
        if self.format == "safetensors" and self.path is not None and self.fingerprint:
            beside = self.path.with_suffix(".onnx")
            if beside.is_file() and onnx_metadata(beside).get(META_SOURCE_WEIGHTS) == self.fingerprint:
                return beside
        return cached_onnx(network, self.digest if self.format != "onnx" else None)

    def int8_onnx(self) -> Path | None:
        """The int8 graph beside these ``.safetensors`` weights (``NAME-int8.onnx``) when it was made
        from them, else ``None``."""
        if self.format != "safetensors" or self.path is None or not self.fingerprint:
            return None
        path = int8_graph_path(self.path.with_suffix(".onnx"))
        return path if path.is_file() and onnx_metadata(path).get(META_SOURCE_WEIGHTS) == self.fingerprint else None

    # -- exports -----------------------------------------------------------------------------

    def export_metadata(self) -> dict[str, str]:
        """What an ONNX export keeps of this file: the score calibration (the same scores), the
        presets when the file has its own (the same settings), and the fingerprint of ``.safetensors``
        weights (so that their verifier, copied beside the export, is recognised)."""
        out: dict[str, str] = {}
        if self.calibration is not None:
            out[CALIBRATION_KEY] = self.calibration.to_json()
        if self.own_presets:
            out[PRESETS_KEY] = presets_to_json(self.presets)
        if self.format == "safetensors" and self.fingerprint:
            out[META_SOURCE_WEIGHTS] = self.fingerprint
        return out

    def fitted_verifier_path(self) -> Path | None:
        """The verifier beside this weights file when it was fitted for it (what an export copies)."""
        path = self.verifier_path
        if self.format != "safetensors" or path is None or not path.is_file():
            return None
        return path if load_verifier(path).detector == self.fingerprint else None

    def export_onnx(self, out: str | os.PathLike[str], network: ACFD | None = None, verifier: bool = True,
                    **kwargs: Any) -> tuple[Path, Path | None]:
        """Export the network to ``out`` with :meth:`export_metadata` (see
        :func:`acfd.deploy.export.export_onnx` for ``kwargs``) and, with ``verifier``, copy the
        verifier fitted for these weights beside it and write its stage graph there too
        (``NAME-verifier.onnx``: with both graphs ``acfd detect`` runs without torch,
        :mod:`acfd.predict.onnx_pipeline`).

        Returns:
            ``(out, the verifier's copy or None)``.
        """
        if self.format == "onnx":
            raise ValueError(f"{self.path}: already an ONNX export; export the .safetensors / .pt file it came from")
        network = network if network is not None else self.load_network()
        out = Path(out)
        export_onnx(network, out, metadata={**kwargs.pop("metadata", {}), **self.export_metadata()}, **kwargs)
        source = self.fitted_verifier_path() if verifier else None
        if source is None:
            return out, None
        target = verifier_path(out)
        if not (target.exists() and target.resolve() == source.resolve()):
            with atomic_path(target) as tmp:
                shutil.copyfile(source, tmp)
        load_verifier(source).export_stage(target.with_suffix(".onnx"))
        return out, target


def onnx_metadata(path: str | os.PathLike[str]) -> dict[str, str]:
    """The ``metadata_props`` of an ONNX file (``{}`` when it cannot be read)."""
    import onnx  # the export side's library; reading the header loads no weights into a session

    try:
        return {p.key: p.value for p in onnx.load(str(path), load_external_data=False).metadata_props}
    except Exception:  # noqa: BLE001 - any unreadable file: no metadata, the caller exports again
        return {}


def check_verifier_scores(verifier: BoxVerifier | str | os.PathLike[str], calibrated: bool) -> BoxVerifier:
    """A verifier (object or file) that combines the kind of scores a detector gives (``calibrated``
    or raw).

    Raises:
        ValueError: it combines the other kind.
    """
    found = verifier if isinstance(verifier, BoxVerifier) else load_verifier(verifier)
    if found.stacking.calibrated != calibrated:
        raise ValueError(f"{found.source or 'the verifier'}: it combines {'calibrated' if found.stacking.calibrated else 'raw'} "
                         f"detector scores, but this detector's are {'calibrated' if calibrated else 'raw'}")
    return found


__all__ = [
    "META_SOURCE_WEIGHTS",
    "ModelFile",
    "check_verifier_scores",
    "default_weights_path",
    "load_model",
    "load_weights_into",
    "read_metadata",
    "read_model_config",
    "save_weights",
    "shipped_weights",
    "verifier_path",
    "write_metadata",
    "write_presets",
]
