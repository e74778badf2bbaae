#!/bin/sh
# Stand-in for the fire-detection service's script (Fig. 5.4; OSCAR's examples/fire-detection),
# written for Spillway's tests: the same steps around the same model call, without the parts
# that need the real image. It keeps a copy of the input, runs the ShuffleNet fire classifier
# (`inference_ff_oscar.py`, which writes `output-FILE`, the superpixel prediction, and
# `output-STEM.txt`, FIRE or NO_FIRE), and with SEND_SNS=true publishes an alert when it sees
# fire. The real script then zips the three files; the stand-in image has no zip, so they stay
# as they are.
FILE=$(basename "$INPUT_FILE_PATH")
STEM=${FILE%.*}
echo "SCRIPT: Invoked fire detection on $FILE"
cp "$INPUT_FILE_PATH" "$TMP_OUTPUT_DIR/input-$FILE"
cd /
python3 efficient-compact-fire-detection-cnn/inference_ff_oscar.py --image "$INPUT_FILE_PATH" \
  --output "$TMP_OUTPUT_DIR" --model shufflenetonfire \
  --weight efficient-compact-fire-detection-cnn/weights/shufflenet_ff.pt
if [ "$SEND_SNS" = true ] && [ "$(cat "$TMP_OUTPUT_DIR/output-$STEM.txt")" = FIRE ]; then
  aws sns publish --topic-arn "$TOPIC_ARN" --subject "Fire detection service" \
    --message "Fire detected on image $FILE"
fi
