"""Where weights come from (local folder or Hub id) and the native Flax checkpoint format.

An HF PyTorch folder is read here and mapped through `flaxsent.core.state_dict` (which never
imports this module), so `load_model` takes either kind of folder.
"""

from __future__ import annotations

import contextlib
import os
import re
from collections.abc import Mapping, Sequence
from pathlib import Path

import jax.numpy as jnp
import numpy as np
from flax import nnx

from flaxsent.core.config import DistilBertConfig
from flaxsent.core.model import DistilBertForSequenceClassification
from flaxsent.core.safetensors_reader import read_safetensors, read_sharded
from flaxsent.core.state_dict import FlatParams, check_keys, torch_to_flax_params
from flaxsent.errors import CheckpointError
from flaxsent.io import durable

FLAX_WEIGHTS = "flax_model.safetensors"
TORCH_SAFETENSORS = "model.safetensors"
TORCH_SAFETENSORS_INDEX = "model.safetensors.index.json"
TORCH_BIN = "pytorch_model.bin"
CONFIG = "config.json"
# an ONNX export (`flaxsent export --format onnx`, flaxsent.core.onnx_engine): HF's interface,
# the engine's packed forward, and their int8 twins
ONNX_MODEL = "model.onnx"
ONNX_PACKED = "model_packed.onnx"
ONNX_QUANTIZED = "model_quantized.onnx"
ONNX_PACKED_QUANTIZED = "model_packed_quantized.onnx"
_HUB_PATTERNS = ["config.json", "*.safetensors", "model.safetensors.index.json",
                 "pytorch_model.bin", "vocab.txt", "tokenizer.json", "tokenizer_config.json",
                 "special_tokens_map.json"]
# what the onnxruntime runtime fetches besides: the graphs, at the top or in Optimum's and
# Transformers.js's onnx/ subfolder
ONNX_HUB_PATTERNS = ["*.onnx", "onnx/*.onnx"]
_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*(/[\w.-]+)?$")


def resolve_source(src: str | os.PathLike, extra_patterns: Sequence[str] = ()) -> Path:
    """A local checkpoint folder, downloading a Hub id first when `src` is not a local path
    (its config, weights and tokenizer files, and the files `extra_patterns` match)."""
    path = Path(src).expanduser()
    if path.is_dir():
        return path
    if path.exists():
        raise CheckpointError(f"{src}: not a folder (expected a checkpoint folder or a Hub id)")
    text = str(src)
    if not _HUB_ID.match(text) or text.startswith((".", "/", "~")):
        raise CheckpointError(f"{src}: no such folder")
    try:
        from huggingface_hub import snapshot_download
        return Path(snapshot_download(text, allow_patterns=[*_HUB_PATTERNS, *extra_patterns]))
    except Exception as e:  # noqa: BLE001 - the hub raises many kinds; all mean "not reachable"
        reason = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise CheckpointError(
            f"'{src}' is not a local folder and could not be downloaded from the Hugging Face "
            f"Hub ({reason}). Offline? Download the checkpoint elsewhere and pass its local folder "
            f"instead (e.g. ./{text.split('/')[-1]})") from None


def checkpoint_kind(folder: Path) -> str:
    """'flax' for a converted folder, 'torch' for an HF PyTorch folder; an error otherwise."""
    if not (folder / CONFIG).is_file():
        raise CheckpointError(f"{folder}: no {CONFIG} (not a model folder)")
    if (folder / FLAX_WEIGHTS).is_file():
        return "flax"
    if any((folder / n).is_file() for n in (TORCH_SAFETENSORS, TORCH_SAFETENSORS_INDEX, TORCH_BIN)):
        return "torch"
    raise CheckpointError(f"{folder}: no weights found (looked for {FLAX_WEIGHTS}, "
                          f"{TORCH_SAFETENSORS}, {TORCH_BIN})")


def read_config(folder: Path) -> DistilBertConfig:
    """The folder's config.json as a DistilBertConfig, errors naming the file."""
    if not (folder / CONFIG).is_file():
        raise CheckpointError(f"{folder}: no {CONFIG} (not a model folder)")
    return DistilBertConfig.from_json_file(folder / CONFIG)


def abstract_model(cfg: DistilBertConfig, dtype=jnp.float32,
                   param_dtype=jnp.float32) -> DistilBertForSequenceClassification:
    """The model with shapes and dtypes but no memory (every parameter a ShapeDtypeStruct)."""
    return nnx.eval_shape(lambda: DistilBertForSequenceClassification(
        cfg, dtype=dtype, param_dtype=param_dtype, rngs=nnx.Rngs(0)))


