#!/bin/sh
# Install Debian's chromium and chromium-driver for the dashboard's browser tests (tests/test_dashboard_browser.py),
# only when they are missing and only when we can (root, or sudo without a password). Never fails the build: where
# no browser can be installed the browser tests skip and say why. Idempotent: with both present it does nothing.
set -u
missing=""
[ -x /usr/bin/chromium ] || command -v chromium >/dev/null 2>&1 || missing="$missing chromium"
[ -x /usr/bin/chromedriver ] || command -v chromedriver >/dev/null 2>&1 || missing="$missing chromium-driver"
[ -z "$missing" ] && exit 0
if ! command -v apt-get >/dev/null 2>&1; then
    echo "browser_setup: no apt-get here; install$missing yourself or the browser tests skip"
    exit 0
fi
if [ "$(id -u)" = 0 ]; then
    sudo=""
elif command -v sudo >/dev/null 2>&1 && sudo -n true 2>/dev/null; then
    sudo="sudo -n"
else
    echo "browser_setup: not root and no passwordless sudo; install$missing yourself or the browser tests skip"
    exit 0
fi
echo "browser_setup: installing$missing (Debian packages, for the dashboard's browser tests)"
export DEBIAN_FRONTEND=noninteractive
# shellcheck disable=SC2086  # $missing is a list of package names
$sudo apt-get install -y -q --no-install-recommends $missing >/dev/null 2>&1 \
    || { $sudo apt-get update -q >/dev/null 2>&1 && $sudo apt-get install -y -q --no-install-recommends $missing; } \
    || echo "browser_setup: could not install$missing; the browser tests skip"
exit 0
