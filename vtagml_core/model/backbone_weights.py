"""Building the timm backbone and loading its weights (paper Sec. 3.1; docs/method.md).

The paper's encoder is Swin-B V2 initialised with ImageNet-22K weights. The kit runs in two regimes:

- **paper scale**: any timm model name (``swinv2_base_window8_256``), with timm's hub weights
  (``pretrained=True``, needs internet) or a local weights file;
- **offline CPU**: a tiny Swin V2 built from timm's own :class:`SwinTransformerV2` class with a
  config registered in :data:`TINY_CONFIGS`; the kit pretrains it itself and saves it as a local file.

Nothing here copies timm code: models come from ``timm.create_model`` or timm's classes, and local
files are checked against the model's own ``state_dict`` before a strict load.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import timm
import torch
from safetensors.torch import load_file as load_safetensors
from timm.models.swin_transformer_v2 import SwinTransformerV2
from torch import nn

#: Keys under which training scripts commonly nest the state dict inside a checkpoint.
WRAPPER_KEYS: tuple[str, ...] = ("state_dict", "model")
#: Key prefixes stripped when *every* key carries them: DistributedDataParallel ("module."),
#: a full VTAGML model ("backbone.") and :class:`~vtagml_core.model.backbone.FrozenBackbone`'s own
#: state dict, whose timm model sits under the attribute ``model`` ("model.").
STRIP_PREFIXES: tuple[str, ...] = ("module.", "backbone.", "model.")
#: Prefix of the backbone's keys inside a full model's checkpoint (backbone plus adapters, decoders...).
FULL_MODEL_BACKBONE_PREFIX: str = "backbone."
#: Classifier prefix assumed when a model's ``pretrained_cfg`` does not name one.
DEFAULT_CLASSIFIER_PREFIX: str = "head"
#: How many offending keys an error message lists per category.
MAX_KEYS_IN_ERROR: int = 5
#: Stochastic-depth rate of the kit's tiny backbones (also when fine-tuned, see TinySwinV2Spec.build).
TINY_DROP_PATH_RATE: float = 0.0
#: File suffix read with safetensors; anything else goes through ``torch.load(weights_only=True)``.
SAFETENSORS_SUFFIX: str = ".safetensors"


@dataclass(frozen=True)
class TinySwinV2Spec:
    """Architecture of one of the kit's small Swin V2 backbones (built with timm's class).

    Swin V2 keeps the paper's structure (four stages, patch merging between them, post-norm
    blocks, scaled cosine window attention) at a size a laptop CPU can train and run.
    """

    embed_dim: int = 32
    depths: tuple[int, ...] = (2, 2, 6, 2)
    num_heads: tuple[int, ...] = (2, 4, 8, 16)
    window_size: int = 8
    patch_size: int = 4
    mlp_ratio: float = 4.0

    def build(self, img_size: int) -> SwinTransformerV2:
        """Instantiate the headless timm model for square images of side ``img_size``."""
        return SwinTransformerV2(
            img_size=img_size,
            patch_size=self.patch_size,
            embed_dim=self.embed_dim,
            depths=self.depths,
            num_heads=self.num_heads,
            window_size=self.window_size,
            mlp_ratio=self.mlp_ratio,
            num_classes=0,
            # No stochastic depth: a frozen backbone never uses it, and the fine-tuned baseline
            # (backbone.frozen=false) keeps the same deterministic architecture.
            drop_path_rate=TINY_DROP_PATH_RATE,
        )


#: The kit's own small backbones, by name. ``swinv2_tiny_cpu`` has ~3.1M parameters; its stages
#: at 128 px are (32x32x32), (16x16x64), (8x8x128), (4x4x256).
TINY_CONFIGS: dict[str, TinySwinV2Spec] = {
    "swinv2_tiny_cpu": TinySwinV2Spec(),
}


def check_backbone_name(name: str) -> None:
    """Raise ValueError unless ``name`` is a kit tiny config or a model timm can build."""
    if name in TINY_CONFIGS or timm.is_model(name):
        return
    raise ValueError(
        f"unknown backbone name {name!r}: it is neither one of the kit's tiny configs "
        f"({', '.join(sorted(TINY_CONFIGS))}) nor a timm model. "
        'List timm\'s choices with timm.list_models("swinv2*") (paper scale: '
        "'swinv2_base_window8_256')."
    )


def _hub_errors() -> tuple[type[BaseException], ...]:
    """Exception types timm's hub download raises when the network is missing."""
    errors: list[type[BaseException]] = [OSError]  # LocalEntryNotFoundError, ConnectionError...
    try:
        from huggingface_hub.errors import HfHubHTTPError
        errors.append(HfHubHTTPError)
    except ImportError:  # older huggingface_hub: its errors are OSError subclasses anyway
        pass
    return tuple(errors)


