#!/bin/sh
# Stand-in for the object-detection step of the audio/video workflow (Fig. 2.2), written for
# Spillway: YOLOv3 over the whole video with darknet's detector demo, writing an annotated video
# of the same name, as the thesis does not print it.
OUTPUT_FILE="$TMP_OUTPUT_DIR/$(basename "$INPUT_FILE_PATH")"
echo "SCRIPT: Detecting objects in $INPUT_FILE_PATH into $OUTPUT_FILE"
cd /opt/darknet
./darknet detector demo cfg/coco.data cfg/yolov3.cfg yolov3.weights "$INPUT_FILE_PATH" \
  -out_filename "$OUTPUT_FILE" -dont_show
