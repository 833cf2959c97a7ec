# shellcheck shell=bash
# Shared helpers for ops/test and ops/setup.  Source it; do not execute it.
# Every function is safe to call twice (idempotent) and prints what it does on stderr.

# System packages (Debian 12 names). What the service needs to build and run — ops/setup
# installs only these:
# softhsm2: the embedded HSM; openssl: operators' checks (README); gcc, libc6-dev: ring and
# libsqlite3-sys build C code; postgresql-client: pg_dump/pg_restore for `ecert backup` and
# `restore` on PostgreSQL.
ECERT_RUNTIME_PACKAGES=(softhsm2 openssl gcc libc6-dev ca-certificates postgresql-client)
# What only the tests and benchmarks use — ops/test and ops/bench install these too:
# postgresql: the test server; python3, python3-venv: pkilint and `cryptography`;
# opensc: pkcs11-tool, an outside judge of the token (keys sensitive, never extractable);
# libfaketime: moved clocks; chromium, chromium-driver, fonts-wqy-microhei: the browser tests;
# libnss3-tools: vfychain, crlutil, certutil — NSS (Thunderbird, Firefox) judging chains, CRLs,
# OCSP; knot, knot-dnssecutils, unbound: a signed test zone and a validating resolver (DNSSEC
# tests); slapd, ldap-utils: the LDAP directory tests (a real OpenLDAP configured from
# ops/slapd/, read with ldapsearch); haproxy: the balancer of the rolling-restart test; age:
# the standard tool that must open a backup's parts; systemd: systemd-analyze verifies ops/systemd.
ECERT_TEST_PACKAGES=(postgresql python3 systemd python3-venv opensc libfaketime chromium chromium-driver fonts-wqy-microhei libnss3-tools knot knot-dnssecutils unbound slapd ldap-utils haproxy age)

# pkilint is the certificate-profile oracle of the e2e tests; pin what was verified.
ECERT_PKILINT_VERSION="${ECERT_PKILINT_VERSION:-0.13.3}"
ECERT_CRYPTOGRAPHY_VERSION="${ECERT_CRYPTOGRAPHY_VERSION:-50.0.2}"
# aiosmtpd is the real SMTP listener the RA tests read mail from.
ECERT_AIOSMTPD_VERSION="${ECERT_AIOSMTPD_VERSION:-1.4.6}"
# The judge of /api/v1/openapi.json (issue 16: generated clients need a valid document).
ECERT_OPENAPI_VALIDATOR_VERSION="${ECERT_OPENAPI_VALIDATOR_VERSION:-0.9.0}"
# An integrator's client generated from that document drives the bulk API in the tests.
ECERT_OPENAPI_CLIENT_VERSION="${ECERT_OPENAPI_CLIENT_VERSION:-0.29.1}"

ecert_log() { printf '==> %s\n' "$*" >&2; }
ecert_die() {
    printf 'ERROR: %s\n' "$*" >&2
    exit 1
}

# Run a command as root: directly if we are root, else through sudo.
ecert_as_root() {
    if [ "$(id -u)" -eq 0 ]; then
        "$@"
    elif command -v sudo >/dev/null 2>&1; then
        sudo "$@"
    else
        ecert_die "need root (or sudo) to run: $*"
    fi
}

ecert_pkg_installed() {
    [ "$(dpkg-query -W -f='${db:Status-Status}' "$1" 2>/dev/null)" = installed ]
}

# Install whatever is missing from ECERT_RUNTIME_PACKAGES (and, with `test`, from
# ECERT_TEST_PACKAGES). Skips apt entirely when everything is already installed.
ecert_install_system_packages() {
    command -v dpkg-query >/dev/null 2>&1 || ecert_die "dpkg-query not found: ecert supports Debian/Ubuntu only"
    local p missing=() wanted=("${ECERT_RUNTIME_PACKAGES[@]}")
    if [ "${1:-}" = test ]; then
        wanted+=("${ECERT_TEST_PACKAGES[@]}")
    fi
    for p in "${wanted[@]}"; do
        ecert_pkg_installed "$p" || missing+=("$p")
    done
    if [ "${#missing[@]}" -eq 0 ]; then
        ecert_log "system packages: all present"
        return 0
    fi
    ecert_log "system packages: installing ${missing[*]}"
    # slapd without its own database or running service: the tests start their own, from
    # ops/slapd/, on a private port.
    echo "slapd slapd/no_configuration boolean true" | ecert_as_root debconf-set-selections 2>/dev/null || true
    ecert_as_root env DEBIAN_FRONTEND=noninteractive apt-get update -q
    ecert_as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "${missing[@]}"
}

# Make sure cargo is on PATH (rustup installs into ~/.cargo/bin, which non-login shells may lack).
ecert_require_cargo() {
    if ! command -v cargo >/dev/null 2>&1 && [ -x "${CARGO_HOME:-$HOME/.cargo}/bin/cargo" ]; then
        PATH="${CARGO_HOME:-$HOME/.cargo}/bin:$PATH"
        export PATH
    fi
    command -v cargo >/dev/null 2>&1 ||
        ecert_die "cargo not found; install Rust first (https://rustup.rs), then re-run"
    ecert_log "cargo: $(cargo --version)"
}

