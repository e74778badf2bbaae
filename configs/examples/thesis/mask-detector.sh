#!/bin/sh
# Stand-in for the mask-detection step (Fig. 3.2; SCAR's examples/mask-detector-workflow),
# written for Spillway, as the thesis does not print it: the YOLO mask detector over one
# anonymised frame, the result kept in a folder named after the frame's video.
VIDEO=$(basename "$(dirname "$STORAGE_OBJECT_KEY")")
mkdir -p "$TMP_OUTPUT_DIR/$VIDEO"
OUTPUT_IMAGE="$TMP_OUTPUT_DIR/$VIDEO/$(basename "$INPUT_FILE_PATH")"
echo "SCRIPT: Detecting masks in $INPUT_FILE_PATH into $OUTPUT_IMAGE"
python mask-detector-image.py --image "$INPUT_FILE_PATH" --output "$OUTPUT_IMAGE"
