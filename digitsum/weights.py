"""Pretrained weights: a shipped recipe's trained model, found by the recipe's name.

Weights are a record, ``<name>.json`` (:class:`WeightsRecord`), and the ``.safetensors`` file it
names next to it, or downloads once from its ``url`` into the user cache; they are declared like a
recipe, in the entry-point group ``digitsum.weights`` (docs/plugins.md#shipping-weights). A record
is only used while its recipe still has the settings it was trained with
(:func:`~digitsum.catalog.settings_digest`), and a file only when its sha256 matches the record.
Nothing here imports torch until tensors are read.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import stat
import struct
import sys
import time
import urllib.parse
import urllib.request
from dataclasses import MISSING, asdict, dataclass, field, fields
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .catalog import RecipeEntry, declared_files, find_recipe, settings_digest
from .discovery import canonical_name
from .errors import UserError, did_you_mean
from .files import atomic_write, field_problems, is_metrics, parse_json
from .kinds import WEIGHTS
from .paths import user_cache_dir

if TYPE_CHECKING:
    import torch

#: The ``format`` of a weights record and of a weights file's metadata.
FORMAT = "digitsum-weights"
FORMAT_VERSION = 1
#: The largest safetensors header digitsum reads (a recipe's model has a few dozen tensors).
MAX_HEADER_BYTES = 1 << 20
#: The largest weights file digitsum reads or downloads.
MAX_FILE_BYTES = 512 << 20
_SHA256 = re.compile(r"^[0-9a-f]{64}$")
_URL_SCHEMES = ("https", "http", "file")


@dataclass(frozen=True)
class WeightsRecord:
    """What ``<name>.json`` says about a recipe's weights.

    ``recipe``: the recipe's name; ``settings``: the digest of its settings when trained;
    ``sha256`` and ``bytes``: of the ``.safetensors`` file; ``file``: its name next to the record,
    or ``url``: where to download it; ``seed``, ``epochs``, ``parameters``; ``test``: each head's
    test metrics (``{head: {metric: value}}``); ``history``: per-epoch metrics as summary.json
    and ``Run.curves`` read them; ``command``: what reproduces them; ``digitsum_version``,
    ``trained`` (date), ``seconds``, ``machine``.
    """

    recipe: str
    settings: str
    sha256: str
    bytes: int
    seed: int
    epochs: int
    parameters: int
    test: dict[str, dict[str, float]]
    command: str
    digitsum_version: str
    file: str | None = None
    url: str | None = None
    history: list[dict[str, Any]] = field(default_factory=list)
    trained: str = ""
    seconds: float = 0.0
    machine: str = ""

    def reproduced_by(self, metrics: dict[str, dict[str, float]]) -> bool:
        """Whether test ``metrics`` (``Run.evaluate("test")``) equal the recorded ones to the four
        digits the record is read at; a recorded metric missing from ``metrics`` is not reproduced."""
        def found(head: str, metric: str) -> float:
            return metrics.get(head, {}).get(metric, float("nan"))

        return all(f"{found(h, m):.4f}" == f"{v:.4f}" for h, values in self.test.items() for m, v in values.items())

    def to_dict(self) -> dict[str, Any]:
        return {"format": FORMAT, "format_version": FORMAT_VERSION, **{k: v for k, v in asdict(self).items() if v is not None}}

    @property
    def meta(self) -> dict[str, Any]:
        """The record without its per-epoch history, as torchvision's ``weights.meta``: recipe,
        seed, epochs, parameters, test metrics, file size and sha256, the command that reproduces
        them, version, date, seconds and machine."""
        return {k: v for k, v in self.to_dict().items() if k != "history"}


@dataclass(frozen=True)
class WeightsEntry(RecipeEntry):
    """A recipe's weights declared by a distribution's entry point; ``path`` is their record's file."""

    def record(self) -> WeightsRecord:
        """The record, checked field by field; a UserError naming the file otherwise."""
        if self.path is None:
            raise UserError(f"weights '{self.name}' from {self.origin} cannot be used: {self.error}")
        return read_record(self.path)


