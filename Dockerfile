# The project as an installed package, run by a non-root user outside any source folder.
# Build: docker build -t spartan-market .   (docker-compose.yml does it for you)
FROM python:3.11-slim AS build
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
WORKDIR /src
# .dockerignore keeps .env, .venv, var/ (staged media), tests and the git history out.
COPY . .
RUN pip wheel --no-deps --wheel-dir /wheels .

FROM python:3.11-slim
ENV PYTHONUNBUFFERED=1 PYTHONDONTWRITEBYTECODE=1 PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 PORT=8000
COPY --from=build /wheels /wheels
RUN pip install /wheels/*.whl && rm -rf /wheels \
    && useradd --create-home --uid 10001 --shell /usr/sbin/nologin spartan \
    && mkdir -p /data/media && chown spartan:spartan /data/media
USER spartan
WORKDIR /home/spartan
EXPOSE 8000
HEALTHCHECK --interval=30s --timeout=5s --retries=3 CMD ["python", "-m", "market.ops.probe"]
# The Procfile's web process; docker-compose.yml gives every other service its own command.
CMD ["sh", "-c", "exec gunicorn 'webapp:create_app()' --bind 0.0.0.0:${PORT:-8000} --workers ${WEB_CONCURRENCY:-3} --worker-class gthread --threads ${WEB_THREADS:-8} --no-control-socket --access-logfile -"]
