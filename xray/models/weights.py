"""State dicts as people save them -> the key names of tilescope's backbones.

A CheXNet-style DenseNet-121 checkpoint in the wild is rarely a plain torchvision state dict: it sits under
{"state_dict": ...} or {"model": ...} beside an optimizer and an epoch; `nn.DataParallel` / DDP prefixed
every key with `module.` (torch.compile with `_orig_mod.`); the network was an attribute (`densenet121.`);
torchvision before 0.3 named the dense layers' parts `norm.1` / `conv.2` (now `norm1` / `conv2`); and the
head was `Sequential(Linear, Sigmoid)`, so its keys read `classifier.0.weight`. A timm DenseNet-121 or
ResNet-18 uses torchvision's names already. Every rule here renames keys only, never values, except
widen_grey_conv (a 1-channel first convolution fed the same grey three times, each weight / 3: exact).

Pure: works on any mapping of names to array-likes with a `.shape` (torch tensors, numpy arrays), so it is
tested without torch. Loading the file (torch.load weights_only=True, safetensors) is xray/models/registry.py's job.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

# Keys under which training scripts store the state dict beside optimizer state, epochs, metrics.
WRAPPER_KEYS = ("state_dict", "model_state_dict", "model", "net", "network")
# Prefixes a wrapper adds to every key: nn.DataParallel / DistributedDataParallel, torch.compile.
WRAPPER_PREFIXES = ("module.", "_orig_mod.")
# torchvision < 0.3 DenseNet: denselayerN.norm.1 -> denselayerN.norm1 (torchvision's own _load_state_dict rule).
_OLD_DENSENET = re.compile(r"^(.*denselayer\d+\.(?:norm|relu|conv))\.([12])\.(weight|bias|running_mean|running_var"
                           r"|num_batches_tracked)$")
_INDEXED = re.compile(r"^(?P<head>.+)\.(?P<index>\d+)\.(?P<param>weight|bias)$")


class WeightsError(ValueError):
    """Weights that cannot be made to fit: names the file and what does not fit."""


def is_state_dict(obj: Any) -> bool:
    """A non-empty mapping of string names to arrays (things with a shape)."""
    return isinstance(obj, Mapping) and bool(obj) and all(
        isinstance(k, str) and hasattr(v, "shape") for k, v in obj.items())


def unwrap(obj: Any, source: str) -> Mapping[str, Any]:
    """The state dict inside a training checkpoint ({"state_dict": ...}, {"model": ...}, nested)."""
    for _ in range(4):
        if is_state_dict(obj):
            return obj
        if not isinstance(obj, Mapping):
            break
        inner = next((obj[k] for k in WRAPPER_KEYS if isinstance(obj.get(k), Mapping)), None)
        if inner is None:
            keys = ", ".join(sorted(map(str, obj))[:8])
            raise WeightsError(f"{source}: a dict ({keys}) with no state dict in it; looked under "
                               f"{', '.join(WRAPPER_KEYS)}. Save the weights with torch.save(model.state_dict(), FILE)")
        obj = inner
    raise WeightsError(f"{source}: expected a state_dict, found {type(obj).__name__} (a state dict maps names to "
                       "tensors: torch.save(model.state_dict(), FILE))")


def strip_wrapper_prefixes(keys: list[str]) -> tuple[list[str], list[str]]:
    """Remove `module.` / `_orig_mod.` from the front of every key (repeatedly); returns (keys, notes)."""
    notes = []
    for prefix in WRAPPER_PREFIXES * 2:
        if keys and all(k.startswith(prefix) for k in keys):
            keys = [k.removeprefix(prefix) for k in keys]
            notes.append(f"stripped {prefix!r}")
    return keys, notes


def old_densenet_name(key: str) -> str:
    """denselayer1.norm.1.weight -> denselayer1.norm1.weight; any other key unchanged."""
    m = _OLD_DENSENET.match(key)
    return f"{m[1]}{m[2]}.{m[3]}" if m else key


def best_prefix(keys: list[str], target: set[str]) -> str:
    """The leading `a.` / `a.b.` shared by keys that, removed, names the most target keys ('' if none helps)."""
    hits: Counter[str] = Counter()
    for key in keys:
        parts = key.split(".")
        for i in range(1, len(parts)):
            prefix = ".".join(parts[:i]) + "."
            if key[len(prefix):] in target:
                hits[prefix] += 1
    direct = sum(k in target for k in keys)
    if not hits:
        return ""
    prefix, n = max(hits.items(), key=lambda item: (item[1], -len(item[0])))
    return prefix if n > direct else ""


def collapse_indexed_head(keys: list[str], target: set[str]) -> dict[str, str]:
    """`classifier.0.weight` -> `classifier.weight` where the target has a plain Linear head and the source
    one index under it (CheXNet's Sequential(Linear, Sigmoid)); returns old -> new for those keys."""
    by_head: dict[str, set[str]] = {}
    for key in keys:
        m = _INDEXED.match(key)
        if m and key not in target and f"{m['head']}.{m['param']}" in target:
            by_head.setdefault(m["head"], set()).add(m["index"])
    renames = {}
    for key in keys:
        m = _INDEXED.match(key)
        if m and len(by_head.get(m["head"], ())) == 1:
            renames[key] = f"{m['head']}.{m['param']}"
    return renames


@dataclass(frozen=True)
class NormalisedState:
    """A state dict under the target's key names, and what was done to get there (for the manifest)."""

    state: dict[str, Any]
    notes: tuple[str, ...]


def normalise_state(obj: Any, target: Mapping[str, tuple[int, ...]], source: str,
                    drop_prefixes: tuple[str, ...] = ()) -> NormalisedState:
    """A loaded weights object -> its state dict under the names of `target` (key -> shape of the model that
    will load it). Keys starting with one of `drop_prefixes` are left out first. Names that still do not fit
    are kept as they are, for the loader to report."""
    state = unwrap(obj, source)
    keys, notes = strip_wrapper_prefixes(list(state))
    values = [state[k] for k in state]
    kept = [i for i, k in enumerate(keys) if not k.startswith(drop_prefixes)]
    keys, values = [keys[i] for i in kept], [values[i] for i in kept]
    names = set(target)
    renamed = [old_densenet_name(k) for k in keys]
    if renamed != keys:
        notes.append("old torchvision DenseNet names (norm.1 -> norm1, conv.2 -> conv2)")
    prefix = best_prefix(renamed, names)
    if prefix:
        renamed = [k.removeprefix(prefix) for k in renamed]
        notes.append(f"stripped {prefix!r}")
    heads = collapse_indexed_head(renamed, names)
    if heads:
        renamed = [heads.get(k, k) for k in renamed]
        notes += [f"{old} -> {new}" for old, new in sorted(heads.items())]
    out = dict(zip(renamed, values, strict=True))
    if len(out) != len(values):
        dupes = [k for k, n in Counter(renamed).items() if n > 1]
        raise WeightsError(f"{source}: several keys map to the same name after renaming (e.g. {dupes[:3]})")
    widened = widen_grey_conv(out, target)
    if widened:
        notes.append(f"{widened}: 1-channel first convolution widened to 3 channels (weights / 3)")
    return NormalisedState(out, tuple(notes))


def widen_grey_conv(state: dict[str, Any], target: Mapping[str, tuple[int, ...]]) -> str | None:
    """A model trained on one grey channel, loaded into a 3-channel backbone that is fed the grey value on every
    channel: conv(grey x3, w/3 per channel) == conv(grey, w). Changes state in place; returns the key or None."""
    for key, value in state.items():
        want = target.get(key)
        shape = tuple(getattr(value, "shape", ()))
        if want is not None and len(shape) == 4 and shape[1] == 1 and tuple(want) == (shape[0], 3, *shape[2:]):
            state[key] = value[:, [0, 0, 0]] / 3.0  # list indexing copies: torch and numpy alike
            return key
    return None


def fit_problems(state: Mapping[str, Any], target: Mapping[str, tuple[int, ...]], shown_as: str = "") -> list[str]:
    """What keeps `state` from loading into a model with `target` (key -> shape): missing and unexpected keys,
    shape mismatches (keys shown with the prefix `shown_as`); empty when it fits."""
    missing = sorted(shown_as + k for k in set(target) - set(state))
    unexpected = sorted(shown_as + k for k in set(state) - set(target))
    mismatched = [f"{shown_as}{k} {tuple(state[k].shape)} vs {tuple(target[k])}" for k in target
                  if k in state and tuple(state[k].shape) != tuple(target[k])]
    parts = []
    if missing:
        parts.append(f"missing {len(missing)} keys (e.g. {missing[:3]})")
    if unexpected:
        parts.append(f"unexpected {len(unexpected)} keys (e.g. {unexpected[:3]})")
    if mismatched:
        parts.append(f"shape mismatch {mismatched[:3]}")
    return parts


def select_rows(state: Mapping[str, Any], head: str, rows: list[int]) -> dict[str, Any]:
    """Keep only `rows` (in that order) of a Linear head's outputs: `head.weight` (O, F) and `head.bias` (O,).
    The model then outputs exactly those logits, nothing else changes."""
    out = dict(state)
    for param in ("weight", "bias"):
        key = f"{head}.{param}"
        if key in out:
            out[key] = out[key][list(rows)]
    return out