def _path_str(path: tuple) -> str:
    return "/".join(str(p) for p in path)


def param_shapes(cfg: DistilBertConfig) -> dict[str, tuple[int, ...]]:
    """Every Flax parameter path of the model and its shape, from the abstract model."""
    state = nnx.state(abstract_model(cfg), nnx.Param)
    return {_path_str(p): tuple(v.shape) for p, v in nnx.to_flat_state(state)}


def model_from_params(cfg: DistilBertConfig, params: Mapping[str, np.ndarray], *,
                      dtype=jnp.float32, param_dtype=None, consume: bool = False,
                      ) -> DistilBertForSequenceClassification:
    """Build the model from flat params; a missing, extra or mis-shaped path is an error.

    With `consume`, each host array is dropped from `params` once it is on the device, so
    loading never holds the model twice (peak memory: one copy plus one tensor).
    """
    if param_dtype is None:
        param_dtype = dtype
    model = abstract_model(cfg, dtype, param_dtype)
    graphdef, state = nnx.split(model)
    flat = nnx.to_flat_state(state)
    expected = {_path_str(p) for p, _ in flat}
    check_keys(expected, set(params), "Flax checkpoint does not match the config")
    leaves = []
    for path, var in flat:
        key = _path_str(path)
        array = params[key]
        if tuple(array.shape) != tuple(var.shape):
            raise CheckpointError(f"parameter '{key}' has shape {tuple(array.shape)}, "
                                  f"expected {tuple(var.shape)} for this config")
        leaves.append((path, var.replace(jnp.asarray(array, dtype=param_dtype))))
        if consume:
            del params[key], array
    return nnx.merge(graphdef, nnx.from_flat_state(leaves))


def params_of(model: DistilBertForSequenceClassification) -> FlatParams:
    """The model's parameters as flat numpy arrays keyed by '/'-joined path (what
    `save_flax_checkpoint` writes)."""
    state = nnx.state(model, nnx.Param)
    return {_path_str(p): np.asarray(v[...]) for p, v in nnx.to_flat_state(state)}


def read_torch_state_dict(folder: Path) -> dict[str, np.ndarray]:
    """An HF folder's tensors as numpy: safetensors without torch, .bin with weights_only."""
    single = folder / TORCH_SAFETENSORS
    if single.is_file():
        return read_safetensors(single)
    index = folder / TORCH_SAFETENSORS_INDEX
    if index.is_file():
        return read_sharded(folder, index)
    binary = folder / TORCH_BIN
    if binary.is_file():
        return _read_torch_bin(binary)
    raise CheckpointError(f"{folder}: no weights found (looked for {TORCH_SAFETENSORS}, "
                          f"{TORCH_BIN})")


def _read_torch_bin(path: Path) -> dict[str, np.ndarray]:
    try:
        import torch
    except ImportError:
        raise CheckpointError(
            f"{path}: reading pytorch_model.bin needs PyTorch (pip install 'flaxsent[torch]'); "
            "or convert the checkpoint to model.safetensors, which needs no torch") from None
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception:  # noqa: BLE001 - pickle, zip and OS errors all mean unreadable
        # torch's own message is many lines and suggests weights_only=False: not ours to echo.
        raise CheckpointError(f"{path}: not a readable PyTorch checkpoint (truncated, corrupt, "
                              "or not a plain state dict of tensors)") from None
    if not isinstance(state, dict):
        raise CheckpointError(f"{path}: holds a {type(state).__name__}, not a state dict")
    out = {}
    for key, tensor in state.items():
        if not isinstance(tensor, torch.Tensor):
            raise CheckpointError(f"{path}: entry '{key}' is not a tensor")
        if tensor.dtype == torch.bfloat16:  # numpy has no native bfloat16
            import ml_dtypes
            out[key] = tensor.view(torch.int16).numpy().view(ml_dtypes.bfloat16)
        else:
            try:
                out[key] = tensor.numpy()
            except TypeError:  # float8 and other dtypes numpy does not have
                raise CheckpointError(f"{path}: entry '{key}' has dtype {tensor.dtype}, which "
                                      "flaxsent cannot read: save the checkpoint in float32, "
                                      "float16 or bfloat16") from None
    return out


