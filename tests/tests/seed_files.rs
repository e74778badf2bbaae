//! The seeds' own files, brought as their users would bring them: the SCAR thesis' YAML
//! listings (3.1, 6.6 with 6.8, 6.10–6.13) and the fire-detection FDL of the OSCAR thesis
//! (Fig. 5.4), applied unchanged through a real coordinator to a real agent that runs them in
//! containers. The images are stand-ins under the images' own names (busybox with stand-ins for
//! fortune and cowsay, darknet, ffmpeg and the fire classifier, loaded offline), because the real
//! images, models and weights cannot be had here; the scripts are the thesis' listings as
//! printed, or stand-ins next to the FDL where the thesis does not print them.

mod support;

use std::path::Path;
use std::time::Duration;

use support::oci::{ImageSpec, busybox_layer, gzip, host_arch, image_archive, layer};
use support::{Coordinator, Node, repo, wait_until};

/// An executable shell script in an image.
fn tool(path: &'static str, body: &str) -> (&'static str, u32, Vec<u8>) {
    (path, 0o755, format!("#!/bin/sh\n{body}").into_bytes())
}

/// Loads into `node`'s image store a busybox image named `name` with `files` added on top.
fn load_stand_in(
    node: &Node,
    name: &str,
    files: &[(&str, u32, Vec<u8>)],
    cmd: &[&str],
    working_dir: &str,
) {
    let tmp = tempfile::tempdir().expect("tmp");
    let mut image = ImageSpec::busybox("linux", host_arch(), None);
    image.layers = vec![
        gzip(&busybox_layer(&format!("linux/{}", host_arch()))),
        gzip(&layer(files, &[])),
    ];
    image.env = vec!["PATH=/usr/local/bin:/usr/bin:/bin".into()];
    image.cmd = cmd.iter().map(|s| s.to_string()).collect();
    image.working_dir = working_dir.into();
    let archive = image_archive(tmp.path(), name, image);
    let (ok, out, err) = node.agent_cli(&["load", &archive.display().to_string()]);
    assert!(ok && out.contains(name), "load {name}: {out}{err}");
}

/// Stand-in for ffmpeg (no codecs here): a "video" is a text file with one line per second of
/// footage. `-vf fps=N[/D]` with an output pattern such as `out%03d.jpg` writes one keyframe per
/// D/N seconds, each the line of its second.
const FFMPEG: &str = r#"input= out= step=1
while [ $# -gt 0 ]; do
  case "$1" in
    -i) input=$2; shift 2 ;;
    -vf) rate=${2#fps=}; step=$(( ${rate#*/} / ${rate%/*} )); [ "$rate" = "${rate#*/}" ] && step=1; shift 2 ;;
    -loglevel|-q:v|-c:v|-b:v|-c:a|-b:a|-ar|-ac|-acodec|-f) shift 2 ;;
    -*) shift ;;
    *) out=$1; shift ;;
  esac
done
[ -r "$input" ] || { echo "$input: No such file or directory" >&2; exit 1; }
n=0 second=0
while IFS= read -r line; do
  if [ $((second % step)) -eq 0 ]; then
    n=$((n + 1))
    echo "$line" > "$(printf "$out" "$n")"
  fi
  second=$((second + 1))
done < "$input"
echo "frame=$n" >&2
"#;

/// Stand-in for darknet (no network or weights here): `darknet detect CFG WEIGHTS IMAGE [-out
/// NAME]` checks its files as darknet does, draws on a copy of the image (`NAME.png`) and prints
/// its predictions: each word of the image is an object seen.
const DARKNET: &str = r#"[ "$1" = detect ] || { echo "usage: darknet detect CFG WEIGHTS IMAGE [-out NAME]" >&2; exit 1; }
cfg=$2 weights=$3 image=$4 out=predictions
[ "$5" = -out ] && out=$6
for f in "$cfg" "$weights"; do [ -r "$f" ] || { echo "Couldn't open file: $f" >&2; exit 1; }; done
[ -r "$image" ] || { echo "Cannot load image \"$image\"" >&2; exit 1; }
cp "$image" "$out.png"
echo "$image: Predicted in 0.000042 seconds."
for word in $(cat "$image"); do echo "$word: 90%"; done
"#;

