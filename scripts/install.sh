#!/usr/bin/env bash
# Create .venv and install flowcollector with its test tools. Idempotent: does nothing when pyproject.toml has not
# changed since the last successful install. Debian packages the tests need are listed in scripts/apt-packages.txt.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
VENV=${VENV:-.venv}
stamp="$VENV/.installed"

# Debian packages (real services for integration tests); installed only when missing.
if [ -s scripts/apt-packages.txt ]; then
  mapfile -t pkgs < <(grep -vE '^\s*(#|$)' scripts/apt-packages.txt)
  missing=()
  for p in "${pkgs[@]}"; do
    # "install ok installed" only: a removed package keeps its config files and `dpkg -s` still succeeds for it.
    [ "$(dpkg-query -W -f='${Status}' "$p" 2>/dev/null)" = "install ok installed" ] || missing+=("$p")
  done
  if [ ${#missing[@]} -gt 0 ]; then
    echo "installing Debian packages: ${missing[*]}"
    SUDO=""; [ "$(id -u)" = 0 ] || SUDO="sudo"
    # tshark asks whether non-root users may capture: answer "no" up front so the install never prompts.
    echo 'wireshark-common wireshark-common/install-setuid boolean false' | $SUDO debconf-set-selections
    $SUDO apt-get update -qq
    $SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
  fi
fi

# Google's Pub/Sub emulator (gcp_pubsub tests) comes from Google's apt repository as google-cloud-cli-pubsub-emulator,
# which is not among Debian's packages, so it is not in apt-packages.txt: install it from
# https://cloud.google.com/sdk/docs/install#deb (or `gcloud components install pubsub-emulator`). Without it those
# tests skip loudly, and fail under CI=true.
if [ "$(dpkg-query -W -f='${Status}' google-cloud-cli-pubsub-emulator 2>/dev/null)" != "install ok installed" ]; then
  echo "WARNING: google-cloud-cli-pubsub-emulator is not installed: the gcp_pubsub tests will skip (fail with" \
    "CI=true). Install it from Google's apt repository (https://cloud.google.com/sdk/docs/install#deb)." >&2
fi

if [ -f "$stamp" ] && [ "$stamp" -nt pyproject.toml ] && [ -x "$VENV/bin/flowcollector" ]; then
  exit 0
fi
"$PYTHON" -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else "flowcollector needs Python >= 3.11")'
[ -x "$VENV/bin/python" ] || "$PYTHON" -m venv "$VENV"
"$VENV/bin/python" -m pip install -q --disable-pip-version-check --upgrade pip 2>&1 | grep -v '^WARNING: Location' || true
"$VENV/bin/python" -m pip install -q --disable-pip-version-check -e '.[test]' 2>&1 | grep -v '^WARNING: Location' || true
"$VENV/bin/flowcollector" --version >/dev/null
touch "$stamp"
