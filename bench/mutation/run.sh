#!/bin/sh
# Mutation testing of notifd's rules with mutmut 3: the modules and tests are in
# pyproject.toml's [tool.mutmut]; the functions mutated are named here. About 10 minutes
# on 2 cores. Prints killed/total per module; the report is README.md beside this file.
set -eu
cd "$(dirname "$0")/../.."
PY=${PYTHON:-.venv/bin/python}
"$PY" -m pip install -q 'mutmut==3.8.1'
MUTMUT="$(dirname "$PY")/mutmut"
rm -rf mutants  # a fresh run: no results cached from other sources or tests

# Whole modules, and only the named rules of the larger ones (their other functions
# are tested by slower suites).
"$MUTMUT" run --max-children 2 \
    'notifd.protocol.*' 'notifd.recent.*' 'notifd.readmarks.*' \
    'notifd.items.xǁRetryǁ*' 'notifd.outbox.xǁOutboxǁ_finished__*' \
    'notifd.config.xǁConfigǁwindow__*' 'notifd.config.x_parse_duration__*' 'notifd.config.x__count__*' \
    'notifd.store.x__recent__*' 'notifd.store.x_next_unread__*' 'notifd.store.x_recent_after__*' \
    'notifd.store.x_count_unread__*' 'notifd.store.x_newest_items__*' 'notifd.store.x_items_after__*' \
    > "${TMPDIR:-/tmp}/notifd-mutmut.log" 2>&1 || { tail -c 2000 "${TMPDIR:-/tmp}/notifd-mutmut.log"; exit 1; }

# Killed (a test failed, or the mutant hung: a timeout) over every mutant run.
"$MUTMUT" results --all true | awk -F': ' '
    $2 == "not checked" { next }
    { split($1, name, "."); module = name[2]; total[module]++ }
    $2 == "killed" || $2 == "timeout" { killed[module]++ }
    $2 != "killed" && $2 != "timeout" { print "  " $1 ": " $2 }
    END { for (m in total) printf "%-10s %4d/%-4d %5.1f%%\n", m, killed[m], total[m], 100 * killed[m] / total[m] }'