ecert_require_nextest() {
    if ! cargo nextest --version >/dev/null 2>&1; then
        ecert_log "cargo-nextest missing: installing it (one-off, takes a few minutes)"
        cargo install --locked cargo-nextest
    fi
    ecert_log "nextest: $(cargo nextest --version 2>/dev/null | head -n1)"
}

# ecert_setup_pkilint_venv DIR: create/reuse a venv with pinned pkilint + cryptography and put
# DIR/bin on PATH.  Fails loudly if the linters do not run.
ecert_setup_pkilint_venv() {
    local venv="$1" have=""
    if [ ! -x "$venv/bin/python" ]; then
        ecert_log "pkilint: creating venv $venv"
        python3 -m venv "$venv" || ecert_die "python3 -m venv failed (is python3-venv installed?)"
    fi
    have="$("$venv/bin/python" - <<'EOF' 2>/dev/null || true
import importlib.metadata as m
print(m.version("pkilint"), m.version("cryptography"), m.version("aiosmtpd"), m.version("openapi-spec-validator"), m.version("openapi-python-client"))
EOF
)"
    if [ "$have" != "$ECERT_PKILINT_VERSION $ECERT_CRYPTOGRAPHY_VERSION $ECERT_AIOSMTPD_VERSION $ECERT_OPENAPI_VALIDATOR_VERSION $ECERT_OPENAPI_CLIENT_VERSION" ]; then
        ecert_log "pkilint: installing pkilint==$ECERT_PKILINT_VERSION cryptography==$ECERT_CRYPTOGRAPHY_VERSION aiosmtpd==$ECERT_AIOSMTPD_VERSION openapi-spec-validator==$ECERT_OPENAPI_VALIDATOR_VERSION"
        "$venv/bin/python" -m pip install --disable-pip-version-check -q \
            "pkilint==$ECERT_PKILINT_VERSION" "cryptography==$ECERT_CRYPTOGRAPHY_VERSION" "aiosmtpd==$ECERT_AIOSMTPD_VERSION" \
            "openapi-spec-validator==$ECERT_OPENAPI_VALIDATOR_VERSION" \
            "openapi-python-client==$ECERT_OPENAPI_CLIENT_VERSION" ||
            ecert_die "pip install of pkilint failed"
    fi
    PATH="$venv/bin:$PATH"
    export PATH
    ECERT_PKILINT_BIN="$venv/bin"
    export ECERT_PKILINT_BIN
    lint_pkix_cert --help >/dev/null 2>&1 || ecert_die "pkilint is broken: 'lint_pkix_cert --help' failed (venv $venv)"
    ecert_log "pkilint: $ECERT_PKILINT_VERSION ready ($venv/bin on PATH)"
}

# axe-core (npm) for the browser tests' accessibility checks, pinned by tests/axe/package-lock.json;
# sets ECERT_AXE_JS. npm comes with the machine's Node.js, or Debian's nodejs and npm.
ecert_setup_axe() {
    local dir="$1" js="$1/node_modules/axe-core/axe.min.js" want have=""
    if ! command -v npm >/dev/null 2>&1; then
        ecert_log "axe-core: npm missing: installing Debian's nodejs and npm"
        ecert_as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends nodejs npm
    fi
    want="$(sed -n 's/.*"axe-core": "\(.*\)".*/\1/p' "$dir/package.json")"
    [ -f "$js" ] && have="$(sed -n 's/.*"version": "\(.*\)".*/\1/p' "$dir/node_modules/axe-core/package.json" | head -1)"
    if [ "$have" != "$want" ]; then
        ecert_log "axe-core: installing $want (npm ci in $dir)"
        (cd "$dir" && npm ci --no-audit --no-fund -q) || ecert_die "npm ci of axe-core failed"
    fi
    ECERT_AXE_JS="$js"
    export ECERT_AXE_JS
    ecert_log "axe-core: $want ready ($js)"
}

# ---------------------------------------------------------------- private PostgreSQL server
ECERT_PG_DIR=""
ECERT_PG_BIN=""
ECERT_PG_PORT=""

# Run a command as the postgres system user when we are root (PostgreSQL refuses to run as
# root); as ourselves otherwise.  cd / so the postgres user never trips over an unreadable cwd.
_ecert_as_pg() {
    if [ "$(id -u)" -eq 0 ]; then
        (cd / && runuser -u postgres -- "$@")
    else
        (cd / && "$@")
    fi
}

