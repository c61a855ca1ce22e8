#!/bin/sh
# Copies every .pex file of the repository into the corpus of the `check` target.
set -eu
cd "$(dirname "$0")"
mkdir -p corpus/check
find .. -name '*.pex' -not -path '../target/*' -not -path '../fuzz/*' -exec cp {} corpus/check/ \;
echo "$(ls corpus/check | wc -l) seed files in fuzz/corpus/check"
