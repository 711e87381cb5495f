#!/usr/bin/env bash
# `helm template` with the real Helm (3.10.1, installed by scripts/install-helm.sh into the
# cache outside the checkout). Takes the release name as --release NAME (or first positional
# argument) and passes everything else to Helm:
#   scripts/helm-template.sh [--release NAME] CHART_DIR [--values F]... [--set k=v]... \
#     [--namespace NS] [--include-crds] [--show-only TEMPLATE]...
set -Eeuo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
HELM=$(bash "$ROOT/scripts/install-helm.sh" 2>/dev/null)
release=release-name
args=()
while (($#)); do
  case $1 in
    --release) release=$2; shift 2 ;;
    --release=*) release=${1#--release=}; shift ;;
    *) args+=("$1"); shift ;;
  esac
done
exec "$HELM" template "$release" "${args[@]}"
