# One image for every Hive process; docker-compose.yml picks the command.
FROM python:3.11-slim

ENV PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    PIP_NO_CACHE_DIR=1 \
    HIVE_BIND=0.0.0.0 \
    HIVE_VAR_DIR=/app/var

WORKDIR /app
COPY requirements.txt .
RUN pip install -r requirements.txt

COPY . .
# Static files are collected at build time (development settings need no secret).
RUN python manage.py collectstatic --noinput --verbosity 0 \
    && rm -rf /app/var/* \
    && useradd --create-home --uid 1000 hive \
    && chown hive /app/var

USER hive
EXPOSE 8000 5555
CMD ["python", "manage.py", "hive", "web"]
