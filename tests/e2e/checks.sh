# shellcheck shell=bash
# Counted checks for the e2e scripts (sourced): `check NAME COMMAND...` runs a command and
# counts it passed or failed, showing a failure's output; `finish` prints the closing
# `e2e: N passed, M failed` line and fails when any check did.

passed=0
failed=0

check() { # check NAME COMMAND...
  local name=$1 out
  shift
  if out=$("$@" 2>&1); then
    passed=$((passed + 1))
    printf 'ok   %s\n' "$name"
  else
    failed=$((failed + 1))
    printf 'FAIL %s\n%s\n' "$name" "$out"
  fi
}

contains() { # contains NEEDLE COMMAND...: the command succeeds and its output holds NEEDLE
  local needle=$1 out
  shift
  out=$("$@" 2>&1) || { echo "$out"; return 1; }
  grep -qF -- "$needle" <<<"$out" || { printf 'expected %q in:\n%s\n' "$needle" "$out"; return 1; }
}

refused() { # refused NEEDLE COMMAND...: the command fails and says NEEDLE
  local needle=$1 out
  shift
  if out=$("$@" 2>&1); then
    printf 'expected a refusal, got:\n%s\n' "$out"
    return 1
  fi
  grep -qF -- "$needle" <<<"$out" || { printf 'expected %q in:\n%s\n' "$needle" "$out"; return 1; }
}

finish() {
  echo "e2e: $passed passed, $failed failed"
  [[ $failed -eq 0 ]]
}