_ecert_port_in_use() {
    (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null
}

# ecert_pg_start: initdb + start a throw-away server on 127.0.0.1 (trust auth), create role
# `ecert` (superuser) and export ECERT_TEST_PG_URL.  Pair with ecert_pg_stop (EXIT trap).
ecert_pg_start() {
    local port="${ECERT_TEST_PG_PORT:-55432}" tries=0
    ECERT_PG_BIN="$(find /usr/lib/postgresql -mindepth 2 -maxdepth 2 -type d -name bin 2>/dev/null | sort -V | tail -n1)"
    if [ -z "$ECERT_PG_BIN" ] || [ ! -x "$ECERT_PG_BIN/initdb" ]; then
        ecert_die "initdb not found under /usr/lib/postgresql/*/bin (is the postgresql package installed?)"
    fi
    if [ "$(id -u)" -eq 0 ]; then
        id postgres >/dev/null 2>&1 || ecert_die "system user 'postgres' missing (it comes with the postgresql package)"
    fi

    while _ecert_port_in_use "$port"; do
        tries=$((tries + 1))
        [ "$tries" -lt 100 ] || ecert_die "no free TCP port found from ${ECERT_TEST_PG_PORT:-55432}"
        port=$((port + 1))
    done
    ECERT_PG_PORT="$port"

    ECERT_PG_DIR="$(mktemp -d "${TMPDIR:-/tmp}/ecert-pg.XXXXXX")"
    if [ "$(id -u)" -eq 0 ]; then
        chown postgres:postgres "$ECERT_PG_DIR"
    fi
    chmod 700 "$ECERT_PG_DIR"

    ecert_log "postgres: initdb in $ECERT_PG_DIR ($ECERT_PG_BIN)"
    _ecert_as_pg "$ECERT_PG_BIN/initdb" -D "$ECERT_PG_DIR/data" -U postgres -E UTF8 --locale=C \
        --auth-local=trust --auth-host=trust --no-instructions >"$ECERT_PG_DIR/initdb.log" 2>&1 || {
        cat "$ECERT_PG_DIR/initdb.log" >&2
        ecert_die "initdb failed"
    }
    # Only the unix socket (in the private dir) and 127.0.0.1 are reachable; trust auth.
    _ecert_as_pg tee "$ECERT_PG_DIR/data/pg_hba.conf" >/dev/null <<'EOF'
# TYPE  DATABASE  USER  ADDRESS        METHOD
local   all       all                  trust
host    all       all   127.0.0.1/32   trust
EOF
    _ecert_as_pg tee -a "$ECERT_PG_DIR/data/postgresql.conf" >/dev/null <<EOF

# --- ecert test server ---
listen_addresses = '127.0.0.1'
port = $ECERT_PG_PORT
unix_socket_directories = '$ECERT_PG_DIR'
fsync = on
max_connections = 200
EOF
    ecert_log "postgres: starting on 127.0.0.1:$ECERT_PG_PORT"
    _ecert_as_pg "$ECERT_PG_BIN/pg_ctl" -D "$ECERT_PG_DIR/data" -l "$ECERT_PG_DIR/server.log" -w -t 60 start >/dev/null || {
        cat "$ECERT_PG_DIR/server.log" >&2 || true
        ecert_die "postgres failed to start"
    }
    tries=0
    until "$ECERT_PG_BIN/pg_isready" -q -h 127.0.0.1 -p "$ECERT_PG_PORT"; do
        tries=$((tries + 1))
        [ "$tries" -lt 60 ] || ecert_die "postgres not ready after 30s (log: $ECERT_PG_DIR/server.log)"
        sleep 0.5
    done
    _ecert_as_pg "$ECERT_PG_BIN/psql" -X -q -v ON_ERROR_STOP=1 -h "$ECERT_PG_DIR" -p "$ECERT_PG_PORT" \
        -U postgres -d postgres -c 'CREATE ROLE ecert LOGIN SUPERUSER' ||
        ecert_die "could not create role ecert"
    ECERT_TEST_PG_URL="postgres://ecert@127.0.0.1:$ECERT_PG_PORT/postgres"
    export ECERT_TEST_PG_URL
    ecert_log "postgres: ready, ECERT_TEST_PG_URL=$ECERT_TEST_PG_URL"
}

# ecert_pg_stop: stop the server started by ecert_pg_start and delete its directory. Idempotent.
ecert_pg_stop() {
    [ -n "$ECERT_PG_DIR" ] || return 0
    if [ -f "$ECERT_PG_DIR/data/postmaster.pid" ]; then
        ecert_log "postgres: stopping"
        if ! _ecert_as_pg "$ECERT_PG_BIN/pg_ctl" -D "$ECERT_PG_DIR/data" -m fast -w -t 30 stop >/dev/null 2>&1; then
            local pid
            pid="$(head -n1 "$ECERT_PG_DIR/data/postmaster.pid" 2>/dev/null || true)"
            if [ -n "$pid" ]; then
                kill -9 "$pid" 2>/dev/null || true
            fi
        fi
    fi
    rm -rf "$ECERT_PG_DIR"
    ECERT_PG_DIR=""
    unset ECERT_TEST_PG_URL
}
