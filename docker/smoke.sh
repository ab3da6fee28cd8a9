#!/usr/bin/env bash
# make docker-smoke: build the images, `compose up`, real requests, a short load test.
#
#  1. installs docker, the compose tool and debootstrap from Debian's packages if missing
#  2. starts the docker daemon if none runs (no bridge, no iptables rules; stopped at the end)
#  3. makes a local base image: debootstrap'd Debian + python3 (no registry is reachable here)
#  4. downloads a wheelhouse for that image's Python on the host (containers here do not trust
#     this machine's TLS certificates, so the images are built offline from it)
#  5. builds the api and loadtest images through compose.yaml
#  6. `compose up -d` with docker/compose.host-network.yaml: every container on the host's
#     network, listening on 127.0.0.1, so all traffic stays on loopback; waits until healthy
#  7. one real request per task endpoint and attention kind, answers checked (loadtest.check)
#  8. a short headless locust run of every endpoint from the loadtest profile: zero failures
# Everything it started is torn down on exit (containers, volumes, network, the daemon); the
# base image, the built images and the wheelhouse stay as caches (a rebuild removes the images it
# replaced). Exit 0 only if all passed.
#
# Environment: EASERVE_SMOKE_PORT (default: a free port), EASERVE_SMOKE_RUN_TIME (10s),
# EASERVE_SMOKE_READY_TIMEOUT (300 s), EASERVE_SMOKE_USER_WEIGHTS (a folder of model folders
# to serve beside the bundled ones; default none), EASERVE_CACHE_DIR (~/.cache/easerve),
# DEBIAN_SUITE (bookworm), DEBIAN_MIRROR (http://deb.debian.org/debian), PYTHON (python3).
set -euo pipefail

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
CACHE="${EASERVE_CACHE_DIR:-$HOME/.cache/easerve}/docker"
SUITE="${DEBIAN_SUITE:-bookworm}"
MIRROR="${DEBIAN_MIRROR:-http://deb.debian.org/debian}"
PYTHON="${PYTHON:-python3}"
BASE_IMAGE="easerve-base:$SUITE"
PROJECT=easerve-smoke
RUN_TIME="${EASERVE_SMOKE_RUN_TIME:-10s}"
READY_TIMEOUT="${EASERVE_SMOKE_READY_TIMEOUT:-300}"
WHEELHOUSE_IN_CONTEXT=docker/wheelhouse/smoke
IMAGE_LABEL=org.opencontainers.image.title=easerve  # docker/Dockerfile's
WORK=""
DOCKERD_PID=""
COMPOSE=()
COMPOSE_FILE_RENDERED=""

log() { printf '[docker-smoke %4ds] %s\n' "$SECONDS" "$*" >&2; }

fail() {
    printf '\n*** docker-smoke: %s ***\n' "$*" >&2
    exit 1
}

apt_install() {
    [[ $(id -u) == 0 ]] || fail "need root to apt-get install $*"
    log "installing $* from Debian's packages"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq "$@" >/dev/null
}

