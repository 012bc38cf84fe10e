# DolphinScheduler standalone with the `fraudflow` CLI: the retraining workflow's Shell tasks
# run `fraudflow workflow step <task>` on this worker. The base image's Ubuntu has no Python
# 3.11, so uv installs a standalone build of it (glibc-portable) into its own venv.
FROM ghcr.io/astral-sh/uv:0.5.11 AS uv

# 3.1.1: the DolphinScheduler FraudFlow's client speaks and its tests run live (see README).
FROM apache/dolphinscheduler-standalone-server:3.1.1

RUN apt-get update \
    && apt-get install -y --no-install-recommends curl libgomp1 \
    && rm -rf /var/lib/apt/lists/*
COPY --from=uv /uv /usr/local/bin/uv
COPY . /src
RUN UV_PYTHON_INSTALL_DIR=/opt/python uv venv --python 3.11 /opt/fraudflow \
    && uv pip install --python /opt/fraudflow/bin/python --no-cache /src \
    && ln -s /opt/fraudflow/bin/fraudflow /usr/local/bin/fraudflow \
    && rm -rf /src
