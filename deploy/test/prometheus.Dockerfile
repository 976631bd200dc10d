# Stands in for prom/prometheus where it cannot be pulled: Debian's package,
# run the way the official image runs it.
ARG BASE
FROM ${BASE}
RUN apt-get update \
 && apt-get install -y prometheus \
 && rm -rf /var/lib/apt/lists/* \
 && mkdir -p /prometheus && chown nobody:nogroup /prometheus
USER nobody
EXPOSE 9090
ENTRYPOINT ["/usr/bin/prometheus"]
CMD ["--config.file=/etc/prometheus/prometheus.yml", "--storage.tsdb.path=/prometheus"]
