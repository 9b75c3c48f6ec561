# One image for every exchange; the service's env file picks the exchange (docker-compose.yml).
# Build: docker build -t streamer .   Run: docker run --env-file .env.binance -p 9500:9500 -p 8100:8100 streamer

# -- build: wheels for streamer and its runtime dependencies (no test or lint tools) ----------
FROM python:3.11-slim AS build
# fast: picows for the exchange connection; nats: the NATS consumer; vn: vnstock (vnstock-poll
# and DNSE's fallback). Leave vn out for a smaller Binance-only image: --build-arg EXTRAS=fast,nats
ARG EXTRAS=fast,nats,vn
WORKDIR /src
COPY pyproject.toml README.md ./
COPY streamer ./streamer
RUN pip wheel --no-cache-dir --wheel-dir /wheels ".[${EXTRAS}]"

# -- runtime --------------------------------------------------------------------------------
FROM python:3.11-slim
ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    STREAMER_LOG_FORMAT=json \
    STREAMER_FILE_CONSUMER_BASE_PATH=/data
RUN --mount=type=bind,from=build,source=/wheels,target=/wheels \
    pip install --no-cache-dir --no-index --find-links=/wheels /wheels/*.whl \
    && useradd --system --uid 10001 --create-home --home-dir /home/streamer streamer \
    && mkdir /data && chown streamer /data
USER streamer
WORKDIR /home/streamer
# 9500: WebSocket server (websocket consumer); 8100: /health and /metrics
EXPOSE 9500 8100
VOLUME ["/data"]
# SIGTERM: the service closes the exchange connections, drains every consumer and exits 0.
STOPSIGNAL SIGTERM
# /health answers 200 when ok or degraded, 503 when the feed is down or the service is starting.
HEALTHCHECK --interval=15s --timeout=5s --start-period=60s --retries=3 \
    CMD ["python", "-c", "import os, sys, urllib.request as u\ntry:\n    u.urlopen('http://127.0.0.1:%s/health' % os.environ.get('STREAMER_HTTP_PORT', '8100'), timeout=4)\nexcept Exception as e:\n    sys.exit(f'unhealthy: {e}')"]
ENTRYPOINT ["streamer"]
