# syntax=docker/dockerfile:1.7
# Triton Inference Server for CPU pools (dev, tests and the demo): the real `tritonserver` 2.51
# that the nvidia-pytriton wheel bundles, with its python backend laid out where Triton looks by
# default (/opt/tritonserver/backends). GPU pools use NVIDIA's image (nvcr.io/nvidia/tritonserver).
# Build from the repository root:  docker build -f images/triton.Dockerfile -t cocoon-triton:dev .

ARG PYTHON_IMAGE=python:3.11.14-slim-bookworm

FROM ${PYTHON_IMAGE} AS build
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1 PYTHONDONTWRITEBYTECODE=1
SHELL ["/bin/bash", "-o", "pipefail", "-c"]
# the wheel's server, its bundled libraries (found through its RPATH, so the site-packages layout
# stays) and numpy for python-backend models; the stub matching this Python goes beside the backend
RUN python -m venv /opt/triton \
 && /opt/triton/bin/pip install --no-deps nvidia-pytriton==0.7.0 \
 && /opt/triton/bin/pip install numpy==1.26.4 \
 && site=$(/opt/triton/bin/python -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])') \
 && pyver=$(/opt/triton/bin/python -c 'import sys; print("%d.%d" % sys.version_info[:2])') \
 && bundle="$site/pytriton/tritonserver" \
 && mkdir -p /opt/tritonserver/backends/python \
 && cp "$bundle/backends/python/libtriton_python.so" "$bundle/backends/python/triton_python_backend_utils.py" \
       "$bundle/python_backend_stubs/$pyver/triton_python_backend_stub" /opt/tritonserver/backends/python/ \
 && ln -s "$bundle/bin/tritonserver" /opt/triton/bin/tritonserver \
 && ln -s "$site/nvidia_pytriton.libs" /opt/triton/libs \
 && find "$site/pytriton" -mindepth 1 -maxdepth 1 ! -name tritonserver -exec rm -rf {} + \
 && rm -rf "$bundle/python_backend_stubs" "$bundle/backends" \
 && /opt/triton/bin/pip uninstall --yes pip \
 && find /opt/triton -name '__pycache__' -prune -exec rm -rf {} +

FROM ${PYTHON_IMAGE} AS runtime
LABEL org.opencontainers.image.title="cocoon-triton" \
      org.opencontainers.image.description="Triton Inference Server 2.51 (CPU, python backend) for Cocoon dev pools" \
      org.opencontainers.image.licenses="BSD-3-Clause"
# the python backend's stub runs the first python3 on PATH: the venv's, which has numpy; the
# backend and its stub find the wheel's bundled libraries only through LD_LIBRARY_PATH once moved
ENV PATH=/opt/triton/bin:/usr/local/bin:/usr/bin:/bin \
    LD_LIBRARY_PATH=/opt/triton/libs \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1
COPY --from=build /opt/triton /opt/triton
# the python backend chmods its stub when it loads a model, which only the file's owner may do:
# the stub belongs to 1000, the uid the operator runs Triton as (NVIDIA's image uses it too)
COPY --from=build --chown=1000:1000 /opt/tritonserver /opt/tritonserver
USER 1000:1000
WORKDIR /tmp
ENTRYPOINT ["tritonserver"]
CMD ["--model-repository=/models"]
