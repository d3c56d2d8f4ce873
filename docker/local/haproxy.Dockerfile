# haproxy from Debian's package on the debootstrapped base (scripts/build-local-image.sh), laid
# out like the public haproxy image: config at /usr/local/etc/haproxy/haproxy.cfg, runs as the
# unprivileged `haproxy` user, master-worker mode in the foreground.
ARG BASE_IMAGE=gridraft-base:bookworm
FROM ${BASE_IMAGE}
RUN apt-get update \
    && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends haproxy \
    && rm -rf /var/lib/apt/lists/* \
    && mkdir -p /usr/local/etc/haproxy /var/lib/haproxy \
    && chown haproxy:haproxy /var/lib/haproxy
ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
USER haproxy
WORKDIR /var/lib/haproxy
STOPSIGNAL SIGUSR1
CMD ["haproxy", "-W", "-db", "-f", "/usr/local/etc/haproxy/haproxy.cfg"]
