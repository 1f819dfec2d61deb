"""Setup's llama.cpp build: an explicit instruction set without AMX, proven in a child process, and
rebuilt when the CPU it was recorded for is not this one."""

from __future__ import annotations

import subprocess
from dataclasses import replace
from pathlib import Path

import pytest

from app.runtimes import llama_build as build
from app.runtimes.llama_build import Cpu, Proof, Record

SAPPHIRE_RAPIDS = Cpu(machine="x86_64", model="Intel Xeon Platinum 8480+", features=sorted(
    ["sse4_2", "avx", "f16c", "fma", "bmi2", "avx2", "avx_vnni", "avx512f", "avx512cd", "avx512vl",
     "avx512dq", "avx512bw", "avx512vbmi", "avx512_vnni", "avx512_bf16", "amx_tile", "amx_int8",
     "amx_bf16"]))
HASWELL = Cpu(machine="x86_64", model="Intel Core i7-4770", features=sorted(
    ["sse4_2", "avx", "f16c", "fma", "bmi2", "avx2"]))
ATOM = Cpu(machine="x86_64", model="Intel Celeron J4125", features=["sse4_2"])
GRAVITON = Cpu(machine="aarch64", model="Neoverse-N1", features=["asimd", "asimddp"])


def switches(choice: build.Choice) -> dict[str, str]:
    return dict(a.removeprefix("-D").split("=") for a in choice.cmake_args)


def test_an_amx_cpu_gets_avx512_and_never_amx() -> None:
    choice = build.choose(SAPPHIRE_RAPIDS)
    flags = switches(choice)
    assert choice.level == "x86-64-v4" and flags["GGML_NATIVE"] == "OFF"
    assert flags["GGML_AVX512"] == flags["GGML_AVX2"] == "ON"
    assert flags["GGML_AMX_TILE"] == flags["GGML_AMX_INT8"] == flags["GGML_AMX_BF16"] == "OFF"


@pytest.mark.parametrize(("cpu", "level"), [(HASWELL, "x86-64-v3"), (ATOM, "x86-64-v2"),
                                            (GRAVITON, "armv8.2-a+dotprod")])
def test_each_cpu_gets_the_fastest_level_it_runs(cpu: Cpu, level: str) -> None:
    choice = build.choose(cpu)
    assert choice.level == level and "-DGGML_NATIVE=OFF" in choice.cmake_args
    if cpu is ATOM:
        assert switches(choice)["GGML_AVX"] == "OFF" and switches(choice)["GGML_SSE42"] == "ON"


def test_the_fallback_turns_every_x86_extension_off() -> None:
    fallback = build.conservative(SAPPHIRE_RAPIDS)
    assert fallback.fallback and fallback.level == "x86-64"
    assert {v for k, v in switches(fallback).items()} == {"OFF"}
    assert build.conservative(GRAVITON).cmake_args == ["-DGGML_NATIVE=OFF",
                                                       "-DGGML_CPU_ARM_ARCH=armv8-a"]


def test_an_override_must_name_a_level() -> None:
    assert build.choose(SAPPHIRE_RAPIDS, "x86-64-v3").level == "x86-64-v3"
    with pytest.raises(SystemExit, match="x86-64-v3"):
        build.choose(SAPPHIRE_RAPIDS, "native")


def proven(cpu: Cpu, version: str = "0.3.36") -> Record:
    choice = build.choose(cpu)
    return Record(version=version, level=choice.level, about=choice.about,
                  cmake_args=choice.cmake_args, cpu=cpu, proof=Proof(ok=True, tokens=16))


def test_the_rebuild_decision() -> None:
    record = proven(HASWELL)
    fits = build.rebuild_reason(record, HASWELL, "0.3.36", "0.3.36", build.choose(HASWELL))
    assert fits is None
    moved = build.rebuild_reason(record, SAPPHIRE_RAPIDS, "0.3.36", "0.3.36",
                                 build.choose(SAPPHIRE_RAPIDS))
    assert moved is not None and "CPU features" in moved and "amx_tile" in moved
    lost = build.rebuild_reason(proven(SAPPHIRE_RAPIDS), HASWELL, "0.3.36", "0.3.36",
                                build.choose(HASWELL))
    assert lost is not None and "lacks" in lost and "avx512f" in lost
    assert "0.3.37" in build.rebuild_reason(record, HASWELL, "0.3.37", "0.3.36", build.choose(HASWELL))
    assert "never proven" in build.rebuild_reason(replace(record, proof=Proof(ok=False)), HASWELL,
                                                  "0.3.36", "0.3.36", build.choose(HASWELL))
    assert build.rebuild_reason(None, HASWELL, "0.3.36", "0.3.36", build.choose(HASWELL))
    other = build.choose(HASWELL, "x86-64-avx")
    assert "wanted" in build.rebuild_reason(record, HASWELL, "0.3.36", "0.3.36", other)


