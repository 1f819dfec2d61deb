"""A runtime child whose model library segfaults on the first generation, for real.

It stands in for the one thing these machines cannot produce on demand: a llama.cpp build that
crashes (the AMX bug needs an AMX CPU). It speaks the real child's protocol and then dies of a
genuine SIGSEGV (a read of address 0 through ctypes), exactly as the native crash does.
"""

from __future__ import annotations

import ctypes
import json
import sys


def main() -> None:
    json.loads(sys.stdin.readline())
    info = {"model_name": "crashing", "context_window": 2048, "supports_logit_bias": False,
            "json_attempts": 1, "path": "", "n_threads": 1, "n_gpu_layers": 0,
            "load_seconds": 0.0, "pid": 0}
    print(json.dumps({"op": "ready", "info": info}), flush=True)
    for line in sys.stdin:
        message = json.loads(line)
        if message.get("op") == "tokenize":
            tokens = list(range(len(message["text"].split())))
            print(json.dumps({"id": message["id"], "tokens": tokens}), flush=True)
        elif message.get("op") == "generate":
            ctypes.string_at(0)  # SIGSEGV


if __name__ == "__main__":
    main()