def weights_entries() -> list[WeightsEntry]:
    """Every recipe's weights declared by the built-in and the allowed plugin distributions."""
    return declared_files(WEIGHTS, ".json", WeightsEntry)


def find_weights(name: str) -> WeightsEntry:
    """The weights of the shipped recipe ``name`` (``distribution:name`` picks a plugin's), from
    the distribution that ships the recipe itself. A UserError naming the recipes that have weights
    when it has none."""
    recipe = find_recipe(name)
    ours = [e for e in weights_entries() if e.name == recipe.name
            and canonical_name(e.distribution) == canonical_name(recipe.distribution)]  # fmt: skip
    if not ours:
        having = sorted({e.name for e in weights_entries()})
        hint = did_you_mean(name, having, "recipes with weights") if having else "no installed recipe has weights"
        raise UserError(f"recipe '{name}' ({recipe.origin}) has no pretrained weights — {hint}. A plugin ships its "
                        "recipes' weights as docs/plugins.md#shipping-weights says")  # fmt: skip
    return ours[0]


# -- records -----------------------------------------------------------------------------------------

_FIELD_TYPES: dict[str, type | tuple[type, ...]] = {
    "recipe": str, "settings": str, "sha256": str, "bytes": int, "seed": int, "epochs": int, "parameters": int,
    "test": dict, "command": str, "digitsum_version": str,
    "file": str, "url": str, "history": list, "trained": str, "seconds": (int, float), "machine": str,
}  # fmt: skip
_REQUIRED = [f.name for f in fields(WeightsRecord) if f.default is MISSING and f.default_factory is MISSING]


def read_record(path: Path) -> WeightsRecord:
    """Read and check a weights record (``<name>.json``); a UserError naming what is wrong."""
    try:
        data = parse_json(path.read_text(encoding="utf-8"))
    except OSError as e:
        raise UserError(f"cannot read weights record {path}: {e.strerror or e}") from None
    except ValueError as e:
        raise UserError(f"weights record {path} is not valid JSON: {e}") from None
    if not isinstance(data, dict) or data.get("format") != FORMAT:
        raise UserError(f"{path} is not a digitsum weights record (no \"format\": \"{FORMAT}\")")
    if data.get("format_version") != FORMAT_VERSION:
        raise UserError(f"{path} is a weights record of format version {data.get('format_version')!r}; "
                        f"this digitsum reads version {FORMAT_VERSION}")  # fmt: skip
    problems = field_problems(data, _FIELD_TYPES, _REQUIRED)
    if not problems:
        problems = _record_problems(data)
    if problems:
        raise UserError(f"weights record {path} is not valid: {'; '.join(problems)}")
    return WeightsRecord(**{k: v for k, v in data.items() if k in _FIELD_TYPES})


def _record_problems(data: dict[str, Any]) -> list[str]:
    problems = []
    if not _SHA256.match(data["sha256"]):
        problems.append("'sha256' should be 64 lowercase hexadecimal digits")
    if not 0 < data["bytes"] <= MAX_FILE_BYTES:
        problems.append(f"'bytes' should be from 1 to {MAX_FILE_BYTES}")
    if ("file" in data) == ("url" in data):
        problems.append("give exactly one of 'file' (next to the record) and 'url'")
    elif "file" in data and (Path(data["file"]).name != data["file"] or not data["file"].endswith(".safetensors")):
        problems.append("'file' should be the name of a .safetensors file in the record's folder")
    elif "url" in data and urllib.parse.urlparse(data["url"]).scheme not in _URL_SCHEMES:
        problems.append(f"'url' should start with {', '.join(s + '://' for s in _URL_SCHEMES)}")
    if not is_metrics(data["test"]):
        problems.append("'test' should map each head to its metrics' numbers")
    return problems


def write_record(path: Path, record: WeightsRecord) -> None:
    """Write a weights record atomically."""
    text = json.dumps(record.to_dict(), indent=2) + "\n"
    atomic_write(path, lambda f: f.write(text.encode()))