fn mesh() -> (Coordinator, Node) {
    let c = Coordinator::new();
    let node = Node::new("node_name = \"edge-1\"\n");
    c.join(&node);
    (c, node)
}

fn apply(c: &Coordinator, file: &Path) {
    let (ok, out, err) = c.cli(&["apply", "-f", file.to_str().expect("utf-8")]);
    assert!(ok, "apply {}: {out}{err}", file.display());
}

fn wait_file(node: &Node, rel: &str, within: Duration) -> String {
    let path = node.path(&format!("data/{rel}"));
    assert!(
        wait_until(within, || path.exists()),
        "{rel} never appeared; jobs:\n{}\nagent log:\n{}",
        node.jobs().join("\n"),
        node.log()
    );
    // Delivered whole (written aside and renamed), so what exists is complete.
    std::fs::read_to_string(&path).expect("output")
}

#[test]
fn the_scar_thesis_listings_run_unchanged_with_stand_in_images() {
    let (c, mut node) = mesh();
    load_stand_in(
        &node,
        "docker.io/grycap/cowsay:latest",
        &[
            tool(
                "usr/games/fortune",
                "echo 'The best way to predict the future is to invent it.'\n",
            ),
            tool(
                "usr/games/cowsay",
                "text=$(cat)\necho \" _$(echo \"$text\" | sed 's/./_/g')_\"\necho \"< $text >\"\necho \" -$(echo \"$text\" | sed 's/./-/g')-\"\necho '        \\   ^__^'\necho '         \\  (oo)\\_______'\necho '            (__)\\       )\\/\\'\n",
            ),
        ],
        &["/bin/sh", "-c", "/usr/games/fortune -a | /usr/games/cowsay"],
        "/",
    );
    let darknet = [
        tool("opt/darknet/darknet", DARKNET),
        ("opt/darknet/cfg/yolo.cfg", 0o644, b"[net]\n".to_vec()),
        ("opt/darknet/yolo.weights", 0o644, vec![0; 64]),
    ];
    load_stand_in(
        &node,
        "docker.io/grycap/darknet:latest",
        &darknet,
        &["/bin/sh"],
        "/",
    );
    load_stand_in(
        &node,
        "docker.io/grycap/ffmpeg:latest",
        &[tool("usr/bin/ffmpeg", FFMPEG)],
        &["/bin/sh"],
        "/",
    );
    node.start();
    let scar = repo("configs/examples/scar");
    // Listing 6.2 deploys too; it is run with `scar run -s SCRIPT` (listing 6.4), a script sent
    // with the call, which Spillway does not serve (a caller's code in the function's image).
    for listing in [
        "cowsay.yaml",
        "scar-elixir.yaml",
        "scar-darknet-s3.yaml",
        "video-workflow.yaml",
    ] {
        apply(&c, &scar.join(listing));
    }
    for f in [
        "scar-cowsay",
        "scar-elixir",
        "scar-darknet-s3",
        "scar-batch-ffmpeg-split",
        "scar-lambda-darknet",
    ] {
        assert!(
            wait_until(Duration::from_secs(30), || c.runs("edge-1", f)),
            "{f} never deployed:\n{}",
            node.log()
        );
    }

    // Listing 3.1: `scar run` printed the cow; OSCAR's /run answers with what it printed.
    let (status, _, said) = c.post(&c.api_token(), "/run/scar-cowsay", "");
    assert_eq!(status, 200, "{said}\n{}", node.log());
    assert!(
        said.contains("< The best way to predict the future is to invent it. >")
            && said.contains("(oo)"),
        "{said}"
    );

    // Listings 6.6 and 6.8: an image in the bucket's input folder, YOLO's results in its output.
    node.write(
        "data/scar-darknet/scar-darknet-s3/input/zoo.jpg",
        "giraffe zebra",
    );
    let result = wait_file(
        &node,
        "scar-darknet/scar-darknet-s3/output/result.out",
        Duration::from_secs(60),
    );
    assert!(
        result.contains("giraffe: 90%") && result.contains("zebra: 90%"),
        "{result}"
    );
    assert!(
        node.path("data/scar-darknet/scar-darknet-s3/output/image-result.png")
            .exists()
    );

    // Listings 6.10 to 6.13: a three-second video split into keyframes, each keyframe analysed
    // by the next function of the workflow, linked by the bucket folder between them.
    node.write(
        "data/scar-ffmpeg/scar-batch-ffmpeg-split/input/street.mp4",
        "car\nperson bicycle\ndog\n",
    );
    let mut seen = Vec::new();
    for (frame, objects) in [(1, "car"), (2, "person bicycle"), (3, "dog")] {
        let out = wait_file(
            &node,
            &format!("scar-ffmpeg/scar-batch-ffmpeg-split/image-output/out{frame:03}.jpg.out"),
            Duration::from_secs(90),
        );
        for object in objects.split(' ') {
            assert!(out.contains(&format!("{object}: 90%")), "{out}");
        }
        // A job's outputs are delivered one by one: the picture may land just after the text.
        let picture = node.path(&format!(
            "data/scar-ffmpeg/scar-batch-ffmpeg-split/image-output/out{frame:03}.png"
        ));
        assert!(
            wait_until(Duration::from_secs(10), || picture.exists()),
            "{} never appeared",
            picture.display()
        );
        seen.push(frame);
    }
    assert_eq!(seen, [1, 2, 3]);
    node.stop();
}