def test_a_fallback_build_is_kept_for_the_same_cpu() -> None:
    fallback = build.conservative(SAPPHIRE_RAPIDS)
    record = Record(version="0.3.36", level=fallback.level, about=fallback.about,
                    cmake_args=fallback.cmake_args, cpu=SAPPHIRE_RAPIDS, fallback=True,
                    proof=Proof(ok=True, tokens=16))
    wanted = build.choose(SAPPHIRE_RAPIDS)
    assert build.rebuild_reason(record, SAPPHIRE_RAPIDS, "0.3.36", "0.3.36", wanted) is None


def test_the_record_round_trips(tmp_path: Path) -> None:
    record = proven(SAPPHIRE_RAPIDS)
    build.write_record(record, tmp_path / "r.json")
    assert build.read_record(tmp_path / "r.json") == record
    (tmp_path / "bad.json").write_text("{")
    assert build.read_record(tmp_path / "bad.json") is None


def test_wheels_are_cached_by_their_flags_never_by_pip(tmp_path: Path,
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ENGRAM_BUILD_CACHE", str(tmp_path))
    v4, v3 = build.choose(SAPPHIRE_RAPIDS), build.choose(HASWELL)
    assert build.wheel_key("0.3.36", v4.cmake_args) != build.wheel_key("0.3.36", v3.cmake_args)
    folder = tmp_path / "llama-wheels" / build.wheel_key("0.3.36", v4.cmake_args)
    folder.mkdir(parents=True)
    (folder / "llama_cpp_python-0.3.36-cp311-cp311-linux_x86_64.whl").write_bytes(b"wheel")
    assert build.build_wheel("0.3.36", v4).parent == folder  # reused: same flags

    ran: list[tuple[list[str], dict]] = []

    def pip(cmd, env=None, **_):
        ran.append((cmd, env))
        Path(cmd[cmd.index("-w") + 1], "llama_cpp_python-0.3.36-cp311-cp311-linux_x86_64.whl").write_bytes(b"")
        return subprocess.CompletedProcess(cmd, 0)

    monkeypatch.setattr(build.subprocess, "run", pip)
    built = build.build_wheel("0.3.36", v3)  # other flags: built anew, outside pip's cache
    (cmd, env), = ran
    assert "--no-cache-dir" in cmd and "--no-binary" in cmd and "llama-cpp-python==0.3.36" in cmd
    assert env["CMAKE_ARGS"] == " ".join(v3.cmake_args)
    assert built.parent.name == build.wheel_key("0.3.36", v3.cmake_args)


def test_the_pinned_version_is_the_installed_one() -> None:
    assert build.required_version() == build.installed_version()


@pytest.mark.slow
def test_the_installed_build_generates_in_a_child_process() -> None:
    proof = build.prove()
    assert proof.ok, proof.detail
    assert proof.tokens >= build.PROOF_TOKENS


def test_setup_recorded_a_proven_build_for_this_cpu() -> None:
    record = build.read_record()
    if record is None:
        pytest.skip("llama-cpp-python was not installed by `bash dev.sh setup` in this environment")
    cpu = build.read_cpu()
    assert record.proof is not None and record.proof.ok and record.proof.tokens >= build.PROOF_TOKENS
    assert build.rebuild_reason(record, cpu, build.required_version(), build.installed_version(),
                                build.choose(cpu)) is None
    assert not any(a.startswith("-DGGML_AMX") and a.endswith("ON") for a in record.cmake_args)


def test_a_build_that_crashes_its_test_is_rebuilt_conservatively(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture) -> None:
    proofs = iter([Proof(ok=False, detail="crashed with SIGSEGV"),
                   Proof(ok=True, tokens=24, seconds=0.4, detail="generated 24 tokens")])
    installed: list[build.Choice] = []
    monkeypatch.setattr(build, "read_cpu", lambda: SAPPHIRE_RAPIDS)
    monkeypatch.setattr(build, "record_path", lambda prefix=None: tmp_path / build.RECORD_NAME)
    monkeypatch.setattr(build, "prove", lambda: next(proofs))
    monkeypatch.setattr(build, "install", lambda version, choice: installed.append(choice))
    assert build.cmd_prove() == 0
    record = build.read_record(tmp_path / build.RECORD_NAME)
    assert [c.level for c in installed] == ["x86-64"] and record.fallback
    assert record.level == "x86-64" and record.proof.ok and "SIGSEGV" in record.notes[0]
    said = capsys.readouterr().err
    assert "failed its test: crashed with SIGSEGV" in said and "rebuilding for x86-64" in said
    # and the next setup keeps the fallback instead of building the crashing level again
    wanted = build.choose(SAPPHIRE_RAPIDS)
    assert build.rebuild_reason(record, SAPPHIRE_RAPIDS, record.version, record.version, wanted) is None
