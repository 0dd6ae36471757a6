# The DeRa web demo on the embedded offline pair. Also a Hugging Face Space (sdk: docker).
#   docker build -t dera-demo . && docker run -p 7860:7860 dera-demo
FROM python:3.11-slim

# Spaces run containers as uid 1000; the model cache must be writable by that user.
RUN useradd --create-home --uid 1000 user
ENV HOME=/home/user \
    VENV=/opt/venv \
    PATH=/opt/venv/bin:$PATH \
    DERA_CACHE_DIR=/home/user/.cache/dera-demo \
    GRADIO_SERVER_NAME=0.0.0.0 \
    GRADIO_SERVER_PORT=7860 \
    PYTHONUNBUFFERED=1
WORKDIR /home/user/app

# The same install steps as the README, before the code, so code changes keep this layer cached.
COPY requirements.txt requirements-dev.txt ./
COPY scripts/setup.sh scripts/setup.sh
RUN bash scripts/setup.sh && chown -R user /opt/venv

COPY --chown=user . .
USER user
# Convert the embedded model at build time, so the container starts in seconds.
RUN python -c "from dera_demo.embedded import reference_dir; reference_dir()"

EXPOSE 7860
CMD ["python", "app.py"]
