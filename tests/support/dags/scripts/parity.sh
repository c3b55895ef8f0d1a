#!/usr/bin/env bash
# A templated script file: Jinja renders it before it runs ({{ ds }}).
set -e
for i in $(seq {{ params.n }}); do
  echo "line $i"
done
echo "done {{ ds }} {{ params.n }}"
