# flowcollector in a container: mount the config at /etc/flowcollector/config.yaml and state at /var/lib/flowcollector.
#   docker build -t flowcollector . && docker run -v $PWD/config.yaml:/etc/flowcollector/config.yaml:ro \
#       -v flowcollector-state:/var/lib/flowcollector flowcollector
FROM python:3.11-slim
WORKDIR /opt/flowcollector
COPY pyproject.toml README.md ./
COPY collector ./collector
COPY adapters ./adapters
RUN pip install --no-cache-dir . && useradd --system --home /var/lib/flowcollector flowcollector \
    && mkdir -p /var/lib/flowcollector && chown flowcollector /var/lib/flowcollector
USER flowcollector
WORKDIR /var/lib/flowcollector
ENV FLOWCOLLECTOR_CONFIG=/etc/flowcollector/config.yaml
ENTRYPOINT ["flowcollector"]
CMD ["run"]
