#!/bin/bash
# Reformat every C source of the project in place with the repository's .clang-format.
cd "$(dirname "$0")/.." && find src include tests bench fuzz -name '*.[ch]' -print0 | xargs -0 clang-format -i
