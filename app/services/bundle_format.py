"""The bundle file: a zip with ``manifest.json``, read as if it came from a stranger.

Layout (format version 1)::

    manifest.json                  what is inside (``Manifest``), checked before anything else
    playbooks/NAME.json            a playbook with every version and delta (``PlaybookHistory``)
    engines/NAME.safetensors       a weight-writing engine's learned state (tensors + JSON header)
    documents/N                    a document's original bytes (only with --with-documents)

Only JSON and safetensors are ever parsed: nothing is unpickled, and a member whose name says it
could hold a pickle (``.pt``, ``.bin``, ``.pkl``, ...) is refused by name. Every member is
checked before use: a plain relative name (no ``..``, no absolute path, no backslash, no link,
no folder entry, no duplicate), listed by the manifest, within the size limits (declared and as
actually read: a zip that lies about its sizes is cut off at the limit), and a complete
archive. A refusal names the field or member and the reason (``BundleRefused``).
"""

from __future__ import annotations

import json
import re
import stat
import struct
import zipfile
import zlib
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from app.services.base_model import BaseModelIdentity

FORMAT = "engram-bundle"
VERSION = 1
MANIFEST = "manifest.json"
MEMBER = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}(/[A-Za-z0-9][A-Za-z0-9._-]{0,127}){0,2}$")
PICKLE_SUFFIXES = (".pt", ".pth", ".bin", ".pkl", ".pickle", ".ckpt", ".npy", ".npz", ".joblib", ".h5")
SAFETENSORS_DTYPES = {"F64": 8, "F32": 4, "F16": 2, "BF16": 2, "I64": 8, "I32": 4, "I16": 2, "I8": 1,
                      "U8": 1, "BOOL": 1}
GIB = 1 << 30


class BundleRefused(ValueError):
    """The bundle cannot be imported; ``field`` says where, ``reason`` why. Nothing changed."""

    def __init__(self, field: str, reason: str) -> None:
        super().__init__(f"bundle refused, nothing was changed: {field}: {reason}")
        self.field = field
        self.reason = reason


class Limits(BaseModel):
    """How much a bundle may hold (the defaults fit a 135M model's state many times over)."""

    bundle_bytes: int = 16 * GIB
    member_bytes: int = 8 * GIB
    total_bytes: int = 16 * GIB
    json_bytes: int = 256 << 20
    members: int = 100_000
    ratio: int = 100
    """Most a member over 1 MiB may expand (learned weights barely compress: a zip bomb does)."""


# --- the manifest ------------------------------------------------------------------------------
class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class EmbeddingIdentity(Strict):
    model: str = Field(max_length=256, description="'embedded' or the embedding model folder's name.")
    dim: int | None = Field(None, ge=1, le=65_536)


class PlaybookEntry(Strict):
    name: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
    member: str
    version: int = Field(ge=0)
    bullets: int = Field(ge=0)


class EngineEntry(Strict):
    name: str = Field(pattern=r"^[a-z_][a-z0-9_]{0,31}$")
    member: str
    documents: int = Field(ge=0)


class DocumentEntry(Strict):
    id: int = Field(ge=1, description="The document's id where the bundle was made.")
    path: str = Field(min_length=1, max_length=4096)
    content_hash: str | None = Field(None, max_length=128)
    size: int | None = Field(None, ge=0)
    chunks: int = Field(0, ge=0)
    member: str | None = None


class Manifest(Strict):
    format: Literal["engram-bundle"]
    version: Literal[1]
    created_at: str = Field(max_length=64)
    base_model: BaseModelIdentity | None = Field(None, description="Set when weights are inside.")
    embedding: EmbeddingIdentity
    settings: dict[str, Any] = Field(default_factory=dict)
    playbooks: list[PlaybookEntry] = Field(default_factory=list)
    engines: list[EngineEntry] = Field(default_factory=list)
    documents: list[DocumentEntry] = Field(default_factory=list)
    with_documents: bool = False

    @field_validator("playbooks", "engines")
    @classmethod
    def _unique(cls, entries: list[Any]) -> list[Any]:
        names = [e.name for e in entries]
        if len(names) != len(set(names)):
            raise ValueError("names repeat")
        return entries

    def members(self) -> list[str]:
        """Every member the manifest names (besides itself)."""
        return ([p.member for p in self.playbooks] + [e.member for e in self.engines]
                + [d.member for d in self.documents if d.member])


