"""wasmpod: take a wasm32-wasi workload from source to a running Pod.

    source crate --build--> module --push--> artifact --render--> manifests --apply--> target

Each step is one module of this package; `tasks.py` at a project's root only parses flags,
calls one function here and prints. Heavy libraries (wasmtime, oras, kubernetes-validate) are
imported inside the functions that need them, so `invoke --list` stays instant.
"""

__version__ = "0.2.0"
