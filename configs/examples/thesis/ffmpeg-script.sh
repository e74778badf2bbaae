#!/bin/sh
# Stand-in for the first step of the audio/video workflow (Fig. 2.2; SCAR's examples/av-workflow),
# written for Spillway: the same steps with the same tool, as the thesis does not print it. The
# audio track becomes a 16 kHz mono WAV; the video becomes an AVI (copied when it is one).
FILE_NAME=$(basename "$INPUT_FILE_PATH")
OUT="$TMP_OUTPUT_DIR/${FILE_NAME%.*}"
echo "SCRIPT: Extracting the audio and the video of $INPUT_FILE_PATH"
ffmpeg -i "$INPUT_FILE_PATH" -vn -ar 16000 -ac 1 -acodec pcm_s16le "$OUT.wav"
case "$FILE_NAME" in
  *.avi) cp "$INPUT_FILE_PATH" "$OUT.avi" ;;
  *) ffmpeg -i "$INPUT_FILE_PATH" -f avi -c:v mpeg4 -b:v 4000k -c:a libmp3lame -b:a 320k "$OUT.avi" ;;
esac
