# Helpers for the command-line tests (sourced). Each test sets fail=0 first and exits with $fail.
check() {  # check NAME EXPECTED_RC CMD... ; captures stdout+stderr in $out
  local name=$1 want=$2; shift 2
  out=$("$@" 2>&1); local rc=$?
  if [ "$rc" -ne "$want" ]; then echo "FAIL $name: exit $rc, want $want: $out"; fail=1; fi
}
expect() {  # expect NAME PATTERN
  if ! grep -qE -- "$2" <<<"$out"; then echo "FAIL $1: no /$2/ in: $out"; fail=1; fi
}
one_line() {  # one_line NAME: $out is exactly one line (an error message)
  [ "$(printf '%s\n' "$out" | grep -c .)" -eq 1 ] || { echo "FAIL $1: want one error line, got: $out"; fail=1; }
}
