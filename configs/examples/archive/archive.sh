#!/bin/sh
# archive: compress the input file and record its SHA-256, as a camera-frame archiver would.
# Uses only the OSCAR staging contract ($INPUT_FILE_PATH, $TMP_INPUT_DIR, $TMP_OUTPUT_DIR,
# $FILE_NAME), so the same script runs on OSCAR or on a Spillway agent.
set -eu
gzip -9 -c "$INPUT_FILE_PATH" > "$TMP_OUTPUT_DIR/$FILE_NAME.gz"
(cd "$TMP_INPUT_DIR" && sha256sum "$FILE_NAME") > "$TMP_OUTPUT_DIR/$FILE_NAME.sha256"
echo "archived $FILE_NAME: $(wc -c < "$INPUT_FILE_PATH") bytes -> $(wc -c < "$TMP_OUTPUT_DIR/$FILE_NAME.gz") bytes gzipped"
