//! A node whose disk fills up: it takes no new inputs, keeps its journal whole, and carries on
//! by itself when there is room again. The disk is a small ext4 the test makes and
//! loop-mounts (as root), holding the agent's state and data as a Pi's SD card would.

// Test helpers may unwrap: a panic is the failure report.
#![allow(clippy::unwrap_used)]

mod support;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use support::{Coordinator, Node, wait_until};

/// An ext4 of `mib` MiB made in a file and mounted at `at`; unmounted when dropped.
struct LoopDisk {
    at: PathBuf,
    _image: tempfile::TempDir,
}

impl LoopDisk {
    fn mount(at: &Path, mib: u64) -> Self {
        let image = tempfile::tempdir().unwrap();
        let file = image.path().join("disk.img");
        std::fs::File::create(&file)
            .unwrap()
            .set_len(mib << 20)
            .unwrap();
        run("mkfs.ext4", &["-q", "-F", file.to_str().unwrap()]);
        std::fs::create_dir_all(at).unwrap();
        run(
            "mount",
            &["-o", "loop", file.to_str().unwrap(), at.to_str().unwrap()],
        );
        Self {
            at: at.to_owned(),
            _image: image,
        }
    }

    /// Bytes a writer may still use there.
    fn free(&self) -> u64 {
        let out = Command::new("df")
            .args(["--output=avail", "-B1"])
            .arg(&self.at)
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .nth(1)
            .unwrap()
            .trim()
            .parse()
            .unwrap()
    }

    /// Takes all but `leave` bytes of the free space with one file.
    fn fill(&self, leave: u64) -> PathBuf {
        let filler = self.at.join("filler");
        let take = self.free().saturating_sub(leave);
        run(
            "fallocate",
            &["-l", &take.to_string(), filler.to_str().unwrap()],
        );
        filler
    }
}

impl Drop for LoopDisk {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.at).status();
    }
}

fn run(program: &str, args: &[&str]) {
    let status = Command::new(program).args(args).status().unwrap();
    assert!(status.success(), "{program} {args:?} failed");
}

fn outputs(node: &Node) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(node.path("vol/data/files/out"))
        .map(|d| {
            d.flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default();
    names.sort();
    names
}

#[test]
fn a_full_disk_stops_new_inputs_and_they_run_once_there_is_room_again() {
    let mut node = Node::bare(
        "spillway-disk",
        "node_name = \"pi-disk\"\ndata_root = \"vol/data\"\nstate_dir = \"vol/state\"\nfunctions = [\"copy.yaml\"]\n[disk]\nmin_free = \"16Mi\"\n",
    );
    node.write(
        "copy.yaml",
        "functions:\n  oscar:\n  - edge:\n      name: copy\n      runtime: process\n      script: copy.sh\n      cpu: '0.1'\n      memory: 16Mi\n      input:\n      - storage_provider: minio.default\n        path: files/in\n      output:\n      - storage_provider: minio.default\n        path: files/out\n",
    );
    node.write("copy.sh", "cp \"$INPUT_FILE_PATH\" \"$TMP_OUTPUT_DIR/\"\n");
    let disk = LoopDisk::mount(&node.path("vol"), 96);
    // A member, so the coordinator shows what the node says.
    let c = Coordinator::new();
    c.join(&node);
    node.start();
    let input = node.path("vol/data/files/in");
    std::fs::write(input.join("a.txt"), "a").unwrap();
    assert!(
        wait_until(Duration::from_secs(20), || outputs(&node) == ["a.txt"]),
        "{}",
        node.log()
    );

    // Nearly full: under the line, over nothing.
    let filler = disk.fill(8 << 20);
    assert!(
        wait_until(Duration::from_secs(10), || node
            .log()
            .contains("disk nearly full")),
        "{}",
        node.log()
    );
    assert!(node.log().contains("[disk] min_free"), "{}", node.log());
    // The operator sees it: `get nodes`, and a gauge to alert on.
    let disk_full = |c: &Coordinator| {
        c.json(&["get", "nodes"])[0]["disk_full"].as_bool() == Some(true)
            && c.metrics()
                .contains("spillway_node_disk_full{node=\"pi-disk\"} 1")
    };
    assert!(
        wait_until(Duration::from_secs(10), || disk_full(&c)),
        "{}",
        c.log()
    );
    let (_, table, _) = c.cli(&["get", "nodes"]);
    assert!(table.contains("Ready,DiskFull"), "{table}");
    std::fs::write(input.join("b.txt"), "b").unwrap();
    std::fs::write(input.join("c.txt"), "c").unwrap();
    std::thread::sleep(Duration::from_secs(3));
    assert_eq!(outputs(&node), ["a.txt"], "no new input taken");

    // Room again: what arrived meanwhile runs, without a restart.
    std::fs::remove_file(&filler).unwrap();
    assert!(
        wait_until(Duration::from_secs(20), || outputs(&node)
            == ["a.txt", "b.txt", "c.txt"]),
        "{}",
        node.log()
    );
    assert!(node.log().contains("room on disk again"), "{}", node.log());
    assert!(
        wait_until(Duration::from_secs(10), || !disk_full(&c)),
        "{}",
        c.log()
    );

    // Full to the last byte: the agent keeps running and writes nothing.
    let filler = disk.fill(0);
    assert!(
        wait_until(Duration::from_secs(10), || node
            .log()
            .matches("disk nearly full")
            .count()
            == 2),
        "{}",
        node.log()
    );
    std::fs::write(input.join("d.txt"), "d").ok();
    std::thread::sleep(Duration::from_secs(2));
    assert!(
        node.child.as_mut().unwrap().try_wait().unwrap().is_none(),
        "the agent is still running: {}",
        node.log()
    );
    std::fs::remove_file(&filler).unwrap();
    if !input.join("d.txt").exists() {
        // The disk had not even room for the file: the user writes it again.
        std::fs::write(input.join("d.txt"), "d").unwrap();
    }
    assert!(
        wait_until(Duration::from_secs(20), || outputs(&node)
            == ["a.txt", "b.txt", "c.txt", "d.txt"]),
        "{}",
        node.log()
    );

    // The journal came through whole: a restart opens it and runs nothing again.
    assert!(node.stop().success(), "{}", node.log());
    node.start();
    std::thread::sleep(Duration::from_secs(2));
    assert_eq!(outputs(&node), ["a.txt", "b.txt", "c.txt", "d.txt"]);
    assert_eq!(
        node.log().matches("succeeded").count(),
        4,
        "each input ran once: {}",
        node.log()
    );
    node.stop();
    drop(disk);
}
