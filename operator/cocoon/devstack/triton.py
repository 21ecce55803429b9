"""Run the standalone `tritonserver` that nvidia-pytriton bundles, outside pytriton.

The bundled binary is what a pod runs, starts in under two seconds and needs no apt packages, but
it only works with the backend folder, library path and PATH arranged as described in
docs (shared notes "triton-cpu"): this module is the one place that knows how.
"""

from __future__ import annotations

import contextlib
import importlib.util
import os
import shutil
import subprocess
import sys
import sysconfig
import tempfile
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType

from cocoon.devstack.process import die_with_parent, free_port, http_ok, terminate, wait_for
from cocoon.placement.render import CONFIGMAP_PATH_SEPARATOR

DEMO_MODELS = Path(__file__).parent / "models"


def configmap_data(model: str, repository: Path = DEMO_MODELS) -> dict[str, str]:
    """A model's files as ConfigMap keys (`add/1/model.py` -> `add__1__model.py`), the shape
    the operator mounts back into Triton's model repository."""
    return {
        str(p.relative_to(repository)).replace("/", CONFIGMAP_PATH_SEPARATOR): p.read_text()
        for p in sorted((repository / model).rglob("*"))
        if p.is_file() and "__pycache__" not in p.parts
    }


class TritonNotFoundError(RuntimeError):
    """nvidia-pytriton (the `triton` extra) is not installed."""


def _bundle() -> Path:
    spec = importlib.util.find_spec("pytriton")
    if spec is None or not spec.submodule_search_locations:
        raise TritonNotFoundError(
            "nvidia-pytriton is not installed: pip install 'cocoon-k8s[triton]'"
        )
    return Path(next(iter(spec.submodule_search_locations))) / "tritonserver"


def prepare_backends(directory: Path) -> Path:
    """Lay out `<directory>/python/` with the python backend and this interpreter's stub."""
    bundle = _bundle()
    python_dir = directory / "python"
    python_dir.mkdir(parents=True, exist_ok=True)
    for name in ("libtriton_python.so", "triton_python_backend_utils.py"):
        shutil.copy2(bundle / "backends" / "python" / name, python_dir / name)
    version = f"{sys.version_info.major}.{sys.version_info.minor}"
    stub = bundle / "python_backend_stubs" / version / "triton_python_backend_stub"
    shutil.copy2(stub, python_dir / "triton_python_backend_stub")
    return directory


def server_env(base: dict[str, str] | None = None) -> dict[str, str]:
    """Environment for the server: this Python's libpython first, this venv's python3 first.

    Without the LIBDIR entry the stub may load the distribution's libpython against our stdlib;
    without PATH it finds the wrong interpreter (PYTHONPATH alone is not honoured).
    """
    env = dict(os.environ if base is None else base)
    libdir = str(sysconfig.get_config_var("LIBDIR") or "")
    bundled_libs = _bundle().parent.parent / "nvidia_pytriton.libs"
    paths = [p for p in (libdir, str(bundled_libs), env.get("LD_LIBRARY_PATH", "")) if p]
    env["LD_LIBRARY_PATH"] = ":".join(paths)
    env["PATH"] = f"{Path(sys.executable).parent}:{env.get('PATH', '')}"
    return env


@dataclass
class TritonServer:
    """A running tritonserver on loopback; use as a context manager or call `stop()`."""

    process: subprocess.Popen[bytes]
    http_port: int
    grpc_port: int
    metrics_port: int
    workdir: Path
    log_path: Path
    _owned_workdir: bool = field(default=False, repr=False)

    @property
    def http_url(self) -> str:
        return f"http://127.0.0.1:{self.http_port}"

    @property
    def grpc_target(self) -> str:
        return f"127.0.0.1:{self.grpc_port}"

    def is_ready(self) -> bool:
        return http_ok(f"{self.http_url}/v2/health/ready", timeout=1)

    def wait_ready(self, timeout: float = 60.0) -> None:
        def ready() -> bool:
            if self.process.poll() is not None:
                raise RuntimeError(
                    f"tritonserver exited with {self.process.returncode}; log:\n{self.log_tail()}"
                )
            return self.is_ready()

        try:
            wait_for(ready, timeout=timeout, what="tritonserver ready", interval=0.05)
        except TimeoutError:
            raise TimeoutError(
                f"tritonserver not ready after {timeout}s; log:\n{self.log_tail()}"
            ) from None

    def log_tail(self, chars: int = 4000) -> str:
        with contextlib.suppress(OSError):
            return self.log_path.read_text(errors="replace")[-chars:]
        return ""

    def stop(self, timeout: float = 15.0) -> None:
        terminate(self.process, timeout)
        if self._owned_workdir:
            shutil.rmtree(self.workdir, ignore_errors=True)

    def __enter__(self) -> TritonServer:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()


def start(
    model_repository: Path = DEMO_MODELS,
    *,
    workdir: Path | None = None,
    extra_args: tuple[str, ...] = (),
    ready_timeout: float = 60.0,
) -> TritonServer:
    """Start tritonserver on free loopback ports and return once it reports ready."""
    owned = workdir is None
    work = Path(tempfile.mkdtemp(prefix="cocoon-triton-")) if workdir is None else workdir
    work.mkdir(parents=True, exist_ok=True)
    backends = prepare_backends(work / "backends")
    http_port, grpc_port, metrics_port = free_port(), free_port(), free_port()
    log_path = work / "tritonserver.log"
    args = [
        str(_bundle() / "bin" / "tritonserver"),
        f"--model-repository={model_repository}",
        f"--backend-directory={backends}",
        f"--backend-config=python,shm-region-prefix-name=cocoon{uuid.uuid4().hex[:12]}",
        "--http-address=127.0.0.1",
        "--grpc-address=127.0.0.1",
        "--metrics-address=127.0.0.1",
        f"--http-port={http_port}",
        f"--grpc-port={grpc_port}",
        f"--metrics-port={metrics_port}",
        "--allow-cpu-metrics=true",
        "--allow-gpu-metrics=false",
        "--exit-timeout-secs=5",
        *extra_args,
    ]
    with log_path.open("wb") as log:
        process = subprocess.Popen(
            args,
            stdout=log,
            stderr=subprocess.STDOUT,
            env=server_env(),
            cwd=work,
            preexec_fn=die_with_parent,  # noqa: PLW1509 - prctl must run in the child
        )
    server = TritonServer(
        process, http_port, grpc_port, metrics_port, work, log_path, _owned_workdir=owned
    )
    try:
        server.wait_ready(ready_timeout)
    except BaseException:
        server.stop()
        raise
    return server