# -- the tensors' file -------------------------------------------------------------------------------


def weights_file(entry: WeightsEntry, record: WeightsRecord, progress: bool = True) -> Path:
    """The verified ``.safetensors`` file of ``record``: next to it, or downloaded from its ``url``
    into the user cache (once; ``progress``: a progress bar on stderr while it downloads)."""
    if record.file is not None:
        assert entry.path is not None
        path = entry.path.parent / record.file
        if not path.is_file():
            raise UserError(f"weights file {path} named by {entry.path} is missing")
        verify(path, record, entry.path)
        return path
    cached = cache_folder() / f"{record.sha256}.safetensors"
    if cached.is_file():
        try:
            verify(cached, record, entry.path)
            return cached
        except UserError:
            cached.unlink(missing_ok=True)  # a damaged copy in our own cache: fetch it again
    download(record.url or "", cached, record, progress)
    return cached


def cache_folder() -> Path:
    """Where downloaded weights are kept, named by their sha256: ``<user cache>/weights``."""
    return user_cache_dir() / "weights"


def verify(path: Path, record: WeightsRecord, record_path: Path | None = None) -> None:
    """Refuse ``path`` unless its size and sha256 are those the record gives."""
    size = path.stat().st_size
    digest = sha256_of(path) if size == record.bytes else None
    if digest != record.sha256:
        found = f"{size} bytes" if digest is None else f"sha256 {digest[:12]}…"
        raise UserError(
            f"weights file {path} does not match its record{f' {record_path}' if record_path else ''}: it has {found}, "
            f"the record says {record.bytes} bytes, sha256 {record.sha256[:12]}…; it was changed or damaged, "
            "nothing was loaded"
        )


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def download(url: str, dest: Path, record: WeightsRecord, progress: bool = True) -> None:
    """Fetch ``url`` into ``dest``, checking size and sha256 before the file takes its name: a
    failed, short, oversized or tampered download leaves nothing in the cache."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    partial = dest.with_name(f".{dest.name}.{os.getpid()}.part")
    digest, received = hashlib.sha256(), 0
    bar = _ProgressBar(f"downloading {record.recipe} weights", record.bytes) if progress and sys.stderr.isatty() else None
    try:
        with urllib.request.urlopen(url, timeout=30) as response, partial.open("wb") as out:
            while block := response.read(1 << 16):
                received += len(block)
                if received > record.bytes:
                    raise UserError(f"{url} is larger than the {record.bytes} bytes its record gives; nothing was kept")
                digest.update(block)
                out.write(block)
                if bar:
                    bar.advance(len(block))
        if received != record.bytes or digest.hexdigest() != record.sha256:
            raise UserError(f"{url} does not match its record (got {received} bytes, sha256 {digest.hexdigest()[:12]}…; "
                            f"expected {record.bytes} bytes, sha256 {record.sha256[:12]}…); nothing was kept")  # fmt: skip
        os.replace(partial, dest)
    except OSError as e:  # URLError is an OSError
        reason = getattr(e, "reason", None) or e.strerror or e
        raise UserError(f"cannot download the weights of '{record.recipe}' from {url}: {reason}") from None
    finally:
        partial.unlink(missing_ok=True)
        if bar:
            bar.close()


class _ProgressBar:
    """A download's progress on stderr, one line redrawn."""

    def __init__(self, label: str, total: int) -> None:
        self.label, self.total, self.done, self.shown = label, total, 0, -1.0

    def advance(self, count: int) -> None:
        self.done += count
        now = time.monotonic()
        if now - self.shown >= 0.1 or self.done >= self.total:
            self.shown = now
            width = 30
            filled = int(width * self.done / self.total)
            sys.stderr.write(f"\r{self.label} [{'#' * filled}{'.' * (width - filled)}] "
                             f"{self.done / 1e6:.2f}/{self.total / 1e6:.2f} MB")  # fmt: skip
            sys.stderr.flush()

    def close(self) -> None:
        sys.stderr.write("\n")
        sys.stderr.flush()


