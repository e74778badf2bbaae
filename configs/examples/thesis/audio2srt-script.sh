#!/bin/sh
# Stand-in for the subtitling step of the audio/video workflow (Fig. 2.2), written for Spillway:
# speech to SubRip subtitles with pocketsphinx's US English models, from the image's working
# folder, as the thesis does not print it.
FILE_NAME=$(basename "$INPUT_FILE_PATH")
OUT="$TMP_OUTPUT_DIR/${FILE_NAME%.*}"
echo "SCRIPT: Transcribing $INPUT_FILE_PATH into $OUT.srt"
./audio2srt.py -i "$INPUT_FILE_PATH" -o "$OUT.srt" -- -lm en-us.lm.bin -hmm en-us
