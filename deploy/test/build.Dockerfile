# A build image like the official rust and node ones: Debian with the C
# toolchain, plus the host's Rust and Node copied in (see base-images.sh).
ARG BASE
FROM ${BASE}
RUN apt-get update \
 && apt-get install -y gcc libc6-dev make libstdc++6 ca-certificates \
 && rm -rf /var/lib/apt/lists/*
# The host's own CA certificates (an egress proxy's, where there is one), so
# cargo and npm inside the build reach their registries as the host does.
COPY ca/ /usr/local/share/ca-certificates/
RUN update-ca-certificates
ENV PATH=/usr/local/rust/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
    CARGO_HOME=/usr/local/cargo \
    NODE_EXTRA_CA_CERTS=/etc/ssl/certs/ca-certificates.crt
COPY rust /usr/local/rust
COPY node/node /usr/local/bin/node
COPY node/npm /usr/local/lib/node_modules/npm
RUN ln -s ../lib/node_modules/npm/bin/npm-cli.js /usr/local/bin/npm \
 && cargo --version && node --version && npm --version
