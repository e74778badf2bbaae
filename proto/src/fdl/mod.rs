//! The Functions Definition Language of OSCAR and SCAR, read as written, plus Spillway's fields.
//!
//! [`parse_file`]/[`parse_str`] read a document into an [`Fdl`] and report every problem as a
//! [`Diagnostic`] (`FILE:LINE:COL: field.path: severity: message`). Fields OSCAR or SCAR define
//! that Spillway does not act on yet are kept in `extra` and reported as warnings.

mod diag;
mod model;
mod parse;
mod reader;
mod replica;
mod service;
mod storage;
mod trigger;

pub use diag::{Diagnostic, Location, Severity};
pub use model::*;
pub use parse::{FdlError, MAX_BYTES, MAX_DEPTH, Parsed, parse_file, parse_str};
pub use trigger::{MqttOutput, MqttTrigger, Trigger, check_topic, topic_matches};

/// Environment variables of the staging contract; the agent sets them, an FDL may not.
pub const STAGING_VARIABLES: &[&str] = &[
    "INPUT_FILE_PATH",
    "TMP_INPUT_DIR",
    "TMP_OUTPUT_DIR",
    "FILE_NAME",
    "EVENT",
    "JOB_ID",
    "SCAR_INPUT_FILE",
    "INPUT_FILE",
    "REQUEST_ID",
];
