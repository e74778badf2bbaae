#!/bin/sh
# Stand-in for the thesis' YOLO script (the darknet weights are not available here): reports the
# image it was given.
echo "SCRIPT: analyzing file '$INPUT_FILE_PATH'"
echo "detected: $(basename "$INPUT_FILE_PATH")" > "$TMP_OUTPUT_DIR/$(basename "$INPUT_FILE_PATH").out"
