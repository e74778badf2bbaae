#!/bin/sh
# Stand-in for the anonymisation service's script (Fig. 3.2; SCAR's
# examples/mask-detector-workflow), written for Spillway's tests: the same steps with the same
# tools. It samples one frame every five seconds of the video into a folder named after it
# (ffmpeg, fps=12/60), then blurs the faces of each frame in place (`auto_blur_image.py` from
# the image's working folder, /opt/blurry-faces/src).
NAME=$(basename "$INPUT_FILE_PATH" | cut -f1 -d.)
echo "SCRIPT: Sampling and anonymising $INPUT_FILE_PATH into $TMP_OUTPUT_DIR/$NAME"
mkdir "$TMP_OUTPUT_DIR/$NAME"
ffmpeg -i "$INPUT_FILE_PATH" -vf fps=12/60 "$TMP_OUTPUT_DIR/$NAME/img%d.jpg"
for IMAGE in "$TMP_OUTPUT_DIR/$NAME"/*; do
  python auto_blur_image.py -i "$IMAGE" -o "$IMAGE"
done
