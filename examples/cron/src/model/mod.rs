//! Metronome's JSON: job specs, schedules, runs and history, with Metronome's field
//! names and defaults. Responses carry only fields Metronome's clients know (they
//! refuse any other), so Agora's additions appear only when set.

pub mod job;

pub use job::{
    Artifact, Constraint, Dependency, DockerSpec, JobSpec, Placement, RestartSpec, RunSpec,
    ScheduleSpec, Volume,
};