def _create_from_timm(name: str, img_size: int, pretrained: bool) -> nn.Module:
    """``timm.create_model`` without classifier; ``img_size`` for models built for a fixed size."""
    try:
        try:
            return timm.create_model(name, pretrained=pretrained, num_classes=0, img_size=img_size)
        except TypeError as err:
            # Models without a built-in input size (PVT-v2: convolutional patch embeddings, no
            # position table) have no img_size argument; they accept any multiple of their stride.
            if "img_size" not in str(err):
                raise
            return timm.create_model(name, pretrained=pretrained, num_classes=0)
    except _hub_errors() as err:
        if not pretrained:
            raise
        raise RuntimeError(
            f"could not download timm's pretrained weights for {name!r}: there is no internet "
            f"connection (or the Hugging Face hub is unreachable). Set backbone.pretrained: false "
            f"and pass a local weights file instead (backbone.weights: path/to/{name}.safetensors), "
            f"e.g. one saved with safetensors.torch.save_file(model.state_dict(), path) on a "
            f"machine with internet. Setting HF_HUB_OFFLINE=1 makes this error appear at once "
            f"instead of after retries. Original error: {type(err).__name__}: {err}"
        ) from err


#: ``backbone.weights`` keywords: random initialisation, and the kit's pretext-pretrained file
#: (resolved to that file by :func:`vtagml_core.train.pretrain.resolve_backbone_weights`).
RANDOM_WEIGHTS: str = "random"
PRETEXT_WEIGHTS: str = "pretext"


def create_timm_model(
    name: str,
    img_size: int,
    pretrained: bool = False,
    weights: str | Path | None = None,
) -> nn.Module:
    """Build the headless timm backbone ``name`` for ``img_size`` px images, then load weights.

    Args:
        name: a key of :data:`TINY_CONFIGS` or any timm model name.
        img_size: image side the model is built for (Swin V2 and ViT are built for one size).
        pretrained: load timm's hub weights (from the local Hugging Face cache, or the hub when
            online; not available for tiny configs).
        weights: local weights file (see :func:`load_backbone_weights`), or ``"random"`` (same
            as None). ``"pretext"`` must be resolved to its file first.

    Raises:
        ValueError: unknown name, or both ``pretrained`` and ``weights`` given, or the weights
            file does not fit the model, or an unresolved ``"pretext"``.
        RuntimeError: ``pretrained=True`` and the hub cannot be reached.
    """
    check_backbone_name(name)
    if weights == RANDOM_WEIGHTS:
        weights = None
    if weights == PRETEXT_WEIGHTS:
        raise ValueError(
            f"backbone {name!r}: weights: pretext names the kit's pretext-pretrained file, which "
            "has to be found (or pretrained) first: the train command, the trainer and the "
            "settings do it; in Python call vtagml_core.train.pretrain.resolve_backbone_weights(cfg)"
        )
    if pretrained and weights is not None:
        raise ValueError(
            f"backbone {name!r}: give either pretrained: true (timm hub weights) or a local "
            f"weights file ({weights}), not both"
        )
    if name in TINY_CONFIGS:
        if pretrained:
            raise ValueError(
                f"{name!r} is the kit's own tiny backbone: timm has no hub weights for it. Pretrain "
                f"it with the kit and pass the saved file as backbone.weights, or set pretrained: false"
            )
        model = TINY_CONFIGS[name].build(img_size)
    else:
        model = _create_from_timm(name, img_size, pretrained)
    if weights is not None:
        load_backbone_weights(model, weights)
    return model