install_tools() {
    local missing=()
    command -v dockerd >/dev/null || missing+=(docker.io)
    command -v docker >/dev/null || missing+=(docker.io)
    if ! docker compose version >/dev/null 2>&1 && ! command -v docker-compose >/dev/null; then
        missing+=(docker-compose)
    fi
    if ((${#missing[@]})); then
        apt_install $(printf '%s\n' "${missing[@]}" | sort -u)
    fi
    if docker compose version >/dev/null 2>&1; then
        COMPOSE=(docker compose)
    else
        COMPOSE=(docker-compose)
    fi
    log "compose tool: ${COMPOSE[*]} ($("${COMPOSE[@]}" version --short 2>/dev/null || echo '?'))"
}

start_daemon() {
    if docker info >/dev/null 2>&1; then
        log "docker daemon: already running (left running)"
        return
    fi
    local daemon_log="$CACHE/dockerd.log"
    log "starting dockerd (log: $daemon_log)"
    # No default bridge and no iptables rules: every container here uses the host's network.
    dockerd --bridge=none --iptables=false --ip-forward=false >"$daemon_log" 2>&1 &
    DOCKERD_PID=$!
    for _ in $(seq 60); do
        docker info >/dev/null 2>&1 && return
        kill -0 "$DOCKERD_PID" 2>/dev/null || break
        sleep 1
    done
    tail -n 30 "$daemon_log" >&2 || true
    DOCKERD_PID=""
    fail "the docker daemon could not start on this machine (log above: $daemon_log)"
}

make_base_image() {
    if docker image inspect "$BASE_IMAGE" >/dev/null 2>&1; then
        log "base image $BASE_IMAGE: cached"
        return
    fi
    local tarball="$CACHE/base-$SUITE.tar"
    if [[ ! -f $tarball ]]; then
        command -v debootstrap >/dev/null || apt_install debootstrap
        log "debootstrap $SUITE + python3 (a few minutes, once)"
        local rootfs="$WORK/rootfs"
        debootstrap --variant=minbase --include=python3,python3-venv "$SUITE" "$rootfs" "$MIRROR" \
            >"$WORK/debootstrap.log" 2>&1 || { tail -n 20 "$WORK/debootstrap.log" >&2; fail "debootstrap"; }
        rm -rf "$rootfs"/var/cache/apt/archives/*.deb "$rootfs"/var/lib/apt/lists/*
        tar -C "$rootfs" -cf "$tarball.partial" . && mv "$tarball.partial" "$tarball"
        rm -rf "$rootfs"
    fi
    log "importing $tarball as $BASE_IMAGE"
    docker import "$tarball" "$BASE_IMAGE" >/dev/null
}

# Fills the build context's wheelhouse for the base image's Python from a cached download,
# made once per (requirements, Python version, glibc version).
make_wheelhouse() {
    local python_version glibc_minor key wheels
    read -r python_version glibc_minor < <(docker run --rm --network none "$BASE_IMAGE" python3 -c \
        'import platform, sys; print("%d.%d" % sys.version_info[:2], platform.libc_ver()[1].split(".")[1])')
    "$PYTHON" docker/requirements.py pyproject.toml loadtest --build >"$WORK/requirements.txt"
    key=$(sha256sum <"$WORK/requirements.txt" | cut -c1-12)
    wheels="$CACHE/wheelhouse-py$python_version-glibc2.$glibc_minor-$key"
    if [[ -d $wheels ]]; then
        log "wheelhouse for Python $python_version: cached ($wheels)"
    else
        log "downloading the wheelhouse for Python $python_version, glibc 2.$glibc_minor"
        local platforms=() minor
        for minor in $(seq 17 "$glibc_minor"); do platforms+=(--platform "manylinux_2_${minor}_x86_64"); done
        rm -rf "$wheels.partial"
        "$PYTHON" -m pip download --dest "$wheels.partial" --only-binary=:all: \
            --python-version "$python_version" --implementation cp "${platforms[@]}" \
            --platform manylinux2014_x86_64 --platform any -r "$WORK/requirements.txt" \
            >"$WORK/pip-download.log" 2>&1 || { tail -n 20 "$WORK/pip-download.log" >&2; fail "wheelhouse download"; }
        mv "$wheels.partial" "$wheels"
    fi
    rm -rf "$WHEELHOUSE_IN_CONTEXT"
    mkdir -p "$(dirname "$WHEELHOUSE_IN_CONTEXT")"
    cp -al "$wheels" "$WHEELHOUSE_IN_CONTEXT" 2>/dev/null || cp -a "$wheels" "$WHEELHOUSE_IN_CONTEXT"
}

# compose v1 refuses published ports on the host network, and an override file cannot remove
# a list: render the merged configuration once and drop every service's `ports:`.
render_compose_file() {
    COMPOSE_FILE_RENDERED="$WORK/compose.yaml"
    "${COMPOSE[@]}" -f compose.yaml -f docker/compose.host-network.yaml config \
        | awk '/^    ports:/ { skip = 1; next }
               skip && /^(    -|      )/ { next }
               { skip = 0; print }' >"$COMPOSE_FILE_RENDERED"
}

compose() { "${COMPOSE[@]}" -p "$PROJECT" -f "$COMPOSE_FILE_RENDERED" "$@"; }

# The images of our Dockerfile (its stages carry this label) that have a name.
named_images() { docker images --quiet --no-trunc --filter "label=$IMAGE_LABEL" --filter dangling=false | sort; }

# Builds the images; a build that changed them leaves the previous ones and their stages
# unnamed: those made before it are removed, this build's stages stay as the next one's cache.
build_images() {
    local before started
    before=$(named_images)
    started=$(date +%s)
    compose --profile loadtest build api loadtest >"$WORK/build.log" 2>&1 \
        || { tail -n 40 "$WORK/build.log" >&2; fail "image build"; }
    if [[ $(named_images) != "$before" ]]; then
        docker image prune --force --filter "label=$IMAGE_LABEL" --filter "until=$started" >/dev/null
    fi
}

wait_until_healthy() {
    local container status
    container=$(compose ps -q api)
    for _ in $(seq "$READY_TIMEOUT"); do
        status=$(docker inspect --format '{{.State.Status}} {{.State.Health.Status}}' "$container")
        case $status in
            "running healthy") log "api is healthy (HEALTHCHECK on /readyz)"; return ;;
            "running starting") sleep 1 ;;
            *) fail "api container is '$status'" ;;
        esac
    done
    fail "api not healthy after ${READY_TIMEOUT}s"
}

has_models() { compgen -G "$1/*/manifest.json" >/dev/null; }

# Before anything slow: a service with no model never gets healthy.
require_models() {
    has_models weights || has_models "$EASERVE_USER_WEIGHTS" \
        || fail "no model to serve: weights/ holds no <model>/manifest.json (train and export first, see the README)"
}

free_port() {
    "$PYTHON" -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

teardown() {
    local status=$?
    set +e
    if [[ -n $COMPOSE_FILE_RENDERED && -f $COMPOSE_FILE_RENDERED ]]; then
        ((status == 0)) || compose logs --tail 40 api >&2
        log "compose down (project $PROJECT)"
        compose --profile loadtest down --volumes --remove-orphans >/dev/null 2>&1
    fi
    rm -rf "${REPO:?}/$WHEELHOUSE_IN_CONTEXT" "$WORK"
    rmdir "$REPO/$(dirname "$WHEELHOUSE_IN_CONTEXT")" 2>/dev/null
    if [[ -n $DOCKERD_PID ]]; then
        log "stopping the docker daemon this script started"
        kill "$DOCKERD_PID" && wait "$DOCKERD_PID"
    fi
    if ((status == 0)); then
        log "PASSED"
    else
        printf '\n*** docker-smoke FAILED (exit %d) ***\n\n' "$status" >&2
    fi
    exit "$status"
}

main() {
    cd "$REPO"
    mkdir -p "$CACHE"
    WORK=$(mktemp -d "${TMPDIR:-/tmp}/easerve-smoke.XXXXXX")
    trap teardown EXIT
    export EASERVE_USER_WEIGHTS="${EASERVE_SMOKE_USER_WEIGHTS:-$WORK/user-weights}"
    mkdir -p "$EASERVE_USER_WEIGHTS"
    require_models

    install_tools
    start_daemon
    make_base_image
    make_wheelhouse

    export EASERVE_BASE_IMAGE="$BASE_IMAGE" EASERVE_WHEELHOUSE="$WHEELHOUSE_IN_CONTEXT"
    export EASERVE_PORT="${EASERVE_SMOKE_PORT:-$(free_port)}"
    render_compose_file

    log "building the api and loadtest images"
    build_images

    log "compose up -d api (127.0.0.1:$EASERVE_PORT)"
    compose up -d api
    wait_until_healthy

    log "one request per endpoint and attention kind, answers checked"
    compose run --rm --no-deps --entrypoint python3 loadtest \
        -m easerve.loadtest.check --host "http://127.0.0.1:$EASERVE_PORT" \
        || fail "wrong answers from the service"

    log "headless locust run, every endpoint, $RUN_TIME"
    compose --profile loadtest run --rm --no-deps loadtest \
        --headless --users 6 --spawn-rate 6 --run-time "$RUN_TIME" --only-summary \
        || fail "the load test had failures"
}

# Sourcing the script (tests) defines its functions without running it.
if [[ ${BASH_SOURCE[0]} == "$0" ]]; then
    main "$@"
fi
