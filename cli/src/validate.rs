//! `spillway validate FILE...`: read FDL files and report every diagnostic.

use std::io::Write;
use std::path::PathBuf;

use spillway_proto::fdl;

/// What a validation run found, for the exit code.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Summary {
    pub files: usize,
    pub invalid: usize,
    pub warnings: usize,
}

/// Validates each file: diagnostics go to `err` (one per line), a verdict per file to `out`.
pub fn validate_files(
    paths: &[PathBuf],
    out: &mut dyn Write,
    err: &mut dyn Write,
) -> std::io::Result<Summary> {
    let mut summary = Summary {
        files: paths.len(),
        invalid: 0,
        warnings: 0,
    };
    for path in paths {
        let parsed = fdl::parse_file(path);
        for d in &parsed.diagnostics {
            writeln!(err, "{d}")?;
        }
        let warnings = parsed.warnings().count();
        summary.warnings += warnings;
        match &parsed.fdl {
            Some(doc) => {
                let names: Vec<&str> = doc.functions.iter().map(|f| f.name.as_str()).collect();
                writeln!(
                    out,
                    "{}: valid ({} function{}: {}; {warnings} warning{})",
                    path.display(),
                    names.len(),
                    plural(names.len()),
                    names.join(", "),
                    plural(warnings)
                )?;
            }
            None => {
                summary.invalid += 1;
                let errors = parsed.diagnostics.len() - warnings;
                writeln!(
                    out,
                    "{}: invalid ({errors} error{})",
                    path.display(),
                    plural(errors)
                )?;
            }
        }
    }
    Ok(summary)
}

fn plural(n: usize) -> &'static str {
    if n == 1 { "" } else { "s" }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_bad_file_is_counted_and_its_errors_printed() {
        let dir = tempfile::tempdir().expect("tempdir");
        let good = dir.path().join("good.yaml");
        let bad = dir.path().join("bad.yaml");
        std::fs::write(&good, "functions:\n  oscar:\n  - c: {name: a, image: x}\n").expect("write");
        std::fs::write(
            &bad,
            "functions:\n  oscar:\n  - c: {name: a, cpu: x, image: y}\n",
        )
        .expect("write");
        let (mut out, mut err) = (Vec::new(), Vec::new());
        let summary = validate_files(&[good, bad.clone()], &mut out, &mut err).expect("io");
        assert_eq!(summary.invalid, 1);
        let err = String::from_utf8(err).expect("utf8");
        assert!(err.starts_with(&format!("{}:3:", bad.display())), "{err}");
        assert!(
            String::from_utf8(out)
                .expect("utf8")
                .contains("good.yaml: valid (1 function: a; 0 warnings)")
        );
    }
}
