# The locally built equivalent of docker/Dockerfile's runtime stage (scripts/build-local-image.sh):
# the host-built binary on a debootstrapped Debian 12 base, no registry needed. Keep the two in
# step: same user, environment, volume, health check and entrypoint.
ARG BASE_IMAGE=gridraft-base:bookworm
FROM ${BASE_IMAGE}
RUN groupadd --system --gid 10001 gridraft \
    && useradd --system --uid 10001 --gid gridraft --home-dir /data --no-create-home \
        --shell /usr/sbin/nologin gridraft \
    && mkdir -p /data \
    && chown gridraft:gridraft /data
COPY gridraft /usr/local/bin/gridraft
COPY entrypoint.sh /usr/local/bin/gridraft-entrypoint
# No GRIDRAFT_LISTEN: the default 0.0.0.0:5556, which docker-selenium's SE_SESSIONS_PORT may move.
ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
    GRIDRAFT_PEER_LISTEN=0.0.0.0:7556 \
    GRIDRAFT_DATA_DIR=/data \
    GRIDRAFT_LOG_FORMAT=json
VOLUME ["/data"]
EXPOSE 5556 7556
USER gridraft:gridraft
WORKDIR /data
HEALTHCHECK --interval=5s --timeout=3s --start-period=30s --retries=3 CMD ["gridraft", "probe"]
STOPSIGNAL SIGTERM
ENTRYPOINT ["gridraft-entrypoint"]
CMD ["serve"]