/// Stand-in for the ShuffleNet fire classifier's entry point, run by the image's `python3`:
/// `inference_ff_oscar.py --image IMAGE --output DIR --model M --weight W` writes the prediction
/// image `DIR/output-FILE` and `DIR/output-STEM.txt`, FIRE or NO_FIRE (FIRE when the "image"
/// mentions fire or flames).
const PYTHON3: &str = r#"script=$1; shift
[ -r "$script" ] || { echo "python3: can't open file '$script'" >&2; exit 2; }
while [ $# -gt 0 ]; do
  case "$1" in
    --image) image=$2 ;; --output) out=$2 ;; --weight) weight=$2 ;;
  esac
  shift 2
done
[ -r "$weight" ] || { echo "FileNotFoundError: $weight" >&2; exit 1; }
file=$(basename "$image"); stem=${file%.*}
cp "$image" "$out/output-$file"
if grep -qiE 'fire|flame' "$image"; then printf FIRE; else printf NO_FIRE; fi > "$out/output-$stem.txt"
"#;

#[test]
fn the_fire_detection_figure_runs_unchanged_with_a_stand_in_classifier() {
    let (c, mut node) = mesh();
    load_stand_in(
        &node,
        "ghcr.io/grycap/fire-detection:latest",
        &[
            tool("usr/bin/python3", PYTHON3),
            (
                "efficient-compact-fire-detection-cnn/inference_ff_oscar.py",
                0o644,
                b"# stand-in: see /usr/bin/python3\n".to_vec(),
            ),
            (
                "efficient-compact-fire-detection-cnn/weights/shufflenet_ff.pt",
                0o644,
                vec![0; 64],
            ),
        ],
        &["/bin/sh"],
        "/",
    );
    node.start();
    apply(
        &c,
        &repo("configs/examples/thesis/fig5.4-fire-detection.yaml"),
    );
    assert!(
        wait_until(Duration::from_secs(30), || c
            .runs("edge-1", "fire-detection")),
        "fire-detection never deployed:\n{}",
        node.log()
    );
    for (photo, content, verdict) in [
        ("forest.jpg", "smoke and flames over the ridge", "FIRE"),
        ("meadow.jpg", "cows in the grass", "NO_FIRE"),
    ] {
        node.write(&format!("data/fire-detect/input/{photo}"), content);
        let stem = photo.trim_end_matches(".jpg");
        let said = wait_file(
            &node,
            &format!("fire-detect/output/output-{stem}.txt"),
            Duration::from_secs(60),
        );
        assert_eq!(said, verdict, "{photo}");
        assert_eq!(
            std::fs::read_to_string(node.path(&format!("data/fire-detect/output/input-{photo}")))
                .expect("the input's copy"),
            content
        );
    }
    // The other two figures are mostly SCAR Lambda functions, meant for AWS Lambda and never run
    // by an agent: they deploy as they are (Fig. 3.2's OSCAR service reaches the node too).
    for figure in ["fig2.2-av-workflow.yaml", "fig3.2-mask-detector.yaml"] {
        apply(&c, &repo("configs/examples/thesis").join(figure));
    }
    assert!(
        wait_until(Duration::from_secs(30), || c
            .runs("edge-1", "oscar-anon-and-split")),
        "{}",
        node.log()
    );
    node.stop();
}