def file_metadata(path: Path) -> dict[str, str]:
    """The ``__metadata__`` of a safetensors file's header, read without torch; a UserError when
    ``path`` is not a safetensors file (a pipe or a device is refused before it is opened: reading
    one would wait for a writer, or never end)."""
    try:
        if not stat.S_ISREG(path.stat().st_mode):
            raise UserError(f"{path} is not a regular file (a pipe, a socket or a device); weights are a .safetensors file")
        with path.open("rb") as f:
            head = f.read(8)
            size = struct.unpack("<Q", head)[0] if len(head) == 8 else -1
            if not 2 <= size <= MAX_HEADER_BYTES:
                raise ValueError("no header")
            header = parse_json(f.read(size))
    except OSError as e:
        raise UserError(f"cannot read {path}: {e.strerror or e}") from None
    except (ValueError, UnicodeDecodeError):
        raise UserError(f"{path} is not a safetensors weights file") from None
    metadata = header.get("__metadata__") if isinstance(header, dict) else None
    try:  # one key holding JSON: safetensors keeps a header's keys in no fixed order, and the file's sha256 must not vary
        described = parse_json(metadata[FORMAT]) if isinstance(metadata, dict) else None
    except (KeyError, TypeError, ValueError):
        return {}
    return {k: v for k, v in described.items() if isinstance(v, str)} if isinstance(described, dict) else {}


def read_tensors(path: Path) -> dict[str, torch.Tensor]:
    """The tensors of a safetensors file (no pickle); a UserError when it cannot be read."""
    if path.stat().st_size > MAX_FILE_BYTES:
        raise UserError(f"{path} is larger than {MAX_FILE_BYTES >> 20} MiB: not the weights of a digitsum recipe")
    file_metadata(path)  # the header first: a clear message for a file of another kind
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    try:
        return load_file(path, device="cpu")
    except (SafetensorError, OSError, ValueError) as e:
        raise UserError(f"{path} is truncated or not a valid safetensors file ({e})") from None


def write_tensors(path: Path, tensors: dict[str, torch.Tensor], metadata: dict[str, str]) -> None:
    """Write ``tensors`` to a safetensors file atomically, with ``metadata`` in its header (as one
    JSON text under the key ``digitsum-weights``: the same tensors give the same bytes)."""
    from safetensors.torch import save

    data = save({k: v.detach().cpu().contiguous() for k, v in tensors.items()},
                metadata={FORMAT: json.dumps(metadata, sort_keys=True)})
    atomic_write(path, lambda f: f.write(data))


def check_settings(record: WeightsRecord, entry: WeightsEntry) -> None:
    """Refuse weights whose recipe has changed since they were trained."""
    from .recipe import recipe_document

    recipe = find_recipe(f"{entry.distribution}:{entry.name}")
    current = settings_digest(recipe_document(recipe.path))  # type: ignore[arg-type]
    if record.recipe != entry.name or record.settings != current:
        what = f"recipe '{record.recipe}'" if record.recipe != entry.name else f"other settings (digest {record.settings})"
        raise UserError(
            f"the weights in {entry.path} were trained for {what}, but recipe '{entry.name}' ({recipe.origin}) now has "
            f"settings digest {current}; they do not fit it, nothing was loaded"
        )


def load_weights(name: str, progress: bool = True) -> tuple[dict[str, torch.Tensor], WeightsRecord, WeightsEntry]:
    """The verified tensors of the shipped recipe ``name``'s weights, with their record and entry."""
    entry = find_weights(name)
    record = entry.record()
    check_settings(record, entry)
    path = weights_file(entry, record, progress)
    metadata = file_metadata(path)
    if metadata.get("settings", record.settings) != record.settings:  # another recipe's tensors, recorded as these
        raise UserError(f"{path} holds the weights of recipe '{metadata.get('recipe')}' (settings {metadata.get('settings')}), "
                        f"not of '{record.recipe}' (settings {record.settings}); nothing was loaded")  # fmt: skip
    return read_tensors(path), record, entry