def read_state_dict(path: str | Path) -> dict[str, torch.Tensor]:
    """Read a state dict from a ``.safetensors`` file or a torch file (``weights_only=True``).

    A torch file may hold the state dict itself or nest it under one of :data:`WRAPPER_KEYS`.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(
            f"backbone weights file {str(path)!r} does not exist; check backbone.weights in the config"
        )
    if path.suffix == SAFETENSORS_SUFFIX:
        return dict(load_safetensors(str(path), device="cpu"))
    obj = torch.load(path, map_location="cpu", weights_only=True)
    while isinstance(obj, dict):
        inner = next((obj[k] for k in WRAPPER_KEYS if isinstance(obj.get(k), dict)), None)
        if inner is None:
            break
        obj = inner
    if not isinstance(obj, dict) or not obj:
        raise ValueError(
            f"{str(path)!r} holds no state dict (found {type(obj).__name__}); save the backbone "
            f"with torch.save(model.state_dict(), path) or safetensors.torch.save_file"
        )
    not_tensors = [k for k, v in obj.items() if not isinstance(v, torch.Tensor)]
    if not_tensors:
        raise ValueError(
            f"{str(path)!r}: entries {not_tensors[:MAX_KEYS_IN_ERROR]} are not tensors; expected a "
            f"plain state dict (optionally nested under one of {WRAPPER_KEYS})"
        )
    return obj


def _strip_prefixes(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Keep a full model's backbone keys, then strip wrapper prefixes that every key carries."""
    backbone_keys = [k for k in state if k.startswith(FULL_MODEL_BACKBONE_PREFIX)]
    if backbone_keys and len(backbone_keys) < len(state):
        state = {k: state[k] for k in backbone_keys}
    stripped = True
    while stripped:
        stripped = False
        for prefix in STRIP_PREFIXES:
            if all(k.startswith(prefix) for k in state):
                state = {k[len(prefix):]: v for k, v in state.items()}
                stripped = True
    return state


def _classifier_prefixes(model: nn.Module) -> tuple[str, ...]:
    cfg = getattr(model, "pretrained_cfg", None) or {}
    classifier = cfg.get("classifier") or DEFAULT_CLASSIFIER_PREFIX
    return (classifier,) if isinstance(classifier, str) else tuple(classifier)


def _describe_mismatch(path: Path, missing: list[str], unexpected: list[str], shapes: list[str]) -> str:
    parts = []
    for label, keys in (("missing keys", missing), ("unexpected keys", unexpected), ("shape mismatches", shapes)):
        if keys:
            more = f" (+{len(keys) - MAX_KEYS_IN_ERROR} more)" if len(keys) > MAX_KEYS_IN_ERROR else ""
            parts.append(f"{len(keys)} {label}: {', '.join(keys[:MAX_KEYS_IN_ERROR])}{more}")
    return (
        f"weights file {str(path)!r} does not fit the backbone: " + "; ".join(parts) + ". Check that "
        "backbone.name (and, for ViT position tables, backbone.img_size) match the model the file was saved from."
    )


def load_backbone_weights(model: nn.Module, path: str | Path) -> None:
    """Load a local weights file into ``model`` strictly, after checking every key and shape.

    Accepted: a raw state dict or one nested under ``"state_dict"``/``"model"``; keys may carry a
    ``"module."``/``"backbone."`` prefix (or be part of a full model's checkpoint, whose
    ``"backbone."`` keys are taken). Classifier-head keys the headless model lacks are ignored, as
    are entries for the model's non-persistent buffers (Swin V2's relative position tables, which
    older checkpoints stored). Everything else must match exactly.

    Raises:
        FileNotFoundError: no file at ``path``.
        ValueError: missing/unexpected keys or shape mismatches, listing the first of each and
            naming the file.
    """
    path = Path(path)
    state = _strip_prefixes(read_state_dict(path))
    expected = model.state_dict()
    non_persistent = {n for n, _ in model.named_buffers()} - set(expected)
    heads = _classifier_prefixes(model)
    state = {
        k: v for k, v in state.items()
        if k in expected or not (k in non_persistent or any(k == h or k.startswith(h + ".") for h in heads))
    }
    missing = [k for k in expected if k not in state]
    unexpected = [k for k in state if k not in expected]
    shapes = [
        f"{k}: file {tuple(state[k].shape)} vs model {tuple(v.shape)}"
        for k, v in expected.items() if k in state and state[k].shape != v.shape
    ]
    if missing or unexpected or shapes:
        raise ValueError(_describe_mismatch(path, missing, unexpected, shapes))
    model.load_state_dict(state, strict=True)
