//! A deterministic discrete-event simulator for Spillway's placement core. It drives the *same*
//! `spillway-placement` policies the coordinator and agents use, with simulated time and
//! simulated tiers, so a day of traffic replays in a second and the two policies (Spillway's and
//! OSCAR's) can be compared on one workload.
//!
//! [`scenario`] describes tiers, functions and arrivals (the thesis' fire-detection case, a
//! burst, the video workflow); [`engine`] runs one; [`report`] summarises and plots it (SVG or PNG, [`canvas`]);
//! [`calibrate`] fits the fire case's unknowns to the thesis' counts.

pub mod bound;
pub mod calibrate;
pub mod canvas;
pub mod compare;
pub mod engine;
pub mod report;
pub mod scenario;
pub mod seeds;

pub use engine::run;
pub use report::Report;
pub use scenario::{Scenario, Workload};
