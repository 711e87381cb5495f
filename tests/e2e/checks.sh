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

lacks() { # lacks NEEDLE COMMAND...: the command succeeds and its output does not hold NEEDLE
  local needle=$1 out
  shift
  out=$("$@" 2>&1) || { echo "$out"; return 1; }
  if grep -qF -- "$needle" <<<"$out"; then printf 'unexpected %q in:\n%s\n' "$needle" "$out"; return 1; fi
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

tarpit() { # tarpit HOST PORT: in the background, a "server" that accepts connections and never
  # answers or closes them (a channel a solve waits on); $! is its pid
  python3 - "$1" "$2" >/dev/null 2>&1 <<'PY' &
import socket, sys
s = socket.socket()
s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind((sys.argv[1], int(sys.argv[2])))
s.listen(64)
held = []
while True:
    c, _ = s.accept()
    held.append(c)  # never answered, never closed
PY
}
