#!/usr/bin/env bash
# Static checks on the project's own code: clang-format (the repo's .clang-format) and cppcheck.
# Exits non-zero on any finding. (clang-tidy 14 cannot parse Boost 1.74's coroutine headers, so
# it is not run here; see docs/operations.md.)
set -euo pipefail
cd "$(dirname "$0")/.."
files=$(git ls-files 'src/*.cc' 'src/*.h' 'tests/*.cc' 'tests/*.h' 'testkit/*' 'tools/*.cc' 'bench/*.cc' 'bench/*.h' 'fuzz/*.cc' 'fuzz/*.h')
status=0
if ! clang-format --dry-run --Werror $files; then
  echo "lint: clang-format differences above (run clang-format -i on those files)" >&2
  status=1
fi
if ! cppcheck --quiet --error-exitcode=1 --enable=warning,performance,portability --std=c++20 \
  --inline-suppr --suppressions-list=scripts/cppcheck-suppressions.txt -I src src; then
  echo "lint: cppcheck findings above" >&2
  status=1
fi
exit $status
