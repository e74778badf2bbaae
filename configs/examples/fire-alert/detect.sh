#!/bin/sh
# Stand-in for the fire detector of the OSCAR thesis (chapter 5): a reading over 60 is a fire.
# The payload of the MQTT message is the input file; the topic is in $EVENT.
set -eu
reading=$(cat "$INPUT_FILE_PATH")
camera=$(printf '%s' "$EVENT" | sed -n 's/.*"topic":"cameras\/\([^/"]*\)\/frames".*/\1/p')
if [ "${reading%%.*}" -gt 60 ] 2>/dev/null; then verdict="FIRE"; else verdict="NOT FIRE"; fi
printf '%s %s %s\n' "${camera:-unknown}" "$verdict" "$reading" > "$TMP_OUTPUT_DIR/verdict-$JOB_ID.txt"
