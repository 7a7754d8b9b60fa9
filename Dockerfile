# The Nezabyt image: one image for the three processes of the Procfile (release, web, worker);
# compose.yaml picks the command. Built on the official Python slim image.
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

WORKDIR /app

# Dependencies first, from the project's metadata alone, so a code change rebuilds only the
# last layers. psycopg[binary] and cryptography come as wheels: no compiler in the image.
COPY pyproject.toml README.md ./
COPY addon ./addon
COPY install ./install
COPY settings_ui ./settings_ui
COPY worker ./worker
COPY devportal ./devportal
COPY demo ./demo
RUN pip install . && useradd --system --uid 10001 --home-dir /app nezabyt

# gunicorn reads gunicorn.conf.py from the working directory (the Procfile's web command names it).
COPY gunicorn.conf.py Procfile ./

USER nezabyt
EXPOSE 8000
CMD ["gunicorn", "--config", "gunicorn.conf.py", "addon.web:create_app()"]
