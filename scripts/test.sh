#!/usr/bin/env bash
# Installs what the tests need on a fresh Debian machine (DICOM tools, Tesseract, a virtualenv with the
# project and its test extras), then runs ruff and the whole test suite on all cores.
set -euo pipefail
cd "$(dirname "$0")/.."
need_apt=0
for tool in storescu storescp dciodvfy Orthanc openssl tesseract chromium; do
  command -v "$tool" >/dev/null 2>&1 || need_apt=1
done
if [ "$need_apt" = 1 ]; then
  SUDO=""; [ "$(id -u)" = 0 ] || SUDO="sudo"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq dcmtk dicom3tools orthanc openssl \
    tesseract-ocr tesseract-ocr-eng libtesseract-dev libleptonica-dev pkg-config \
    fonts-dejavu-core chromium >/dev/null
fi
python3 -m venv .venv
.venv/bin/pip install -q --upgrade pip >/dev/null
.venv/bin/pip install -q -e '.[test]'
.venv/bin/ruff check gateway scripts tests
.venv/bin/pytest -n 2 -q "$@"
