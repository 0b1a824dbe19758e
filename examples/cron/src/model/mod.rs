//! Metronome's JSON: job specs, schedules, runs and history, with Metronome's field
//! names and defaults. Responses carry only fields Metronome's clients know (they
//! refuse any other), so Agora's additions appear only when set.
//!
//! Request bodies are read by [`JobSpec::from_json`] and [`ScheduleSpec::from_json`]
//! (400 when not JSON, 422 naming every offending path otherwise) and checked by
//! their `validate()`; [`validate`] lists the rules and where they differ from
//! Metronome's.

pub mod job;
mod json;
mod parse;
pub mod validate;

#[cfg(test)]
mod tests;

pub use job::{
    Artifact, Constraint, Dependency, DockerSpec, JobSpec, Placement, RestartSpec, RunSpec,
    ScheduleSpec, Volume,
};
pub use validate::{is_valid_job_id, is_valid_name};
