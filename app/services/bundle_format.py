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
from collections.abc import Callable, Iterator
from contextlib import contextmanager
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
    """How much a bundle may hold before its manifest is read; past it, each member has its own
    cap from what it can be (``BundleService``): a learned state what the base model's shapes
    allow, a document this machine's ``max_file_mb``, a playbook ``json_bytes``."""

    bundle_bytes: int = 4 * GIB
    """The file: a learned state of the embedded model is at most about 0.2 GB, documents at most
    max_file_mb each."""
    member_bytes: int = 4 * GIB
    """Any member, whatever its own cap (a 7B model's state learned in every neuron of its last
    quarter would be 5.6 GB; one that large is refused, it would not fit a laptop's memory)."""
    total_bytes: int = 8 * GIB
    json_bytes: int = 64 << 20
    """manifest.json and each playbook's history (200 bullets of 400 characters in 800 versions)."""
    header_bytes: int = 100 << 20
    """A safetensors header (the learned state's JSON half, its recall pool)."""
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

    def size(self, name: str) -> int:
        """A member's declared (unpacked) size."""
        info = self.infos.get(name)
        if info is None:
            raise BundleRefused(name, "missing from the bundle")
        return info.file_size

    @contextmanager
    def _open(self, name: str, cap: int | None) -> Iterator[tuple[zipfile.ZipExtFile, int]]:
        """The member open for reading, with its declared size once it is within ``cap`` (and
        the member limit); damage read on the way is a refusal naming the member."""
        size = self.size(name)
        limit = min(cap if cap is not None else self.limits.member_bytes, self.limits.member_bytes)
        if size > limit:
            raise BundleRefused(name, f"{size} bytes, more than the limit of {limit}")
        try:
            with self.zip.open(self.infos[name]) as f:
                yield f, size
                if f.read(1):  # the stream ends at the declared size; its CRC is checked there
                    raise BundleRefused(name, f"holds more than the {size} bytes it declares")
        except (zipfile.BadZipFile, OSError, EOFError, zlib.error) as exc:
            raise BundleRefused(name, f"cannot be unpacked: the file is damaged or cut short ({exc})") from None

    @staticmethod
    def _fill(f: zipfile.ZipExtFile, buffer: bytearray | memoryview, name: str) -> None:
        view, at = memoryview(buffer), 0
        while at < len(view):
            got = f.readinto(view[at:at + (1 << 20)])
            if not got:
                raise BundleRefused(name, f"cut short: {at} of {len(view)} bytes")
            at += got

    def read(self, name: str, cap: int | None = None) -> bytearray:
        """A member's bytes, never more than its declared size or ``cap`` (a lying zip stops),
        read into one buffer of the declared size (no second copy)."""
        with self._open(name, cap) as (f, size):
            data = bytearray(size)
            self._fill(f, data, name)
        return data

    def copy_to(self, name: str, target: Path, cap: int | None = None) -> int:
        """Write a member to ``target`` a MiB at a time (never whole in memory); its size."""
        with self._open(name, cap) as (f, size), open(target, "wb") as out:
            buffer = bytearray(min(size, 1 << 20))
            left = size
            while left:
                part = memoryview(buffer)[:min(left, len(buffer))]
                self._fill(f, part, name)
                out.write(part)
                left -= len(part)
        return size

    def read_safetensors(self, name: str, cap: int | None,
                         check: Callable[[dict[str, TensorHeader], dict[str, str]], None]) -> tuple[dict[str, Any], dict[str, str]]:
        """A safetensors member read header first: its header is parsed and ``check``-ed before a
        byte of tensor data is read; then the data into one buffer, the tensors views of it."""
        with self._open(name, cap) as (f, size):
            if size < 8:
                raise BundleRefused(name, "too short to be a safetensors file")
            prefix = bytearray(8)
            self._fill(f, prefix, name)
            (n,) = struct.unpack("<Q", prefix)
            if n > min(size - 8, self.limits.header_bytes):
                raise BundleRefused(name, f"a safetensors header of {n} bytes: longer than the file or "
                                    f"the limit of {self.limits.header_bytes}")
            header = bytearray(n)
            self._fill(f, header, name)
            tensors, meta = safetensors_header(header, size - 8 - n, name)
            check(tensors, meta)
            body = bytearray(size - 8 - n)
            self._fill(f, body, name)
        return {key: _tensor(body, t) for key, t in tensors.items()}, meta

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


def safetensors_header(raw: bytes | bytearray, body: int,
                       name: str) -> tuple[dict[str, TensorHeader], dict[str, str]]:
    """The tensors' dtypes, shapes and offsets and the text metadata of a safetensors header
    (``raw``, the JSON after the 8-byte length) whose data is ``body`` bytes long, each checked: a
    known dtype, non-negative shapes whose size matches the byte range, ranges that tile the body."""
    try:
        header = json.loads(raw.decode("utf-8"))
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
    if at != body:
        raise BundleRefused(name, "the tensor data does not match the file's length")
    return tensors, meta


TORCH_DTYPES = {"F64": "float64", "F32": "float32", "F16": "float16", "BF16": "bfloat16", "I64": "int64",
                "I32": "int32", "I16": "int16", "I8": "int8", "U8": "uint8", "BOOL": "bool"}


def _tensor(body: bytearray, t: TensorHeader) -> Any:
    """A tensor of a checked header: a view of ``body`` (safetensors data is little-endian, as
    every machine Engram runs on is)."""
    import torch

    dtype = getattr(torch, TORCH_DTYPES[t.dtype])
    start, end = t.data_offsets
    if start == end:
        return torch.empty(t.shape, dtype=dtype)
    if start % SAFETENSORS_DTYPES[t.dtype]:  # not aligned for a view: its own copy
        return torch.frombuffer(bytearray(body[start:end]), dtype=dtype).reshape(t.shape)
    return torch.frombuffer(body, dtype=dtype, offset=start, count=(end - start) // SAFETENSORS_DTYPES[t.dtype]).reshape(t.shape)
