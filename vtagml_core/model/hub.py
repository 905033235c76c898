"""Hub-style loading and saving: ``from_pretrained`` / ``save_pretrained`` for kit models.

The conventions people know from the Hugging Face ecosystem, on the kit's own model folder
(``config.json`` + ``model.safetensors``, :mod:`.checkpoint`)::

    model = VTAGML.from_pretrained("~/.cache/vtagml/runs/vtagml-3f2a9c01d4e5/best")
    model.save_pretrained("my_model")
    model = VTAGML.from_pretrained("my-user/vtagml-quick")   # a Hub repository, when online

A local folder loads with no network. Anything else is taken as a Hub repository id and
fetched with ``huggingface_hub.snapshot_download`` (only the two files; cached like every Hub
download), then loaded the same way; that needs a network and ``huggingface_hub`` (installed
with timm). Only models of the class's own method load here; the model factory
(:func:`vtagml_core.baselines.factory.load_model`) loads any method.
"""
from __future__ import annotations

from pathlib import Path
from typing import TypeVar

import torch

from .checkpoint import CONFIG_FILE, WEIGHTS_FILE, build_config, load_weights_into, read_checkpoint_info, save_model

M = TypeVar("M", bound="HubMixin")


def resolve_pretrained(name_or_path: str | Path, revision: str | None = None) -> Path:
    """A local model folder, or the snapshot folder of a Hub repository id."""
    path = Path(name_or_path).expanduser()
    if path.is_dir():
        return path
    if path.exists() or str(name_or_path).startswith((".", "/", "~")):
        raise FileNotFoundError(f"{path} is not a model folder (config.json + model.safetensors)")
    from huggingface_hub import snapshot_download

    try:
        return Path(snapshot_download(str(name_or_path), revision=revision,
                                      allow_patterns=[CONFIG_FILE, WEIGHTS_FILE]))
    except Exception as err:  # offline, unknown repository, no permission: say what was tried
        raise FileNotFoundError(
            f"{name_or_path!r} is neither a local model folder nor a reachable Hub repository "
            f"({type(err).__name__}: {err}); pass the folder of a saved model, e.g. a run's best/"
        ) from err


class HubMixin:
    """``from_pretrained`` / ``save_pretrained`` for a kit model class (module docstring).

    The class sets ``method`` (its registry name) and is built from a ``ModelConfig``.
    """

    method: str

    @classmethod
    def from_pretrained(cls: type[M], name_or_path: str | Path, map_location: str | torch.device = "cpu",
                        revision: str | None = None) -> M:
        """The saved model in ``name_or_path`` (a folder, or a Hub repository id), eval mode.

        Raises:
            FileNotFoundError: no such folder and no reachable repository.
            ValueError: the folder holds another method's model (use the model factory), or
                weights that do not fit.
        """
        folder = resolve_pretrained(name_or_path, revision)
        method, config, _ = read_checkpoint_info(folder)
        if method != cls.method:
            raise ValueError(f"{folder} holds a {method!r} model; {cls.__name__}.from_pretrained loads "
                             f"{cls.method!r} models: use vtagml_core.baselines.factory.load_model")
        model = cls(build_config(config))
        model.config = config
        return load_weights_into(model, folder, method, map_location).eval()

    def save_pretrained(self, folder: str | Path, meta: dict | None = None) -> Path:
        """Write ``config.json`` + ``model.safetensors`` into ``folder`` (atomic files)."""
        return save_model(self, folder, meta)


__all__ = ["HubMixin", "resolve_pretrained"]
