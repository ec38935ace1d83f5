#!/usr/bin/env bash
# Installs what building and testing chargetail needs on a fresh Debian
# machine. Idempotent: installs only what is missing. Sourced by demo.sh and
# test.sh.
set -euo pipefail

SUDO=""
if [ "$(id -u)" -ne 0 ]; then SUDO="sudo"; fi
APT_UPDATED=0
apt_install() {
    if [ "$APT_UPDATED" -eq 0 ]; then
        $SUDO apt-get update -qq
        APT_UPDATED=1
    fi
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "$@" >/dev/null
}

need_build_tools() {
    local missing=()
    command -v cc >/dev/null || missing+=(gcc libc6-dev)
    command -v python3 >/dev/null || missing+=(python3)
    command -v curl >/dev/null || missing+=(curl)
    command -v openssl >/dev/null || missing+=(openssl)
    if [ "${#missing[@]}" -gt 0 ]; then apt_install "${missing[@]}"; fi
    if ! command -v cargo >/dev/null; then
        # Debian's cargo may be older than this crate needs (rust-version in
        # Cargo.toml); rustup is the usual way where it can be reached.
        echo "setup: cargo not found; installing Debian's rust toolchain" >&2
        apt_install cargo rustc
    fi
}

# RabbitMQ for the AMQP tests: use the one on 127.0.0.1:5672 if it answers;
# otherwise install Debian's rabbitmq-server and start it.
broker_up() { (exec 3<>/dev/tcp/127.0.0.1/5672) 2>/dev/null; }
need_broker() {
    if broker_up; then return 0; fi
    if ! command -v rabbitmq-server >/dev/null; then
        echo "setup: installing rabbitmq-server" >&2
        apt_install rabbitmq-server
    fi
    echo "setup: starting rabbitmq-server" >&2
    $SUDO rabbitmq-server -detached >/dev/null 2>&1 || true
    for _ in $(seq 1 60); do
        if broker_up && $SUDO rabbitmqctl -q await_startup >/dev/null 2>&1; then return 0; fi
        sleep 1
    done
    echo "setup: RabbitMQ did not come up on 127.0.0.1:5672" >&2
    return 1
}

# systemd-analyze checks the unit file (verify, security exposure).
need_systemd_analyze() {
    command -v systemd-analyze >/dev/null || apt_install systemd
}

# cargo-deb builds the .deb (scripts/package.sh, tests/package.rs).
need_cargo_deb() {
    local missing=()
    command -v strip >/dev/null || missing+=(binutils)
    command -v file >/dev/null || missing+=(file)
    command -v dpkg-deb >/dev/null || missing+=(dpkg)
    if [ "${#missing[@]}" -gt 0 ]; then apt_install "${missing[@]}"; fi
    command -v cargo-deb >/dev/null && return 0
    echo "setup: installing cargo-deb (a few minutes, once)" >&2
    cargo install cargo-deb --locked --quiet
}

# PostgreSQL for tests/pg_consumer.rs (the consumer example): use the one on
# 127.0.0.1:5432 if it answers (trust auth for user postgres on loopback);
# otherwise install Debian's postgresql, let loopback in without a
# password, and start the cluster.
pg_up() { (exec 3<>/dev/tcp/127.0.0.1/5432) 2>/dev/null; }
need_postgres() {
    if pg_up; then return 0; fi
    if ! ls /etc/postgresql/*/main/pg_hba.conf >/dev/null 2>&1; then
        echo "setup: installing postgresql" >&2
        apt_install postgresql
    fi
    local hba
    for hba in /etc/postgresql/*/main/pg_hba.conf; do
        if ! grep -q '^host all all 127.0.0.1/32 trust' "$hba"; then
            # First match wins in pg_hba.conf: put the loopback rules first.
            $SUDO sed -i '1i host all all 127.0.0.1/32 trust\nhost all all ::1/128 trust' "$hba"
        fi
    done
    local v
    for v in $(ls /etc/postgresql/); do
        echo "setup: starting PostgreSQL $v" >&2
        $SUDO pg_ctlcluster "$v" main start >/dev/null 2>&1 || $SUDO pg_ctlcluster "$v" main reload >/dev/null 2>&1 || true
    done
    for _ in $(seq 1 30); do
        if pg_up; then return 0; fi
        sleep 1
    done
    echo "setup: PostgreSQL did not come up on 127.0.0.1:5432" >&2
    return 1
}

# Headless Chromium for the status page test (tests/http_page.rs).
need_chromium() {
    command -v chromium >/dev/null || command -v chromium-browser >/dev/null || apt_install chromium
}
