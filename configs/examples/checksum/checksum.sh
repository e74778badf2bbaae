#!/bin/sh
# Runs inside localhost/checksum:1 (busybox), exactly as OSCAR runs a service script: the input
# is $INPUT_FILE_PATH, whatever lands in $TMP_OUTPUT_DIR is delivered.
set -eu
sha256sum "$INPUT_FILE_PATH" > "$TMP_OUTPUT_DIR/$FILE_NAME.sha256"
gzip -c "$INPUT_FILE_PATH" > "$TMP_OUTPUT_DIR/$FILE_NAME.gz"
echo "$FILE_NAME: $(wc -c < "$INPUT_FILE_PATH") bytes checksummed and compressed"
