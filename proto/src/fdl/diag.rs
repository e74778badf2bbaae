//! Diagnostics for FDL files: `FILE:LINE:COL: field.path: severity: message`.

use std::fmt;

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub enum Severity {
    Warning,
    Error,
}

/// Where something was written: 1-based line and column.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct Location {
    pub file: String,
    pub line: usize,
    pub col: usize,
}

/// One finding about an FDL file, pointing at the field it is about.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Diagnostic {
    pub severity: Severity,
    pub location: Location,
    /// Dotted field path, e.g. `functions.oscar[0].fog.memory`.
    pub path: String,
    pub message: String,
}

impl Diagnostic {
    pub fn is_error(&self) -> bool {
        self.severity == Severity::Error
    }
}

impl fmt::Display for Location {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}:{}", self.file, self.line, self.col)
    }
}

impl fmt::Display for Diagnostic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let severity = match self.severity {
            Severity::Error => "error",
            Severity::Warning => "warning",
        };
        let path = if self.path.is_empty() {
            "(document)"
        } else {
            &self.path
        };
        write!(
            f,
            "{}: {}: {}: {}",
            self.location, path, severity, self.message
        )
    }
}

/// Collects diagnostics while a file is read, so one run reports every problem, not just the
/// first.
#[derive(Debug, Default)]
pub struct Diagnostics {
    pub file: String,
    pub items: Vec<Diagnostic>,
}

impl Diagnostics {
    pub fn new(file: impl Into<String>) -> Self {
        Self {
            file: file.into(),
            items: Vec::new(),
        }
    }

    pub fn location(&self, span: &marked_yaml::Span) -> Location {
        let (line, col) = span
            .start()
            .map(|m| (m.line(), m.column()))
            .unwrap_or((1, 1));
        Location {
            file: self.file.clone(),
            line,
            col,
        }
    }

    pub fn error(&mut self, span: &marked_yaml::Span, path: &str, message: impl Into<String>) {
        self.push(Severity::Error, span, path, message.into());
    }

    pub fn warn(&mut self, span: &marked_yaml::Span, path: &str, message: impl Into<String>) {
        self.push(Severity::Warning, span, path, message.into());
    }

    fn push(&mut self, severity: Severity, span: &marked_yaml::Span, path: &str, message: String) {
        let location = self.location(span);
        self.items.push(Diagnostic {
            severity,
            location,
            path: path.to_owned(),
            message,
        });
    }

    pub fn has_errors(&self) -> bool {
        self.items.iter().any(Diagnostic::is_error)
    }
}
