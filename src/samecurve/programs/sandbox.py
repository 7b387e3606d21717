"""Running an untrusted program: checked by its syntax tree first, then executed
in a fresh interpreter (`python -I`) with an address-space and CPU limit and
only the safe builtins, over a batch of inputs sent as JSON. An endless loop is
killed at the time limit, a 10 GB allocation fails at the memory limit, and
either comes back as one line that says so; the caller goes on."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from dataclasses import dataclass

import numpy as np

from samecurve.api import Program
from samecurve.programs.domain import Domain
from samecurve.programs.source import SAFE_BUILTINS, check_source

FAILED = -1  # the output recorded for an input the program crashed on or answered badly

_CHILD = r"""
import builtins, json, resource, sys
req = json.loads(sys.stdin.buffer.read())
mem = int(req["memory_mb"]) * 2**20
resource.setrlimit(resource.RLIMIT_AS, (mem, mem))
cpu = int(req["cpu_seconds"])
resource.setrlimit(resource.RLIMIT_CPU, (cpu, cpu + 1))
sys.setrecursionlimit(2000)
scope = {"__builtins__": {n: getattr(builtins, n) for n in req["builtins"]}}
try:
    exec(compile(req["source"], "<program>", "exec"), scope)
    fn = scope[req["entry"]]
except MemoryError:
    sys.stdout.write(json.dumps({"fatal": "memory"})); sys.exit(0)
except Exception as exc:
    sys.stdout.write(json.dumps({"fatal": "define", "error": f"{type(exc).__name__}: {exc}"}))
    sys.exit(0)
seq = req["kind"] == "sequence"
out, crashes, first = [], 0, ""
for args in req["inputs"]:
    try:
        r = fn(*args)
        if seq:
            r = [int(v) for v in r]
            if len(r) != len(args[0]):
                raise ValueError(f"returned {len(r)} outputs for {len(args[0])} positions")
        else:
            r = int(r)
    except MemoryError:
        sys.stdout.write(json.dumps({"fatal": "memory"})); sys.exit(0)
    except Exception as exc:
        crashes += 1
        first = first or f"{type(exc).__name__}: {exc}"
        r = [-1] * len(args[0]) if seq else -1
    out.append(r)
sys.stdout.write(json.dumps({"outputs": out, "crashes": crashes, "first_error": first}))
"""


class ProgramFailed(RuntimeError):
    """A program that ran past its time or memory limit, or could not be defined."""


@dataclass(frozen=True, eq=False)
class Outputs:
    """A program's answers on a batch: (N,) or (N, L) labels, FAILED where it crashed."""

    values: np.ndarray
    crashes: int
    first_error: str = ""


def run_program(program: Program, domain: Domain, inputs: np.ndarray, *, seconds: float = 60.0,
                memory_mb: int = 1024) -> Outputs:
    """The program's outputs on `inputs`; ProgramRejected before it runs if its
    source is not allowed, ProgramFailed if it overruns a limit."""
    if program.source is None:
        raise ValueError("this Program abstains (source=None): there is nothing to run")
    check_source(program.source, program.entry)
    if len(inputs) == 0:
        return Outputs(np.zeros(domain.output_shape(inputs), np.int64), 0)
    request = {
        "source": program.source, "entry": program.entry, "kind": domain.kind,
        "inputs": domain.program_args(inputs), "builtins": sorted(SAFE_BUILTINS),
        "memory_mb": memory_mb, "cpu_seconds": max(1, int(seconds) + 1),
    }
    env = {"PATH": os.environ.get("PATH", ""), "OPENBLAS_NUM_THREADS": "1"}
    try:
        done = subprocess.run(
            [sys.executable, "-I", "-S", "-c", _CHILD], input=json.dumps(request).encode(),
            capture_output=True, timeout=seconds, env=env, check=False,
        )
    except subprocess.TimeoutExpired as exc:
        raise ProgramFailed(
            f"program ran past its {seconds:g} s limit on {len(inputs)} inputs and was killed "
            "(an endless loop?); make it faster"
        ) from exc
    try:
        reply = json.loads(done.stdout or b"{}")
    except json.JSONDecodeError:
        reply = {}
    if reply.get("fatal") == "memory" or (not reply and _killed_for_memory(done)):
        raise ProgramFailed(f"program exceeded its {memory_mb} MB memory limit and was stopped; "
                            "use less memory")
    if reply.get("fatal") == "define":
        raise ProgramFailed(f"program could not be defined ({reply['error']}); fix its top level")
    if "outputs" not in reply:
        why = "CPU time limit" if done.returncode in (-9, -24, 152) else f"exit {done.returncode}"
        tail = done.stderr.decode(errors="replace").strip().splitlines()[-1:] or [""]
        raise ProgramFailed(f"program's interpreter stopped ({why}) {tail[0]}".strip())
    values = np.asarray(reply["outputs"], dtype=np.int64).reshape(domain.output_shape(inputs))
    return Outputs(values, int(reply["crashes"]), reply.get("first_error", ""))


def _killed_for_memory(done: subprocess.CompletedProcess) -> bool:
    return b"MemoryError" in done.stderr
