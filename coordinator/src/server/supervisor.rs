//! The synchronous contract OSCAR's clients expect from `POST /run/{service}`, as OSCAR's FaaS
//! Supervisor implements it inside every container: the request body is the input file, sent as
//! base64 (or as a JSON object, kept as JSON); the answer is the one output file in base64, or
//! several outputs as a zip in base64, or, without outputs, what the script printed. Every answer
//! ends with a newline, as the supervisor prints it.

use std::io::Write as _;

use base64::Engine;

/// The input file a request body stands for: a JSON object as JSON, anything else base64 (line
/// breaks and spaces ignored, as Python's decoder does).
pub fn input_of(body: &[u8]) -> Result<Vec<u8>, String> {
    if let Ok(serde_json::Value::Object(object)) = serde_json::from_slice(body) {
        return serde_json::to_vec(&serde_json::Value::Object(object)).map_err(|e| e.to_string());
    }
    let text: Vec<u8> = body
        .iter()
        .copied()
        .filter(|b| !b.is_ascii_whitespace())
        .collect();
    base64::engine::general_purpose::STANDARD
        .decode(&text)
        .map_err(|e| {
            format!(
                "the body is neither a JSON object nor base64 ({e}): OSCAR's /run takes the input file base64-encoded, as oscar-cli and oscar-python send it; send raw bytes to POST /v1/functions/{{name}}/run (or /invoke) instead"
            )
        })
}

/// The most output bytes one synchronous answer carries (before base64): a function that writes
/// more is answered with an error, not with the coordinator's memory.
pub const MAX_ANSWER_BYTES: usize = 64 << 20;

/// Output files gathered for one answer, within a byte budget.
#[derive(Debug, Default)]
pub struct Outputs {
    pub files: Vec<(String, Vec<u8>)>,
    total: usize,
}

impl Outputs {
    /// Adds a file, or says why the answer would be too large (then nothing more is fetched).
    pub fn add(&mut self, name: String, bytes: Vec<u8>, limit: usize) -> Result<(), String> {
        self.total = self.total.saturating_add(bytes.len());
        if self.total > limit {
            return Err(format!(
                "the job's outputs are over {} MiB, too large for a synchronous answer; run it with POST /job and read its outputs from the node (spillway get files)",
                limit >> 20
            ));
        }
        self.files.push((name, bytes));
        Ok(())
    }
}

/// The answer for a job's output files (names relative to their output folder): one file's
/// bytes, or all of them zipped (stored, not compressed, as the supervisor zips), in base64.
pub fn answer_of(mut files: Vec<(String, Vec<u8>)>) -> Result<String, String> {
    let bytes = match files.len() {
        0 => Vec::new(),
        1 => files.remove(0).1,
        _ => zip(files)?,
    };
    let mut text = base64::engine::general_purpose::STANDARD.encode(bytes);
    text.push('\n');
    Ok(text)
}

fn zip(files: Vec<(String, Vec<u8>)>) -> Result<Vec<u8>, String> {
    let mut archive = zip::ZipWriter::new(std::io::Cursor::new(Vec::new()));
    let stored = zip::write::SimpleFileOptions::default()
        .compression_method(zip::CompressionMethod::Stored)
        .large_file(false);
    for (name, bytes) in files {
        archive
            .start_file(name, stored)
            .map_err(|e| format!("cannot zip the outputs: {e}"))?;
        archive
            .write_all(&bytes)
            .map_err(|e| format!("cannot zip the outputs: {e}"))?;
    }
    archive
        .finish()
        .map(std::io::Cursor::into_inner)
        .map_err(|e| format!("cannot zip the outputs: {e}"))
}

/// What the script printed, from its job log (stdout, then stderr), and the newline the
/// supervisor's `print` adds.
pub fn printed(log: &str) -> String {
    let mut out = String::new();
    for stream in ["stdout", "stderr"] {
        let marker = format!("--- {stream} (");
        let Some(start) = log.find(&marker) else {
            continue;
        };
        let body = &log[start..];
        let Some(line_end) = body.find('\n') else {
            continue;
        };
        let body = &body[line_end + 1..];
        let end = body.find("\n--- ").map_or(body.len(), |i| i + 1);
        out.push_str(&body[..end]);
    }
    out.push('\n');
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_base64_body_is_the_file_and_a_json_object_stays_json() {
        assert_eq!(input_of(b"aGVsbG8=\n").expect("base64"), b"hello");
        assert_eq!(input_of(b"aGVs\nbG8=").expect("wrapped lines"), b"hello");
        assert_eq!(
            input_of(br#"{ "a": 1 }"#).expect("json"),
            br#"{"a":1}"#.to_vec()
        );
        assert_eq!(input_of(b"").expect("empty"), b"");
        let err = input_of(b"not base64!").expect_err("refused");
        assert!(err.contains("/v1/functions/{name}/run"), "{err}");
    }

    #[test]
    fn one_output_comes_back_as_base64_and_several_as_a_zip() {
        let one = answer_of(vec![("out.txt".into(), b"hi".to_vec())]).expect("one");
        assert_eq!(one, "aGk=\n");
        let two = answer_of(vec![
            ("a.txt".into(), b"A".to_vec()),
            ("dir/b.txt".into(), b"BB".to_vec()),
        ])
        .expect("two");
        let bytes = base64::engine::general_purpose::STANDARD
            .decode(two.trim_end())
            .expect("base64");
        let mut archive = zip::ZipArchive::new(std::io::Cursor::new(bytes)).expect("a zip");
        let mut names: Vec<String> = archive
            .file_names()
            .map(|n| n.expect("a name").into_owned())
            .collect();
        names.sort();
        assert_eq!(names, ["a.txt", "dir/b.txt"]);
        let mut b = String::new();
        std::io::Read::read_to_string(&mut archive.by_name("dir/b.txt").expect("entry"), &mut b)
            .expect("read");
        assert_eq!(b, "BB");
    }

    #[test]
    fn outputs_over_the_budget_are_refused_before_more_is_fetched() {
        let mut outputs = Outputs::default();
        outputs
            .add("a".into(), vec![0; 3 << 20], 4 << 20)
            .expect("within");
        let err = outputs
            .add("b".into(), vec![0; 2 << 20], 4 << 20)
            .expect_err("over");
        assert!(
            err.contains("over 4 MiB") && err.contains("POST /job"),
            "{err}"
        );
        assert_eq!(
            outputs.files.len(),
            1,
            "the one over the budget is not kept"
        );
    }

    #[test]
    fn without_outputs_the_answer_is_what_the_script_printed() {
        let log = "job:      1\nstate:    Succeeded\n--- stdout (6 bytes) ---\nmoo\nhi\n--- stderr (4 bytes) ---\nwarn\n";
        assert_eq!(printed(log), "moo\nhi\nwarn\n\n");
        assert_eq!(printed("job: 1\n"), "\n");
    }
}