def save_flax_checkpoint(folder: Path, cfg: DistilBertConfig, params: FlatParams) -> None:
    """Write config.json and flax_model.safetensors into an existing folder (a temporary one
    that moves into place whole: see `checkpoint_output_dir`)."""
    cfg.save_json(folder / CONFIG)
    save_flax_weights(folder / FLAX_WEIGHTS, params)


def save_flax_weights(path: Path, params: FlatParams) -> None:
    """Write flat params as flaxsent's safetensors file (keys sorted, their dtypes noted)."""
    arrays = {k: np.ascontiguousarray(v) for k, v in sorted(params.items())}
    dtypes = sorted({str(v.dtype) for v in arrays.values()})
    write_safetensors(path, arrays, {"format": "flaxsent", "dtype": ",".join(dtypes)})


def write_safetensors(path: Path, arrays: Mapping[str, np.ndarray],
                      metadata: dict[str, str]) -> None:
    """safetensors' save_file, whose write errors (a full disk) become a CheckpointError: its
    Rust writer raises SafetensorError, not OSError."""
    from safetensors import SafetensorError
    from safetensors.numpy import save_file
    try:
        save_file(dict(arrays), str(path), metadata=metadata)
    except (SafetensorError, OSError) as e:
        reason = getattr(e, "strerror", None) or _io_reason(str(e))
        raise CheckpointError(f"cannot write {path}: {reason}") from None


def _io_reason(message: str) -> str:
    """The OS's words inside a Rust IoError message (`... message: "File too large" ...`)."""
    found = re.search(r'message: "([^"]+)"', message)
    return found.group(1) if found else message.splitlines()[0]


def load_flax_params(folder: Path) -> FlatParams:
    """The flat params of a converted folder."""
    return read_safetensors(folder / FLAX_WEIGHTS)


def stored_dtype(params: Mapping[str, np.ndarray]) -> jnp.dtype:
    """The (single) floating dtype the parameters were saved in."""
    dtypes = {np.dtype(v.dtype) for v in params.values()}
    return jnp.dtype(dtypes.pop()) if len(dtypes) == 1 else jnp.dtype(jnp.float32)


def load_model(path: str | os.PathLike, *, dtype=None, param_dtype=None,
               ) -> DistilBertForSequenceClassification:
    """The Flax model of a converted folder (or an HF PyTorch folder / Hub id, converted in memory).

    `dtype` is the compute dtype (default: the stored one); `param_dtype` defaults to `dtype`.
    """
    folder = resolve_source(path)
    cfg = read_config(folder)
    if checkpoint_kind(folder) == "flax":
        params = load_flax_params(folder)
    else:
        params, _ = torch_to_flax_params(read_torch_state_dict(folder), cfg)
    dtype = stored_dtype(params) if dtype is None else jnp.dtype(dtype)
    return model_from_params(cfg, params, dtype=dtype, param_dtype=param_dtype or dtype,
                             consume=True)


def _check_replaceable(dst: Path, source: Path | None) -> None:
    """Refuse to replace the folder `dst` unless it is empty or a checkpoint folder that is not
    `source` and does not hold it: --force must never delete anything else."""
    if source is not None:
        src, target = source.resolve(), dst.resolve()
        if target == src or target in src.parents:
            raise CheckpointError(f"{dst}: is the source folder or holds it; --force will not "
                                  "replace it: choose another output folder")
    is_checkpoint = (dst / CONFIG).is_file() and any(
        (dst / name).is_file()
        for name in (FLAX_WEIGHTS, TORCH_SAFETENSORS, TORCH_SAFETENSORS_INDEX, TORCH_BIN,
                     ONNX_MODEL))
    if not is_checkpoint and any(dst.iterdir()):
        raise CheckpointError(f"{dst}: neither empty nor a checkpoint folder (no {CONFIG} with "
                              "weights); --force only replaces those: choose another output "
                              "folder or empty this one yourself")


def checkpoint_output_dir(dst: str | os.PathLike, force: bool = False, *,
                          source: Path | None = None) -> contextlib.AbstractContextManager[Path]:
    """`flaxsent.io.durable.atomic_output_dir` under the checkpoint policy: a temporary folder
    beside `dst` that becomes `dst` only if the block succeeds; `force` replaces an existing
    `dst` only when it is an empty folder or a checkpoint folder, never `source` or a folder
    that holds it (`_check_replaceable`). Errors are one-line CheckpointErrors."""
    return durable.atomic_output_dir(dst, force, check=lambda d: _check_replaceable(d, source),
                                     error=CheckpointError)