def first_error(exc: ValidationError, prefix: str) -> BundleRefused:
    """The first problem pydantic found, as a refusal naming the field."""
    error = exc.errors()[0]
    where = ".".join(str(p) for p in error["loc"])
    return BundleRefused(f"{prefix}.{where}" if where else prefix, error["msg"])


# --- reading the zip ---------------------------------------------------------------------------
def check_name(name: str) -> None:
    """A member name is a plain relative path of at most three parts (see the module docstring)."""
    if name.startswith(("/", "\\")) or re.match(r"^[A-Za-z]:", name):
        raise BundleRefused(name, "an absolute path")
    if ".." in name.split("/") or "\\" in name:
        raise BundleRefused(name, "a path that leaves the bundle ('..' or a backslash)")
    if name.lower().endswith(PICKLE_SUFFIXES):
        raise BundleRefused(name, "a file type that can hold a pickle (only JSON and safetensors are read)")
    if not MEMBER.match(name):
        raise BundleRefused(name, "not a plain file name (letters, digits, '.', '_', '-', at most 3 parts)")


class BundleReader:
    """An open bundle whose archive, names and sizes were checked; members are read capped."""

    def __init__(self, path: Path, limits: Limits | None = None) -> None:
        self.path = Path(path)
        self.limits = limits or Limits()
        try:
            size = self.path.stat().st_size
        except OSError as exc:
            raise BundleRefused("file", f"cannot be read ({exc.strerror or exc})") from None
        if size > self.limits.bundle_bytes:
            raise BundleRefused("file", f"{size} bytes, more than the limit of {self.limits.bundle_bytes}")
        try:
            self.zip = zipfile.ZipFile(self.path)
        except (zipfile.BadZipFile, OSError, EOFError) as exc:
            raise BundleRefused("file", f"not a complete zip archive ({exc})") from None
        self.infos = self._checked(self.zip.infolist())
        self.manifest = self._manifest()
        self._check_members()

    def close(self) -> None:
        self.zip.close()

    def __enter__(self) -> BundleReader:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _checked(self, infos: list[zipfile.ZipInfo]) -> dict[str, zipfile.ZipInfo]:
        if len(infos) > self.limits.members:
            raise BundleRefused("file", f"{len(infos)} members, more than the limit of {self.limits.members}")
        found: dict[str, zipfile.ZipInfo] = {}
        total = 0
        for info in infos:
            name = info.filename
            if info.is_dir():
                raise BundleRefused(name, "a folder entry (a bundle holds only files)")
            check_name(name)
            kind = stat.S_IFMT(info.external_attr >> 16)  # 0: made without Unix modes
            if kind and kind != stat.S_IFREG:
                raise BundleRefused(name, "a link or special file (only plain files are allowed)")
            if info.flag_bits & 0x1:
                raise BundleRefused(name, "encrypted")
            if info.compress_type not in (zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED):
                raise BundleRefused(name, f"compressed with method {info.compress_type} (only stored or deflated)")
            if name in found:
                raise BundleRefused(name, "appears twice")
            if info.file_size > self.limits.member_bytes:
                raise BundleRefused(name, f"{info.file_size} bytes, more than the limit of "
                                    f"{self.limits.member_bytes} per member")
            if info.file_size > 1 << 20 and info.file_size > self.limits.ratio * max(info.compress_size, 1):
                raise BundleRefused(name, f"expands {info.file_size // max(info.compress_size, 1)} times "
                                    f"(more than {self.limits.ratio}): a zip bomb?")
            total += info.file_size
            if total > self.limits.total_bytes:
                raise BundleRefused("file", f"more than {self.limits.total_bytes} bytes unpacked")
            found[name] = info
        return found

    def read(self, name: str, cap: int | None = None) -> bytes:
        """A member's bytes, never more than its declared size or ``cap`` (a lying zip stops)."""
        info = self.infos.get(name)
        if info is None:
            raise BundleRefused(name, "missing from the bundle")
        limit = min(info.file_size, cap if cap is not None else self.limits.member_bytes)
        if info.file_size > limit:
            raise BundleRefused(name, f"{info.file_size} bytes, more than the limit of {limit}")
        parts, got = [], 0
        try:
            with self.zip.open(info) as f:
                while chunk := f.read(min(1 << 20, limit + 1 - got)):
                    got += len(chunk)
                    if got > limit:
                        raise BundleRefused(name, f"holds more than the {limit} bytes it declares")
                    parts.append(chunk)
        except (zipfile.BadZipFile, OSError, EOFError, zlib.error) as exc:
            raise BundleRefused(name, f"cannot be unpacked: the file is damaged or cut short ({exc})") from None
        return b"".join(parts)

    def read_json(self, name: str) -> Any:
        raw = self.read(name, self.limits.json_bytes)
        try:
            return json.loads(raw.decode("utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError, RecursionError) as exc:
            raise BundleRefused(name, f"not valid JSON ({exc})") from None

    def _manifest(self) -> Manifest:
        if MANIFEST not in self.infos:
            raise BundleRefused(MANIFEST, "missing: this is not an Engram bundle")
        raw = self.read_json(MANIFEST)
        if not isinstance(raw, dict):
            raise BundleRefused(MANIFEST, "not a JSON object")
        if raw.get("format") != FORMAT:
            raise BundleRefused("manifest.format", f"{raw.get('format')!r} is not {FORMAT!r}")
        if raw.get("version") != VERSION:
            raise BundleRefused("manifest.version", f"this bundle has format version {raw.get('version')!r}; "
                                f"this Engram reads version {VERSION} (a newer Engram made it?)")
        try:
            return Manifest.model_validate(raw)
        except ValidationError as exc:
            raise first_error(exc, "manifest") from None

    def _check_members(self) -> None:
        named = self.manifest.members()
        if len(named) != len(set(named)):
            raise BundleRefused("manifest", "two entries name the same member")
        for name in named:
            check_name(name)
            if name not in self.infos:
                raise BundleRefused(name, "named by the manifest but missing from the bundle")
        for name in self.infos:
            if name != MANIFEST and name not in named:
                raise BundleRefused(name, "not named by the manifest")


# --- safetensors, checked before safetensors itself reads it -----------------------------------
class TensorHeader(Strict):
    dtype: str
    shape: list[int] = Field(max_length=8)
    data_offsets: tuple[int, int]


def safetensors_header(data: bytes, name: str) -> tuple[dict[str, TensorHeader], dict[str, str]]:
    """The tensors' dtypes, shapes and offsets and the text metadata, each checked: a known
    dtype, non-negative shapes whose size matches the byte range, ranges that tile the body."""
    if len(data) < 8:
        raise BundleRefused(name, "too short to be a safetensors file")
    (n,) = struct.unpack("<Q", data[:8])
    if n > min(len(data) - 8, 100 << 20):
        raise BundleRefused(name, "the safetensors header is longer than the file")
    try:
        header = json.loads(data[8:8 + n].decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError, RecursionError) as exc:
        raise BundleRefused(name, f"the safetensors header is not JSON ({exc})") from None
    if not isinstance(header, dict):
        raise BundleRefused(name, "the safetensors header is not an object")
    meta = header.pop("__metadata__", None) or {}
    if not isinstance(meta, dict) or not all(isinstance(v, str) for v in meta.values()):
        raise BundleRefused(f"{name}:__metadata__", "not a map of strings")
    tensors: dict[str, TensorHeader] = {}
    spans = []
    for key, raw in header.items():
        try:
            t = TensorHeader.model_validate(raw)
        except ValidationError as exc:
            raise first_error(exc, f"{name}:{key}") from None
        if t.dtype not in SAFETENSORS_DTYPES:
            raise BundleRefused(f"{name}:{key}", f"dtype {t.dtype} is not one of {', '.join(SAFETENSORS_DTYPES)}")
        count = 1
        for d in t.shape:
            if d < 0:
                raise BundleRefused(f"{name}:{key}", f"negative shape {t.shape}")
            count *= d
        start, end = t.data_offsets
        if end - start != count * SAFETENSORS_DTYPES[t.dtype] or start < 0:
            raise BundleRefused(f"{name}:{key}", f"shape {t.shape} of {t.dtype} does not fit bytes {start}-{end}")
        tensors[key] = t
        spans.append((start, end))
    at = 0
    for start, end in sorted(spans):
        if start != at:
            raise BundleRefused(name, "tensor data overlaps or leaves gaps")
        at = end
    if at != len(data) - 8 - n:
        raise BundleRefused(name, "the tensor data does not match the file's length")
    return tensors, meta
